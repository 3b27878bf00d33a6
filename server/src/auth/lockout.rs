//! Failed logins counted per user and per client address; past the limit, logins from either
//! wait until the lockout ends. A success clears both counts.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// A client address may fail this many times the per-user limit (several cashiers behind one
/// address mistype too).
const CLIENT_FACTOR: u32 = 4;
/// Past this many tracked keys, expired ones are dropped.
const PRUNE_AT: usize = 10_000;

pub struct Lockout {
    max_failures: u32,
    duration: Duration,
    entries: Mutex<HashMap<Key, Failures>>,
}

#[derive(Clone, PartialEq, Eq, Hash)]
enum Key {
    User(String),
    Client(IpAddr),
}

struct Failures {
    count: u32,
    last: Instant,
    locked_until: Option<Instant>,
}

impl Lockout {
    pub fn new(max_failures: u32, duration: Duration) -> Lockout {
        Lockout {
            max_failures,
            duration,
            entries: Mutex::new(HashMap::new()),
        }
    }

    fn keys(username: &str, client: Option<IpAddr>) -> Vec<Key> {
        let mut keys = vec![Key::User(username.to_owned())];
        keys.extend(client.map(Key::Client));
        keys
    }

    /// How long logins for this user or from this client must still wait, if they must.
    pub fn wait(&self, username: &str, client: Option<IpAddr>) -> Option<Duration> {
        let now = Instant::now();
        let entries = self
            .entries
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        Self::keys(username, client)
            .iter()
            .filter_map(|key| entries.get(key)?.locked_until)
            .filter(|until| *until > now)
            .map(|until| until - now)
            .max()
    }

    /// Counts a failure; returns whether it started a lockout.
    pub fn fail(&self, username: &str, client: Option<IpAddr>) -> bool {
        let now = Instant::now();
        let mut entries = self
            .entries
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        if entries.len() >= PRUNE_AT {
            let duration = self.duration;
            entries.retain(|_, failures| now.duration_since(failures.last) < duration);
        }
        let mut locked = false;
        for key in Self::keys(username, client) {
            let limit = match key {
                Key::User(_) => self.max_failures,
                Key::Client(_) => self.max_failures.saturating_mul(CLIENT_FACTOR),
            };
            let failures = entries.entry(key).or_insert(Failures {
                count: 0,
                last: now,
                locked_until: None,
            });
            // Failures older than one lockout period are forgotten.
            if now.duration_since(failures.last) >= self.duration {
                failures.count = 0;
                failures.locked_until = None;
            }
            failures.count += 1;
            failures.last = now;
            if failures.count >= limit {
                failures.locked_until = Some(now + self.duration);
                failures.count = 0;
                locked = true;
            }
        }
        locked
    }

    /// A successful login: both counts start again.
    pub fn succeed(&self, username: &str, client: Option<IpAddr>) {
        let mut entries = self
            .entries
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        for key in Self::keys(username, client) {
            entries.remove(&key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_limit_locks_the_user_and_a_success_clears_it() {
        let lockout = Lockout::new(3, Duration::from_secs(60));
        let client = Some(IpAddr::from([10, 0, 0, 1]));
        assert!(!lockout.fail("ann", client));
        assert!(!lockout.fail("ann", client));
        assert!(lockout.wait("ann", client).is_none());
        assert!(lockout.fail("ann", client));
        let wait = lockout.wait("ann", None).unwrap();
        assert!(wait > Duration::from_secs(59), "{wait:?}");
        assert!(
            lockout.wait("bob", client).is_none(),
            "the client is below its limit"
        );
        lockout.succeed("ann", client);
        assert!(lockout.wait("ann", client).is_none());
    }

    #[test]
    fn one_client_failing_for_many_users_is_locked_out() {
        let lockout = Lockout::new(2, Duration::from_secs(60));
        let client = Some(IpAddr::from([10, 0, 0, 2]));
        for index in 0..8 {
            lockout.fail(&format!("user{index}"), client);
        }
        assert!(lockout.wait("someone-else", client).is_some());
        assert!(lockout.wait("someone-else", None).is_none());
    }
}
