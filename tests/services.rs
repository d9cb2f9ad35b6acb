//! The messaging and login services' promises against a real three-node cluster: a resent
//! message is stored once; a push stream resumed after a cut delivers every later message
//! exactly once and in order; a session made through one instance is valid through
//! another and after the instance that made it is gone.

use std::time::Duration;

use firebreak_services::{login, messaging};
use firebreak_tests::{Api, TestCluster, DEADLINE};
use serde_json::{json, Value};

async fn cluster() -> TestCluster {
    let cluster = TestCluster::start("");
    Api::new().wait_leader(&cluster.addrs(), "state").await;
    cluster
}

async fn messaging_at(cluster: &TestCluster) -> (String, tokio::task::JoinHandle<()>) {
    messaging_with(cluster, cluster.addrs()).await
}

/// A messaging instance of `cluster` that asks `nodes`, in that order.
async fn messaging_with(
    cluster: &TestCluster,
    nodes: Vec<String>,
) -> (String, tokio::task::JoinHandle<()>) {
    let config = messaging::Config {
        state_tls: cluster.service_tls("messaging"),
        // In process, plain HTTP: the instances' TLS is the end-to-end tests' subject.
        server_tls: None,
        nodes,
        max_concurrent: 64,
        max_streams: 16,
        keepalive: Duration::from_secs(1),
        reconnect_window: None,
        state_timeout: Duration::from_secs(5),
    };
    let (addr, task) = messaging::spawn("127.0.0.1:0".parse().unwrap(), config)
        .await
        .unwrap();
    (format!("http://{addr}"), task)
}

async fn send(http: &reqwest::Client, base: &str, id: &str, body: &str) -> Value {
    let request = json!({ "client_msg_id": id, "sender": "alice", "body": body });
    let response = http
        .post(format!("{base}/messaging/conversations/room1/messages"))
        .json(&request)
        .send()
        .await
        .unwrap();
    assert!(
        response.status().is_success(),
        "send answered {}",
        response.status()
    );
    response.json().await.unwrap()
}

