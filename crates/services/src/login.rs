//! The login service: accounts with salted slow password hashes (argon2), sessions with an
//! expiry, kept in the state group so that a session made in one site is valid in all.
//!
//! ```text
//!   POST /login/users {user, password}        register (argon2id hash, random salt)
//!   POST /login/sessions {user, password}     log in ─► {token, expires_at_ms}
//!   GET  /login/sessions/{token}              validate ─► {user, expires_at_ms} or 401
//!   DELETE /login/sessions/{token}            log out
//! ```
//!
//! Hashing is deliberately slow and CPU-bound: it runs on blocking threads, at most
//! `max_hashing` at once; a request waits for its turn at most half its caller's deadline
//! (at most [`MAX_HASH_QUEUE_WAIT`]; [`HASH_QUEUE_WAIT`] without one), then is shed. Those
//! threads run at niceness `hashing_nice`: with a spare core that changes nothing, but on a
//! host where cores are contended a hash yields to cheap work (this service's request
//! handling, and the other services and nodes sharing the host), so a surge of logins
//! cannot take the cores from operations that cost a thousandth as much.
//! Beyond that, and beyond `max_concurrent` requests, the service sheds load with 503 and
//! Retry-After.
//!
//! Expired sessions are refused at once and swept out of the state group every
//! `sweep_interval`: each round reads at most [`SWEEP_PAGES`] pages of [`SWEEP_PAGE`]
//! sessions from the node's replica, from where the last round stopped, and deletes the
//! expired ones [`SWEEP_BATCH`] to a transaction, so state and snapshots stay flat however
//! many sessions are made, and one round's load on the state group is bounded. Every
//! instance sweeps; two deleting the same key is harmless.

use std::net::SocketAddr;
use std::sync::{Arc, Weak};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use firebreak_model::kv::{Compare, CompareOp, CompareTarget, Txn, TxnOp};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::sync::Semaphore;

use crate::http::{shed, Failure};
use crate::state::{StateClient, StateError};

const USERS: &str = "login/users/";
const SESSIONS: &str = "login/sessions/";
/// Longest user name.
const MAX_USER_BYTES: usize = 64;
/// Password length bounds (bytes).
const MIN_PASSWORD_BYTES: usize = 8;
const MAX_PASSWORD_BYTES: usize = 256;

/// The writes a repeat cannot apply twice, for the topology's `retry_safe`: a user registers once (a repeat
/// answers 409 `exists`) and logging out twice is logging out. A repeated login is not
/// deduplicated: it makes a second session that nobody holds, which expires and is swept
/// after `session_ttl`; harmless, so it is declared safe.
pub const RETRY_SAFE: &[&str] = &[
    "POST /login/users",
    "POST /login/sessions",
    "DELETE /login/sessions/*",
];

/// How the service runs.
#[derive(Debug, Clone)]
pub struct Config {
    pub nodes: Vec<String>,
    /// TLS to the nodes: the cluster CA and this service's certificate.
    pub state_tls: firebreak_tls::ClientTls,
    /// TLS this service serves its clients (the gateways) with; `None`: plain HTTP.
    pub server_tls: crate::http::ServerTls,
    pub max_concurrent: usize,
    /// Password hashes computed at once.
    pub max_hashing: usize,
    /// Niceness of the hashing threads, 0 (as the rest) to 19 (only spare cycles).
    pub hashing_nice: i32,
    pub session_ttl: Duration,
    /// How often expired sessions are swept.
    pub sweep_interval: Duration,
    pub state_timeout: Duration,
}

/// Sessions read per page when sweeping.
pub const SWEEP_PAGE: usize = 256;
/// Most pages one sweep round reads; the next round carries on from there.
pub const SWEEP_PAGES: usize = 16;
/// Expired sessions deleted per transaction (at most the state group's ops per txn).
pub const SWEEP_BATCH: usize = firebreak_model::kv::MAX_TXN_OPS;

struct Service {
    state: StateClient,
    permits: Semaphore,
    hashing: Arc<Semaphore>,
    hashing_nice: i32,
    session_ttl: Duration,
}

/// The stored user record.
#[derive(Serialize, Deserialize)]
struct UserRecord {
    /// PHC string: algorithm, parameters, salt and hash.
    hash: String,
}

