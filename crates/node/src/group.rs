//! One Raft group as the node's API sees it: writes that never hang and never lie about
//! their outcome, linearizable reads, and the group's status.
//!
//! ```text
//!   write(cmd) ─► not leader? ─────────────────► NotLeader { leader }   (nothing written)
//!              ─► leader without quorum contact ► NoQuorum             (nothing written)
//!              ─► too many writes in flight ───► Overloaded            (nothing written)
//!              ─► client_write, bounded by write_timeout
//!                    ok ──────────────────────► response
//!                    ForwardToLeader ─────────► OutcomeUnknown (see below)
//!                    timeout / Raft stopped ──► OutcomeUnknown (it may still commit)
//! ```
//!
//! A ForwardToLeader from `client_write` comes either from a leadership lost between the
//! check above and the call (nothing appended) or from openraft truncating the appended
//! entry under a new leader. The two cannot be told apart from the error, so it is an
//! unknown outcome: NotLeader would have the caller forward the write to the new leader,
//! and a write must never be proposed twice on the strength of a guess. An entry truncated
//! on one leader can still be committed by a later one that holds it
//! (crates/node/tests/reforward.rs places exactly that on five voters).
//!
//! openraft 0.9 keeps a leader that lost its quorum in the leader role and its writes hang
//! (RAFT-NOTES.md); checking `millis_since_quorum_ack` first makes such a leader refuse
//! at once, so clients go to a node that can commit.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use firebreak_model::kv::MAX_COMMAND_BYTES;
use firebreak_model::{Member, NodeId};
use firebreak_store::log_store::CommittedIndex;
use firebreak_store::{Elected, ElectionJournal, GroupTypes, Machine, MachineReader};
use openraft::error::{ClientWriteError, RaftError};
use openraft::{Raft, RaftMetrics, RaftTypeConfig, ServerState};
use serde::Serialize;
use tokio::sync::Semaphore;

/// Why a write or linearizable read did not complete.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GroupError {
    /// This node is not the leader; the leader, if known, can take the request.
    #[error("node is not the leader")]
    NotLeader { leader: Option<(NodeId, Member)> },
    /// This node leads but has not heard from a quorum recently: it cannot commit.
    #[error("leader has not heard from a quorum for {since_ms:?} ms")]
    NoQuorum { since_ms: Option<u64> },
    /// Too many writes are in flight on this node.
    #[error("too many writes in flight ({limit})")]
    Overloaded { limit: usize },
    /// The write was proposed but its fate is not known: it may or may not commit.
    #[error("outcome unknown: {reason}")]
    OutcomeUnknown { reason: String },
    /// A read could not confirm leadership in time; nothing was changed.
    #[error("could not confirm leadership: {reason}")]
    Unavailable { reason: String },
    /// The command is too large to propose; nothing was proposed. The edge validates every
    /// field first, so this is the last line of defense: no request reaches the store's
    /// entry limit, which would stop the group.
    #[error("command is {bytes} bytes once encoded, over the limit of {limit}")]
    TooLarge { bytes: usize, limit: usize },
}

/// The answer to a write that openraft took and then handed to another leader
/// (ForwardToLeader): it may have been appended, so it is never forwarded again.
fn handed_over(leader: Option<NodeId>) -> GroupError {
    let leader = leader.map_or_else(|| "none known yet".to_string(), |id| format!("node {id}"));
    GroupError::OutcomeUnknown {
        reason: format!(
            "leadership moved while the write was being proposed (new leader: {leader}); \
             it may have been appended and may still commit, so it was not forwarded"
        ),
    }
}

/// Counts what serializing writes, without keeping it.
struct Counter(usize);

impl std::io::Write for Counter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0 += buf.len();
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The size of `value` as JSON, the way the log stores it.
fn encoded_len<T: serde::Serialize>(value: &T) -> usize {
    let mut counter = Counter(0);
    serde_json::to_writer(&mut counter, value).map_or(usize::MAX, |()| counter.0)
}

/// Timings the group's request handling needs.
#[derive(Debug, Clone, Copy)]
pub struct GroupTimings {
    pub heartbeat: Duration,
    pub election_timeout_min: Duration,
    pub election_timeout_max: Duration,
    pub write_timeout: Duration,
    pub read_timeout: Duration,
}

/// A running Raft group with its state machine.
pub struct Group<M: Machine> {
    pub raft: Raft<M::Types>,
    pub reader: MachineReader<M>,
    committed: CommittedIndex,
    elections: ElectionJournal,
    timings: GroupTimings,
    inflight: Arc<Semaphore>,
    max_inflight: usize,
    /// When this node last heard from a leader (`crate::election_gate`).
    pub contact: crate::election_gate::LeaderContact,
}