/// Opens `conversation`'s push stream at `base`.
async fn open_stream(http: &reqwest::Client, base: &str, conversation: &str) -> reqwest::Response {
    let stream = http
        .get(format!(
            "{base}/messaging/conversations/{conversation}/stream"
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(stream.status(), 200);
    stream
}

/// Sends message `id` to `conversation` at `base` until it is applied; asserts it was.
async fn send_applied(http: &reqwest::Client, base: &str, conversation: &str, id: &str) {
    let url = format!("{base}/messaging/conversations/{conversation}/messages");
    let request = json!({ "client_msg_id": id, "sender": "bob", "body": "x" });
    let sent = firebreak_tests::post_until_applied(http, &url, &request).await;
    assert!(sent.status().is_success(), "{id}: {}", sent.status());
}

/// The next pushed event's id, which must come within `allowed`; logs how long it took.
async fn pushed_within(stream: &mut reqwest::Response, allowed: Duration) -> u64 {
    let acknowledged = std::time::Instant::now();
    let pushed = tokio::time::timeout(allowed, read_events(stream, 1))
        .await
        .unwrap_or_else(|_| panic!("not pushed within {allowed:?} of its acknowledgement"));
    eprintln!(
        "pushed {:?} after its acknowledgement",
        acknowledged.elapsed()
    );
    pushed[0].0
}

/// Reads SSE events (id, data) until `count` arrived or the deadline passes.
async fn read_events(response: &mut reqwest::Response, count: usize) -> Vec<(u64, Value)> {
    let mut buffer = String::new();
    let mut events = Vec::new();
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while events.len() < count {
        let chunk = tokio::time::timeout_at(deadline, response.chunk())
            .await
            .expect("events in time")
            .unwrap()
            .expect("stream open");
        buffer.push_str(&String::from_utf8_lossy(&chunk));
        while let Some(end) = buffer.find("\n\n") {
            let block: String = buffer.drain(..end + 2).collect();
            let id = block
                .lines()
                .find_map(|l| l.strip_prefix("id:"))
                .map(|v| v.trim().parse::<u64>().unwrap());
            let data = block
                .lines()
                .find_map(|l| l.strip_prefix("data:"))
                .map(|v| serde_json::from_str(v.trim()).unwrap());
            if let (Some(id), Some(data)) = (id, data) {
                events.push((id, data));
            }
        }
    }
    events
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resends_are_stored_once_and_streams_resume_exactly_once_in_order() {
    let cluster = cluster().await;
    let (base, task) = messaging_at(&cluster).await;
    let http = reqwest::Client::new();

    let first = send(&http, &base, "m1", "hello").await;
    let again = send(&http, &base, "m1", "hello").await;
    assert_eq!(
        (first["seq"].clone(), again["duplicate"].clone()),
        (json!(1), json!(true))
    );
    assert_eq!(again["seq"], 1, "a resend keeps the first seq");

    let mut stream = http
        .get(format!("{base}/messaging/conversations/room1/stream"))
        .send()
        .await
        .unwrap();
    for i in 2..=5 {
        send(&http, &base, &format!("m{i}"), "x").await;
    }
    let seen = read_events(&mut stream, 5).await;
    assert_eq!(
        seen.iter().map(|(id, _)| *id).collect::<Vec<_>>(),
        vec![1, 2, 3, 4, 5]
    );
    drop(stream); // the cut

    for i in 6..=10 {
        send(&http, &base, &format!("m{i}"), "while away").await;
    }
    // Reconnect (to a second instance: another site) and resume from the last event seen.
    let (other, other_task) = messaging_at(&cluster).await;
    let mut resumed = http
        .get(format!("{other}/messaging/conversations/room1/stream"))
        .header("last-event-id", "5")
        .send()
        .await
        .unwrap();
    let backlog = read_events(&mut resumed, 5).await;
    assert_eq!(
        backlog.iter().map(|(id, _)| *id).collect::<Vec<_>>(),
        vec![6, 7, 8, 9, 10]
    );
    send(&http, &base, "m11", "live").await;
    send(&http, &base, "m1", "hello").await; // a late resend is still stored once
    let live = read_events(&mut resumed, 1).await;
    assert_eq!(live[0].0, 11);
    assert_eq!(live[0].1["body"], "live");
    task.abort();
    other_task.abort();
}

/// A login instance's config against `cluster`, plain HTTP to its callers.
fn login_config(
    cluster: &TestCluster,
    session_ttl: Duration,
    sweep_interval: Duration,
) -> login::Config {
    login::Config {
        state_tls: cluster.service_tls("login"),
        server_tls: None,
        nodes: cluster.addrs(),
        max_concurrent: 64,
        max_hashing: 2,
        hashing_nice: login::DEFAULT_HASHING_NICE,
        session_ttl,
        sweep_interval,
        state_timeout: Duration::from_secs(5),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_made_in_one_instance_is_valid_in_another_after_the_first_is_gone() {
    let cluster = cluster().await;
    let http = reqwest::Client::new();
    let config = login_config(&cluster, Duration::from_secs(3600), Duration::from_secs(60));
    let (first, first_task) = login::spawn("127.0.0.1:0".parse().unwrap(), config.clone())
        .await
        .unwrap();
    let credentials = json!({ "user": "alice", "password": "correct horse battery" });
    let users = format!("http://{first}/login/users");
    let created = firebreak_tests::post_until_applied(&http, &users, &credentials).await;
    assert_eq!(created.status(), 201);
    let again = http
        .post(format!("http://{first}/login/users"))
        .json(&credentials)
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 409, "a user is registered once");
    let wrong = json!({ "user": "alice", "password": "wrong password!" });
    assert_eq!(
        http.post(format!("http://{first}/login/sessions"))
            .json(&wrong)
            .send()
            .await
            .unwrap()
            .status(),
        401
    );
    let session: Value = http
        .post(format!("http://{first}/login/sessions"))
        .json(&credentials)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let token = session["token"].as_str().unwrap().to_string();
    first_task.abort(); // the instance that made the session is gone

    let (second, second_task) = login::spawn("127.0.0.1:0".parse().unwrap(), config)
        .await
        .unwrap();
    let valid: Value = http
        .get(format!("http://{second}/login/sessions/{token}"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(valid["user"], "alice");
    assert_eq!(
        http.delete(format!("http://{second}/login/sessions/{token}"))
            .send()
            .await
            .unwrap()
            .status(),
        204
    );
    assert_eq!(
        http.get(format!("http://{second}/login/sessions/{token}"))
            .send()
            .await
            .unwrap()
            .status(),
        401
    );
    second_task.abort();
}

/// A login instance that hashes one password at a time, with `user` registered: its
/// address, task, a client and the user's credentials.
async fn one_slot_login(
    cluster: &TestCluster,
    user: &str,
) -> (String, tokio::task::JoinHandle<()>, reqwest::Client, Value) {
    let http = reqwest::Client::new();
    let mut config = login_config(cluster, Duration::from_secs(3600), Duration::from_secs(60));
    config.max_hashing = 1;
    let (addr, task) = login::spawn("127.0.0.1:0".parse().unwrap(), config)
        .await
        .unwrap();
    let credentials = json!({ "user": user, "password": "correct horse battery" });
    let users = format!("http://{addr}/login/users");
    let created = firebreak_tests::post_until_applied(&http, &users, &credentials).await;
    assert_eq!(created.status(), 201);
    (addr.to_string(), task, http, credentials)
}

/// Two logins arriving together at an instance that hashes one password at a time both
/// succeed: the second waits its turn for a moment instead of being shed at once (a
/// shed login costs its user a retry after a second).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_login_waits_briefly_for_a_hashing_slot_instead_of_being_shed() {
    let cluster = cluster().await;
    let (addr, task, http, credentials) = one_slot_login(&cluster, "carol").await;
    let log_in = || async {
        http.post(format!("http://{addr}/login/sessions"))
            .json(&credentials)
            .send()
            .await
            .unwrap()
    };
    let (first, second) = tokio::join!(log_in(), log_in());
    for answer in [first, second] {
        let status = answer.status();
        assert_eq!(
            status,
            201,
            "a login at the same moment as another: {}",
            answer.text().await.unwrap()
        );
    }
    task.abort();
}

/// A burst of logins at one instance with one hashing slot: each caller allows 2 s (the
/// deadline header a gateway sends), so each waits for its turn, up to half of that,
/// instead of being shed after a fixed 200 ms and paying the client's `Retry-After` (1 s)
/// and a second trip. Red on the old code: the logins queued past 200 ms were answered 503.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_logins_waits_for_hashing_within_the_callers_deadline() {
    const BURST: usize = 6;
    let cluster = cluster().await;
    let (addr, task, http, credentials) = one_slot_login(&cluster, "dave").await;
    let burst: Vec<_> = (0..BURST)
        .map(|_| {
            let request = http
                .post(format!("http://{addr}/login/sessions"))
                .header("x-firebreak-deadline-ms", "2000")
                .json(&credentials);
            tokio::spawn(async move { request.send().await.unwrap().status().as_u16() })
        })
        .collect();
    let mut statuses = Vec::new();
    for login in burst {
        statuses.push(login.await.unwrap());
    }
    assert_eq!(
        statuses,
        vec![201; BURST],
        "every login of the burst is served"
    );
    task.abort();
}

/// Expired sessions leave the state group in bounded sweeps; live ones stay. Without the
/// sweep, every login ever made would stay in state and snapshots.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_sessions_are_swept_and_live_ones_kept() {
    use firebreak_services::state::StateClient;
    let cluster = cluster().await;
    let http = reqwest::Client::new();
    let config = login_config(&cluster, Duration::from_secs(3), Duration::from_millis(300));
    let state = StateClient::new(
        cluster.addrs(),
        cluster.service_tls("login"),
        Duration::from_secs(5),
    );
    let sessions = || async {
        let (entries, _) = state
            .range("login/sessions/", None, 1000)
            .await
            .expect("range");
        entries.len()
    };
    let (addr, task) = login::spawn("127.0.0.1:0".parse().unwrap(), config)
        .await
        .unwrap();
    let credentials = json!({ "user": "bob", "password": "correct horse battery" });
    let users = format!("http://{addr}/login/users");
    let created = firebreak_tests::post_until_applied(&http, &users, &credentials).await;
    assert_eq!(created.status(), 201);
    let log_in = || async {
        let url = format!("http://{addr}/login/sessions");
        let answer = firebreak_tests::post_until_applied(&http, &url, &credentials).await;
        let session: Value = answer.json().await.unwrap();
        session["token"].as_str().expect("a token").to_string()
    };
    for _ in 0..40 {
        log_in().await;
    }
    assert_eq!(sessions().await, 40);
    let started = std::time::Instant::now();
    while sessions().await > 0 {
        assert!(
            started.elapsed() < firebreak_tests::DEADLINE,
            "expired sessions were never swept"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // A live session outlasts several sweeps.
    let token = log_in().await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let valid = http
        .get(format!("http://{addr}/login/sessions/{token}"))
        .send()
        .await
        .unwrap();
    assert_eq!(valid.status(), 200, "a live session was swept");
    assert_eq!(sessions().await, 1);
    task.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_waits_as_long_as_retry_after_asks() {
    use firebreak_services::backoff::Backoff;
    use firebreak_services::client::{Client, ClientConfig};
    use std::sync::atomic::Ordering;
    let endpoint = firebreak_tests::FakeEndpoint::start();
    endpoint.healthy.store(false, Ordering::Relaxed); // 503 with Retry-After: 1
    let client = Client::new(ClientConfig {
        gateways: vec![endpoint.url.trim_start_matches("http://").to_string()],
        timeout: Duration::from_secs(2),
        // A tiny backoff: only Retry-After can explain a wait of a second.
        backoff: Backoff {
            base: Duration::from_millis(1),
            cap: Duration::from_millis(2),
        },
        max_attempts: 2,
        stream_backoff: Backoff::STREAM,
        seed: 7,
        tls: firebreak_tls::ClientTls::plaintext_for_debugging(),
    });
    let healthy = endpoint.healthy.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(100)).await;
        healthy.store(true, Ordering::Relaxed);
    });
    let started = std::time::Instant::now();
    let outcome = client
        .request(
            reqwest::Method::GET,
            "/health",
            None,
            firebreak_services::client::Retry::Safe,
        )
        .await;
    assert!(
        matches!(
            outcome,
            firebreak_services::client::Outcome::Done { status: 200, .. }
        ),
        "{outcome:?}"
    );
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "retried after {:?}, before Retry-After",
        started.elapsed()
    );
}

/// What an idle push stream costs: the keepalive's bytes as received, measured over a few
/// intervals, turned into bytes per hour at the default keepalive (TCP/IP headers added:
/// 52 bytes for the segment and 52 for its ACK, IPv4 with timestamps).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_push_stream_costs_a_few_hundred_bytes_an_hour() {
    let cluster = cluster().await;
    let (base, task) = messaging_at(&cluster).await; // keepalive every second
    let http = reqwest::Client::new();
    let mut stream = http
        .get(format!("{base}/messaging/conversations/quiet/stream"))
        .send()
        .await
        .unwrap();
    // The answer tells clients how often to expect a sign of life.
    assert_eq!(
        stream.headers()["x-firebreak-keepalive-ms"],
        "1000",
        "the stream must advertise its keepalive"
    );
    let mut bytes = 0usize;
    let mut keepalives = 0usize;
    let deadline = tokio::time::Instant::now() + Duration::from_millis(4500);
    while let Ok(Ok(Some(chunk))) = tokio::time::timeout_at(deadline, stream.chunk()).await {
        bytes += chunk.len();
        keepalives += 1;
    }
    assert!(
        keepalives >= 3,
        "expected a keepalive a second, got {keepalives}"
    );
    let per_keepalive = bytes as f64 / keepalives as f64 + 104.0;
    let default_interval_secs = 900.0;
    let per_hour = per_keepalive * 3600.0 / default_interval_secs;
    let per_month_mb = per_hour * 24.0 * 30.0 / 1e6;
    eprintln!("idle stream: {per_keepalive:.0} bytes per keepalive on the wire; at 900 s: {per_hour:.0} B/hour, {per_month_mb:.2} MB/month (2011: 4.6 MB/month)");
    assert!(
        per_month_mb < 0.46,
        "an idle stream costs {per_month_mb:.2} MB a month, over a tenth of 2011's 4.6 MB"
    );
    task.abort();
}

/// Streams share one watch per instance: twelve streams work on nodes that allow only
/// four watchers each (one watch per stream would be refused with 429).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_streams_share_one_watch_on_the_node() {
    let cluster = TestCluster::start("api:\n  max_watchers: 4\n");
    Api::new().wait_leader(&cluster.addrs(), "state").await;
    let (base, task) = messaging_at(&cluster).await;
    let http = reqwest::Client::new();
    // Right after start the state group may elect again: wait until it takes a write.
    let warm_up = json!({ "client_msg_id": "w", "sender": "bob", "body": "warm-up" });
    let url = format!("{base}/messaging/conversations/warm-up/messages");
    let warmed = firebreak_tests::post_until_applied(&http, &url, &warm_up).await;
    assert!(warmed.status().is_success(), "{}", warmed.status());
    let mut streams = Vec::new();
    for c in 0..12 {
        streams.push(
            http.get(format!("{base}/messaging/conversations/c{c}/stream"))
                .send()
                .await
                .unwrap(),
        );
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    for c in 0..12 {
        let request =
            json!({ "client_msg_id": "only", "sender": "bob", "body": format!("to c{c}") });
        let url = format!("{base}/messaging/conversations/c{c}/messages");
        let sent = firebreak_tests::post_until_applied(&http, &url, &request).await;
        assert!(sent.status().is_success(), "{}", sent.status());
    }
    for (c, stream) in streams.iter_mut().enumerate() {
        let events = read_events(stream, 1).await;
        assert_eq!(events[0].1["body"], format!("to c{c}"));
    }
    // The instance allows 16 open streams; the 17th is shed with 503 and Retry-After.
    for c in 12..16 {
        streams.push(
            http.get(format!("{base}/messaging/conversations/c{c}/stream"))
                .send()
                .await
                .unwrap(),
        );
    }
    let shed = http
        .get(format!("{base}/messaging/conversations/c99/stream"))
        .send()
        .await
        .unwrap();
    assert_eq!(shed.status(), 503);
    assert_eq!(shed.headers()["retry-after"], "1");
    task.abort();
}

/// A node that does not answer at all (a partition drops packets without a word; the
/// kernel still completes the TCP handshake of a listener that never accepts) must not
/// hold a messaging instance's pushes, nor turn its sends into unknown outcomes. On ssh
/// hosts, where a partition drops packets, the instances' calls fell through to the
/// cut-off node and waited on it for the whole 20 s partition (`site-isolation`: pushes
/// 20 s late).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_node_does_not_hold_the_pushes() {
    let cluster = cluster().await;
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let mut nodes = vec![silent.local_addr().unwrap().to_string()];
    nodes.extend(cluster.addrs());
    let (cut, cut_task) = messaging_with(&cluster, nodes).await;
    // Messages are sent at another site, whose instance asks the cluster's nodes only.
    let (elsewhere, elsewhere_task) = messaging_at(&cluster).await;
    let http = reqwest::Client::new();
    let mut stream = open_stream(&http, &cut, "cut").await;
    // The playbooks allow a push 6 s after its acknowledgement; a call that waits on the
    // silent node takes the instance's state timeout (5 s) once, then it is asked last.
    let allowed = Duration::from_secs(8);
    for i in 1..=3u64 {
        send_applied(&http, &elsewhere, "cut", &format!("c{i}")).await;
        assert_eq!(pushed_within(&mut stream, allowed).await, i, "message {i}");
    }
    // A node that never took the request is no unknown outcome: the send goes on to the
    // next node (the silent one is asked last by now, but a TLS handshake that never ends
    // is a failed connection too).
    send_applied(&http, &cut, "cut", "c4").await;
    cut_task.abort();
    elsewhere_task.abort();
}