/// The stored session record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Session {
    pub user: String,
    pub expires_at_ms: u64,
}

/// The service's router.
pub fn router(config: Config) -> Router {
    let service = Arc::new(Service {
        state: StateClient::new(config.nodes, config.state_tls, config.state_timeout),
        permits: Semaphore::new(config.max_concurrent),
        hashing: Arc::new(Semaphore::new(config.max_hashing)),
        hashing_nice: config.hashing_nice,
        session_ttl: config.session_ttl,
    });
    tokio::spawn(sweep(Arc::downgrade(&service), config.sweep_interval));
    Router::new()
        .route("/login/users", post(register))
        .route("/login/sessions", post(log_in))
        .route("/login/sessions/{token}", get(validate).delete(log_out))
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
    crate::http::serve(listen, router(config), tls, "login").await
}

/// Sweeps expired sessions every `interval` until the service is dropped.
async fn sweep(service: Weak<Service>, interval: Duration) {
    let mut cursor = None;
    loop {
        tokio::time::sleep(interval).await;
        let Some(service) = service.upgrade() else {
            return;
        };
        match sweep_round(&service.state, &mut cursor, now_ms()).await {
            Ok(0) => {}
            Ok(swept) => tracing::info!(swept, "expired sessions swept"),
            Err(err) => {
                tracing::warn!(cause = %err, "session sweep failed; the next round retries")
            }
        }
    }
}

/// One bounded round from `cursor` (the last key read; `None`: from the start); returns
/// how many expired sessions it deleted.
async fn sweep_round(
    state: &StateClient,
    cursor: &mut Option<String>,
    now_ms: u64,
) -> Result<usize, StateError> {
    let mut swept = 0;
    for _ in 0..SWEEP_PAGES {
        let (page, _) = state
            .range_stale(SESSIONS, cursor.as_deref(), SWEEP_PAGE)
            .await?;
        let full = page.len() == SWEEP_PAGE;
        *cursor = page.last().filter(|_| full).map(|(key, _)| key.clone());
        let expired: Vec<String> = page
            .into_iter()
            .filter(|(_, entry)| {
                serde_json::from_str::<Session>(&entry.value)
                    .is_ok_and(|s| s.expires_at_ms <= now_ms)
            })
            .map(|(key, _)| key)
            .collect();
        for batch in expired.chunks(SWEEP_BATCH) {
            let txn = Txn {
                success: batch
                    .iter()
                    .map(|key| TxnOp::Delete { key: key.clone() })
                    .collect(),
                ..Txn::default()
            };
            state.txn(&txn).await?;
            swept += batch.len();
        }
        if cursor.is_none() {
            break;
        }
    }
    Ok(swept)
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn check_user(user: &str) -> Result<(), Failure> {
    let ok = !user.is_empty()
        && user.len() <= MAX_USER_BYTES
        && user
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.');
    ok.then_some(()).ok_or_else(|| {
        Failure(
            StatusCode::BAD_REQUEST,
            "invalid_input",
            format!("user must be 1 to {MAX_USER_BYTES} of a-z, A-Z, 0-9, '.', '-', '_'"),
        )
    })
}

fn check_password(password: &str) -> Result<(), Failure> {
    if (MIN_PASSWORD_BYTES..=MAX_PASSWORD_BYTES).contains(&password.len()) {
        Ok(())
    } else {
        Err(Failure(
            StatusCode::BAD_REQUEST,
            "invalid_input",
            format!("password must be {MIN_PASSWORD_BYTES} to {MAX_PASSWORD_BYTES} bytes"),
        ))
    }
}

/// How long a request without a deadline waits for a hashing slot before it is shed:
/// long enough to smooth a burst of a few checks (each takes tens of milliseconds). The
/// queue itself is bounded by `max_concurrent`.
const HASH_QUEUE_WAIT: Duration = Duration::from_millis(200);
/// Longest wait for a hashing slot, for a caller that allows it: half its deadline, at
/// most this. A shed answer costs the client its `Retry-After` (1 s) and a second trip, so
/// on a contended host, where a hash at niceness 5 takes hundreds of milliseconds, a fixed
/// 200 ms turned a burst of three logins at 8 a second into a 1.2-2 s login (seen in CI:
/// `pangyo-fire` failed its steady state on login's p99, 1,694 ms). Half the deadline
/// leaves the other half for the hash and the session's write.
const MAX_HASH_QUEUE_WAIT: Duration = Duration::from_secs(1);

/// How long this request may wait for a hashing slot (see [`MAX_HASH_QUEUE_WAIT`]).
fn queue_wait(headers: &axum::http::HeaderMap) -> Duration {
    headers
        .get(firebreak_model::DEADLINE_HEADER)
        .and_then(|v| v.to_str().ok())
        .and_then(firebreak_model::parse_deadline)
        .map_or(HASH_QUEUE_WAIT, |budget| {
            (budget / 2).clamp(HASH_QUEUE_WAIT, MAX_HASH_QUEUE_WAIT)
        })
}

/// Runs a slow hash job on a blocking thread, within the hashing bound, after waiting at
/// most `wait` for a slot (else shed: 503, nothing done).
async fn hashing<T: Send + 'static>(
    service: &Service,
    wait: Duration,
    job: impl FnOnce() -> T + Send + 'static,
) -> Result<T, Failure> {
    let permit = tokio::time::timeout(wait, service.hashing.clone().acquire_owned())
        .await
        .ok()
        .and_then(Result::ok)
        .ok_or_else(|| Failure::overloaded("password checks"))?;
    let nice = service.hashing_nice;
    tokio::task::spawn_blocking(move || {
        let _permit = permit;
        lower_priority(nice);
        job()
    })
    .await
    .map_err(|e| Failure(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()))
}

