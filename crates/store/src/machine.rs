//! How a pure state machine from the model is stored: as records in sled and as a
//! snapshot document.
//!
//! A [`Machine`] applies commands (pure, from `firebreak_model`) and says which records
//! each command changed, so the store writes only those. Snapshots are the machine's serde
//! form. Records and snapshots are two views of the same state; `load` and `dump` convert.

use std::collections::BTreeMap;

use firebreak_model::control::{ControlCommand, ControlResponse, ControlState, SiteRecord};
use firebreak_model::failover::{Evacuation, Freeze, Lease};
use firebreak_model::kv::{KvCommand, KvEntry, KvResponse, KvStore};
use firebreak_model::watch::KvEventKind;
use firebreak_model::{Member, NodeId, SiteId};
use openraft::RaftTypeConfig;
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::types::{ControlTypes, GroupTypes, StateTypes};

/// A change to one persisted record: a new value, or `None` to remove it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub key: Vec<u8>,
    pub value: Option<Vec<u8>>,
}

impl Change {
    fn put(key: impl Into<Vec<u8>>, value: &impl Serialize) -> Self {
        let value = serde_json::to_vec(value).expect("model types always serialize");
        Self {
            key: key.into(),
            value: Some(value),
        }
    }
}

/// A group's state machine as the store needs it.
pub trait Machine: Default + Clone + Serialize + DeserializeOwned + Send + Sync + 'static {
    /// The group whose commands this machine applies.
    type Types: GroupTypes;

    /// Applies one committed command and pushes the records it changed onto `changes`.
    fn apply(
        &mut self,
        command: &<Self::Types as RaftTypeConfig>::D,
        changes: &mut Vec<Change>,
    ) -> <Self::Types as RaftTypeConfig>::R;

    /// The response to a log entry that carries no command.
    fn empty_response() -> <Self::Types as RaftTypeConfig>::R;

    /// Rebuilds the machine from every stored record.
    fn load(records: BTreeMap<Vec<u8>, Vec<u8>>) -> Result<Self, String>;

    /// Every record of the machine, to rewrite the store after a snapshot install.
    fn dump(&self) -> Vec<Change>;
}

const KV_REVISION: &[u8] = b"revision";
const KV_KEY_PREFIX: &[u8] = b"k:";

fn kv_record_key(key: &str) -> Vec<u8> {
    [KV_KEY_PREFIX, key.as_bytes()].concat()
}

impl Machine for KvStore {
    type Types = StateTypes;

    fn apply(&mut self, commands: &Vec<KvCommand>, changes: &mut Vec<Change>) -> Vec<KvResponse> {
        let mut responses = Vec::with_capacity(commands.len());
        let revision_before = self.revision();
        for command in commands {
            let (response, events) = KvStore::apply(self, command);
            for event in events {
                changes.push(match event.kind {
                    KvEventKind::Put => Change::put(kv_record_key(&event.key), &event.entry),
                    KvEventKind::Delete => Change {
                        key: kv_record_key(&event.key),
                        value: None,
                    },
                });
            }
            responses.push(response);
        }
        if self.revision() != revision_before {
            changes.push(Change::put(KV_REVISION, &self.revision()));
        }
        responses
    }

    fn empty_response() -> Vec<KvResponse> {
        Vec::new()
    }

    fn load(records: BTreeMap<Vec<u8>, Vec<u8>>) -> Result<Self, String> {
        let mut revision = 0;
        let mut entries = BTreeMap::new();
        for (key, value) in records {
            if key == KV_REVISION {
                revision = serde_json::from_slice(&value).map_err(|e| format!("revision: {e}"))?;
            } else if let Some(name) = key.strip_prefix(KV_KEY_PREFIX) {
                let name = String::from_utf8(name.to_vec()).map_err(|e| format!("key: {e}"))?;
                let entry: KvEntry =
                    serde_json::from_slice(&value).map_err(|e| format!("entry {name:?}: {e}"))?;
                entries.insert(name, entry);
            } else {
                return Err(format!(
                    "unknown record {:?}",
                    String::from_utf8_lossy(&key)
                ));
            }
        }
        Ok(KvStore::from_entries(revision, entries))
    }

