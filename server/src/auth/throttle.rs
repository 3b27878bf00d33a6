//! Failed logins counted in PostgreSQL, so that every replica and a restart see the same counts.
//!
//! Following OWASP's guidance, logins are throttled, not locked: a user failing from one client
//! address waits a delay that doubles with each failure past the limit, while the same user from
//! another address is not held up. Two ceilings far above what a person reaches bound an attacker
//! spreading over addresses (per user) or over users (per address). Each attempt is reserved
//! before its password is hashed, in one transaction that locks its rows, so parallel attempts
//! cannot get past the limit; a success clears its user's counts but only takes its own attempt
//! off its address's count, so an attacker's own login does not reset the address it sprays from.

use std::net::IpAddr;
use std::time::Duration;

use sha2::{Digest, Sha256};
use sqlx::{Connection, PgConnection};

use crate::config::AuthConfig;

/// A delay never grows past the first one times this.
const MAX_DOUBLINGS: u32 = 6;

/// The throttle's settings.
#[derive(Clone, Debug)]
pub struct Throttle {
    /// Failures of one user from one address before that pair waits.
    pub per_pair: u32,
    pub per_user: u32,
    pub per_client: u32,
    /// The first wait; doubled for each further failure.
    pub delay: Duration,
}

/// What a reservation found.
#[derive(Debug, PartialEq)]
pub enum Reserved {
    /// Go ahead and check the password; `throttled` when this attempt starts a wait.
    Go { throttled: bool },
    /// Wait this long first (429 with Retry-After).
    Wait(Duration),
}

/// One counted key: its kind decides its limit.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Kind {
    Pair,
    User,
    Client,
}

/// A key's row as the reservation reads it.
#[derive(Debug)]
struct Count {
    kind: Kind,
    failures: u32,
    /// Seconds since its last failure or the end of its wait, whichever is later.
    quiet: f64,
    /// Seconds of wait left (0 or less when none).
    blocked: f64,
}

/// Takes the transaction-long advisory lock of each key, in the order of the keys (sorted): every
/// reservation and success takes its keys' locks first, so none waits on another in a cycle.
async fn lock_keys(
    transaction: &mut sqlx::PgConnection,
    keys: &[(Vec<u8>, Kind)],
) -> sqlx::Result<()> {
    for (digest, _) in keys {
        let mut first = [0u8; 8];
        first.copy_from_slice(&digest[..8]);
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(i64::from_be_bytes(first))
            .execute(&mut *transaction)
            .await?;
    }
    Ok(())
}

impl Throttle {
    pub fn new(config: &AuthConfig) -> Throttle {
        Throttle {
            per_pair: config.max_failures,
            per_user: config.max_failures_per_user,
            per_client: config.max_failures_per_client,
            delay: config.lockout,
        }
    }

    fn limit(&self, kind: Kind) -> u32 {
        match kind {
            Kind::Pair => self.per_pair,
            Kind::User => self.per_user,
            Kind::Client => self.per_client,
        }
    }

    /// Counts are forgotten after this long without a failure or a wait.
    fn forget_after(&self) -> Duration {
        self.delay * 15
    }

    /// The wait after the `failures`-th failure of a key whose limit is `limit`, if any.
    fn wait_after(&self, failures: u32, limit: u32) -> Option<Duration> {
        (failures >= limit).then(|| self.delay * 2u32.pow((failures - limit).min(MAX_DOUBLINGS)))
    }

    /// The decision for one attempt, from the keys' counts: the wait left when one key waits,
    /// else each key's new failure count and the wait it starts.
    fn decide(&self, counts: &[Count]) -> Result<Vec<(u32, Option<Duration>)>, Duration> {
        let forget = self.forget_after().as_secs_f64();
        if let Some(wait) = counts
            .iter()
            .filter(|count| count.blocked > 0.0)
            .map(|count| count.blocked)
            .reduce(f64::max)
        {
            return Err(Duration::from_secs_f64(wait));
        }
        Ok(counts
            .iter()
            .map(|count| {
                let before = if count.quiet > forget {
                    0
                } else {
                    count.failures
                };
                let failures = before.saturating_add(1);
                (failures, self.wait_after(failures, self.limit(count.kind)))
            })
            .collect())
    }

