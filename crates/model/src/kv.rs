//! The `state` group's state machine: a key-value store with one global revision, compare
//! and swap transactions (after etcd's Txn) and a history for watchers.
//!
//! ```text
//!   KvCommand ──validate()──► log ──apply()──► KvStore ──► KvResponse
//!                                                 └──────► KvEvent (watch history, persistence)
//! ```
//!
//! Invariants: the revision grows by exactly one for each command that changes at least one
//! key, and every key changed by that command carries it as `mod_revision`; a command that
//! changes nothing (a delete of a missing key, a transaction whose branch only reads)
//! leaves the revision alone. `apply` never fails and never validates: commands are validated
//! before they are proposed, and a committed entry applies the same on every replica and
//! in every version, whatever that version's limits.
//!
//! Limits: keys up to [`MAX_KEY_BYTES`], values up to [`MAX_VALUE_BYTES`], transactions up
//! to [`MAX_TXN_COMPARES`] compares and [`MAX_TXN_OPS`] operations per branch, and a whole
//! command, as encoded in the log, under [`MAX_COMMAND_BYTES`], which keeps every log entry
//! (one command, or a batch of them up to the same size) below the size at which sled
//! moves a value into a blob file that it never fsyncs (RAFT-NOTES.md).

use std::collections::BTreeMap;
use std::ops::Bound;

use serde::{Deserialize, Serialize};

use crate::watch::{KvEvent, KvEventKind, WatchLog, WATCH_HISTORY_CAPACITY};
use crate::{InvalidInput, Result};

/// Longest key accepted.
pub const MAX_KEY_BYTES: usize = 1024;
/// Longest value accepted; well under sled's 128 KiB blob threshold.
pub const MAX_VALUE_BYTES: usize = 32 * 1024;
/// Most compares in one transaction.
pub const MAX_TXN_COMPARES: usize = 64;
/// Most operations in one branch of a transaction.
pub const MAX_TXN_OPS: usize = 64;
/// Largest command, and largest batch of commands, as encoded in the log, so that one log
/// entry stays below sled's blob threshold.
pub const MAX_COMMAND_BYTES: usize = 96 * 1024;
/// Most entries one range read returns; the caller pages with `start_after`.
pub const MAX_RANGE_LIMIT: usize = 10_000;

/// A stored value and the revisions that tell its history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KvEntry {
    /// The value as written.
    pub value: String,
    /// Revision at which the key was last created (after being absent).
    pub create_revision: u64,
    /// Revision of the last change to the key: the token for compare-and-swap.
    pub mod_revision: u64,
    /// Number of puts since the key was created.
    pub version: u64,
}

/// A change request for the key-value store, as it travels through the Raft log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum KvCommand {
    /// Set a key, creating it if needed.
    Put { key: String, value: String },
    /// Remove a key; removing a missing key is not an error and changes nothing.
    Delete { key: String },
    /// Compares, then one branch of operations, atomically.
    Txn(Txn),
}

/// If every compare holds, run `success`, otherwise `failure`; all at one revision.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Txn {
    /// Conditions on current keys; all must hold for `success` to run.
    #[serde(default)]
    pub compare: Vec<Compare>,
    /// Operations when every compare holds.
    #[serde(default)]
    pub success: Vec<TxnOp>,
    /// Operations when any compare fails.
    #[serde(default)]
    pub failure: Vec<TxnOp>,
}

/// One condition of a transaction: `key`'s `target` compared with `op`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Compare {
    /// The key to look at.
    pub key: String,
    /// How the key's current state relates to the target.
    pub op: CompareOp,
    /// What to compare against.
    pub target: CompareTarget,
}

/// The relation a compare asserts (current `op` target).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CompareOp {
    Eq,
    Ne,
    Lt,
    Gt,
}

/// The part of a key a compare looks at. A missing key has no value (`null`, which sorts
/// before every string) and revisions and version 0.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CompareTarget {
    /// The value; `None` matches a missing key.
    Value(Option<String>),
    /// The revision of the key's last change.
    ModRevision(u64),
    /// The revision at which the key was created.
    CreateRevision(u64),
    /// The number of puts since creation.
    Version(u64),
}

/// One operation inside a transaction branch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum TxnOp {
    /// Read a key as of the transaction (after the branch's earlier operations).
    Get { key: String },
    /// Set a key.
    Put { key: String, value: String },
    /// Remove a key.
    Delete { key: String },
}

