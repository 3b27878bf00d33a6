//! Argon2id password hashes in the PHC string format (`$argon2id$v=19$m=...`), with the
//! configured parameters; a stored hash is verified with the parameters it records, and one made
//! with other parameters is due to be made again at the next successful login.
//!
//! Each thread reuses one block of Argon2 memory for every hash it computes: allocated and freed
//! anew for each hash (19 MiB at the default cost), glibc's allocator keeps most of it, and a
//! storm of logins grew the server by hundreds of megabytes.

use std::cell::RefCell;

use argon2::password_hash::rand_core::{OsRng, RngCore};
use argon2::password_hash::{Output, ParamsString, PasswordHash, SaltString};
use argon2::{Algorithm, Argon2, Block, Params, Version};

use crate::config::Argon2Config;

/// Bytes of salt in a new hash, and of its output (the argon2 crate's defaults).
const SALT_LEN: usize = 16;
const OUTPUT_LEN: usize = 32;

thread_local! {
    /// This thread's Argon2 memory, grown to the largest cost it has met, kept for the next hash.
    static BLOCKS: RefCell<Vec<Block>> = const { RefCell::new(Vec::new()) };
}

/// Where a hash's Argon2 memory comes from.
#[derive(Clone, Copy)]
enum Memory {
    /// This thread's, kept for its next hash (the hashing threads).
    Reused,
    /// Allocated for this hash and given back after (a hash made once, such as startup's).
    Fresh,
}

/// `argon2` computed into this thread's reused memory, or into memory of its own.
fn compute(
    argon2: &Argon2<'_>,
    password: &[u8],
    salt: &[u8],
    out: &mut [u8],
    memory: Memory,
) -> argon2::Result<()> {
    let needed = argon2.params().block_count();
    if let Memory::Fresh = memory {
        let mut blocks = vec![Block::default(); needed];
        return argon2.hash_password_into_with_memory(password, salt, out, &mut blocks);
    }
    BLOCKS.with(|cell| {
        let mut blocks = cell.borrow_mut();
        if blocks.len() < needed {
            blocks.resize(needed, Block::default());
        }
        argon2.hash_password_into_with_memory(password, salt, out, &mut blocks[..needed])
    })
}

/// Hashes with the configured parameters.
#[derive(Clone)]
pub struct Hasher {
    argon2: Argon2<'static>,
    params: Params,
}

impl Hasher {
    pub fn new(config: &Argon2Config) -> anyhow::Result<Hasher> {
        let params = Params::new(
            config.memory_kib,
            config.iterations,
            config.parallelism,
            Some(OUTPUT_LEN),
        )
        .map_err(|error| anyhow::anyhow!("the Argon2 parameters are not usable: {error}"))?;
        Ok(Hasher {
            argon2: Argon2::new(Algorithm::Argon2id, Version::V0x13, params.clone()),
            params,
        })
    }

    /// A new hash of `password` with a fresh random salt.
    pub fn hash(&self, password: &str) -> anyhow::Result<String> {
        self.hash_into(password, Memory::Reused)
    }

    /// As `hash`, in memory given back afterwards: for a hash made once (a server that has not
    /// served a login yet keeps no Argon2 memory).
    pub fn hash_once(&self, password: &str) -> anyhow::Result<String> {
        self.hash_into(password, Memory::Fresh)
    }

    fn hash_into(&self, password: &str, memory: Memory) -> anyhow::Result<String> {
        let failed =
            |error: &dyn std::fmt::Display| anyhow::anyhow!("cannot hash the password: {error}");
        let mut salt = [0u8; SALT_LEN];
        OsRng.fill_bytes(&mut salt);
        let mut out = [0u8; OUTPUT_LEN];
        compute(&self.argon2, password.as_bytes(), &salt, &mut out, memory)
            .map_err(|error| failed(&error))?;
        let salt = SaltString::encode_b64(&salt).map_err(|error| failed(&error))?;
        let hash = PasswordHash {
            algorithm: Algorithm::Argon2id.ident(),
            version: Some(Version::V0x13.into()),
            params: ParamsString::try_from(&self.params).map_err(|error| failed(&error))?,
            salt: Some(salt.as_salt()),
            hash: Some(Output::new(&out).map_err(|error| failed(&error))?),
        };
        Ok(hash.to_string())
    }

