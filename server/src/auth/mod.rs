//! Users and login: Argon2id password hashes (computed a bounded number at a time), random bearer
//! tokens stored as their SHA-256, and a throttle of repeated failures kept in the database.

pub mod hashing;
pub mod password;
pub mod throttle;
pub mod tokens;
pub mod user_command;
pub mod users;

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use crate::config::AuthConfig;

/// What login needs, shared by every request.
pub struct Auth {
    pub token_ttl: Duration,
    pub hasher: password::Hasher,
    pub throttle: throttle::Throttle,
    /// Tokens checked in the last second, so that a busy client costs one lookup a second.
    pub tokens: tokens::Cache,
    /// A hash of nothing, checked when the user is unknown, so that an unknown user and a wrong
    /// password take about the same time. Made beside startup, not in its way.
    dummy_hash: Arc<OnceLock<String>>,
    /// Where password hashes run, a bounded number at a time.
    pub hashing: hashing::HashPool,
}

impl Auth {
    pub fn new(config: &AuthConfig) -> anyhow::Result<Auth> {
        let hasher = password::Hasher::new(&config.argon2)?;
        let hashing = hashing::HashPool::new(config.max_hashes, config.hash_wait);
        let dummy_hash = Arc::new(OnceLock::new());
        let (background, making) = (hasher.clone(), Arc::clone(&dummy_hash));
        // On a thread of its own, in memory given back: a server that has served no login yet
        // keeps no Argon2 memory.
        std::thread::spawn(move || {
            making.get_or_init(|| dummy_of(&background));
        });
        Ok(Auth {
            token_ttl: config.token_ttl,
            hasher,
            throttle: throttle::Throttle::new(config),
            tokens: tokens::Cache::default(),
            dummy_hash,
            hashing,
        })
    }

    /// The dummy hash; blocks (in a blocking task) until the background thread has made it.
    pub fn dummy_hash(&self) -> &str {
        self.dummy_hash.get_or_init(|| dummy_of(&self.hasher))
    }
}

fn dummy_of(hasher: &password::Hasher) -> String {
    hasher
        .hash_once("saulpos: no such user")
        .unwrap_or_else(|_| "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ$".to_owned())
}
