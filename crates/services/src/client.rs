//! The client library: every gateway known (like a DNS answer with several addresses),
//! per-request timeouts, retries with capped exponential backoff and full jitter that
//! honour `Retry-After`, and an honest outcome: a request whose fate is unknown is
//! reported as unknown, never as failed.
//!
//! ```text
//!   request ─► gateway i ─ 2xx / 4xx ─────────────► Done { status, body }
//!                        ─ 503 ────────────► gateway i+1 at once
//!                        ─ 429, or 503 shed ─► end of the round (the service is
//!                                              overloaded, not the site lost)
//!                        ─ no connection ─► (nothing sent) ─► gateway i+1 at once
//!                        ─ 504 / lost answer ─► idempotent? gateway i+1 : Unknown
//!            after a round over every gateway ─► wait(backoff, largest Retry-After)
//!   attempts exhausted ─► Failed (nothing applied) or Unknown (something may have been)
//! ```
//!
//! A refusal from one gateway says nothing about the others (a site cut off answers 503
//! with Retry-After while its neighbours serve), so the client waits only once every
//! gateway has refused in a round; the backoff grows per round. A service that sheds
//! load (429, or 503 with `x-firebreak-shed`) is the exception: the other sites are most
//! likely as busy, and trying each of them at once would multiply an overload by the
//! number of sites, so the round ends there. A new round after a server
//! was reached draws on a retry budget ([`RETRY_RATIO`] of the requests made), so that an
//! overloaded service gets at most that much extra load from its clients' retries.
//!
//! Whether a request may be sent again after a lost answer is the caller's [`Retry`]: a
//! read, or a write the service deduplicates (`client_msg_id`, `idempotency_key`). The
//! gateways decide the same from the topology's `retry_safe` routes; a 503 from them means
//! nothing was applied, and a 504 that something may have been.

use std::sync::Mutex;
use std::time::Duration;

use rand::{Rng, SeedableRng};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::backoff::{parse_retry_after, Backoff};

/// What became of a request.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// A definitive answer (2xx, or a 4xx other than 429), with the site that served it
    /// and the route's epoch, when a gateway said so (`x-firebreak-site`, `-epoch`).
    Done {
        status: u16,
        body: Value,
        site: Option<String>,
        epoch: Option<u64>,
    },
    /// Refused every time: nothing was applied.
    Failed(String),
    /// It may or may not have been applied.
    Unknown(String),
}

impl Outcome {
    /// The body of a 2xx answer.
    pub fn ok(&self) -> Option<&Value> {
        match self {
            Outcome::Done { status, body, .. } if (200..300).contains(status) => Some(body),
            _ => None,
        }
    }
}

/// Whether a request may be sent again once its outcome is unknown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retry {
    /// A read, or a write the service applies at most once whatever the repeats.
    Safe,
    /// A write a repeat could apply twice: a lost answer makes it [`Outcome::Unknown`].
    Once,
}

/// Client settings.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// Every gateway (`host:port`).
    pub gateways: Vec<String>,
    pub timeout: Duration,
    pub backoff: Backoff,
    /// Backoff between push-stream reconnects ([`Backoff::STREAM`] unless there is a
    /// reason: its base is the window over which clients that lost a site together return).
    pub stream_backoff: Backoff,
    /// Attempts per request, the first included.
    pub max_attempts: u32,
    /// Seed of the jitter, so that a run can be repeated.
    pub seed: u64,
    /// TLS to the gateways (the cluster CA), or plain HTTP for debugging.
    pub tls: firebreak_tls::ClientTls,
}

