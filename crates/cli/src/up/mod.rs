//! `firebreak up`: a local three-site (or, with `--sites 5`, five-site) cluster for trying
//! firebreak and for drills.
//!
//! Sites `pangyo`, `gasan` and `busan` (and `anyang`, `daejeon`) each run one `firebreak
//! node` child process on their own loopback address (127.0.1.1, 127.0.2.1, ...), with a
//! config, data dir,
//! log file and pid file under `--data-dir/<site>/`. Ctrl-C or SIGTERM stops exactly these
//! children: SIGTERM by PID, then SIGKILL after a grace period. A child that dies while
//! the cluster runs (say, killed to try a site loss) is reported and left down. If `up` is
//! itself SIGKILLed, the kernel sends its children SIGTERM (PR_SET_PDEATHSIG).
//!
//! With `--services`, every site also runs messaging, payments and login (ports 8001-8003
//! on its address, pid files beside the node's), and `up` applies a topology that keeps
//! them alive, so every node's gateway serves them at once.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};
use firebreak_chaos::certs::LocalCa;
use firebreak_node::NodeConfig;
use firebreak_tls::ClientTls;
use tokio::process::Child;

use crate::exit::{self, fail};

mod extra_nodes;

/// The local sites, in node-id order: `--sites` takes the first 3 or 5.
pub const SITES: [&str; 5] = ["pangyo", "gasan", "busan", "anyang", "daejeon"];
/// How long to wait for both groups to elect a leader.
const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// How long children get to stop after SIGTERM before SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(10);

#[derive(clap::Args)]
pub struct Args {
    /// Where each site keeps its config, data, log and pid file.
    #[arg(long, default_value = "firebreak-data")]
    data_dir: PathBuf,
    /// Port of every node's client listener, on its own loopback address; the peer
    /// listener is 4 above it and the admin listener 5 above.
    #[arg(long, default_value_t = 7001)]
    port: u16,
    /// How many sites: 3 (pangyo, gasan, busan) or 5 (and anyang, daejeon); any one site
    /// of 3, or any two of 5, may burn and a majority is left.
    #[arg(long, default_value_t = 3, value_parser = parse_sites)]
    sites: usize,
    /// Nodes per site, 1 to 3: the first votes; the others (on 127.0.N.2 and .3, configs
    /// `<site>/node-2.yaml`...) join as learners, renew the site's lease and serve its
    /// gateway, so the site is down only when all of them are.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u8).range(1..=3))]
    nodes_per_site: u8,
    /// Also run messaging, payments and login in every site (ports 8001-8003) and apply a
    /// topology that keeps them alive, reachable through every node's gateway.
    #[arg(long)]
    services: bool,
    /// No TLS and no peer authentication (anyone who reaches a port can forge leases):
    /// for debugging, and for measuring what TLS costs, on this machine only.
    #[arg(long)]
    plaintext_for_debugging: bool,
    /// TTL of the DNS answers (every node serves svc.firebreak. on port 8053).
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..=3600))]
    dns_ttl_secs: u32,
    /// With --services: login's session lifetime, in seconds (`serve login`'s default: a
    /// day).
    #[arg(long, requires = "services", value_parser = clap::value_parser!(u64).range(1..=31_536_000))]
    session_ttl_secs: Option<u64>,
    /// With --services: how often login sweeps expired sessions, in seconds (`serve
    /// login`'s default: 60).
    #[arg(long, requires = "services", value_parser = clap::value_parser!(u64).range(1..=86_400))]
    sweep_interval_secs: Option<u64>,
}

/// `--sites`: 3 or 5 (an even count adds a site no fire can spare: 4 survive one fire,
/// as 3 do).
fn parse_sites(text: &str) -> std::result::Result<usize, String> {
    match text {
        "3" => Ok(3),
        "5" => Ok(5),
        _ => Err(format!(
            "{text:?}: 3 or 5 sites (4 survive no more fires than 3, 2 survive none)"
        )),
    }
}

