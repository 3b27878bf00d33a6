//! Bearer tokens: 32 random bytes shown once as hex, stored only as their SHA-256, with an
//! expiry; logout deletes one, and disabling a user or changing a password deletes theirs.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use argon2::password_hash::rand_core::{OsRng, RngCore};
use sha2::{Digest, Sha256};
use sqlx::PgConnection;

use crate::db::Db;

/// A token as the client holds it, and when it expires (RFC 3339, UTC).
pub struct Issued {
    pub token: String,
    pub expires_at: String,
}

/// Who a valid token belongs to.
#[derive(Clone, Debug)]
pub struct Holder {
    pub username: String,
    pub role: String,
}

fn digest(token: &str) -> Vec<u8> {
    Sha256::digest(token.as_bytes()).to_vec()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

/// A new token for `user_id`, valid for `ttl`; expired tokens of everyone are deleted on the way.
pub async fn issue(
    connection: &mut PgConnection,
    user_id: i64,
    ttl: Duration,
) -> sqlx::Result<Issued> {
    let mut bytes = [0u8; 32];
    OsRng.fill_bytes(&mut bytes);
    let token = hex(&bytes);
    let expires_at: String = sqlx::query_scalar(
        "WITH gone AS (DELETE FROM auth_token WHERE expires_at < now() - interval '1 hour')
         INSERT INTO auth_token (token_sha256, user_id, expires_at)
         VALUES ($1, $2, now() + make_interval(secs => $3))
         RETURNING to_char(expires_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"')",
    )
    .bind(digest(&token))
    .bind(user_id)
    .bind(ttl.as_secs_f64())
    .fetch_one(connection)
    .await?;
    Ok(Issued { token, expires_at })
}

/// The holder of `token` if it is known, unexpired, and its user is enabled, with the time it
/// has left.
pub async fn check(
    connection: &mut PgConnection,
    token: &str,
) -> sqlx::Result<Option<(Holder, Duration)>> {
    let found: Option<(String, String, f64)> = sqlx::query_as(
        "SELECT u.username, u.role, extract(epoch FROM t.expires_at - now())::float8
         FROM auth_token t JOIN app_user u ON u.id = t.user_id
         WHERE t.token_sha256 = $1 AND t.expires_at > now() AND NOT u.disabled",
    )
    .bind(digest(token))
    .fetch_optional(connection)
    .await?;
    Ok(found.map(|(username, role, left)| {
        (
            Holder { username, role },
            Duration::from_secs_f64(left.max(0.0)),
        )
    }))
}

/// How long a checked token is taken on trust: a token ended by another process (another
/// replica's logout, `user disable`, `user passwd`) stops working within this.
pub const CACHE_FOR: Duration = Duration::from_secs(1);
/// Past this many cached tokens, the stale ones are dropped.
const CACHE_PRUNE_AT: usize = 10_000;

/// Tokens checked in the last `CACHE_FOR`, by their SHA-256, never longer than they live; and
/// the tokens logged out here lately, so that a check still in flight at the logout cannot
/// cache its answer again.
#[derive(Default)]
pub struct Cache {
    entries: Mutex<Entries>,
}

#[derive(Default)]
struct Entries {
    checked: HashMap<Vec<u8>, (Holder, Instant)>,
    /// When each token was logged out here; kept for twice `CACHE_FOR`.
    revoked: HashMap<Vec<u8>, Instant>,
}

impl Entries {
    /// Caches what a check that started at `started` found, unless the token was logged out
    /// after that check started.
    fn remember(&mut self, key: Vec<u8>, holder: &Holder, started: Instant, until: Instant) {
        let now = Instant::now();
        if self.checked.len() >= CACHE_PRUNE_AT {
            self.checked.retain(|_, (_, until)| *until > now);
        }
        if self.revoked.len() >= CACHE_PRUNE_AT {
            self.revoked
                .retain(|_, at| now.duration_since(*at) < CACHE_FOR * 2);
        }
        if self.revoked.get(&key).is_some_and(|at| *at >= started) {
            return;
        }
        self.checked.insert(key, (holder.clone(), until));
    }
}

impl Cache {
    /// As `check`, answered from the cache when the token was checked less than `CACHE_FOR`
    /// ago.
    pub async fn check(&self, db: &Db, token: &str) -> sqlx::Result<Option<Holder>> {
        let key = digest(token);
        let started = Instant::now();
        if let Some((holder, until)) = self.lock().checked.get(&key)
            && *until > started
        {
            return Ok(Some(holder.clone()));
        }
        let found = check(&mut *db.acquire().await?, token).await?;
        let mut entries = self.lock();
        match &found {
            Some((holder, left)) => {
                entries.remember(key, holder, started, started + CACHE_FOR.min(*left));
            }
            None => {
                entries.checked.remove(&key);
            }
        }
        Ok(found.map(|(holder, _)| holder))
    }

    /// Drops `token` from the cache for good (logout on this server, once the database no
    /// longer holds it): a check in flight cannot put it back.
    pub fn forget(&self, token: &str) {
        let key = digest(token);
        let mut entries = self.lock();
        entries.checked.remove(&key);
        entries.revoked.insert(key, Instant::now());
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Entries> {
        self.entries
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }
}

/// Ends `token`; whether it was a live one.
pub async fn revoke(connection: &mut PgConnection, token: &str) -> sqlx::Result<bool> {
    let deleted =
        sqlx::query("DELETE FROM auth_token WHERE token_sha256 = $1 AND expires_at > now()")
            .bind(digest(token))
            .execute(connection)
            .await?;
    Ok(deleted.rows_affected() > 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_check_in_flight_at_logout_does_not_cache_the_token_again() {
        let cache = Cache::default();
        let holder = Holder {
            username: "ann".to_owned(),
            role: "cashier".to_owned(),
        };
        let key = digest("token");
        // A check starts, the logout forgets the token, then the check's answer arrives.
        let started = Instant::now();
        cache.forget("token");
        let until = Instant::now() + CACHE_FOR;
        cache.lock().remember(key.clone(), &holder, started, until);
        assert!(!cache.lock().checked.contains_key(&key));
        // A check that started after the logout (a new login's token) is cached.
        std::thread::sleep(Duration::from_millis(2));
        cache
            .lock()
            .remember(key.clone(), &holder, Instant::now(), until);
        assert!(cache.lock().checked.contains_key(&key));
    }
}
