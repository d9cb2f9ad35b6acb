//! The netns driver's network: every site a Linux network namespace with its own address,
//! joined through a bridge in a router namespace; the drill's clients in a namespace of
//! their own. Faults are real kernel state in those namespaces.
//!
//! ```text
//!   fb-<run>-site-<name> (10.251.0.N, link fb<run>sN) ─┐
//!   fb-<run>-site-<name> (10.251.0.M, link fb<run>sM) ─┼─ fb-<run>-router: bridge fb<run>br,
//!   fb-<run>-clients     (10.251.0.100, fb<run>sc)    ─┘   ports fb<run>rN, fb<run>rc
//! ```
//!
//! | fault | kernel state |
//! |---|---|
//! | partition (a site against the rest, two groups, one way) | blackhole routes to the other side's addresses in the cut-off side's namespace |
//! | loss | an nftables table `fb_<run>` in the sender's namespace dropping a share of packets to the chosen peers |
//! | latency, jitter, bandwidth | an htb root on the sender's link: u32 filters send the peers' addresses to a class capped at the rate, with netem under it for delay and jitter; without netem, delay and jitter come from an iptables chain `FB_<run>_DELAY` queuing those packets to NFQUEUE, held by a thread of the drill (`packet_delay`) |
//! | link-flap | the site's bridge port set down and up |
//!
//! Invariants: everything created carries the run id (namespaces `fb-<run>-*`, links
//! `fb<run>*`, nft table `fb_<run>`, iptables chain `FB_<run>_DELAY`), lives inside the drill's own namespaces (nothing is
//! added to the host's namespace; the veth pairs are created straight into theirs), and
//! goes away with them: [`Network::destroy`] (also on `Drop`) deletes every namespace, which
//! takes links, routes, qdiscs and rules along. [`heal_leftovers`] removes what a crashed run
//! left: it touches nothing without the `fb-` prefix, and nothing of a run whose drill is
//! still alive (each run records its drill's PID in `/run/firebreak-drills/<run>`). Addresses exist only inside the
//! namespaces, so no packet leaves them.
//!
//! Latency and jitter use the kernel's netem qdisc where there is one; a kernel without it
//! (some VM kernels ship without `sch_netem`) gets them in user space instead, through
//! NFQUEUE (`nfnetlink_queue`, which such kernels have).

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use crate::error::{Error, Result};

/// Prefix of everything a drill creates.
pub const PREFIX: &str = "fb-";
/// The drill network, /24, only inside the drill's namespaces.
const SUBNET: &str = "10.251.0";
/// Host number of the clients' namespace.
const CLIENTS_HOST: u32 = 100;
/// Where each run records the PID of the drill that owns it, so that `heal` leaves the
/// namespaces of a drill that is still running alone.
const OWNERS_DIR: &str = "/run/firebreak-drills";

/// A drill's namespaces and links.
pub struct Network {
    pub run_id: String,
    sites: Vec<String>,
    namespaces: Vec<String>,
    destroyed: bool,
    /// Delay and jitter in user space (NFQUEUE) rather than netem: set when the kernel
    /// has no netem.
    user_space_delay: std::sync::atomic::AtomicBool,
    /// The user-space delays running, by site.
    delays: std::sync::Mutex<std::collections::BTreeMap<usize, crate::packet_delay::PacketDelay>>,
}

/// How a link misbehaves toward some peers (htb rate, netem delay and jitter).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Shaping {
    pub delay_ms: u32,
    pub jitter_ms: u32,
    pub rate_kbit: u32,
}

