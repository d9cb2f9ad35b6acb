//! Throws random, truncated, deeply nested and oversized JSON (unicode, huge numbers) and
//! random query strings at every endpoint of every listener of a running 3-node cluster
//! (client and admin listeners with or without an operator token; the peer listener as a
//! member node, past the certificate gate, so the handlers themselves are fuzzed): at least 20,000
//! requests, from a seed, bounded in time. Afterwards no node has panicked or died, both
//! Raft groups have a leader and commit writes, and no answer was a 5xx other than the
//! documented ones (503 `not_leader`, `no_quorum`, `unavailable`, 504 `outcome_unknown`).
//!
//! `FIREBREAK_FUZZ_SEED=N` repeats a run; the seed is printed.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};

use firebreak_tests::{Api, TestCluster, DEADLINE, TEST_TOKEN};

const REQUESTS: usize = 20_000;
const CONCURRENCY: usize = 16;
/// The whole run's bound; the test fails if it cannot send its requests in time.
const BUDGET: Duration = Duration::from_secs(240);
/// Above the nodes' 256 KiB body limit.
const OVERSIZED_BYTES: usize = 300 * 1024;

/// Every endpoint: method, path, and a valid body to mutate (None: no body).
fn endpoints() -> Vec<(&'static str, &'static str, Option<Value>)> {
    let kv = json!({ "key": "k", "value": "v" });
    let txn = json!({ "compare": [{ "key": "k", "op": "eq", "target": { "value": "v" } }],
                      "success": [{ "put": { "key": "k", "value": "w" } }], "failure": [] });
    let lease = json!({ "renew_lease": { "site": "pangyo", "at_ms": 0 } });
    let health = json!({ "report_health": { "service": "messaging", "site": "pangyo", "healthy": true, "at_ms": 0 } });
    let vote = json!({ "vote": { "leader_id": { "term": 1, "node_id": 1 }, "committed": false }, "last_log_id": null });
    vec![
        ("GET", "/v1/kv", None),
        ("PUT", "/v1/kv", Some(kv)),
        ("DELETE", "/v1/kv", None),
        ("POST", "/v1/txn", Some(txn)),
        ("GET", "/v1/watch", None),
        ("GET", "/v1/cluster", None),
        ("GET", "/v1/health", None),
        ("POST", "/v1/control/ping", Some(json!({}))),
        ("POST", "/v1/internal/control", Some(lease)),
        ("POST", "/v1/internal/control", Some(health)),
        ("GET", "/v1/topology", None),
        (
            "POST",
            "/v1/topology",
            Some(json!({ "sites": [], "services": [] })),
        ),
        (
            "POST",
            "/v1/evacuate",
            Some(json!({ "site": "busan", "reason": "r" })),
        ),
        ("POST", "/v1/restore", Some(json!({ "site": "busan" }))),
        ("POST", "/v1/freeze", Some(json!({ "reason": "r" }))),
        ("POST", "/v1/unfreeze", Some(json!({}))),
        ("GET", "/v1/routing", None),
        ("GET", "/v1/failover", None),
        ("GET", "/v1/audit", None),
        ("GET", "/metrics", None),
        (
            "POST",
            "/messaging/conversations/c/messages",
            Some(json!({ "client_msg_id": "m", "sender": "s", "body": "b" })),
        ),
        ("POST", "/raft/control/vote", Some(vote.clone())),
        ("POST", "/raft/state/vote", Some(vote)),
        ("POST", "/raft/control/append", Some(json!({}))),
        ("POST", "/raft/state/snapshot", Some(json!({}))),
    ]
}

fn random_string(rng: &mut StdRng) -> String {
    const PIECES: [&str; 10] = [
        "a", "pangyo", "판교", "🔥", "\u{0}", "\"", "\\", "../", "%00", "\u{feff}",
    ];
    let n = match rng.gen_range(0..10) {
        0 => rng.gen_range(1_000..70_000),
        _ => rng.gen_range(0..20),
    };
    (0..n)
        .map(|_| PIECES[rng.gen_range(0..PIECES.len())])
        .collect()
}

