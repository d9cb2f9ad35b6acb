//! The local site driver: each site is a group of child processes (a node and its
//! services) on its own loopback address (127.0.N.1) with its own data dir, and faults are
//! signals to exactly those processes.
//!
//! ```text
//!   dir/
//!     tokens                      operator token of this run (mode 0600)
//!     ca/                         the run's throwaway CA (`crate::certs`)
//!     <site>/tls/                 the site's node and service certificates
//!     <site>/node.yaml, data/     the node's config and Raft data
//!     <site>/<process>.log        stdout and stderr of every process, appended across restarts
//! ```
//!
//! Invariants: the driver signals only PIDs it spawned and has not reaped; every child
//! gets SIGKILL from the kernel if the drill dies (PR_SET_PDEATHSIG) and from `Drop`
//! otherwise, so no process outlives a drill however it ends. A site loss sends SIGKILL to
//! every process of the site before reaping any of them, so they die together.
//!
//! With `power_loss`, each site's `data/` is a drop-unsynced FUSE mount (`lazyfs`) whose
//! synced content lives in `<site>/durable/`; the mounts go when the driver is dropped.
//!
//! Where the processes run is the [`SiteDriver`]'s business: children on loopback, children
//! in network namespaces, or processes on real hosts over ssh (`crate::site_driver`).

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use firebreak_model::{NodeId, SiteId};
use firebreak_node::config::{ApiLimits, AuthConfig, DnsConfig, Peer, RaftTimings, TlsConfig};
use firebreak_node::NodeConfig;
use firebreak_tls::pki;
use tokio::process::{Child, Command};

use crate::error::{Error, Result};
use crate::lazyfs;
use crate::playbook::{ProcessKind, ServiceKind};
use crate::site_driver::{Disk, SiteDriver};

/// How long a process gets to stop after SIGTERM before SIGKILL.
pub const STOP_GRACE: Duration = Duration::from_secs(10);
/// How long a process gets to end after SIGKILL before its local handle is killed.
pub const KILL_GRACE: Duration = Duration::from_secs(5);

/// What the driver starts.
#[derive(Debug, Clone)]
pub struct DriverConfig {
    /// The `firebreak` binary (the drill's own, normally).
    pub exe: PathBuf,
    /// Where configs, data and logs go.
    pub dir: PathBuf,
    /// The nodes' port on every site's address; services use the next three.
    pub port: u16,
    pub sites: Vec<String>,
    /// Sites configured but dark: a node each (no services), with `join: true`, started
    /// by [`LocalSites::restore_site`] when a `site-replace` brings it in.
    pub spare_sites: Vec<String>,
    /// Nodes per site (1 to 3): the first votes; `node-2` and `node-3` (on 127.0.N.2 and
    /// .3) are added as learners once the cluster runs ([`LocalSites::extra_nodes`]).
    pub nodes_per_site: u8,
    /// Sites whose node votes in the state group (all when `None`).
    pub state_voters: Option<Vec<String>>,
    pub services: Vec<ServiceKind>,
    /// Where the sites run: their addresses, and how their processes start and stop.
    pub driver: Arc<dyn SiteDriver>,
    /// The nodes' Raft timings.
    pub raft: RaftTimings,
    /// Put every site's data dir on a drop-unsynced filesystem, for power-loss faults.
    pub power_loss: bool,
    /// The reconnect window the messaging instances suggest to stream clients, in ms.
    pub reconnect_window_ms: Option<u64>,
}

/// The port a service listens on, next to the node's.
pub fn service_port(node_port: u16, service: ServiceKind) -> u16 {
    node_port
        + match service {
            ServiceKind::Messaging => 1,
            ServiceKind::Payments => 2,
            ServiceKind::Login => 3,
            // The nodes' own API, on the node's port.
            ServiceKind::Kv => 0,
        }
}

/// How far above the node's client port its peer listener is (its services take the three ports
/// between).
pub const PEER_PORT_OFFSET: u16 = 4;
/// How far above the node's client port its admin listener is.
pub const ADMIN_PORT_OFFSET: u16 = 5;

/// How far above the node's client port its DNS server is (UDP and TCP).
pub const DNS_PORT_OFFSET: u16 = 6;

