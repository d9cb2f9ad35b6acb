//! The messaging service: conversations with per-conversation sequence numbers, resends
//! made harmless by `client_msg_id`, and push streams (server-sent events) that resume
//! after any reconnect, to any site, with nothing lost and nothing twice.
//!
//! ```text
//!   POST /messaging/conversations/{c}/messages {client_msg_id, sender, body}
//!        read seq/{c} and ids/{c}/{client_msg_id}; known id ─► its first seq again
//!        else one txn: seq/{c} unchanged and id absent ─► seq = n+1, msg/{c}/{n+1}, id
//!   GET  /messaging/conversations/{c}/messages?after=N          (catch up, paged)
//!   GET  /messaging/conversations/{c}/stream   (Last-Event-ID: N, or ?after=N)
//!        backlog after N from the log, then what the instance's one shared watch hears
//!        (re-reading the log on any gap); every event has `id: seq`, so a client that
//!        reconnects resumes exactly there
//! ```
//!
//! Push, not polling: a stream costs one idle connection and a keepalive comment every
//! `keepalive` (several minutes by default), which the stream's answer advertises in
//! [`firebreak_model::KEEPALIVE_HEADER`] so that clients know how long a silence means a
//! dead stream. Open streams are bounded; beyond the bound the service answers 503 with
//! Retry-After.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use firebreak_model::kv::{Compare, CompareOp, CompareTarget, Txn, TxnOp};
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};

use crate::http::{check_id, shed, Failure};
use crate::state::{StateClient, StateError};

const SEQ: &str = "messaging/seq/";
const MSG: &str = "messaging/msg/";
const IDS: &str = "messaging/ids/";
/// Longest message body.
pub const MAX_BODY_BYTES: usize = 16 * 1024;
/// Compare-and-swap attempts before a send gives up under contention (503).
const MAX_CAS_ATTEMPTS: usize = 32;
/// Messages read per page.
const PAGE: usize = 500;
/// Events buffered per stream before the stream task waits for the client.
const STREAM_BUFFER: usize = 64;
/// How long one watch call waits for news before asking again.
const WATCH_WAIT: Duration = Duration::from_secs(25);
/// News buffered per stream in the hub; a stream further behind re-reads the log.
const HUB_BUFFER: usize = 256;
/// Silence after which a stream reads the log again anyway.
const IDLE_REREAD: Duration = Duration::from_secs(60);
/// Pause before the hub retries an unreachable state group.
const HUB_RETRY: Duration = Duration::from_millis(500);

/// The writes a repeat cannot apply twice, for the topology's `retry_safe`: a message is stored once per
/// `client_msg_id`.
pub const RETRY_SAFE: &[&str] = &["POST /messaging/conversations/*/messages"];

/// How the service runs.
#[derive(Debug, Clone)]
pub struct Config {
    pub nodes: Vec<String>,
    /// TLS to the nodes: the cluster CA and this service's certificate.
    pub state_tls: firebreak_tls::ClientTls,
    /// TLS this service serves its clients (the gateways) with; `None`: plain HTTP.
    pub server_tls: crate::http::ServerTls,
    pub max_concurrent: usize,
    /// Open push streams at once.
    pub max_streams: usize,
    /// Interval of the keepalive comment on idle streams.
    pub keepalive: Duration,
    /// The window over which the clients of a stream that ends should spread their
    /// reconnects, sized to the fleet (sent as [`firebreak_model::RECONNECT_WINDOW_HEADER`]);
    /// `None` leaves it to each client's backoff.
    pub reconnect_window: Option<Duration>,
    pub state_timeout: Duration,
}

struct Service {
    state: StateClient,
    hub: Arc<Hub>,
    permits: Semaphore,
    streams: Arc<Semaphore>,
    keepalive: Duration,
    reconnect_window: Option<Duration>,
    /// One send per conversation at a time in this instance (see `stripes`).
    stripes: crate::stripes::Stripes,
}

/// A stored message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    pub seq: u64,
    pub client_msg_id: String,
    pub sender: String,
    pub body: String,
    pub at_ms: u64,
}

