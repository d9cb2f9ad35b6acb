//! Idle push clients for the reconnect storm: thousands of streams open through one site,
//! half with firebreak's client and half with a naive one, every attempt, open and
//! delivery recorded.
//!
//! ```text
//!   ramp: RAMP_BATCH clients every RAMP_TICK, alternating kinds, all through `through`
//!   firebreak client ─ stream ends ─► wait jitter × window ─► a random other gateway, not one that failed
//!   naive client     ─ stream ends ─► the next address, at once
//!   after the workload: one probe message ─► every client must receive it
//! ```
//!
//! The storm checker turns the records into the reconnect rate per 100 ms at the surviving
//! sites and the time until every client is back.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use firebreak_services::backoff::Backoff;
use firebreak_services::client::{Client, ClientConfig, Outcome, StreamEvent};
use tokio::task::JoinSet;

use crate::history::{Event, History, IdleKind};
use crate::playbook::IdlePush;

/// The conversation every idle client follows (the workload never sends to it).
pub const CONVERSATION: &str = "idle-push";
/// Clients started per ramp tick: 2,000 a second, so that bring-up does not
/// overflow the gateway's accept queue.
const RAMP_BATCH: usize = 100;
const RAMP_TICK: Duration = Duration::from_millis(50);
/// Failed connections in a row after which a firebreak client gives up.
const MAX_RECONNECTS: u32 = 300;
/// Connections a naive client makes at most (it never waits, so it needs a bound).
const MAX_NAIVE_ATTEMPTS: u32 = 1_000;
/// Largest push event a naive client buffers before it drops the connection.
const MAX_EVENT_BYTES: usize = 1 << 20;

/// The running idle clients; dropping this stops them.
pub struct IdleClients {
    tasks: JoinSet<()>,
    /// The naive clients run on a runtime of their own, a thread per core: real phones do
    /// not share a scheduler, and on one runtime the naive half's burst would delay the
    /// timers of firebreak's half and bend its figures.
    naive: Option<tokio::runtime::Runtime>,
    state: Arc<State>,
}

/// What the runner needs to know while they run: who has connected once, and the newest
/// message each has received.
struct State {
    history: History,
    /// Gateway address to site name.
    sites: HashMap<String, String>,
    opened: Vec<AtomicBool>,
    opened_count: AtomicUsize,
    newest: Vec<AtomicU64>,
}

impl State {
    fn site(&self, gateway: &str) -> String {
        self.sites.get(gateway).cloned().unwrap_or_default()
    }

    fn attempt(&self, kind: IdleKind, client: u32, gateway: &str) {
        self.history.record(Event::IdleAttempt {
            at_ms: self.history.now_ms(),
            kind,
            client,
            site: self.site(gateway),
        });
    }