/// The loopback address of the `index`-th site (0-based).
pub fn site_ip(index: usize) -> String {
    format!("127.0.{}.1", index + 1)
}

/// Node configs for sites on `ips[N]:port` (one per site; the peer listener on
/// `port + PEER_PORT_OFFSET`, the admin listener on `port + ADMIN_PORT_OFFSET`, DNS for
/// the zone `svc.firebreak.` on `port + DNS_PORT_OFFSET`), data under `dir/<site>/data`.
/// TLS is on, with no files yet: [`crate::certs::LocalCa::issue_node`] fills them in.
pub fn node_configs(
    cluster: &str,
    dir: &Path,
    sites: &[&str],
    ips: &[String],
    port: u16,
    tokens_file: &Path,
) -> Vec<NodeConfig> {
    let peers: Vec<Peer> = sites
        .iter()
        .zip(ips)
        .enumerate()
        .map(|(i, (site, ip))| Peer {
            id: NodeId(i as u64 + 1),
            site: SiteId::from(*site),
            addr: format!("{ip}:{}", port + PEER_PORT_OFFSET),
        })
        .collect();
    peers
        .iter()
        .zip(ips)
        .map(|(peer, ip)| NodeConfig {
            cluster: cluster.into(),
            node_id: peer.id,
            site: peer.site.clone(),
            listen: format!("{ip}:{port}")
                .parse()
                .expect("an IP address and port parse"),
            peer_listen: peer.addr.parse().expect("an IP address and port parse"),
            admin_listen: format!("{ip}:{}", port + ADMIN_PORT_OFFSET)
                .parse()
                .expect("an IP address and port parse"),
            tls: TlsConfig::default(),
            data_dir: dir.join(&peer.site.0).join("data"),
            peers: peers.clone(),
            join: false,
            raft: RaftTimings::default(),
            api: ApiLimits::default(),
            auth: AuthConfig {
                tokens_file: Some(tokens_file.to_path_buf()),
                protect_reads: false,
            },
            state_voters: None,
            dns: Some(DnsConfig {
                listen: format!("{ip}:{}", port + DNS_PORT_OFFSET)
                    .parse()
                    .expect("an IP address and port parse"),
                zone: firebreak_node::config::DEFAULT_ZONE.into(),
                ttl_secs: 5,
                responses_per_sec: firebreak_node::config::DEFAULT_RESPONSES_PER_SEC,
            }),
            hooks: Vec::new(),
        })
        .collect()
}

/// Makes the nodes from `initial` on spares: they join a running cluster (`join: true`),
/// listing its first nodes and themselves as peers; the first nodes list one another only.
fn spares_join(configs: &mut [NodeConfig], initial: usize) {
    let first: Vec<Peer> = configs
        .first()
        .map(|c| c.peers[..initial].to_vec())
        .unwrap_or_default();
    for (i, c) in configs.iter_mut().enumerate() {
        let me = c.peers[i].clone();
        c.peers = first.clone();
        if i >= initial {
            c.join = true;
            c.peers.push(me);
        }
    }
}