/// The service's router.
pub fn router(config: Config) -> Router {
    let state = StateClient::new(config.nodes, config.state_tls, config.state_timeout);
    let hub = Arc::new(Hub::default());
    tokio::spawn(run_hub(state.clone(), Arc::downgrade(&hub)));
    let service = Arc::new(Service {
        state,
        hub,
        permits: Semaphore::new(config.max_concurrent),
        streams: Arc::new(Semaphore::new(config.max_streams)),
        keepalive: config.keepalive,
        reconnect_window: config.reconnect_window,
        stripes: Default::default(),
    });
    Router::new()
        .route(
            "/messaging/conversations/{conversation}/messages",
            post(send).get(read),
        )
        .route(
            "/messaging/conversations/{conversation}/stream",
            get(stream),
        )
        .route("/health", get(|| async { Json(json!({ "ok": true })) }))
        .layer(axum::middleware::from_fn(crate::http::deadline))
        .with_state(service)
}

/// Serves on `listen` until the returned task is aborted; returns the bound address.
pub async fn spawn(
    listen: SocketAddr,
    config: Config,
) -> std::io::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let tls = config.server_tls.clone();
    crate::http::serve(listen, router(config), tls, "messaging").await
}

fn msg_key(conversation: &str, seq: u64) -> String {
    format!("{MSG}{conversation}/{seq:020}")
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SendRequest {
    client_msg_id: String,
    sender: String,
    body: String,
}

async fn send(
    State(service): State<Arc<Service>>,
    Path(conversation): Path<String>,
    Json(req): Json<SendRequest>,
) -> Result<Response, Failure> {
    let _permit = shed(&service.permits)?;
    check_id("conversation", &conversation)?;
    check_id("client_msg_id", &req.client_msg_id)?;
    check_id("sender", &req.sender)?;
    if req.body.len() > MAX_BODY_BYTES {
        return Err(Failure(
            StatusCode::BAD_REQUEST,
            "invalid_input",
            format!("body is over {MAX_BODY_BYTES} bytes"),
        ));
    }
    let seq_key = format!("{SEQ}{conversation}");
    let id_key = format!("{IDS}{conversation}/{}", req.client_msg_id);
    let _turn = service.stripes.lock(&[&conversation]).await;
    for _ in 0..MAX_CAS_ATTEMPTS {
        let entries = service
            .state
            .get_many(&[seq_key.clone(), id_key.clone()])
            .await?;
        if let Some(known) = &entries[1] {
            return Ok(Json(
                json!({ "seq": known.value.parse::<u64>().unwrap_or(0), "duplicate": true }),
            )
            .into_response());
        }
        let (last, revision) = entries[0].as_ref().map_or((0, 0), |e| {
            (e.value.parse::<u64>().unwrap_or(0), e.mod_revision)
        });
        let seq = last + 1;
        let message = Message {
            seq,
            client_msg_id: req.client_msg_id.clone(),
            sender: req.sender.clone(),
            body: req.body.clone(),
            at_ms: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64),
        };
        let txn = Txn {
            compare: vec![
                Compare {
                    key: seq_key.clone(),
                    op: CompareOp::Eq,
                    target: CompareTarget::ModRevision(revision),
                },
                Compare {
                    key: id_key.clone(),
                    op: CompareOp::Eq,
                    target: CompareTarget::ModRevision(0),
                },
            ],
            success: vec![
                TxnOp::Put {
                    key: seq_key.clone(),
                    value: seq.to_string(),
                },
                TxnOp::Put {
                    key: msg_key(&conversation, seq),
                    value: serde_json::to_string(&message).expect("serializes"),
                },
                TxnOp::Put {
                    key: id_key.clone(),
                    value: seq.to_string(),
                },
            ],
            failure: vec![],
        };
        if service.state.txn(&txn).await?.0 {
            return Ok((
                StatusCode::CREATED,
                Json(json!({ "seq": seq, "duplicate": false })),
            )
                .into_response());
        }
    }
    Err(Failure(
        StatusCode::SERVICE_UNAVAILABLE,
        "contention",
        format!("gave up after {MAX_CAS_ATTEMPTS} conflicting attempts"),
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct After {
    #[serde(default)]
    after: u64,
}

/// Messages after `seq`, in order, one page. Streams read their node's replica (`stale`):
/// a message it has not applied yet reaches the stream through the hub, and any gap makes
/// the stream read again, so nothing is lost, and a reconnect storm costs the leader
/// nothing.
async fn page(
    state: &StateClient,
    conversation: &str,
    after: u64,
    stale: bool,
) -> Result<(Vec<Message>, u64), StateError> {
    let prefix = format!("{MSG}{conversation}/");
    let start = msg_key(conversation, after);
    let (entries, revision) = if stale {
        state.range_stale(&prefix, Some(&start), PAGE).await?
    } else {
        state.range(&prefix, Some(&start), PAGE).await?
    };
    let messages = entries
        .into_iter()
        .filter_map(|(_, e)| serde_json::from_str(&e.value).ok())
        .collect();
    Ok((messages, revision))
}

async fn read(
    State(service): State<Arc<Service>>,
    Path(conversation): Path<String>,
    Query(q): Query<After>,
) -> Result<Response, Failure> {
    let _permit = shed(&service.permits)?;
    check_id("conversation", &conversation)?;
    let (messages, _) = page(&service.state, &conversation, q.after, false).await?;
    Ok(Json(json!({ "messages": messages })).into_response())
}

async fn stream(
    State(service): State<Arc<Service>>,
    Path(conversation): Path<String>,
    Query(q): Query<After>,
    headers: HeaderMap,
) -> Result<Response, Failure> {
    check_id("conversation", &conversation)?;
    let permit = service
        .streams
        .clone()
        .try_acquire_owned()
        .map_err(|_| Failure::overloaded("open streams"))?;
    // Last-Event-ID (set by every SSE client on reconnect) wins over ?after=.
    let after = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(q.after);
    let (tx, rx) = mpsc::channel(STREAM_BUFFER);
    tokio::spawn(follow(
        service.hub.clone(),
        service.state.clone(),
        conversation,
        after,
        tx,
        permit,
    ));
    let events = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|e| (Ok::<_, Infallible>(e), rx))
    });
    let events: futures::stream::BoxStream<'static, Result<Event, Infallible>> =
        match crate::sabotage::push_sabotage() {
            Some(how) => Box::pin(crate::sabotage::sabotage(events, how)),
            None => Box::pin(events),
        };
    let keepalive_ms = HeaderValue::from(service.keepalive.as_millis() as u64);
    let mut response = (
        [(firebreak_model::KEEPALIVE_HEADER, keepalive_ms)],
        Sse::new(events).keep_alive(KeepAlive::new().interval(service.keepalive)),
    )
        .into_response();
    if let Some(window) = service.reconnect_window {
        response.headers_mut().insert(
            firebreak_model::RECONNECT_WINDOW_HEADER,
            HeaderValue::from(window.as_millis() as u64),
        );
    }
    Ok(response)
}

