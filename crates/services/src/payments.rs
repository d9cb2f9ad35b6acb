//! The payments service: accounts with balances, and transfers that never charge twice.
//!
//! ```text
//!   GET  /payments/accounts?after=ID&limit=N   accounts in id order, one page (N ≤ 1,000);
//!                                   `next` names the page after (a drill sums the total
//!                                   itself from these records)
//!   GET  /payments/transfers/{key}  the recorded result of a transfer, or 404 if it never
//!                                   applied (how a drill learns what an unknown outcome did)
//!   POST /payments/transfers {idempotency_key, from, to, amount}
//!     read  accounts/{from}, accounts/{to}, transfers/{key}   (one read-only txn)
//!     key recorded?        ─► answer the first result again
//!     from < amount        ─► record "insufficient_funds", 409
//!     otherwise one txn:  compare both balances' mod_revision and the key's absence
//!                         (active-passive: and the fence at most this write's epoch)
//!                         ─► put both balances and the key's result, atomically
//!                         (and the fence up to the epoch; see `fence`)
//!                         (a lost race re-reads and tries again, a bounded number of times)
//! ```
//!
//! Invariants: no balance goes negative; the sum of all balances never changes; a transfer
//! with a given idempotency key is applied at most once and every retry gets its first
//! result. The service keeps no state of its own: everything is in the state group.
//!
//! Load shedding: at most `max_concurrent` requests at once; beyond, 503 with Retry-After.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use firebreak_model::kv::{Compare, CompareOp, CompareTarget, Txn, TxnOp};
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::sync::Semaphore;

use crate::fence::Fence;
use crate::http::{check_id, shed, Failure};
use crate::state::StateClient;

/// Key prefix of account balances.
const ACCOUNTS: &str = "payments/accounts/";
/// Key prefix of transfer results, by idempotency key.
const TRANSFERS: &str = "payments/transfers/";
/// Compare-and-swap attempts before a transfer gives up under contention (503).
const MAX_CAS_ATTEMPTS: usize = 32;
/// Largest amount one transfer moves, and largest opening balance.
pub const MAX_AMOUNT: u64 = 1_000_000_000_000;

/// The writes a repeat cannot apply twice, for the topology's `retry_safe`: a transfer applies once per
/// idempotency key, and an account opens once (a repeat answers 409 `exists`).
pub const RETRY_SAFE: &[&str] = &["POST /payments/accounts", "POST /payments/transfers"];

/// How the service runs.
#[derive(Debug, Clone)]
pub struct Config {
    /// The site's node first, then the others.
    pub nodes: Vec<String>,
    /// TLS to the nodes: the cluster CA and this service's certificate.
    pub state_tls: firebreak_tls::ClientTls,
    /// TLS this service serves its clients (the gateways) with; `None`: plain HTTP.
    pub server_tls: crate::http::ServerTls,
    /// Requests served at once; beyond it, 503 with Retry-After.
    pub max_concurrent: usize,
    /// Timeout of one call to the state group.
    pub state_timeout: Duration,
    /// The site this instance serves, if known: it then refuses writes at an epoch whose
    /// primary is another site (see `fence`).
    pub site: Option<String>,
}

struct Service {
    state: StateClient,
    /// Refuses writes of a primary that lost its role (see `fence`).
    fence: Arc<Fence>,
    permits: Semaphore,
    /// One transfer per account at a time in this instance (see `stripes`).
    stripes: crate::stripes::Stripes,
}

