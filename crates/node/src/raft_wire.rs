//! How Raft RPCs travel between peers: MessagePack bodies (`application/msgpack`).
//!
//! MessagePack is binary and self-describing, so every serde attribute of the model's
//! commands (internally tagged enums, skipped fields) holds as it does in the store's
//! JSON. A snapshot chunk's data goes as MessagePack `bin`, byte for byte: as JSON it was
//! an array of numbers, three to four bytes per byte.

use openraft::raft::InstallSnapshotRequest;
use openraft::{SnapshotMeta, Vote};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use firebreak_model::{Member, NodeId};
use firebreak_store::GroupTypes;

/// The content type of every Raft RPC body, request and answer.
pub const CONTENT_TYPE: &str = "application/msgpack";

/// Encodes an RPC request or answer.
pub fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, rmp_serde::encode::Error> {
    rmp_serde::to_vec_named(value)
}

/// Decodes what [`encode`] made.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, rmp_serde::decode::Error> {
    rmp_serde::from_slice(bytes)
}

/// An InstallSnapshot request as it travels: the same fields, the data as raw bytes.
#[derive(Serialize, Deserialize)]
pub struct SnapshotChunk {
    vote: Vote<NodeId>,
    meta: SnapshotMeta<NodeId, Member>,
    offset: u64,
    #[serde(with = "serde_bytes")]
    data: Vec<u8>,
    done: bool,
}

impl<C: GroupTypes> From<InstallSnapshotRequest<C>> for SnapshotChunk {
    fn from(r: InstallSnapshotRequest<C>) -> Self {
        Self {
            vote: r.vote,
            meta: r.meta,
            offset: r.offset,
            data: r.data,
            done: r.done,
        }
    }
}

impl SnapshotChunk {
    /// The request for the local Raft.
    pub fn into_request<C: GroupTypes>(self) -> InstallSnapshotRequest<C> {
        InstallSnapshotRequest {
            vote: self.vote,
            meta: self.meta,
            offset: self.offset,
            data: self.data,
            done: self.done,
        }
    }

    /// The vote the chunk was sent under, for the sender check.
    pub fn vote(&self) -> &Vote<NodeId> {
        &self.vote
    }
}

#[cfg(test)]
mod tests {
    use firebreak_model::kv::KvCommand;
    use firebreak_store::StateTypes;
    use openraft::raft::AppendEntriesRequest;
    use openraft::{CommittedLeaderId, Entry, EntryPayload, LogId, StoredMembership};

    use super::*;

    fn log_id(index: u64) -> LogId<NodeId> {
        LogId::new(CommittedLeaderId::new(3, NodeId(2)), index)
    }

    #[test]
    fn entries_arrive_as_they_were_sent() {
        let entries: Vec<Entry<StateTypes>> = vec![
            Entry {
                log_id: log_id(7),
                payload: EntryPayload::Normal(vec![
                    KvCommand::Put {
                        key: "messaging/conversations/대화".into(),
                        value: "안녕하세요 👋".into(),
                    },
                    KvCommand::Delete { key: "k".into() },
                ]),
            },
            Entry {
                log_id: log_id(8),
                payload: EntryPayload::Blank,
            },
        ];
        let request = AppendEntriesRequest::<StateTypes> {
            vote: Vote::new_committed(3, NodeId(2)),
            prev_log_id: Some(log_id(6)),
            entries,
            leader_commit: Some(log_id(6)),
        };
        let back: AppendEntriesRequest<StateTypes> = decode(&encode(&request).unwrap()).unwrap();
        assert_eq!(format!("{back:?}"), format!("{request:?}"));
    }

    #[test]
    fn a_snapshot_chunk_travels_as_its_own_bytes() {
        let data: Vec<u8> = (0..1024 * 1024u64)
            .map(|i| (i * 7919 % 251) as u8)
            .collect();
        let request = InstallSnapshotRequest::<StateTypes> {
            vote: Vote::new_committed(3, NodeId(2)),
            meta: SnapshotMeta {
                last_log_id: Some(log_id(9)),
                last_membership: StoredMembership::default(),
                snapshot_id: "s-9".into(),
            },
            offset: 4096,
            data: data.clone(),
            done: false,
        };
        let bytes = encode(&SnapshotChunk::from(request)).unwrap();
        assert!(
            bytes.len() < data.len() + 1024,
            "{} bytes on the wire for {} of data: the data must not be re-encoded",
            bytes.len(),
            data.len()
        );
        let back = decode::<SnapshotChunk>(&bytes)
            .unwrap()
            .into_request::<StateTypes>();
        assert_eq!(back.data, data);
        assert_eq!((back.offset, back.done), (4096, false));
        assert_eq!(back.meta.snapshot_id, "s-9");
    }
}