impl Network {
    /// Creates the router, one namespace per site and one for the clients. Needs root.
    pub fn create(run_id: &str, sites: &[String]) -> Result<Self> {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            return Err(Error::CouldNotRun(
                "the netns driver needs root (it creates network namespaces); run as root, or use the local driver".into(),
            ));
        }
        let mut network = Self {
            run_id: run_id.to_string(),
            sites: sites.to_vec(),
            namespaces: Vec::new(),
            destroyed: false,
            user_space_delay: Default::default(),
            delays: Default::default(),
        };
        network.build().inspect_err(|_| network.destroy())?;
        Ok(network)
    }

    /// The file naming the PID of the drill that owns a run's namespaces.
    fn owner_file(run_id: &str) -> PathBuf {
        PathBuf::from(OWNERS_DIR).join(run_id)
    }

    fn build(&mut self) -> Result<()> {
        let owner = Self::owner_file(&self.run_id);
        std::fs::create_dir_all(OWNERS_DIR)
            .and_then(|_| std::fs::write(&owner, format!("{}\n", std::process::id())))
            .map_err(|e| Error::CouldNotRun(format!("failed to write {}: {e}", owner.display())))?;
        let router = self.router_ns();
        self.add_namespace(&router)?;
        let bridge = format!("fb{}br", self.run_id);
        ip(&["-n", &router, "link", "add", &bridge, "type", "bridge"])?;
        ip(&["-n", &router, "link", "set", &bridge, "up"])?;
        let mut members: Vec<(String, String, String)> = (0..self.sites.len())
            .map(|i| (self.site_ns(i), i.to_string(), self.site_ip(i)))
            .collect();
        members.push((self.clients_ns(), "c".into(), self.clients_ip()));
        for (ns, tag, address) in members {
            self.add_namespace(&ns)?;
            let inside = format!("fb{}s{tag}", self.run_id);
            let port = format!("fb{}r{tag}", self.run_id);
            ip(&[
                "link", "add", &inside, "netns", &ns, "type", "veth", "peer", "name", &port,
                "netns", &router,
            ])?;
            ip(&["-n", &router, "link", "set", &port, "master", &bridge, "up"])?;
            ip(&[
                "-n",
                &ns,
                "addr",
                "add",
                &format!("{address}/24"),
                "dev",
                &inside,
            ])?;
            ip(&["-n", &ns, "link", "set", &inside, "up"])?;
            ip(&["-n", &ns, "link", "set", "lo", "up"])?;
        }
        Ok(())
    }

    fn add_namespace(&mut self, name: &str) -> Result<()> {
        ip(&["netns", "add", name])?;
        self.namespaces.push(name.to_string());
        Ok(())
    }

    pub fn router_ns(&self) -> String {
        format!("{PREFIX}{}-router", self.run_id)
    }

    pub fn clients_ns(&self) -> String {
        format!("{PREFIX}{}-clients", self.run_id)
    }

    pub fn site_ns(&self, site: usize) -> String {
        format!("{PREFIX}{}-site-{}", self.run_id, self.sites[site])
    }

    pub fn site_ip(&self, site: usize) -> String {
        format!("{SUBNET}.{}", site + 1)
    }

    pub fn clients_ip(&self) -> String {
        format!("{SUBNET}.{CLIENTS_HOST}")
    }

    /// The file a process joins the namespace through (`setns`).
    pub fn ns_path(name: &str) -> PathBuf {
        PathBuf::from("/run/netns").join(name)
    }

    fn site_link(&self, site: usize) -> String {
        format!("fb{}s{site}", self.run_id)
    }

    /// Cuts traffic from every site of `from` to every site of `to` (and back, unless
    /// `one_way`): packets are dropped silently, as on a cut link, and established
    /// connections stall rather than reset.
    pub fn partition(&self, from: &[usize], to: &[usize], one_way: bool) -> Result<()> {
        self.routes("add", from, to)?;
        if !one_way {
            self.routes("add", to, from)?;
        }
        Ok(())
    }

    /// Undoes [`Network::partition`] with the same arguments.
    pub fn heal_partition(&self, from: &[usize], to: &[usize], one_way: bool) -> Result<()> {
        self.routes("del", from, to)?;
        if !one_way {
            self.routes("del", to, from)?;
        }
        Ok(())
    }

    fn routes(&self, verb: &str, from: &[usize], to: &[usize]) -> Result<()> {
        for a in from {
            for b in to.iter().filter(|b| *b != a) {
                let target = format!("{}/32", self.site_ip(*b));
                ip(&["-n", &self.site_ns(*a), "route", verb, "blackhole", &target])?;
            }
        }
        Ok(())
    }

    /// Drops `percent` of the packets `site` sends to `peers` (an nftables rule).
    pub fn loss(&self, site: usize, peers: &[usize], percent: u32) -> Result<()> {
        let table = format!("fb_{}", self.run_id);
        let ns = self.site_ns(site);
        let addresses: Vec<String> = peers.iter().map(|p| self.site_ip(*p)).collect();
        let nft = |args: &[&str]| {
            let mut all = vec!["netns", "exec", ns.as_str(), "nft"];
            all.extend_from_slice(args);
            run("ip", &all)
        };
        nft(&["add", "table", "inet", &table])?;
        nft(&[
            "add",
            "chain",
            "inet",
            &table,
            "output",
            "{ type filter hook output priority 0 ; }",
        ])?;
        let set = format!("{{ {} }}", addresses.join(", "));
        // numgen gives 0..=99; dropping when it is at most percent - 1 drops percent of them.
        let below = percent.clamp(1, 100).saturating_sub(1).to_string();
        nft(&[
            "add", "rule", "inet", &table, "output", "ip", "daddr", &set, "numgen", "random",
            "mod", "100", "<=", &below, "drop",
        ])
    }

    /// Removes the loss rules of `site`.
    pub fn clear_loss(&self, site: usize) -> Result<()> {
        let table = format!("fb_{}", self.run_id);
        run(
            "ip",
            &[
                "netns",
                "exec",
                &self.site_ns(site),
                "nft",
                "delete",
                "table",
                "inet",
                &table,
            ],
        )
    }

    /// Delays (netem) and/or caps what `site` sends to `peers`, and only that: an htb
    /// root on the site's link sends traffic for the peers' addresses (u32 filters) into
    /// a shaped class, with a netem qdisc under it for delay and jitter; everything else
    /// (other sites, the clients) goes through an unshaped class.
    ///
    /// ```text
    ///   root 1: htb ─ 1:1 unshaped (default)
    ///               └ 1:2 rate_kbit ─ 20: netem delay ± jitter   ◄─ u32: ip dst PEER/32
    /// ```
    pub fn shape(&self, site: usize, peers: &[usize], shaping: &Shaping) -> Result<()> {
        let link = self.site_link(site);
        let ns = self.site_ns(site);
        let tc = |args: &[&str]| {
            let mut all = vec!["netns", "exec", ns.as_str(), "tc"];
            all.extend_from_slice(args);
            run("ip", &all)
        };
        const UNSHAPED: &str = "10gbit";
        let rate = match shaping.rate_kbit {
            0 => UNSHAPED.to_string(),
            kbit => format!("{kbit}kbit"),
        };
        tc(&[
            "qdisc", "add", "dev", &link, "root", "handle", "1:", "htb", "default", "1",
        ])?;
        tc(&[
            "class", "add", "dev", &link, "parent", "1:", "classid", "1:1", "htb", "rate", UNSHAPED,
        ])?;
        tc(&[
            "class", "add", "dev", &link, "parent", "1:", "classid", "1:2", "htb", "rate", &rate,
            "ceil", &rate,
        ])?;
        let delays = shaping.delay_ms > 0 || shaping.jitter_ms > 0;
        if delays
            && self
                .user_space_delay
                .load(std::sync::atomic::Ordering::Relaxed)
        {
            self.delay_in_user_space(site, peers, shaping)?;
        } else if delays {
            let delay = format!("{}ms", shaping.delay_ms);
            let jitter = format!("{}ms", shaping.jitter_ms);
            let mut args = vec![
                "qdisc", "add", "dev", &link, "parent", "1:2", "handle", "20:", "netem", "delay",
                &delay,
            ];
            if shaping.jitter_ms > 0 {
                args.push(&jitter);
            }
            tc(&args).map_err(|e| match e {
                Error::CouldNotRun(m) if m.contains("qdisc kind is unknown") => {
                    Error::CouldNotRun(format!(
                        "this kernel has no netem qdisc (sch_netem), so latency and jitter cannot be injected here: {m}"
                    ))
                }
                other => other,
            })?;
        }
        for peer in peers {
            let address = format!("{}/32", self.site_ip(*peer));
            tc(&[
                "filter", "add", "dev", &link, "parent", "1:", "protocol", "ip", "prio", "1",
                "u32", "match", "ip", "dst", &address, "flowid", "1:2",
            ])?;
        }
        Ok(())
    }

    /// The iptables chain of a site's user-space delay: `FB_<run>_DELAY`.
    fn delay_chain(&self) -> String {
        format!("FB_{}_DELAY", self.run_id)
    }

    /// Runs iptables (legacy: nftables' own queue expression needs `nft_queue`, which
    /// kernels without netem tend to lack too; the xtables NFQUEUE target they have) in
    /// the namespace of `site`.
    fn iptables(&self, site: usize, args: &[&str]) -> Result<()> {
        let ns = self.site_ns(site);
        let mut all = vec!["netns", "exec", ns.as_str(), "iptables-legacy", "-w"];
        all.extend_from_slice(args);
        run("ip", &all)
    }

    /// Delays and jitters what `site` sends to `peers` in user space: an iptables chain
    /// `FB_<run>_DELAY` in the site's namespace queues those packets to NFQUEUE, where a
    /// thread of the drill holds each for its delay (`crate::packet_delay`).
    fn delay_in_user_space(&self, site: usize, peers: &[usize], shaping: &Shaping) -> Result<()> {
        let queue = 100 + site as u16;
        let delay = crate::packet_delay::PacketDelay::start(
            &Self::ns_path(&self.site_ns(site)),
            queue,
            std::time::Duration::from_millis(u64::from(shaping.delay_ms)),
            std::time::Duration::from_millis(u64::from(shaping.jitter_ms)),
            site as u64,
        )?;
        let chain = self.delay_chain();
        self.iptables(site, &["-N", &chain])?;
        self.iptables(site, &["-A", "OUTPUT", "-j", &chain])?;
        let to = queue.to_string();
        for peer in peers {
            let address = format!("{}/32", self.site_ip(*peer));
            self.iptables(
                site,
                &[
                    "-A",
                    &chain,
                    "-d",
                    &address,
                    "-j",
                    "NFQUEUE",
                    "--queue-num",
                    &to,
                    "--queue-bypass",
                ],
            )?;
        }
        self.delays
            .lock()
            .expect("not poisoned")
            .insert(site, delay);
        Ok(())
    }

    /// Delays in user space from now on (the kernel has no netem).
    pub fn delay_in_user_space_from_now(&self) {
        self.user_space_delay
            .store(true, std::sync::atomic::Ordering::Relaxed);
    }

    /// Checks that the kernel has the netem qdisc (latency and jitter need it), on the
    /// clients' link, before any site starts.
    pub fn probe_netem(&self) -> Result<()> {
        let link = format!("fb{}sc", self.run_id);
        let ns = self.clients_ns();
        let add = [
            "netns", "exec", &ns, "tc", "qdisc", "add", "dev", &link, "root", "netem", "delay",
            "1ms",
        ];
        run("ip", &add).map_err(|e| match e {
            Error::CouldNotRun(m) => Error::CouldNotRun(format!(
                "this kernel has no netem qdisc (sch_netem), so latency and jitter cannot be injected here: {m}"
            )),
            other => other,
        })?;
        run(
            "ip",
            &[
                "netns", "exec", &ns, "tc", "qdisc", "del", "dev", &link, "root",
            ],
        )
    }

    /// Removes the shaping of `site` (its htb root, classes, filters and netem, or its
    /// user-space delay: the queue rule first, then the thread, which lets what it held go).
    pub fn clear_shape(&self, site: usize) -> Result<()> {
        let delay = self.delays.lock().expect("not poisoned").remove(&site);
        if let Some(delay) = delay {
            let chain = self.delay_chain();
            self.iptables(site, &["-D", "OUTPUT", "-j", &chain])?;
            self.iptables(site, &["-F", &chain])?;
            self.iptables(site, &["-X", &chain])?;
            delay.stop();
        }
        let link = self.site_link(site);
        run(
            "ip",
            &[
                "netns",
                "exec",
                &self.site_ns(site),
                "tc",
                "qdisc",
                "del",
                "dev",
                &link,
                "root",
            ],
        )
    }

    /// Sets a site's bridge port down (cut from everything, clients included) or up.
    pub fn link(&self, site: usize, up: bool) -> Result<()> {
        let port = format!("fb{}r{site}", self.run_id);
        ip(&[
            "-n",
            &self.router_ns(),
            "link",
            "set",
            &port,
            if up { "up" } else { "down" },
        ])
    }

    /// Deletes every namespace of the run (links, routes, qdiscs and rules go with them).
    pub fn destroy(&mut self) {
        if self.destroyed {
            return;
        }
        // Their queues go with the namespaces; the threads stop first.
        std::mem::take(&mut *self.delays.lock().unwrap_or_else(|e| e.into_inner()));
        for ns in self.namespaces.iter().rev() {
            if let Err(e) = ip(&["netns", "del", ns]) {
                tracing::warn!(namespace = %ns, cause = %e, "failed to delete a drill namespace; `firebreak drill heal` removes it");
            }
        }
        let _ = std::fs::remove_file(Self::owner_file(&self.run_id));
        self.destroyed = true;
    }
}

