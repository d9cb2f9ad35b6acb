//! openraft type configurations of the two groups.
//!
//! Both use [`NodeId`] and [`Member`] (address and site), openraft's `Entry` and an
//! in-memory snapshot buffer; they differ in their commands and responses.

use std::io::Cursor;

use firebreak_model::control::{ControlCommand, ControlResponse};
use firebreak_model::kv::{KvCommand, KvResponse};
use firebreak_model::{Member, NodeId};
use openraft::RaftTypeConfig;

openraft::declare_raft_types!(
    /// The `control` group: sites, members, and later health, routing and controls.
    pub ControlTypes:
        D = ControlCommand,
        R = ControlResponse,
        NodeId = NodeId,
        Node = Member,
        Entry = openraft::Entry<ControlTypes>,
        SnapshotData = Cursor<Vec<u8>>,
);

openraft::declare_raft_types!(
    /// The `state` group: the services' key-value data. One log entry carries a batch of
    /// commands (group commit: openraft 0.9 fsyncs each append before taking the next
    /// client write), applied in order, one response each.
    pub StateTypes:
        D = Vec<KvCommand>,
        R = Vec<KvResponse>,
        NodeId = NodeId,
        Node = Member,
        Entry = openraft::Entry<StateTypes>,
        SnapshotData = Cursor<Vec<u8>>,
);

/// What the stores need of a group's type configuration.
pub trait GroupTypes:
    RaftTypeConfig<
    NodeId = NodeId,
    Node = Member,
    Entry = openraft::Entry<Self>,
    SnapshotData = Cursor<Vec<u8>>,
    Responder = openraft::impls::OneshotResponder<Self>,
>
{
    /// The group's name in paths, URLs, logs and metrics.
    const NAME: &'static str;
}

impl GroupTypes for ControlTypes {
    const NAME: &'static str = "control";
}

impl GroupTypes for StateTypes {
    const NAME: &'static str = "state";
}