/// The service's router.
pub fn router(config: Config) -> Router {
    let state = StateClient::new(config.nodes, config.state_tls, config.state_timeout);
    let service = Arc::new(Service {
        fence: Fence::start("payments", config.site.clone(), state.clone()),
        state,
        permits: Semaphore::new(config.max_concurrent),
        stripes: Default::default(),
    });
    Router::new()
        .route(
            "/payments/accounts",
            post(create_account).get(list_accounts),
        )
        .route("/payments/accounts/{id}", get(balance))
        .route("/payments/transfers", post(transfer))
        .route("/payments/transfers/{key}", get(transfer_record))
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
    crate::http::serve(listen, router(config), tls, "payments").await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewAccount {
    id: String,
    balance: u64,
}

async fn create_account(
    State(service): State<Arc<Service>>,
    headers: HeaderMap,
    Json(body): Json<NewAccount>,
) -> Result<Response, Failure> {
    let _permit = shed(&service.permits)?;
    let epoch = service.fence.epoch_of(&headers).await?;
    check_id("id", &body.id)?;
    if body.balance > MAX_AMOUNT {
        return Err(Failure(
            StatusCode::BAD_REQUEST,
            "invalid_input",
            format!("balance must be at most {MAX_AMOUNT}"),
        ));
    }
    let key = format!("{ACCOUNTS}{}", body.id);
    let mut txn = Txn {
        compare: vec![Compare {
            key: key.clone(),
            op: CompareOp::Eq,
            target: CompareTarget::ModRevision(0),
        }],
        success: vec![TxnOp::Put {
            key: key.clone(),
            value: body.balance.to_string(),
        }],
        failure: vec![],
    };
    if let Some(epoch) = epoch {
        txn.compare.push(service.fence.compare(epoch));
        txn.success.push(service.fence.put(epoch));
    }
    let (created, _) = service.state.txn(&txn).await?;
    if !created {
        if let Some(epoch) = epoch {
            let fence = [service.fence.key().to_string()];
            let stored = service.state.get_many(&fence).await?;
            service.fence.check(stored[0].as_ref(), epoch)?;
        }
        return Err(Failure(
            StatusCode::CONFLICT,
            "exists",
            format!("account {} already exists", body.id),
        ));
    }
    Ok((
        StatusCode::CREATED,
        Json(json!({ "id": body.id, "balance": body.balance })),
    )
        .into_response())
}

async fn balance(
    State(service): State<Arc<Service>>,
    Path(id): Path<String>,
) -> Result<Response, Failure> {
    let _permit = shed(&service.permits)?;
    check_id("id", &id)?;
    let entry = service
        .state
        .get_many(&[format!("{ACCOUNTS}{id}")])
        .await?
        .remove(0);
    let entry = entry.ok_or_else(|| {
        Failure(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no account {id}"),
        )
    })?;
    Ok(Json(json!({ "id": id, "balance": parse_balance(&entry.value)? })).into_response())
}

/// The recorded result of a transfer; reading it never applies anything.
async fn transfer_record(
    State(service): State<Arc<Service>>,
    Path(key): Path<String>,
) -> Result<Response, Failure> {
    let _permit = shed(&service.permits)?;
    check_id("idempotency_key", &key)?;
    let entry = service
        .state
        .get_many(&[format!("{TRANSFERS}{key}")])
        .await?
        .remove(0)
        .ok_or_else(|| {
            Failure(
                StatusCode::NOT_FOUND,
                "not_found",
                format!("no transfer {key}"),
            )
        })?;
    let result: TransferResult = serde_json::from_str(&entry.value)
        .map_err(|e| Failure(StatusCode::INTERNAL_SERVER_ERROR, "corrupt", e.to_string()))?;
    Ok(Json(result).into_response())
}

/// Accounts on one page of [`list_accounts`] unless the query asks for fewer.
const PAGE: usize = 100;
/// Most accounts on one page.
pub const MAX_PAGE: usize = 1_000;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Page {
    after: Option<String>,
    limit: Option<usize>,
}

/// One page of accounts in id order, each page a linearizable read; `next` is the cursor
/// of the page after, `null` on the last. Pages are not one snapshot: a transfer between
/// two pages can move money across them, so a total is only exact on a quiet system.
async fn list_accounts(
    State(service): State<Arc<Service>>,
    axum::extract::Query(page): axum::extract::Query<Page>,
) -> Result<Response, Failure> {
    let _permit = shed(&service.permits)?;
    let limit = page.limit.unwrap_or(PAGE);
    if limit == 0 || limit > MAX_PAGE {
        return Err(Failure(
            StatusCode::BAD_REQUEST,
            "invalid_input",
            format!("limit is {limit}; ask for 1 to {MAX_PAGE} accounts a page"),
        ));
    }
    if let Some(after) = &page.after {
        check_id("after", after)?;
    }
    let after = page.after.map(|a| format!("{ACCOUNTS}{a}"));
    let (entries, _) = service
        .state
        .range(ACCOUNTS, after.as_deref(), limit)
        .await?;
    let mut accounts = Vec::with_capacity(entries.len());
    for (key, entry) in &entries {
        let id = key.strip_prefix(ACCOUNTS).unwrap_or(key);
        accounts.push(json!({ "id": id, "balance": parse_balance(&entry.value)? }));
    }
    let next = (accounts.len() == limit).then(|| accounts.last().map(|a| a["id"].clone()));
    Ok(Json(json!({ "accounts": accounts, "next": next.flatten() })).into_response())
}

fn parse_balance(value: &str) -> Result<u64, Failure> {
    value.parse().map_err(|_| {
        Failure(
            StatusCode::INTERNAL_SERVER_ERROR,
            "corrupt",
            format!("stored balance {value:?} is not a number"),
        )
    })
}

/// A transfer request.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TransferRequest {
    idempotency_key: String,
    from: String,
    to: String,
    amount: u64,
}

