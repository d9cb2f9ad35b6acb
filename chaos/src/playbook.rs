//! Playbooks: one drill a YAML file, parsed strictly and checked before anything runs.
//!
//! ```text
//!   text ─► serde_yaml (unknown fields, wrong types: file:line:column from serde_yaml)
//!        ─► validate (sites named, times inside the run, durations where a fault needs one:
//!                     file:line:column found by locating the field in the text)
//!        ─► Playbook, ready to run
//! ```
//!
//! A playbook names the sites and services, the workload (rate, mix, duration, seed), the
//! steady state that must hold before the first fault and at the end, a timeline of faults,
//! when to abort, and what to expect. Times are seconds from the start of the workload.
//!
//! Caveat: serde_yaml reports no position for a value that parsed but breaks a rule, so the
//! validator finds the field in the text itself: the n-th `key:` after the section's start
//! (comments stripped). A field written twice on one line is located at its first copy.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Largest playbook read.
const MAX_PLAYBOOK_BYTES: u64 = 256 * 1024;
/// Sites the local driver can run (127.0.1.1 to 127.0.9.1).
pub const MAX_SITES: usize = 9;
/// Bounds of the workload, so that a typo cannot melt the machine.
const MAX_RATE_PER_SEC: u32 = 5_000;
const MAX_DURATION_SECS: u32 = 3_600;
const MAX_USERS: u32 = 1_000;
/// Operations one drill may run: the history keeps them all in memory.
const MAX_OPERATIONS: u64 = 500_000;
/// Most idle push clients a drill may open (each costs two open files in its gateway).
pub const MAX_IDLE_CLIENTS: u32 = 20_000;

/// One drill.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Playbook {
    /// Names the drill in the report and its output.
    pub name: String,
    /// What the drill proves, for whoever reads the report.
    pub description: String,
    /// Which site driver runs the drill (`--driver` overrides).
    #[serde(default)]
    pub driver: Driver,
    pub topology: TopologySpec,
    pub workload: Workload,
    #[serde(default)]
    pub steady_state: SteadyState,
    /// Faults in the order they happen.
    #[serde(default)]
    pub timeline: Vec<Step>,
    /// When to give up early: the drill heals and is judged failed.
    #[serde(default)]
    pub stop: Option<StopWhen>,
    pub expect: Expectations,
}

/// Site drivers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Driver {
    /// Child processes on loopback addresses; no privileges.
    #[default]
    Local,
    /// Child processes in network namespaces; root; network faults.
    Netns,
    /// Processes on real hosts over ssh (`--inventory FILE`); partitions, loss and
    /// link-flap as nftables tables on the hosts.
    Ssh,
    /// Each site's actions are the operator's shell hooks (`--inventory FILE` of hooks);
    /// partitions through its `isolate` and `heal` hooks.
    Command,
}

impl Driver {
    pub fn name(self) -> &'static str {
        match self {
            Self::Local => "local",
            Self::Netns => "netns",
            Self::Ssh => "ssh",
            Self::Command => "command",
        }
    }
}

/// The sites and the services they run.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TopologySpec {
    /// Site names, in priority order (the first is the active-passive primary).
    pub sites: Vec<String>,
    pub services: Vec<ServiceSpec>,
    /// Nodes each site runs, 1 to 3 (default 1): the first votes, the others join as
    /// learners; any live one renews the site's lease and serves its gateway. Local driver.
    #[serde(default)]
    pub nodes_per_site: Option<u8>,
    /// Sites that stay dark at the start: each a node on an empty disk (no services) that a
    /// `site-replace` step brings in as a burned site's replacement. Local driver only.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub spare_sites: Vec<String>,
    /// Sites whose node votes in the state group (default: every site). Naming one site
    /// makes a deliberately fragile setup, for proving that the checkers catch loss.
    #[serde(default)]
    pub state_voters: Option<Vec<String>>,
    /// Least time between two routing changes of one service (the dwell rule).
    #[serde(default = "default_dwell_ms")]
    pub dwell_ms: u64,
    /// How often every node renews its site's lease, and when a site whose lease is that
    /// old is down (the topology's policy; default: its defaults, 500 and 2,000 ms).
    #[serde(default)]
    pub lease_interval_ms: Option<u64>,
    #[serde(default)]
    pub site_down_after_ms: Option<u64>,
    /// Most sites automation may hold out of one service at once (the topology's policy;
    /// default 1): with five sites, two may burn together.
    #[serde(default)]
    pub max_sites_down_auto: Option<usize>,
    /// The nodes' Raft timings (default: the node's defaults, tuned for one machine);
    /// scale them with the round trip between sites, as the README explains.
    #[serde(default)]
    pub raft: firebreak_node::config::RaftTimings,
}

/// The site a process fault may name as `leader/PROCESS`: whichever site's node leads the
/// control group when the fault strikes.
pub const LEADER_SITE: &str = "leader";

impl TopologySpec {
    /// Nodes per site (1 unless the playbook says).
    pub fn nodes_per_site(&self) -> u8 {
        self.nodes_per_site.unwrap_or(1)
    }
}

fn default_dwell_ms() -> u64 {
    2_000
}

/// A reference service and its mode (`kv` takes none: it is the nodes' own API).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceSpec {
    pub name: ServiceKind,
    #[serde(default)]
    pub mode: Mode,
}

/// What a drill can drive: the reference services, and the nodes' own kv API.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ServiceKind {
    Messaging,
    Payments,
    Login,
    /// Reads, writes and compare-and-swaps on a few keys of the state group, straight to
    /// every node's client listener (no process, no routing): judged for linearizability.
    Kv,
}

impl ServiceKind {
    pub fn name(self) -> &'static str {
        match self {
            Self::Messaging => "messaging",
            Self::Payments => "payments",
            Self::Login => "login",
            Self::Kv => "kv",
        }
    }

    /// Whether it runs as a process of each site (all but `kv`).
    pub fn is_process(self) -> bool {
        self != Self::Kv
    }
}

impl std::fmt::Display for ServiceKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// How a service's sites share its traffic.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    #[default]
    ActiveActive,
    ActivePassive,
}

impl Mode {
    pub fn name(self) -> &'static str {
        match self {
            Self::ActiveActive => "active-active",
            Self::ActivePassive => "active-passive",
        }
    }
}

/// The traffic, open-loop: operations start at `rate_per_sec` whatever the answers do.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Workload {
    /// Seeds every choice (operation, user, amount, jitter), so a run can be repeated.
    pub seed: u64,
    pub rate_per_sec: u32,
    pub duration_secs: u32,
    /// Users; each has an account, a login and a conversation with one push recipient.
    pub users: u32,
    /// Relative weights of the operations.
    pub mix: Mix,
    /// Per-attempt timeout of a request.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// Operations in flight at once; beyond, new ones are recorded as failed at once
    /// (the client is saturated) rather than queued without bound.
    #[serde(default = "default_max_in_flight")]
    pub max_in_flight: u32,
    /// Idle push clients for a reconnect storm, connected before the timeline starts.
    #[serde(default)]
    pub idle_push: Option<IdlePush>,
    /// Sizes of message bodies, bytes, one picked per send (default: a short text). Large
    /// values make sled write large pages, which power-loss drills must cover.
    #[serde(default)]
    pub message_bytes: Vec<u32>,
    /// Keys the kv operations share (1 to 16): few, so that they contend.
    #[serde(default = "default_kv_keys")]
    pub kv_keys: u32,
}