impl<M: Machine> Clone for Group<M> {
    fn clone(&self) -> Self {
        Self {
            raft: self.raft.clone(),
            reader: self.reader.clone(),
            committed: self.committed.clone(),
            elections: self.elections.clone(),
            timings: self.timings,
            inflight: self.inflight.clone(),
            max_inflight: self.max_inflight,
            contact: self.contact.clone(),
        }
    }
}

type Command<M> = <<M as Machine>::Types as RaftTypeConfig>::D;
type Response<M> = <<M as Machine>::Types as RaftTypeConfig>::R;

impl<M: Machine> Group<M> {
    /// Wraps a started Raft.
    pub fn new(
        raft: Raft<M::Types>,
        reader: MachineReader<M>,
        (committed, elections): (CommittedIndex, ElectionJournal),
        timings: GroupTimings,
        max_inflight: usize,
    ) -> Self {
        Self {
            raft,
            reader,
            committed,
            elections,
            timings,
            inflight: Arc::new(Semaphore::new(max_inflight)),
            max_inflight,
            contact: Default::default(),
        }
    }

    /// The group's timings.
    pub fn timings(&self) -> GroupTimings {
        self.timings
    }

    /// The group's name.
    pub fn name(&self) -> &'static str {
        <M::Types as GroupTypes>::NAME
    }

    pub fn metrics(&self) -> RaftMetrics<NodeId, Member> {
        self.raft.metrics().borrow().clone()
    }

    fn not_leader(&self, metrics: &RaftMetrics<NodeId, Member>) -> GroupError {
        let leader = metrics
            .current_leader
            .filter(|l| *l != metrics.id)
            .and_then(|id| {
                metrics
                    .membership_config
                    .membership()
                    .get_node(&id)
                    .map(|member| (id, member.clone()))
            });
        GroupError::NotLeader { leader }
    }

    /// Whether this node leads and has heard from a quorum within an election timeout: the
    /// condition for deciding anything on the group's behalf.
    pub fn leads_with_quorum(&self) -> bool {
        let metrics = self.raft.metrics().borrow().clone();
        let limit = self.timings.election_timeout_max.as_millis() as u64;
        metrics.state == ServerState::Leader
            && metrics
                .millis_since_quorum_ack
                .is_some_and(|ms| ms <= limit)
    }

    /// Whether this node is in touch with a working group: it leads with recent quorum
    /// contact, or follows a leader it heard from within an election timeout. A node cut
    /// off from the others loses this within an election timeout (it keeps its term and
    /// its idea of the leader: `crate::election_gate` holds its elections back).
    pub fn in_contact(&self) -> bool {
        let metrics = self.raft.metrics().borrow().clone();
        match metrics.state {
            ServerState::Leader => self.leads_with_quorum(),
            _ => {
                metrics.current_leader.is_some()
                    && self
                        .contact
                        .since()
                        .is_some_and(|since| since <= self.timings.election_timeout_max)
            }
        }
    }

    /// Checks that this node leads and has heard from a quorum within an election timeout.
    async fn check_leader_with_quorum(&self) -> Result<(), GroupError> {
        let limit = self.timings.election_timeout_max.as_millis() as u64;
        // Right after an election the first quorum ack may still be on its way.
        let deadline = tokio::time::Instant::now() + 2 * self.timings.heartbeat;
        loop {
            let metrics = self.metrics();
            if metrics.state != ServerState::Leader {
                return Err(self.not_leader(&metrics));
            }
            match metrics.millis_since_quorum_ack {
                Some(ms) if ms <= limit => return Ok(()),
                Some(ms) => return Err(GroupError::NoQuorum { since_ms: Some(ms) }),
                None if tokio::time::Instant::now() >= deadline => {
                    return Err(GroupError::NoQuorum { since_ms: None })
                }
                None => tokio::time::sleep(self.timings.heartbeat / 5).await,
            }
        }
    }

    /// Proposes a command and waits for it to commit and apply, within the write timeout.
    pub async fn write(&self, command: Command<M>) -> Result<Response<M>, GroupError> {
        let bytes = encoded_len(&command);
        if bytes > MAX_COMMAND_BYTES {
            return Err(GroupError::TooLarge {
                bytes,
                limit: MAX_COMMAND_BYTES,
            });
        }
        let _permit =
            self.inflight
                .clone()
                .try_acquire_owned()
                .map_err(|_| GroupError::Overloaded {
                    limit: self.max_inflight,
                })?;
        self.check_leader_with_quorum().await?;
        match tokio::time::timeout(self.timings.write_timeout, self.raft.client_write(command))
            .await
        {
            Ok(Ok(response)) => Ok(response.data),
            Ok(Err(RaftError::APIError(ClientWriteError::ForwardToLeader(forward)))) => {
                Err(handed_over(forward.leader_id))
            }
            Ok(Err(RaftError::APIError(ClientWriteError::ChangeMembershipError(err)))) => {
                Err(GroupError::OutcomeUnknown {
                    reason: err.to_string(),
                })
            }
            Ok(Err(RaftError::Fatal(fatal))) => Err(GroupError::OutcomeUnknown {
                reason: format!("raft stopped: {fatal}"),
            }),
            Err(_) => Err(GroupError::OutcomeUnknown {
                reason: format!(
                    "not committed within {} ms",
                    self.timings.write_timeout.as_millis()
                ),
            }),
        }
    }

    /// Waits until a read on this node sees every write committed before the call
    /// (leader only: it confirms leadership with a quorum, then waits for apply).
    pub async fn linearizable_barrier(&self) -> Result<(), GroupError> {
        let metrics = self.metrics();
        if metrics.state != ServerState::Leader {
            return Err(self.not_leader(&metrics));
        }
        match tokio::time::timeout(self.timings.read_timeout, self.raft.ensure_linearizable()).await
        {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(RaftError::APIError(openraft::error::CheckIsLeaderError::ForwardToLeader(
                f,
            )))) => Err(GroupError::NotLeader {
                leader: f.leader_id.zip(f.leader_node),
            }),
            Ok(Err(err)) => Err(GroupError::Unavailable {
                reason: err.to_string(),
            }),
            Err(_) => Err(GroupError::Unavailable {
                reason: format!(
                    "no quorum answered within {} ms",
                    self.timings.read_timeout.as_millis()
                ),
            }),
        }
    }

    /// The group as this node sees it.
    pub fn info(&self) -> GroupInfo {
        let m = self.metrics();
        let matched: BTreeMap<NodeId, Option<u64>> = m
            .replication
            .as_ref()
            .map(|r| {
                r.iter()
                    .map(|(id, log_id)| (*id, log_id.map(|l| l.index)))
                    .collect()
            })
            .unwrap_or_default();
        let last_log_index = m.last_log_index;
        let membership = m.membership_config.membership();
        let voters: std::collections::BTreeSet<NodeId> = membership.voter_ids().collect();
        let members = membership
            .nodes()
            .map(|(id, member)| {
                let matched_index = matched.get(id).copied().flatten();
                MemberInfo {
                    id: *id,
                    site: member.site.to_string(),
                    addr: member.addr.clone(),
                    voter: voters.contains(id),
                    matched_index,
                    lag: if m.state == ServerState::Leader {
                        Some(
                            last_log_index
                                .unwrap_or(0)
                                .saturating_sub(matched_index.unwrap_or(0)),
                        )
                    } else {
                        None
                    },
                }
            })
            .collect();
        GroupInfo {
            name: self.name().to_string(),
            role: format!("{:?}", m.state).to_lowercase(),
            leader: m.current_leader,
            term: m.current_term,
            last_log_index,
            committed_index: self.committed.get(),
            applied_index: m.last_applied.map(|l| l.index),
            snapshot_index: m.snapshot.map(|l| l.index),
            purged_index: m.purged.map(|l| l.index),
            millis_since_quorum_ack: m.millis_since_quorum_ack,
            leads_with_quorum: self.leads_with_quorum(),
            members,
            elections: self.elections.entries(),
        }
    }
}

