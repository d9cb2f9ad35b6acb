//! The reconnect storm: idle push clients connected to one site's messaging instance lose
//! it at once. Half use firebreak's client (capped exponential backoff from a 1 s window,
//! full jitter, another gateway), half a naive client that reconnects at once; both in the same run. The
//! survivors see the naive half arrive in one burst and firebreak's half spread out.
//!
//! `FIREBREAK_STORM_CLIENTS` sets the number of clients (default 2,000 in CI; the README's
//! figures use 10,000).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use firebreak_services::backoff::Backoff;
use firebreak_services::client::{Client, ClientConfig, StreamEvent};
use firebreak_tests::{Api, TestCluster};

/// Attempt times of one group of clients.
type Attempts = Arc<Mutex<Vec<Instant>>>;

/// A naive follower: on any disconnect, reconnect at once to the next address.
fn naive_follow(addrs: Vec<String>, attempts: Attempts, received: Arc<AtomicUsize>) {
    tokio::spawn(async move {
        let http = firebreak_tests::stream_http();
        for i in 0..1000usize {
            attempts.lock().unwrap().push(Instant::now());
            let url = format!(
                "https://{}/messaging/conversations/room/stream",
                addrs[i % addrs.len()]
            );
            if let Ok(mut response) = http.get(url).header("last-event-id", "0").send().await {
                while let Ok(Some(chunk)) = response.chunk().await {
                    let data = String::from_utf8_lossy(&chunk).matches("data:").count();
                    received.fetch_add(data, Ordering::Relaxed);
                }
            }
        }
    });
}

/// Peak attempts in one 100 ms window after `since`, and when the last attempt came.
fn peak(attempts: &Attempts, since: Instant) -> (usize, Duration) {
    let times = attempts.lock().unwrap();
    let mut windows = std::collections::BTreeMap::<u128, usize>::new();
    let mut last = Duration::ZERO;
    for t in times.iter().filter(|t| **t >= since) {
        let d = t.duration_since(since);
        *windows.entry(d.as_millis() / 100).or_default() += 1;
        last = last.max(d);
    }
    (windows.values().copied().max().unwrap_or(0), last)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jittered_clients_spread_their_reconnects_and_naive_ones_do_not() {
    let clients: usize = std::env::var("FIREBREAK_STORM_CLIENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2000);
    let half = clients / 2;
    let mut cluster = TestCluster::start("");
    Api::new().wait_leader(&cluster.addrs(), "state").await;
    let streams = (clients + 100).to_string();
    let instances: Vec<String> = (0..3)
        .map(|i| {
            cluster.spawn_service(
                i,
                "messaging",
                &["--max-streams", &streams, "--keepalive-secs", "900"],
            )
        })
        .map(|url| url.trim_start_matches("https://").to_string())
        .collect();
    tokio::time::sleep(Duration::from_millis(500)).await;

    let jittered: Attempts = Arc::default();
    let naive: Attempts = Arc::default();
    let received = Arc::new(AtomicUsize::new(0));
    let client = Arc::new(Client::new(ClientConfig {
        gateways: instances.clone(),
        timeout: Duration::from_secs(5),
        backoff: Backoff {
            base: Duration::from_millis(500),
            cap: Duration::from_secs(10),
        },
        max_attempts: 5,
        stream_backoff: Backoff::STREAM,
        seed: 2011,
        // Straight to the instances, over TLS as the gateways reach them.
        tls: firebreak_tls::ClientTls::new(&firebreak_tests::ca_file(), None).unwrap(),
    }));
    let mut receivers = Vec::new();
    for _ in 0..half {
        let recorder = jittered.clone();
        receivers.push(client.follow_observed(
            "room",
            0,
            30,
            Arc::new(move |event| {
                if matches!(event, StreamEvent::Attempt { .. }) {
                    recorder.lock().unwrap().push(Instant::now())
                }
            }),
        ));
        naive_follow(instances.clone(), naive.clone(), received.clone());
    }
    // Everyone is connected once a message reaches all of them.
    let http = firebreak_tests::http();
    let send = |id: &'static str| {
        let (http, url) = (
            http.clone(),
            format!(
                "https://{}/messaging/conversations/room/messages",
                instances[1]
            ),
        );
        async move {
            let body = serde_json::json!({ "client_msg_id": id, "sender": "ops", "body": id });
            // Bounded retries: the instance may be busy with the connection flood.
            for attempt in 0..50 {
                let response = http.post(&url).json(&body).send().await;
                match response {
                    Ok(r) if r.status().is_success() => return,
                    Ok(r) => eprintln!(
                        "send {id} attempt {attempt}: {} {}",
                        r.status(),
                        r.text().await.unwrap_or_default()
                    ),
                    Err(e) => eprintln!("send {id} attempt {attempt}: {e}"),
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            panic!("could not send {id}");
        }
    };
    let deadline = Instant::now() + Duration::from_secs(120);
    send("hello").await;
    for rx in &mut receivers {
        let message = tokio::time::timeout_at(deadline.into(), rx.recv())
            .await
            .expect("connected in time")
            .unwrap();
        assert_eq!(message["seq"], 1);
    }
    while received.load(Ordering::Relaxed) < half {
        assert!(
            Instant::now() < deadline,
            "naive clients did not all connect"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // pangyo's messaging instance dies: every stream breaks at once.
    let killed = Instant::now();
    cluster.kill_site_services(0);
    send("after").await;
    for rx in &mut receivers {
        let message = tokio::time::timeout_at(deadline.into(), rx.recv())
            .await
            .expect("back in time")
            .unwrap();
        assert_eq!(
            message["seq"], 2,
            "every jittered client resumes with the next message, once"
        );
    }
    let all_back = killed.elapsed();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (jitter_peak, jitter_last) = peak(&jittered, killed);
    let (naive_peak, naive_last) = peak(&naive, killed);
    eprintln!(
        "{clients} clients, half each: firebreak client peak {jitter_peak} reconnects/100 ms, last at {jitter_last:?}, \
         all back and caught up after {all_back:?}; naive client peak {naive_peak} reconnects/100 ms, last at {naive_last:?}"
    );
    // Full jitter over a 1 s first window: about a tenth of the clients per 100 ms.
    let share = jitter_peak as f64 / half as f64;
    assert!(
        share < 0.35,
        "the busiest 100 ms took {share:.2} of the jittered clients' reconnects"
    );
    // The naive half arrives as fast as the machine can open connections: a sharper peak.
    assert!(
        naive_peak > jitter_peak,
        "naive peak {naive_peak} should exceed jittered peak {jitter_peak}"
    );
}
