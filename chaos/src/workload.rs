//! The workload: open-loop traffic from a seed, through the services' client library,
//! every operation recorded as invoke then ok, fail or unknown.
//!
//! ```text
//!   setup: open an account and register a login per user (retried until they stick)
//!   followers: one push recipient per user's conversation, each starting at a different
//!              gateway, every delivery recorded
//!   tick every 1/rate s ─► pick (seeded) send | transfer | login-or-validate
//!                        ─► spawn it unless max_in_flight are running (then: fail at once)
//! ```
//!
//! Open-loop means operations start on schedule whatever the answers do, as users do;
//! a closed loop would slow down with the service and hide an outage. The seed fixes
//! every choice the workload makes; which session a validation picks also depends on
//! which logins have been acknowledged by then, so a rerun repeats the drill, not every
//! byte of it.

use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use firebreak_services::backoff::Backoff;
use firebreak_services::client::{Client, ClientConfig, Outcome, StreamEvent, StreamObserver};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::Value;
use tokio::task::JoinHandle;

use crate::history::{Event, History, Op};
use crate::kv_client::KvClient;
use crate::playbook::{ServiceKind, Workload};

/// Balance every account opens with.
pub const OPENING_BALANCE: u64 = 1_000;
/// Attempts per operation: five rounds over three gateways (the client waits between
/// rounds, honouring Retry-After).
const MAX_ATTEMPTS: u32 = 15;
/// Failed connections in a row after which a push recipient gives up.
const MAX_RECONNECTS: u32 = 300;
/// Sessions kept for validations (the most recent).
const MAX_SESSIONS: usize = 10_000;

/// Names of a user's things.
pub fn account(user: u32) -> String {
    format!("acct-{user}")
}
pub fn user_name(user: u32) -> String {
    format!("user-{user}")
}
pub fn password(user: u32) -> String {
    format!("drill-password-{user}")
}
pub fn conversation(user: u32) -> String {
    format!("room-{user}")
}
pub fn recipient(user: u32) -> String {
    format!("reader-{user}")
}

/// Runs operations and records them.
#[derive(Clone)]
pub struct Runner {
    client: Arc<Client>,
    history: History,
    next_id: Arc<AtomicU64>,
    in_flight: Arc<AtomicUsize>,
    sessions: Arc<Mutex<Vec<String>>>,
    /// The rate's multiplier: 1, or a surge's factor while it lasts.
    surge: Arc<AtomicU32>,
    /// Message body sizes to pick from (empty: a short text).
    message_bytes: Arc<[u32]>,
    /// TLS to the gateways.
    tls: firebreak_tls::ClientTls,
    /// The kv operations' client, keys and nodes (with `kv` in the topology).
    kv: Option<Arc<Kv>>,
}

/// The kv side of the workload.
struct Kv {
    client: KvClient,
    nodes: Vec<String>,
    keys: u32,
    /// The value the workload last saw in each key: what a compare-and-swap expects.
    seen: Mutex<std::collections::HashMap<String, Option<String>>>,
}

impl Runner {
    /// Traffic through `gateways`; kv operations, with the operator `kv_token`, straight to
    /// the same nodes' client listeners.
    pub fn new(
        (gateways, kv_token): (Vec<String>, Option<String>),
        tls: firebreak_tls::ClientTls,
        workload: &Workload,
        history: History,
    ) -> Self {
        let timeout = Duration::from_millis(workload.timeout_ms);
        let kv = kv_token.map(|token| {
            Arc::new(Kv {
                client: KvClient::new(tls.clone(), token, timeout),
                nodes: gateways.clone(),
                keys: workload.kv_keys,
                seen: Mutex::default(),
            })
        });
        let client = Client::new(ClientConfig {
            gateways,
            timeout: Duration::from_millis(workload.timeout_ms),
            backoff: Backoff {
                base: Duration::from_millis(100),
                cap: Duration::from_secs(1),
            },
            max_attempts: MAX_ATTEMPTS,
            stream_backoff: Backoff::STREAM,
            seed: workload.seed,
            tls: tls.clone(),
        });
        Self {
            client: Arc::new(client),
            history,
            next_id: Arc::new(AtomicU64::new(1)),
            in_flight: Arc::default(),
            sessions: Arc::default(),
            surge: Arc::new(AtomicU32::new(1)),
            message_bytes: workload.message_bytes.clone().into(),
            tls,
            kv,
        }
    }