    fn keys(username: &str, client: Option<IpAddr>) -> Vec<(Vec<u8>, Kind)> {
        let hashed = |text: String| Sha256::digest(text.as_bytes()).to_vec();
        let address = client.map_or_else(|| "-".to_owned(), |client| client.to_string());
        let mut keys = vec![
            (hashed(format!("pair {address} {username}")), Kind::Pair),
            (hashed(format!("user {username}")), Kind::User),
        ];
        if client.is_some() {
            keys.push((hashed(format!("client {address}")), Kind::Client));
        }
        // Rows are always locked in the same order, so two attempts never deadlock.
        keys.sort_by(|left, right| left.0.cmp(&right.0));
        keys
    }

    /// Reserves one attempt for `username` from `client`, counted as a failure until `succeeded`
    /// takes it back; or says how long to wait.
    pub async fn reserve(
        &self,
        connection: &mut PgConnection,
        username: &str,
        client: Option<IpAddr>,
    ) -> sqlx::Result<Reserved> {
        let keys = Throttle::keys(username, client);
        let digests: Vec<Vec<u8>> = keys.iter().map(|(digest, _)| digest.clone()).collect();
        let mut transaction = connection.begin().await?;
        lock_keys(&mut transaction, &keys).await?;
        sqlx::query(
            "INSERT INTO login_throttle (key_sha256)
             SELECT key FROM unnest($1::bytea[]) AS key ORDER BY key
             ON CONFLICT DO NOTHING",
        )
        .bind(&digests)
        .execute(&mut *transaction)
        .await?;
        let rows: Vec<(Vec<u8>, i32, f64, f64)> = sqlx::query_as(
            "SELECT key_sha256, failures,
                    extract(epoch FROM now() - greatest(last_failure, coalesce(blocked_until, last_failure)))::float8,
                    coalesce(extract(epoch FROM blocked_until - now())::float8, 0)
             FROM login_throttle WHERE key_sha256 = ANY($1) ORDER BY key_sha256 FOR UPDATE",
        )
        .bind(&digests)
        .fetch_all(&mut *transaction)
        .await?;
        let counts: Vec<Count> = rows
            .iter()
            .filter_map(|(digest, failures, quiet, blocked)| {
                let kind = keys.iter().find(|(key, _)| key == digest)?.1;
                Some(Count {
                    kind,
                    failures: (*failures).max(0) as u32,
                    quiet: *quiet,
                    blocked: *blocked,
                })
            })
            .collect();
        let decided = match self.decide(&counts) {
            Ok(decided) => decided,
            Err(wait) => {
                transaction.commit().await?;
                return Ok(Reserved::Wait(wait));
            }
        };
        let throttled = decided.iter().any(|(_, wait)| wait.is_some());
        let failures: Vec<i32> = decided
            .iter()
            .map(|(failures, _)| (*failures).min(i32::MAX as u32) as i32)
            .collect();
        let waits: Vec<f64> = decided
            .iter()
            .map(|(_, wait)| wait.map_or(0.0, |wait| wait.as_secs_f64()))
            .collect();
        let ordered: Vec<Vec<u8>> = rows.into_iter().map(|(digest, ..)| digest).collect();
        sqlx::query(
            "UPDATE login_throttle AS t
             SET failures = v.failures, last_failure = now(),
                 blocked_until = CASE WHEN v.wait > 0 THEN now() + make_interval(secs => v.wait)
                                      ELSE NULL END
             FROM unnest($1::bytea[], $2::int[], $3::float8[]) AS v(key, failures, wait)
             WHERE t.key_sha256 = v.key",
        )
        .bind(&ordered)
        .bind(&failures)
        .bind(&waits)
        .execute(&mut *transaction)
        .await?;
        transaction.commit().await?;
        Ok(Reserved::Go { throttled })
    }

