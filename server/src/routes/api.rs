//! `/api/v1/*`: product lookup by SKU and the checkout dry-run.

use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};

use super::AppState;
use super::auth::plain_text;
use crate::catalogue::{self, Cart, PricedCart, Product};
use crate::error::ApiError;

pub async fn product(
    State(state): State<AppState>,
    Path(sku): Path<String>,
) -> Result<Json<Product>, ApiError> {
    plain_text("SKU", &sku)?;
    Ok(Json(
        catalogue::find(&mut *state.db.acquire().await?, &sku).await?,
    ))
}

pub async fn checkout_dry_run(
    State(state): State<AppState>,
    cart: Result<Json<Cart>, JsonRejection>,
) -> Result<Json<PricedCart>, ApiError> {
    let Json(cart) = cart?;
    for item in &cart.items {
        plain_text("SKU", &item.sku)?;
    }
    Ok(Json(
        catalogue::price(&mut *state.db.acquire().await?, cart).await?,
    ))
}
