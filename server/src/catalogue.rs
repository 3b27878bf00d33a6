//! The smoke-check domain: products by SKU and pricing a cart without writing anything.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};
use sqlx::{PgConnection, PgPool};

use crate::error::ApiError;

/// The most of one item a cart may hold.
pub const MAX_QUANTITY: i64 = 10_000;

/// The demo catalogue the `dev` profile loads, so smoke checks have something to find.
pub const DEMO_PRODUCTS: &[(&str, &str, i64)] = &[
    ("DEMO-COFFEE-250G", "Ground coffee 250 g", 799),
    ("DEMO-MILK-1L", "Whole milk 1 l", 129),
    ("DEMO-BREAD", "Sourdough loaf", 450),
];

#[derive(Debug, Serialize, sqlx::FromRow)]
#[serde(rename_all = "camelCase")]
pub struct Product {
    pub sku: String,
    pub name: String,
    pub unit_price_cents: i64,
    pub currency: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Cart {
    pub items: Vec<CartItem>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CartItem {
    pub sku: String,
    pub quantity: i64,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PricedLine {
    pub sku: String,
    pub name: String,
    pub quantity: i64,
    pub unit_price_cents: i64,
    pub line_total_cents: i64,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PricedCart {
    pub dry_run: bool,
    pub currency: String,
    pub lines: Vec<PricedLine>,
    pub total_cents: i64,
    pub total: String,
}

/// Inserts the demo products that are missing; existing rows are left as they are.
pub async fn load_demo(pool: &PgPool) -> sqlx::Result<()> {
    for (sku, name, price) in DEMO_PRODUCTS {
        sqlx::query(
            "INSERT INTO product (sku, name, unit_price_cents) VALUES ($1, $2, $3) ON CONFLICT (sku) DO NOTHING",
        )
        .bind(sku)
        .bind(name)
        .bind(price)
        .execute(pool)
        .await?;
    }
    Ok(())
}

pub async fn find(connection: &mut PgConnection, sku: &str) -> Result<Product, ApiError> {
    sqlx::query_as::<_, Product>(
        "SELECT sku, name, unit_price_cents, trim(currency) AS currency FROM product WHERE sku = $1 AND active",
    )
    .bind(sku)
    .fetch_optional(connection)
    .await?
    .ok_or_else(|| ApiError::NotFound(format!("no product with SKU {sku:?}")))
}

/// Prices a cart from the catalogue. Reads only: nothing is written.
pub async fn price(connection: &mut PgConnection, cart: Cart) -> Result<PricedCart, ApiError> {
    if cart.items.is_empty() {
        return Err(ApiError::Unprocessable(
            "the cart is empty: add at least one item with a sku and a quantity".to_owned(),
        ));
    }
    for (index, item) in cart.items.iter().enumerate() {
        if !(1..=MAX_QUANTITY).contains(&item.quantity) {
            return Err(ApiError::Unprocessable(format!(
                "item {}: quantity {} for SKU {:?} is out of range; use 1 to {MAX_QUANTITY}",
                index + 1,
                item.quantity,
                item.sku
            )));
        }
    }
    let skus: Vec<&str> = cart.items.iter().map(|item| item.sku.as_str()).collect();
    let products: HashMap<String, Product> = sqlx::query_as::<_, Product>(
        "SELECT sku, name, unit_price_cents, trim(currency) AS currency FROM product WHERE sku = ANY($1) AND active",
    )
    .bind(&skus)
    .fetch_all(connection)
    .await?
    .into_iter()
    .map(|product| (product.sku.clone(), product))
    .collect();

    let mut lines = Vec::with_capacity(cart.items.len());
    let mut currency: Option<String> = None;
    for (index, item) in cart.items.into_iter().enumerate() {
        let product = products.get(&item.sku).ok_or_else(|| {
            ApiError::Unprocessable(format!(
                "item {}: unknown SKU {:?}; look it up with GET /api/v1/products/{{sku}}",
                index + 1,
                item.sku
            ))
        })?;
        match &currency {
            Some(existing) if *existing != product.currency => {
                return Err(ApiError::Unprocessable(format!(
                    "item {}: SKU {:?} is priced in {}, the cart in {existing}; price one currency per cart",
                    index + 1,
                    item.sku,
                    product.currency
                )));
            }
            _ => currency = Some(product.currency.clone()),
        }
        lines.push(PricedLine {
            line_total_cents: product.unit_price_cents * item.quantity,
            sku: item.sku,
            name: product.name.clone(),
            quantity: item.quantity,
            unit_price_cents: product.unit_price_cents,
        });
    }
    let total_cents = lines.iter().map(|line| line.line_total_cents).sum::<i64>();
    Ok(PricedCart {
        dry_run: true,
        currency: currency.unwrap_or_else(|| "USD".to_owned()),
        lines,
        total_cents,
        total: format!("{}.{:02}", total_cents / 100, total_cents % 100),
    })
}
