//! The end-to-end test harness: a cluster of real `firebreak node` child processes.
//!
//! Each node gets a config, data dir and log file in a temp dir and listens on its own
//! free port on 127.0.0.1. The harness keeps every child's handle and kills exactly those
//! children (never by name), also when a test fails: `Drop` SIGKILLs whatever still runs.
//! The binary is `target/<profile>/firebreak`, built by `cargo test --workspace` (the CLI
//! package's own tests need it), or `FIREBREAK_BIN` if set.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use firebreak_tls::pki::{self, Validity};
use firebreak_tls::{ClientTls, Identity, Role};
use serde_json::Value;
use tempfile::TempDir;

/// Sites of the test clusters, in node-id order.
pub const SITES: [&str; 3] = ["pangyo", "gasan", "busan"];
/// The operator token every test node accepts (as `tester`).
pub const TEST_TOKEN: &str = "test-token-0123456789abcdef";

/// The cluster name of every test cluster.
pub const CLUSTER: &str = "e2e";

/// Prefix of the test CA's directory; the process id follows.
const CA_DIR_PREFIX: &str = "firebreak-e2e-ca-";

/// The CA every test cluster of this process uses (made once, in the OS temp dir: a test
/// process may run many clusters at once, and the CLI and clients trust this one CA).
/// A static is never dropped, so each test process removes the CAs of test processes that
/// have exited instead.
pub fn ca_dir() -> &'static std::path::Path {
    static CA: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    CA.get_or_init(|| {
        remove_dead_processes_cas();
        let dir = std::env::temp_dir().join(format!("{CA_DIR_PREFIX}{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        pki::init_ca(&dir, CLUSTER, Validity::days(2)).expect("make the test CA");
        dir
    })
}

/// Removes `firebreak-e2e-ca-<pid>` directories whose process is gone.
fn remove_dead_processes_cas() {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let pid = name.to_str().and_then(|n| n.strip_prefix(CA_DIR_PREFIX));
        if let Some(pid) = pid.filter(|p| p.parse::<u32>().is_ok()) {
            if !std::path::Path::new("/proc").join(pid).exists() {
                let _ = std::fs::remove_dir_all(entry.path());
            }
        }
    }
}

/// The test CA's certificate.
pub fn ca_file() -> PathBuf {
    ca_dir().join(pki::CA_CERT)
}

/// TLS that trusts the test CA, presenting no certificate.
pub fn tls() -> ClientTls {
    tls_as(&ca_file(), None)
}

/// TLS that trusts the CA certificate at `ca` and presents `cert` if given.
pub fn tls_as(ca: &std::path::Path, cert: Option<&pki::Issued>) -> ClientTls {
    let keys = cert.map(|c| {
        firebreak_tls::Keys::load(firebreak_tls::KeyFiles {
            cert: c.cert.clone(),
            key: c.key.clone(),
        })
        .expect("keys load")
    });
    ClientTls::new(ca, keys).expect("CA loads")
}

/// An HTTP client (10 s per request) over [`tls_as`].
pub fn http_as(ca: &std::path::Path, cert: Option<&pki::Issued>) -> reqwest::Client {
    tls_as(ca, cert)
        .apply(reqwest::Client::builder())
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client")
}

/// `https://addr/path`: a node's client listener.
pub fn url(addr: &str, path: &str) -> String {
    tls().url(addr, path)
}

/// An HTTP client that trusts the test CA (for gateways and client listeners).
pub fn http() -> reqwest::Client {
    http_as(&ca_file(), None)
}

/// Like [`http`] but with no overall timeout, for push streams that live as long as their
/// connection (a connect timeout still bounds reaching a dead address).
pub fn stream_http() -> reqwest::Client {
    tls()
        .apply(reqwest::Client::builder())
        .connect_timeout(Duration::from_secs(5))
        .build()
        .expect("client")
}

/// Issues a certificate of the test CA for `role`, into `out` as `<stem>.pem`/`.key`.
pub fn issue(role: Role, hosts: &[&str], out: &std::path::Path, stem: &str) -> pki::Issued {
    let identity = Identity {
        cluster: CLUSTER.into(),
        role,
    };
    let hosts: Vec<String> = hosts.iter().map(|h| h.to_string()).collect();
    pki::issue(ca_dir(), &identity, &hosts, Validity::days(1), out, stem).expect("issue")
}