    /// Multiplies the rate by `factor` (1 ends a surge).
    pub fn set_surge(&self, factor: u32) {
        self.surge.store(factor.max(1), Ordering::Relaxed);
    }

    /// Operations running now.
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// Invokes one operation, records its outcome, and says whether it ended ok.
    pub async fn execute(&self, op: Op) -> bool {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        self.history.record(Event::Invoke {
            at_ms: self.history.now_ms(),
            id,
            op: op.clone(),
        });
        let outcome = match &op {
            Op::OpenAccount { account, balance } => {
                self.client.open_account(account, *balance).await
            }
            Op::Register { user } => {
                let index: u32 = user.trim_start_matches("user-").parse().unwrap_or(0);
                self.client.register(user, &password(index)).await
            }
            Op::Send {
                conversation,
                client_msg_id,
                sender,
                body_bytes,
            } => {
                let body = message_body(client_msg_id, *body_bytes);
                self.client
                    .send_message(conversation, client_msg_id, sender, &body)
                    .await
            }
            Op::Transfer {
                key,
                from,
                to,
                amount,
            } => self.client.transfer(key, from, to, *amount).await,
            Op::Login { user } => {
                let index: u32 = user.trim_start_matches("user-").parse().unwrap_or(0);
                self.client.log_in(user, &password(index)).await
            }
            Op::Validate { token } => self.client.validate(token).await,
            Op::KvRead { .. } | Op::KvWrite { .. } | Op::KvCas { .. } => self.kv(id, &op).await,
        };
        let (event, ok) = self.completion(id, &op, outcome);
        self.history.record(event);
        ok
    }

    /// The event that ends operation `id`, and whether it ended ok; keeps a new session.
    fn completion(&self, id: u64, op: &Op, outcome: Outcome) -> (Event, bool) {
        let at_ms = self.history.now_ms();
        match outcome {
            Outcome::Done {
                status,
                body,
                site,
                epoch,
            } if definitive(op, status, &body) => {
                if let (Op::Login { .. }, Some(token)) = (op, body["token"].as_str()) {
                    let mut sessions = self.sessions.lock().expect("sessions lock");
                    if sessions.len() >= MAX_SESSIONS {
                        sessions.remove(0);
                    }
                    sessions.push(token.to_string());
                }
                let event = Event::Ok {
                    at_ms,
                    id,
                    status,
                    body,
                    site,
                    epoch,
                };
                (event, true)
            }
            Outcome::Done { status, body, .. } => {
                let error = format!(
                    "{status} {}",
                    body["error"]["message"].as_str().unwrap_or("")
                );
                match refused(status) {
                    true => (Event::Fail { at_ms, id, error }, false),
                    false => (Event::Unknown { at_ms, id, error }, false),
                }
            }
            Outcome::Failed(error) => (Event::Fail { at_ms, id, error }, false),
            Outcome::Unknown(error) => (Event::Unknown { at_ms, id, error }, false),
        }
    }

    /// Runs a kv operation at the next node in turn, and remembers what it saw.
    async fn kv(&self, id: u64, op: &Op) -> Outcome {
        let Some(kv) = &self.kv else {
            return Outcome::Failed("the topology runs no kv".into());
        };
        let node = &kv.nodes[id as usize % kv.nodes.len()];
        let outcome = kv.client.execute(node, op).await;
        if let Some(body) = outcome.ok() {
            let seen = match op {
                Op::KvRead { key } => Some((key, body["value"].as_str().map(str::to_string))),
                Op::KvWrite { key, value } => Some((key, Some(value.clone()))),
                Op::KvCas { key, value, .. } if body["succeeded"] == true => {
                    Some((key, Some(value.clone())))
                }
                _ => None,
            };
            if let Some((key, value)) = seen {
                kv.seen.lock().expect("kv lock").insert(key.clone(), value);
            }
        }
        outcome
    }

