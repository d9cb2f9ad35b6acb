//! A whole site burns under traffic: three sites run messaging, payments and login behind
//! the nodes' gateways; a client sends messages, transfers money and logs in continuously;
//! every process of one site is SIGKILLed at once. Within seconds every service answers
//! again through the surviving gateways, and at the end: every acknowledged message is
//! stored once and in order, every acknowledged transfer applied once (unknown ones once or
//! never), the total conserved, and sessions made before the fire still valid.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use firebreak_services::backoff::Backoff;
use firebreak_services::client::{Client, ClientConfig, Outcome};
use firebreak_tests::{Api, TestCluster};

const ROUNDS: usize = 60;
const KILL_AT: usize = 20;
const SEED: u64 = 20_221_015;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn losing_a_whole_site_loses_no_acknowledged_write() {
    let mut cluster = TestCluster::start("");
    let addrs = cluster.addrs();
    Api::new().wait_leader(&addrs, "control").await;
    let mut endpoints: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for i in 0..3 {
        for service in ["messaging", "payments", "login"] {
            let extra: &[&str] = if service == "messaging" {
                &["--keepalive-secs", "5"]
            } else {
                &[]
            };
            let url = cluster.spawn_service(i, service, extra);
            endpoints.entry(service).or_default().push(url);
        }
    }
    let health = "health: { path: /health, interval_ms: 300, timeout_ms: 200, fall: 2, rise: 2 }";
    let service = |name: &str, mode: &str, urls: &[String]| {
        format!(
            "  - name: {name}\n    mode: {mode}\n    endpoints: {{ pangyo: \"{}\", gasan: \"{}\", busan: \"{}\" }}\n    priorities: [pangyo, gasan, busan]\n    {health}\n",
            urls[0], urls[1], urls[2]
        )
    };
    let topology = format!(
        "sites: [{{name: pangyo}}, {{name: gasan}}, {{name: busan}}]\nservices:\n{}{}{}policy: {{ dwell_ms: 2000 }}\n",
        service("messaging", "active-active", &endpoints["messaging"]),
        service("payments", "active-passive", &endpoints["payments"]),
        service("login", "active-active", &endpoints["login"]),
    );
    firebreak_tests::apply_topology(&cluster, "topology.yaml", &topology);
    tokio::time::sleep(Duration::from_secs(3)).await;

    let client = std::sync::Arc::new(Client::new(ClientConfig {
        gateways: addrs.clone(),
        timeout: Duration::from_secs(3),
        backoff: Backoff {
            base: Duration::from_millis(100),
            cap: Duration::from_secs(1),
        },
        max_attempts: 12,
        stream_backoff: Backoff::STREAM,
        seed: SEED,
        tls: firebreak_tests::tls(),
    }));
    assert!(client.open_account("a", 1000).await.ok().is_some());
    assert!(client.open_account("b", 1000).await.ok().is_some());
    assert!(client
        .register("alice", "correct horse battery")
        .await
        .ok()
        .is_some());

    // A recipient holds a push stream through pangyo's gateway (its first), so the fire
    // cuts it; it must reconnect elsewhere by itself and resume.
    let mut pushed = client.follow("room", 0, 50);
    let mut messages = BTreeMap::new();
    let mut transfers = BTreeMap::new();
    let mut sessions = Vec::new();
    let mut kill_time = None;
    let mut first_success_after: BTreeMap<&str, Duration> = BTreeMap::new();
    for round in 0..ROUNDS {
        if round == KILL_AT {
            // pangyo is the payments primary and the gateway clients try first by chance.
            cluster.kill_site(0);
            kill_time = Some(Instant::now());
        }
        let id = format!("m{round}");
        let sent = client
            .send_message("room", &id, "alice", &format!("round {round}"))
            .await;
        let key = format!("t{round}");
        let moved = client.transfer(&key, "a", "b", 1).await;
        let session = client.log_in("alice", "correct horse battery").await;
        if let Some(killed) = kill_time {
            for (name, outcome) in [
                ("messaging", &sent),
                ("payments", &moved),
                ("login", &session),
            ] {
                if outcome.ok().is_some() {
                    first_success_after
                        .entry(name)
                        .or_insert_with(|| killed.elapsed());
                }
            }
        }
        messages.insert(id, sent);
        transfers.insert(key, moved);
        if let Some(body) = session.ok() {
            sessions.push((round, body["token"].as_str().unwrap().to_string()));
        }
    }
    eprintln!("first success after the fire: {first_success_after:?}");
    for name in ["messaging", "payments", "login"] {
        let took = first_success_after
            .get(name)
            .unwrap_or_else(|| panic!("{name} never answered after the fire\n{}", cluster.logs()));
        assert!(
            *took < Duration::from_secs(10),
            "{name} took {took:?} to answer again"
        );
    }

    // Every acknowledged message stored once, in order of seq.
    let stored = client.messages("room", 0).await;
    let stored = stored.ok().expect("messages readable")["messages"]
        .as_array()
        .unwrap()
        .clone();
    let ids: Vec<&str> = stored
        .iter()
        .map(|m| m["client_msg_id"].as_str().unwrap())
        .collect();
    let seqs: Vec<u64> = stored.iter().map(|m| m["seq"].as_u64().unwrap()).collect();
    assert!(
        seqs.windows(2).all(|w| w[1] == w[0] + 1),
        "sequence gaps or disorder: {seqs:?}"
    );
    for (id, outcome) in &messages {
        let copies = ids.iter().filter(|x| *x == id).count();
        match outcome {
            Outcome::Done { .. } if outcome.ok().is_some() => {
                assert_eq!(copies, 1, "acknowledged {id} stored {copies} times")
            }
            Outcome::Unknown(_) => assert!(copies <= 1, "unknown {id} stored {copies} times"),
            _ => assert_eq!(copies, 0, "refused {id} was stored"),
        }
    }

    // The recipient got every stored message once, in order, across its reconnects.
    let mut delivered = Vec::new();
    let deadline = tokio::time::Instant::now() + firebreak_tests::DEADLINE;
    while delivered.len() < stored.len() {
        let message = tokio::time::timeout_at(deadline, pushed.recv())
            .await
            .expect("push delivery in time")
            .expect("stream open");
        delivered.push(message["seq"].as_u64().unwrap());
    }
    assert_eq!(
        delivered, seqs,
        "push delivery must be every message once, in order"
    );

    // Every acknowledged transfer applied once; unknown ones once or never; total conserved.
    let acked = transfers.values().filter(|o| o.ok().is_some()).count() as u64;
    let unknown = transfers
        .values()
        .filter(|o| matches!(o, Outcome::Unknown(_)))
        .count() as u64;
    let balance_b = || async {
        let page = client.accounts(None, 1000).await;
        let page = page.ok().expect("accounts readable");
        let total: u64 = page["accounts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a["balance"].as_u64().unwrap())
            .sum();
        assert_eq!(total, 2000, "money was created or destroyed: {page}");
        let b = client
            .request(
                reqwest::Method::GET,
                "/payments/accounts/b",
                None,
                firebreak_services::client::Retry::Safe,
            )
            .await;
        b.ok().expect("balance readable")["balance"]
            .as_u64()
            .unwrap()
    };
    let moved = balance_b().await - 1000;
    assert!(
        (acked..=acked + unknown).contains(&moved),
        "moved {moved}, acknowledged {acked}, unknown {unknown}"
    );
    for (key, outcome) in &transfers {
        if outcome.ok().is_some() {
            let again = client.transfer(key, "a", "b", 1).await;
            assert_eq!(
                again.ok(),
                outcome.ok(),
                "a retry of {key} must return its first result"
            );
        }
    }
    assert_eq!(
        balance_b().await - 1000,
        moved,
        "retrying acknowledged transfers moved money again"
    );

    // Sessions made before the fire are still valid.
    for (round, token) in sessions.iter().filter(|(r, _)| *r < KILL_AT) {
        let valid = client.validate(token).await;
        assert!(
            valid.ok().is_some(),
            "session from round {round} invalid after the fire: {valid:?}"
        );
    }
    eprintln!(
        "messages acked {}, transfers acked {acked} unknown {unknown}, sessions {}",
        messages.values().filter(|o| o.ok().is_some()).count(),
        sessions.len()
    );
}