/// Idle push clients: they follow one conversation and send nothing, like a messenger's
/// phones at night. Half use firebreak's client (jittered backoff, another address), half
/// a naive client that reconnects at once to the next address; all first connect through
/// one site, so that losing it breaks every stream at the same instant.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IdlePush {
    /// How many, both kinds together (firebreak's client gets the odd one).
    pub clients: u32,
    /// The site they all connect through first.
    pub through: String,
    /// What they connect to: each site's gateway (the node, as real clients do), or its
    /// messaging instance directly (as behind a load balancer). A gateway holds two open
    /// files per stream, so 10,000 streams through one gateway need a limit above 20,000.
    #[serde(default)]
    pub via: IdleVia,
    /// The reconnect window the messaging instances suggest to their stream clients
    /// (`serve messaging --reconnect-window-ms`), in milliseconds: firebreak's clients
    /// spread their reconnects over it. Unset: the client's own 1 s first window.
    #[serde(default)]
    pub window_ms: Option<u64>,
}

/// Where idle push clients connect.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum IdleVia {
    #[default]
    Gateway,
    Messaging,
}

fn default_timeout_ms() -> u64 {
    2_000
}

fn default_max_in_flight() -> u32 {
    512
}

fn default_kv_keys() -> u32 {
    3
}

/// Weights of messaging sends, payments transfers and logins (with a validation of a
/// session made earlier).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Mix {
    #[serde(default)]
    pub messaging: u32,
    #[serde(default)]
    pub payments: u32,
    #[serde(default)]
    pub login: u32,
    /// Operations on the kv API (with `kv` in topology.services).
    #[serde(default)]
    pub kv: u32,
}

/// What "healthy" means: it must hold in the window before the first fault and in the last
/// window of the drill.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SteadyState {
    /// Share of operations that succeed, per service (0 to 1).
    pub availability_min: f64,
    pub latency_p99_ms_max: u64,
    pub window_secs: u32,
}

impl Default for SteadyState {
    fn default() -> Self {
        Self {
            availability_min: 0.99,
            latency_p99_ms_max: 1_000,
            window_secs: 5,
        }
    }
}

/// One fault of the timeline.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Step {
    /// Seconds from the start of the workload.
    pub at_secs: f64,
    pub fault: FaultKind,
    /// A site (`pangyo`), or a site's process (`pangyo/node`, `gasan/payments`).
    pub target: String,
    /// How long the fault lasts: power-cycle's dark time, pause's stop, a killed
    /// process's time down (without one it stays down until `site-restore`).
    #[serde(default)]
    pub duration_secs: Option<f64>,
    /// With `site-loss`: the site's disks burn too, and it comes back empty.
    #[serde(default)]
    pub wipe_data: bool,
    /// Network faults: the sites on the other side (default: every site not in the
    /// target). A site in neither the target nor the peers of a partition sees both sides.
    #[serde(default)]
    pub peers: Option<Vec<String>>,
    /// Partition: cut only what the target sends to the peers.
    #[serde(default)]
    pub one_way: bool,
    /// Loss: share of packets dropped, 1 to 100.
    #[serde(default)]
    pub percent: Option<u32>,
    /// Latency: added delay and its jitter, milliseconds.
    #[serde(default)]
    pub delay_ms: Option<u32>,
    #[serde(default)]
    pub jitter_ms: Option<u32>,
    /// Bandwidth: the cap, kilobits per second.
    #[serde(default)]
    pub rate_kbit: Option<u32>,
    /// Link-flap: a full down-and-up cycle; the link is down the first half of each.
    #[serde(default)]
    pub period_secs: Option<f64>,
    /// Surge: the workload's rate multiplier, 2 to 50.
    #[serde(default)]
    pub factor: Option<u32>,
    /// Site-replace: the spare site that takes the target's place.
    #[serde(default)]
    pub with: Option<String>,
}

/// The faults: the first six work with either driver, the rest need the netns driver.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FaultKind {
    /// SIGKILL every process of the target sites (`a`, or `a+b` in the same instant).
    SiteLoss,
    /// Start every stopped process of a site again, with its data.
    SiteRestore,
    /// Site loss, then restore after `duration_secs`.
    SitePowerCycle,
    /// SIGKILL one process (restarted after `duration_secs` if given).
    ProcessKill,
    /// SIGTERM one process and start it again once it has stopped: a clean restart.
    ProcessRestart,
    /// SIGSTOP one process for `duration_secs`, then SIGCONT.
    ProcessPause,
    /// Drop traffic between the target sites (`a` or `a+b`) and their peers.
    Partition,
    /// Drop a share of what the target sends to its peers.
    Loss,
    /// Delay (and jitter) what the target sends to its peers.
    Latency,
    /// Cap the bandwidth of what the target sends to its peers.
    Bandwidth,
    /// The target's link down and up every `period_secs`, for `duration_secs`.
    LinkFlap,
    /// The workload's rate times `factor` for `duration_secs` (target: `workload`): a New
    /// Year's midnight.
    Surge,
    /// SIGKILL every process of the target sites (`a`, or `a+b+c` at the same instant) and
    /// throw away every write their disks had not fsynced; the sites stay dark until
    /// `power-restore` (or for `duration_secs`). Needs root and /dev/fuse.
    PowerLoss,
    /// Power back on: start every process of the target sites again, on what survived.
    PowerRestore,
    /// An operator evacuates the target site (`firebreak evacuate`) with every process
    /// still running, and restores it after `duration_secs`: a planned move, the case
    /// where the old primary is alive and must stop writing.
    Evacuate,
    /// An operator replaces the target site, burned, by the spare site `with`, whose node
    /// starts on an empty disk (`firebreak site replace`): the voters of the target leave
    /// both Raft groups and the spare's node joins them, once caught up. For good.
    SiteReplace,
}

