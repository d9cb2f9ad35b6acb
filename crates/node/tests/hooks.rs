//! Routing hooks of a real in-process cluster: a command hook gets every routing change,
//! by idempotency key, although its first attempt fails and the control leader changes
//! while a change is still undelivered; a webhook gets the change with its key.

mod common;

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::{Arc, Mutex};

use common::{poll, Cluster};
use firebreak_node::config::{HookConfig, RaftTimings};

/// A hook that refuses its very first call, refuses every call while `closed` exists,
/// and otherwise appends the change's key to `keys` (after each refusal, to `refused`).
const SCRIPT: &str = r#"
dir="$1"
body=$(cat)
if [ ! -e "$dir/failed-once" ] || [ -e "$dir/closed" ]; then
  touch "$dir/failed-once"
  echo "$FIREBREAK_IDEMPOTENCY_KEY" >> "$dir/refused"
  echo "not now" >&2
  exit 3
fi
case "$body" in *"\"idempotency_key\":\"$FIREBREAK_IDEMPOTENCY_KEY\""*) ;; *) exit 4 ;; esac
echo "$FIREBREAK_IDEMPOTENCY_KEY" >> "$dir/keys"
"#;

fn hook(name: &str, exec: Option<Vec<String>>, webhook: Option<String>) -> HookConfig {
    HookConfig {
        name: name.into(),
        exec,
        webhook,
        ca_file: None,
        timeout_ms: 5_000,
        attempts: 2,
    }
}

fn lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(String::from)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_change_reaches_the_hook_despite_failures_and_a_leader_change() {
    let dir = tempfile::TempDir::new().unwrap();
    let script = dir.path().join("hook.sh");
    std::fs::write(&script, SCRIPT).unwrap();
    let argv = vec![
        "/bin/sh".into(),
        script.display().to_string(),
        dir.path().display().to_string(),
    ];
    let mut cluster =
        Cluster::start_with(RaftTimings::default(), vec![hook("lb", Some(argv), None)]).await;
    cluster.apply_topology().await;
    let (keys, refused) = (dir.path().join("keys"), dir.path().join("refused"));
    poll("epoch 1 of both services delivered", || {
        (lines(&keys).len() >= 2).then_some(())
    })
    .await;
    assert!(!lines(&refused).is_empty(), "the first attempt was refused");

    // The hook refuses while the route changes; the leader that tried it then stops.
    std::fs::write(dir.path().join("closed"), "").unwrap();
    let leader = cluster.control_leader().await;
    cluster.evacuate("pangyo").await;
    poll("a failed round at epoch 2, recorded", || {
        let failed = cluster.node(leader).api.control.reader.read(|c| {
            c.hooks
                .get("lb")
                .is_some_and(|r| r.values().any(|h| h.failures > 0))
        });
        failed.then_some(())
    })
    .await;
    assert!(lines(&refused).iter().any(|k| k.ends_with("/2")));
    cluster.stop_node(leader).await;
    std::fs::remove_file(dir.path().join("closed")).unwrap();
    let new_leader = cluster.control_leader().await;
    assert_ne!(new_leader, leader);
    poll(
        "epoch 2 of both services delivered by the new leader",
        || (lines(&keys).iter().filter(|k| k.ends_with("/2")).count() >= 2).then_some(()),
    )
    .await;

    // Each change exactly once by key; none missing, none out of order.
    let delivered = lines(&keys);
    let distinct: BTreeSet<&str> = delivered.iter().map(String::as_str).collect();
    let want: BTreeSet<&str> = [
        "test/messaging/1",
        "test/messaging/2",
        "test/payments/1",
        "test/payments/2",
    ]
    .into();
    assert_eq!(distinct, want, "{delivered:?}");
    for service in ["messaging", "payments"] {
        let first_2 = delivered
            .iter()
            .position(|k| k == &format!("test/{service}/2"));
        let last_1 = delivered
            .iter()
            .rposition(|k| k == &format!("test/{service}/1"));
        assert!(last_1 < first_2, "{delivered:?}");
    }
    poll("every live replica to record the acknowledgements", || {
        cluster
            .nodes
            .iter()
            .flatten()
            .all(|n| {
                n.api.control.reader.read(|c| {
                    c.hooks
                        .get("lb")
                        .is_some_and(|r| r.values().all(|h| h.acked_epoch == 2 && h.failures == 0))
                })
            })
            .then_some(())
    })
    .await;
    let audit = cluster
        .node(new_leader)
        .api
        .control
        .reader
        .read(|c| c.failover.audit.clone());
    assert!(
        audit
            .entries
            .iter()
            .any(|e| e.action == "hook-failed" && e.reason.contains("not now")),
        "a failed round is audited with the hook's own words"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webhook_is_posted_the_change_with_its_key_and_retried_after_a_5xx() {
    use axum::http::{HeaderMap, StatusCode};
    let seen: Arc<Mutex<Vec<(String, serde_json::Value)>>> = Arc::default();
    let calls = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let app = {
        let (seen, calls) = (seen.clone(), calls.clone());
        axum::Router::new().route(
            "/routing",
            axum::routing::post(
                move |headers: HeaderMap, body: axum::Json<serde_json::Value>| {
                    let (seen, calls) = (seen.clone(), calls.clone());
                    async move {
                        if calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst) == 0 {
                            return StatusCode::SERVICE_UNAVAILABLE;
                        }
                        let key = headers["idempotency-key"].to_str().unwrap().to_string();
                        seen.lock().unwrap().push((key, body.0));
                        StatusCode::NO_CONTENT
                    }
                },
            ),
        )
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/routing", listener.local_addr().unwrap());
    let server = tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let cluster = Cluster::start_with(
        RaftTimings::default(),
        vec![hook("haproxy", None, Some(url))],
    )
    .await;
    cluster.apply_topology().await;
    poll("both services posted", || {
        (seen.lock().unwrap().len() >= 2).then_some(())
    })
    .await;
    let seen = seen.lock().unwrap().clone();
    let payments = seen
        .iter()
        .find(|(k, _)| k == "test/payments/1")
        .expect("payments posted");
    assert_eq!(payments.1["primary"], "pangyo");
    assert_eq!(payments.1["serving"], serde_json::json!(["pangyo"]));
    assert_eq!(
        payments.1["endpoints"],
        serde_json::json!(["http://10.0.1.1:8002"])
    );
    assert!(
        calls.load(std::sync::atomic::Ordering::SeqCst) >= 3,
        "the 503 was retried"
    );
    server.abort();
}