/// What a command did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KvResponse {
    /// A put: the new revision and the entry it replaced.
    Put {
        revision: u64,
        prev: Option<KvEntry>,
    },
    /// A delete: the store's revision afterwards and the entry removed, if any.
    Delete {
        revision: u64,
        prev: Option<KvEntry>,
    },
    /// A transaction: which branch ran and each operation's result.
    Txn {
        revision: u64,
        succeeded: bool,
        results: Vec<TxnOpResult>,
    },
    /// A log entry that carries no command (leader blank, membership change).
    None,
}

/// The result of one transaction operation, in the order of the branch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TxnOpResult {
    Get { key: String, entry: Option<KvEntry> },
    Put { key: String, prev: Option<KvEntry> },
    Delete { key: String, prev: Option<KvEntry> },
}

impl KvCommand {
    /// Checks every limit; a command that passes is safe to propose.
    pub fn validate(&self) -> Result<()> {
        match self {
            KvCommand::Put { key, value } => {
                check_key("key", key)?;
                check_value("value", value)?;
            }
            KvCommand::Delete { key } => check_key("key", key)?,
            KvCommand::Txn(txn) => txn.validate()?,
        }
        // What reaches the log is the encoding, and escaping can make it several times the
        // raw text (a control character becomes `\u0001`): bound that, not the raw bytes.
        let encoded = self.encoded_len();
        if encoded > MAX_COMMAND_BYTES {
            return Err(InvalidInput::new(
                "command",
                format!("{encoded} bytes once encoded exceed the limit of {MAX_COMMAND_BYTES}; split it"),
            ));
        }
        Ok(())
    }

    /// Size of the command as it is written to the log.
    pub fn encoded_len(&self) -> usize {
        serde_json::to_vec(self).map_or(usize::MAX, |bytes| bytes.len())
    }
}

impl Txn {
    /// Checks the transaction's counts, keys and values.
    fn validate(&self) -> Result<()> {
        if self.compare.len() > MAX_TXN_COMPARES {
            return Err(InvalidInput::new(
                "txn.compare",
                format!(
                    "{} compares exceed the limit of {MAX_TXN_COMPARES}",
                    self.compare.len()
                ),
            ));
        }
        for (i, compare) in self.compare.iter().enumerate() {
            check_key(&format!("txn.compare[{i}].key"), &compare.key)?;
            if let CompareTarget::Value(Some(value)) = &compare.target {
                check_value(&format!("txn.compare[{i}].target.value"), value)?;
            }
        }
        for (branch, ops) in [("success", &self.success), ("failure", &self.failure)] {
            if ops.len() > MAX_TXN_OPS {
                return Err(InvalidInput::new(
                    format!("txn.{branch}"),
                    format!("{} operations exceed the limit of {MAX_TXN_OPS}", ops.len()),
                ));
            }
            for (i, op) in ops.iter().enumerate() {
                let (key, value) = match op {
                    TxnOp::Get { key } | TxnOp::Delete { key } => (key, None),
                    TxnOp::Put { key, value } => (key, Some(value)),
                };
                check_key(&format!("txn.{branch}[{i}].key"), key)?;
                if let Some(value) = value {
                    check_value(&format!("txn.{branch}[{i}].value"), value)?;
                }
            }
        }
        Ok(())
    }
}

fn check_key(field: &str, key: &str) -> Result<()> {
    if key.is_empty() {
        return Err(InvalidInput::new(field, "a key must not be empty"));
    }
    if key.len() > MAX_KEY_BYTES {
        return Err(InvalidInput::new(
            field,
            format!(
                "{} bytes exceed the key limit of {MAX_KEY_BYTES}",
                key.len()
            ),
        ));
    }
    Ok(())
}

fn check_value(field: &str, value: &str) -> Result<()> {
    if value.len() > MAX_VALUE_BYTES {
        return Err(InvalidInput::new(
            field,
            format!(
                "{} bytes exceed the value limit of {MAX_VALUE_BYTES}",
                value.len()
            ),
        ));
    }
    Ok(())
}

/// The key-value store: every key's entry, the global revision and the watch history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "KvStoreData", into = "KvStoreData")]
pub struct KvStore {
    revision: u64,
    entries: BTreeMap<String, KvEntry>,
    history: WatchLog,
}

/// The durable part of a [`KvStore`]: what snapshots carry. The watch history is rebuilt
/// empty from it.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct KvStoreData {
    revision: u64,
    entries: BTreeMap<String, KvEntry>,
}