impl FaultKind {
    pub fn name(self) -> &'static str {
        match self {
            Self::SiteLoss => "site-loss",
            Self::SiteRestore => "site-restore",
            Self::SitePowerCycle => "site-power-cycle",
            Self::ProcessKill => "process-kill",
            Self::ProcessRestart => "process-restart",
            Self::ProcessPause => "process-pause",
            Self::Partition => "partition",
            Self::Loss => "loss",
            Self::Latency => "latency",
            Self::Bandwidth => "bandwidth",
            Self::LinkFlap => "link-flap",
            Self::Surge => "surge",
            Self::PowerLoss => "power-loss",
            Self::PowerRestore => "power-restore",
            Self::Evacuate => "evacuate",
            Self::SiteReplace => "site-replace",
        }
    }

    /// Whether only the netns driver can inject it.
    pub fn needs_netns(self) -> bool {
        matches!(
            self,
            Self::Partition | Self::Loss | Self::Latency | Self::Bandwidth | Self::LinkFlap
        )
    }

    /// Whether the target is one process rather than a site.
    pub fn targets_process(self) -> bool {
        matches!(
            self,
            Self::ProcessKill | Self::ProcessRestart | Self::ProcessPause
        )
    }

    /// Whether the target may name several sites joined by `+`.
    fn takes_several_sites(self) -> bool {
        matches!(
            self,
            Self::Partition | Self::PowerLoss | Self::PowerRestore | Self::SiteLoss
        )
    }

    fn needs_duration(self) -> bool {
        matches!(
            self,
            Self::SitePowerCycle | Self::ProcessPause | Self::LinkFlap | Self::Evacuate
        )
    }
}

/// Abort when any service's availability stays under a floor.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StopWhen {
    pub availability_below: f64,
    pub for_secs: u32,
}

/// What must hold for the drill to pass.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Expectations {
    /// Longest failover per service, first failure to steady success, at the client.
    #[serde(default)]
    pub failover_secs_max: BTreeMap<ServiceKind, f64>,
    /// Most operations that may end failed or unknown, over the whole drill (none by
    /// default means unlimited: a site loss fails some requests).
    #[serde(default)]
    pub failed_max: Option<u64>,
    /// Sites that must serve every service again by the end.
    #[serde(default)]
    pub serving_at_end: Vec<String>,
    /// Most routing changes of any one service over the drill: a bound on flapping (a
    /// failover storm).
    #[serde(default)]
    pub max_routing_changes: Option<u64>,
    /// Most elections per Raft group once the workload runs (0: the leaders of the start
    /// stay leaders throughout).
    #[serde(default)]
    pub max_elections: Option<u64>,
    /// Longest time from the first fault at `workload.idle_push.through` until every idle
    /// client using firebreak's client has a stream open again.
    #[serde(default)]
    pub idle_back_secs_max: Option<f64>,
    /// Least ratio of the naive clients' peak reconnects per 100 ms at the survivors to
    /// firebreak's clients' peak, in the same run: how much gentler firebreak's are.
    #[serde(default)]
    pub idle_peak_ratio_min: Option<f64>,
    /// Least workload operations per second that succeed in every whole 5 s window of a
    /// surge (after its first second): a surge is served near capacity, not collapsed
    /// under. Machine-bound: measure the capacity where the drill runs (docs/drills.md).
    #[serde(default)]
    pub surge_goodput_min_per_sec: Option<u64>,
    /// Longest time either Raft group may go without a leader that has a quorum behind
    /// it (an election is a gap; a group that lost its majority never ends one).
    #[serde(default)]
    pub quorum_gap_secs_max: Option<f64>,
    /// Longest time after a surge ends until every service is steady again.
    #[serde(default)]
    pub surge_recovery_secs_max: Option<f64>,
    /// Longest time from a message's acknowledgement to its push to each recipient.
    #[serde(default)]
    pub push_delay_secs_max: Option<f64>,
    /// Checkers not to run, by name (`crashes`, `dwell`...): each invariant can be judged
    /// alone. The report lists what ran.
    #[serde(default)]
    pub checkers_off: Vec<String>,
}

/// A process of a site, as a fault target names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ProcessKind {
    /// The site's first node (its voter).
    Node,
    /// The site's second or third node (`node-2`, `node-3`: learners that share the site's
    /// lease and serve its gateway), with `topology.nodes_per_site`.
    ExtraNode(u8),
    Service(ServiceKind),
}

/// Most nodes a drill runs per site.
pub const MAX_NODES_PER_SITE: u8 = 3;

impl ProcessKind {
    pub fn name(self) -> &'static str {
        match self {
            Self::Node => "node",
            Self::ExtraNode(2) => "node-2",
            Self::ExtraNode(_) => "node-3",
            Self::Service(s) => s.name(),
        }
    }
}

impl Step {
    /// A step with no options: set those its fault needs.
    pub fn new(at_secs: f64, fault: FaultKind, target: String) -> Self {
        Self {
            at_secs,
            fault,
            target,
            duration_secs: None,
            wipe_data: false,
            with: None,
            peers: None,
            one_way: false,
            percent: None,
            delay_ms: None,
            jitter_ms: None,
            rate_kbit: None,
            period_secs: None,
            factor: None,
        }
    }

    /// The target's site and, for a process fault, its process.
    pub fn site_and_process(&self) -> (&str, Option<ProcessKind>) {
        match self.target.split_once('/') {
            Some((site, process)) => (site, parse_process(process)),
            None => (&self.target, None),
        }
    }

    /// The sites a fault targets: one, or several joined by `+` (a partition's side).
    pub fn target_sites(&self) -> Vec<&str> {
        let (site, _) = self.site_and_process();
        site.split('+').collect()
    }

    /// The other side of a network fault: `peers`, or every site not targeted.
    pub fn peer_sites<'a>(&'a self, sites: &'a [String]) -> Vec<&'a str> {
        match &self.peers {
            Some(peers) => peers.iter().map(String::as_str).collect(),
            None => {
                let targets = self.target_sites();
                sites
                    .iter()
                    .map(String::as_str)
                    .filter(|s| !targets.contains(s))
                    .collect()
            }
        }
    }

    /// When the fault's effect ends, if it ends by itself.
    pub fn end_secs(&self) -> f64 {
        self.at_secs + self.duration_secs.unwrap_or(0.0)
    }
}

fn parse_process(name: &str) -> Option<ProcessKind> {
    match name {
        "node" => Some(ProcessKind::Node),
        "node-2" => Some(ProcessKind::ExtraNode(2)),
        "node-3" => Some(ProcessKind::ExtraNode(3)),
        "messaging" => Some(ProcessKind::Service(ServiceKind::Messaging)),
        "payments" => Some(ProcessKind::Service(ServiceKind::Payments)),
        "login" => Some(ProcessKind::Service(ServiceKind::Login)),
        _ => None,
    }
}

impl Playbook {
    /// Reads, parses and validates a playbook file.
    pub fn load(path: &Path) -> Result<Self> {
        let file = path.display().to_string();
        let meta = std::fs::metadata(path).map_err(|source| Error::Read {
            file: file.clone(),
            source,
        })?;
        if meta.len() > MAX_PLAYBOOK_BYTES {
            return Err(Error::Playbook {
                file,
                line: 1,
                column: 1,
                message: format!("is {} bytes; the limit is {MAX_PLAYBOOK_BYTES}", meta.len()),
            });
        }
        let text = std::fs::read_to_string(path).map_err(|source| Error::Read {
            file: file.clone(),
            source,
        })?;
        Self::parse(&file, &text)
    }