fn random_value(rng: &mut StdRng, depth: u32) -> Value {
    match rng.gen_range(0..9) {
        0 => Value::Null,
        1 => json!(rng.gen::<bool>()),
        2 => json!(rng.gen::<i64>()),
        3 => json!(u64::MAX),
        4 => json!(rng.gen::<f64>() * 1e300),
        5 | 6 => json!(random_string(rng)),
        7 if depth < 4 => Value::Array(
            (0..rng.gen_range(0..5))
                .map(|_| random_value(rng, depth + 1))
                .collect(),
        ),
        _ if depth < 4 => {
            let keys = [
                "key",
                "value",
                "site",
                "reason",
                "renew_lease",
                "report_health",
                "service",
                "put",
                "vote",
                "term",
            ];
            Value::Object(
                (0..rng.gen_range(0..5))
                    .map(|_| {
                        (
                            keys[rng.gen_range(0..keys.len())].to_string(),
                            random_value(rng, depth + 1),
                        )
                    })
                    .collect(),
            )
        }
        _ => json!("leaf"),
    }
}

/// Replaces one field of a valid body, at any depth, with a random value.
fn mutate(rng: &mut StdRng, value: &mut Value) {
    match value {
        Value::Object(map) if !map.is_empty() => {
            let key = map
                .keys()
                .nth(rng.gen_range(0..map.len()))
                .cloned()
                .unwrap();
            if rng.gen_bool(0.5) {
                mutate(rng, map.get_mut(&key).unwrap());
            } else {
                map.insert(key, random_value(rng, 1));
            }
        }
        Value::Array(items) if !items.is_empty() => {
            let i = rng.gen_range(0..items.len());
            mutate(rng, &mut items[i]);
        }
        other => *other = random_value(rng, 1),
    }
}

/// A body: a mutated template, random JSON, truncated JSON, nesting past serde's limit,
/// or a body over the size limit.
fn body(rng: &mut StdRng, template: &Option<Value>) -> Vec<u8> {
    let mut valid = template.clone().unwrap_or(json!({}));
    match rng.gen_range(0..10) {
        0..=3 => {
            mutate(rng, &mut valid);
            serde_json::to_vec(&valid).unwrap()
        }
        4 | 5 => serde_json::to_vec(&random_value(rng, 0)).unwrap(),
        6 => {
            let bytes = serde_json::to_vec(&valid).unwrap();
            bytes[..rng.gen_range(0..bytes.len().max(1))].to_vec()
        }
        7 => {
            let depth = rng.gen_range(100..5_000);
            format!("{}{}", "[".repeat(depth), "]".repeat(depth)).into_bytes()
        }
        8 => vec![b'x'; OVERSIZED_BYTES],
        _ => serde_json::to_vec(&valid).unwrap(),
    }
}

/// A Raft RPC body as peers send it: the JSON body's value in MessagePack, or the raw
/// bytes where they do not parse; now and then an array nested thousands deep.
fn raft_body(rng: &mut StdRng, template: &Option<Value>) -> Vec<u8> {
    if rng.gen_bool(0.1) {
        let mut nested = vec![0x91; rng.gen_range(100..5_000)];
        nested.push(0x90);
        return nested;
    }
    let json = body(rng, template);
    match serde_json::from_slice::<Value>(&json) {
        Ok(value) => firebreak_node::raft_wire::encode(&value).unwrap(),
        Err(_) => json,
    }
}

fn query(rng: &mut StdRng) -> String {
    let keys = [
        "key",
        "prefix",
        "limit",
        "start_after",
        "from_revision",
        "after_revision",
        "since_ms",
        "consistency",
    ];
    let values = [
        "k",
        "-1",
        "18446744073709551616",
        "0",
        "stale",
        "판교",
        "%ZZ",
        "",
        "99999999999",
    ];
    let mut parts = Vec::new();
    for _ in 0..rng.gen_range(0..4) {
        parts.push(format!(
            "{}={}",
            keys[rng.gen_range(0..keys.len())],
            values[rng.gen_range(0..values.len())]
        ));
    }
    // Long polls answer at once or within this bound.
    parts.push("timeout_ms=50".into());
    format!("?{}", parts.join("&"))
}