    fn dump(&self) -> Vec<Change> {
        let mut out = vec![Change::put(KV_REVISION, &self.revision())];
        out.extend(
            self.entries()
                .iter()
                .map(|(key, entry)| Change::put(kv_record_key(key), entry)),
        );
        out
    }
}

// The control state is split into records so that none approaches sled's 128 KiB blob
// threshold however long the audit log or the service list grows.
const CONTROL_MEMBERS: &[u8] = b"members";
const CONTROL_FAILOVER: &[u8] = b"failover";
const CONTROL_TOPOLOGY: &[u8] = b"topology";
const CONTROL_MEMBERSHIP: &[u8] = b"membership";
const CONTROL_ROUTE: &str = "route:";
const CONTROL_HEALTH: &str = "health:";
const CONTROL_AUDIT: &str = "audit:";
const CONTROL_HOOK: &str = "hook:";

/// Members, sites, the ping count and the group's latest stamp.
#[derive(Serialize, serde::Deserialize, Default)]
struct MembersRecord {
    sites: BTreeMap<SiteId, SiteRecord>,
    members: BTreeMap<NodeId, Member>,
    pings: u64,
    /// `ControlState::clock_ms` (absent in records written before it existed: 0).
    #[serde(default)]
    clock_ms: u64,
}

/// Failover state bounded by the number of sites.
#[derive(Serialize, serde::Deserialize, Default)]
struct FailoverRecord {
    leases: BTreeMap<SiteId, Lease>,
    evacuations: BTreeMap<SiteId, Evacuation>,
    frozen: Option<Freeze>,
    audit_archived: u64,
}

fn audit_key(seq: u64) -> String {
    format!("{CONTROL_AUDIT}{seq:020}")
}

/// The records bounded by the number of sites and members.
fn core_changes(state: &ControlState, changes: &mut Vec<Change>) {
    let members = MembersRecord {
        sites: state.sites.clone(),
        members: state.members.clone(),
        pings: state.pings,
        clock_ms: state.clock_ms,
    };
    changes.push(Change::put(CONTROL_MEMBERS, &members));
    let f = &state.failover;
    let failover = FailoverRecord {
        leases: f.leases.clone(),
        evacuations: f.evacuations.clone(),
        frozen: f.frozen.clone(),
        audit_archived: f.audit.archived,
    };
    changes.push(Change::put(CONTROL_FAILOVER, &failover));
}

/// Puts or removes `prefix + key` records where `before` and `after` differ.
fn diff_records<V: Serialize + PartialEq>(
    prefix: &str,
    before: &BTreeMap<String, V>,
    after: &BTreeMap<String, V>,
    changes: &mut Vec<Change>,
) {
    for (key, value) in after {
        if before.get(key) != Some(value) {
            changes.push(Change::put(format!("{prefix}{key}"), value));
        }
    }
    for key in before.keys().filter(|k| !after.contains_key(*k)) {
        changes.push(Change {
            key: format!("{prefix}{key}").into_bytes(),
            value: None,
        });
    }
}

impl Machine for ControlState {
    type Types = ControlTypes;

    fn apply(&mut self, command: &ControlCommand, changes: &mut Vec<Change>) -> ControlResponse {
        let routing = self.failover.routing.clone();
        let health = self.failover.health.clone();
        let hooks = self.hooks.clone();
        let membership = self.membership.clone();
        let (archived, next_seq) = (
            self.failover.audit.archived,
            self.failover.audit.archived + self.failover.audit.entries.len() as u64,
        );
        let response = ControlState::apply(self, command);
        core_changes(self, changes);
        if matches!(command, ControlCommand::ApplyTopology { .. }) {
            changes.push(Change::put(CONTROL_TOPOLOGY, &self.failover.topology));
        }
        diff_records(CONTROL_ROUTE, &routing, &self.failover.routing, changes);
        diff_records(CONTROL_HEALTH, &health, &self.failover.health, changes);
        diff_records(CONTROL_HOOK, &hooks, &self.hooks, changes);
        // Rarely changes: written when it does, not at every lease renewal.
        if self.membership != membership {
            changes.push(Change::put(CONTROL_MEMBERSHIP, &self.membership));
        }
        let audit = &self.failover.audit;
        for seq in archived..audit.archived {
            changes.push(Change {
                key: audit_key(seq).into_bytes(),
                value: None,
            });
        }
        for entry in audit.entries.iter().filter(|e| e.seq >= next_seq) {
            changes.push(Change::put(audit_key(entry.seq), entry));
        }
        response
    }