    /// Parses and validates playbook text; `file` names it in errors.
    pub fn parse(file: &str, text: &str) -> Result<Self> {
        let playbook: Playbook = serde_yaml::from_str(text).map_err(|err| {
            let (line, column) = err.location().map_or((1, 1), |l| (l.line(), l.column()));
            Error::Playbook {
                file: file.to_string(),
                line,
                column,
                message: err.to_string(),
            }
        })?;
        if let Err(problem) = playbook.validate() {
            let (line, column) = locate(text, &problem.section, &problem.key, problem.nth);
            return Err(Error::Playbook {
                file: file.to_string(),
                line,
                column,
                message: format!("{}: {}", problem.path, problem.message),
            });
        }
        Ok(playbook)
    }

    /// This playbook run with `driver` instead of its own, validated again: a fault the
    /// driver cannot carry out is refused before anything starts.
    pub fn with_driver(&self, driver: Driver) -> std::result::Result<Playbook, String> {
        let mut playbook = self.clone();
        playbook.driver = driver;
        playbook
            .validate()
            .map_err(|p| format!("with --driver {}: {}: {}", driver.name(), p.path, p.message))?;
        Ok(playbook)
    }

    /// This playbook with `timeline` instead of its own, validated like a file: the error
    /// says which step breaks which rule.
    pub fn with_timeline(&self, timeline: Vec<Step>) -> std::result::Result<Playbook, String> {
        let mut playbook = self.clone();
        playbook.timeline = timeline;
        playbook
            .validate()
            .map_err(|p| format!("{}: {}", p.path, p.message))?;
        Ok(playbook)
    }

    /// The services the topology runs (`kv` included).
    pub fn services(&self) -> Vec<ServiceKind> {
        self.topology.services.iter().map(|s| s.name).collect()
    }

    /// The services that run as processes of each site and are routed (all but `kv`).
    pub fn process_services(&self) -> Vec<ServiceKind> {
        self.services()
            .into_iter()
            .filter(|s| s.is_process())
            .collect()
    }

    /// Seconds from the workload's start to the first fault at the site the idle push
    /// clients connect through (the storm's start), if there is one.
    pub fn idle_fault_secs(&self) -> Option<f64> {
        let through = &self.workload.idle_push.as_ref()?.through;
        self.timeline
            .iter()
            .filter(|s| s.fault != FaultKind::Surge)
            .filter(|s| s.target.split(['/', '+']).any(|part| part == through))
            .map(|s| s.at_secs)
            .reduce(f64::min)
    }

    /// Each surge's start and end, milliseconds from the workload's start (a surge
    /// without a duration lasts to the end of the workload).
    pub fn surges_ms(&self) -> Vec<(u64, u64)> {
        let end = u64::from(self.workload.duration_secs) * 1_000;
        self.timeline
            .iter()
            .filter(|s| s.fault == FaultKind::Surge)
            .map(|s| {
                let from = (s.at_secs * 1_000.0) as u64;
                let to = s.duration_secs.map_or(end, |d| from + (d * 1_000.0) as u64);
                (from, to.min(end))
            })
            .collect()
    }

    /// Whether a step cuts power, so the sites need drop-unsynced disks.
    pub fn has_power_loss(&self) -> bool {
        self.timeline
            .iter()
            .any(|s| s.fault == FaultKind::PowerLoss)
    }

    /// Seconds from the workload's start to the first fault, if there is one.
    pub fn first_fault_secs(&self) -> Option<f64> {
        self.timeline.iter().map(|s| s.at_secs).reduce(f64::min)
    }

    fn validate(&self) -> std::result::Result<(), Problem> {
        if self.name.is_empty() || self.name.len() > 64 {
            return Err(Problem::at("name", "name", 0, "must be 1 to 64 characters"));
        }
        self.validate_topology()?;
        self.validate_workload()?;
        self.validate_timeline()?;
        self.validate_expectations()?;
        self.validate_push_bound()?;
        self.validate_checkers_off()
    }

    /// Every drill with messaging bounds how late a push may be: without a bound, a push
    /// that never came and was only found by the final catch-up read would pass as late.
    fn validate_push_bound(&self) -> std::result::Result<(), Problem> {
        let messaging = self.services().contains(&ServiceKind::Messaging);
        match (messaging, self.expect.push_delay_secs_max) {
            (true, None) => Err(Problem::at(
                "expect",
                "push_delay_secs_max",
                0,
                "expect.push_delay_secs_max: missing; a drill with messaging must bound how late a push may arrive (e.g. push_delay_secs_max: 10)",
            )),
            _ => Ok(()),
        }
    }

    fn validate_checkers_off(&self) -> std::result::Result<(), Problem> {
        let names = crate::checkers::NAMES;
        match self
            .expect
            .checkers_off
            .iter()
            .find(|c| !names.contains(&c.as_str()))
        {
            Some(unknown) => Err(Problem::at(
                "expect",
                "checkers_off",
                0,
                format!(
                    "{unknown} is not a checker; the checkers are {}",
                    names.join(", ")
                ),
            )),
            None => Ok(()),
        }
    }

    /// Spare sites: valid names, distinct from every site, within the site limit.
    fn validate_spares(&self) -> std::result::Result<(), Problem> {
        let t = &self.topology;
        let fail = |message: String| Err(Problem::at("topology", "spare_sites", 0, message));
        if t.sites.len() + t.spare_sites.len() > MAX_SITES {
            return fail(format!(
                "{} sites and {} spares exceed the drill's {MAX_SITES}",
                t.sites.len(),
                t.spare_sites.len()
            ));
        }
        for (i, spare) in t.spare_sites.iter().enumerate() {
            if let Err(e) = firebreak_model::SiteId::from(spare.as_str()).validate("site") {
                return fail(format!("spare_sites[{i}]: {}", e.reason));
            }
            if t.sites.contains(spare) || t.spare_sites[..i].contains(spare) {
                return fail(format!("spare_sites[{i}]: {spare} appears twice"));
            }
        }
        Ok(())
    }

