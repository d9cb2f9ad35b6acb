//! Epoch fencing of an active-passive service's writes: a primary that lost its role must
//! not commit, even with a stale view of the routing.
//!
//! ```text
//!   the epoch of a write: x-firebreak-epoch (set by the gateway), else the newest the
//!   instance learned from its routing watch (GET /v1/routing/{service}, long-polled)
//!   epoch < newest known                 ─► 503 stale_epoch (nothing applied)
//!   epoch > newest known                 ─► asked of the nodes first; not in the routing:
//!                                           503 stale_epoch
//!   the primary at epoch is another site ─► 503 not_primary (with `--site`)
//!   in the state group: <service>/fence holds the highest epoch any write committed under;
//!   every write's txn compares  fence ≤ epoch  and puts  fence = epoch
//!   fence > epoch (a newer primary wrote) ─► 503 stale_epoch (nothing applied)
//! ```
//!
//! So once the new primary has committed one write, no write of the old one commits,
//! whatever routing the old one or its gateway still believe. Active-active services are
//! not fenced: every serving site writes.

use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use axum::http::{HeaderMap, StatusCode};
use firebreak_model::kv::{Compare, CompareOp, CompareTarget, KvEntry, TxnOp};

use crate::http::Failure;
use crate::state::StateClient;

/// The header with the route's epoch, and the one naming an active-passive primary
/// (the gateway sets both).
pub const EPOCH_HEADER: &str = "x-firebreak-epoch";
pub const PRIMARY_HEADER: &str = "x-firebreak-primary";
/// How long one poll of the routing watch waits.
const WATCH_WAIT: Duration = Duration::from_secs(20);
/// Pause after a failed poll.
const WATCH_RETRY: Duration = Duration::from_secs(1);

/// The newest route an instance knows of its service.
#[derive(Debug, Clone, Default)]
struct View {
    /// 0: none yet.
    epoch: u64,
    /// The primary at `epoch`, if the route has one (and it is known).
    primary: Option<String>,
    /// Whether the route has a primary.
    active_passive: bool,
}

/// What an instance knows of its service's route, its own site, and the fence key.
pub struct Fence {
    service: String,
    key: String,
    /// The site this instance serves, when it was told (`firebreak serve --site`): a
    /// write at an epoch whose primary is another site is refused.
    site: Option<String>,
    /// To check an epoch newer than the newest known with the nodes.
    state: StateClient,
    view: Mutex<View>,
}

/// Epochs are stored zero-padded, so that the state group's string compare orders them.
fn padded(epoch: u64) -> String {
    format!("{epoch:020}")
}

impl Fence {
    /// A fence for `service` of the instance in `site`, following its route through
    /// `state` until dropped.
    pub fn start(service: &str, site: Option<String>, state: StateClient) -> Arc<Self> {
        let fence = Arc::new(Self {
            service: service.to_string(),
            key: format!("{service}/fence"),
            site,
            state: state.clone(),
            view: Mutex::default(),
        });
        tokio::spawn(watch(Arc::downgrade(&fence), state));
        fence
    }

    /// The fence key, read with a write's other keys.
    pub fn key(&self) -> &str {
        &self.key
    }

    fn view(&self) -> View {
        self.view.lock().expect("not poisoned").clone()
    }

    /// Takes a route at `epoch` as the newest known, unless a newer one is. `primary`
    /// `None` with `active_passive` `None`: only the epoch is known (from a stored fence),
    /// and the mode stays as it was.
    fn learn(&self, epoch: u64, primary: Option<String>, active_passive: Option<bool>) {
        let mut view = self.view.lock().expect("not poisoned");
        if epoch > view.epoch || (epoch == view.epoch && view.primary.is_none()) {
            *view = View {
                epoch,
                primary,
                active_passive: active_passive.unwrap_or(view.active_passive),
            };
        }
    }