    fn empty_response() -> ControlResponse {
        ControlResponse::None
    }

    fn load(records: BTreeMap<Vec<u8>, Vec<u8>>) -> Result<Self, String> {
        let mut state = ControlState::default();
        for (key, value) in records {
            let key = String::from_utf8(key).map_err(|e| format!("control record key: {e}"))?;
            let bad = |e: serde_json::Error| format!("control record {key}: {e}");
            if key.as_bytes() == CONTROL_MEMBERS {
                let m: MembersRecord = serde_json::from_slice(&value).map_err(bad)?;
                (state.sites, state.members, state.pings) = (m.sites, m.members, m.pings);
                state.clock_ms = m.clock_ms;
            } else if key.as_bytes() == CONTROL_FAILOVER {
                let f: FailoverRecord = serde_json::from_slice(&value).map_err(bad)?;
                let failover = &mut state.failover;
                (failover.leases, failover.evacuations, failover.frozen) =
                    (f.leases, f.evacuations, f.frozen);
                failover.audit.archived = f.audit_archived;
            } else if key.as_bytes() == CONTROL_MEMBERSHIP {
                state.membership = serde_json::from_slice(&value).map_err(bad)?;
            } else if key.as_bytes() == CONTROL_TOPOLOGY {
                state.failover.topology = serde_json::from_slice(&value).map_err(bad)?;
            } else if let Some(service) = key.strip_prefix(CONTROL_ROUTE) {
                let route = serde_json::from_slice(&value).map_err(bad)?;
                state.failover.routing.insert(service.to_string(), route);
            } else if let Some(service) = key.strip_prefix(CONTROL_HEALTH) {
                let health = serde_json::from_slice(&value).map_err(bad)?;
                state.failover.health.insert(service.to_string(), health);
            } else if let Some(hook) = key.strip_prefix(CONTROL_HOOK) {
                let records = serde_json::from_slice(&value).map_err(bad)?;
                state.hooks.insert(hook.to_string(), records);
            } else if key.starts_with(CONTROL_AUDIT) {
                // Keys sort by sequence number, so entries arrive in order.
                state
                    .failover
                    .audit
                    .entries
                    .push_back(serde_json::from_slice(&value).map_err(bad)?);
            } else {
                return Err(format!("unknown control record {key}"));
            }
        }
        Ok(state)
    }

    fn dump(&self) -> Vec<Change> {
        let mut out = Vec::new();
        core_changes(self, &mut out);
        out.push(Change::put(CONTROL_MEMBERSHIP, &self.membership));
        out.push(Change::put(CONTROL_TOPOLOGY, &self.failover.topology));
        diff_records(
            CONTROL_ROUTE,
            &BTreeMap::new(),
            &self.failover.routing,
            &mut out,
        );
        diff_records(
            CONTROL_HEALTH,
            &BTreeMap::new(),
            &self.failover.health,
            &mut out,
        );
        diff_records(CONTROL_HOOK, &BTreeMap::new(), &self.hooks, &mut out);
        out.extend(
            self.failover
                .audit
                .entries
                .iter()
                .map(|e| Change::put(audit_key(e.seq), e)),
        );
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use firebreak_model::failover::{Actor, ActorKind};
    use firebreak_model::topology::Topology;

    fn topology() -> Topology {
        serde_json::from_str(
            r#"{"sites":[{"name":"pangyo"},{"name":"gasan"},{"name":"busan"}],
                "services":[{"name":"messaging","mode":"active-active",
                             "endpoints":{"pangyo":"http://a","gasan":"http://b"}}],
                "policy":{"audit_keep":2}}"#,
        )
        .unwrap()
    }

