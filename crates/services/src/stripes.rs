//! Striped locks: one instance runs at most one compare-and-swap at a time per key, so its
//! own concurrent requests queue instead of conflicting.
//!
//! ```text
//!   send to room-7 ─┐                      ┌─ read seq, CAS ─► done
//!   send to room-7 ─┴─► stripe(hash(room-7)) ┴─ (waits) read seq, CAS ─► done
//! ```
//!
//! Without it, concurrent sends to one conversation (or transfers touching one account)
//! race: all but one CAS fails, and each failure costs another read and write through
//! the state group. Under load that work grows with the load itself, and goodput
//! collapses. Requests of other instances (other sites) can still conflict; the CAS
//! stays the guarantee, the stripes only make conflicts rare.

use std::hash::{BuildHasher, Hash};

use tokio::sync::{Mutex, MutexGuard};

/// Stripes per instance: enough that unrelated keys rarely share one.
const STRIPES: usize = 256;

/// A fixed set of locks, picked by key.
pub(crate) struct Stripes {
    locks: Vec<Mutex<()>>,
    hasher: std::collections::hash_map::RandomState,
}

impl Default for Stripes {
    fn default() -> Self {
        Self {
            locks: (0..STRIPES).map(|_| Mutex::new(())).collect(),
            hasher: std::collections::hash_map::RandomState::new(),
        }
    }
}

impl Stripes {
    /// Locks the stripes of `keys`, always in the same order (no deadlock between two
    /// requests locking the same pair the other way round).
    pub(crate) async fn lock<K: Hash>(&self, keys: &[K]) -> Vec<MutexGuard<'_, ()>> {
        let mut stripes: Vec<usize> = keys
            .iter()
            .map(|k| self.hasher.hash_one(k) as usize % STRIPES)
            .collect();
        stripes.sort_unstable();
        stripes.dedup();
        let mut guards = Vec::with_capacity(stripes.len());
        for i in stripes {
            guards.push(self.locks[i].lock().await);
        }
        guards
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_key_is_held_by_one_request_at_a_time_and_pairs_do_not_deadlock() {
        let stripes = std::sync::Arc::new(Stripes::default());
        let held = stripes.lock(&["acct-1"]).await;
        let waiting = {
            let stripes = stripes.clone();
            tokio::spawn(async move {
                let _guards = stripes.lock(&["acct-1"]).await;
            })
        };
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        assert!(!waiting.is_finished(), "a second lock of the key waits");
        drop(held);
        waiting.await.unwrap();
        // Two requests locking one pair in opposite orders both finish.
        let (a, b) = (stripes.clone(), stripes.clone());
        let one = tokio::spawn(async move {
            for _ in 0..100 {
                let _g = a.lock(&["x", "y"]).await;
            }
        });
        let two = tokio::spawn(async move {
            for _ in 0..100 {
                let _g = b.lock(&["y", "x"]).await;
            }
        });
        tokio::time::timeout(std::time::Duration::from_secs(5), async {
            one.await.unwrap();
            two.await.unwrap();
        })
        .await
        .expect("no deadlock");
    }
}
