//! How a pure state machine from the model is stored: as records in sled and as a
//! snapshot document.
//!
//! A [`Machine`] applies commands (pure, from `firebreak_model`) and says which records
//! each command changed, so the store writes only those. Snapshots are the machine's serde
//! form. Records and snapshots are two views of the same state; `load` and `dump` convert.

use std::collections::BTreeMap;

use firebreak_model::control::{ControlCommand, ControlResponse, ControlState};
use firebreak_model::kv::{KvCommand, KvEntry, KvResponse, KvStore};
use firebreak_model::watch::KvEventKind;
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

const CONTROL_STATE: &[u8] = b"state";

impl Machine for ControlState {
    type Types = ControlTypes;

    fn apply(&mut self, command: &ControlCommand, changes: &mut Vec<Change>) -> ControlResponse {
        let response = ControlState::apply(self, command);
        // The control state is small: store it whole.
        changes.push(Change::put(CONTROL_STATE, self));
        response
    }

    fn empty_response() -> ControlResponse {
        ControlResponse::None
    }

    fn load(records: BTreeMap<Vec<u8>, Vec<u8>>) -> Result<Self, String> {
        match records.get(CONTROL_STATE) {
            Some(bytes) => serde_json::from_slice(bytes).map_err(|e| format!("control state: {e}")),
            None => Ok(ControlState::default()),
        }
    }

    fn dump(&self) -> Vec<Change> {
        vec![Change::put(CONTROL_STATE, self)]
    }
}
