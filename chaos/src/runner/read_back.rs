//! The end of a drill: wait for push deliveries to catch up, then read back what the
//! checkers need (messages as stored, every transfer's record, balances, the total, every
//! acknowledged session), recording it in the history. A read that fails is recorded as
//! such, and the checkers then refuse to vouch for what it would have shown.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::time::Duration;

use firebreak_services::client::Outcome;

use super::Drill;
use crate::history::{Event, Op, StoredMessage};
use crate::playbook::ServiceKind;
use crate::workload::{self, Runner};

/// How long push recipients get to catch up after the workload.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(15);
/// Read-back requests in flight at once.
const READ_BACK_CONCURRENCY: usize = 16;
/// Page size of the messaging catch-up read (the service's page).
const MESSAGE_PAGE: usize = 500;
/// Pages read per conversation at most.
const MAX_PAGES: usize = 1_000;
/// Accounts per page of the read-back (the service's maximum).
const ACCOUNT_PAGE: usize = firebreak_services::payments::MAX_PAGE;
/// Pages of accounts read back at most: 100,000 accounts.
const MAX_ACCOUNT_PAGES: usize = 100;

impl Drill<'_> {
    /// Waits until every recipient has been pushed the last stored message of its
    /// conversation, or [`DRAIN_TIMEOUT`].
    pub(super) async fn drain(&self, runner: &Runner) {
        let deadline = tokio::time::Instant::now() + DRAIN_TIMEOUT;
        let users = self.playbook.workload.users;
        if !self.playbook.services().contains(&ServiceKind::Messaging) {
            return;
        }
        let mut newest: BTreeMap<String, u64> = BTreeMap::new();
        for user in 0..users {
            let room = workload::conversation(user);
            if let Outcome::Done {
                status: 200, body, ..
            } = runner.client().messages(&room, 0).await
            {
                let last = body["messages"]
                    .as_array()
                    .and_then(|m| m.last())
                    .map(|m| m["seq"].as_u64().unwrap_or(0));
                newest.insert(room, last.unwrap_or(0));
            }
        }
        // Paged reads give the first page only; that is enough to wait on most of it, and
        // the read-back below catches the rest.
        while tokio::time::Instant::now() < deadline {
            let events = self.history.snapshot();
            let mut delivered: HashMap<&str, u64> = HashMap::new();
            for e in &events {
                if let Event::Deliver {
                    conversation, seq, ..
                } = e
                {
                    let top = delivered.entry(conversation.as_str()).or_default();
                    *top = (*top).max(*seq);
                }
            }
            if newest
                .iter()
                .all(|(room, seq)| delivered.get(room.as_str()).copied().unwrap_or(0) >= *seq)
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Reads back what the checkers need from the end state.
    pub(super) async fn read_back(&self, runner: &Runner) {
        let services = self.playbook.services();
        if services.contains(&ServiceKind::Messaging) {
            self.read_back_messages(runner).await;
        }
        if services.contains(&ServiceKind::Payments) {
            self.read_back_payments(runner).await;
        }
        if services.contains(&ServiceKind::Login) {
            self.read_back_sessions(runner).await;
        }
    }

    async fn read_back_messages(&self, runner: &Runner) {
        let events = self.history.snapshot();
        for user in 0..self.playbook.workload.users {
            let room = workload::conversation(user);
            let mut stored = Vec::new();
            let mut failed = None;
            for _ in 0..MAX_PAGES {
                let after = stored.last().map_or(0, |m: &StoredMessage| m.seq);
                match runner.client().messages(&room, after).await {
                    Outcome::Done {
                        status: 200, body, ..
                    } => {
                        let page: Vec<StoredMessage> = body["messages"]
                            .as_array()
                            .into_iter()
                            .flatten()
                            .map(|m| StoredMessage {
                                seq: m["seq"].as_u64().unwrap_or(0),
                                client_msg_id: m["client_msg_id"].as_str().unwrap_or("").into(),
                            })
                            .collect();
                        let full = page.len() >= MESSAGE_PAGE;
                        stored.extend(page);
                        if !full {
                            break;
                        }
                    }
                    other => {
                        failed = Some(format!("{other:?}"));
                        break;
                    }
                }
            }
            let at_ms = self.history.now_ms();
            if let Some(error) = failed {
                self.history.record(Event::ReadBackFailed {
                    at_ms,
                    what: format!("conversation {room}"),
                    error,
                });
                continue;
            }
            let who = workload::recipient(user);
            let delivered: std::collections::HashSet<u64> = events
                .iter()
                .filter_map(|e| match e {
                    Event::Deliver { recipient, seq, .. } if *recipient == who => Some(*seq),
                    _ => None,
                })
                .collect();
            for m in stored.iter().filter(|m| !delivered.contains(&m.seq)) {
                self.history.record(Event::Recovered {
                    at_ms,
                    recipient: who.clone(),
                    conversation: room.clone(),
                    seq: m.seq,
                    client_msg_id: m.client_msg_id.clone(),
                });
            }
            self.history.record(Event::Stored {
                at_ms,
                conversation: room,
                messages: stored,
            });
        }
    }

    async fn read_back_payments(&self, runner: &Runner) {
        let keys: Vec<String> = self
            .history
            .snapshot()
            .into_iter()
            .filter_map(|e| match e {
                Event::Invoke {
                    op: Op::Transfer { key, .. },
                    ..
                } => Some(key),
                _ => None,
            })
            .collect();
        let history = self.history.clone();
        for_each_bounded(keys, |key| {
            let history = history.clone();
            async move {
                let at_ms = history.now_ms();
                match runner.client().transfer_record(&key).await {
                    Outcome::Done {
                        status: 200, body, ..
                    } => history.record(Event::TransferRecord {
                        at_ms,
                        key,
                        record: Some(body),
                    }),
                    Outcome::Done { status: 404, .. } => history.record(Event::TransferRecord {
                        at_ms,
                        key,
                        record: None,
                    }),
                    other => history.record(Event::ReadBackFailed {
                        at_ms,
                        what: format!("transfer {key}"),
                        error: format!("{other:?}"),
                    }),
                }
            }
        })
        .await;
        self.read_back_accounts(runner).await;
    }

    /// Every account, page by page, each recorded as a `Balance`: the checker sums the
    /// total itself (the workload has drained, so nothing moves between pages).
    async fn read_back_accounts(&self, runner: &Runner) {
        let mut after: Option<String> = None;
        for _ in 0..MAX_ACCOUNT_PAGES {
            let at_ms = self.history.now_ms();
            let page = match runner
                .client()
                .accounts(after.as_deref(), ACCOUNT_PAGE)
                .await
            {
                Outcome::Done {
                    status: 200, body, ..
                } => body,
                other => {
                    let from =
                        after.map_or("the first".to_string(), |a| format!("those after {a}"));
                    return self.history.record(Event::ReadBackFailed {
                        at_ms,
                        what: format!("accounts ({from})"),
                        error: format!("{other:?}"),
                    });
                }
            };
            for account in page["accounts"].as_array().into_iter().flatten() {
                self.history.record(Event::Balance {
                    at_ms,
                    account: account["id"].as_str().unwrap_or("").to_string(),
                    balance: account["balance"].as_u64().unwrap_or(0),
                });
            }
            match page["next"].as_str() {
                Some(next) => after = Some(next.to_string()),
                None => return,
            }
        }
        self.history.record(Event::ReadBackFailed {
            at_ms: self.history.now_ms(),
            what: "accounts".into(),
            error: format!("more than {MAX_ACCOUNT_PAGES} pages of {ACCOUNT_PAGE}"),
        });
    }

    async fn read_back_sessions(&self, runner: &Runner) {
        let tokens: Vec<String> = crate::history::operations(&self.history.snapshot())
            .into_iter()
            .filter(|o| matches!(o.op, Op::Login { .. }))
            .filter_map(|o| {
                o.body()
                    .and_then(|b| b["token"].as_str())
                    .map(str::to_string)
            })
            .collect();
        let history = self.history.clone();
        for_each_bounded(tokens, |token| {
            let history = history.clone();
            async move {
                let at_ms = history.now_ms();
                match runner.client().validate(&token).await {
                    Outcome::Done { status: 200, .. } => history.record(Event::Session {
                        at_ms,
                        token,
                        valid: true,
                    }),
                    Outcome::Done {
                        status: 401 | 404, ..
                    } => history.record(Event::Session {
                        at_ms,
                        token,
                        valid: false,
                    }),
                    other => history.record(Event::ReadBackFailed {
                        at_ms,
                        what: "a session".into(),
                        error: format!("{other:?}"),
                    }),
                }
            }
        })
        .await;
    }
}

/// Runs `f` over `items`, [`READ_BACK_CONCURRENCY`] at a time.
async fn for_each_bounded<T, F, Fut>(items: Vec<T>, f: F)
where
    F: Fn(T) -> Fut,
    Fut: Future<Output = ()>,
{
    use futures::StreamExt;
    futures::stream::iter(items.into_iter().map(f))
        .buffer_unordered(READ_BACK_CONCURRENCY)
        .collect::<Vec<()>>()
        .await;
}