impl Drop for Network {
    fn drop(&mut self) {
        self.destroy();
    }
}

/// Namespaces whose name starts with [`PREFIX`]: what drills left.
pub fn leftovers() -> Result<Vec<String>> {
    let out = Command::new("ip")
        .args(["netns", "list"])
        .output()
        .map_err(|e| Error::CouldNotRun(format!("failed to run ip: {e}")))?;
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|name| name.starts_with(PREFIX))
        .map(str::to_string)
        .collect())
}

/// Whether the drill that created run `run_id` is still alive.
fn owner_alive(run_id: &str) -> bool {
    std::fs::read_to_string(Network::owner_file(run_id))
        .ok()
        .and_then(|pid| pid.trim().parse::<libc::pid_t>().ok())
        // SAFETY: kill(2) with signal 0 only checks that the process exists.
        .is_some_and(|pid| unsafe { libc::kill(pid, 0) } == 0)
}

/// The run id in a namespace name `fb-<run>-...`.
fn run_of(name: &str) -> &str {
    name.trim_start_matches(PREFIX)
        .split('-')
        .next()
        .unwrap_or("")
}

/// Removes what crashed drills left: SIGKILL to the processes inside `fb-` namespaces
/// (a crashed drill's sites), then the namespaces. Touches nothing without the prefix,
/// and nothing of a drill whose process still runs.
pub fn heal_leftovers() -> Result<Vec<String>> {
    let names: Vec<String> = leftovers()?
        .into_iter()
        .filter(|name| !owner_alive(run_of(name)))
        .collect();
    for name in &names {
        let _ = std::fs::remove_file(Network::owner_file(run_of(name)));
        let pids = Command::new("ip")
            .args(["netns", "pids", name])
            .output()
            .map_err(|e| Error::CouldNotRun(format!("failed to run ip: {e}")))?;
        for pid in String::from_utf8_lossy(&pids.stdout)
            .lines()
            .filter_map(|l| l.trim().parse::<libc::pid_t>().ok())
        {
            // SAFETY: kill(2) on a process inside a namespace a drill created.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
        ip(&["netns", "del", name])?;
    }
    Ok(names)
}

/// Joins the network namespace at `path` on the calling thread.
pub fn enter(path: &std::path::Path) -> Result<()> {
    use std::os::fd::AsRawFd;
    let file = std::fs::File::open(path)
        .map_err(|e| Error::CouldNotRun(format!("failed to open {}: {e}", path.display())))?;
    // SAFETY: setns(2) with a namespace fd we hold open; affects only this thread.
    if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        return Err(Error::CouldNotRun(format!(
            "failed to join {}: {}",
            path.display(),
            std::io::Error::last_os_error()
        )));
    }
    Ok(())
}