    /// Whether the stored hash `phc` was made with other parameters (or another algorithm) than
    /// the configured ones, so that it should be made again.
    pub fn is_outdated(&self, phc: &str) -> bool {
        let Ok(parsed) = PasswordHash::new(phc) else {
            return true;
        };
        let current = (
            self.params.m_cost(),
            self.params.t_cost(),
            self.params.p_cost(),
        );
        parsed.algorithm != Algorithm::Argon2id.ident()
            || parsed.version != Some(Version::V0x13.into())
            || Params::try_from(&parsed)
                .map(|stored| (stored.m_cost(), stored.t_cost(), stored.p_cost()))
                .ok()
                != Some(current)
    }
}

/// Whether `password` matches the stored hash `phc` (compared in constant time); a malformed
/// hash matches nothing.
pub fn verify(password: &str, phc: &str) -> bool {
    let matches = || -> Option<bool> {
        let parsed = PasswordHash::new(phc).ok()?;
        let algorithm = Algorithm::try_from(parsed.algorithm).ok()?;
        let version = match parsed.version {
            Some(version) => Version::try_from(version).ok()?,
            None => Version::default(),
        };
        let expected = parsed.hash?;
        let stored = Params::try_from(&parsed).ok()?;
        let params = Params::new(
            stored.m_cost(),
            stored.t_cost(),
            stored.p_cost(),
            Some(expected.len()),
        )
        .ok()?;
        let mut salt = [0u8; 64];
        let salt = parsed.salt?.decode_b64(&mut salt).ok()?;
        let mut out = vec![0u8; expected.len()];
        compute(
            &Argon2::new(algorithm, version, params),
            password.as_bytes(),
            salt,
            &mut out,
            Memory::Reused,
        )
        .ok()?;
        Some(Output::new(&out).ok()? == expected)
    };
    matches().unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;
    use argon2::password_hash::{PasswordHasher, PasswordVerifier};

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
        assert!(!hasher.is_outdated(&hash));
        let costlier = Hasher::new(&Argon2Config {
            memory_kib: 2048,
            iterations: 1,
            parallelism: 1,
        })
        .unwrap();
        assert!(costlier.is_outdated(&hash), "another memory cost");
        assert!(hasher.is_outdated("not a hash"));
    }

    #[test]
    fn hashes_agree_with_the_argon2_crates_own_and_reuse_the_memory_across_costs() {
        let params = Params::new(2048, 1, 1, None).unwrap();
        let reference = Argon2::new(Algorithm::Argon2id, Version::V0x13, params);
        let salt = SaltString::encode_b64(b"sixteen byte sal").unwrap();
        let theirs = reference
            .hash_password(b"pa55word", &salt)
            .unwrap()
            .to_string();
        // Ours verifies theirs, after this thread computed a smaller one.
        let small = Hasher::new(&Argon2Config {
            memory_kib: 64,
            iterations: 1,
            parallelism: 1,
        })
        .unwrap();
        assert!(verify("x", &small.hash("x").unwrap()));
        assert!(verify("pa55word", &theirs));
        assert!(!verify("pa55word!", &theirs));
        // And theirs verifies ours.
        let ours = Hasher::new(&Argon2Config {
            memory_kib: 2048,
            iterations: 1,
            parallelism: 1,
        })
        .unwrap()
        .hash("pa55word")
        .unwrap();
        let parsed = PasswordHash::new(&ours).unwrap();
        assert!(
            Argon2::default()
                .verify_password(b"pa55word", &parsed)
                .is_ok()
        );
    }
}