    /// The epoch a write with `headers` is made under; `None`: not fenced (active-active).
    /// An epoch newer than the newest known is checked with the nodes first: only routing
    /// that exists may move the fence (a caller that reaches the instance directly could
    /// otherwise send a huge epoch and stall the real primary). An instance that knows its
    /// site refuses a write at an epoch whose primary is elsewhere.
    pub async fn epoch_of(&self, headers: &HeaderMap) -> Result<Option<u64>, Failure> {
        let header = |name| headers.get(name).and_then(|v| v.to_str().ok());
        let known = self.view();
        if !(header(PRIMARY_HEADER).is_some() || known.active_passive)
            || crate::sabotage::fencing_off()
        {
            return Ok(None);
        }
        let epoch = match header(EPOCH_HEADER).map(str::parse::<u64>) {
            None if known.epoch > 0 => known.epoch,
            None => return Err(self.unknown("no routing epoch known yet")),
            Some(Err(_)) => {
                return Err(Failure(
                    StatusCode::BAD_REQUEST,
                    "invalid_input",
                    format!("{EPOCH_HEADER} must be a number"),
                ))
            }
            Some(Ok(epoch)) => epoch,
        };
        if epoch < known.epoch {
            return Err(self.stale(epoch, known.epoch));
        }
        if epoch > known.epoch {
            match self.state.route(&self.service, 0, Duration::ZERO).await {
                Ok((current, primary)) => {
                    let active_passive = primary.is_some();
                    self.learn(current, primary, Some(active_passive))
                }
                Err(err) => {
                    return Err(self.unknown(&format!("could not check epoch {epoch}: {err}")))
                }
            }
        }
        let known = self.view();
        if epoch > known.epoch {
            return Err(self.unknown(&format!("epoch {epoch} is not in the routing yet")));
        }
        if let (Some(site), Some(primary)) = (&self.site, &known.primary) {
            if epoch == known.epoch && site != primary {
                return Err(Failure(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "not_primary",
                    format!(
                        "this instance serves {site}, and at routing epoch {epoch} the primary \
                         of {} is {primary}: nothing was applied; send it through a gateway",
                        self.service
                    ),
                ));
            }
        }
        Ok(Some(epoch))
    }

    fn unknown(&self, why: &str) -> Failure {
        Failure(
            StatusCode::SERVICE_UNAVAILABLE,
            "stale_epoch",
            format!("{}: {why}; nothing was applied", self.service),
        )
    }

    /// Refuses a write at `epoch` if the stored fence is past it (a newer primary wrote).
    pub fn check(&self, stored: Option<&KvEntry>, epoch: u64) -> Result<(), Failure> {
        let fenced = stored
            .and_then(|e| e.value.parse::<u64>().ok())
            .unwrap_or(0);
        if fenced > epoch {
            self.learn(fenced, None, None);
            return Err(self.stale(epoch, fenced));
        }
        Ok(())
    }

    /// The compare a write's txn adds: the fence is at most `epoch`.
    pub fn compare(&self, epoch: u64) -> Compare {
        Compare {
            key: self.key.clone(),
            op: CompareOp::Lt,
            target: CompareTarget::Value(Some(padded(epoch.saturating_add(1)))),
        }
    }

    /// The put a write's txn adds: the fence moves up to `epoch`.
    pub fn put(&self, epoch: u64) -> TxnOp {
        TxnOp::Put {
            key: self.key.clone(),
            value: padded(epoch),
        }
    }

    fn stale(&self, epoch: u64, newer: u64) -> Failure {
        Failure(
            StatusCode::SERVICE_UNAVAILABLE,
            "stale_epoch",
            format!(
                "this write is at routing epoch {epoch} of {}, and epoch {newer} has a newer \
                 primary: nothing was applied; send it again through a gateway",
                self.service
            ),
        )
    }
}

/// Follows the service's route while the fence lives.
async fn watch(fence: Weak<Fence>, state: StateClient) {
    let mut after = 0;
    loop {
        let Some(service) = fence.upgrade().map(|f| f.service.clone()) else {
            return;
        };
        match state.route(&service, after, WATCH_WAIT).await {
            Ok((epoch, primary)) => {
                let Some(fence) = fence.upgrade() else { return };
                let active_passive = primary.is_some();
                fence.learn(epoch, primary, Some(active_passive));
                after = epoch;
            }
            Err(err) => {
                tracing::debug!(cause = %err, "routing watch failed; trying again");
                tokio::time::sleep(WATCH_RETRY).await;
            }
        }
    }
}
