//! Users and login: Argon2id password hashes, random bearer tokens stored as their SHA-256, and
//! a lockout after repeated failures for one user or one client address.

pub mod lockout;
pub mod password;
pub mod tokens;
pub mod user_command;
pub mod users;

use std::time::Duration;

use crate::config::AuthConfig;

/// What login needs, shared by every request.
pub struct Auth {
    pub token_ttl: Duration,
    pub hasher: password::Hasher,
    pub lockout: lockout::Lockout,
    /// A hash of nothing, checked when the user is unknown, so that an unknown user and a wrong
    /// password take about the same time.
    dummy_hash: String,
    lockout_duration: Duration,
}

impl Auth {
    pub fn new(config: &AuthConfig) -> anyhow::Result<Auth> {
        let hasher = password::Hasher::new(&config.argon2)?;
        let dummy_hash = hasher.hash("saulpos: no such user")?;
        Ok(Auth {
            token_ttl: config.token_ttl,
            hasher,
            lockout: lockout::Lockout::new(config.max_failures, config.lockout),
            dummy_hash,
            lockout_duration: config.lockout,
        })
    }

    pub fn lockout_seconds(&self) -> u64 {
        self.lockout_duration.as_secs()
    }

    pub fn dummy_hash(&self) -> &str {
        &self.dummy_hash
    }
}
