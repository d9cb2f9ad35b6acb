//! Bounded input: every field of every command is checked at the edge, before anything is
//! proposed, so no request can make a Raft group stop.
//!
//! - The reproduced attack: one lease renewal with a 200,000-byte site name, sent to every
//!   node, used to stop the control group for good ("log entry ... is over the limit").
//!   It is refused with 4xx, and both groups go on.
//! - Each field at its limit is accepted, one byte over is refused with a 4xx that names the
//!   field; after every refusal both groups still have a leader and take writes.
//! - A control ping (an fsynced entry) without an operator token is refused with 401.

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use firebreak_tests::{http, url, Api, TestCluster, DEADLINE, TEST_TOKEN};

/// One request: path, body, and the field its error must name.
struct Case {
    name: &'static str,
    path: &'static str,
    at_limit: Value,
    over: Value,
    field: &'static str,
}

fn text(n: usize) -> String {
    "r".repeat(n)
}

fn site(n: usize) -> String {
    "s".repeat(n)
}

fn cases() -> Vec<Case> {
    let ops = |n: usize| -> Vec<Value> {
        (0..n)
            .map(|i| json!({ "put": { "key": format!("t{i}"), "value": "v" } }))
            .collect()
    };
    vec![
        Case {
            name: "freeze reason",
            path: "/v1/freeze",
            at_limit: json!({ "reason": text(512) }),
            over: json!({ "reason": text(513) }),
            field: "reason",
        },
        Case {
            name: "health report service",
            path: "/v1/internal/control",
            at_limit: json!({ "report_health": { "service": site(63), "site": "pangyo", "healthy": true, "at_ms": 0 } }),
            over: json!({ "report_health": { "service": site(64), "site": "pangyo", "healthy": true, "at_ms": 0 } }),
            field: "service",
        },
        Case {
            name: "kv key",
            path: "/v1/kv",
            at_limit: json!({ "key": "k".repeat(1024), "value": "v" }),
            over: json!({ "key": "k".repeat(1025), "value": "v" }),
            field: "key",
        },
        Case {
            name: "kv value",
            path: "/v1/kv",
            at_limit: json!({ "key": "k", "value": "v".repeat(32 * 1024) }),
            over: json!({ "key": "k", "value": "v".repeat(32 * 1024 + 1) }),
            field: "value",
        },
        Case {
            name: "txn operations",
            path: "/v1/txn",
            at_limit: json!({ "compare": [], "success": ops(64) }),
            over: json!({ "compare": [], "success": ops(65) }),
            field: "success",
        },
    ]
}

/// Sends `case` to node `i`: internal commands to its peer listener as node 1 (pangyo),
/// keys to its client listener and operator commands to its admin listener, with the
/// operator token.
async fn send(
    cluster: &TestCluster,
    peer: &reqwest::Client,
    i: usize,
    case: &Case,
    body: &Value,
) -> (u16, String) {
    let request = match case.path {
        "/v1/internal/control" => peer.post(url(&cluster.nodes[i].peer_addr, case.path)),
        "/v1/kv" => http().put(url(&cluster.nodes[i].addr, case.path)),
        "/v1/txn" => http().post(url(&cluster.nodes[i].addr, case.path)),
        _ => http().post(url(&cluster.nodes[i].admin_addr, case.path)),
    };
    let request = match case.path {
        "/v1/internal/control" => request,
        _ => request.bearer_auth(TEST_TOKEN),
    };
    let response = request.json(body).send().await.expect("the node answers");
    let status = response.status().as_u16();
    (status, response.text().await.unwrap_or_default())
}

/// Both groups have a leader and commit a write.
async fn groups_alive(api: &Api, cluster: &TestCluster, after: &str) {
    let addrs = &cluster.addrs();
    api.wait_leader(addrs, "control").await;
    api.wait_leader(addrs, "state").await;
    for (path, body) in [
        ("/v1/control/ping", json!({})),
        ("/v1/kv", json!({ "key": "alive", "value": after })),
    ] {
        let deadline = Instant::now() + DEADLINE;
        let mut last = String::new();
        'retry: while Instant::now() < deadline {
            for node in &cluster.nodes {
                let addr = match path {
                    "/v1/kv" => &node.addr,
                    _ => &node.admin_addr,
                };
                let url = url(addr, path);
                let request = match path {
                    "/v1/kv" => api.http.put(url),
                    _ => api.http.post(url),
                };
                let request = request.bearer_auth(TEST_TOKEN);
                if let Ok(response) = request.json(&body).send().await {
                    if response.status().is_success() {
                        break 'retry;
                    }
                    last = response.text().await.unwrap_or_default();
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(
            Instant::now() < deadline,
            "{path} commits after {after}: {last}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_request_can_stop_a_raft_group() {
    let cluster = TestCluster::start("");
    let api = Api::new();
    let addrs = cluster.addrs();
    groups_alive(&api, &cluster, "start").await;
    // Each ping is an fsynced control entry: it takes an operator token.
    for addr in &cluster.admin_addrs() {
        let response = api
            .http
            .post(url(addr, "/v1/control/ping"))
            .send()
            .await
            .expect("the node answers");
        assert_eq!(response.status().as_u16(), 401, "a ping without a token");
    }

    let attack = json!({ "renew_lease": { "site": site(200_000), "at_ms": 0 } });
    // The internal endpoint is not on the client listener at all. (A small body: the 404
    // comes before a 200 KB body is read, and the client may then see a broken pipe.)
    let small = json!({ "renew_lease": { "site": "pangyo", "at_ms": 0 } });
    let response = api
        .http
        .post(url(&addrs[0], "/v1/internal/control"))
        .json(&small)
        .send()
        .await
        .expect("the node answers");
    assert_eq!(
        response.status().as_u16(),
        404,
        "internal control on the client listener"
    );
    // Even a member node cannot send it: the control leader first, where the entry
    // would be appended.
    let peer = cluster.peer_http(1);
    let leader = api.wait_leader(&addrs, "control").await as usize - 1;
    let first = cluster.nodes[leader].peer_addr.clone();
    let mut targets = vec![first.clone()];
    targets.extend(
        cluster
            .nodes
            .iter()
            .map(|n| n.peer_addr.clone())
            .filter(|a| *a != first),
    );
    for addr in &targets {
        let response = peer
            .post(url(addr, "/v1/internal/control"))
            .json(&attack)
            .send()
            .await
            .expect("the node answers");
        let status = response.status().as_u16();
        let body = response.text().await.unwrap_or_default();
        assert!((400..500).contains(&status), "{addr}: {status} {body}");
        assert!(
            body.len() < 4096,
            "the error does not echo the input: {} bytes",
            body.len()
        );
    }
    groups_alive(&api, &cluster, "a 200,000-byte site name").await;

    for case in cases() {
        // Internal forwards are for the control leader alone; the rest forward themselves.
        let leader = api.wait_leader(&addrs, "control").await as usize - 1;
        let (status, body) = send(&cluster, &peer, leader, &case, &case.at_limit).await;
        assert!(
            (200..300).contains(&status),
            "{} at its limit: {status} {body}",
            case.name
        );
        let (status, body) = send(&cluster, &peer, 1, &case, &case.over).await;
        assert!(
            status == 400 || status == 413,
            "{} one over: {status} {body}",
            case.name
        );
        assert!(
            body.contains(case.field),
            "{}: the error names {}: {body}",
            case.name,
            case.field
        );
        groups_alive(&api, &cluster, case.name).await;
    }
    drop(cluster);
}