/// What the hub tells a stream.
#[derive(Debug, Clone)]
enum News {
    /// A message committed to the stream's conversation.
    Message(Message),
    /// The hub may have missed changes: read the log again.
    Resync,
}

/// One watch per service instance, fanned out to every open stream by conversation, so
/// that ten thousand idle streams cost one long-poll on the node, not ten thousand.
#[derive(Default)]
struct Hub {
    subscribers: std::sync::Mutex<std::collections::HashMap<String, Vec<mpsc::Sender<News>>>>,
}

impl Hub {
    fn subscribe(&self, conversation: &str) -> mpsc::Receiver<News> {
        let (tx, rx) = mpsc::channel(HUB_BUFFER);
        self.subscribers
            .lock()
            .expect("hub lock")
            .entry(conversation.to_string())
            .or_default()
            .push(tx);
        rx
    }

    /// Delivers news to a conversation's streams; a stream too far behind is dropped from
    /// the hub (its receiver closes) and re-reads the log when it notices.
    fn publish(&self, conversation: &str, news: &News) {
        let mut subscribers = self.subscribers.lock().expect("hub lock");
        if let Some(list) = subscribers.get_mut(conversation) {
            list.retain(|tx| tx.try_send(news.clone()).is_ok());
        }
    }

    fn resync_all(&self) {
        let mut subscribers = self.subscribers.lock().expect("hub lock");
        for list in subscribers.values_mut() {
            list.retain(|tx| tx.try_send(News::Resync).is_ok());
        }
    }