    fn validate_topology(&self) -> std::result::Result<(), Problem> {
        let t = &self.topology;
        if t.sites.len() < 3 || t.sites.len() > MAX_SITES {
            return Err(Problem::at(
                "topology",
                "sites",
                0,
                format!(
                    "lists {} sites; a drill needs 3 to {MAX_SITES} (with 2, losing one loses the quorum)",
                    t.sites.len()
                ),
            ));
        }
        for (i, site) in t.sites.iter().enumerate() {
            if let Err(e) = firebreak_model::SiteId::from(site.as_str()).validate("site") {
                return Err(Problem::at(
                    "topology",
                    "sites",
                    0,
                    format!("sites[{i}]: {}", e.reason),
                ));
            }
            if t.sites[..i].contains(site) {
                return Err(Problem::at(
                    "topology",
                    "sites",
                    0,
                    format!("{site} appears twice"),
                ));
            }
        }
        self.validate_spares()?;
        let per_site = t.nodes_per_site();
        if !(1..=MAX_NODES_PER_SITE).contains(&per_site) {
            return Err(Problem::at(
                "topology",
                "nodes_per_site",
                0,
                format!("{per_site}: a drill runs 1 to {MAX_NODES_PER_SITE} nodes per site"),
            ));
        }
        if per_site > 1 && (self.driver != Driver::Local || self.has_power_loss()) {
            return Err(Problem::at(
                "topology",
                "nodes_per_site",
                0,
                "several nodes per site run with the local driver only, without power-loss faults",
            ));
        }
        if t.services.is_empty() {
            return Err(Problem::at(
                "topology",
                "services",
                0,
                "must name at least one service",
            ));
        }
        for (i, service) in t.services.iter().enumerate() {
            if service.name == ServiceKind::Kv && service.mode != Mode::ActiveActive {
                return Err(Problem::at(
                    "topology",
                    "name",
                    i,
                    format!("services[{i}]: kv is the nodes' own API and has no mode; write {{ name: kv }}"),
                ));
            }
            if t.services[..i].iter().any(|s| s.name == service.name) {
                return Err(Problem::at(
                    "topology",
                    "name",
                    i,
                    format!("services[{i}]: {} appears twice", service.name),
                ));
            }
        }
        if let Some(voters) = &t.state_voters {
            if voters.is_empty() {
                return Err(Problem::at(
                    "topology",
                    "state_voters",
                    0,
                    "must name at least one site",
                ));
            }
            if let Some(v) = voters.iter().find(|v| !t.sites.contains(v)) {
                return Err(Problem::at(
                    "topology",
                    "state_voters",
                    0,
                    format!("{v} is not a site; the sites are {}", t.sites.join(", ")),
                ));
            }
        }
        Ok(())
    }

    fn validate_workload(&self) -> std::result::Result<(), Problem> {
        let w = &self.workload;
        let bound = |key: &str, value: u64, max: u64| {
            if value == 0 || value > max {
                Err(Problem::at(
                    "workload",
                    key,
                    0,
                    format!("is {value}; must be 1 to {max}"),
                ))
            } else {
                Ok(())
            }
        };
        bound(
            "rate_per_sec",
            w.rate_per_sec.into(),
            MAX_RATE_PER_SEC.into(),
        )?;
        bound(
            "duration_secs",
            w.duration_secs.into(),
            MAX_DURATION_SECS.into(),
        )?;
        bound("users", w.users.into(), MAX_USERS.into())?;
        if w.message_bytes.len() > 16 {
            return Err(Problem::at(
                "workload",
                "message_bytes",
                0,
                "lists more than 16 sizes",
            ));
        }
        for size in &w.message_bytes {
            bound(
                "message_bytes",
                (*size).into(),
                firebreak_services::messaging::MAX_BODY_BYTES as u64,
            )?;
        }
        if w.users == 0 || (w.users < 2 && self.services().contains(&ServiceKind::Payments)) {
            return Err(Problem::at(
                "workload",
                "users",
                0,
                "must be at least 1, and 2 with payments (transfers need two accounts)",
            ));
        }
        let surged: f64 = self
            .timeline
            .iter()
            .filter(|s| s.fault == FaultKind::Surge)
            .map(|s| {
                // Without a duration a surge lasts to the end of the workload.
                let lasts = s
                    .duration_secs
                    .unwrap_or(f64::from(w.duration_secs) - s.at_secs);
                lasts * f64::from(s.factor.unwrap_or(1).saturating_sub(1))
            })
            .sum();
        let operations = (f64::from(w.rate_per_sec) * (f64::from(w.duration_secs) + surged)) as u64;
        if operations > MAX_OPERATIONS {
            return Err(Problem::at(
                "workload",
                "rate_per_sec",
                0,
                format!("rate_per_sec x duration_secs is {operations} operations; the history holds at most {MAX_OPERATIONS}"),
            ));
        }
        bound("timeout_ms", w.timeout_ms, 60_000)?;
        bound("max_in_flight", w.max_in_flight.into(), 10_000)?;
        bound("kv_keys", w.kv_keys.into(), 16)?;
        let weights = [
            (ServiceKind::Messaging, w.mix.messaging),
            (ServiceKind::Payments, w.mix.payments),
            (ServiceKind::Login, w.mix.login),
            (ServiceKind::Kv, w.mix.kv),
        ];
        if weights.iter().all(|(_, weight)| *weight == 0) {
            return Err(Problem::at(
                "workload",
                "mix",
                0,
                "gives every operation weight 0",
            ));
        }
        if let Some((service, _)) = weights
            .iter()
            .find(|(s, weight)| *weight > 0 && !self.services().contains(s))
        {
            return Err(Problem::at(
                "workload",
                service.name(),
                0,
                format!("mix.{service} has weight but the topology does not run {service}"),
            ));
        }
        if let Some(idle) = &w.idle_push {
            if idle.clients < 2 || idle.clients > MAX_IDLE_CLIENTS {
                return Err(Problem::at(
                    "workload",
                    "clients",
                    0,
                    format!(
                        "idle_push.clients: is {}; must be 2 to {MAX_IDLE_CLIENTS} (half use each client)",
                        idle.clients
                    ),
                ));
            }
            if !self.topology.sites.contains(&idle.through) {
                return Err(Problem::at(
                    "workload",
                    "through",
                    0,
                    format!(
                        "idle_push.through: {} is not a site; the sites are {}",
                        idle.through,
                        self.topology.sites.join(", ")
                    ),
                ));
            }
            if idle
                .window_ms
                .is_some_and(|w| !(100..=300_000).contains(&w))
            {
                return Err(Problem::at(
                    "workload",
                    "window_ms",
                    0,
                    "idle_push.window_ms: must be 100 to 300,000 (5 minutes)",
                ));
            }
            if !self.services().contains(&ServiceKind::Messaging) {
                return Err(Problem::at(
                    "workload",
                    "idle_push",
                    0,
                    "idle_push: push streams need messaging in topology.services",
                ));
            }
            if self.idle_fault_secs().is_none() {
                return Err(Problem::at(
                    "workload",
                    "through",
                    0,
                    format!(
                        "idle_push.through: no timeline step touches {}; the storm needs a fault there",
                        idle.through
                    ),
                ));
            }
        }
        let s = &self.steady_state;
        if !(0.0..=1.0).contains(&s.availability_min) {
            return Err(Problem::at(
                "steady_state",
                "availability_min",
                0,
                "must be 0 to 1",
            ));
        }
        if s.window_secs == 0 || s.window_secs > w.duration_secs {
            return Err(Problem::at(
                "steady_state",
                "window_secs",
                0,
                format!(
                    "must be 1 to the workload's duration ({} s)",
                    w.duration_secs
                ),
            ));
        }
        if let Some(stop) = &self.stop {
            if !(0.0..=1.0).contains(&stop.availability_below) {
                return Err(Problem::at(
                    "stop",
                    "availability_below",
                    0,
                    "must be 0 to 1",
                ));
            }
            if stop.for_secs == 0 {
                return Err(Problem::at("stop", "for_secs", 0, "must be at least 1"));
            }
        }
        Ok(())
    }