    /// The attempt reserved for `username` from `client` succeeded: the user's counts (from this
    /// address and in all) start again at 0, and this attempt no longer counts against the address.
    /// Counts nobody touched for long are dropped on the way.
    pub async fn succeeded(
        &self,
        connection: &mut PgConnection,
        username: &str,
        client: Option<IpAddr>,
    ) -> sqlx::Result<()> {
        let keys = Throttle::keys(username, client);
        let cleared: Vec<Vec<u8>> = keys
            .iter()
            .filter(|(_, kind)| *kind != Kind::Client)
            .map(|(digest, _)| digest.clone())
            .collect();
        let address: Vec<Vec<u8>> = keys
            .iter()
            .filter(|(_, kind)| *kind == Kind::Client)
            .map(|(digest, _)| digest.clone())
            .collect();
        let mut transaction = connection.begin().await?;
        lock_keys(&mut transaction, &keys).await?;
        sqlx::query(
            "UPDATE login_throttle SET failures = 0, blocked_until = NULL
             WHERE key_sha256 = ANY($1)",
        )
        .bind(&cleared)
        .execute(&mut *transaction)
        .await?;
        // This attempt no longer counts against its address, nor does the wait it started.
        sqlx::query(
            "UPDATE login_throttle
             SET failures = greatest(failures - 1, 0),
                 blocked_until = CASE WHEN failures - 1 < $2 THEN NULL ELSE blocked_until END
             WHERE key_sha256 = ANY($1)",
        )
        .bind(&address)
        .bind(self.per_client as i32)
        .execute(&mut *transaction)
        .await?;
        transaction.commit().await?;
        // Counts nobody touched for long go; rows another login holds are left for later.
        sqlx::query(
            "DELETE FROM login_throttle WHERE key_sha256 IN (
                 SELECT key_sha256 FROM login_throttle
                 WHERE last_failure < now() - make_interval(secs => $1)
                   AND (blocked_until IS NULL OR blocked_until < now())
                 FOR UPDATE SKIP LOCKED
             )",
        )
        .bind(self.forget_after().as_secs_f64())
        .execute(connection)
        .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn throttle() -> Throttle {
        Throttle {
            per_pair: 3,
            per_user: 10,
            per_client: 10,
            delay: Duration::from_secs(2),
        }
    }

    fn count(kind: Kind, failures: u32) -> Count {
        Count {
            kind,
            failures,
            quiet: 0.0,
            blocked: 0.0,
        }
    }

    #[test]
    fn the_attempt_that_reaches_the_limit_starts_a_wait_that_doubles_after() {
        let throttle = throttle();
        let decided = throttle
            .decide(&[count(Kind::Pair, 1), count(Kind::User, 1)])
            .unwrap();
        assert_eq!(decided, [(2, None), (2, None)]);
        let decided = throttle.decide(&[count(Kind::Pair, 2)]).unwrap();
        assert_eq!(decided, [(3, Some(Duration::from_secs(2)))]);
        let decided = throttle.decide(&[count(Kind::Pair, 3)]).unwrap();
        assert_eq!(decided, [(4, Some(Duration::from_secs(4)))]);
        let decided = throttle.decide(&[count(Kind::Pair, 500)]).unwrap();
        assert_eq!(decided, [(501, Some(Duration::from_secs(128)))], "capped");
    }

    #[test]
    fn one_waiting_key_holds_the_attempt_back_and_old_failures_are_forgotten() {
        let throttle = throttle();
        let mut waiting = count(Kind::Client, 10);
        waiting.blocked = 1.5;
        assert_eq!(
            throttle.decide(&[count(Kind::Pair, 0), waiting]),
            Err(Duration::from_secs_f64(1.5))
        );
        let mut old = count(Kind::Pair, 2);
        old.quiet = 31.0;
        assert_eq!(throttle.decide(&[old]).unwrap(), [(1, None)]);
    }

    #[test]
    fn the_keys_keep_users_and_addresses_apart() {
        let one = Throttle::keys("bob", Some(IpAddr::from([127, 0, 0, 2])));
        let other = Throttle::keys("bob", Some(IpAddr::from([127, 0, 0, 3])));
        let pair = |keys: &[(Vec<u8>, Kind)]| {
            keys.iter()
                .find(|(_, kind)| *kind == Kind::Pair)
                .unwrap()
                .0
                .clone()
        };
        let user = |keys: &[(Vec<u8>, Kind)]| {
            keys.iter()
                .find(|(_, kind)| *kind == Kind::User)
                .unwrap()
                .0
                .clone()
        };
        assert_ne!(pair(&one), pair(&other));
        assert_eq!(user(&one), user(&other));
        assert_eq!(Throttle::keys("bob", None).len(), 2);
    }
}