impl From<KvStoreData> for KvStore {
    fn from(data: KvStoreData) -> Self {
        KvStore::from_entries(data.revision, data.entries)
    }
}

impl From<KvStore> for KvStoreData {
    fn from(store: KvStore) -> Self {
        KvStoreData {
            revision: store.revision,
            entries: store.entries,
        }
    }
}

impl Default for KvStore {
    fn default() -> Self {
        KvStore::from_entries(0, BTreeMap::new())
    }
}

impl KvStore {
    /// Rebuilds a store from persisted entries; the watch history starts after `revision`.
    pub fn from_entries(revision: u64, entries: BTreeMap<String, KvEntry>) -> Self {
        Self {
            revision,
            entries,
            history: WatchLog::new(WATCH_HISTORY_CAPACITY, revision + 1),
        }
    }

    /// The revision of the last change.
    pub fn revision(&self) -> u64 {
        self.revision
    }

    /// Number of keys held.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether no key is held.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// One key's entry.
    pub fn get(&self, key: &str) -> Option<&KvEntry> {
        self.entries.get(key)
    }

    /// Up to `limit` keys that start with `prefix`, in key order, after `start_after` if given.
    /// The flag says whether more keys match.
    pub fn range(
        &self,
        prefix: &str,
        start_after: Option<&str>,
        limit: usize,
    ) -> (Vec<(String, KvEntry)>, bool) {
        let lower = match start_after {
            Some(after) if after >= prefix => Bound::Excluded(after.to_string()),
            _ => Bound::Included(prefix.to_string()),
        };
        let mut out = Vec::new();
        let mut iter = self
            .entries
            .range((lower, Bound::Unbounded))
            .take_while(|(key, _)| key.starts_with(prefix));
        for (key, entry) in iter.by_ref().take(limit) {
            out.push((key.clone(), entry.clone()));
        }
        let more = iter.next().is_some();
        (out, more)
    }

    /// All entries, for persistence and snapshots.
    pub fn entries(&self) -> &BTreeMap<String, KvEntry> {
        &self.entries
    }

    /// The watch history.
    pub fn history(&self) -> &WatchLog {
        &self.history
    }

    /// Applies a committed command. Returns the response and the events it caused, which the
    /// caller persists; the events are also recorded in the watch history.
    ///
    /// Apply never validates: the proposer did, by the rules of its version. A limit that
    /// changes between versions must not make replicas of a rolling upgrade apply the same
    /// committed entry differently, so an entry today's limits would refuse applies as the
    /// version that accepted it meant.
    pub fn apply(&mut self, command: &KvCommand) -> (KvResponse, Vec<KvEvent>) {
        let next = self.revision + 1;
        let mut events = Vec::new();
        let response = match command {
            KvCommand::Put { key, value } => {
                let prev = self.put(next, key, value, &mut events);
                KvResponse::Put {
                    revision: next,
                    prev,
                }
            }
            KvCommand::Delete { key } => {
                let prev = self.delete(next, key, &mut events);
                let revision = if prev.is_some() { next } else { self.revision };
                KvResponse::Delete { revision, prev }
            }
            KvCommand::Txn(txn) => self.apply_txn(next, txn, &mut events),
        };
        if !events.is_empty() {
            self.revision = next;
            for event in &events {
                self.history.push(event.clone());
            }
        }
        (response, events)
    }

    fn apply_txn(&mut self, next: u64, txn: &Txn, events: &mut Vec<KvEvent>) -> KvResponse {
        let succeeded = txn.compare.iter().all(|c| self.holds(c));
        let ops = if succeeded {
            &txn.success
        } else {
            &txn.failure
        };
        let mut results = Vec::with_capacity(ops.len());
        for op in ops {
            results.push(match op {
                TxnOp::Get { key } => TxnOpResult::Get {
                    key: key.clone(),
                    entry: self.entries.get(key).cloned(),
                },
                TxnOp::Put { key, value } => TxnOpResult::Put {
                    key: key.clone(),
                    prev: self.put(next, key, value, events),
                },
                TxnOp::Delete { key } => TxnOpResult::Delete {
                    key: key.clone(),
                    prev: self.delete(next, key, events),
                },
            });
        }
        let revision = if events.is_empty() {
            self.revision
        } else {
            next
        };
        KvResponse::Txn {
            revision,
            succeeded,
            results,
        }
    }