/// The niceness hashing runs at by default: under contention a hash gets about a third of
/// the share of a thread at 0 (the kernel's weights fall by 1.25 per step).
pub const DEFAULT_HASHING_NICE: i32 = 5;

thread_local! {
    /// The niceness this blocking thread was set to, if any.
    static NICE: std::cell::Cell<Option<i32>> = const { std::cell::Cell::new(None) };
}

/// Sets the calling thread's niceness to `nice`, once per thread (on Linux a thread's
/// niceness is its own). A thread of the blocking pool keeps it for later jobs; in this
/// service hashing is what that pool runs. A failure is logged, and hashing goes on at
/// the niceness it has.
fn lower_priority(nice: i32) {
    if nice == 0 || NICE.with(|n| n.get()) == Some(nice) {
        return;
    }
    // SAFETY: setpriority reads only its arguments; `who` 0 is the calling thread.
    let rc = unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, nice) };
    if rc != 0 {
        let err = std::io::Error::last_os_error();
        tracing::warn!(nice, %err, "could not lower the hashing thread's priority");
    }
    NICE.with(|n| n.set(Some(nice)));
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Credentials {
    user: String,
    password: String,
}

async fn register(
    State(service): State<Arc<Service>>,
    headers: axum::http::HeaderMap,
    Json(c): Json<Credentials>,
) -> Result<Response, Failure> {
    let _permit = shed(&service.permits)?;
    check_user(&c.user)?;
    check_password(&c.password)?;
    let hash = hashing(&service, queue_wait(&headers), move || {
        let mut salt = [0u8; 16];
        rand::thread_rng().fill_bytes(&mut salt);
        let salt = SaltString::encode_b64(&salt).expect("16 bytes is a valid salt");
        Argon2::default()
            .hash_password(c.password.as_bytes(), &salt)
            .map(|h| h.to_string())
    })
    .await?
    .map_err(|e| Failure(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()))?;
    let key = format!("{USERS}{}", c.user);
    let record = serde_json::to_string(&UserRecord { hash }).expect("serializes");
    let txn = Txn {
        compare: vec![Compare {
            key: key.clone(),
            op: CompareOp::Eq,
            target: CompareTarget::ModRevision(0),
        }],
        success: vec![TxnOp::Put { key, value: record }],
        failure: vec![],
    };
    let (created, _) = service.state.txn(&txn).await?;
    if !created {
        return Err(Failure(
            StatusCode::CONFLICT,
            "exists",
            format!("user {} already exists", c.user),
        ));
    }
    Ok((StatusCode::CREATED, Json(json!({ "user": c.user }))).into_response())
}