    fn validate_timeline(&self) -> std::result::Result<(), Problem> {
        let end = f64::from(self.workload.duration_secs);
        let mut durations_seen = 0;
        for (i, step) in self.timeline.iter().enumerate() {
            let path = |field: &str| format!("timeline[{i}].{field}");
            if !(0.0..end).contains(&step.at_secs) {
                return Err(Problem::at(
                    "timeline",
                    "at_secs",
                    i,
                    format!(
                        "{}: {} is outside the workload's 0 to {end} s",
                        path("at_secs"),
                        step.at_secs
                    ),
                ));
            }
            if i > 0 && step.at_secs < self.timeline[i - 1].at_secs {
                return Err(Problem::at(
                    "timeline",
                    "at_secs",
                    i,
                    format!("{}: steps must be in time order", path("at_secs")),
                ));
            }
            self.validate_network_step(i, step)?;
            self.validate_replace_step(i, step)?;
            if step.fault == FaultKind::PowerLoss && self.driver == Driver::Command {
                return Err(Problem::at(
                    "timeline",
                    "fault",
                    i,
                    format!(
                        "{}: power-loss has no command hook: it runs with the local, netns and ssh drivers",
                        path("fault")
                    ),
                ));
            }
            let (_, process) = step.site_and_process();
            if step.fault == FaultKind::Surge {
                if step.target != "workload" {
                    return Err(Problem::at(
                        "timeline",
                        "target",
                        i,
                        format!("{}: a surge targets `workload`", path("target")),
                    ));
                }
                if !step.factor.is_some_and(|f| (2..=50).contains(&f)) {
                    return Err(Problem::at(
                        "timeline",
                        "fault",
                        i,
                        format!("{}: surge needs factor (2 to 50)", path("fault")),
                    ));
                }
            }
            for site in step
                .target_sites()
                .into_iter()
                .filter(|_| step.fault != FaultKind::Surge)
            {
                let leader = site == LEADER_SITE && step.fault.targets_process();
                if leader && step.duration_secs.is_some() {
                    return Err(Problem::at(
                        "timeline",
                        "duration_secs",
                        i,
                        format!(
                            "{}: a leader/... target is resolved when the fault strikes; bring the process back with a later step naming its site",
                            path("duration_secs")
                        ),
                    ));
                }
                if !leader && !self.topology.sites.iter().any(|s| s == site) {
                    return Err(Problem::at(
                        "timeline",
                        "target",
                        i,
                        format!(
                            "{}: no site {site:?}; the sites are {}",
                            path("target"),
                            self.topology.sites.join(", ")
                        ),
                    ));
                }
            }
            if step.target.contains('+') && !step.fault.takes_several_sites() {
                return Err(Problem::at(
                    "timeline",
                    "target",
                    i,
                    format!(
                        "{}: only site-loss, partition, power-loss and power-restore take several sites (a+b)",
                        path("target")
                    ),
                ));
            }
            let process_named = step.target.contains('/');
            if step.fault.targets_process() != process_named || (process_named && process.is_none())
            {
                let wanted = if step.fault.targets_process() {
                    "SITE/PROCESS, where PROCESS is node, messaging, payments or login"
                } else {
                    "a site name"
                };
                return Err(Problem::at(
                    "timeline",
                    "target",
                    i,
                    format!("{}: {} needs {wanted}", path("target"), step.fault.name()),
                ));
            }
            if let Some(ProcessKind::ExtraNode(n)) = process {
                if n > self.topology.nodes_per_site() {
                    return Err(Problem::at(
                        "timeline",
                        "target",
                        i,
                        format!(
                            "{}: node-{n} needs topology.nodes_per_site: {n} or more",
                            path("target")
                        ),
                    ));
                }
            }
            if let Some(ProcessKind::Service(s)) = process {
                if !self.services().contains(&s) {
                    return Err(Problem::at(
                        "timeline",
                        "target",
                        i,
                        format!("{}: the topology does not run {s}", path("target")),
                    ));
                }
            }
            match step.duration_secs {
                Some(d) => {
                    if d <= 0.0 || step.at_secs + d >= end {
                        return Err(Problem::at(
                            "timeline",
                            "duration_secs",
                            durations_seen,
                            format!(
                                "{}: must be above 0 and end before the workload ({end} s)",
                                path("duration_secs")
                            ),
                        ));
                    }
                    durations_seen += 1;
                }
                None if step.fault.needs_duration() => {
                    return Err(Problem::at(
                        "timeline",
                        "fault",
                        i,
                        format!(
                            "{}: {} needs duration_secs",
                            path("fault"),
                            step.fault.name()
                        ),
                    ));
                }
                None => {}
            }
            if step.wipe_data && step.fault != FaultKind::SiteLoss {
                return Err(Problem::at(
                    "timeline",
                    "wipe_data",
                    0,
                    format!("{}: only site-loss can wipe data", path("wipe_data")),
                ));
            }
        }
        Ok(())
    }

    /// Site replacements: a spare site, each replacing one site once, local driver only.
    fn validate_replace_step(&self, i: usize, step: &Step) -> std::result::Result<(), Problem> {
        let path = |field: &str| format!("timeline[{i}].{field}");
        let replacing = step.fault == FaultKind::SiteReplace;
        let fail = |field: &str, message: String| {
            Err(Problem::at(
                "timeline",
                field,
                i,
                format!("{}: {message}", path(field)),
            ))
        };
        match (&step.with, replacing) {
            (Some(_), false) => return fail("with", "only site-replace takes `with`".into()),
            (None, true) => {
                return fail(
                    "with",
                    "site-replace needs `with`: the spare site to bring in".into(),
                )
            }
            (None, false) => return Ok(()),
            (Some(_), true) => {}
        }
        let spare = step.with.as_deref().unwrap_or_default();
        let spares = &self.topology.spare_sites;
        if !spares.iter().any(|s| s == spare) {
            let listed = if spares.is_empty() {
                "none".to_string()
            } else {
                spares.join(", ")
            };
            return fail(
                "with",
                format!("{spare:?} is not a spare site (topology.spare_sites: {listed})"),
            );
        }
        let earlier = self.timeline[..i].iter().any(|s| {
            s.with.as_deref() == Some(spare)
                || (s.fault == FaultKind::SiteReplace && s.target == step.target)
        });
        if earlier {
            return fail(
                "with",
                format!(
                    "{spare} or {} is already in an earlier site-replace",
                    step.target
                ),
            );
        }
        if self.driver != Driver::Local {
            return fail(
                "fault",
                "site-replace runs with the local driver only".into(),
            );
        }
        Ok(())
    }

