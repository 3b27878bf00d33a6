//! The `app_user` table: adding, finding, re-keying, disabling and listing users.

use std::fmt;
use std::str::FromStr;

use serde::Serialize;
use sqlx::{PgConnection, PgPool};

/// What a user may do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Cashier,
    Manager,
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Cashier => "cashier",
            Role::Manager => "manager",
            Role::Admin => "admin",
        }
    }
}

impl FromStr for Role {
    type Err = String;

    fn from_str(text: &str) -> Result<Role, String> {
        [Role::Cashier, Role::Manager, Role::Admin]
            .into_iter()
            .find(|role| role.as_str() == text)
            .ok_or_else(|| format!("unknown role {text:?}: use cashier, manager or admin"))
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A user name: 1 to 64 of `a-z 0-9 . _ -`, starting with a letter or digit.
pub fn check_username(name: &str) -> Result<(), String> {
    let fine = !name.is_empty()
        && name.len() <= 64
        && name.bytes().all(|byte| {
            byte.is_ascii_lowercase() || byte.is_ascii_digit() || b"._-".contains(&byte)
        })
        && name.as_bytes()[0].is_ascii_alphanumeric();
    if fine {
        Ok(())
    } else {
        Err(format!(
            "{name:?} is not a user name: use 1 to 64 of a-z, 0-9, '.', '_' and '-', starting with a letter or digit"
        ))
    }
}

/// What login reads of a user.
pub struct Stored {
    pub id: i64,
    pub password_hash: String,
    pub disabled: bool,
    pub role: String,
}

pub async fn find(connection: &mut PgConnection, username: &str) -> sqlx::Result<Option<Stored>> {
    let found: Option<(i64, String, bool, String)> = sqlx::query_as(
        "SELECT id, password_hash, disabled, role FROM app_user WHERE username = $1",
    )
    .bind(username)
    .fetch_optional(connection)
    .await?;
    Ok(found.map(|(id, password_hash, disabled, role)| Stored {
        id,
        password_hash,
        disabled,
        role,
    }))
}

/// Adds a user; false when the name is taken.
pub async fn add(pool: &PgPool, username: &str, role: Role, hash: &str) -> sqlx::Result<bool> {
    let added = sqlx::query(
        "INSERT INTO app_user (username, role, password_hash) VALUES ($1, $2, $3)
         ON CONFLICT (username) DO NOTHING",
    )
    .bind(username)
    .bind(role.as_str())
    .bind(hash)
    .execute(pool)
    .await?;
    Ok(added.rows_affected() == 1)
}

/// Sets a new password (and enables the user); their tokens end. False when there is no such
/// user.
pub async fn set_password(pool: &PgPool, username: &str, hash: &str) -> sqlx::Result<bool> {
    let changed: (i64,) = sqlx::query_as(
        "WITH changed AS (
             UPDATE app_user SET password_hash = $2, disabled = false, updated_at = now()
             WHERE username = $1 RETURNING id
         ), gone AS (DELETE FROM auth_token WHERE user_id IN (SELECT id FROM changed))
         SELECT count(*) FROM changed",
    )
    .bind(username)
    .bind(hash)
    .fetch_one(pool)
    .await?;
    Ok(changed.0 == 1)
}

/// Replaces a user's hash with one of the same password at the current cost; their tokens stay.
pub async fn rehash(
    connection: &mut PgConnection,
    id: i64,
    old_hash: &str,
    hash: &str,
) -> sqlx::Result<()> {
    // Only if the password did not change meanwhile.
    sqlx::query("UPDATE app_user SET password_hash = $3 WHERE id = $1 AND password_hash = $2")
        .bind(id)
        .bind(old_hash)
        .bind(hash)
        .execute(connection)
        .await?;
    Ok(())
}

/// Disables a user and ends their tokens. False when there is no such user.
pub async fn disable(pool: &PgPool, username: &str) -> sqlx::Result<bool> {
    let changed: (i64,) = sqlx::query_as(
        "WITH changed AS (
             UPDATE app_user SET disabled = true, updated_at = now()
             WHERE username = $1 RETURNING id
         ), gone AS (DELETE FROM auth_token WHERE user_id IN (SELECT id FROM changed))
         SELECT count(*) FROM changed",
    )
    .bind(username)
    .fetch_one(pool)
    .await?;
    Ok(changed.0 == 1)
}

/// One line of `user list`.
#[derive(Debug, Serialize, sqlx::FromRow)]
pub struct Listed {
    pub username: String,
    pub role: String,
    pub disabled: bool,
    pub created_at: String,
}

pub async fn list(pool: &PgPool) -> sqlx::Result<Vec<Listed>> {
    sqlx::query_as(
        "SELECT username, role, disabled,
                to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"') AS created_at
         FROM app_user ORDER BY username",
    )
    .fetch_all(pool)
    .await
}

/// The dev profile's demo cashier, for smoke checks on a laptop; staging and prod create none.
pub const DEMO_CASHIER: (&str, &str) = ("demo-cashier", "demo-cashier-password");

/// Adds the demo cashier unless a user of that name exists.
pub async fn add_demo_cashier(
    pool: &PgPool,
    hasher: &super::password::Hasher,
) -> anyhow::Result<()> {
    if find(&mut *pool.acquire().await?, DEMO_CASHIER.0)
        .await?
        .is_none()
    {
        let hash = hasher.hash(DEMO_CASHIER.1)?;
        add(pool, DEMO_CASHIER.0, Role::Cashier, &hash).await?;
    }
    Ok(())
}