/// Spawns `exe args` with output appended to `log`, inside the network namespace at
/// `netns` if given; the kernel sends the child `on_orphan` if this process dies first.
pub fn spawn_child(
    exe: &Path,
    args: &[String],
    log: &Path,
    on_orphan: libc::c_int,
    netns: Option<&Path>,
) -> Result<Child> {
    let namespace = netns
        .map(std::fs::File::open)
        .transpose()
        .map_err(|e| Error::CouldNotRun(format!("failed to open the site's namespace: {e}")))?;
    let namespace_fd = namespace.as_ref().map(std::os::fd::AsRawFd::as_raw_fd);
    let out = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .map_err(|e| Error::CouldNotRun(format!("failed to open {}: {e}", log.display())))?;
    let err = out
        .try_clone()
        .map_err(|e| Error::CouldNotRun(format!("failed to open {}: {e}", log.display())))?;
    let mut command = Command::new(exe);
    // SAFETY: prctl is async-signal-safe and touches only the child being exec'ed.
    unsafe {
        command.pre_exec(move || {
            libc::prctl(libc::PR_SET_PDEATHSIG, on_orphan);
            if let Some(fd) = namespace_fd {
                if libc::setns(fd, libc::CLONE_NEWNET) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
    command
        .args(args)
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| Error::CouldNotRun(format!("failed to start {}: {e}", exe.display())))
}

/// One process of a site.
struct Process {
    kind: ProcessKind,
    args: Vec<String>,
    log: PathBuf,
    child: Option<Child>,
    paused: bool,
    /// Set while a clean restart waits for the process to stop.
    stopping: Option<std::time::Instant>,
}

impl Process {
    fn new(kind: ProcessKind, args: Vec<String>, log: PathBuf) -> Self {
        Self {
            kind,
            args,
            log,
            child: None,
            paused: false,
            stopping: None,
        }
    }

    fn pid(&self) -> Option<libc::pid_t> {
        self.child
            .as_ref()
            .and_then(|c| c.id())
            .map(|p| p as libc::pid_t)
    }
}

struct Site {
    name: String,
    /// Its position: the driver's index for it.
    index: usize,
    data_dir: PathBuf,
    /// The drop-unsynced filesystem under `data_dir`, when the drill has power losses.
    disk: Option<Box<dyn Disk>>,
    processes: Vec<Process>,
}

impl Site {
    /// Sends `signal` to the processes `which` picks, all at once where the driver can.
    fn signal(
        &self,
        driver: &dyn SiteDriver,
        which: impl Fn(&Process) -> bool,
        signal: libc::c_int,
    ) {
        let targets: Vec<(&str, Option<libc::pid_t>)> = self
            .processes
            .iter()
            .filter(|p| which(p) && p.child.is_some())
            .map(|p| (p.kind.name(), p.pid()))
            .collect();
        if !targets.is_empty() {
            driver.signal(self.index, &targets, signal);
        }
    }

    /// Starts `p` (the `i`-th process) on `driver`.
    fn spawn(&self, driver: &dyn SiteDriver, exe: &Path, p: &Process) -> Result<Child> {
        driver.spawn(self.index, p.kind.name(), exe, &p.args, &p.log)
    }
}

/// The running sites of one drill.
pub struct LocalSites {
    config: DriverConfig,
    sites: Vec<Site>,
    /// The operator token written to `dir/tokens`.
    pub token: String,
    node_addrs: Vec<String>,
    admin_addrs: Vec<String>,
    /// Every site's node id and peer address, spare sites' too (then the extra nodes').
    members: Vec<(u64, String)>,
    /// The extra nodes (`node-2`, `node-3`): site, id, peer address.
    extra_nodes: Vec<(String, u64, String)>,
    /// How the drill's own clients reach the nodes (trusting the run's CA).
    pub tls: firebreak_tls::ClientTls,
}

fn io(what: &str, path: &Path, e: std::io::Error) -> Error {
    Error::CouldNotRun(format!("failed to {what} {}: {e}", path.display()))
}

/// Writes this run's operator token to `dir/tokens` (mode 0600): its path and the token.
fn write_token(dir: &Path) -> Result<(PathBuf, String)> {
    let tokens_file = dir.join("tokens");
    let token = random_token();
    std::fs::write(&tokens_file, format!("drill {token}\n"))
        .map_err(|e| io("write", &tokens_file, e))?;
    std::fs::set_permissions(
        &tokens_file,
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .map_err(|e| io("protect", &tokens_file, e))?;
    Ok((tokens_file, token))
}

/// Every site's node config, the spare sites' after the others (they join), with the
/// drill's Raft timings and state voters; no certificates yet.
fn site_configs(config: &DriverConfig, tokens_file: &Path) -> Vec<NodeConfig> {
    let names: Vec<&str> = config
        .sites
        .iter()
        .chain(&config.spare_sites)
        .map(String::as_str)
        .collect();
    let ips: Vec<String> = (0..names.len()).map(|i| config.driver.ip(i)).collect();
    let mut configs = node_configs(
        "firebreak-drill",
        &config.dir,
        &names,
        &ips,
        config.port,
        tokens_file,
    );
    spares_join(&mut configs, config.sites.len());
    for c in &mut configs {
        c.raft = config.raft.clone();
    }
    if let Some(voters) = &config.state_voters {
        let ids: Vec<NodeId> = configs
            .iter()
            .filter(|c| voters.contains(&c.site.0))
            .map(|c| c.node_id)
            .collect();
        for c in &mut configs {
            c.state_voters = Some(ids.clone());
        }
    }
    configs
}

/// The extra nodes of the first `sites` sites: `node-J` of site N on 127.0.N.J, numbered
/// after every other node, joining (`join: true`, the first nodes and itself as peers),
/// data under `<site>/node-J/`. With the site's index and J.
pub fn extra_configs(
    configs: &[NodeConfig],
    sites: usize,
    per_site: u8,
) -> Vec<(usize, u8, NodeConfig)> {
    let first: Vec<Peer> = configs
        .first()
        .map(|c| c.peers[..sites].to_vec())
        .unwrap_or_default();
    let mut next_id = configs.len() as u64 + 1;
    let mut extras = Vec::new();
    for (i, primary) in configs.iter().take(sites).enumerate() {
        for j in 2..=per_site {
            let mut c = primary.clone();
            c.node_id = NodeId(next_id);
            next_id += 1;
            let ip = match primary.listen.ip() {
                std::net::IpAddr::V4(v4) => {
                    let [a, b, n, _] = v4.octets();
                    std::net::IpAddr::from([a, b, n, j])
                }
                other => other,
            };
            for addr in [&mut c.listen, &mut c.peer_listen, &mut c.admin_listen] {
                addr.set_ip(ip);
            }
            if let Some(dns) = &mut c.dns {
                dns.listen.set_ip(ip);
            }
            let site_dir = primary.data_dir.parent().unwrap_or(&primary.data_dir);
            c.data_dir = site_dir.join(format!("node-{j}")).join("data");
            c.join = true;
            c.tls = TlsConfig::default();
            c.peers = first.clone();
            c.peers.push(Peer {
                id: c.node_id,
                site: c.site.clone(),
                addr: c.peer_listen.to_string(),
            });
            extras.push((i, j, c));
        }
    }
    extras
}

/// A reference service of `node`'s site, with its certificate, reaching `nodes` (its own
/// site's first).
fn service_process(
    config: &DriverConfig,
    ca: &crate::certs::LocalCa,
    node: &NodeConfig,
    nodes: &[String],
    service: ServiceKind,
) -> Result<Process> {
    let dir = config.dir.join(&node.site.0);
    let ip = node.listen.ip().to_string();
    let listen = format!("{ip}:{}", service_port(config.port, service));
    let files = ca.issue_service(service.name(), &[ip], &dir.join("tls"))?;
    let mut args = strings(&[
        "serve",
        service.name(),
        "--listen",
        &listen,
        "--nodes",
        &nodes.join(","),
    ]);
    args.extend(crate::certs::service_args(&files));
    if let (ServiceKind::Messaging, Some(ms)) = (service, config.reconnect_window_ms) {
        args.extend(strings(&["--reconnect-window-ms", &ms.to_string()]));
    }
    match service {
        ServiceKind::Payments => args.extend(strings(&["--site", &node.site.0])),
        ServiceKind::Login => {
            let share = hashing_share(config.sites.len());
            args.extend(strings(&["--max-hashing", &share]));
        }
        ServiceKind::Messaging | ServiceKind::Kv => {}
    }
    Ok(Process::new(
        ProcessKind::Service(service),
        args,
        dir.join(format!("{service}.log")),
    ))
}

impl LocalSites {
    /// Writes configs and starts every site's node and services.
    pub fn start(config: DriverConfig) -> Result<Self> {
        std::fs::create_dir_all(&config.dir).map_err(|e| io("create", &config.dir, e))?;
        let (tokens_file, token) = write_token(&config.dir)?;
        let mut configs = site_configs(&config, &tokens_file);
        let mut extras = extra_configs(&configs, config.sites.len(), config.nodes_per_site);
        let ca = crate::certs::LocalCa::open_or_create(&config.dir, "firebreak-drill")?;
        for c in configs
            .iter_mut()
            .chain(extras.iter_mut().map(|(_, _, c)| c))
        {
            ca.issue_node(c)?;
        }
        let every = || configs.iter().chain(extras.iter().map(|(_, _, c)| c));
        let node_addrs: Vec<String> = every().map(|c| c.listen.to_string()).collect();
        let admin_addrs: Vec<String> = every().map(|c| c.admin_listen.to_string()).collect();
        let members: Vec<(u64, String)> = every()
            .map(|c| (c.node_id.0, c.peer_listen.to_string()))
            .collect();
        let mut sites = Vec::new();
        for (i, node) in configs.iter().enumerate() {
            let dir = config.dir.join(&node.site.0);
            std::fs::create_dir_all(&dir).map_err(|e| io("create", &dir, e))?;
            let path = dir.join("node.yaml");
            let yaml = serde_yaml::to_string(node).expect("a node config serializes");
            std::fs::write(&path, yaml).map_err(|e| io("write", &path, e))?;
            let mut processes = vec![Process::new(
                ProcessKind::Node,
                strings(&["node", "--config", &path.display().to_string()]),
                dir.join("node.log"),
            )];
            // Services talk to their own site's nodes first, then the other sites' first.
            let mut nodes = vec![node_addrs[i].clone()];
            for (_, j, extra) in extras.iter().filter(|(site, _, _)| *site == i) {
                let path = dir.join(format!("node-{j}.yaml"));
                let yaml = serde_yaml::to_string(extra).expect("a node config serializes");
                std::fs::write(&path, yaml).map_err(|e| io("write", &path, e))?;
                processes.push(Process::new(
                    ProcessKind::ExtraNode(*j),
                    strings(&["node", "--config", &path.display().to_string()]),
                    dir.join(format!("node-{j}.log")),
                ));
                nodes.push(extra.listen.to_string());
            }
            let others = node_addrs[..configs.len()]
                .iter()
                .filter(|a| **a != node_addrs[i]);
            nodes.extend(others.cloned());
            // Spare sites run a node only.
            for service in config.services.iter().filter(|_| i < config.sites.len()) {
                processes.push(service_process(&config, &ca, node, &nodes, *service)?);
            }
            config
                .driver
                .install(i, &config.dir, &site_files(&config.dir, &node.site.0))?;
            let disk = match config.power_loss {
                true => Some(config.driver.mount_disk(
                    i,
                    &node.data_dir,
                    &dir.join("durable"),
                    &node.site.0,
                )?),
                false => None,
            };
            sites.push(Site {
                name: node.site.0.clone(),
                index: i,
                data_dir: node.data_dir.clone(),
                disk,
                processes,
            });
        }
        let initial = config.sites.len();
        let extra_nodes = extras
            .iter()
            .map(|(i, _, c)| {
                (
                    configs[*i].site.0.clone(),
                    c.node_id.0,
                    c.peer_listen.to_string(),
                )
            })
            .collect();
        let mut driver = Self {
            config,
            sites,
            token,
            node_addrs,
            admin_addrs,
            members,
            extra_nodes,
            tls: ca.client()?,
        };
        for i in 0..initial {
            driver.start_stopped(i)?;
        }
        Ok(driver)
    }

    /// The sites' nodes' client listeners `host:port` (gateways, keys), in site order;
    /// spare sites not included.
    pub fn node_addrs(&self) -> &[String] {
        &self.node_addrs[..self.config.sites.len()]
    }

    /// The sites' nodes' admin listeners `host:port` (topology, routing, status), in site
    /// order; spare sites not included.
    pub fn admin_addrs(&self) -> &[String] {
        &self.admin_addrs[..self.config.sites.len()]
    }

    /// The extra nodes of the sites (`node-2`, `node-3`): site, node id and peer address,
    /// to add as learners once the cluster runs.
    pub fn extra_nodes(&self) -> &[(String, u64, String)] {
        &self.extra_nodes
    }

    /// Every node's admin listener, the spare sites' and extra nodes' too (for the observer).
    pub fn all_admin_addrs(&self) -> &[String] {
        &self.admin_addrs
    }

    /// A site's node: its id and peer listener `host:port`.
    pub fn node_of(&self, site: &str) -> (u64, String) {
        self.members[self.index(site)].clone()
    }

    /// A service's URL in a site (TLS, with its certificate from the run's CA).
    pub fn service_url(&self, site: usize, service: ServiceKind) -> String {
        format!(
            "https://{}:{}",
            self.config.driver.ip(site),
            service_port(self.config.port, service)
        )
    }

    /// Where this machine keeps the sites' configs, logs and (local and netns drivers) data.
    pub fn dir(&self) -> &Path {
        &self.config.dir
    }

    /// The logs of every process, for error messages.
    pub fn logs(&self) -> String {
        self.config.dir.join("*/*.log").display().to_string()
    }

    fn site(&mut self, name: &str) -> &mut Site {
        self.sites
            .iter_mut()
            .find(|s| s.name == name)
            .expect("playbook validation: targets name sites")
    }

    /// The position of a site (spare sites after the others): its address is
    /// [`SiteDriver::ip`] of it.
    pub fn index(&self, name: &str) -> usize {
        self.sites
            .iter()
            .position(|s| s.name == name)
            .expect("validated site")
    }

    /// SIGKILLs every process of a site at once; with `wipe`, its data dir goes too.
    pub async fn kill_site(&mut self, name: &str, wipe: bool) {
        self.kill_sites(&[name], wipe).await;
    }

    /// SIGKILLs every process of several sites in the same instant, then reaps them; with
    /// `wipe`, their data dirs go too.
    pub async fn kill_sites(&mut self, names: &[&str], wipe: bool) {
        let driver = self.config.driver.clone();
        for name in names {
            self.site(name).signal(&*driver, |_| true, libc::SIGKILL);
        }
        for name in names {
            let site = self.site(name);
            for p in &mut site.processes {
                if let Some(child) = p.child.take() {
                    reap(p.kind, child).await;
                }
                p.paused = false;
            }
            if wipe {
                driver.wipe(site.index, &site.data_dir);
            }
        }
    }

    /// Cuts the power of several sites at the same instant: SIGKILLs every process of
    /// every one of them, then throws away what their disks had not synced. Returns what
    /// each site lost, in the order given.
    pub async fn power_loss(&mut self, names: &[&str]) -> Result<Vec<lazyfs::Discarded>> {
        self.kill_sites(names, false).await;
        let mut lost = Vec::new();
        for name in names {
            let disk = self.site(name).disk.as_mut().ok_or_else(|| {
                Error::CouldNotRun(format!(
                    "site {name} has no drop-unsynced disk: the drill did not mount one"
                ))
            })?;
            lost.push(disk.power_loss()?);
        }
        Ok(lost)
    }

    /// Starts every stopped process of a site again.
    pub fn restore_site(&mut self, name: &str) -> Result<()> {
        let index = self.index(name);
        self.start_stopped(index)
    }

    fn start_stopped(&mut self, index: usize) -> Result<()> {
        let (driver, exe) = (self.config.driver.clone(), self.config.exe.clone());
        let site = &mut self.sites[index];
        for i in 0..site.processes.len() {
            if site.processes[i].child.is_none() {
                let child = site.spawn(&*driver, &exe, &site.processes[i])?;
                site.processes[i].child = Some(child);
            }
        }
        Ok(())
    }

    fn process(&mut self, site: &str, kind: ProcessKind) -> &mut Process {
        self.site(site)
            .processes
            .iter_mut()
            .find(|p| p.kind == kind)
            .expect("playbook validation: process targets exist")
    }

    /// Sends `signal` to one process of a site.
    fn signal_one(&mut self, site: &str, kind: ProcessKind, signal: libc::c_int) {
        let driver = self.config.driver.clone();
        self.site(site).signal(&*driver, |p| p.kind == kind, signal);
    }

    /// SIGKILLs one process.
    pub async fn kill_process(&mut self, site: &str, kind: ProcessKind) {
        self.signal_one(site, kind, libc::SIGKILL);
        let p = self.process(site, kind);
        if let Some(child) = p.child.take() {
            reap(p.kind, child).await;
        }
        p.paused = false;
    }

    /// Starts one process again if it is down.
    pub fn start_process(&mut self, site: &str, kind: ProcessKind) -> Result<()> {
        let (driver, exe) = (self.config.driver.clone(), self.config.exe.clone());
        let site = self.site(site);
        let Some(i) = site.processes.iter().position(|p| p.kind == kind) else {
            unreachable!("playbook validation: process targets exist");
        };
        if site.processes[i].child.is_none() {
            let child = site.spawn(&*driver, &exe, &site.processes[i])?;
            site.processes[i].child = Some(child);
        }
        Ok(())
    }

    /// Asks one process to stop cleanly (SIGTERM); [`LocalSites::poll_restarts`] starts
    /// it again once it has stopped, so the drill's clock keeps running meanwhile.
    pub fn begin_restart(&mut self, site: &str, kind: ProcessKind) {
        if self.process(site, kind).paused {
            self.signal_one(site, kind, libc::SIGCONT);
            self.process(site, kind).paused = false;
        }
        self.signal_one(site, kind, libc::SIGTERM);
        self.process(site, kind).stopping = Some(std::time::Instant::now());
    }

    /// Starts again every process whose clean stop has finished (SIGKILL after
    /// [`STOP_GRACE`]); returns them as `site/process`.
    pub fn poll_restarts(&mut self) -> Result<Vec<String>> {
        let (driver, exe) = (self.config.driver.clone(), self.config.exe.clone());
        let mut restarted = Vec::new();
        for site in &mut self.sites {
            for i in 0..site.processes.len() {
                let p = &mut site.processes[i];
                let Some(since) = p.stopping else { continue };
                let child = p.child.as_mut().expect("a stopping process has a child");
                let exited = matches!(child.try_wait(), Ok(Some(_)) | Err(_));
                if !exited {
                    if since.elapsed() > STOP_GRACE {
                        tracing::warn!(
                            process = p.kind.name(),
                            "did not stop after SIGTERM; killing it"
                        );
                        let kind = p.kind;
                        site.signal(&*driver, |p| p.kind == kind, libc::SIGKILL);
                    }
                    continue;
                }
                p.stopping = None;
                let child = site.spawn(&*driver, &exe, &site.processes[i])?;
                site.processes[i].child = Some(child);
                restarted.push(format!("{}/{}", site.name, site.processes[i].kind.name()));
            }
        }
        Ok(restarted)
    }

    /// Whether a clean restart is still waiting for its process to stop.
    pub fn restarting(&self) -> bool {
        self.sites
            .iter()
            .any(|s| s.processes.iter().any(|p| p.stopping.is_some()))
    }

    /// SIGSTOP (`pause`) or SIGCONT one process.
    pub fn pause_process(&mut self, site: &str, kind: ProcessKind, pause: bool) {
        let signal = if pause { libc::SIGSTOP } else { libc::SIGCONT };
        self.signal_one(site, kind, signal);
        self.process(site, kind).paused = pause;
    }

    /// Processes that exited without the drill asking, as "site/process: status".
    pub fn unexpected_exits(&mut self) -> Vec<String> {
        let mut exits = Vec::new();
        for site in &mut self.sites {
            for p in site.processes.iter_mut().filter(|p| p.stopping.is_none()) {
                if let Some(Ok(Some(status))) = p.child.as_mut().map(|c| c.try_wait()) {
                    exits.push(format!("{}/{}: {status}", site.name, p.kind.name()));
                    p.child = None;
                }
            }
        }
        exits
    }

    /// Heals (SIGCONT) and stops every process: SIGTERM, then SIGKILL after a grace.
    pub async fn shutdown(&mut self) {
        let driver = self.config.driver.clone();
        for site in &mut self.sites {
            site.signal(&*driver, |p| p.paused, libc::SIGCONT);
            site.signal(&*driver, |_| true, libc::SIGTERM);
            for p in &mut site.processes {
                p.paused = false;
            }
        }
        for site in &mut self.sites {
            let index = site.index;
            for p in &mut site.processes {
                stop(&*driver, index, p).await;
            }
            site.disk = None; // unmounted once nothing uses it
        }
    }
}

impl Drop for LocalSites {
    fn drop(&mut self) {
        for site in &self.sites {
            site.signal(&*self.config.driver, |_| true, libc::SIGCONT);
            site.signal(&*self.config.driver, |_| true, libc::SIGKILL);
        }
    }
}

/// Waits for a process sent SIGKILL to end. Through a driver that signals remotely (ssh,
/// hooks), the signal may not arrive (a host cut off, a hook that failed): after
/// [`KILL_GRACE`] the local handle (the ssh client, the start hook) is killed instead, so
/// the drill goes on, and the miss is logged.
async fn reap(kind: ProcessKind, mut child: Child) {
    if tokio::time::timeout(KILL_GRACE, child.wait())
        .await
        .is_err()
    {
        tracing::warn!(
            process = kind.name(),
            "still running {} s after SIGKILL; killing its local handle",
            KILL_GRACE.as_secs()
        );
        let _ = child.kill().await;
    }
}

/// Waits up to [`STOP_GRACE`] for `p` (already sent SIGTERM) to stop, then kills it.
async fn stop(driver: &dyn SiteDriver, index: usize, p: &mut Process) {
    let pid = p.pid();
    if let Some(mut child) = p.child.take() {
        if tokio::time::timeout(STOP_GRACE, child.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                process = p.kind.name(),
                "did not stop after SIGTERM; killing it"
            );
            driver.signal(index, &[(p.kind.name(), pid)], libc::SIGKILL);
            let _ = child.kill().await;
        }
    }
}

/// What a site's processes read, relative to the drill's dir: the token file, the CA's
/// certificate (not its key), and the site's configs and certificates.
fn site_files(dir: &Path, site: &str) -> Vec<PathBuf> {
    let mut files = vec![
        PathBuf::from("tokens"),
        PathBuf::from("ca").join(pki::CA_CERT),
    ];
    let site_dir = dir.join(site);
    if let Ok(entries) = std::fs::read_dir(&site_dir) {
        for entry in entries.flatten() {
            let name = entry.file_name();
            let keep = name == "tls" || name.to_string_lossy().ends_with(".yaml");
            if keep {
                files.push(PathBuf::from(site).join(name));
            }
        }
    }
    files.sort();
    files
}

/// `--max-hashing` for each of `instances` login instances sharing this machine: its cores
/// split between them, at least 1 each, so that under a surge password checks leave the
/// other services (and the nodes) their share.
pub fn hashing_share(instances: usize) -> String {
    (cores() / instances.max(1)).max(1).to_string()
}

/// The cores this process may use (its CPU affinity), at least 1.
pub fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

fn strings(args: &[&str]) -> Vec<String> {
    args.iter().map(|a| a.to_string()).collect()
}

/// A random operator token (128 bits from the OS).
pub fn random_token() -> String {
    let bytes: [u8; 16] = rand::random();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Checks that every address the drill will listen on is free, so a clash is reported
/// plainly instead of as a node that never comes up.
pub fn check_ports_free(sites: usize, port: u16, services: &[ServiceKind]) -> Result<()> {
    for i in 0..sites {
        let ports = std::iter::once(port).chain(services.iter().map(|s| service_port(port, *s)));
        for p in ports {
            let addr = format!("{}:{p}", site_ip(i));
            if let Err(e) = std::net::TcpListener::bind(&addr) {
                return Err(Error::CouldNotRun(format!(
                    "{addr} is not free ({e}): another drill or `firebreak up` may be running; pass --port to use others"
                )));
            }
        }
    }
    Ok(())
}

/// Raises this process's open-file limit to at least `needed` (the sites inherit it): a
/// reconnect storm holds two files per idle client in a gateway. Raising the hard limit
/// needs root (CAP_SYS_RESOURCE); without it, says what to do.
pub fn raise_open_files(needed: u64) -> Result<()> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit(2) writes into the struct we pass.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return Err(Error::CouldNotRun(format!(
            "failed to read the open-file limit: {}",
            std::io::Error::last_os_error()
        )));
    }
    if limit.rlim_cur >= needed {
        return Ok(());
    }
    let wanted = libc::rlimit {
        rlim_cur: needed,
        rlim_max: limit.rlim_max.max(needed),
    };
    // SAFETY: setrlimit(2) reads the struct we pass.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &wanted) } != 0 {
        return Err(Error::CouldNotRun(format!(
            "the idle push clients need {needed} open files per process and the limit is {} (hard {}): \
             raise it as root (`ulimit -n {needed}`), connect them `via: messaging` (one file per stream), or lower workload.idle_push.clients",
            limit.rlim_cur, limit.rlim_max
        )));
    }
    Ok(())
}
