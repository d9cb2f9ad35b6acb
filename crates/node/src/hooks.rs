//! Routing hooks: the control leader tells the world outside firebreak (load balancers,
//! DNS providers, cloud routing controls) about every routing change.
//!
//! ```text
//!   every tick, on the control leader with a quorum:
//!     model::hooks::pending(state) ─► one delivery per (hook, service) at a time, at most
//!                                     8 per hook
//!       exec: argv, change JSON on stdin, FIREBREAK_IDEMPOTENCY_KEY; exit 0 = ack
//!       webhook: POST change JSON, Idempotency-Key header; 2xx = ack
//!       up to `attempts` tries, 200 ms doubling to 5 s apart, each within `timeout_ms`
//!     ─► HookResult through Raft (ok: acknowledged; failed: audited, retried later)
//! ```
//!
//! At least once: the acknowledgement is replicated, so when the leader changes the new
//! one delivers whatever was not acknowledged; a receiver drops repeats by the key
//! `<cluster>/<service>/<epoch>`. Failures show in `/metrics`
//! (`firebreak_hook_failures`, `firebreak_hook_behind`), in `firebreak status` and in the
//! audit log (`hook-failed`).

use std::collections::{BTreeMap, BTreeSet};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use firebreak_model::control::ControlCommand;
use firebreak_model::hooks::{self, HookChange, Pending};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::task::JoinHandle;

use crate::clock::now_ms;
use crate::config::HookConfig;
use crate::context::Api;

/// How often the leader looks for changes to deliver.
const TICK: Duration = Duration::from_millis(250);
/// Deliveries of one hook running at once.
const MAX_DELIVERIES_PER_HOOK: usize = 8;
/// Most bytes of a failed hook's stderr or a webhook's error answer kept for the error.
const MAX_ERROR_BYTES: usize = 400;

/// One configured hook, ready to run.
struct Hook {
    config: HookConfig,
    /// For webhooks.
    client: Option<reqwest::Client>,
}

/// Starts the hook runner, if any hook is configured.
pub fn spawn(api: Arc<Api>) -> crate::Result<Option<JoinHandle<()>>> {
    if api.config.hooks.is_empty() {
        return Ok(None);
    }
    let mut hooks = Vec::new();
    for config in &api.config.hooks {
        let client = match &config.webhook {
            Some(_) => Some(webhook_client(config)?),
            None => None,
        };
        hooks.push(Arc::new(Hook {
            config: config.clone(),
            client,
        }));
    }
    Ok(Some(tokio::spawn(run(api, hooks))))
}

fn webhook_client(config: &HookConfig) -> crate::Result<reqwest::Client> {
    let mut builder = reqwest::Client::builder()
        .timeout(Duration::from_millis(config.timeout_ms))
        .redirect(reqwest::redirect::Policy::none());
    if let Some(ca) = &config.ca_file {
        let pem = std::fs::read(ca).map_err(|source| crate::Error::Io {
            path: ca.clone(),
            source,
        })?;
        let cert = reqwest::Certificate::from_pem(&pem).map_err(|e| {
            crate::Error::Tls(format!("hook {}: {}: {e}", config.name, ca.display()))
        })?;
        builder = builder.add_root_certificate(cert);
    }
    builder
        .build()
        .map_err(|e| crate::Error::Tls(format!("hook {}: {e}", config.name)))
}

async fn run(api: Arc<Api>, hooks: Vec<Arc<Hook>>) {
    let names: Vec<String> = hooks.iter().map(|h| h.config.name.clone()).collect();
    let by_name: BTreeMap<String, Arc<Hook>> = hooks
        .into_iter()
        .map(|h| (h.config.name.clone(), h))
        .collect();
    let in_flight: Arc<Mutex<BTreeSet<(String, String)>>> = Arc::default();
    // Deliveries die with the runner (a node that stops delivers nothing more).
    let mut deliveries = tokio::task::JoinSet::new();
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        while deliveries.try_join_next().is_some() {}
        if !api.control.leads_with_quorum() {
            continue;
        }
        let cluster = api.config.cluster.clone();
        let due = api
            .control
            .reader
            .read(|c| hooks::pending(c, &cluster, &names, now_ms()));
        for pending in due {
            let slot = (pending.hook.clone(), pending.change.service.clone());
            {
                let mut running = in_flight.lock().expect("not poisoned");
                let of_hook = running.iter().filter(|(h, _)| *h == slot.0).count();
                // The rest waits for a later tick: a topology of 256 new services must not
                // start 256 hook processes at once.
                if of_hook >= MAX_DELIVERIES_PER_HOOK || !running.insert(slot.clone()) {
                    continue;
                }
            }
            let hook = by_name[&pending.hook].clone();
            let (api, in_flight) = (api.clone(), in_flight.clone());
            deliveries.spawn(async move {
                deliver(&api, &hook, pending).await;
                in_flight.lock().expect("not poisoned").remove(&slot);
            });
        }
    }
}