    /// Network faults: the driver, their parameters and peers.
    fn validate_network_step(&self, i: usize, step: &Step) -> std::result::Result<(), Problem> {
        let path = |field: &str| format!("timeline[{i}].{field}");
        let fault = step.fault;
        let shaping = matches!(fault, FaultKind::Latency | FaultKind::Bandwidth);
        if fault.needs_netns() && fault != FaultKind::Partition && self.driver == Driver::Command {
            return Err(Problem::at(
                "timeline",
                "fault",
                i,
                format!(
                    "{}: {} has no command hook: the command driver cuts networks with its isolate and heal hooks (partition) only",
                    path("fault"),
                    fault.name()
                ),
            ));
        }
        if shaping && self.driver == Driver::Ssh {
            return Err(Problem::at(
                "timeline",
                "fault",
                i,
                format!(
                    "{}: {} runs with the netns driver only: the ssh driver has no shaping on hosts yet",
                    path("fault"),
                    fault.name()
                ),
            ));
        }
        if fault.needs_netns() && self.driver == Driver::Local {
            return Err(Problem::at(
                "timeline",
                "fault",
                i,
                format!(
                    "{}: {} needs the netns or ssh driver (`driver: netns` or --driver netns; root, Linux)",
                    path("fault"),
                    fault.name()
                ),
            ));
        }
        let takes = |field: &str, present: bool, kinds: &[FaultKind]| {
            if present && !kinds.contains(&fault) {
                let names: Vec<&str> = kinds.iter().map(|k| k.name()).collect();
                return Err(Problem::at(
                    "timeline",
                    field,
                    0,
                    format!("{}: only {} take {field}", path(field), names.join(", ")),
                ));
            }
            Ok(())
        };
        use FaultKind::*;
        takes(
            "peers",
            step.peers.is_some(),
            &[Partition, Loss, Latency, Bandwidth],
        )?;
        takes("one_way", step.one_way, &[Partition])?;
        takes("percent", step.percent.is_some(), &[Loss])?;
        takes("delay_ms", step.delay_ms.is_some(), &[Latency])?;
        takes("jitter_ms", step.jitter_ms.is_some(), &[Latency])?;
        takes("rate_kbit", step.rate_kbit.is_some(), &[Bandwidth])?;
        takes("period_secs", step.period_secs.is_some(), &[LinkFlap])?;
        takes("factor", step.factor.is_some(), &[Surge])?;
        let required = |field: &str, ok: bool, rule: &str| {
            if ok {
                Ok(())
            } else {
                Err(Problem::at(
                    "timeline",
                    "fault",
                    i,
                    format!("{}: {} needs {field} {rule}", path("fault"), fault.name()),
                ))
            }
        };
        match fault {
            Loss => required(
                "percent",
                step.percent.is_some_and(|p| (1..=100).contains(&p)),
                "(1 to 100)",
            )?,
            Latency => {
                let delay = step.delay_ms.unwrap_or(0);
                required("delay_ms", (1..=10_000).contains(&delay), "(1 to 10000)")?;
                required(
                    "jitter_ms",
                    step.jitter_ms.unwrap_or(0) <= delay,
                    "(at most delay_ms)",
                )?;
            }
            Bandwidth => required(
                "rate_kbit",
                step.rate_kbit.is_some_and(|r| r >= 8),
                "(at least 8)",
            )?,
            LinkFlap => required(
                "period_secs",
                step.period_secs
                    .is_some_and(|p| p >= 0.2 && p <= step.duration_secs.unwrap_or(0.0)),
                "(0.2 s to duration_secs)",
            )?,
            _ => {}
        }
        for peer in step.peers.iter().flatten() {
            if !self.topology.sites.contains(peer) || step.target_sites().contains(&peer.as_str()) {
                return Err(Problem::at(
                    "timeline",
                    "peers",
                    0,
                    format!(
                        "{}: {peer} must be a site outside the target; the sites are {}",
                        path("peers"),
                        self.topology.sites.join(", ")
                    ),
                ));
            }
        }
        Ok(())
    }

    fn validate_expectations(&self) -> std::result::Result<(), Problem> {
        let e = &self.expect;
        for (service, secs) in &e.failover_secs_max {
            if !self.services().contains(service) {
                return Err(Problem::at(
                    "expect",
                    service.name(),
                    0,
                    format!("failover_secs_max.{service}: the topology does not run {service}"),
                ));
            }
            if *secs <= 0.0 {
                return Err(Problem::at(
                    "expect",
                    service.name(),
                    0,
                    format!("failover_secs_max.{service}: must be above 0"),
                ));
            }
        }
        if let Some(secs) = e.push_delay_secs_max {
            if !self.services().contains(&ServiceKind::Messaging) || secs <= 0.0 {
                return Err(Problem::at(
                    "expect",
                    "push_delay_secs_max",
                    0,
                    "must be above 0, with messaging in topology.services",
                ));
            }
        }
        if let Some(secs) = e.idle_back_secs_max {
            if self.workload.idle_push.is_none() {
                return Err(Problem::at(
                    "expect",
                    "idle_back_secs_max",
                    0,
                    "needs workload.idle_push (there are no idle clients to come back)",
                ));
            }
            if secs <= 0.0 {
                return Err(Problem::at(
                    "expect",
                    "idle_back_secs_max",
                    0,
                    "must be above 0",
                ));
            }
        }
        if e.quorum_gap_secs_max.is_some_and(|s| s <= 0.0) {
            return Err(Problem::at(
                "expect",
                "quorum_gap_secs_max",
                0,
                "must be above 0",
            ));
        }
        let surged = !self.surges_ms().is_empty();
        let surge_bounds = [
            (
                "surge_goodput_min_per_sec",
                e.surge_goodput_min_per_sec.map(|n| n as f64),
            ),
            ("surge_recovery_secs_max", e.surge_recovery_secs_max),
        ];
        for (field, value) in surge_bounds {
            if value.is_some_and(|v| v <= 0.0 || !surged) {
                return Err(Problem::at(
                    "expect",
                    field,
                    0,
                    "must be above 0, with a surge in the timeline",
                ));
            }
        }
        if let Some(ratio) = e.idle_peak_ratio_min {
            if self.workload.idle_push.is_none() || ratio <= 0.0 {
                return Err(Problem::at(
                    "expect",
                    "idle_peak_ratio_min",
                    0,
                    "must be above 0, with workload.idle_push (both kinds of idle client)",
                ));
            }
        }
        if let Some(site) = e
            .serving_at_end
            .iter()
            .find(|s| !self.topology.sites.contains(s))
        {
            return Err(Problem::at(
                "expect",
                "serving_at_end",
                0,
                format!(
                    "{site} is not a site; the sites are {}",
                    self.topology.sites.join(", ")
                ),
            ));
        }
        Ok(())
    }
}

