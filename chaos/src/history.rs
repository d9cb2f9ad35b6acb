//! The history of a drill: everything the checkers judge, in the order it was seen.
//!
//! Operations are recorded as an `invoke` then exactly one of `ok`, `fail` or `unknown`
//! (Jepsen's model): `ok` means the service answered definitively, `fail` that nothing was
//! applied, `unknown` that it may or may not have been. Around them: push deliveries,
//! faults, the leaders and routes the observer saw, and the read-back at the end. Times
//! are milliseconds since the drill started; `Phase` events mark the workload's start.
//!
//! The history lives in memory (bounded by the workload's size, which the playbook bounds)
//! and is written as JSON lines to `--out DIR/history.jsonl`.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::playbook::ServiceKind;

/// An operation the workload invokes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Op {
    /// Setup: open an account with a balance.
    OpenAccount { account: String, balance: u64 },
    /// Setup: register a user.
    Register { user: String },
    /// Send a message to a conversation.
    Send {
        conversation: String,
        client_msg_id: String,
        sender: String,
        /// Body size when the playbook sets `message_bytes` (else a short text).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        body_bytes: Option<u32>,
    },
    /// Move money; `key` is the idempotency key.
    Transfer {
        key: String,
        from: String,
        to: String,
        amount: u64,
    },
    /// Log in: an `ok` carries the session token.
    Login { user: String },
    /// Check a session made earlier.
    Validate { token: String },
    /// Read a key through the kv API (linearizable); an `ok` carries `{"value": V|null}`.
    KvRead { key: String },
    /// Put a value no other write uses.
    KvWrite { key: String, value: String },
    /// Compare-and-swap: put `value` if the key holds `expected` (`None`: the key is
    /// absent); an `ok` carries `{"succeeded": bool}`.
    KvCas {
        key: String,
        expected: Option<String>,
        value: String,
    },
}

impl Op {
    /// The service the operation belongs to.
    pub fn service(&self) -> ServiceKind {
        match self {
            Op::Send { .. } => ServiceKind::Messaging,
            Op::OpenAccount { .. } | Op::Transfer { .. } => ServiceKind::Payments,
            Op::Register { .. } | Op::Login { .. } | Op::Validate { .. } => ServiceKind::Login,
            Op::KvRead { .. } | Op::KvWrite { .. } | Op::KvCas { .. } => ServiceKind::Kv,
        }
    }

    /// Whether it is part of the measured workload (setup is not).
    pub fn is_workload(&self) -> bool {
        !matches!(self, Op::OpenAccount { .. } | Op::Register { .. })
    }
}

/// Whether a fault starts or ends (heals).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FaultPhase {
    Start,
    End,
}

/// Which client library an idle push client uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IdleKind {
    /// firebreak's client: jittered backoff, another gateway.
    Firebreak,
    /// Reconnects at once to the next address.
    Naive,
}

impl IdleKind {
    pub fn name(self) -> &'static str {
        match self {
            IdleKind::Firebreak => "firebreak client",
            IdleKind::Naive => "naive client",
        }
    }
}

/// A message as stored, read back at the end.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredMessage {
    pub seq: u64,
    pub client_msg_id: String,
}