/// 5xx answers the API documents; anything else with 5xx is a bug.
fn documented(status: u16, body: &str) -> bool {
    let kind = serde_json::from_str::<Value>(body)
        .ok()
        .and_then(|v| v["error"]["kind"].as_str().map(str::to_string))
        .unwrap_or_default();
    match status {
        503 => ["not_leader", "no_quorum", "unavailable"].contains(&kind.as_str()),
        504 => kind == "outcome_unknown",
        _ => status < 500,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_input_never_panics_a_node_or_stops_a_group() {
    let seed: u64 = std::env::var("FIREBREAK_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random);
    eprintln!("seed {seed}; repeat with FIREBREAK_FUZZ_SEED={seed}");
    let mut cluster = TestCluster::start("");
    let api = Arc::new(Api::new());
    let addrs = cluster.addrs();
    api.wait_leader(&addrs, "control").await;
    api.wait_leader(&addrs, "state").await;

    let http = firebreak_tests::http();
    let peer = cluster.peer_http(1);
    let peer_addrs: Vec<String> = cluster.nodes.iter().map(|n| n.peer_addr.clone()).collect();
    let admin_addrs = cluster.admin_addrs();
    let sent = Arc::new(AtomicUsize::new(0));
    let bad = Arc::new(Mutex::new(Vec::<String>::new()));
    let started = Instant::now();
    let mut workers = tokio::task::JoinSet::new();
    for w in 0..CONCURRENCY {
        let (http, addrs, sent, bad) = (http.clone(), addrs.clone(), sent.clone(), bad.clone());
        let (peer, peer_addrs, admin_addrs) =
            (peer.clone(), peer_addrs.clone(), admin_addrs.clone());
        let mut rng = StdRng::seed_from_u64(seed.wrapping_add(w as u64));
        let endpoints = endpoints();
        workers.spawn(async move {
            while sent.fetch_add(1, Ordering::Relaxed) < REQUESTS && started.elapsed() < BUDGET {
                let (method, path, template) = &endpoints[rng.gen_range(0..endpoints.len())];
                let (client, targets) = match rng.gen_range(0..3) {
                    0 => (&peer, &peer_addrs),
                    1 => (&http, &admin_addrs),
                    _ => (&http, &addrs),
                };
                let url = firebreak_tests::url(
                    &targets[rng.gen_range(0..targets.len())],
                    &format!("{path}{}", query(&mut rng)),
                );
                let mut request = client.request(method.parse().unwrap(), url);
                if path.starts_with("/raft/") && rng.gen_bool(0.9) {
                    request = request
                        .header("content-type", firebreak_node::raft_wire::CONTENT_TYPE)
                        .body(raft_body(&mut rng, template));
                } else if template.is_some() || rng.gen_bool(0.2) {
                    request = request
                        .header("content-type", "application/json")
                        .body(body(&mut rng, template));
                }
                if rng.gen_bool(0.5) {
                    request = request.bearer_auth(TEST_TOKEN);
                }
                let Ok(response) = request.send().await else {
                    continue;
                };
                let status = response.status().as_u16();
                if status >= 500 {
                    let text = response.text().await.unwrap_or_default();
                    if !documented(status, &text) {
                        let mut bad = bad.lock().unwrap();
                        if bad.len() < 20 {
                            bad.push(format!(
                                "{method} {path}: {status} {}",
                                &text[..text.len().min(300)]
                            ));
                        }
                    }
                }
            }
        });
    }
    while workers.join_next().await.is_some() {}
    let sent = sent.load(Ordering::Relaxed).min(REQUESTS);
    eprintln!(
        "{sent} requests in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    assert!(
        sent >= REQUESTS,
        "only {sent} requests within {BUDGET:?} (seed {seed})"
    );

    for i in 0..3 {
        assert_eq!(
            cluster.exited(i),
            None,
            "node {} died (seed {seed})\n{}",
            i + 1,
            cluster.logs()
        );
    }
    let logs = cluster.logs();
    assert!(
        !logs.contains("panicked"),
        "a node panicked (seed {seed})\n{logs}"
    );
    let bad = bad.lock().unwrap().clone();
    assert!(
        bad.is_empty(),
        "undocumented 5xx answers (seed {seed}):\n{}",
        bad.join("\n")
    );
    // Both groups still elect and commit.
    api.wait_leader(&addrs, "control").await;
    api.wait_leader(&addrs, "state").await;
    let deadline = Instant::now() + DEADLINE;
    let mut committed = (false, false);
    while !(committed.0 && committed.1) && Instant::now() < deadline {
        for (addr, admin) in addrs.iter().zip(&admin_addrs) {
            let ping = api
                .http
                .post(firebreak_tests::url(admin, "/v1/control/ping"))
                .bearer_auth(TEST_TOKEN)
                .send()
                .await;
            committed.0 |= ping.is_ok_and(|r| r.status().is_success());
            let put = firebreak_tests::put(&api.http, addr, "after-fuzz", "ok").await;
            committed.1 |= put == firebreak_tests::Outcome::Ok;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        committed.0 && committed.1,
        "both groups commit after the fuzzing (seed {seed}): {committed:?}"
    );
}