/// A rule a parsed playbook breaks, and where to look for it in the text.
struct Problem {
    section: String,
    key: String,
    nth: usize,
    path: String,
    message: String,
}

impl Problem {
    fn at(section: &str, key: &str, nth: usize, message: impl Into<String>) -> Self {
        let message = message.into();
        // Messages that start with their own path keep it; others get section.key.
        let (path, message) = match message.split_once(": ") {
            Some((head, rest)) if head.contains('[') || head.contains('.') => {
                (head.to_string(), rest.to_string())
            }
            _ => (format!("{section}.{key}"), message),
        };
        Self {
            section: section.into(),
            key: key.into(),
            nth,
            path,
            message,
        }
    }
}

/// Line and column (1-based) of the value of the `nth` `key:` after the top-level
/// `section:` line; the section's line if the key is not found.
fn locate(text: &str, section: &str, key: &str, nth: usize) -> (usize, usize) {
    let lines: Vec<&str> = text.lines().collect();
    let start = lines
        .iter()
        .position(|l| l.starts_with(&format!("{section}:")))
        .unwrap_or(0);
    let needle = format!("{key}:");
    let mut seen = 0;
    for (index, line) in lines.iter().enumerate().skip(start) {
        if index > start && !line.starts_with([' ', '\t', '-', '#']) && !line.is_empty() {
            break; // the next top-level section
        }
        let code = line.split(" #").next().unwrap_or(line);
        let mut from = 0;
        while let Some(found) = code[from..].find(&needle) {
            let at = from + found;
            let boundary = at == 0 || code[..at].ends_with([' ', '{', ',', '-']);
            if boundary && (index > start || key == section) {
                if seen == nth {
                    let value = at + needle.len();
                    let skip = code[value..].len() - code[value..].trim_start().len();
                    return (index + 1, value + skip + 1);
                }
                seen += 1;
            }
            from = at + needle.len();
        }
    }
    (start + 1, 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "\
name: t
description: a test
topology:
  sites: [a, b, c]
  services:
    - { name: payments, mode: active-passive }
workload: { seed: 1, rate_per_sec: 10, duration_secs: 30, users: 4, mix: { payments: 1 } }
timeline:
  - { at_secs: 5, fault: site-loss, target: a }
  - { at_secs: 10, fault: process-pause, target: b/node, duration_secs: 2 }
  - at_secs: 12
    fault: site-restore
    target: a
expect:
  failover_secs_max: { payments: 5 }
";

    fn error(text: &str) -> String {
        Playbook::parse("p.yaml", text).unwrap_err().to_string()
    }

    #[test]
    fn a_good_playbook_parses() {
        let p = Playbook::parse("p.yaml", GOOD).unwrap();
        assert_eq!(p.timeline.len(), 3);
        assert_eq!(p.first_fault_secs(), Some(5.0));
        assert_eq!(
            p.timeline[1].site_and_process(),
            ("b", Some(ProcessKind::Node))
        );
    }

    /// Each broken playbook names the file, the line and column, and what is wrong.
    #[test]
    fn errors_say_where_and_what() {
        let cases = [
            (
                GOOD.replace("description: a test", "descripton: a test"),
                "p.yaml:2:1",
                "unknown field `descripton`",
            ),
            (
                GOOD.replace("site-loss", "site-los"),
                "p.yaml:9:",
                "unknown variant `site-los`",
            ),
            (
                GOOD.replace("target: a }", "target: x }"),
                "p.yaml:9:45",
                "timeline[0].target: no site \"x\"",
            ),
            (
                GOOD.replace("    target: a\n", "    target: x\n"),
                "p.yaml:13:13",
                "timeline[2].target: no site \"x\"",
            ),
            (
                GOOD.replace(", duration_secs: 2", ""),
                "p.yaml:10:",
                "process-pause needs duration_secs",
            ),
            (
                GOOD.replace("b/node", "b"),
                "p.yaml:10:",
                "process-pause needs SITE/PROCESS",
            ),
            (
                GOOD.replace("at_secs: 10", "at_secs: 99"),
                "p.yaml:10:16",
                "outside the workload",
            ),
            (
                GOOD.replace("rate_per_sec: 10", "rate_per_sec: 0"),
                "p.yaml:7:",
                "workload.rate_per_sec: is 0",
            ),
            (
                GOOD.replace("{ payments: 5 }", "{ login: 5 }"),
                "p.yaml:15:",
                "does not run login",
            ),
            (
                GOOD.replace("[a, b, c]", "[a, b]"),
                "p.yaml:4:10",
                "a drill needs 3",
            ),
            (
                GOOD.replace("mix: { payments: 1 }", "mix: { messaging: 1 }"),
                "p.yaml:7:",
                "does not run messaging",
            ),
            (
                GOOD.replace(
                    "mix: { payments: 1 } }",
                    "mix: { payments: 1 }, idle_push: { clients: 10, through: a } }",
                ),
                "p.yaml:7:",
                "idle_push: push streams need messaging",
            ),
            (
                GOOD.replace(
                    "mix: { payments: 1 } }",
                    "mix: { payments: 1 }, idle_push: { clients: 10, through: z } }",
                )
                .replace(
                    "active-passive }",
                    "active-passive }\n    - { name: messaging, mode: active-active }",
                ),
                "p.yaml:8:",
                "idle_push.through: z is not a site",
            ),
            (
                GOOD.replace(
                    "mix: { payments: 1 } }",
                    "mix: { payments: 1 }, idle_push: { clients: 10, through: c } }",
                )
                .replace(
                    "active-passive }",
                    "active-passive }\n    - { name: messaging, mode: active-active }",
                ),
                "p.yaml:8:",
                "no timeline step touches c",
            ),
            (
                GOOD.replace(
                    "{ payments: 5 }",
                    "{ payments: 5 }\n  idle_back_secs_max: 3",
                ),
                "p.yaml:16:23",
                "needs workload.idle_push",
            ),
            (
                GOOD.replace(
                    "{ payments: 5 }",
                    "{ payments: 5 }\n  surge_goodput_min_per_sec: 300",
                ),
                "p.yaml:16:",
                "surge_goodput_min_per_sec: must be above 0, with a surge in the timeline",
            ),
            (
                GOOD.replace("{ payments: 5 }", "{ payments: 5 }\n  checkers_off: [dwel]"),
                "p.yaml:16:",
                "expect.checkers_off: dwel is not a checker; the checkers are messaging,",
            ),
        ];
        for (text, place, what) in cases {
            let err = error(&text);
            assert!(err.starts_with(place), "{place}: got {err}");
            assert!(err.contains(what), "{what}: got {err}");
        }
    }

    #[test]
    fn shipped_playbooks_are_valid() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../playbooks");
        let mut count = 0;
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "yaml") {
                Playbook::load(&path).unwrap_or_else(|e| panic!("{e}"));
                count += 1;
            }
        }
        assert!(
            count >= 3,
            "pangyo-fire, power-cycle and rolling-restart ship"
        );
    }
}