    /// Opens every user's account and login (of the services the topology runs),
    /// retrying each until it sticks or `deadline`.
    pub async fn setup(
        &self,
        users: u32,
        services: &[ServiceKind],
        deadline: tokio::time::Instant,
    ) -> Result<(), String> {
        for user in 0..users {
            let steps = [
                Op::OpenAccount {
                    account: account(user),
                    balance: OPENING_BALANCE,
                },
                Op::Register {
                    user: user_name(user),
                },
            ];
            for op in steps
                .into_iter()
                .filter(|op| services.contains(&op.service()))
            {
                while !self.execute(op.clone()).await {
                    if tokio::time::Instant::now() >= deadline {
                        return Err(format!("setup could not complete {op:?} in time"));
                    }
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }
        Ok(())
    }

    /// Starts one push recipient per user's conversation; abort the handles to stop them.
    pub fn follow(&self, gateways: &[String], workload: &Workload) -> Vec<JoinHandle<()>> {
        (0..workload.users)
            .map(|user| {
                // Each recipient starts at a different gateway, so a site loss cuts some.
                let mut order = gateways.to_vec();
                order.rotate_left(user as usize % gateways.len());
                let client = Arc::new(Client::new(ClientConfig {
                    gateways: order,
                    timeout: Duration::from_millis(workload.timeout_ms),
                    backoff: Backoff {
                        base: Duration::from_millis(100),
                        cap: Duration::from_secs(1),
                    },
                    max_attempts: MAX_ATTEMPTS,
                    stream_backoff: Backoff::STREAM,
                    seed: workload.seed.wrapping_add(u64::from(user) + 1),
                    tls: self.tls.clone(),
                }));
                let history = self.history.clone();
                tokio::spawn(async move {
                    let (who, room) = (recipient(user), conversation(user));
                    history.record(Event::Follow {
                        at_ms: history.now_ms(),
                        recipient: who.clone(),
                        conversation: room.clone(),
                    });
                    let observer = raw_deliveries(history, who, room.clone());
                    let mut stream = client.follow_observed(&room, 0, MAX_RECONNECTS, observer);
                    while stream.recv().await.is_some() {}
                })
            })
            .collect()
    }

    /// Runs the open-loop workload for its duration; returns once every operation it
    /// started has ended.
    pub async fn run(&self, workload: &Workload, services: &[ServiceKind]) {
        let mut rng = StdRng::seed_from_u64(workload.seed);
        let weights = [
            (ServiceKind::Messaging, workload.mix.messaging),
            (ServiceKind::Payments, workload.mix.payments),
            (ServiceKind::Login, workload.mix.login),
            (ServiceKind::Kv, workload.mix.kv),
        ];
        let weights: Vec<(ServiceKind, u32)> = weights
            .into_iter()
            .filter(|(s, w)| *w > 0 && services.contains(s))
            .collect();
        let total_weight: u32 = weights.iter().map(|(_, w)| w).sum();
        let interval = Duration::from_secs(1).div_f64(f64::from(workload.rate_per_sec));
        let start = tokio::time::Instant::now();
        let end = start + Duration::from_secs(u64::from(workload.duration_secs));
        let mut next = start;
        let mut tasks = tokio::task::JoinSet::new();
        for n in 0u64.. {
            tokio::time::sleep_until(next).await;
            // A surge multiplies the rate while it lasts (open loop: the schedule, not the
            // answers, sets the pace).
            next += interval.div_f64(f64::from(self.surge.load(Ordering::Relaxed).max(1)));
            if next > end {
                break;
            }
            let mut pick = rng.gen_range(0..total_weight);
            let service = weights
                .iter()
                .find(|(_, w)| {
                    let hit = pick < *w;
                    pick = pick.saturating_sub(*w);
                    hit
                })
                .map(|(s, _)| *s)
                .expect("weights sum to total_weight");
            let op = self.choose(service, n, workload.users, &mut rng);
            while tasks.try_join_next().is_some() {}
            if self.in_flight() >= workload.max_in_flight as usize {
                let id = self.next_id.fetch_add(1, Ordering::Relaxed);
                let at_ms = self.history.now_ms();
                self.history.record(Event::Invoke { at_ms, id, op });
                let error = format!(
                    "client saturated: {} operations in flight",
                    workload.max_in_flight
                );
                self.history.record(Event::Fail { at_ms, id, error });
                continue;
            }
            let runner = self.clone();
            self.in_flight.fetch_add(1, Ordering::Relaxed);
            tasks.spawn(async move {
                runner.execute(op).await;
                runner.in_flight.fetch_sub(1, Ordering::Relaxed);
            });
        }
        while tasks.join_next().await.is_some() {}
    }

    fn choose(&self, service: ServiceKind, n: u64, users: u32, rng: &mut StdRng) -> Op {
        let user = rng.gen_range(0..users);
        match service {
            ServiceKind::Messaging => Op::Send {
                conversation: conversation(rng.gen_range(0..users)),
                client_msg_id: format!("m-{n}"),
                sender: user_name(user),
                body_bytes: (!self.message_bytes.is_empty())
                    .then(|| self.message_bytes[rng.gen_range(0..self.message_bytes.len())]),
            },
            ServiceKind::Payments => {
                let to = (user + rng.gen_range(1..users)) % users;
                Op::Transfer {
                    key: format!("t-{n}"),
                    from: account(user),
                    to: account(to),
                    amount: rng.gen_range(1..=5),
                }
            }
            ServiceKind::Login => {
                let validate = rng.gen_bool(0.5);
                let sessions = self.sessions.lock().expect("sessions lock");
                match sessions.len() {
                    len if validate && len > 0 => Op::Validate {
                        token: sessions[rng.gen_range(0..len)].clone(),
                    },
                    _ => Op::Login {
                        user: user_name(user),
                    },
                }
            }
            ServiceKind::Kv => self.choose_kv(n, rng),
        }
    }

    /// A read (40%), a write (30%) or a compare-and-swap (30%, expecting the value last
    /// seen) on one of the few keys; every written value is unique (`v{n}`).
    fn choose_kv(&self, n: u64, rng: &mut StdRng) -> Op {
        let keys = self.kv.as_ref().map_or(1, |kv| kv.keys);
        let key = format!("drill/kv/k{}", rng.gen_range(0..keys));
        let value = format!("v{n}");
        match rng.gen_range(0..10) {
            0..=3 => Op::KvRead { key },
            4..=6 => Op::KvWrite { key, value },
            _ => {
                let expected = self.kv.as_ref().and_then(|kv| {
                    kv.seen
                        .lock()
                        .expect("kv lock")
                        .get(&key)
                        .cloned()
                        .flatten()
                });
                Op::KvCas {
                    key,
                    expected,
                    value,
                }
            }
        }
    }

    /// The client, for the read-back.
    pub fn client(&self) -> &Client {
        &self.client
    }
}

/// Records every message a recipient's stream receives, as the server sent it (before the
/// client's own dedupe), so the messaging checker judges the server's order.
fn raw_deliveries(history: History, recipient: String, conversation: String) -> StreamObserver {
    Arc::new(move |event: StreamEvent<'_>| {
        if let StreamEvent::Received {
            gateway,
            site,
            message,
        } = event
        {
            let via = match site {
                Some(site) => format!("{gateway} ({site})"),
                None => gateway.to_string(),
            };
            history.record(Event::Deliver {
                at_ms: history.now_ms(),
                recipient: recipient.clone(),
                conversation: conversation.clone(),
                seq: message["seq"].as_u64().unwrap_or(0),
                client_msg_id: message["client_msg_id"].as_str().unwrap_or("").to_string(),
                via,
            });
        }
    })
}

/// A message's body: `drill <id>`, padded to `bytes` when given.
fn message_body(client_msg_id: &str, bytes: Option<u32>) -> String {
    let mut body = format!("drill {client_msg_id}");
    if let Some(bytes) = bytes {
        let filler = " the fire lasts for days;";
        while body.len() < bytes as usize {
            body.push_str(filler);
        }
        body.truncate(bytes as usize);
    }
    body
}

/// Whether an answer that is not definitive says nothing was applied: a 4xx refuses the
/// request before any write. A 5xx (a 500 from a service that failed half-way) may
/// come after a write: unknown, never "nothing applied".
fn refused(status: u16) -> bool {
    (400..500).contains(&status)
}

/// Whether an answer is definitive for this operation: a 2xx, a transfer refused for
/// insufficient funds (recorded, nothing moved), a session found invalid, an account or
/// user that already exists (a retried setup step).
fn definitive(op: &Op, status: u16, body: &Value) -> bool {
    match (op, status) {
        (_, 200..=299) => true,
        (Op::Transfer { .. }, 409) => body["status"] == "insufficient_funds",
        (Op::Validate { .. }, 401 | 404) => true,
        (Op::OpenAccount { .. } | Op::Register { .. }, 409) => true,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_500_is_unknown_and_a_4xx_refused() {
        let transfer = Op::Transfer {
            key: "t".into(),
            from: "a".into(),
            to: "b".into(),
            amount: 1,
        };
        assert!(!definitive(&transfer, 500, &Value::Null));
        assert!(!refused(500), "a 500 may follow a write");
        assert!(refused(400) && refused(404));
        assert!(definitive(
            &transfer,
            409,
            &serde_json::json!({ "status": "insufficient_funds" })
        ));
    }
}