    /// Applies commands, mirroring every change into a record map, as the store does.
    fn apply_all(commands: &[ControlCommand]) -> (ControlState, BTreeMap<Vec<u8>, Vec<u8>>) {
        let mut state = ControlState::default();
        let mut records = BTreeMap::new();
        for command in commands {
            let mut changes = Vec::new();
            Machine::apply(&mut state, command, &mut changes);
            for Change { key, value } in changes {
                match value {
                    Some(v) => records.insert(key, v),
                    None => records.remove(&key),
                };
            }
        }
        (state, records)
    }

    /// The state rebuilds the same from the records its applies wrote, and from a dump.
    fn assert_reloads(state: &ControlState, records: BTreeMap<Vec<u8>, Vec<u8>>) {
        assert_eq!(&ControlState::load(records).unwrap(), state);
        let dumped: BTreeMap<_, _> = state
            .dump()
            .into_iter()
            .map(|c| (c.key, c.value.unwrap()))
            .collect();
        assert_eq!(&ControlState::load(dumped).unwrap(), state);
    }

    #[test]
    fn control_records_rebuild_the_same_state_and_compact_the_audit() {
        let ops = Actor {
            kind: ActorKind::Manual,
            name: "ops".into(),
        };
        let commands = vec![
            ControlCommand::ApplyTopology {
                topology: topology(),
                actor: ops.clone(),
                at_ms: 0,
            },
            ControlCommand::RenewLease {
                site: "pangyo".into(),
                at_ms: 10,
            },
            ControlCommand::Freeze {
                actor: ops.clone(),
                reason: "window".into(),
                at_ms: 20,
            },
            ControlCommand::Unfreeze {
                actor: ops.clone(),
                at_ms: 30,
            },
            ControlCommand::ReportHealth {
                service: "messaging".into(),
                site: "gasan".into(),
                healthy: false,
                at_ms: 40,
            },
        ];
        let (state, records) = apply_all(&commands);
        // audit_keep is 2: three entries were written, one compacted away.
        assert_eq!(state.failover.audit.archived, 1);
        assert_eq!(
            records.keys().filter(|k| k.starts_with(b"audit:")).count(),
            2
        );
        assert_reloads(&state, records);
    }

    /// A routing hook's deliveries are records too: a replica restarted without them
    /// would hold another control state than the others, and deliver again as leader.
    #[test]
    fn hook_records_survive_a_reload() {
        let commands = vec![
            ControlCommand::HookResult {
                hook: "haproxy".into(),
                service: "payments".into(),
                epoch: 3,
                error: None,
                at_ms: 10,
            },
            ControlCommand::HookResult {
                hook: "route53".into(),
                service: "payments".into(),
                epoch: 3,
                error: Some("503 from the API".into()),
                at_ms: 20,
            },
        ];
        let (state, records) = apply_all(&commands);
        assert_eq!(state.hooks.len(), 2);
        assert_reloads(&state, records);
    }

    /// Tombstones, the running change and the nodes seen are records too: a restart or a
    /// snapshot that lost them would let a removed id back in.
    #[test]
    fn membership_records_survive_a_reload() {
        use firebreak_model::membership::Change as Running;
        let ops = Actor {
            kind: ActorKind::Manual,
            name: "ops".into(),
        };
        let begin = |what: &str, at_ms| ControlCommand::BeginMembership {
            change: Running {
                what: what.into(),
                actor: ops.clone(),
                at_ms,
                leader: NodeId(1),
            },
        };
        let commands = vec![
            ControlCommand::NodeSeen { node_id: NodeId(1) },
            begin("site-replace pangyo with anyang (node 4)", 10),
            ControlCommand::EndMembership {
                tombstones: [NodeId(1)].into(),
                error: None,
                at_ms: 20,
            },
            begin("node-add 5 in gasan", 30),
        ];
        let (state, records) = apply_all(&commands);
        assert!(state.membership.tombstones.contains(&NodeId(1)));
        assert!(state.membership.running.is_some());
        assert_reloads(&state, records);
    }
}