    fn open(&self, index: usize, kind: IdleKind, client: u32, gateway: &str) {
        self.history.record(Event::IdleOpen {
            at_ms: self.history.now_ms(),
            kind,
            client,
            site: self.site(gateway),
        });
        if !self.opened[index].swap(true, Ordering::Relaxed) {
            self.opened_count.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn deliver(&self, index: usize, kind: IdleKind, client: u32, seq: u64) {
        self.history.record(Event::IdleDeliver {
            at_ms: self.history.now_ms(),
            kind,
            client,
            seq,
        });
        self.newest[index].fetch_max(seq, Ordering::Relaxed);
    }
}

impl IdleClients {
    /// Starts `idle.clients` clients, all first through `idle.through`'s address (its
    /// gateway or messaging instance), ramping up over a few seconds; returns once all are
    /// started (not yet connected: see [`IdleClients::wait_connected`]). `gateways` (the
    /// addresses to connect to) and `sites` are in site order.
    pub async fn start(
        gateways: &[String],
        sites: &[String],
        idle: &IdlePush,
        seed: u64,
        timeout: Duration,
        history: History,
        tls: firebreak_tls::ClientTls,
    ) -> Self {
        let first = sites
            .iter()
            .position(|s| *s == idle.through)
            .expect("validated: idle_push.through is a site");
        let mut order = gateways.to_vec();
        order.rotate_left(first);
        let count = idle.clients as usize;
        let state = Arc::new(State {
            history,
            sites: gateways
                .iter()
                .cloned()
                .zip(sites.iter().cloned())
                .collect(),
            opened: (0..count).map(|_| AtomicBool::new(false)).collect(),
            opened_count: AtomicUsize::new(0),
            newest: (0..count).map(|_| AtomicU64::new(0)).collect(),
        });
        let client = Arc::new(Client::new(ClientConfig {
            gateways: order.clone(),
            timeout,
            backoff: Backoff::default(),
            stream_backoff: Backoff::STREAM,
            max_attempts: 1,
            seed: seed ^ 0x1d1e,
            tls: tls.clone(),
        }));
        let naive_http = tls
            .apply(reqwest::Client::builder())
            .build()
            .expect("reqwest client builds with static options");
        let naive_runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(crate::driver::cores())
            .thread_name("idle-naive")
            .enable_all()
            .build()
            .expect("a one-thread runtime builds");
        let mut tasks = JoinSet::new();
        for index in 0..count {
            if index > 0 && index.is_multiple_of(RAMP_BATCH) {
                tokio::time::sleep(RAMP_TICK).await;
            }
            let number = (index / 2) as u32;
            let state = state.clone();
            if index.is_multiple_of(2) {
                let observer = {
                    let state = state.clone();
                    Arc::new(move |event: StreamEvent<'_>| match event {
                        StreamEvent::Attempt { gateway } => {
                            state.attempt(IdleKind::Firebreak, number, gateway)
                        }
                        StreamEvent::Open { gateway } => {
                            state.open(index, IdleKind::Firebreak, number, gateway)
                        }
                        StreamEvent::Received { .. } => {}
                    })
                };
                let mut stream = client.follow_observed(CONVERSATION, 0, MAX_RECONNECTS, observer);
                tasks.spawn(async move {
                    while let Some(message) = stream.recv().await {
                        let seq = message["seq"].as_u64().unwrap_or(0);
                        state.deliver(index, IdleKind::Firebreak, number, seq);
                    }
                });
            } else {
                let client = naive(
                    naive_http.clone(),
                    tls.clone(),
                    order.clone(),
                    state,
                    index,
                    number,
                );
                tasks.spawn_on(client, naive_runtime.handle());
            }
        }
        Self {
            tasks,
            naive: Some(naive_runtime),
            state,
        }
    }

    /// Waits until every client has had a stream open once, or `deadline`.
    pub async fn wait_connected(&self, deadline: tokio::time::Instant) -> Result<(), String> {
        loop {
            let opened = self.state.opened_count.load(Ordering::Relaxed);
            if opened == self.state.opened.len() {
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(format!(
                    "only {opened} of {} idle push clients connected in time",
                    self.state.opened.len()
                ));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Sends one message to the idle conversation and waits until every client has
    /// received it or `deadline`; records the probe (the checker judges who missed it).
    pub async fn probe(&self, client: &Client, deadline: tokio::time::Instant) {
        let seq = loop {
            match client
                .send_message(CONVERSATION, "idle-probe", "drill", "are you back?")
                .await
            {
                Outcome::Done {
                    status: 200..=299,
                    body,
                    ..
                } => break body["seq"].as_u64().unwrap_or(0),
                outcome => {
                    tracing::warn!(?outcome, "idle probe not sent; retrying");
                    if tokio::time::Instant::now() >= deadline {
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        };
        self.state.history.record(Event::IdleProbe {
            at_ms: self.state.history.now_ms(),
            seq,
        });
        while tokio::time::Instant::now() < deadline
            && !self
                .state
                .newest
                .iter()
                .all(|n| n.load(Ordering::Relaxed) >= seq)
        {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Stops every client.
    pub fn stop(self) {}
}

impl Drop for IdleClients {
    fn drop(&mut self) {
        self.tasks.abort_all();
        if let Some(runtime) = self.naive.take() {
            // Dropping a runtime inside another one would block it; this does not.
            runtime.shutdown_background();
        }
    }
}

/// A naive push client, as many are written: on any disconnect, the next address at
/// once. No backoff, no jitter; `Last-Event-ID` so that it misses nothing.
async fn naive(
    http: reqwest::Client,
    tls: firebreak_tls::ClientTls,
    gateways: Vec<String>,
    state: Arc<State>,
    index: usize,
    number: u32,
) {
    let mut last = 0u64;
    for attempt in 0..MAX_NAIVE_ATTEMPTS as usize {
        let gateway = &gateways[attempt % gateways.len()];
        state.attempt(IdleKind::Naive, number, gateway);
        let url = tls.url(
            gateway,
            &format!("/messaging/conversations/{CONVERSATION}/stream"),
        );
        let Ok(mut response) = http
            .get(url)
            .header("last-event-id", last.to_string())
            .send()
            .await
        else {
            continue;
        };
        if !response.status().is_success() {
            continue;
        }
        state.open(index, IdleKind::Naive, number, gateway);
        let mut buffer = String::new();
        while let Ok(Some(chunk)) = response.chunk().await {
            buffer.push_str(&String::from_utf8_lossy(&chunk));
            while let Some(end) = buffer.find("\n\n") {
                let block: String = buffer.drain(..end + 2).collect();
                let seq = block
                    .lines()
                    .find_map(|l| l.strip_prefix("data:"))
                    .and_then(|d| serde_json::from_str::<serde_json::Value>(d.trim()).ok())
                    .and_then(|m| m["seq"].as_u64());
                if let Some(seq) = seq.filter(|s| *s > last) {
                    last = seq;
                    state.deliver(index, IdleKind::Naive, number, seq);
                }
            }
            if buffer.len() > MAX_EVENT_BYTES {
                break;
            }
        }
    }
}
