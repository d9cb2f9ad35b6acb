//! Guarded automatic failover with real processes: a healthy cluster makes no routing
//! change for a minute; a paused site goes down and comes back only after its rise rounds;
//! a SIGKILLed site leaves every service within 3 s; an unhealthy instance leaves after
//! its fall count and returns after its rise count. And operators' bad input changes
//! nothing.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use firebreak_tests::{cli, node_topology, serving, Api, TestCluster, DEADLINE, TEST_TOKEN};
use serde_json::Value;

/// Waits until `check` holds for node `addr`'s routing; returns how long it took.
async fn wait_routing(
    api: &Api,
    addr: &str,
    what: &str,
    check: impl Fn(&Value) -> bool,
) -> Duration {
    let started = Instant::now();
    loop {
        if let Some(view) = api.routing(addr).await {
            if check(&view) {
                return started.elapsed();
            }
        }
        assert!(started.elapsed() < DEADLINE, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failover_is_quiet_when_healthy_and_fast_when_a_site_dies() {
    let mut cluster = TestCluster::start("");
    let api = Api::new();
    let addrs = cluster.admin_addrs();
    api.wait_leader(&addrs, "control").await;
    firebreak_tests::apply_topology(&cluster, "topology.yaml", &node_topology(&cluster));
    let all: BTreeSet<String> = ["pangyo", "gasan", "busan"].map(String::from).into();

    // The topology is committed on the leader; wait until pangyo's replica has it too,
    // or the first read below may come before it and count its arrival as a change.
    wait_routing(&api, &addrs[0], "the topology at pangyo", |v| {
        serving(v, "api") == all
    })
    .await;

    // A healthy cluster, one minute: not one routing change.
    let start = api.routing(&addrs[0]).await.expect("routing answers");
    for _ in 0..60 {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let now = api.routing(&addrs[0]).await.expect("routing answers");
        assert_eq!(
            now["revision"],
            start["revision"],
            "a routing change without a fault:\n{now}\n{}",
            cluster.logs()
        );
    }
    assert_eq!(serving(&start, "api"), all);

    // gasan pauses (SIGSTOP): its lease lapses and it leaves the active-active service.
    cluster.signal(1, libc::SIGSTOP);
    wait_routing(&api, &addrs[0], "gasan to leave api", |v| {
        !serving(v, "api").contains("gasan")
    })
    .await;
    cluster.signal(1, libc::SIGCONT);
    let resumed = Instant::now();
    // It comes back only after site_rise (3) renewals in a row and the dwell time (5 s).
    wait_routing(&api, &addrs[0], "gasan to serve api again", |v| {
        serving(v, "api").contains("gasan")
    })
    .await;
    let back_after = resumed.elapsed();
    eprintln!("gasan back in service {back_after:?} after it resumed");
    assert!(
        back_after >= Duration::from_millis(1000),
        "gasan came back after {back_after:?}, before its rise rounds"
    );

    // Let the dwell time pass, then SIGKILL the control leader's site: every service drops
    // it within 3 s, measured from the kill to the survivors' routing table.
    tokio::time::sleep(Duration::from_secs(6)).await;
    let leader = api.wait_leader(&addrs, "control").await as usize - 1;
    let victim = cluster.nodes[leader].site.to_string();
    let survivor = (leader + 1) % 3;
    let killed_at = Instant::now();
    cluster.kill(leader);
    wait_routing(
        &api,
        &addrs[survivor],
        "the dead site to leave every service",
        |v| !serving(v, "api").contains(&victim) && !serving(v, "ledger").contains(&victim),
    )
    .await;
    let took = killed_at.elapsed();
    eprintln!("site {victim} (control leader) SIGKILLed: routing dropped it after {took:?}");
    assert!(
        took <= Duration::from_secs(3),
        "failover took {took:?}\n{}",
        cluster.logs()
    );
    let view = api.routing(&addrs[survivor]).await.unwrap();
    assert!(view["routes"]["ledger"]["epoch"].as_u64().unwrap() >= 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_mistakes_get_clear_errors_and_change_nothing() {
    let cluster = TestCluster::start("");
    let api = Api::new();
    let addrs = cluster.admin_addrs();
    api.wait_leader(&addrs, "control").await;
    firebreak_tests::apply_topology(&cluster, "topology.yaml", &node_topology(&cluster));
    let audit_len = || {
        let (code, out, err) = cli(&["audit", "--output", "json"], &addrs, None);
        assert_eq!(code, 0, "{err}");
        out.lines().count()
    };
    let before = audit_len();

    // An invalid topology file: two sites.
    let bad = cluster.dir.path().join("bad.yaml");
    std::fs::write(&bad, "sites:\n  - name: pangyo\n  - name: gasan\n").unwrap();
    let (code, _, err) = cli(
        &["topology", "apply", bad.to_str().unwrap()],
        &addrs,
        Some(TEST_TOKEN),
    );
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("bad.yaml") && err.contains("quorum"), "{err}");

    // A valid topology naming a site with no node.
    std::fs::write(
        &bad,
        "sites:\n  - name: pangyo\n  - name: gasan\n  - name: mars\n",
    )
    .unwrap();
    let (code, _, err) = cli(
        &["topology", "apply", bad.to_str().unwrap()],
        &addrs,
        Some(TEST_TOKEN),
    );
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("site mars has no node"), "{err}");

    // A YAML mistake names its line.
    std::fs::write(&bad, "sites:\n  - name: pangyo\n    colour: red\n").unwrap();
    let (code, _, err) = cli(
        &["topology", "apply", bad.to_str().unwrap()],
        &addrs,
        Some(TEST_TOKEN),
    );
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("bad.yaml:3:") && err.contains("colour"),
        "{err}"
    );

    // An unknown site.
    let (code, _, err) = cli(
        &[
            "evacuate",
            "mars",
            "--reason",
            "typo",
            "--override",
            "dwell",
        ],
        &addrs,
        Some(TEST_TOKEN),
    );
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("unknown site mars"), "{err}");

    // No token, and a wrong one.
    let (code, _, err) = cli(&["freeze", "--reason", "x"], &addrs, None);
    assert_eq!(code, 8, "{err}");
    assert!(err.contains("Authorization"), "{err}");
    let (code, _, err) = cli(
        &["freeze", "--reason", "x"],
        &addrs,
        Some("not-a-token-at-all"),
    );
    assert_eq!(code, 8, "{err}");

    // Evacuating two sites would leave the active-passive service with one, then none.
    let (code, _, err) = cli(
        &["evacuate", "pangyo", "--reason", "a", "--override", "dwell"],
        &addrs,
        Some(TEST_TOKEN),
    );
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = cli(
        &["evacuate", "gasan", "--reason", "b", "--override", "dwell"],
        &addrs,
        Some(TEST_TOKEN),
    );
    assert_eq!(code, 0, "{err}");
    // `audit` reads the first admin node's replica, which may apply a commit a moment
    // after the leader acknowledged it (CI, under load, read it before): wait until it has.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !cli(&["audit"], &addrs, None).1.contains("evacuate gasan") {
        assert!(
            Instant::now() < deadline,
            "the evacuation never reached the audit"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let after_two = audit_len();
    let (code, _, err) = cli(
        &["evacuate", "busan", "--reason", "c", "--override", "dwell"],
        &addrs,
        Some(TEST_TOKEN),
    );
    assert_eq!(code, 7, "{err}");
    assert!(
        err.contains("min-serving") && err.contains("--override min-serving"),
        "{err}"
    );

    // Only the two accepted evacuations reached the audit log (each with its route changes).
    assert!(after_two > before);
    assert_eq!(
        audit_len(),
        after_two,
        "refused commands must not be audited or applied"
    );
    let (_, out, _) = cli(&["audit"], &addrs, None);
    assert!(
        out.contains("manual:tester evacuate pangyo override=dwell"),
        "{out}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unhealthy_instance_leaves_after_fall_and_returns_after_rise() {
    use std::sync::atomic::Ordering;
    let cluster = TestCluster::start("");
    let api = Api::new();
    let addrs = cluster.admin_addrs();
    api.wait_leader(&addrs, "control").await;
    let endpoints: Vec<firebreak_tests::FakeEndpoint> = (0..3)
        .map(|_| firebreak_tests::FakeEndpoint::start())
        .collect();
    let topology = format!(
        "sites: [{{name: pangyo}}, {{name: gasan}}, {{name: busan}}]\nservices:\n  - name: web\n    mode: active-active\n    \
         endpoints: {{pangyo: \"{}\", gasan: \"{}\", busan: \"{}\"}}\n    \
         health: {{path: /health, interval_ms: 300, timeout_ms: 200, fall: 3, rise: 2}}\npolicy: {{dwell_ms: 2000}}\n",
        endpoints[0].url, endpoints[1].url, endpoints[2].url
    );
    firebreak_tests::apply_topology(&cluster, "web.yaml", &topology);
    tokio::time::sleep(Duration::from_secs(3)).await;

    endpoints[2].healthy.store(false, Ordering::Relaxed);
    wait_routing(
        &api,
        &addrs[0],
        "busan's unhealthy instance to leave web",
        |v| !serving(v, "web").contains("busan"),
    )
    .await;
    let (_, audit, _) = cli(&["audit"], &addrs, None);
    assert!(
        audit.contains("automatic:failover route web") && audit.contains("busan unhealthy"),
        "{audit}"
    );
    let metrics = api
        .http
        .get(firebreak_tests::url(&addrs[0], "/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("firebreak_service_healthy{service=\"web\",site=\"busan\"} 0"),
        "{metrics}"
    );
    assert!(
        metrics.contains("firebreak_service_serving{service=\"web\",site=\"busan\"} 0"),
        "{metrics}"
    );

    endpoints[2].healthy.store(true, Ordering::Relaxed);
    wait_routing(&api, &addrs[0], "busan to serve web again", |v| {
        serving(v, "web").contains("busan")
    })
    .await;
}

/// A cluster whose service `web` is three fake instances, one per site, all serving;
/// `PUT /web/items/*` is declared safe to repeat.
async fn web_cluster() -> (TestCluster, Api, Vec<firebreak_tests::FakeEndpoint>) {
    let cluster = TestCluster::start("");
    let api = Api::new();
    let addrs = cluster.admin_addrs();
    api.wait_leader(&addrs, "control").await;
    let endpoints: Vec<firebreak_tests::FakeEndpoint> = (0..3)
        .map(|_| firebreak_tests::FakeEndpoint::start())
        .collect();
    let topology = format!(
        "sites: [{{name: pangyo}}, {{name: gasan}}, {{name: busan}}]\nservices:\n  - name: web\n    mode: active-active\n    \
         endpoints: {{pangyo: \"{}\", gasan: \"{}\", busan: \"{}\"}}\n    retry_safe: [\"PUT /web/items/*\"]\n    \
         health: {{path: /health, interval_ms: 300, timeout_ms: 200, fall: 3, rise: 2}}\npolicy: {{dwell_ms: 2000}}\n",
        endpoints[0].url, endpoints[1].url, endpoints[2].url
    );
    firebreak_tests::apply_topology(&cluster, "web.yaml", &topology);
    wait_routing(&api, &addrs[0], "all three sites to serve web", |v| {
        serving(v, "web").len() == 3
    })
    .await;
    (cluster, api, endpoints)
}

/// Requests other than health checks the fake instances have received.
fn requests(endpoints: &[firebreak_tests::FakeEndpoint]) -> usize {
    endpoints
        .iter()
        .map(|e| e.requests.load(std::sync::atomic::Ordering::Relaxed))
        .sum()
}

/// An instance that sheds load is answered as is: the gateway does not try every other
/// site (under overload they are as busy, and with the client also going round every
/// gateway that would multiply the load by the number of sites). An instance that is
/// merely unavailable is still skipped for the next site.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shedding_instance_is_relayed_not_multiplied() {
    use std::sync::atomic::Ordering;
    let (cluster, api, endpoints) = web_cluster().await;
    let get = || async {
        api.http
            .get(firebreak_tests::url(&cluster.addrs()[0], "/web/page"))
            .send()
            .await
            .unwrap()
    };

    for e in &endpoints {
        e.shed.store(true, Ordering::Relaxed);
    }
    let before = requests(&endpoints);
    let response = get().await;
    assert_eq!(response.status(), 503);
    assert!(response.headers().contains_key("x-firebreak-shed"));
    assert!(response.headers().contains_key("retry-after"));
    assert_eq!(
        requests(&endpoints) - before,
        1,
        "one instance asked, not all three"
    );

    // Not shedding but unavailable (plain 503): the gateway tries the next site.
    for e in &endpoints {
        e.shed.store(false, Ordering::Relaxed);
    }
    let first = endpoints
        .iter()
        .position(|e| e.requests.load(Ordering::Relaxed) > 0)
        .expect("the shed request reached one endpoint");
    endpoints[first].healthy.store(false, Ordering::Relaxed);
    let before = requests(&endpoints);
    let response = get().await;
    assert_eq!(response.status(), 200, "served by another site");
    assert_eq!(
        requests(&endpoints) - before,
        2,
        "the unavailable instance, then the next"
    );
}

/// A request whose answer was lost after an instance took it may have been applied. The
/// gateway says so (504 `outcome_unknown`), never 503 (which promises that nothing was
/// applied, so a client would send it anywhere again); it repeats at another site only
/// what the topology declares safe, whatever headers the request carries; and the
/// client reports Unknown, not Failed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_lost_after_reaching_an_instance_is_outcome_unknown() {
    use firebreak_services::client::{Client, ClientConfig, Outcome, Retry};
    let (cluster, api, endpoints) = web_cluster().await;
    for e in &endpoints {
        e.swallow.store(true, std::sync::atomic::Ordering::Relaxed);
    }
    let gateway = &cluster.addrs()[0];
    let send = |method: reqwest::Method, path: &str| {
        api.http
            .request(method, firebreak_tests::url(gateway, path))
            .header("idempotency-key", "not-a-promise")
            .body("{}")
            .send()
    };
    for (method, path, instances) in [
        (reqwest::Method::POST, "/web/orders", 1),
        (reqwest::Method::PUT, "/web/items/7", 3),
        (reqwest::Method::GET, "/web/page", 3),
    ] {
        let before = requests(&endpoints);
        let response = send(method.clone(), path)
            .await
            .expect("the gateway answers");
        let status = response.status();
        let body: Value = response.json().await.unwrap_or_default();
        assert_eq!(status, 504, "{method} {path}: {body}");
        assert_eq!(body["error"]["kind"], "outcome_unknown", "{body}");
        assert_eq!(
            requests(&endpoints) - before,
            instances,
            "{method} {path}: instances that received it"
        );
    }

    let client = Client::new(ClientConfig {
        gateways: cluster.addrs(),
        timeout: Duration::from_secs(5),
        backoff: firebreak_services::backoff::Backoff::default(),
        stream_backoff: firebreak_services::backoff::Backoff::STREAM,
        max_attempts: 3,
        seed: 1,
        tls: firebreak_tests::tls(),
    });
    let outcome = client
        .request(
            reqwest::Method::POST,
            "/web/orders",
            Some(&serde_json::json!({})),
            Retry::Once,
        )
        .await;
    assert!(matches!(outcome, Outcome::Unknown(_)), "{outcome:?}");
}