/// One thing that happened.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Event {
    /// The drill entered a phase (`setup`, `workload`, `drain`, `read_back`, `abort`).
    Phase { at_ms: u64, name: String },
    Invoke {
        at_ms: u64,
        id: u64,
        #[serde(flatten)]
        op: Op,
    },
    /// A definitive answer: `status` and `body` as the service gave them, and the site
    /// that served it and the route's epoch, when the gateway said.
    Ok {
        at_ms: u64,
        id: u64,
        status: u16,
        body: Value,
        site: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        epoch: Option<u64>,
    },
    /// Refused: nothing was applied.
    Fail { at_ms: u64, id: u64, error: String },
    /// It may or may not have been applied.
    Unknown { at_ms: u64, id: u64, error: String },
    /// A recipient started following a conversation's push stream.
    Follow {
        at_ms: u64,
        recipient: String,
        conversation: String,
    },
    /// A recipient's push stream received a message, as the server sent it: every one,
    /// before the client drops those it has passed on already, so that a duplicate or a
    /// reorder by the server is in the history. `via` is the gateway it came through and,
    /// in brackets, the site whose instance served the stream, as the gateway said.
    Deliver {
        at_ms: u64,
        recipient: String,
        conversation: String,
        seq: u64,
        client_msg_id: String,
        #[serde(default)]
        via: String,
    },
    Fault {
        at_ms: u64,
        fault: String,
        target: String,
        phase: FaultPhase,
    },
    /// What a node said about a group: its term and the leader it knows.
    Leader {
        at_ms: u64,
        node: u64,
        group: String,
        term: u64,
        leader: u64,
    },
    /// A node saved a committed vote to its log store: `leader` won `term` in `group` (from
    /// the node's election journal, so a leadership too short for any poll is seen too).
    Elected {
        at_ms: u64,
        node: u64,
        group: String,
        term: u64,
        leader: u64,
    },
    /// Whether some node led `group` with a quorum behind it (it could commit), as the
    /// observer saw it, each time that changed.
    Quorum {
        at_ms: u64,
        group: String,
        held: bool,
    },
    /// A group's voters and learners as its leader reported them, each time they changed.
    Membership {
        at_ms: u64,
        group: String,
        voters: Vec<u64>,
        learners: Vec<u64>,
    },
    /// A service's routing changed (or was first seen); `changed_at_ms` is the control
    /// leader's wall clock at the change.
    Route {
        at_ms: u64,
        service: String,
        serving: Vec<String>,
        epoch: u64,
        #[serde(default)]
        changed_at_ms: u64,
    },
    /// A site lost power: what its disk had not synced, and so threw away.
    PowerLoss {
        at_ms: u64,
        site: String,
        bytes: u64,
        files: u64,
    },
    /// A process died without the drill killing it (a crash, an out-of-memory kill).
    ProcessExit {
        at_ms: u64,
        process: String,
        status: String,
    },
    /// An idle push client starts a connection through `site`'s gateway.
    IdleAttempt {
        at_ms: u64,
        kind: IdleKind,
        client: u32,
        site: String,
    },
    /// An idle push client's stream is open through `site`'s gateway.
    IdleOpen {
        at_ms: u64,
        kind: IdleKind,
        client: u32,
        site: String,
    },
    /// An idle push client received message `seq` of the idle conversation.
    IdleDeliver {
        at_ms: u64,
        kind: IdleKind,
        client: u32,
        seq: u64,
    },
    /// The drill sent message `seq` to the idle conversation after the workload: every
    /// idle client must receive it.
    IdleProbe { at_ms: u64, seq: u64 },
    /// Read-back: a conversation as stored.
    Stored {
        at_ms: u64,
        conversation: String,
        messages: Vec<StoredMessage>,
    },
    /// Read-back: a recipient fetched a stored message its stream had not delivered (late,
    /// but not lost).
    Recovered {
        at_ms: u64,
        recipient: String,
        conversation: String,
        seq: u64,
        client_msg_id: String,
    },
    /// Read-back: a transfer's record (`None`: never applied).
    TransferRecord {
        at_ms: u64,
        key: String,
        record: Option<Value>,
    },
    /// Read-back: an account's balance (every account, from the paged listing).
    Balance {
        at_ms: u64,
        account: String,
        balance: u64,
    },
    /// Read-back: whether a session validates at the end.
    Session {
        at_ms: u64,
        token: String,
        valid: bool,
    },
    /// Read-back failed: the checkers cannot vouch for `what`.
    ReadBackFailed {
        at_ms: u64,
        what: String,
        error: String,
    },
}

impl Event {
    pub fn at_ms(&self) -> u64 {
        match self {
            Event::Phase { at_ms, .. }
            | Event::Invoke { at_ms, .. }
            | Event::Ok { at_ms, .. }
            | Event::Fail { at_ms, .. }
            | Event::Unknown { at_ms, .. }
            | Event::Follow { at_ms, .. }
            | Event::Deliver { at_ms, .. }
            | Event::Fault { at_ms, .. }
            | Event::Leader { at_ms, .. }
            | Event::Elected { at_ms, .. }
            | Event::Route { at_ms, .. }
            | Event::Quorum { at_ms, .. }
            | Event::Membership { at_ms, .. }
            | Event::IdleAttempt { at_ms, .. }
            | Event::IdleOpen { at_ms, .. }
            | Event::IdleDeliver { at_ms, .. }
            | Event::IdleProbe { at_ms, .. }
            | Event::ProcessExit { at_ms, .. }
            | Event::PowerLoss { at_ms, .. }
            | Event::Stored { at_ms, .. }
            | Event::Recovered { at_ms, .. }
            | Event::TransferRecord { at_ms, .. }
            | Event::Balance { at_ms, .. }
            | Event::Session { at_ms, .. }
            | Event::ReadBackFailed { at_ms, .. } => *at_ms,
        }
    }
}