impl Args {
    /// The sites this cluster runs.
    fn site_names(&self) -> &'static [&'static str] {
        &SITES[..self.sites]
    }

    /// What `serve login` is given beyond the common flags.
    fn login_args(&self) -> Vec<String> {
        let share = firebreak_chaos::driver::hashing_share(self.sites);
        let mut args = vec!["--max-hashing".to_string(), share];
        if let Some(secs) = self.session_ttl_secs {
            args.extend(["--session-ttl-secs".to_string(), secs.to_string()]);
        }
        if let Some(secs) = self.sweep_interval_secs {
            args.extend(["--sweep-interval-secs".to_string(), secs.to_string()]);
        }
        args
    }
}

/// The reference services `--services` runs, with their ports and modes.
const SERVICES: [(&str, u16, &str); 3] = [
    ("messaging", 8001, "active-active"),
    ("payments", 8002, "active-passive"),
    ("login", 8003, "active-active"),
];

struct Site {
    name: &'static str,
    config: NodeConfig,
    log: PathBuf,
    child: Option<Child>,
    /// The site's other processes, by name: its extra nodes (`node-2`, `node-3`) and
    /// services.
    others: Vec<(&'static str, Child)>,
}

fn configs(
    data_dir: &Path,
    names: &[&str],
    port: u16,
    dns_ttl_secs: u32,
    ca: Option<&LocalCa>,
) -> Result<Vec<NodeConfig>> {
    let ips: Vec<String> = (0..names.len())
        .map(firebreak_chaos::driver::site_ip)
        .collect();
    let mut configs = firebreak_chaos::driver::node_configs(
        CLUSTER,
        data_dir,
        names,
        &ips,
        port,
        &data_dir.join("tokens"),
    );
    for config in &mut configs {
        if let Some(dns) = &mut config.dns {
            dns.listen.set_port(DNS_PORT);
            dns.ttl_secs = dns_ttl_secs;
            // One machine: every client is on 127.0.0.0/24, and `bench dns` measures the
            // server, not the response-rate limit.
            dns.responses_per_sec = 0;
        }
        match ca {
            Some(ca) => ca.issue_node(config)?,
            None => config.tls.plaintext_for_debugging = true,
        }
    }
    Ok(configs)
}

/// The DNS port of every node (UDP and TCP): unprivileged, so `up` needs no root.
const DNS_PORT: u16 = 8053;

/// The local cluster's name.
const CLUSTER: &str = "firebreak-local";

pub async fn run(args: Args) -> Result<()> {
    let data_dir = std::path::absolute(&args.data_dir).context("failed to resolve --data-dir")?;
    let exe = std::env::current_exe().context("failed to find the firebreak binary")?;
    std::fs::create_dir_all(&data_dir)
        .with_context(|| format!("failed to create {}", data_dir.display()))?;
    let token = operator_token(&data_dir)?;
    let ca = LocalCa::open_or_create(&data_dir, CLUSTER)?;
    let (tls, issuer) = match args.plaintext_for_debugging {
        true => (ClientTls::plaintext_for_debugging(), None),
        false => (ca.client()?, Some(&ca)),
    };
    let mut sites = Vec::new();
    let names = args.site_names();
    let configs = configs(&data_dir, names, args.port, args.dns_ttl_secs, issuer)?;
    let extras = extra_nodes::configs(&configs, args.nodes_per_site, issuer)?;
    for (name, config) in names.iter().zip(configs) {
        let dir = data_dir.join(name);
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("failed to create {}", dir.display()))?;
        let config_path = dir.join("node.yaml");
        std::fs::write(&config_path, serde_yaml::to_string(&config)?)
            .with_context(|| format!("failed to write {}", config_path.display()))?;
        sites.push(Site {
            name,
            config,
            log: dir.join("node.log"),
            child: None,
            others: Vec::new(),
        });
    }
    let result = async {
        for site in &mut sites {
            let dir = data_dir.join(site.name);
            let config = dir.join("node.yaml");
            let args = vec![
                "node".to_string(),
                "--config".to_string(),
                config.display().to_string(),
            ];
            site.child = Some(spawn(&exe, &args, &site.log, &dir.join("node.pid"))?);
        }
        extra_nodes::start(&exe, &mut sites, &extras, &data_dir)?;
        wait_ready(&sites, &tls).await?;
        extra_nodes::add(&extras, &sites, &token, &tls).await?;
        if args.services {
            start_services(&exe, &mut sites, &data_dir, issuer, &args.login_args())?;
            apply_topology(&sites, &token, &tls).await?;
        }
        print_sites(&sites, &data_dir, &token, &ca);
        supervise(&mut sites).await
    }
    .await;
    stop_all(&mut sites).await;
    result
}