/// What a transfer did; stored under its idempotency key and returned to every retry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TransferResult {
    /// `ok` or `insufficient_funds`.
    pub status: String,
    pub from: String,
    pub to: String,
    pub amount: u64,
}

async fn transfer(
    State(service): State<Arc<Service>>,
    headers: HeaderMap,
    Json(req): Json<TransferRequest>,
) -> Result<Response, Failure> {
    let _permit = shed(&service.permits)?;
    let epoch = service.fence.epoch_of(&headers).await?;
    check_id("idempotency_key", &req.idempotency_key)?;
    check_id("from", &req.from)?;
    check_id("to", &req.to)?;
    if req.from == req.to {
        return Err(Failure(
            StatusCode::BAD_REQUEST,
            "invalid_input",
            "from and to must differ".into(),
        ));
    }
    if req.amount == 0 || req.amount > MAX_AMOUNT {
        return Err(Failure(
            StatusCode::BAD_REQUEST,
            "invalid_input",
            format!("amount must be 1 to {MAX_AMOUNT}"),
        ));
    }
    let keys = [
        format!("{ACCOUNTS}{}", req.from),
        format!("{ACCOUNTS}{}", req.to),
        format!("{TRANSFERS}{}", req.idempotency_key),
        service.fence.key().to_string(),
    ];
    let _turn = service.stripes.lock(&[&req.from, &req.to]).await;
    for _ in 0..MAX_CAS_ATTEMPTS {
        let entries = service.state.get_many(&keys).await?;
        // A primary that lost its role answers nothing, not even a repeat.
        if let Some(epoch) = epoch {
            service.fence.check(entries[3].as_ref(), epoch)?;
        }
        if let Some(done) = &entries[2] {
            let result: TransferResult = serde_json::from_str(&done.value).map_err(|e| {
                Failure(StatusCode::INTERNAL_SERVER_ERROR, "corrupt", e.to_string())
            })?;
            return Ok(answer(result));
        }
        let (Some(from), Some(to)) = (&entries[0], &entries[1]) else {
            return Err(Failure(
                StatusCode::NOT_FOUND,
                "not_found",
                "both accounts must exist".into(),
            ));
        };
        let (from_balance, to_balance) = (parse_balance(&from.value)?, parse_balance(&to.value)?);
        let funded = from_balance >= req.amount;
        let result = TransferResult {
            status: if funded { "ok" } else { "insufficient_funds" }.into(),
            from: req.from.clone(),
            to: req.to.clone(),
            amount: req.amount,
        };
        let record = TxnOp::Put {
            key: keys[2].clone(),
            value: serde_json::to_string(&result).expect("serializes"),
        };
        let mut compare = vec![
            Compare {
                key: keys[2].clone(),
                op: CompareOp::Eq,
                target: CompareTarget::ModRevision(0),
            },
            Compare {
                key: keys[0].clone(),
                op: CompareOp::Eq,
                target: CompareTarget::ModRevision(from.mod_revision),
            },
        ];
        let mut success = vec![record];
        if let Some(epoch) = epoch {
            compare.push(service.fence.compare(epoch));
            success.push(service.fence.put(epoch));
        }
        if funded {
            compare.push(Compare {
                key: keys[1].clone(),
                op: CompareOp::Eq,
                target: CompareTarget::ModRevision(to.mod_revision),
            });
            success.push(TxnOp::Put {
                key: keys[0].clone(),
                value: (from_balance - req.amount).to_string(),
            });
            success.push(TxnOp::Put {
                key: keys[1].clone(),
                value: (to_balance + req.amount).to_string(),
            });
        }
        let (applied, _) = service
            .state
            .txn(&Txn {
                compare,
                success,
                failure: vec![],
            })
            .await?;
        if applied {
            return Ok(answer(result));
        }
        // Someone else changed a balance or recorded this key first: read again.
    }
    Err(Failure(
        StatusCode::SERVICE_UNAVAILABLE,
        "contention",
        format!("gave up after {MAX_CAS_ATTEMPTS} conflicting attempts"),
    ))
}

fn answer(result: TransferResult) -> Response {
    let status = if result.status == "ok" {
        StatusCode::OK
    } else {
        StatusCode::CONFLICT
    };
    (status, Json(result)).into_response()
}
