//! Where password hashes are computed: a fixed set of threads, one a slot, so that a storm of
//! logins takes at most that many hashes' memory (19 MiB each at the default cost). Tokio's
//! blocking pool would start a thread a login, each keeping its own allocator arena, and with it
//! the memory of the hash it ran.

use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

type Job = Box<dyn FnOnce() + Send>;

/// The hashing threads and the slots that keep the work queued for them bounded.
pub struct HashPool {
    jobs: mpsc::Sender<Job>,
    slots: Arc<Semaphore>,
    wait: Duration,
}

/// The right to run one hash on the pool.
pub struct Slot<'a> {
    pool: &'a HashPool,
    _permit: OwnedSemaphorePermit,
}

impl HashPool {
    /// `threads` hashing threads; a login waits at most `wait` for one to be free.
    pub fn new(threads: usize, wait: Duration) -> HashPool {
        let threads = threads.max(1);
        let (jobs, queue) = mpsc::channel::<Job>();
        let queue = Arc::new(Mutex::new(queue));
        for index in 0..threads {
            let queue = Arc::clone(&queue);
            std::thread::Builder::new()
                .name(format!("saulpos-hash-{index}"))
                .spawn(move || {
                    loop {
                        let job = match queue.lock() {
                            Ok(receiver) => receiver.recv(),
                            Err(poison) => poison.into_inner().recv(),
                        };
                        match job {
                            Ok(job) => job(),
                            Err(_) => break,
                        }
                    }
                })
                .expect("cannot start a hashing thread");
        }
        HashPool {
            jobs,
            slots: Arc::new(Semaphore::new(threads)),
            wait,
        }
    }

    /// A free slot, waiting at most the configured time; `None` when every slot stayed busy.
    pub async fn slot(&self) -> Option<Slot<'_>> {
        let waiting = Arc::clone(&self.slots).acquire_owned();
        let permit = match tokio::time::timeout(self.wait, waiting).await {
            Ok(Ok(permit)) => permit,
            _ => Arc::clone(&self.slots).try_acquire_owned().ok()?,
        };
        Some(Slot {
            pool: self,
            _permit: permit,
        })
    }

    /// Queues `work` for the next free hashing thread.
    fn spawn(&self, work: impl FnOnce() + Send + 'static) {
        let _ = self.jobs.send(Box::new(work));
    }
}

impl Slot<'_> {
    /// Runs `work` on a hashing thread and gives back its result; the slot is free afterwards.
    pub async fn run<T: Send + 'static>(self, work: impl FnOnce() -> T + Send + 'static) -> T {
        let (done, result) = tokio::sync::oneshot::channel();
        self.pool.spawn(move || {
            let _ = done.send(work());
        });
        result.await.expect("a hashing thread ended")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn at_most_the_slots_are_taken_and_a_busy_pool_says_so() {
        let pool = HashPool::new(1, Duration::from_millis(20));
        let slot = pool.slot().await.unwrap();
        assert!(pool.slot().await.is_none(), "the only slot is taken");
        assert_eq!(slot.run(|| 6 * 7).await, 42);
        let again = pool.slot().await.unwrap();
        assert_eq!(
            again
                .run(|| std::thread::current().name().map(str::to_owned))
                .await,
            Some("saulpos-hash-0".to_owned())
        );
    }
}
