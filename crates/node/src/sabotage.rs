//! Test-only sabotage, in debug builds alone; release builds compile it out.
//!
//! `FIREBREAK_SABOTAGE_ID_CHECK_OFF=1` starts a node on an empty disk under an id the
//! cluster knows (`crate::id_check` refuses it otherwise): the lost votes and writes the
//! drills' checkers must catch (tests/drill_sabotage.rs).
//!
//! The gateway: with
//! `FIREBREAK_SABOTAGE_STALE_ROUTE=<site>:<ms>` the gateway of `<site>` keeps forwarding by
//! the route it had before each routing change for `<ms>` after it, with that route's
//! epoch: a gateway with a stale view. It proves that the payments service's fencing
//! refuses the old primary's writes, and that the drills' `fenced-writes` checker catches
//! them when fencing is off too. Release builds compile it out.
//!
//! The kv API: with `FIREBREAK_SABOTAGE_STALE_READS` set, a linearizable read skips the
//! leader's barrier and answers a key from what this node read for it up to
//! [`STALE_READ_HOLD`] before: a node with a stale read cache. It proves that the drills'
//! linearizability checker catches stale reads (tests/drill_kv.rs). Answering from the
//! replica alone was too seldom stale to prove it every time: on loopback a follower
//! applies a commit within a millisecond.
//!
//! Cut Raft RPCs, for tests that run their nodes in one process: [`cut_rpcs`] drops
//! every RPC of a kind from one node to another in one group (AppendEntries, votes,
//! snapshots, and the election gate's leader probes) as if the link were down. A test can
//! then place a log entry on chosen nodes and choose who may win an election
//! (crates/node/tests/reforward.rs). The table is the process's, so a test that uses it
//! must be alone in its test binary. Release builds never cut.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use firebreak_model::failover::Route;
use firebreak_model::kv::KvEntry;
use firebreak_model::{NodeId, SiteId};

/// How long the gateway of `site` keeps a stale route, if the environment asks (read once:
/// the gateway asks on every request).
pub fn stale_route_hold(site: &SiteId) -> Option<Duration> {
    static ASKED: std::sync::OnceLock<Option<(String, Duration)>> = std::sync::OnceLock::new();
    let asked = ASKED.get_or_init(|| {
        if !cfg!(debug_assertions) {
            return None;
        }
        let value = std::env::var("FIREBREAK_SABOTAGE_STALE_ROUTE").ok()?;
        let (which, ms) = value.split_once(':')?;
        Some((which.to_string(), Duration::from_millis(ms.parse().ok()?)))
    });
    asked
        .as_ref()
        .filter(|(which, _)| *which == site.0)
        .map(|(_, hold)| *hold)
}

/// Per service: the route before the last change, the route now, and when it changed.
type Seen = BTreeMap<String, (Route, Route, Instant)>;

static SEEN: Mutex<Seen> = Mutex::new(BTreeMap::new());

/// The route the sabotaged gateway forwards `service` by, given the route it has now.
pub fn stale_view(service: &str, route: &Route, hold: Duration) -> Route {
    let mut seen = SEEN.lock().expect("not poisoned");
    let (previous, current, since) = seen
        .entry(service.to_string())
        .or_insert_with(|| (route.clone(), route.clone(), Instant::now()));
    if current.epoch != route.epoch {
        *previous = std::mem::replace(current, route.clone());
        *since = Instant::now();
    }
    if since.elapsed() < hold {
        previous.clone()
    } else {
        current.clone()
    }
}

/// Whether a starting node skips the check of its id against what the cluster knows.
pub fn id_check_off() -> bool {
    cfg!(debug_assertions)
        && std::env::var("FIREBREAK_SABOTAGE_ID_CHECK_OFF").is_ok_and(|v| v == "1")
}

/// One cut: every `rpc` (`append`, `vote`, `snapshot` or `leader`) that node `from` sends
/// to node `to` in `group` fails as if the peer were unreachable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RpcCut {
    pub group: &'static str,
    pub from: u64,
    pub to: u64,
    pub rpc: &'static str,
}

static CUTS: Mutex<Vec<RpcCut>> = Mutex::new(Vec::new());

/// Replaces every cut with `cuts` (an empty list heals all); debug builds only.
pub fn cut_rpcs(cuts: Vec<RpcCut>) {
    if !cfg!(debug_assertions) {
        panic!("RPC cuts are for debug-build tests");
    }
    *CUTS.lock().expect("not poisoned") = cuts;
}

/// Whether `rpc` from `from` to `to` in `group` is cut.
pub(crate) fn rpc_cut(group: &str, from: NodeId, to: NodeId, rpc: &str) -> bool {
    cfg!(debug_assertions)
        && CUTS
            .lock()
            .expect("not poisoned")
            .iter()
            .any(|c| c.group == group && c.from == from.0 && c.to == to.0 && c.rpc == rpc)
}

/// How long a sabotaged node answers a key with what it read for it before.
pub const STALE_READ_HOLD: Duration = Duration::from_secs(1);

/// A key's answer as a sabotaged node last read it: when, the entry, the revision.
type CachedRead = (Instant, Option<KvEntry>, u64);

/// Whether linearizable reads are sabotaged; debug builds only.
pub(crate) fn stale_reads() -> bool {
    cfg!(debug_assertions) && std::env::var_os("FIREBREAK_SABOTAGE_STALE_READS").is_some()
}

/// `key`'s answer from the sabotaged read cache: what was read for it within
/// [`STALE_READ_HOLD`], else `fresh()`, kept for the next reads.
pub(crate) fn stale_read(
    key: &str,
    fresh: impl FnOnce() -> (Option<KvEntry>, u64),
) -> (Option<KvEntry>, u64) {
    static CACHE: Mutex<BTreeMap<String, CachedRead>> = Mutex::new(BTreeMap::new());
    let mut cache = CACHE.lock().expect("not poisoned");
    match cache.get(key) {
        Some((at, entry, revision)) if at.elapsed() < STALE_READ_HOLD => (entry.clone(), *revision),
        _ => {
            let (entry, revision) = fresh();
            cache.insert(key.to_string(), (Instant::now(), entry.clone(), revision));
            (entry, revision)
        }
    }
}