fn ip(args: &[&str]) -> Result<()> {
    run("ip", args)
}

fn run(program: &str, args: &[&str]) -> Result<()> {
    let out = Command::new(program).args(args).output().map_err(|e| {
        Error::CouldNotRun(format!(
            "failed to run {program} (install iproute2 and nftables): {e}"
        ))
    })?;
    if out.status.success() {
        Ok(())
    } else {
        Err(Error::CouldNotRun(format!(
            "`{program} {}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        )))
    }
}

/// The netns driver's faults: kernel state in the drill's namespaces, which go with them
/// (so the expiry is not needed: nothing outlives the drill's namespaces).
impl crate::site_driver::NetworkFaults for Network {
    fn partition(&self, from: &[usize], to: &[usize], one_way: bool, _: Duration) -> Result<()> {
        Network::partition(self, from, to, one_way)
    }

    fn heal_partition(&self, from: &[usize], to: &[usize], one_way: bool) -> Result<()> {
        Network::heal_partition(self, from, to, one_way)
    }

    fn loss(&self, site: usize, peers: &[usize], percent: u32, _: Duration) -> Result<()> {
        Network::loss(self, site, peers, percent)
    }

    fn clear_loss(&self, site: usize) -> Result<()> {
        Network::clear_loss(self, site)
    }

    fn shape(&self, site: usize, peers: &[usize], shaping: &Shaping, _: Duration) -> Result<()> {
        Network::shape(self, site, peers, shaping)
    }

    fn clear_shape(&self, site: usize) -> Result<()> {
        Network::clear_shape(self, site)
    }

    fn link(&self, site: usize, up: bool, _: Duration) -> Result<()> {
        Network::link(self, site, up)
    }
}
