//! Group commit for the `state` group: concurrent writes share one log entry.
//!
//! openraft 0.9 waits for each append to be fsynced before it takes the next client write,
//! so one command per entry caps a group at one fsync per write. The batcher turns many
//! concurrent writes into one entry:
//!
//! ```text
//!   write(cmd) ──► bounded queue ──► batcher: take what is queued (≤ MAX_BATCH_COMMANDS,
//!      ▲                              ≤ MAX_COMMAND_BYTES encoded), propose it as one entry,
//!      │                              up to MAX_INFLIGHT_BATCHES at once
//!      └────────── its own response ◄── responses, in the batch's order
//! ```
//!
//! Every command keeps its own response and revision; a batch's fate (committed, refused,
//! unknown) is every one of its commands' fate. Commands of one batch come from concurrent
//! requests, so their relative order is the order the batcher received them.

use std::sync::Arc;

use firebreak_model::kv::{KvCommand, KvResponse, KvStore, MAX_COMMAND_BYTES};
use tokio::sync::{mpsc, oneshot, Semaphore};

use crate::group::{Group, GroupError};

/// Most commands in one log entry.
pub const MAX_BATCH_COMMANDS: usize = 512;
/// Batches proposed and not yet answered; more writes wait in the queue meanwhile.
pub const MAX_INFLIGHT_BATCHES: usize = 4;

type Reply = oneshot::Sender<Result<KvResponse, GroupError>>;

struct Pending {
    command: KvCommand,
    encoded_len: usize,
    reply: Reply,
}

/// The write path of the `state` group; cheap to clone.
#[derive(Clone)]
pub struct StateWriter {
    tx: mpsc::Sender<Pending>,
    queue_limit: usize,
}

impl StateWriter {
    /// Starts the batcher; it stops when every writer is dropped.
    pub fn spawn(group: Group<KvStore>, queue_limit: usize) -> Self {
        let (tx, rx) = mpsc::channel(queue_limit);
        tokio::spawn(run(group, rx));
        Self { tx, queue_limit }
    }

    /// Writes one validated command, batched with whatever else is being written.
    pub async fn write(&self, command: KvCommand) -> Result<KvResponse, GroupError> {
        let (reply, answer) = oneshot::channel();
        let encoded_len = command.encoded_len();
        self.tx
            .try_send(Pending {
                command,
                encoded_len,
                reply,
            })
            .map_err(|_| GroupError::Overloaded {
                limit: self.queue_limit,
            })?;
        answer.await.unwrap_or_else(|_| {
            Err(GroupError::OutcomeUnknown {
                reason: "the node stopped before the write was answered".into(),
            })
        })
    }
}

async fn run(group: Group<KvStore>, mut rx: mpsc::Receiver<Pending>) {
    let inflight = Arc::new(Semaphore::new(MAX_INFLIGHT_BATCHES));
    let mut carry: Option<Pending> = None;
    loop {
        let permit = inflight
            .clone()
            .acquire_owned()
            .await
            .expect("the semaphore is never closed");
        let first = match carry.take() {
            Some(pending) => pending,
            None => match rx.recv().await {
                Some(pending) => pending,
                None => return,
            },
        };
        // The batch is a JSON array: its commands plus a comma each and the brackets.
        let mut bytes = first.encoded_len + 2;
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH_COMMANDS {
            let Ok(next) = rx.try_recv() else { break };
            if bytes + next.encoded_len + 1 > MAX_COMMAND_BYTES {
                carry = Some(next);
                break;
            }
            bytes += next.encoded_len + 1;
            batch.push(next);
        }
        let group = group.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let (commands, replies): (Vec<_>, Vec<_>) =
                batch.into_iter().map(|p| (p.command, p.reply)).unzip();
            match group.write(commands).await {
                Ok(responses) => {
                    debug_assert_eq!(responses.len(), replies.len(), "one response per command");
                    for (reply, response) in replies.into_iter().zip(responses) {
                        let _ = reply.send(Ok(response));
                    }
                }
                Err(err) => {
                    for reply in replies {
                        let _ = reply.send(Err(err.clone()));
                    }
                }
            }
        });
    }
}