/// The operator token of this local cluster: kept in `<data-dir>/tokens` (mode 0600) so that
/// a restart of `up` keeps it.
fn operator_token(data_dir: &Path) -> Result<String> {
    let path = data_dir.join("tokens");
    if let Ok(text) = std::fs::read_to_string(&path) {
        if let Some(token) = text.lines().find_map(|l| l.strip_prefix("operator ")) {
            return Ok(token.trim().to_string());
        }
    }
    let mut bytes = [0u8; 16];
    std::io::Read::read_exact(&mut std::fs::File::open("/dev/urandom")?, &mut bytes)?;
    let token: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    std::fs::write(
        &path,
        format!("# NAME TOKEN; the name is what the audit log records\noperator {token}\n"),
    )
    .with_context(|| format!("failed to write {}", path.display()))?;
    std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
    Ok(token)
}

/// Starts every site's messaging, payments and login on its loopback address; each talks
/// to its own site's node first.
fn start_services(
    exe: &Path,
    sites: &mut [Site],
    data_dir: &Path,
    ca: Option<&LocalCa>,
    login_args: &[String],
) -> Result<()> {
    let nodes: Vec<String> = sites.iter().map(|s| s.config.listen.to_string()).collect();
    for (i, site) in sites.iter_mut().enumerate() {
        let mut order = vec![nodes[i].clone()];
        order.extend(
            nodes
                .iter()
                .enumerate()
                .filter(|(j, _)| *j != i)
                .map(|(_, n)| n.clone()),
        );
        for (service, port, _) in SERVICES {
            let listen = format!("{}:{port}", site.config.listen.ip());
            let dir = data_dir.join(site.name);
            let mut args: Vec<String> = [
                "serve",
                service,
                "--listen",
                &listen,
                "--nodes",
                &order.join(","),
            ]
            .iter()
            .map(|a| a.to_string())
            .collect();
            match ca {
                Some(ca) => {
                    let hosts = [site.config.listen.ip().to_string()];
                    let files = ca.issue_service(service, &hosts, &dir.join("tls"))?;
                    args.extend(firebreak_chaos::certs::service_args(&files))
                }
                None => args.push("--plaintext-for-debugging".into()),
            }
            if service == "payments" {
                args.extend(["--site".to_string(), site.name.to_string()]);
            }
            if service == "login" {
                args.extend(login_args.iter().cloned());
            }
            let child = spawn(
                exe,
                &args,
                &dir.join(format!("{service}.log")),
                &dir.join(format!("{service}.pid")),
            )?;
            site.others.push((service, child));
        }
    }
    Ok(())
}

