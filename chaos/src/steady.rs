//! Steady: when a drill may start its workload, and when a test may start to measure.
//!
//! ```text
//!   every node's /v1/cluster ─► leaders_agree: each Raft group has one leader, named by
//!                               every node, and that leader can commit (leads with a quorum)
//!   every node's /v1/routing ─► routes_full: every service is served by every site it should
//!                               serve, at the same epoch on every node
//!   both, on every poll over HOLD ──────────────────────────────► steady: start
//! ```
//!
//! Bring-up only waits until the sites serve; a cluster that serves can still be settling:
//! a node still joining the route, a health probe that fell once under the load of
//! connecting idle clients and rises again, a second election right after the first. A
//! workload started then sees a routing change with no fault (a spurious quiet-routing
//! failure, seen in `reconnect-storm`) or an election it counts against the drill. The
//! condition is checked here, in one place, as pure functions of what the nodes answered;
//! the waits with their deadlines live at the edges (the drill's bring-up, the tests'
//! harness).
//!
//! Caveat: "should serve" is the playbook's view at bring-up (every site for an
//! active-active service, one primary for an active-passive one); it is not meant for a
//! cluster in the middle of a fault.

use serde_json::Value;

/// Where a service should be served once the cluster is steady.
#[derive(Debug, Clone, PartialEq)]
pub enum Serving {
    /// By every one of these sites (active-active).
    All(Vec<String>),
    /// By exactly one site, the primary (active-passive).
    One,
}

/// The leaders of the control and state groups when every node answered, and each group
/// has one leader that every node names and that itself leads with a quorum; else what
/// is not so yet. `clusters` holds each node's `/v1/cluster` (`None`: it did not
/// answer), in node order.
pub fn leaders_agree(clusters: &[Option<Value>]) -> Result<(u64, u64), String> {
    if let Some(node) = clusters.iter().position(Option::is_none) {
        return Err(format!("node {} does not answer", node + 1));
    }
    Ok((
        agreed_leader(clusters, "control")?,
        agreed_leader(clusters, "state")?,
    ))
}

/// The leader of `group` that every node that answered names, if it reports a quorum
/// behind it; else what is not so yet. Nodes that did not answer (`None`: dead, paused)
/// are left out, and so are nodes that hold no membership of the group (a playbook's
/// `state_voters` leaves the others out of the state group: they never learn its leader).
pub fn agreed_leader(clusters: &[Option<Value>], group: &str) -> Result<u64, String> {
    let answered: Vec<&Value> = clusters
        .iter()
        .flatten()
        .filter(|c| {
            group_info(c, group)
                .and_then(|g| g["members"].as_array())
                .is_some_and(|m| !m.is_empty())
        })
        .collect();
    let named: Vec<Option<u64>> = answered
        .iter()
        .map(|c| group_info(c, group).and_then(|g| g["leader"].as_u64()))
        .collect();
    let first = named.first().copied().flatten();
    let Some(leader) = first.filter(|l| named.iter().all(|n| *n == Some(*l))) else {
        return Err(format!(
            "the {group} group's leader is not agreed: {named:?}"
        ));
    };
    let leads = answered
        .iter()
        .filter_map(|c| group_info(c, group))
        .any(|g| g["leader"].as_u64() == Some(leader) && g["leads_with_quorum"] == true);
    match leads {
        true => Ok(leader),
        false => Err(format!(
            "node {leader}, the {group} group's leader, does not report a quorum behind it"
        )),
    }
}

fn group_info<'v>(cluster: &'v Value, group: &str) -> Option<&'v Value> {
    cluster["groups"]
        .as_array()?
        .iter()
        .find(|g| g["name"] == group)
}