/// Runs the firebreak CLI against `nodes` (client or admin listeners, as the command
/// needs: both flags get the list); returns exit code, stdout and stderr.
pub fn cli(args: &[&str], nodes: &[String], token: Option<&str>) -> (i32, String, String) {
    let mut command = Command::new(binary());
    command
        .args(args)
        .env("FIREBREAK_NODES", nodes.join(","))
        .env("FIREBREAK_ADMIN_NODES", nodes.join(","))
        .env("FIREBREAK_CA", ca_file())
        .env_remove("FIREBREAK_TOKEN");
    if let Some(token) = token {
        command.env("FIREBREAK_TOKEN", token);
    }
    let out = command.output().expect("run firebreak");
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    (
        out.status.code().unwrap_or(-1),
        text(&out.stdout),
        text(&out.stderr),
    )
}

/// Writes `yaml` to `name` in the cluster's dir and applies it with the CLI, as an operator.
pub fn apply_topology(cluster: &TestCluster, name: &str, yaml: &str) {
    let path = cluster.dir.path().join(name);
    std::fs::write(&path, yaml).expect("write topology");
    // Right after an election a node may not know its leader yet (a busy machine runs
    // several clusters at once): that refusal changed nothing, so try again until DEADLINE.
    let started = Instant::now();
    loop {
        let (code, out, err) = cli(
            &["topology", "apply", path.to_str().unwrap()],
            &cluster.admin_addrs(),
            Some(TEST_TOKEN),
        );
        let electing = err.contains("no leader is known yet");
        if code == 0 || !electing || started.elapsed() > DEADLINE {
            assert_eq!(code, 0, "topology apply failed: {out}{err}");
            return;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// A topology whose one service per mode is the nodes' own HTTP API (`/v1/health`), so a
/// dead node is a dead service instance.
pub fn node_topology(cluster: &TestCluster) -> String {
    let endpoints: Vec<String> = cluster
        .nodes
        .iter()
        .map(|n| format!("      {}: https://{}\n", n.site, n.addr))
        .collect();
    let endpoints = endpoints.concat();
    format!(
        "sites:\n  - name: pangyo\n  - name: gasan\n  - name: busan\nservices:\n\
         \x20 - name: api\n    mode: active-active\n    endpoints:\n{endpoints}\
         \x20   health: {{ path: /v1/health, interval_ms: 500, timeout_ms: 250, fall: 3, rise: 2 }}\n\
         \x20 - name: ledger\n    mode: active-passive\n    endpoints:\n{endpoints}\
         \x20   priorities: [pangyo, gasan, busan]\n\
         \x20   health: {{ path: /v1/health, interval_ms: 500, timeout_ms: 250, fall: 3, rise: 2 }}\n"
    )
}

/// The sites serving `service` in a `/v1/routing` answer (none if it has no route).
pub fn serving(view: &Value, service: &str) -> std::collections::BTreeSet<String> {
    view["routes"][service]["serving"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|s| s.as_str().map(String::from))
        .collect()
}

/// How long any wait in these tests may take before it fails.
pub const DEADLINE: Duration = Duration::from_secs(30);

/// How often [`eventually`] asks again.
const POLL: Duration = Duration::from_millis(50);

/// The one way these tests wait on the cluster's timing: asks `condition` every 50 ms
/// until it answers `Ok`, for at most `within`; then fails the test with `what` and the
/// last `Err` (what the condition saw instead). A condition reads state; it never
/// retries an action that failed.
pub async fn eventually<T, F, Fut>(within: Duration, what: &str, mut condition: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, String>>,
{
    let deadline = Instant::now() + within;
    loop {
        match condition().await {
            Ok(value) => return value,
            Err(last) if Instant::now() >= deadline => {
                panic!("{what}: not within {within:?}; last: {last}")
            }
            Err(_) => tokio::time::sleep(POLL).await,
        }
    }
}

/// POSTs `body` to `url` again while the answer is 503 (nothing applied: right after
/// start the state group may elect again), for up to [`DEADLINE`]; the last answer.
pub async fn post_until_applied(
    http: &reqwest::Client,
    url: &str,
    body: &Value,
) -> reqwest::Response {
    let started = Instant::now();
    loop {
        let response = http
            .post(url)
            .json(body)
            .send()
            .await
            .expect("the service answers");
        if response.status() != 503 || started.elapsed() > DEADLINE {
            return response;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Path of the firebreak binary under test.
pub fn binary() -> PathBuf {
    if let Ok(path) = std::env::var("FIREBREAK_BIN") {
        return PathBuf::from(path);
    }
    let exe = std::env::current_exe().expect("test binary path");
    let dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("test binary lives in target/<profile>/deps");
    let bin = dir.join("firebreak");
    assert!(
        bin.exists(),
        "{} is missing: run `cargo test --workspace`, which builds it",
        bin.display()
    );
    bin
}

/// One node process.
pub struct TestNode {
    pub id: u64,
    pub site: &'static str,
    /// The client listener.
    pub addr: String,
    /// The peer listener (mutual TLS).
    pub peer_addr: String,
    /// The admin listener (operator commands, status, metrics).
    pub admin_addr: String,
    pub config: PathBuf,
    pub log: PathBuf,
    child: Option<Child>,
}

/// A cluster of node processes that dies with the test.
pub struct TestCluster {
    pub dir: TempDir,
    pub nodes: Vec<TestNode>,
    /// Service processes, with the index of their site's node.
    services: Vec<(usize, Child)>,
    /// The open-file limit (soft and hard) nodes spawned from now on get; `None`: the
    /// test process's own.
    pub open_files: Option<u64>,
}

fn free_port() -> u16 {
    free_ports(1)[0]
}

/// `n` distinct free ports: all are held open until the last is found, so the kernel
/// cannot hand out one twice (a node's listeners on one port refuse to start).
fn free_ports(n: usize) -> Vec<u16> {
    let held: Vec<TcpListener> = (0..n)
        .map(|_| TcpListener::bind("127.0.0.1:0").expect("bind a free port"))
        .collect();
    held.iter()
        .map(|l| l.local_addr().expect("bound address").port())
        .collect()
}

impl TestCluster {
    /// Writes configs for three nodes (with `extra` YAML appended to each) and starts them.
    pub fn start(extra: &str) -> Self {
        let mut cluster = Self::configure(extra);
        for i in 0..3 {
            cluster.spawn(i);
        }
        cluster.wait_listening();
        cluster
    }

    /// Waits until every node accepts connections on all three listeners: a test that
    /// calls each node must not find one still starting (seen once in CI: a refused
    /// connection to an admin listener right after the leaders were known).
    pub fn wait_listening(&self) {
        let started = Instant::now();
        for node in &self.nodes {
            for addr in [&node.addr, &node.peer_addr, &node.admin_addr] {
                let addr: std::net::SocketAddr = addr.parse().expect("a node address");
                while std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200))
                    .is_err()
                {
                    assert!(
                        started.elapsed() < DEADLINE,
                        "{addr} never accepted a connection\n{}",
                        self.logs()
                    );
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
        }
    }

    /// Writes configs for three nodes (with `extra` YAML appended to each) and starts
    /// none: the test spawns them, after preparing their data dirs (`dir/<site>`).
    pub fn configure(extra: &str) -> Self {
        let dir = TempDir::new().expect("temp dir");
        let ports: Vec<String> = free_ports(3 * SITES.len())
            .into_iter()
            .map(|port| format!("127.0.0.1:{port}"))
            .collect();
        let mut ports = ports.chunks(SITES.len()).map(<[String]>::to_vec);
        let (addrs, peer_addrs, admin_addrs) = (
            ports.next().expect("client ports"),
            ports.next().expect("peer ports"),
            ports.next().expect("admin ports"),
        );
        let peers: String = peer_addrs
            .iter()
            .zip(SITES)
            .enumerate()
            .map(|(i, (addr, site))| {
                format!("  - {{ id: {}, site: {site}, addr: \"{addr}\" }}\n", i + 1)
            })
            .collect();
        let mut nodes = Vec::new();
        for (i, (addr, site)) in addrs.iter().zip(SITES).enumerate() {
            let config = dir.path().join(format!("{site}.yaml"));
            let tls_dir = dir.path().join(format!("{site}-tls"));
            let cert = issue(Role::Node(i as u64 + 1), &["127.0.0.1"], &tls_dir, "node");
            let text = format!(
                "cluster: {CLUSTER}\nnode_id: {}\nsite: {site}\nlisten: \"{addr}\"\npeer_listen: \"{}\"\nadmin_listen: \"{}\"\n\
                 data_dir: \"{}\"\ntls:\n  ca_file: \"{}\"\n  cert_file: \"{}\"\n  key_file: \"{}\"\npeers:\n{peers}{extra}",
                i + 1,
                peer_addrs[i],
                admin_addrs[i],
                dir.path().join(site).display(),
                ca_file().display(),
                cert.cert.display(),
                cert.key.display(),
            );
            std::fs::write(&config, text).expect("write config");
            let log = dir.path().join(format!("{site}.log"));
            nodes.push(TestNode {
                id: i as u64 + 1,
                site,
                addr: addr.clone(),
                peer_addr: peer_addrs[i].clone(),
                admin_addr: admin_addrs[i].clone(),
                config,
                log,
                child: None,
            });
        }
        TestCluster {
            dir,
            nodes,
            services: Vec::new(),
            open_files: None,
        }
    }

    /// Node `i`'s exit code once it has exited by itself (`Some(-1)` for a signal), or
    /// `None` while it runs.
    pub fn exited(&mut self, i: usize) -> Option<i32> {
        let child = self.nodes[i].child.as_mut().expect("node was started");
        let status = child.try_wait().expect("wait child")?;
        self.nodes[i].child = None;
        Some(status.code().unwrap_or(-1))
    }

    /// Starts node `i`'s process.
    pub fn spawn(&mut self, i: usize) {
        let clock_step_file = self.clock_step_file(i);
        let open_files = self.open_files;
        let node = &mut self.nodes[i];
        assert!(node.child.is_none(), "node {i} is already running");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&node.log)
            .expect("open log");
        let mut command = Command::new(binary());
        // If the test process dies without running Drop, the kernel kills the node too.
        // SAFETY: prctl and setrlimit are async-signal-safe and touch only the child being
        // exec'ed.
        unsafe {
            std::os::unix::process::CommandExt::pre_exec(&mut command, move || {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                if let Some(n) = open_files {
                    let limit = libc::rlimit {
                        rlim_cur: n,
                        rlim_max: n,
                    };
                    if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                }
                Ok(())
            });
        }
        let child = command
            .args(["node", "--config"])
            .arg(&node.config)
            .env("FIREBREAK_LOG", "info,openraft=warn")
            .env("FIREBREAK_NODE_TOKENS", format!("tester:{TEST_TOKEN}"))
            .env("FIREBREAK_DEBUG_CLOCK_STEP_FILE", clock_step_file)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone log"))
            .stderr(log)
            .spawn()
            .expect("spawn firebreak node");
        node.child = Some(child);
    }

    /// The file node `i` (a debug build) reads its clock step from.
    fn clock_step_file(&self, i: usize) -> PathBuf {
        self.dir
            .path()
            .join(format!("{}.clock-step", self.nodes[i].site))
    }

    /// Steps node `i`'s wall clock to `ms` ahead of the system's (behind if negative), as
    /// an NTP step would; 0 puts it back.
    pub fn step_clock(&self, i: usize, ms: i64) {
        let path = self.clock_step_file(i);
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, ms.to_string()).expect("write clock step");
        std::fs::rename(&tmp, &path).expect("install clock step");
    }

    /// Starts `firebreak serve SERVICE` in site `i` (its node first in `--nodes`) on a free
    /// port, with a service certificate of the test CA; returns its `https://` base URL.
    pub fn spawn_service(&mut self, i: usize, service: &str, extra: &[&str]) -> String {
        let addr = format!("127.0.0.1:{}", free_port());
        let mut nodes: Vec<String> = vec![self.nodes[i].addr.clone()];
        nodes.extend(
            self.nodes
                .iter()
                .enumerate()
                .filter(|(j, _)| *j != i)
                .map(|(_, n)| n.addr.clone()),
        );
        let log_path = self
            .dir
            .path()
            .join(format!("{}-{service}.log", self.nodes[i].site));
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .expect("open log");
        let tls_dir = self.dir.path().join(format!("{}-tls", self.nodes[i].site));
        let cert = issue(
            Role::Service(service.to_string()),
            &["127.0.0.1"],
            &tls_dir,
            service,
        );
        let mut command = Command::new(binary());
        command
            .args([
                "serve",
                service,
                "--listen",
                &addr,
                "--nodes",
                &nodes.join(","),
            ])
            .arg("--ca")
            .arg(ca_file())
            .arg("--cert")
            .arg(&cert.cert)
            .arg("--key")
            .arg(&cert.key)
            .args(extra)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone log"))
            .stderr(log);
        // SAFETY: prctl is async-signal-safe and touches only the child being exec'ed.
        unsafe {
            std::os::unix::process::CommandExt::pre_exec(&mut command, || {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        self.services
            .push((i, command.spawn().expect("spawn firebreak serve")));
        format!("https://{addr}")
    }

    /// SIGKILLs the service processes of site `i` (its node keeps running).
    pub fn kill_site_services(&mut self, i: usize) {
        for (_, child) in self.services.iter_mut().filter(|(s, _)| *s == i) {
            let _ = child.kill();
            let _ = child.wait();
        }
        self.services.retain(|(s, _)| *s != i);
    }

    /// SIGKILLs every process of site `i` at once: its node and its services.
    pub fn kill_site(&mut self, i: usize) {
        let node = self.nodes[i].child.as_ref().map(|c| c.id());
        let services: Vec<u32> = self
            .services
            .iter()
            .filter(|(s, _)| *s == i)
            .map(|(_, c)| c.id())
            .collect();
        for pid in node.into_iter().chain(services) {
            // SAFETY: kill(2) on PIDs of children we spawned and have not reaped.
            unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
        }
        if let Some(mut child) = self.nodes[i].child.take() {
            let _ = child.wait();
        }
        for (_, child) in self.services.iter_mut().filter(|(s, _)| *s == i) {
            let _ = child.wait();
        }
        self.services.retain(|(s, _)| *s != i);
    }

    /// SIGKILLs node `i`: no shutdown, no flush, like a power cut to the process.
    pub fn kill(&mut self, i: usize) {
        let mut child = self.nodes[i].child.take().expect("node is running");
        child.kill().expect("SIGKILL our own child");
        child.wait().expect("reap child");
    }

    /// Sends `signal` (SIGSTOP, SIGCONT) to node `i`'s process.
    pub fn signal(&self, i: usize, signal: i32) {
        let child = self.nodes[i].child.as_ref().expect("node is running");
        // SAFETY: kill(2) on the PID of a child we spawned and have not reaped.
        unsafe { libc::kill(child.id() as libc::pid_t, signal) };
    }

    /// SIGTERMs node `i` and waits for it to exit; returns its exit code.
    pub fn terminate(&mut self, i: usize) -> Option<i32> {
        let mut child = self.nodes[i].child.take().expect("node is running");
        // SAFETY: kill(2) on the PID of a child we spawned and have not reaped.
        unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
        let deadline = Instant::now() + DEADLINE;
        loop {
            if let Some(status) = child.try_wait().expect("wait child") {
                return status.code();
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("node {i} did not stop within {DEADLINE:?} of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// TLS to the nodes as `service` (its own key prefix only), for in-process services.
    pub fn service_tls(&self, service: &str) -> ClientTls {
        let cert = issue(
            Role::Service(service.to_string()),
            &[],
            &self.dir.path().join("services-tls"),
            service,
        );
        tls_as(&ca_file(), Some(&cert))
    }

    /// An HTTP client holding node `id`'s certificate, for the peer listeners.
    pub fn peer_http(&self, id: u64) -> reqwest::Client {
        let cert = issue(
            Role::Node(id),
            &["127.0.0.1"],
            &self.dir.path().join("peer-clients"),
            &format!("node-{id}"),
        );
        http_as(&ca_file(), Some(&cert))
    }

    /// Every node's client listener, for clients that try them in turn.
    pub fn addrs(&self) -> Vec<String> {
        self.nodes.iter().map(|n| n.addr.clone()).collect()
    }

    /// Every node's admin listener (operator commands, routing, metrics).
    pub fn admin_addrs(&self) -> Vec<String> {
        self.nodes.iter().map(|n| n.admin_addr.clone()).collect()
    }

    /// The tail of every node's log, to explain a failure.
    pub fn logs(&self) -> String {
        self.nodes
            .iter()
            .map(|n| {
                let text = std::fs::read_to_string(&n.log).unwrap_or_default();
                let tail: Vec<&str> = text.lines().rev().take(30).collect();
                format!(
                    "--- {} ---\n{}",
                    n.site,
                    tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    }
}

impl Drop for TestCluster {
    fn drop(&mut self) {
        for (_, child) in &mut self.services {
            let _ = child.kill();
            let _ = child.wait();
        }
        for node in &mut self.nodes {
            if let Some(mut child) = node.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

/// A client for the cluster's HTTP API.
pub struct Api {
    pub http: reqwest::Client,
}

impl Default for Api {
    fn default() -> Self {
        Self::new()
    }
}

impl Api {
    pub fn new() -> Self {
        Self { http: http() }
    }

    /// `path` of one node as JSON, or `None` if it does not answer within 2 s.
    async fn get_json(&self, addr: &str, path: &str) -> Option<Value> {
        let response = self
            .http
            .get(url(addr, path))
            .timeout(Duration::from_secs(2))
            .send()
            .await
            .ok()?;
        response.json().await.ok()
    }

    /// `/v1/cluster` of one node, or `None` if it does not answer.
    pub async fn cluster(&self, addr: &str) -> Option<Value> {
        self.get_json(addr, "/v1/cluster").await
    }

    /// `/v1/routing` of one node, or `None` if it does not answer.
    pub async fn routing(&self, addr: &str) -> Option<Value> {
        self.get_json(addr, "/v1/routing").await
    }

    /// The node id leading `group`, as the node at `addr` sees it.
    pub async fn leader(&self, addr: &str, group: &str) -> Option<u64> {
        let info = self.cluster(addr).await?;
        let groups = info["groups"].as_array()?;
        groups.iter().find(|g| g["name"] == group)?["leader"].as_u64()
    }

    /// Waits until every node at `addrs` that answers names the same leader of `group`,
    /// and that leader reports a quorum behind it (`firebreak_chaos::steady::agreed_leader`):
    /// it can commit now. Nodes that do not answer (killed, paused) are left out.
    pub async fn wait_leader(&self, addrs: &[String], group: &str) -> u64 {
        eventually(DEADLINE, &format!("an agreed {group} leader"), || async {
            let clusters = in_turn(addrs.iter().map(|a| self.cluster(a))).await;
            firebreak_chaos::steady::agreed_leader(&clusters, group)
        })
        .await
    }

    /// Waits until the cluster is steady (`firebreak_chaos::steady::leaders_agree`): every
    /// node answers and names the same leader of each group, and that leader can commit.
    /// Right after bring-up a test that needs a leader must wait for this, not for one
    /// node's word: a second election can follow the first (seen in CI, `bulkhead`: the
    /// leader one node named answered "no leader is known yet"), and a node may still be
    /// bootstrapping (`failed_fsync`). Returns the (control, state) leaders.
    pub async fn wait_steady(&self, addrs: &[String]) -> (u64, u64) {
        eventually(DEADLINE, "a steady cluster", || async {
            let clusters = in_turn(addrs.iter().map(|a| self.cluster(a))).await;
            firebreak_chaos::steady::leaders_agree(&clusters)?;
            let control = firebreak_chaos::steady::agreed_leader(&clusters, "control")?;
            Ok((
                control,
                firebreak_chaos::steady::agreed_leader(&clusters, "state")?,
            ))
        })
        .await
    }

    /// Reads a key from `addr` (linearizable unless `stale`); `Err` if the node cannot serve.
    pub async fn get(&self, addr: &str, key: &str, stale: bool) -> Result<Option<String>, String> {
        let consistency = if stale { "&consistency=stale" } else { "" };
        let response = self
            .http
            .get(url(addr, &format!("/v1/kv?key={key}{consistency}")))
            .bearer_auth(TEST_TOKEN)
            .send()
            .await
            .map_err(|e| e.to_string())?;
        if !response.status().is_success() {
            return Err(format!(
                "{}: {}",
                response.status(),
                response.text().await.unwrap_or_default()
            ));
        }
        let body: Value = response.json().await.map_err(|e| e.to_string())?;
        Ok(body["entry"]["value"].as_str().map(str::to_string))
    }
}

/// Awaits every future in turn (the nodes are few; no extra dependency for a join).
async fn in_turn<T>(futures: impl Iterator<Item = impl std::future::Future<Output = T>>) -> Vec<T> {
    let mut out = Vec::new();
    for future in futures {
        out.push(future.await);
    }
    out
}

/// What became of one write, as the client saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Acknowledged: it must survive any single-site loss.
    Ok,
    /// Refused before it could be written: it must never appear.
    Failed,
    /// Unknown: it may or may not have committed.
    Unknown,
}

/// Puts `key` once through `addr` and classifies the answer.
pub async fn put(http: &reqwest::Client, addr: &str, key: &str, value: &str) -> Outcome {
    let request = http
        .put(url(addr, "/v1/kv"))
        .bearer_auth(TEST_TOKEN)
        .json(&serde_json::json!({ "key": key, "value": value }));
    match request.send().await {
        Ok(response) if response.status().is_success() => Outcome::Ok,
        Ok(response) if response.status() == reqwest::StatusCode::GATEWAY_TIMEOUT => {
            Outcome::Unknown
        }
        Ok(response)
            if response.status().is_client_error() || response.status().is_server_error() =>
        {
            // 503 (not leader, no quorum, leader unreachable) and 429 mean nothing was written.
            if matches!(response.status().as_u16(), 503 | 429) {
                Outcome::Failed
            } else {
                Outcome::Unknown
            }
        }
        Ok(_) => Outcome::Unknown,
        Err(err) if err.is_connect() => Outcome::Failed,
        Err(_) => Outcome::Unknown,
    }
}

/// A stand-in service instance in the test process: answers every request with 200 while
/// `healthy` is set and 503 with `Retry-After: 1` otherwise. Stops (and joins its thread) when dropped.
pub struct FakeEndpoint {
    pub url: String,
    /// false: every request (health checks included) gets 503 with Retry-After.
    pub healthy: std::sync::Arc<std::sync::atomic::AtomicBool>,
    /// true: requests other than health checks get the 503 of a service shedding load
    /// (Retry-After and `x-firebreak-shed`).
    pub shed: std::sync::Arc<std::sync::atomic::AtomicBool>,
    /// true: requests other than health checks are read and the connection is closed
    /// without an answer (an instance that dies after taking a request).
    pub swallow: std::sync::Arc<std::sync::atomic::AtomicBool>,
    /// Requests other than health checks received.
    pub requests: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl FakeEndpoint {
    pub fn start() -> Self {
        use std::io::{Read, Write};
        use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
        use std::sync::Arc;
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind fake endpoint");
        listener
            .set_nonblocking(true)
            .expect("nonblocking listener");
        let url = format!("http://{}", listener.local_addr().unwrap());
        let healthy = Arc::new(AtomicBool::new(true));
        let shed = Arc::new(AtomicBool::new(false));
        let swallow = Arc::new(AtomicBool::new(false));
        let requests = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (h, sh, sw, r, s) = (
            healthy.clone(),
            shed.clone(),
            swallow.clone(),
            requests.clone(),
            stop.clone(),
        );
        let thread = std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((mut stream, _)) => {
                        let _ = stream.set_nonblocking(false);
                        let _ = stream.set_read_timeout(Some(Duration::from_millis(500)));
                        let mut buf = [0u8; 4096];
                        let n = stream.read(&mut buf).unwrap_or(0);
                        let health = buf[..n].starts_with(b"GET /health");
                        if !health {
                            r.fetch_add(1, Ordering::Relaxed);
                            if sw.load(Ordering::Relaxed) {
                                continue;
                            }
                        }
                        let (status, extra) = if !h.load(Ordering::Relaxed) {
                            ("503 Service Unavailable", "retry-after: 1\r\n")
                        } else if !health && sh.load(Ordering::Relaxed) {
                            (
                                "503 Service Unavailable",
                                "retry-after: 1\r\nx-firebreak-shed: 1\r\n",
                            )
                        } else {
                            ("200 OK", "")
                        };
                        let _ = write!(
                            stream,
                            "HTTP/1.1 {status}\r\n{extra}content-length: 0\r\nconnection: close\r\n\r\n"
                        );
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        Self {
            url,
            healthy,
            shed,
            swallow,
            requests,
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for FakeEndpoint {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// A `firebreak drill` run as a child process, killed (with its own children, through
/// their PR_SET_PDEATHSIG) if the test ends before it does.
pub struct DrillRun {
    pub child: Child,
    pub out: TempDir,
    stdout: PathBuf,
    stderr: PathBuf,
}

/// How long a drill test may take before it is killed.
pub const DRILL_DEADLINE: Duration = Duration::from_secs(300);

impl DrillRun {
    /// Starts `firebreak drill PLAYBOOK --out TMP --port PORT` from the workspace root.
    pub fn start(playbook: &str, port: u16) -> Self {
        Self::start_with_env(playbook, port, &[])
    }

    /// [`DrillRun::start`] with extra environment variables (the drill's sites inherit
    /// them).
    pub fn start_with_env(playbook: &str, port: u16, env: &[(&str, &str)]) -> Self {
        Self::start_args(&[playbook], port, env)
    }

    /// `firebreak drill ARGS... --port PORT --out TMP/report`, with `env`.
    pub fn start_args(args: &[&str], port: u16, env: &[(&str, &str)]) -> Self {
        let out = tempfile::tempdir().expect("temp dir");
        let (stdout, stderr) = (out.path().join("stdout"), out.path().join("stderr"));
        let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
        let child = Command::new(binary())
            .current_dir(&root)
            .envs(env.iter().copied())
            .arg("drill")
            .args(args)
            .args(["--port", &port.to_string(), "--out"])
            .arg(out.path().join("report"))
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&stdout).expect("stdout file"))
            .stderr(std::fs::File::create(&stderr).expect("stderr file"))
            .spawn()
            .expect("firebreak drill starts");
        Self {
            child,
            out,
            stdout,
            stderr,
        }
    }

    /// Waits for the drill to end (killing it after [`DRILL_DEADLINE`]); returns its exit
    /// code, stdout and stderr.
    pub fn wait(&mut self) -> (i32, String, String) {
        self.wait_for(DRILL_DEADLINE)
    }

    /// [`DrillRun::wait`] with its own deadline (for many drills in a row).
    pub fn wait_for(&mut self, limit: Duration) -> (i32, String, String) {
        let deadline = Instant::now() + limit;
        let status = loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                break status;
            }
            if Instant::now() >= deadline {
                let _ = self.child.kill();
                panic!("the drill ran past {limit:?}:\n{}", self.output().1);
            }
            std::thread::sleep(Duration::from_millis(200));
        };
        let (stdout, stderr) = self.output();
        (status.code().unwrap_or(-1), stdout, stderr)
    }

    fn output(&self) -> (String, String) {
        (
            std::fs::read_to_string(&self.stdout).unwrap_or_default(),
            std::fs::read_to_string(&self.stderr).unwrap_or_default(),
        )
    }

    /// The JSON report the drill wrote.
    pub fn report(&self) -> Value {
        let path = self.out.path().join("report/report.json");
        let text =
            std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        serde_json::from_str(&text).expect("report.json parses")
    }

    /// One checker's finding from the JSON report.
    pub fn finding(&self, checker: &str) -> Value {
        self.report()["findings"]
            .as_array()
            .expect("findings")
            .iter()
            .find(|f| f["checker"] == checker)
            .unwrap_or_else(|| panic!("no {checker} finding"))
            .clone()
    }

    /// A file the drill wrote in its report dir.
    pub fn file(&self, name: &str) -> String {
        std::fs::read_to_string(self.out.path().join("report").join(name)).unwrap_or_default()
    }

    /// PIDs whose parent is the drill: the site processes it started.
    pub fn children(&self) -> Vec<u32> {
        children_of(self.child.id())
    }
}

impl Drop for DrillRun {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// PIDs whose parent is `parent`, from /proc.
pub fn children_of(parent: u32) -> Vec<u32> {
    let mut pids = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let stat = std::fs::read_to_string(entry.path().join("stat")).unwrap_or_default();
        // Fields after the command name (which may hold spaces): state, ppid, ...
        let ppid = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1))
            .and_then(|p| p.parse::<u32>().ok());
        if ppid == Some(parent) {
            pids.push(pid);
        }
    }
    pids
}

/// Whether a process exists and is not a zombie.
pub fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| {
            stat.rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().next().map(|s| s != "Z"))
        })
        .unwrap_or(false)
}

/// Whether this machine can mount the drop-unsynced filesystem (root and /dev/fuse, as
/// `lazyfs::probe` says). Without, a test skips with the reason, except under CI=true,
/// where it fails: CI runs as root with /dev/fuse.
pub fn fuse_or_skip() -> bool {
    match firebreak_chaos::lazyfs::probe() {
        Ok(()) => true,
        Err(e) => {
            assert!(
                std::env::var("CI").is_err(),
                "CI has root and /dev/fuse: {e}"
            );
            eprintln!("skipped: {e}");
            false
        }
    }
}