/// One delivery round: attempts with backoff, then the outcome through Raft.
async fn deliver(api: &Api, hook: &Hook, pending: Pending) {
    let Pending { hook: name, change } = pending;
    let mut delay = Duration::from_millis(200);
    let mut error = None;
    for attempt in 1..=hook.config.attempts {
        match attempt_once(hook, &change).await {
            Ok(()) => {
                error = None;
                break;
            }
            Err(why) => {
                tracing::warn!(hook = %name, key = %change.idempotency_key, attempt, cause = %why, "hook attempt failed");
                error = Some(why);
            }
        }
        if attempt < hook.config.attempts {
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_secs(5));
        }
    }
    api.counters.hooks.count(&name, error.is_none());
    let result = ControlCommand::HookResult {
        hook: name.clone(),
        service: change.service.clone(),
        epoch: change.epoch,
        error,
        at_ms: 0,
    };
    if let Err(err) = api.propose_control(result).await {
        // Not acknowledged: this leader or the next delivers it again.
        tracing::debug!(hook = %name, cause = %err, "hook result not committed");
    }
}

async fn attempt_once(hook: &Hook, change: &HookChange) -> Result<(), String> {
    let body = serde_json::to_vec(change).expect("a change serializes");
    let timeout = Duration::from_millis(hook.config.timeout_ms);
    match (&hook.config.exec, &hook.config.webhook, &hook.client) {
        (Some(argv), _, _) => {
            match tokio::time::timeout(timeout, exec(argv, &change.idempotency_key, &body)).await {
                Ok(result) => result,
                Err(_) => Err(format!(
                    "{} did not finish within {timeout:?}; killed",
                    argv[0]
                )),
            }
        }
        (None, Some(url), Some(client)) => post(client, url, &change.idempotency_key, body).await,
        _ => Err("hook has neither a command nor a webhook".into()),
    }
}

/// Runs `argv` with `body` on stdin; the child is killed if this future is dropped.
async fn exec(argv: &[String], key: &str, body: &[u8]) -> Result<(), String> {
    let mut child = tokio::process::Command::new(&argv[0])
        .args(&argv[1..])
        .env("FIREBREAK_IDEMPOTENCY_KEY", key)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("failed to start {}: {e}", argv[0]))?;
    if let Some(mut stdin) = child.stdin.take() {
        // A hook that does not read its input is its own business.
        let _ = stdin.write_all(body).await;
    }
    let mut stderr = child.stderr.take().expect("stderr is piped");
    let mut head = Vec::new();
    let read = async {
        let _ = (&mut stderr)
            .take(MAX_ERROR_BYTES as u64)
            .read_to_end(&mut head)
            .await;
        let _ = tokio::io::copy(&mut stderr, &mut tokio::io::sink()).await;
    };
    let (_, status) = tokio::join!(read, child.wait());
    let status = status.map_err(|e| format!("failed to wait for {}: {e}", argv[0]))?;
    if status.success() {
        return Ok(());
    }
    let said = String::from_utf8_lossy(&head).trim().to_string();
    Err(format!("{} exited with {status}: {said}", argv[0]))
}

async fn post(client: &reqwest::Client, url: &str, key: &str, body: Vec<u8>) -> Result<(), String> {
    // Errors go to status and the audit log, which more people read than the config: they
    // name the webhook by scheme, host and port only, never its credentials, path or query.
    let shown = redacted(url);
    let response = client
        .post(url)
        .header("content-type", "application/json")
        .header("idempotency-key", key)
        .body(body)
        .send()
        .await
        .map_err(|e| format!("POST {shown}: {}", e.without_url()))?;
    let status = response.status();
    if status.is_success() {
        return Ok(());
    }
    let text = crate::peer_answer::text_at_most(response, MAX_ERROR_BYTES).await;
    Err(format!("POST {shown} answered {status}: {text}"))
}

/// `scheme://host:port/…` of `url`: what a log may show of a webhook's address.
fn redacted(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(parsed) => format!(
            "{}://{}{}/…",
            parsed.scheme(),
            parsed.host_str().unwrap_or("?"),
            parsed.port().map_or(String::new(), |p| format!(":{p}"))
        ),
        Err(_) => "the webhook (an unreadable URL)".into(),
    }
}

/// Delivery rounds per hook and outcome, for `/metrics`.
#[derive(Debug, Default)]
pub struct HookCounters {
    rounds: Mutex<BTreeMap<String, [u64; 2]>>,
}

impl HookCounters {
    fn count(&self, hook: &str, ok: bool) {
        let mut rounds = self.rounds.lock().expect("not poisoned");
        rounds.entry(hook.to_string()).or_default()[usize::from(!ok)] += 1;
    }

    /// (hook, acknowledged rounds, failed rounds).
    pub fn snapshot(&self) -> Vec<(String, u64, u64)> {
        let rounds = self.rounds.lock().expect("not poisoned");
        rounds
            .iter()
            .map(|(h, [ok, failed])| (h.clone(), *ok, *failed))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_webhook_is_shown_without_its_credentials_path_or_query() {
        let url = "https://ops:hunter2@hooks.example:8443/v1/route?token=s3cret";
        let shown = redacted(url);
        assert_eq!(shown, "https://hooks.example:8443/…");
        assert_eq!(redacted("not a url"), "the webhook (an unreadable URL)");
    }

    #[tokio::test]
    async fn a_failed_post_names_no_secret_of_its_url() {
        // Port 1 on loopback: nothing listens, the connection is refused.
        let url = "http://ops:hunter2@127.0.0.1:1/hook?token=s3cret";
        let err = post(&reqwest::Client::new(), url, "key", Vec::new())
            .await
            .expect_err("nothing listens on port 1");
        assert!(err.starts_with("POST http://127.0.0.1:1/…: "), "{err}");
        for secret in ["hunter2", "s3cret", "/hook"] {
            assert!(!err.contains(secret), "{err}");
        }
    }
}