/// A TCP relay to `target` that a test can cut like a partition: once cut, it keeps
/// every connection open and passes nothing either way (packets dropped, no reset).
struct Link {
    addr: String,
    cut: std::sync::Arc<std::sync::atomic::AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl Link {
    async fn to(target: String) -> Self {
        use std::sync::atomic::AtomicBool;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let cut = std::sync::Arc::new(AtomicBool::new(false));
        let flag = cut.clone();
        let task = tokio::spawn(async move {
            while let Ok((inbound, _)) = listener.accept().await {
                let (target, flag) = (target.clone(), flag.clone());
                tokio::spawn(async move {
                    let Ok(outbound) = tokio::net::TcpStream::connect(&target).await else {
                        return;
                    };
                    let (a_read, a_write) = inbound.into_split();
                    let (b_read, b_write) = outbound.into_split();
                    tokio::join!(
                        pass(a_read, b_write, flag.clone()),
                        pass(b_read, a_write, flag)
                    );
                });
            }
        });
        Self { addr, cut, task }
    }

    fn cut(&self) {
        self.cut.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

/// Copies `from` to `to` until either closes, holding everything while `cut` is set.
async fn pass(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    cut: std::sync::Arc<std::sync::atomic::AtomicBool>,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut buffer = vec![0u8; 16 * 1024];
    loop {
        let n = from.read(&mut buffer).await.unwrap_or(0);
        // Cut: the connection stays open and silent.
        while cut.load(std::sync::atomic::Ordering::Relaxed) {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        if n == 0 || to.write_all(&buffer[..n]).await.is_err() {
            return;
        }
    }
}

impl Drop for Link {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A service whose own node is down long-polls another site's node; when a partition
/// cuts that node mid-poll, the service's pushes may not wait for the poll to end. On
/// ssh hosts the messaging instance of gasan, started a moment before its node, watched
/// pangyo's node with a 25 s wait; pangyo was cut off, and every push through gasan came
/// 20 s late.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_cut_off_mid_poll_does_not_hold_the_pushes() {
    let cluster = cluster().await;
    let addrs = cluster.addrs();
    // The own node: a port where nothing listens (refused at once).
    let down = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let own = down.local_addr().unwrap().to_string();
    drop(down);
    let link = Link::to(addrs[0].clone()).await;
    let mut nodes = vec![own, link.addr.clone()];
    nodes.extend(addrs[1..].iter().cloned());
    let (cut, cut_task) = messaging_with(&cluster, nodes).await;
    let (elsewhere, elsewhere_task) = messaging_at(&cluster).await;
    let http = reqwest::Client::new();
    let mut stream = open_stream(&http, &cut, "mid").await;
    send_applied(&http, &elsewhere, "mid", "before").await;
    let first = read_events(&mut stream, 1).await;
    assert_eq!(
        first[0].0, 1,
        "pushed through the linked node before the cut"
    );
    // The instance long-polls through the link now; cut it mid-poll.
    tokio::time::sleep(Duration::from_millis(500)).await;
    link.cut();
    send_applied(&http, &elsewhere, "mid", "after").await;
    assert_eq!(pushed_within(&mut stream, Duration::from_secs(8)).await, 2);
    cut_task.abort();
    elsewhere_task.abort();
}
