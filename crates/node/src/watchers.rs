//! Long-poll slots: kv watches, a service's route poll and the admin routing poll all wait
//! in one of `api.max_watchers` slots, and no one holder may take more than its share.
//!
//! ```text
//!   holder                              share of the slots
//!   an operator (token or certificate)  all of them (trusted; `bench watchers` needs many)
//!   a service's certificate             a quarter
//!   anyone else, by address             a sixteenth (the admin routing poll needs no credential)
//!   over the share, or no slot free ─► 429 overloaded, naming the limit
//! ```
//!
//! An adversarial review took every slot with one service's certificate: every node then
//! answered `/v1/routing/payments` with 429, and after a failover payments never learned
//! its new epoch, so every write got `stale_epoch`. The admin routing poll took no slot at
//! all, so anyone could hold thousands of them on the control leader.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use axum::http::StatusCode;
use firebreak_model::grant::Grant;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::reply::{ApiError, ApiResult};

/// Who holds a long poll.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Holder {
    Operator,
    /// A service's certificate, by the key prefix it grants.
    Service(String),
    /// A caller without a credential, by address.
    Address(IpAddr),
}

impl Holder {
    /// The holder behind a key grant: every key is an operator's (or a member's), a
    /// prefix is a service's.
    pub fn of_grant(grant: &Grant) -> Self {
        match grant {
            Grant::All => Self::Operator,
            Grant::Prefix(prefix) => Self::Service(prefix.clone()),
        }
    }

    /// The most slots this holder may take of `most`.
    fn share(&self, most: usize) -> usize {
        match self {
            Self::Operator => most,
            Self::Service(_) => (most / 4).max(1),
            Self::Address(_) => (most / 16).max(1),
        }
    }
}

/// The slots of one node.
#[derive(Debug)]
pub struct Watchers {
    slots: Arc<Semaphore>,
    most: usize,
    held: Mutex<HashMap<Holder, usize>>,
}

/// One long poll's slot; given back when dropped.
pub struct Slot {
    watchers: Arc<Watchers>,
    holder: Holder,
    _permit: OwnedSemaphorePermit,
}

impl Watchers {
    pub fn new(most: usize) -> Arc<Self> {
        Arc::new(Self {
            slots: Arc::new(Semaphore::new(most)),
            most,
            held: Mutex::default(),
        })
    }

    /// Slots taken now.
    pub fn waiting(&self) -> usize {
        self.most - self.slots.available_permits()
    }

    /// A slot for `holder`, or 429 when it holds its share or every slot is taken.
    pub fn take(self: &Arc<Self>, holder: Holder) -> ApiResult<Slot> {
        let mut held = self.held.lock().expect("never poisoned");
        let mine = held.get(&holder).copied().unwrap_or(0);
        let share = holder.share(self.most);
        if mine >= share {
            return Err(ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "overloaded",
                format!(
                    "this caller already holds {mine} long polls, its share of {}",
                    self.most
                ),
            ));
        }
        let permit = self.slots.clone().try_acquire_owned().map_err(|_| {
            ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "overloaded",
                format!("{} watchers already waiting", self.most),
            )
        })?;
        held.insert(holder.clone(), mine + 1);
        Ok(Slot {
            watchers: self.clone(),
            holder,
            _permit: permit,
        })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut held = self.watchers.held.lock().expect("never poisoned");
        if let Some(n) = held.get_mut(&self.holder) {
            *n -= 1;
            if *n == 0 {
                held.remove(&self.holder);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_service_takes_a_quarter_and_leaves_the_rest() {
        let watchers = Watchers::new(8);
        let login = Holder::Service("login/".into());
        let held: Vec<Slot> = (0..2)
            .map(|_| watchers.take(login.clone()).unwrap())
            .collect();
        assert!(watchers.take(login.clone()).is_err());
        let payments = watchers.take(Holder::Service("payments/".into()));
        assert!(payments.is_ok());
        drop(held);
        assert_eq!(watchers.waiting(), 1);
        assert!(watchers.take(login).is_ok());
    }

    #[test]
    fn an_address_takes_a_sixteenth_and_an_operator_what_is_free() {
        let watchers = Watchers::new(32);
        let anyone = Holder::Address("127.0.0.1".parse().unwrap());
        let _two: Vec<Slot> = (0..2)
            .map(|_| watchers.take(anyone.clone()).unwrap())
            .collect();
        assert!(watchers.take(anyone).is_err());
        let rest: Vec<Slot> = (0..30)
            .map(|_| watchers.take(Holder::Operator).unwrap())
            .collect();
        assert_eq!(rest.len(), 30);
        assert!(watchers.take(Holder::Operator).is_err(), "no slot is free");
    }
}