    /// Forgets streams that ended.
    fn sweep(&self) {
        let mut subscribers = self.subscribers.lock().expect("hub lock");
        subscribers.retain(|_, list| {
            list.retain(|tx| !tx.is_closed());
            !list.is_empty()
        });
    }
}

/// The hub's one watch on every conversation, for as long as the service lives.
async fn run_hub(state: StateClient, hub: std::sync::Weak<Hub>) {
    let mut from: Option<u64> = None;
    loop {
        let Some(strong) = hub.upgrade() else { return };
        let start = match from {
            Some(revision) => revision,
            // Start from the revision of the replica the hub watches (the same one streams
            // read): every message that replica applies later reaches the hub.
            None => match state.range_stale(MSG, None, 1).await {
                Ok((_, revision)) => {
                    // Whatever happened before this revision, streams read from the log.
                    strong.resync_all();
                    revision + 1
                }
                Err(err) => {
                    tracing::debug!(cause = %err, "messaging hub cannot read the state group");
                    drop(strong);
                    tokio::time::sleep(HUB_RETRY).await;
                    continue;
                }
            },
        };
        drop(strong);
        let watched = state.watch(MSG, start, WATCH_WAIT).await;
        let Some(strong) = hub.upgrade() else { return };
        match watched {
            Ok(Some((events, next))) => {
                for event in events {
                    let Some(entry) = event.entry else { continue };
                    let Some(conversation) = event
                        .key
                        .strip_prefix(MSG)
                        .and_then(|k| k.split('/').next())
                    else {
                        continue;
                    };
                    if let Ok(message) = serde_json::from_str::<Message>(&entry.value) {
                        strong.publish(conversation, &News::Message(message));
                    }
                }
                strong.sweep();
                from = Some(next);
            }
            Ok(None) => from = None,
            Err(err) => {
                tracing::debug!(cause = %err, "messaging hub watch failed");
                from = None;
                tokio::time::sleep(HUB_RETRY).await;
            }
        }
    }
}

/// Feeds one stream: the backlog after `after`, then every new message the hub hears of,
/// re-reading the log on any doubt (a gap, a resync, a drop), until the client goes away or
/// the state group cannot be read (the client then reconnects, possibly to another site,
/// and resumes from its Last-Event-ID).
async fn follow(
    hub: Arc<Hub>,
    state: StateClient,
    conversation: String,
    mut after: u64,
    tx: mpsc::Sender<Event>,
    _permit: OwnedSemaphorePermit,
) {
    'resubscribe: loop {
        // Subscribe before reading: whatever commits after the read reaches the hub.
        let mut news = hub.subscribe(&conversation);
        loop {
            let messages = match page(&state, &conversation, after, true).await {
                Ok((messages, _)) => messages,
                Err(err) => {
                    tracing::info!(cause = %err, conversation, "stream ends: state group unreachable");
                    return;
                }
            };
            let full_page = messages.len() == PAGE;
            for message in messages {
                if !deliver(&tx, &mut after, message).await {
                    return;
                }
            }
            if !full_page {
                break;
            }
        }
        loop {
            let item = tokio::select! {
                item = news.recv() => item,
                _ = tx.closed() => return,
                // A safety net: after a long silence, look at the log once more, in case
                // the hub's watch and this stream's read met different replicas.
                _ = tokio::time::sleep(IDLE_REREAD) => Some(News::Resync),
            };
            match item {
                Some(News::Message(message)) if message.seq <= after + 1 => {
                    if !deliver(&tx, &mut after, message).await {
                        return;
                    }
                }
                // A gap, a resync, or the hub dropped us: read the log again.
                Some(_) | None => continue 'resubscribe,
            }
        }
    }
}

/// Sends a message newer than `after`; false when the client is gone.
async fn deliver(tx: &mpsc::Sender<Event>, after: &mut u64, message: Message) -> bool {
    if message.seq <= *after {
        return true;
    }
    *after = message.seq;
    let event = Event::default()
        .id(message.seq.to_string())
        .event("message")
        .json_data(&message)
        .expect("serializes");
    tx.send(event).await.is_ok()
}