async fn log_in(
    State(service): State<Arc<Service>>,
    headers: axum::http::HeaderMap,
    Json(c): Json<Credentials>,
) -> Result<Response, Failure> {
    let _permit = shed(&service.permits)?;
    check_user(&c.user)?;
    let denied = || {
        Failure(
            StatusCode::UNAUTHORIZED,
            "denied",
            "unknown user or wrong password".into(),
        )
    };
    let entry = service
        .state
        .get_many(&[format!("{USERS}{}", c.user)])
        .await?
        .remove(0)
        .ok_or_else(denied)?;
    let record: UserRecord = serde_json::from_str(&entry.value)
        .map_err(|e| Failure(StatusCode::INTERNAL_SERVER_ERROR, "corrupt", e.to_string()))?;
    let password = c.password;
    let verified = hashing(&service, queue_wait(&headers), move || {
        PasswordHash::new(&record.hash).is_ok_and(|h| {
            Argon2::default()
                .verify_password(password.as_bytes(), &h)
                .is_ok()
        })
    })
    .await?;
    if !verified {
        return Err(denied());
    }
    let mut bytes = [0u8; 24];
    rand::thread_rng().fill_bytes(&mut bytes);
    let token: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    let session = Session {
        user: c.user,
        expires_at_ms: now_ms() + service.session_ttl.as_millis() as u64,
    };
    let txn = Txn {
        success: vec![TxnOp::Put {
            key: format!("{SESSIONS}{token}"),
            value: serde_json::to_string(&session).expect("serializes"),
        }],
        ..Txn::default()
    };
    service.state.txn(&txn).await?;
    Ok((
        StatusCode::CREATED,
        Json(
            json!({ "token": token, "user": session.user, "expires_at_ms": session.expires_at_ms }),
        ),
    )
        .into_response())
}

fn check_token(token: &str) -> Result<(), Failure> {
    if token.len() == 48 && token.chars().all(|c| c.is_ascii_hexdigit()) {
        Ok(())
    } else {
        Err(Failure(
            StatusCode::UNAUTHORIZED,
            "denied",
            "no such session".into(),
        ))
    }
}

async fn validate(
    State(service): State<Arc<Service>>,
    Path(token): Path<String>,
) -> Result<Response, Failure> {
    let _permit = shed(&service.permits)?;
    check_token(&token)?;
    let denied = || {
        Failure(
            StatusCode::UNAUTHORIZED,
            "denied",
            "no such session, or it expired".into(),
        )
    };
    let entry = service
        .state
        .get_many(&[format!("{SESSIONS}{token}")])
        .await?
        .remove(0)
        .ok_or_else(denied)?;
    let session: Session = serde_json::from_str(&entry.value)
        .map_err(|e| Failure(StatusCode::INTERNAL_SERVER_ERROR, "corrupt", e.to_string()))?;
    if session.expires_at_ms <= now_ms() {
        return Err(denied());
    }
    Ok(Json(session).into_response())
}

async fn log_out(
    State(service): State<Arc<Service>>,
    Path(token): Path<String>,
) -> Result<Response, Failure> {
    let _permit = shed(&service.permits)?;
    check_token(&token)?;
    let txn = Txn {
        success: vec![TxnOp::Delete {
            key: format!("{SESSIONS}{token}"),
        }],
        ..Txn::default()
    };
    service.state.txn(&txn).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn niceness() -> i32 {
        // SAFETY: getpriority reads only its arguments; `who` 0 is the calling thread.
        unsafe { libc::getpriority(libc::PRIO_PROCESS, 0) }
    }

    #[test]
    fn a_hashing_thread_runs_at_the_niceness_asked_and_no_other_thread_does() {
        let before = niceness();
        let (hashing, next) = std::thread::spawn(|| {
            lower_priority(7);
            let first = niceness();
            lower_priority(7);
            (first, niceness())
        })
        .join()
        .unwrap();
        assert_eq!((hashing, next), (7.max(before), 7.max(before)));
        assert_eq!(niceness(), before, "only the hashing thread is lowered");
    }
}
