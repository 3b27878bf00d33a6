//! Argon2id password hashes in the PHC string format (`$argon2id$v=19$m=...`), with the
//! configured parameters; a stored hash is verified with the parameters it records.

use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};

use crate::config::Argon2Config;

/// Hashes with the configured parameters.
#[derive(Clone)]
pub struct Hasher {
    argon2: Argon2<'static>,
}

impl Hasher {
    pub fn new(config: &Argon2Config) -> anyhow::Result<Hasher> {
        let params = Params::new(
            config.memory_kib,
            config.iterations,
            config.parallelism,
            None,
        )
        .map_err(|error| anyhow::anyhow!("the Argon2 parameters are not usable: {error}"))?;
        Ok(Hasher {
            argon2: Argon2::new(Algorithm::Argon2id, Version::V0x13, params),
        })
    }

    /// A new hash of `password` with a fresh random salt.
    pub fn hash(&self, password: &str) -> anyhow::Result<String> {
        let salt = SaltString::generate(&mut OsRng);
        self.argon2
            .hash_password(password.as_bytes(), &salt)
            .map(|hash| hash.to_string())
            .map_err(|error| anyhow::anyhow!("cannot hash the password: {error}"))
    }
}

/// Whether `password` matches the stored hash `phc`; a malformed hash matches nothing.
pub fn verify(password: &str, phc: &str) -> bool {
    match PasswordHash::new(phc) {
        Ok(parsed) => Argon2::default()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok(),
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hash_verifies_its_password_only_and_records_its_parameters() {
        let hasher = Hasher::new(&Argon2Config {
            memory_kib: 1024,
            iterations: 1,
            parallelism: 1,
        })
        .unwrap();
        let hash = hasher.hash("correct horse").unwrap();
        assert!(hash.starts_with("$argon2id$v=19$m=1024,t=1,p=1$"), "{hash}");
        assert!(verify("correct horse", &hash));
        assert!(!verify("correct horse ", &hash));
        assert!(!verify("correct horse", "not a hash"));
        assert_ne!(hasher.hash("correct horse").unwrap(), hash, "salted");
    }
}