/// What a push stream did, for whoever measures reconnect storms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamEvent<'a> {
    /// A connection attempt to `gateway` is starting.
    Attempt { gateway: &'a str },
    /// `gateway` answered 200: the stream is open.
    Open { gateway: &'a str },
    /// A message arrived through `gateway` from the instance of `site` (as the gateway
    /// said), as sent: before the client drops one it has passed on already (a drill
    /// judges the server's order on these).
    Received {
        gateway: &'a str,
        site: Option<&'a str>,
        message: &'a Value,
    },
}

/// Called at every [`StreamEvent`] of a followed stream.
pub type StreamObserver = std::sync::Arc<dyn Fn(StreamEvent<'_>) + Send + Sync>;

/// A client of the services through their gateways.
pub struct Client {
    config: ClientConfig,
    http: reqwest::Client,
    /// For push streams: a connect timeout but no overall one (a stream lives as long as
    /// its connection).
    streams: reqwest::Client,
    rng: Mutex<rand::rngs::StdRng>,
    /// Retry rounds this client may still start after reaching a server ([`RETRY_RATIO`]).
    retry_budget: Mutex<f64>,
}

/// Each request earns this share of a retry round. Trying every gateway once is failing
/// over, not retrying (each is another site), so a round is free; going round again after
/// a server was reached (an overload answer, a timeout) spends one from the budget. Under
/// overload the client's extra rounds are then at most this share of its requests, not
/// `max_attempts / gateways` times them: retries must not turn an outage into a flood.
/// A round in which no connection was made (a dead site) costs nothing.
pub const RETRY_RATIO: f64 = 0.5;
/// Retry rounds saved up for a burst of failures such as a failover (and what a new
/// client starts with).
pub const RETRY_BURST: f64 = 100.0;

impl Client {
    pub fn new(config: ClientConfig) -> Self {
        assert!(
            !config.gateways.is_empty(),
            "a client needs at least one gateway"
        );
        let http = config
            .tls
            .apply(reqwest::Client::builder())
            .timeout(config.timeout)
            .connect_timeout(config.timeout.min(Duration::from_secs(1)))
            .build()
            .expect("reqwest client builds with static options");
        let streams = config
            .tls
            .apply(reqwest::Client::builder())
            .connect_timeout(STREAM_CONNECT_TIMEOUT)
            .build()
            .expect("reqwest client builds with static options");
        let rng = Mutex::new(rand::rngs::StdRng::seed_from_u64(config.seed));
        Self {
            config,
            http,
            streams,
            rng,
            retry_budget: Mutex::new(RETRY_BURST),
        }
    }

    fn jitter(&self) -> f64 {
        self.rng.lock().expect("rng lock").gen::<f64>()
    }

    /// Sends a request with retries; only a [`Retry::Safe`] one is sent again after its
    /// answer was lost.
    pub async fn request(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
        retry: Retry,
    ) -> Outcome {
        let request = Request {
            method,
            path,
            body,
            idempotent: retry == Retry::Safe,
        };
        let gateways = self.config.gateways.len();
        let start = (self.jitter() * gateways as f64) as usize;
        let mut tally = Tally::default();
        self.earn_retry();
        let mut attempt = 0u32;
        let mut round = 0u32;
        while attempt < self.config.max_attempts {
            if round > 0 && tally.reached && !self.spend_retry() {
                let reason = format!(
                    "{}; not retried: the retry budget is spent (overload?)",
                    tally.last
                );
                return tally.give_up(reason);
            }
            tally.reached = false;
            let mut retry_after = None;
            for _ in 0..gateways {
                if attempt == self.config.max_attempts {
                    break;
                }
                let gateway = &self.config.gateways[(start + attempt as usize) % gateways];
                attempt += 1;
                match self.attempt(gateway, &request, &mut tally).await {
                    Step::Done(outcome) => return outcome,
                    Step::Next { after } => retry_after = retry_after.max(after),
                    // The service sheds load: the other sites are most likely as busy,
                    // and going round them would multiply the overload. Back off.
                    Step::Shed { after } => {
                        retry_after = retry_after.max(after);
                        break;
                    }
                }
            }
            if attempt < self.config.max_attempts {
                let delay = self.config.backoff.delay(round, self.jitter(), retry_after);
                tokio::time::sleep(delay).await;
            }
            round += 1;
        }
        let last = tally.last.clone();
        tally.give_up(last)
    }

    /// One attempt at `gateway`: the outcome if it is final, or how to go on.
    async fn attempt(&self, gateway: &str, request: &Request<'_>, tally: &mut Tally) -> Step {
        // The gateway and the service drop the work once this attempt stops waiting.
        let mut sending = self
            .http
            .request(
                request.method.clone(),
                self.config.tls.url(gateway, request.path),
            )
            .header(
                firebreak_model::DEADLINE_HEADER,
                self.config.timeout.as_millis() as u64,
            );
        if let Some(body) = request.body {
            sending = sending.json(body);
        }
        let response = match sending.send().await {
            Ok(response) => response,
            Err(err) if err.is_connect() => {
                tally.last = format!("{gateway}: {err}");
                return Step::Next { after: None };
            }
            Err(err) => return tally.lost(request, format!("{gateway}: {err}")),
        };
        tally.reached = true;
        let status = response.status();
        let header = |name: &str| {
            response
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        let after = header("retry-after").as_deref().and_then(parse_retry_after);
        let shed = header(firebreak_model::SHED_HEADER).is_some();
        let site = header("x-firebreak-site");
        let epoch = header("x-firebreak-epoch").and_then(|e| e.parse().ok());
        // A body that arrived whole but is not JSON (or is empty) is Null; a success whose
        // body never arrived whole is a lost answer: the write may have been applied.
        let body = match response.bytes().await {
            Ok(bytes) => serde_json::from_slice(&bytes).unwrap_or(Value::Null),
            Err(err) if status.is_success() => {
                let what = format!("{gateway}: {status} but the answer was cut: {err}");
                return tally.lost(request, what);
            }
            Err(_) => Value::Null,
        };
        match status {
            StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE => {
                tally.last = format!("{gateway}: {status} {}", error_message(&body));
                if shed || status == StatusCode::TOO_MANY_REQUESTS {
                    Step::Shed { after }
                } else {
                    Step::Next { after }
                }
            }
            StatusCode::GATEWAY_TIMEOUT | StatusCode::BAD_GATEWAY => {
                let what = format!("{gateway}: {status} {}", error_message(&body));
                tally.lost(request, what)
            }
            _ => Step::Done(Outcome::Done {
                status: status.as_u16(),
                body,
                site,
                epoch,
            }),
        }
    }

    fn earn_retry(&self) {
        let mut budget = self.retry_budget.lock().expect("budget lock");
        *budget = (*budget + RETRY_RATIO).min(RETRY_BURST);
    }

    fn spend_retry(&self) -> bool {
        let mut budget = self.retry_budget.lock().expect("budget lock");
        if *budget >= 1.0 {
            *budget -= 1.0;
            true
        } else {
            false
        }
    }

    /// Sends a message; resending with the same `client_msg_id` is harmless.
    pub async fn send_message(
        &self,
        conversation: &str,
        client_msg_id: &str,
        sender: &str,
        body: &str,
    ) -> Outcome {
        let request = json!({ "client_msg_id": client_msg_id, "sender": sender, "body": body });
        let path = format!("/messaging/conversations/{conversation}/messages");
        self.request(Method::POST, &path, Some(&request), Retry::Safe)
            .await
    }

    /// Messages of a conversation after `after`.
    pub async fn messages(&self, conversation: &str, after: u64) -> Outcome {
        self.request(
            Method::GET,
            &format!("/messaging/conversations/{conversation}/messages?after={after}"),
            None,
            Retry::Safe,
        )
        .await
    }

    /// Opens an account; a repeat cannot open it twice, but a repeat after a lost answer
    /// may answer 409 `exists` for the account the first attempt opened.
    pub async fn open_account(&self, id: &str, balance: u64) -> Outcome {
        let body = json!({ "id": id, "balance": balance });
        self.request(Method::POST, "/payments/accounts", Some(&body), Retry::Safe)
            .await
    }

    /// Moves money once per `idempotency_key`, however often it is retried.
    pub async fn transfer(
        &self,
        idempotency_key: &str,
        from: &str,
        to: &str,
        amount: u64,
    ) -> Outcome {
        let body =
            json!({ "idempotency_key": idempotency_key, "from": from, "to": to, "amount": amount });
        self.request(
            Method::POST,
            "/payments/transfers",
            Some(&body),
            Retry::Safe,
        )
        .await
    }

    /// The recorded result of a transfer (404 if it never applied); never applies it.
    pub async fn transfer_record(&self, idempotency_key: &str) -> Outcome {
        let path = format!("/payments/transfers/{idempotency_key}");
        self.request(Method::GET, &path, None, Retry::Safe).await
    }

    /// An account's balance.
    pub async fn balance(&self, id: &str) -> Outcome {
        let path = format!("/payments/accounts/{id}");
        self.request(Method::GET, &path, None, Retry::Safe).await
    }

    /// One page of accounts (`limit` at most 1,000) after the account `after`, in id order:
    /// `{"accounts": [{"id", "balance"}], "next": ID or null}`.
    pub async fn accounts(&self, after: Option<&str>, limit: usize) -> Outcome {
        let path = match after {
            Some(after) => format!("/payments/accounts?after={after}&limit={limit}"),
            None => format!("/payments/accounts?limit={limit}"),
        };
        self.request(Method::GET, &path, None, Retry::Safe).await
    }

    /// Registers a user; like [`Client::open_account`], a repeat may answer 409 `exists`.
    pub async fn register(&self, user: &str, password: &str) -> Outcome {
        let body = json!({ "user": user, "password": password });
        self.request(Method::POST, "/login/users", Some(&body), Retry::Safe)
            .await
    }

    /// Logs in. The service does not deduplicate logins: a repeat after a lost answer
    /// makes a second session, which nobody holds and which expires and is swept after
    /// the session lifetime. That is harmless, so a login is declared safe to repeat
    /// (here and in the topology's `retry_safe`).
    pub async fn log_in(&self, user: &str, password: &str) -> Outcome {
        let body = json!({ "user": user, "password": password });
        self.request(Method::POST, "/login/sessions", Some(&body), Retry::Safe)
            .await
    }

    /// Checks a session token.
    pub async fn validate(&self, token: &str) -> Outcome {
        self.request(
            Method::GET,
            &format!("/login/sessions/{token}"),
            None,
            Retry::Safe,
        )
        .await
    }

    /// Follows a conversation's push stream from after `after`, reconnecting with
    /// [`ClientConfig::stream_backoff`] and full jitter to another gateway (picked at
    /// random, so the clients of a lost site spread over the survivors, and not one that
    /// failed since the stream was last open: [`firebreak_model::next_gateway`]) and
    /// resuming with `Last-Event-ID`, so the receiver gets every message once and in
    /// order. Stops when the receiver is dropped or after `max_reconnects` failed
    /// connections in a row.
    pub fn follow(
        self: &std::sync::Arc<Self>,
        conversation: &str,
        after: u64,
        max_reconnects: u32,
    ) -> tokio::sync::mpsc::Receiver<Value> {
        self.follow_observed(
            conversation,
            after,
            max_reconnects,
            std::sync::Arc::new(|_| {}),
        )
    }

    /// [`Client::follow`], telling `observer` of every connection attempt and every
    /// stream opened (for measuring reconnect storms).
    pub fn follow_observed(
        self: &std::sync::Arc<Self>,
        conversation: &str,
        after: u64,
        max_reconnects: u32,
        observer: StreamObserver,
    ) -> tokio::sync::mpsc::Receiver<Value> {
        let (tx, rx) = tokio::sync::mpsc::channel(256);
        let client = self.clone();
        let conversation = conversation.to_string();
        tokio::spawn(async move {
            let gateways = &client.config.gateways;
            let mut last = after;
            let mut failures = 0u32;
            // Streams start at the first (nearest) gateway and move on only when it fails.
            let mut gateway = 0usize;
            let mut reconnects = 0u32;
            // Gateways whose connection ended or failed since a stream was last open.
            let mut avoid = vec![false; gateways.len()];
            // The reconnect window the servers suggested last, if any.
            let mut window = None;
            while failures < max_reconnects && !tx.is_closed() {
                let address = &gateways[gateway];
                let url = client.config.tls.url(
                    address,
                    &format!("/messaging/conversations/{conversation}/stream"),
                );
                if reconnects > 0 {
                    tracing::debug!(reconnects, last, "push stream reconnecting");
                }
                observer(StreamEvent::Attempt { gateway: address });
                reconnects += 1;
                let streaming = client
                    .streams
                    .get(url)
                    .header("last-event-id", last.to_string())
                    .send()
                    .await;
                let mut retry_after = None;
                match streaming {
                    Ok(response) if response.status().is_success() => {
                        observer(StreamEvent::Open { gateway: address });
                        failures = 0;
                        avoid.fill(false);
                        window = header_window(response.headers()).or(window);
                        let read = pump(response, address, &mut last, &tx, &observer).await;
                        window = read.window.or(window);
                        if read.receiver_gone {
                            return;
                        }
                    }
                    Ok(response) => {
                        retry_after = response
                            .headers()
                            .get("retry-after")
                            .and_then(|v| v.to_str().ok())
                            .and_then(parse_retry_after);
                        tracing::debug!(gateway = %address, status = %response.status(), ?retry_after, "push stream refused");
                    }
                    Err(error) => {
                        tracing::debug!(gateway = %address, error = ?error, "push stream connection failed")
                    }
                }
                // Whatever ended this connection, the next one goes to another gateway,
                // and not back to one that failed since the last open stream.
                avoid[gateway] = true;
                gateway = firebreak_model::next_gateway(gateway, &avoid, client.jitter());
                let backoff = client.config.stream_backoff.reconnect(window, failures);
                tokio::time::sleep(backoff.delay(failures, client.jitter(), retry_after)).await;
                failures += 1;
            }
        });
        rx
    }
}

/// A request as the client sends it on every attempt.
struct Request<'a> {
    method: Method,
    path: &'a str,
    body: Option<&'a Value>,
    idempotent: bool,
}

/// What one attempt leaves to the next.
enum Step {
    /// The request's outcome.
    Done(Outcome),
    /// Try the next gateway (after `after`, the server's Retry-After, once the round ends).
    Next { after: Option<Duration> },
    /// The service is shedding load: end the round and back off.
    Shed { after: Option<Duration> },
}

/// What a request's attempts have learnt so far.
#[derive(Default)]
struct Tally {
    /// The last attempt's error, for the final answer.
    last: String,
    /// A lost answer: the request may have been applied.
    maybe_applied: Option<String>,
    /// A server was reached in the current round (its retry costs budget).
    reached: bool,
}

impl Tally {
    /// An attempt whose answer was lost (`what`): a request that is not idempotent is
    /// Unknown at once; an idempotent one goes on.
    fn lost(&mut self, request: &Request<'_>, what: String) -> Step {
        self.reached = true;
        self.last = what.clone();
        self.maybe_applied = Some(what.clone());
        if request.idempotent {
            Step::Next { after: None }
        } else {
            Step::Done(Outcome::Unknown(what))
        }
    }

    /// The outcome when no attempt is left: Unknown if one may have applied it.
    fn give_up(self, reason: String) -> Outcome {
        match self.maybe_applied {
            Some(_) => Outcome::Unknown(reason),
            None => Outcome::Failed(reason),
        }
    }
}

/// What reading one open push stream left behind.
struct Pumped {
    /// The reconnect window the stream's last `retry:` suggested.
    window: Option<Duration>,
    /// The receiver was dropped: stop following.
    receiver_gone: bool,
}

/// Passes the messages of an open push stream to `tx`, each once and in order (those at or
/// below `last` are dropped), until the stream ends, fails or falls silent.
async fn pump(
    response: reqwest::Response,
    gateway: &str,
    last: &mut u64,
    tx: &tokio::sync::mpsc::Sender<Value>,
    observer: &StreamObserver,
) -> Pumped {
    use futures::StreamExt;
    let silence = stream_silence(response.headers());
    let site = response
        .headers()
        .get("x-firebreak-site")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let mut events = std::pin::pin!(crate::push::events(response.bytes_stream(), Some(silence)));
    let mut window = None;
    while let Some(event) = events.next().await {
        let event = match event {
            Ok(event) => event,
            // A connection that breaks is what losing a site looks like: not worth a warning
            // from each of a million clients. A silent or oversized stream is.
            Err(eventsource_stream::EventStreamError::Transport(
                crate::push::StreamFault::Transport(cause),
            )) => {
                tracing::debug!(%gateway, %cause, "push stream connection ended; reconnecting");
                break;
            }
            Err(err) => {
                tracing::warn!(%gateway, cause = %err, "push stream ended; reconnecting");
                break;
            }
        };
        if let Some(retry) = event.retry {
            window = Some(crate::push::window(retry));
        }
        let Ok(message) = serde_json::from_str::<Value>(&event.data) else {
            continue;
        };
        observer(StreamEvent::Received {
            gateway,
            site: site.as_deref(),
            message: &message,
        });
        let seq = message["seq"].as_u64().unwrap_or(0);
        if seq <= *last {
            continue;
        }
        *last = seq;
        if tx.send(message).await.is_err() {
            return Pumped {
                window,
                receiver_gone: true,
            };
        }
    }
    Pumped {
        window,
        receiver_gone: false,
    }
}

/// The reconnect window a push stream's answer suggests
/// ([`firebreak_model::RECONNECT_WINDOW_HEADER`]), within the client's bounds.
fn header_window(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    headers
        .get(firebreak_model::RECONNECT_WINDOW_HEADER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(|ms| crate::push::window(Duration::from_millis(ms)))
}

/// The `error.message` of an error answer, or nothing.
fn error_message(body: &Value) -> &str {
    body["error"]["message"].as_str().unwrap_or("")
}

/// How long a push stream may stay silent before the client takes it as dead: from the
/// keepalive the service advertises ([`MAX_KEEPALIVE`] assumed when it advertises none).
fn stream_silence(headers: &reqwest::header::HeaderMap) -> Duration {
    let keepalive = headers
        .get(firebreak_model::KEEPALIVE_HEADER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(|ms| Duration::from_millis(ms.clamp(100, MAX_KEEPALIVE.as_millis() as u64)))
        .unwrap_or(MAX_KEEPALIVE);
    firebreak_model::stream_silence_limit(keepalive)
}

/// How long a push stream's connection may take. Longer than the kernel's first SYN
/// retransmission (1 s on Linux): when a lost site's clients reconnect at once, some
/// SYNs are lost or answered by the stale end of an earlier connection, and a stream
/// that gave up at 1 s would throw away the retransmission that was about to connect it
/// and wait out a backoff instead. Requests keep their 1 s to fail over fast.
const STREAM_CONNECT_TIMEOUT: Duration = Duration::from_millis(1500);

/// Longest keepalive interval the client believes (and assumes when none is advertised).
const MAX_KEEPALIVE: Duration = Duration::from_secs(1800);

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Arc;

    use axum::http::StatusCode;

    use super::*;

    /// A service that refuses everything with 503 (no Retry-After), counting what it gets.
    async fn overloaded() -> (String, Arc<AtomicU64>) {
        refusing(&[]).await
    }

    /// A service that answers every request 503 with `headers`, counting what it gets.
    async fn refusing(
        headers: &'static [(&'static str, &'static str)],
    ) -> (String, Arc<AtomicU64>) {
        let hits = Arc::new(AtomicU64::new(0));
        let counter = hits.clone();
        let app = axum::Router::new().fallback(move || {
            let counter = counter.clone();
            async move {
                counter.fetch_add(1, Ordering::Relaxed);
                let mut response =
                    axum::response::IntoResponse::into_response(StatusCode::SERVICE_UNAVAILABLE);
                for (name, value) in headers {
                    response
                        .headers_mut()
                        .insert(*name, axum::http::HeaderValue::from_static(value));
                }
                response
            }
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        tokio::spawn(async move { axum::serve(listener, app).await });
        (addr, hits)
    }

    /// A client whose three gateways are all `addr`, retrying at once (1 ms backoff) up to
    /// 30 attempts: only the retry budget can bound what reaches the service.
    fn three_gateways_at(addr: String) -> Client {
        Client::new(ClientConfig {
            tls: firebreak_tls::ClientTls::plaintext_for_debugging(),
            gateways: vec![addr.clone(), addr.clone(), addr],
            timeout: Duration::from_secs(2),
            backoff: Backoff {
                base: Duration::from_millis(1),
                cap: Duration::from_millis(1),
            },
            max_attempts: 30,
            stream_backoff: Backoff::STREAM,
            seed: 1,
        })
    }

    /// A service that sheds load is asked once per round, not once per gateway: its other
    /// sites are as busy, and going round them at once would triple the overload. Under
    /// sustained shedding a request costs its first attempt plus the retry budget's share
    /// (about 2,000 for these 1,000 requests; going round the gateways made it 6,000).
    #[tokio::test]
    async fn a_shedding_service_ends_the_round() {
        let (addr, hits) = refusing(&[("x-firebreak-shed", "1")]).await;
        let client = three_gateways_at(addr);
        let requests = 1_000u64;
        for _ in 0..requests {
            let outcome = client.request(Method::GET, "/x", None, Retry::Safe).await;
            assert!(matches!(outcome, Outcome::Failed(_)), "{outcome:?}");
        }
        let bound = (requests as f64 + RETRY_BURST + RETRY_RATIO * requests as f64) as u64;
        let got = hits.load(Ordering::Relaxed);
        assert!(
            got <= bound,
            "{got} requests reached a shedding service; at most {bound}"
        );
    }

    /// An overloaded service gets at most one round over the gateways per request plus
    /// the retry budget's rounds, however many attempts each request may make: without the
    /// budget, 200 requests of 10 rounds over 3 gateways would be 6,000 requests.
    #[tokio::test]
    async fn retries_to_an_overloaded_service_are_bounded_by_the_budget() {
        let (addr, hits) = overloaded().await;
        let client = three_gateways_at(addr);
        let requests = 200u64;
        for _ in 0..requests {
            let outcome = client.request(Method::GET, "/x", None, Retry::Safe).await;
            assert!(matches!(outcome, Outcome::Failed(_)), "{outcome:?}");
        }
        let rounds = requests as f64 + RETRY_BURST + RETRY_RATIO * requests as f64;
        let bound = (3.0 * rounds) as u64;
        let got = hits.load(Ordering::Relaxed);
        assert!(
            got <= bound,
            "{got} requests reached the service; the budget allows {bound}"
        );
        assert!(
            got >= 3 * requests,
            "every request tries every gateway once: {got}"
        );
    }

    /// A 200 whose body is cut off (a proxy closing mid-answer) is a lost answer: a write
    /// without an idempotency key is unknown, not a success with an empty body.
    #[tokio::test]
    async fn a_success_with_a_cut_body_is_unknown() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                let mut request = [0u8; 4096];
                let _ = socket.read(&mut request).await;
                let _ = socket
                    .write_all(
                        b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n{\"seq\":",
                    )
                    .await;
                // Dropped here: the body ends 93 bytes short.
            }
        });
        let client = Client::new(ClientConfig {
            tls: firebreak_tls::ClientTls::plaintext_for_debugging(),
            gateways: vec![addr],
            timeout: Duration::from_secs(2),
            backoff: Backoff::default(),
            stream_backoff: Backoff::STREAM,
            max_attempts: 1,
            seed: 1,
        });
        let outcome = client
            .request(Method::POST, "/x", Some(&json!({})), Retry::Once)
            .await;
        match outcome {
            Outcome::Unknown(reason) => assert!(reason.contains("answer was cut"), "{reason}"),
            other => panic!("a cut answer must be unknown: {other:?}"),
        }
    }

    /// A stream that goes silent without a reset (a partition drops packets; TCP would
    /// wait many minutes) is dropped after two advertised keepalives, and the client
    /// resumes after the last message it got. Without the silence limit this test hangs
    /// on the first stream and fails at its deadline.
    #[tokio::test]
    async fn a_silent_stream_is_left_after_its_keepalive() {
        use axum::response::sse::{Event, Sse};
        use futures::StreamExt;
        let connections = Arc::new(AtomicU64::new(0));
        let counter = connections.clone();
        let app = axum::Router::new().fallback(move |headers: axum::http::HeaderMap| {
            let counter = counter.clone();
            async move {
                counter.fetch_add(1, Ordering::Relaxed);
                let after: u64 = headers
                    .get("last-event-id")
                    .and_then(|v| v.to_str().ok()?.parse().ok())
                    .unwrap_or(0);
                let next = after + 1;
                // One message, then silence with the connection held open.
                let events = futures::stream::once(async move {
                    Ok::<_, std::convert::Infallible>(
                        Event::default()
                            .id(next.to_string())
                            .data(json!({ "seq": next }).to_string()),
                    )
                })
                .chain(futures::stream::pending());
                (
                    [(firebreak_model::KEEPALIVE_HEADER, "200")],
                    Sse::new(events),
                )
            }
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        tokio::spawn(async move { axum::serve(listener, app).await });
        let client = Arc::new(Client::new(ClientConfig {
            tls: firebreak_tls::ClientTls::plaintext_for_debugging(),
            gateways: vec![addr],
            timeout: Duration::from_secs(2),
            backoff: Backoff::default(),
            stream_backoff: Backoff {
                base: Duration::from_millis(10),
                cap: Duration::from_millis(10),
            },
            max_attempts: 1,
            seed: 1,
        }));
        let mut pushed = client.follow("c", 0, 5);
        for want in 1..=3u64 {
            let message = tokio::time::timeout(Duration::from_secs(10), pushed.recv())
                .await
                .unwrap_or_else(|_| panic!("message {want} not pushed: the silent stream was kept"))
                .expect("the stream ended");
            assert_eq!(
                message["seq"], want,
                "resumed at the wrong place: {message}"
            );
        }
        assert_eq!(
            connections.load(Ordering::Relaxed),
            3,
            "one connection per message"
        );
    }

    /// A stream whose gateway fails does not go back to a gateway that already failed
    /// while one it has not tried is left: with two dead gateways and one live one, it
    /// reaches the live one within three attempts, whatever the seed. (Picking any other
    /// gateway at random, a quarter of the clients went back to the first dead one.)
    #[tokio::test]
    async fn a_reconnect_does_not_go_back_to_a_failed_gateway() {
        use axum::response::sse::{Event, Sse};
        let dead = || {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            listener.local_addr().unwrap().to_string() // closed when dropped: refused
        };
        let app = axum::Router::new().fallback(|| async {
            let event = Event::default()
                .id("1")
                .data(json!({ "seq": 1 }).to_string());
            let events = futures::stream::iter([Ok::<_, std::convert::Infallible>(event)]);
            Sse::new(futures::StreamExt::chain(
                events,
                futures::stream::pending(),
            ))
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let live = listener.local_addr().unwrap().to_string();
        tokio::spawn(async move { axum::serve(listener, app).await });
        let gateways = vec![dead(), dead(), live.clone()];
        for seed in 1..=20 {
            let client = Arc::new(Client::new(ClientConfig {
                tls: firebreak_tls::ClientTls::plaintext_for_debugging(),
                gateways: gateways.clone(),
                timeout: Duration::from_secs(2),
                backoff: Backoff::default(),
                stream_backoff: Backoff {
                    base: Duration::from_millis(1),
                    cap: Duration::from_millis(1),
                },
                max_attempts: 1,
                seed,
            }));
            let attempts = Arc::new(std::sync::Mutex::new(Vec::new()));
            let seen = attempts.clone();
            let observer: StreamObserver = Arc::new(move |event| {
                if let StreamEvent::Attempt { gateway } = event {
                    seen.lock().unwrap().push(gateway.to_string());
                }
            });
            let mut pushed = client.follow_observed("c", 0, 10, observer);
            tokio::time::timeout(Duration::from_secs(5), pushed.recv())
                .await
                .unwrap_or_else(|_| panic!("seed {seed}: no message within 5 s"))
                .expect("the stream ended");
            let attempts = attempts.lock().unwrap().clone();
            assert!(
                attempts.len() <= 3 && attempts.last() == Some(&live),
                "seed {seed}: went back to a failed gateway: {attempts:?} (live is {live})"
            );
        }
    }
}