/// `Ok` when, on every node, every service in `wanted` is served where it should be and
/// at the same epoch as on the first node; else what is not so yet. `routings` holds
/// each node's `/v1/routing` (`None`: it did not answer), in node order.
pub fn routes_full(wanted: &[(String, Serving)], routings: &[Option<Value>]) -> Result<(), String> {
    let mut epochs = vec![None; wanted.len()];
    for (node, routing) in routings.iter().enumerate() {
        let Some(routing) = routing else {
            return Err(format!("node {} does not answer", node + 1));
        };
        for (i, (service, serving)) in wanted.iter().enumerate() {
            let route = &routing["routes"][service];
            let sites: Vec<&str> = route["serving"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .collect();
            let full = match serving {
                Serving::All(all) => all.iter().all(|s| sites.contains(&s.as_str())),
                Serving::One => sites.len() == 1,
            };
            if !full {
                return Err(format!(
                    "{service} is served by {sites:?} on node {}, not yet by {}",
                    node + 1,
                    serving.describe()
                ));
            }
            let epoch = route["epoch"].as_u64();
            if *epochs[i].get_or_insert(epoch) != epoch {
                return Err(format!(
                    "{service}'s route is at epoch {epoch:?} on node {} and {:?} on node 1",
                    node + 1,
                    epochs[i].flatten()
                ));
            }
        }
    }
    Ok(())
}

impl Serving {
    fn describe(&self) -> String {
        match self {
            Serving::All(sites) => format!("all of {sites:?}"),
            Serving::One => "one primary".into(),
        }
    }
}

/// Tracks one condition over polls: steady once it held on every poll for `hold_ms`.
/// A poll where it fails starts the hold again and is remembered as the reason to report
/// if the wait runs out.
#[derive(Debug)]
pub struct Settle {
    hold_ms: u64,
    since_ms: Option<u64>,
    /// Why the last poll that failed did (for the error when the wait runs out).
    pub last_reason: Option<String>,
}

impl Settle {
    pub fn new(hold_ms: u64) -> Self {
        Self {
            hold_ms,
            since_ms: None,
            last_reason: None,
        }
    }

    /// Records one poll at `now_ms` (monotonic); true once the condition held on every
    /// poll since at least `hold_ms` ago.
    pub fn observe(&mut self, now_ms: u64, verdict: Result<(), String>) -> bool {
        match verdict {
            Ok(()) => {
                let since = *self.since_ms.get_or_insert(now_ms);
                now_ms - since >= self.hold_ms
            }
            Err(why) => {
                self.since_ms = None;
                self.last_reason = Some(why);
                false
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn cluster(control: Option<u64>, state: Option<u64>, me: u64) -> Option<Value> {
        let members = json!([{ "id": 1 }, { "id": 2 }, { "id": 3 }]);
        let group = |name: &str, leader: Option<u64>| json!({ "name": name, "leader": leader, "leads_with_quorum": leader == Some(me), "members": members });
        Some(json!({ "groups": [group("control", control), group("state", state)] }))
    }

    fn routing(messaging: &[&str], epoch: u64) -> Option<Value> {
        Some(json!({ "routes": {
            "messaging": { "serving": messaging, "epoch": epoch },
            "payments": { "serving": ["a"], "epoch": 1 },
        }}))
    }

    fn wanted() -> Vec<(String, Serving)> {
        let all = Serving::All(vec!["a".into(), "b".into(), "c".into()]);
        vec![("messaging".into(), all), ("payments".into(), Serving::One)]
    }

    #[test]
    fn leaders_must_be_named_by_every_node_and_hold_a_quorum() {
        let agreed = [cluster(Some(1), Some(2), 1), cluster(Some(1), Some(2), 2)];
        assert_eq!(leaders_agree(&agreed), Ok((1, 2)));
        let split = [cluster(Some(1), Some(2), 1), cluster(Some(3), Some(2), 2)];
        assert!(leaders_agree(&split).unwrap_err().contains("control"));
        let unknown = [cluster(Some(1), None, 1), cluster(Some(1), None, 2)];
        assert!(leaders_agree(&unknown).unwrap_err().contains("state"));
        // Every node names node 3, but node 3 does not answer: nobody reports a quorum.
        let absent = [cluster(Some(3), Some(3), 1), cluster(Some(3), Some(3), 2)];
        assert!(leaders_agree(&absent).unwrap_err().contains("quorum"));
        assert!(leaders_agree(&[cluster(Some(1), Some(1), 1), None])
            .unwrap_err()
            .contains("node 2 does not answer"));
    }

    /// With `state_voters: [pangyo]` the other nodes hold no membership of the state group
    /// and never name its leader: they must not hold the start back.
    #[test]
    fn a_node_outside_a_group_does_not_hold_the_start_back() {
        let mut outside = cluster(Some(1), None, 2).unwrap();
        outside["groups"][1]["members"] = json!([]);
        let clusters = [cluster(Some(1), Some(1), 1), Some(outside)];
        assert_eq!(leaders_agree(&clusters), Ok((1, 1)));
    }

    #[test]
    fn a_route_still_missing_a_site_or_lagging_an_epoch_is_not_full() {
        let full = [routing(&["a", "b", "c"], 3), routing(&["c", "b", "a"], 3)];
        assert_eq!(routes_full(&wanted(), &full), Ok(()));
        let joining = [routing(&["a", "b", "c"], 3), routing(&["a", "b"], 2)];
        let why = routes_full(&wanted(), &joining).unwrap_err();
        assert!(why.contains("messaging") && why.contains("node 2"), "{why}");
        let lagging = [routing(&["a", "b", "c"], 4), routing(&["a", "b", "c"], 3)];
        assert!(routes_full(&wanted(), &lagging)
            .unwrap_err()
            .contains("epoch"));
    }

    /// The drill's start condition: a route that is still settling (a site that joins,
    /// drops out once and comes back, as under the load of idle clients connecting)
    /// delays the start; it does not fail the drill, and the start comes once the route
    /// held for the whole hold.
    #[test]
    fn a_route_that_is_still_settling_delays_the_start() {
        let mut settle = Settle::new(1_000);
        let polls = [
            (0, routing(&["a", "b"], 2)),        // c still joining
            (250, routing(&["a", "b", "c"], 3)), // joined
            (500, routing(&["a", "b"], 4)),      // a probe fell: c out again
            (750, routing(&["a", "b", "c"], 5)), // back: the hold starts here
            (1_500, routing(&["a", "b", "c"], 5)),
        ];
        for (at, poll) in polls {
            let verdict = routes_full(&wanted(), &[poll]);
            assert!(!settle.observe(at, verdict), "started at {at} ms");
        }
        assert!(settle.last_reason.as_deref().unwrap().contains("messaging"));
        let held = routes_full(&wanted(), &[routing(&["a", "b", "c"], 5)]);
        assert!(settle.observe(1_750, held), "steady for 1 s since 750 ms");
    }
}