/// One group's status on one node, as `/v1/cluster` reports it.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct GroupInfo {
    pub name: String,
    /// `leader`, `follower`, `candidate`, `learner` or `shutdown`.
    pub role: String,
    pub leader: Option<NodeId>,
    pub term: u64,
    pub last_log_index: Option<u64>,
    pub committed_index: Option<u64>,
    pub applied_index: Option<u64>,
    pub snapshot_index: Option<u64>,
    pub purged_index: Option<u64>,
    /// On the leader: how long since a quorum last acknowledged it.
    pub millis_since_quorum_ack: Option<u64>,
    /// This node leads and heard from a quorum within an election timeout: it can commit.
    #[serde(default)]
    pub leads_with_quorum: bool,
    pub members: Vec<MemberInfo>,
    /// The committed votes this node saved, oldest first (bounded): who won which term,
    /// this node's own leaderships included. Drills check election safety on it.
    #[serde(default)]
    pub elections: Vec<Elected>,
}

/// A member of a group, with replication progress when this node leads.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct MemberInfo {
    pub id: NodeId,
    pub site: String,
    pub addr: String,
    pub voter: bool,
    /// On the leader: the last index known replicated to this member.
    pub matched_index: Option<u64>,
    /// On the leader: entries this member is behind the leader's log.
    pub lag: Option<u64>,
}