/// How an operation ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Completion {
    Ok {
        status: u16,
        body: Value,
        site: Option<String>,
        epoch: Option<u64>,
    },
    Fail(String),
    Unknown(String),
}

/// One operation, its invoke joined with its completion.
#[derive(Debug, Clone, PartialEq)]
pub struct Operation {
    pub id: u64,
    pub op: Op,
    pub invoked_ms: u64,
    pub completed_ms: Option<u64>,
    /// `None` if the history ends before the operation did (counted as unknown).
    pub completion: Option<Completion>,
}

impl Operation {
    pub fn is_ok(&self) -> bool {
        matches!(self.completion, Some(Completion::Ok { .. }))
    }

    /// The body of an ok answer.
    pub fn body(&self) -> Option<&Value> {
        match &self.completion {
            Some(Completion::Ok { body, .. }) => Some(body),
            _ => None,
        }
    }

    pub fn latency_ms(&self) -> Option<u64> {
        self.completed_ms.map(|c| c.saturating_sub(self.invoked_ms))
    }
}

/// Joins invokes with their completions, in invoke order.
pub fn operations(events: &[Event]) -> Vec<Operation> {
    let mut ops: Vec<Operation> = Vec::new();
    let mut index = std::collections::HashMap::new();
    for event in events {
        let (id, at_ms, completion) = match event {
            Event::Invoke { at_ms, id, op } => {
                index.insert(*id, ops.len());
                ops.push(Operation {
                    id: *id,
                    op: op.clone(),
                    invoked_ms: *at_ms,
                    completed_ms: None,
                    completion: None,
                });
                continue;
            }
            Event::Ok {
                at_ms,
                id,
                status,
                body,
                site,
                epoch,
            } => (
                id,
                at_ms,
                Completion::Ok {
                    status: *status,
                    body: body.clone(),
                    site: site.clone(),
                    epoch: *epoch,
                },
            ),
            Event::Fail { at_ms, id, error } => (id, at_ms, Completion::Fail(error.clone())),
            Event::Unknown { at_ms, id, error } => (id, at_ms, Completion::Unknown(error.clone())),
            _ => continue,
        };
        if let Some(&i) = index.get(id) {
            ops[i].completed_ms = Some(*at_ms);
            ops[i].completion = Some(completion);
        }
    }
    ops
}

/// When the workload started (the `workload` phase), in drill milliseconds.
pub fn workload_start_ms(events: &[Event]) -> u64 {
    events
        .iter()
        .find_map(|e| match e {
            Event::Phase { at_ms, name } if name == "workload" => Some(*at_ms),
            _ => None,
        })
        .unwrap_or(0)
}

/// The shared, append-only history of a running drill.
#[derive(Clone)]
pub struct History {
    origin: Instant,
    events: Arc<Mutex<Vec<Event>>>,
}

impl Default for History {
    fn default() -> Self {
        Self::new()
    }
}

impl History {
    pub fn new() -> Self {
        Self {
            origin: Instant::now(),
            events: Arc::default(),
        }
    }

    /// Milliseconds since the drill started.
    pub fn now_ms(&self) -> u64 {
        self.origin.elapsed().as_millis() as u64
    }

    pub fn record(&self, event: Event) {
        self.events.lock().expect("history lock").push(event);
    }

    /// A copy of every event so far.
    pub fn snapshot(&self) -> Vec<Event> {
        self.events.lock().expect("history lock").clone()
    }

    /// Events from index `from` on (for live progress without copying everything).
    pub fn since(&self, from: usize) -> Vec<Event> {
        let events = self.events.lock().expect("history lock");
        events
            .get(from..)
            .map(<[Event]>::to_vec)
            .unwrap_or_default()
    }
}

/// Writes events as JSON lines.
pub fn write_jsonl(events: &[Event], path: &std::path::Path) -> std::io::Result<()> {
    use std::io::Write;
    let mut out = std::io::BufWriter::new(std::fs::File::create(path)?);
    for event in events {
        serde_json::to_writer(&mut out, event)?;
        out.write_all(b"\n")?;
    }
    out.flush()
}