    fn put(
        &mut self,
        revision: u64,
        key: &str,
        value: &str,
        events: &mut Vec<KvEvent>,
    ) -> Option<KvEntry> {
        let prev = self.entries.get(key).cloned();
        let entry = KvEntry {
            value: value.to_string(),
            create_revision: prev.as_ref().map_or(revision, |p| p.create_revision),
            mod_revision: revision,
            version: prev.as_ref().map_or(1, |p| p.version + 1),
        };
        self.entries.insert(key.to_string(), entry.clone());
        events.push(KvEvent {
            revision,
            kind: KvEventKind::Put,
            key: key.to_string(),
            entry: Some(entry),
        });
        prev
    }

    fn delete(&mut self, revision: u64, key: &str, events: &mut Vec<KvEvent>) -> Option<KvEntry> {
        let prev = self.entries.remove(key);
        if prev.is_some() {
            events.push(KvEvent {
                revision,
                kind: KvEventKind::Delete,
                key: key.to_string(),
                entry: None,
            });
        }
        prev
    }

    fn holds(&self, compare: &Compare) -> bool {
        let entry = self.entries.get(&compare.key);
        let ordering = match &compare.target {
            CompareTarget::Value(want) => entry.map(|e| e.value.as_str()).cmp(&want.as_deref()),
            CompareTarget::ModRevision(want) => entry.map_or(0, |e| e.mod_revision).cmp(want),
            CompareTarget::CreateRevision(want) => entry.map_or(0, |e| e.create_revision).cmp(want),
            CompareTarget::Version(want) => entry.map_or(0, |e| e.version).cmp(want),
        };
        match compare.op {
            CompareOp::Eq => ordering.is_eq(),
            CompareOp::Ne => ordering.is_ne(),
            CompareOp::Lt => ordering.is_lt(),
            CompareOp::Gt => ordering.is_gt(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(key: &str, value: &str) -> KvCommand {
        KvCommand::Put {
            key: key.into(),
            value: value.into(),
        }
    }

    fn cas(key: &str, mod_revision: u64, value: &str) -> KvCommand {
        KvCommand::Txn(Txn {
            compare: vec![Compare {
                key: key.into(),
                op: CompareOp::Eq,
                target: CompareTarget::ModRevision(mod_revision),
            }],
            success: vec![TxnOp::Put {
                key: key.into(),
                value: value.into(),
            }],
            failure: vec![TxnOp::Get { key: key.into() }],
        })
    }

    #[test]
    fn revision_grows_once_per_changing_command() {
        let mut kv = KvStore::default();
        kv.apply(&put("a", "1"));
        kv.apply(&put("a", "2"));
        assert_eq!(kv.revision(), 2);
        let (resp, events) = kv.apply(&KvCommand::Delete {
            key: "missing".into(),
        });
        assert_eq!(
            resp,
            KvResponse::Delete {
                revision: 2,
                prev: None
            }
        );
        assert!(events.is_empty());
        let entry = kv.get("a").unwrap();
        assert_eq!(
            (entry.create_revision, entry.mod_revision, entry.version),
            (1, 2, 2)
        );
    }

    #[test]
    fn compare_and_swap_runs_one_branch() {
        let mut kv = KvStore::default();
        kv.apply(&put("balance", "100"));
        let (resp, _) = kv.apply(&cas("balance", 1, "90"));
        assert!(matches!(
            resp,
            KvResponse::Txn {
                succeeded: true,
                revision: 2,
                ..
            }
        ));
        // The same compare again is stale: the failure branch only reads.
        let (resp, events) = kv.apply(&cas("balance", 1, "80"));
        assert!(matches!(
            resp,
            KvResponse::Txn {
                succeeded: false,
                revision: 2,
                ..
            }
        ));
        assert!(events.is_empty());
        assert_eq!(kv.get("balance").unwrap().value, "90");
    }

    #[test]
    fn compare_on_missing_key_sees_null_and_zero() {
        let kv = KvStore::default();
        let missing = |target, op| Compare {
            key: "k".into(),
            op,
            target,
        };
        assert!(kv.holds(&missing(CompareTarget::Value(None), CompareOp::Eq)));
        assert!(kv.holds(&missing(
            CompareTarget::Value(Some(String::new())),
            CompareOp::Lt
        )));
        assert!(kv.holds(&missing(CompareTarget::ModRevision(0), CompareOp::Eq)));
        assert!(kv.holds(&missing(CompareTarget::Version(1), CompareOp::Lt)));
    }

    #[test]
    fn txn_writes_share_one_revision_and_reach_the_history() {
        let mut kv = KvStore::default();
        let txn = KvCommand::Txn(Txn {
            success: vec![
                TxnOp::Put {
                    key: "x/1".into(),
                    value: "a".into(),
                },
                TxnOp::Put {
                    key: "x/2".into(),
                    value: "b".into(),
                },
            ],
            ..Txn::default()
        });
        let (_, events) = kv.apply(&txn);
        assert_eq!(
            events.iter().map(|e| e.revision).collect::<Vec<_>>(),
            vec![1, 1]
        );
        assert_eq!(kv.history().since(1, "x/", 10).unwrap().len(), 2);
    }

    #[test]
    fn range_pages_by_prefix() {
        let mut kv = KvStore::default();
        for key in ["a", "p/1", "p/2", "p/3", "q"] {
            kv.apply(&put(key, "v"));
        }
        let (page, more) = kv.range("p/", None, 2);
        assert_eq!(
            page.iter().map(|(k, _)| k.as_str()).collect::<Vec<_>>(),
            vec!["p/1", "p/2"]
        );
        assert!(more);
        let (page, more) = kv.range("p/", Some("p/2"), 2);
        assert_eq!(
            page.iter().map(|(k, _)| k.as_str()).collect::<Vec<_>>(),
            vec!["p/3"]
        );
        assert!(!more);
    }

    /// A rolling upgrade that lowers a limit: the entry an older version accepted (a key
    /// over today's limit) is committed, and every replica, old or new, applies it alike.
    #[test]
    fn an_entry_over_todays_limits_still_applies() {
        let key = "k".repeat(MAX_KEY_BYTES + 1);
        let command = KvCommand::Put {
            key: key.clone(),
            value: "v".into(),
        };
        assert!(command.validate().is_err(), "over today's limit");
        let mut store = KvStore::default();
        let (response, events) = store.apply(&command);
        assert!(
            matches!(response, KvResponse::Put { revision: 1, .. }),
            "{response:?}"
        );
        assert_eq!(events.len(), 1);
        assert_eq!(store.get(&key).map(|e| e.value.as_str()), Some("v"));
    }

    #[test]
    fn validate_rejects_each_limit_with_the_field() {
        let cases = [
            (put("", "v"), "key"),
            (put(&"k".repeat(MAX_KEY_BYTES + 1), "v"), "key"),
            (put("k", &"v".repeat(MAX_VALUE_BYTES + 1)), "value"),
            (
                KvCommand::Txn(Txn {
                    success: vec![TxnOp::Delete { key: String::new() }],
                    ..Txn::default()
                }),
                "txn.success[0].key",
            ),
            // 20 KiB of control characters is under the value limit, but its JSON escaping
            // is six times larger: the encoded bound catches it.
            (put("k", &"\u{1}".repeat(20 * 1024)), "command"),
            (
                KvCommand::Txn(Txn {
                    success: (0..4)
                        .map(|i| TxnOp::Put {
                            key: format!("k{i}"),
                            value: "v".repeat(MAX_VALUE_BYTES),
                        })
                        .collect(),
                    ..Txn::default()
                }),
                "command",
            ),
        ];
        for (command, field) in cases {
            assert_eq!(command.validate().unwrap_err().field, field, "{command:?}");
        }
    }

    #[test]
    fn snapshot_round_trip_keeps_data_and_restarts_history() {
        let mut kv = KvStore::default();
        kv.apply(&put("a", "1"));
        let json = serde_json::to_string(&kv).unwrap();
        let back: KvStore = serde_json::from_str(&json).unwrap();
        assert_eq!(back.get("a"), kv.get("a"));
        assert_eq!(back.history().first_revision(), 2);
    }

    #[test]
    fn json_shape_is_stable() {
        let json = r#"{"txn":{"compare":[{"key":"k","op":"eq","target":{"value":null}}],
                       "success":[{"put":{"key":"k","value":"v"}}]}}"#;
        let command: KvCommand = serde_json::from_str(json).unwrap();
        assert!(matches!(command, KvCommand::Txn(ref t) if t.success.len() == 1));
        assert!(
            serde_json::from_str::<KvCommand>(r#"{"put":{"key":"k","value":"v","x":1}}"#).is_err()
        );
    }
}