/// Applies the topology of the sites and services through the first node.
async fn apply_topology(sites: &[Site], token: &str, tls: &ClientTls) -> Result<()> {
    let names: Vec<&str> = sites.iter().map(|s| s.name).collect();
    let mut services = Vec::new();
    for (service, port, mode) in SERVICES {
        let endpoints: serde_json::Map<String, serde_json::Value> = sites
            .iter()
            .map(|s| {
                (
                    s.name.to_string(),
                    serde_json::json!(tls.url(&format!("{}:{port}", s.config.listen.ip()), "")),
                )
            })
            .collect();
        services.push(serde_json::json!({
            "name": service, "mode": mode, "endpoints": endpoints, "priorities": names,
            "retry_safe": firebreak_services::retry_safe(service),
            "health": { "path": "/health", "interval_ms": 500, "timeout_ms": 250, "fall": 3, "rise": 2 },
        }));
    }
    let topology = serde_json::json!({
        "sites": names.iter().map(|s| serde_json::json!({ "name": s })).collect::<Vec<_>>(),
        "services": services,
        // Two of five sites may burn together and a majority is left.
        "policy": { "max_sites_down_auto": (sites.len() - 1) / 2 },
    });
    let http = tls
        .apply(reqwest::Client::builder())
        .timeout(Duration::from_secs(5))
        .build()?;
    let deadline = tokio::time::Instant::now() + READY_TIMEOUT;
    loop {
        let url = tls.url(&sites[0].config.admin_listen.to_string(), "/v1/topology");
        let response = http
            .post(url)
            .bearer_auth(token)
            .json(&topology)
            .send()
            .await;
        match response {
            Ok(r) if r.status().is_success() => return Ok(()),
            Ok(r) if tokio::time::Instant::now() >= deadline => {
                return Err(anyhow::anyhow!(
                    "the cluster refused the services' topology: {}",
                    r.text().await.unwrap_or_default()
                ))
            }
            Err(e) if tokio::time::Instant::now() >= deadline => {
                return Err(anyhow::anyhow!("failed to apply the topology: {e}"))
            }
            _ => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

fn spawn(exe: &Path, args: &[String], log: &Path, pid_file: &Path) -> Result<Child> {
    // If `up` itself dies without a chance to stop its children (SIGKILL), the kernel sends
    // each of them SIGTERM: no node outlives the command that started it.
    let child = firebreak_chaos::driver::spawn_child(exe, args, log, libc::SIGTERM, None)?;
    if let Some(pid) = child.id() {
        std::fs::write(pid_file, format!("{pid}\n"))?;
    }
    Ok(child)
}

async fn wait_ready(sites: &[Site], tls: &ClientTls) -> Result<()> {
    let http = tls
        .apply(reqwest::Client::builder())
        .timeout(Duration::from_secs(1))
        .build()?;
    let deadline = tokio::time::Instant::now() + READY_TIMEOUT;
    loop {
        let mut ready = true;
        for site in sites {
            let url = tls.url(&site.config.listen.to_string(), "/v1/cluster");
            let info: Option<serde_json::Value> = match http.get(url).send().await {
                Ok(response) => response.json().await.ok(),
                Err(_) => None,
            };
            let led = info
                .as_ref()
                .and_then(|i| i["groups"].as_array())
                .is_some_and(|groups| {
                    groups.len() == 2 && groups.iter().all(|g| !g["leader"].is_null())
                });
            ready &= led;
        }
        if ready {
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            let logs: Vec<String> = sites.iter().map(|s| s.log.display().to_string()).collect();
            return Err(fail(
                exit::UNAVAILABLE,
                format!(
                    "the cluster elected no leader within {READY_TIMEOUT:?}; see the logs: {}",
                    logs.join(", ")
                ),
            ));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn print_sites(sites: &[Site], data_dir: &Path, token: &str, ca: &LocalCa) {
    println!(
        "firebreak-local is up: {} sites, data in {}",
        sites.len(),
        data_dir.display()
    );
    println!(
        "{:<8} {:<5} {:<16} {:<16} {:<16} {:<8} log",
        "site", "node", "client", "admin", "dns", "pid"
    );
    for site in sites {
        let pid = site
            .child
            .as_ref()
            .and_then(|c| c.id())
            .map_or("-".into(), |p| p.to_string());
        let dns = site.config.dns.as_ref().map(|d| d.listen.to_string());
        println!(
            "{:<8} {:<5} {:<16} {:<16} {:<16} {:<8} {}",
            site.name,
            site.config.node_id,
            site.config.listen,
            site.config.admin_listen,
            dns.unwrap_or_else(|| "-".into()),
            pid,
            site.log.display()
        );
    }
    for site in sites {
        for (name, child) in &site.others {
            if name.starts_with("node-") {
                let pid = child.id().map_or("-".into(), |p| p.to_string());
                println!(
                    "{:<8} {name}: pid {pid}, config {}/{}/{name}.yaml",
                    site.name,
                    data_dir.display(),
                    site.name
                );
            }
        }
    }
    println!("\nTLS is on, with a throwaway CA made for this cluster; the CLI finds it in");
    println!("firebreak-data/ca/ca.pem, or wherever FIREBREAK_CA points:");
    println!("  export FIREBREAK_CA={}", ca.ca_file().display());
    println!("keys and operator commands (topology apply, evacuate, freeze...) need the token:");
    println!("  export FIREBREAK_TOKEN={token}");
    if sites.len() > 3 {
        // The CLI's defaults name the first three sites' nodes only.
        let list = |addr: fn(&NodeConfig) -> String| {
            let all: Vec<String> = sites.iter().map(|s| addr(&s.config)).collect();
            all.join(",")
        };
        println!("the CLI reaches every site's node with:");
        println!(
            "  export FIREBREAK_NODES={}",
            list(|c| c.listen.to_string())
        );
        println!(
            "  export FIREBREAK_ADMIN_NODES={}",
            list(|c| c.admin_listen.to_string())
        );
    }
    println!("try: firebreak status    firebreak kv put hello world    firebreak kv get hello");
    let serving = |s: &&Site| {
        s.others
            .iter()
            .any(|(name, _)| SERVICES.iter().any(|(service, _, _)| service == name))
    };
    if sites.iter().any(|s| serving(&s)) {
        println!("services: messaging, payments, login in every site, through any node's gateway:");
        println!(
            "  curl -s --cacert {} https://{}/payments/accounts",
            ca.ca_file().display(),
            sites[0].config.listen
        );
        println!(
            "  a whole-site fire: kill -9 $(cat {}/pangyo/*.pid)",
            data_dir.display()
        );
    }
    if let Some(dns) = sites[0].config.dns.as_ref() {
        println!(
            "DNS for {} on port {DNS_PORT} of every node: dig @{} -p {DNS_PORT} payments.{}",
            dns.zone,
            dns.listen.ip(),
            dns.zone
        );
    }
    println!("Ctrl-C stops everything this command started.");
}

/// Waits for Ctrl-C or SIGTERM; reports children that exit meanwhile.
async fn supervise(sites: &mut [Site]) -> Result<()> {
    let shutdown = crate::node::shutdown_signal();
    tokio::pin!(shutdown);
    loop {
        let mut tick = tokio::time::interval(Duration::from_millis(500));
        tokio::select! {
            _ = &mut shutdown => return Ok(()),
            _ = tick.tick() => {}
        }
        for site in sites.iter_mut() {
            if let Some(child) = site.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    eprintln!(
                        "site {} (node {}) exited: {status}; see {}",
                        site.name,
                        site.config.node_id,
                        site.log.display()
                    );
                    site.child = None;
                }
            }
        }
        for site in sites.iter_mut() {
            let name = site.name;
            site.others
                .retain_mut(|(service, child)| match child.try_wait() {
                    Ok(Some(status)) => {
                        eprintln!("site {name} {service} exited: {status}");
                        false
                    }
                    _ => true,
                });
        }
        if sites.iter().all(|s| s.child.is_none()) {
            return Err(anyhow::anyhow!(
                "every node exited; see the logs under the data dir"
            ));
        }
    }
}

/// Stops exactly the children this command started: SIGTERM, then SIGKILL after a grace.
async fn stop_all(sites: &mut [Site]) {
    for site in sites.iter() {
        let services = site.others.iter().filter_map(|(_, c)| c.id());
        for pid in site
            .child
            .as_ref()
            .and_then(|c| c.id())
            .into_iter()
            .chain(services)
        {
            // SAFETY: kill(2) on a PID we spawned and have not yet reaped.
            unsafe { libc::kill(pid as libc::pid_t, libc::SIGTERM) };
        }
    }
    for site in sites.iter_mut() {
        for (service, mut child) in site.others.drain(..) {
            if tokio::time::timeout(STOP_GRACE, child.wait())
                .await
                .is_err()
            {
                eprintln!(
                    "site {} {service} did not stop within {STOP_GRACE:?}; killing it",
                    site.name
                );
                let _ = child.kill().await;
            }
        }
    }
    for site in sites.iter_mut() {
        if let Some(mut child) = site.child.take() {
            if tokio::time::timeout(STOP_GRACE, child.wait())
                .await
                .is_err()
            {
                eprintln!(
                    "site {} did not stop within {STOP_GRACE:?}; killing it",
                    site.name
                );
                let _ = child.kill().await;
            }
        }
    }
}
