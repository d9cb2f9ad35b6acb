//! The node's YAML configuration: who it is, where it listens, its peers, its Raft timings.
//!
//! Loading refuses unknown fields and reports every problem with the file, the line and
//! column where serde found it, and the field, e.g.
//! `node.yaml:7:3: raft.heartbeat_interval_ms: must be below election_timeout_min_ms (500)`.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use firebreak_model::{Member, NodeId, SiteId};
use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// Largest config file read.
const MAX_CONFIG_BYTES: u64 = 1024 * 1024;

/// Everything a node needs to start.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeConfig {
    /// Name of the cluster; a data dir written for another cluster is refused.
    pub cluster: String,
    /// This node's id; must appear in `peers`.
    pub node_id: NodeId,
    /// This node's site; must match its entry in `peers`.
    pub site: SiteId,
    /// Address of the client listener: the gateway and the keys (`/v1/kv`, `/v1/txn`,
    /// `/v1/watch`) for services. TLS; keys need a service certificate or operator
    /// credential.
    pub listen: SocketAddr,
    /// Address of the admin listener: operator commands, status and metrics. TLS; commands
    /// need an operator token, reads too with `auth.protect_reads`.
    pub admin_listen: SocketAddr,
    /// Address of the peer listener: Raft RPCs, lease renewals, health reports and requests
    /// forwarded between nodes. Mutual TLS: only a certificate naming a node of this
    /// cluster gets a connection. This node's `addr` in `peers` must reach it.
    pub peer_listen: SocketAddr,
    /// Certificates; TLS is on unless `tls.plaintext_for_debugging` says otherwise.
    #[serde(default)]
    pub tls: TlsConfig,
    /// Where the node keeps its Raft logs, state and snapshots.
    pub data_dir: PathBuf,
    /// Every voting member of the cluster, this node included. All nodes must list the
    /// same peers: they bootstrap the cluster from this list.
    pub peers: Vec<Peer>,
    /// This node joins a running cluster (after `firebreak node add` or `site add|replace`
    /// named it) instead of bootstrapping one: it never initializes a group, and waits for
    /// the leader to bring it in as a learner. `peers` then lists the nodes it may ask
    /// about its own id, and itself.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub join: bool,
    /// Raft timings; see [`RaftTimings`] for how to choose them.
    #[serde(default)]
    pub raft: RaftTimings,
    /// Client API bounds.
    #[serde(default)]
    pub api: ApiLimits,
    /// Who may act as an operator.
    #[serde(default)]
    pub auth: AuthConfig,
    /// The nodes that vote in the state group; every peer when unset. Fewer voters than
    /// sites is a deliberate weakness: a drill uses it to prove that its checkers catch the
    /// writes lost when the only voter burns. Non-voters forward writes to the voters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state_voters: Option<Vec<NodeId>>,
    /// The embedded authoritative DNS server; off when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dns: Option<DnsConfig>,
    /// Routing hooks the control leader runs on every routing change (`crate::hooks`).
    /// Give every node the same hooks: whichever node leads delivers.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hooks: Vec<HookConfig>,
}

/// Most hooks a node runs.
pub const MAX_HOOKS: usize = firebreak_model::hooks::MAX_HOOKS;

/// One routing hook: a command (the change as JSON on its stdin) or a webhook (the change
/// POSTed as JSON), with `Idempotency-Key` / `FIREBREAK_IDEMPOTENCY_KEY` naming the change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HookConfig {
    /// The hook's name, in status, metrics and the audit log.
    pub name: String,
    /// The command and its arguments, run without a shell (use `["sh", "-c", "..."]` for
    /// one); exit status 0 acknowledges the change.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exec: Option<Vec<String>>,
    /// An `http://` or `https://` URL; a 2xx answer acknowledges the change.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook: Option<String>,
    /// The CA that signed an `https://` webhook's certificate (required for https).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
    /// How long one attempt may take before it is killed and counted as failed.
    #[serde(default = "default_hook_timeout_ms")]
    pub timeout_ms: u64,
    /// Attempts in one delivery round, with backoff between them; a failed round is
    /// audited and tried again later (1 s doubling to 60 s).
    #[serde(default = "default_hook_attempts")]
    pub attempts: u32,
}

fn default_hook_timeout_ms() -> u64 {
    10_000
}

fn default_hook_attempts() -> u32 {
    5
}

impl HookConfig {
    fn validate(&self, at: &str) -> std::result::Result<(), (String, String)> {
        let fail = |field: &str, message: String| Err((format!("{at}.{field}"), message));
        if let Err(e) = firebreak_model::topology::check_service_name("name", &self.name) {
            return fail("name", e.reason);
        }
        match (&self.exec, &self.webhook) {
            (Some(argv), None) if argv.is_empty() || argv[0].is_empty() => {
                return fail(
                    "exec",
                    "needs a command: [\"/path/to/cmd\", \"arg\", ...]".into(),
                )
            }
            (None, Some(url)) if url.starts_with("https://") && self.ca_file.is_none() => {
                return fail(
                    "ca_file",
                    "an https webhook needs the CA that signed its certificate".into(),
                )
            }
            (None, Some(url)) if !url.starts_with("http://") && !url.starts_with("https://") => {
                return fail(
                    "webhook",
                    format!("{url:?} is not an http:// or https:// URL"),
                )
            }
            (Some(argv), None) => check_argv(argv).or_else(|m| fail("exec", m))?,
            (None, Some(url)) => check_webhook(url).or_else(|m| fail("webhook", m))?,
            _ => return fail("exec", "give exactly one of exec and webhook".into()),
        }
        if !(1..=60_000).contains(&self.timeout_ms) {
            return fail(
                "timeout_ms",
                format!("is {}; use 1 to 60000", self.timeout_ms),
            );
        }
        if !(1..=10).contains(&self.attempts) {
            return fail("attempts", format!("is {}; use 1 to 10", self.attempts));
        }
        Ok(())
    }
}

/// Most arguments of a hook's command, and the longest one, in bytes.
const MAX_HOOK_ARGS: usize = 64;
const MAX_HOOK_ARG_BYTES: usize = 4096;
/// Longest webhook URL, in bytes.
const MAX_WEBHOOK_BYTES: usize = 2048;

fn check_argv(argv: &[String]) -> std::result::Result<(), String> {
    if argv.len() > MAX_HOOK_ARGS {
        return Err(format!(
            "has {} arguments; at most {MAX_HOOK_ARGS} (put more in a script)",
            argv.len()
        ));
    }
    for (i, arg) in argv.iter().enumerate() {
        if arg.len() > MAX_HOOK_ARG_BYTES {
            return Err(format!(
                "argument {i} is {} bytes; at most {MAX_HOOK_ARG_BYTES}",
                arg.len()
            ));
        }
        if arg.contains('\0') {
            return Err(format!(
                "argument {i} holds a NUL byte, which no command line can"
            ));
        }
    }
    Ok(())
}

fn check_webhook(url: &str) -> std::result::Result<(), String> {
    if url.len() > MAX_WEBHOOK_BYTES {
        return Err(format!(
            "is {} bytes; at most {MAX_WEBHOOK_BYTES}",
            url.len()
        ));
    }
    reqwest::Url::parse(url)
        .map(drop)
        .map_err(|e| format!("{url:?} is not a URL: {e}"))
}

/// The embedded DNS server (see `crate::dns`): the zone it is authoritative for, where it
/// listens (UDP and TCP), and the TTL of its answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DnsConfig {
    /// UDP and TCP address; port 0 takes one free port for both.
    pub listen: SocketAddr,
    /// The zone, e.g. `svc.firebreak.`; a parent zone delegates it to every site.
    #[serde(default = "default_zone")]
    pub zone: String,
    /// TTL of every record, and the SOA's negative-caching TTL: how long a resolver may
    /// keep sending clients to a site that no longer serves (1 to 3600 s).
    #[serde(default = "default_ttl")]
    pub ttl_secs: u32,
    /// UDP answers per second to one source network (an IPv4 /24, an IPv6 /56), twice
    /// that at once; over it, every second query gets an empty truncated answer (ask again
    /// over TCP) and the rest none. 0 turns the limit off (a benchmark from one machine).
    #[serde(default = "default_responses_per_sec")]
    pub responses_per_sec: u32,
}

/// Most of [`DnsConfig::responses_per_sec`].
pub const MAX_RESPONSES_PER_SEC: u32 = 1_000_000;
/// The default of [`DnsConfig::responses_per_sec`]: a resolver asks each name once per TTL,
/// so a real one stays far below it.
pub const DEFAULT_RESPONSES_PER_SEC: u32 = 100;

fn default_responses_per_sec() -> u32 {
    DEFAULT_RESPONSES_PER_SEC
}

/// The zone `firebreak up` serves.
pub const DEFAULT_ZONE: &str = "svc.firebreak.";

fn default_zone() -> String {
    DEFAULT_ZONE.into()
}

fn default_ttl() -> u32 {
    5
}

impl DnsConfig {
    fn validate(&self) -> std::result::Result<(), (String, String)> {
        let zone = self.zone.trim_end_matches('.');
        let label_ok = |l: &str| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        };
        if zone.is_empty() || zone.len() > 200 || !zone.split('.').all(label_ok) {
            return Err((
                "dns.zone".into(),
                format!(
                    "{:?} is not a zone name: use dot-separated labels of letters, digits and \
                     hyphens (at most 200 characters), e.g. {DEFAULT_ZONE}",
                    self.zone
                ),
            ));
        }
        if !(1..=3600).contains(&self.ttl_secs) {
            return Err((
                "dns.ttl_secs".into(),
                format!("is {}; use 1 to 3600 seconds", self.ttl_secs),
            ));
        }
        if self.responses_per_sec > MAX_RESPONSES_PER_SEC {
            return Err((
                "dns.responses_per_sec".into(),
                format!(
                    "is {}; use 0 (no limit) to {MAX_RESPONSES_PER_SEC}",
                    self.responses_per_sec
                ),
            ));
        }
        Ok(())
    }
}

/// Bearer tokens for the operator endpoints (evacuate, restore, freeze, topology apply).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// A file of `NAME TOKEN` lines (`#` starts a comment). The name is what the audit log
    /// records. If unset, the tokens come from `FIREBREAK_NODE_TOKENS` (`NAME:TOKEN,...`);
    /// with neither, operator endpoints refuse every request.
    pub tokens_file: Option<PathBuf>,
    /// Require a token for reads (status, routing, audit) too.
    pub protect_reads: bool,
}

/// The node's certificates (see `firebreak ca init` and `firebreak cert issue node`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsConfig {
    /// The cluster CA's certificate: the only root trusted, for peers and clients alike.
    pub ca_file: Option<PathBuf>,
    /// This node's certificate, naming `firebreak://<cluster>/node/<node_id>`; reloaded
    /// when the file changes.
    pub cert_file: Option<PathBuf>,
    /// Its private key.
    pub key_file: Option<PathBuf>,
    /// Plain HTTP on every listener, with no peer authentication at all: anyone who can
    /// reach the peer port can forge leases. For debugging on one machine only.
    pub plaintext_for_debugging: bool,
}

/// The files of a TLS-enabled node, once validated.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub ca: PathBuf,
    pub keys: firebreak_tls::KeyFiles,
}

impl TlsConfig {
    /// The files, or `None` in plain-text mode (validation made sure one of them holds).
    pub fn files(&self) -> Option<TlsFiles> {
        match (&self.ca_file, &self.cert_file, &self.key_file) {
            (Some(ca), Some(cert), Some(key)) if !self.plaintext_for_debugging => Some(TlsFiles {
                ca: ca.clone(),
                keys: firebreak_tls::KeyFiles {
                    cert: cert.clone(),
                    key: key.clone(),
                },
            }),
            _ => None,
        }
    }

    fn validate(&self) -> std::result::Result<(), (String, String)> {
        if self.plaintext_for_debugging {
            return Ok(());
        }
        for (field, value) in [
            ("tls.ca_file", &self.ca_file),
            ("tls.cert_file", &self.cert_file),
            ("tls.key_file", &self.key_file),
        ] {
            if value.is_none() {
                return Err((field.to_string(), "is required: TLS is on unless `tls.plaintext_for_debugging: true`; make the files with `firebreak ca init` and `firebreak cert issue node`".into()));
            }
        }
        Ok(())
    }
}

/// One member of the cluster as configured.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Peer {
    /// The member's node id.
    pub id: NodeId,
    /// The member's site.
    pub site: SiteId,
    /// `host:port` of the member's peer listener, as the other members reach it.
    pub addr: String,
}

/// Smallest `raft.max_append_bytes` and `raft.snapshot_chunk_bytes`.
pub const MIN_RPC_PAYLOAD_BYTES: u64 = 64 * 1024;
/// Largest of them; a Raft RPC body is at most this plus its framing (see
/// [`crate::network::MAX_RAFT_BODY_BYTES`]).
pub const MAX_RPC_PAYLOAD_BYTES: u64 = 16 * 1024 * 1024;

/// Raft timings, shared by both groups.
///
/// Across real sites, every AppendEntries and every linearizable-read probe times out after
/// `heartbeat_interval_ms`, so it must exceed the inter-site round trip plus a follower's
/// fsync; etcd's rule of thumb is a heartbeat of 0.5–1.5× RTT and an election timeout of
/// at least 10× RTT. The defaults suit one machine or one metro area (RTT ≤ 10 ms).
///
/// How long a dead leader goes unreplaced: openraft 0.9 lets a follower that heard from a
/// leader start an election only after a lease of `election_timeout_max_ms` plus its own
/// election timeout (drawn once per start from min..max), so 750–900 ms by default; a
/// leader is replaced only if its heartbeats stop for at least that long.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RaftTimings {
    /// How often the leader sends heartbeats; also the timeout of each replication RPC.
    pub heartbeat_interval_ms: u64,
    /// Shortest time a follower waits without hearing from a leader before an election.
    pub election_timeout_min_ms: u64,
    /// Longest such wait; also how stale a leader's last quorum contact may be before it
    /// refuses writes.
    pub election_timeout_max_ms: u64,
    /// Timeout of one snapshot chunk transfer.
    pub install_snapshot_timeout_ms: u64,
    /// Most bytes of log entries one AppendEntries carries (at least one entry always
    /// goes). A catch-up RPC must cross the link and be fsynced within one heartbeat
    /// interval: keep it under what the link carries in about half of one.
    pub max_append_bytes: u64,
    /// Size of one snapshot chunk; the next is sent only once the follower stored this
    /// one, within `install_snapshot_timeout_ms`.
    pub snapshot_chunk_bytes: u64,
    /// Build a snapshot after this many new log entries; the log before it is purged.
    pub snapshot_logs_since_last: u64,
    /// Log entries kept behind a snapshot, so that slightly lagging followers catch up from
    /// the log instead of a snapshot.
    pub max_in_snapshot_log_to_keep: u64,
}

impl Default for RaftTimings {
    fn default() -> Self {
        Self {
            heartbeat_interval_ms: 100,
            election_timeout_min_ms: 300,
            election_timeout_max_ms: 450,
            install_snapshot_timeout_ms: 5000,
            max_append_bytes: 1024 * 1024,
            snapshot_chunk_bytes: 1024 * 1024,
            snapshot_logs_since_last: 10_000,
            max_in_snapshot_log_to_keep: 1_000,
        }
    }
}

/// Bounds of the client API.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ApiLimits {
    /// How long a write may wait to commit before it answers "outcome unknown".
    pub write_timeout_ms: u64,
    /// How long a linearizable read may wait for the leader to confirm its leadership.
    pub read_timeout_ms: u64,
    /// Writes in flight per group; beyond it the node answers 429.
    pub max_inflight_writes: usize,
    /// Long-poll watchers served at once (watch and routing); beyond it the node answers
    /// 429. Each waiting one held about 27 KB of the node's memory (`bench watchers`), and
    /// is an open file: keep `ulimit -n` above it.
    pub max_watchers: usize,
    /// Largest request body accepted on the client API.
    pub max_body_bytes: usize,
}

impl Default for ApiLimits {
    fn default() -> Self {
        Self {
            write_timeout_ms: 3000,
            read_timeout_ms: 3000,
            max_inflight_writes: 4096,
            max_watchers: 4096,
            max_body_bytes: 256 * 1024,
        }
    }
}

impl RaftTimings {
    /// The heartbeat interval.
    pub fn heartbeat(&self) -> Duration {
        Duration::from_millis(self.heartbeat_interval_ms)
    }

    /// The longest election timeout.
    pub fn election_timeout_max(&self) -> Duration {
        Duration::from_millis(self.election_timeout_max_ms)
    }
}

impl NodeConfig {
    /// Reads and validates a config file.
    pub fn load(path: &Path) -> Result<Self> {
        let text = read_bounded(path)?;
        let config: NodeConfig = serde_yaml::from_str(&text).map_err(|err| {
            let (line, column) = err.location().map_or((0, 0), |l| (l.line(), l.column()));
            Error::Config {
                path: path.to_path_buf(),
                line,
                column,
                message: err.to_string(),
            }
        })?;
        config.validate().map_err(|(field, message)| {
            let line = locate(&text, &field);
            Error::Config {
                path: path.to_path_buf(),
                line,
                column: 1,
                message: format!("{field}: {message}"),
            }
        })?;
        Ok(config)
    }

    /// This node as a member.
    pub fn member(&self) -> Member {
        let peer = self
            .peers
            .iter()
            .find(|p| p.id == self.node_id)
            .expect("validated: node_id is in peers");
        Member {
            addr: peer.addr.clone(),
            site: self.site.clone(),
        }
    }

    /// Every configured member, for bootstrap.
    pub fn members(&self) -> std::collections::BTreeMap<NodeId, Member> {
        self.peers
            .iter()
            .map(|p| {
                (
                    p.id,
                    Member {
                        addr: p.addr.clone(),
                        site: p.site.clone(),
                    },
                )
            })
            .collect()
    }

    /// The state group's voters, for bootstrap (every member unless `state_voters` says).
    pub fn state_members(&self) -> std::collections::BTreeMap<NodeId, Member> {
        let mut members = self.members();
        if let Some(voters) = &self.state_voters {
            members.retain(|id, _| voters.contains(id));
        }
        members
    }

    /// Every listener has a port of its own.
    fn check_listeners(&self) -> std::result::Result<(), (String, String)> {
        for (field, addr, other, other_field) in [
            ("peer_listen", self.peer_listen, self.listen, "listen"),
            ("admin_listen", self.admin_listen, self.listen, "listen"),
            (
                "admin_listen",
                self.admin_listen,
                self.peer_listen,
                "peer_listen",
            ),
        ] {
            if addr == other && addr.port() != 0 {
                return Err((
                    field.to_string(),
                    format!("is {addr}, the same as {other_field}: give each listener a port of its own"),
                ));
            }
        }
        Ok(())
    }

    /// Checks the rules serde cannot; returns the field at fault and why.
    pub fn validate(&self) -> std::result::Result<(), (String, String)> {
        let fail = |field: &str, message: String| Err((field.to_string(), message));
        if self.cluster.is_empty() || self.cluster.len() > 63 {
            return fail("cluster", "must be a name of 1 to 63 characters".into());
        }
        self.site
            .validate("site")
            .map_err(|e| (e.field, e.reason))?;
        self.check_listeners()?;
        self.tls.validate()?;
        if let Some(dns) = &self.dns {
            dns.validate()?;
        }
        if self.hooks.len() > MAX_HOOKS {
            return fail(
                "hooks",
                format!("{} hooks; at most {MAX_HOOKS}", self.hooks.len()),
            );
        }
        let mut names = BTreeSet::new();
        for (i, hook) in self.hooks.iter().enumerate() {
            hook.validate(&format!("hooks[{i}]"))?;
            if !names.insert(&hook.name) {
                return fail("hooks", format!("hook name {} appears twice", hook.name));
            }
        }
        let mut ids = BTreeSet::new();
        let mut addrs = BTreeSet::new();
        for (i, peer) in self.peers.iter().enumerate() {
            peer.site
                .validate(&format!("peers[{i}].site"))
                .map_err(|e| (e.field, e.reason))?;
            if !ids.insert(peer.id) {
                return fail("peers", format!("node id {} appears twice", peer.id));
            }
            if !addrs.insert(peer.addr.as_str()) {
                return fail("peers", format!("address {} appears twice", peer.addr));
            }
            if peer.addr.parse::<SocketAddr>().is_err() && !peer.addr.contains(':') {
                return fail("peers", format!("address {:?} is not host:port", peer.addr));
            }
        }
        match self.peers.iter().find(|p| p.id == self.node_id) {
            None => {
                return fail(
                    "node_id",
                    format!("node {} is not listed in peers; add it there", self.node_id),
                )
            }
            Some(me) if me.site != self.site => {
                return fail(
                    "site",
                    format!(
                        "is {} but peers lists node {} in {}",
                        self.site, self.node_id, me.site
                    ),
                )
            }
            Some(_) => {}
        }
        if let Some(voters) = &self.state_voters {
            if voters.is_empty() {
                return fail("state_voters", "must name at least one node".into());
            }
            if let Some(stranger) = voters.iter().find(|v| !ids.contains(v)) {
                return fail(
                    "state_voters",
                    format!("node {stranger} is not listed in peers"),
                );
            }
        }
        let t = &self.raft;
        if t.heartbeat_interval_ms == 0 {
            return fail("raft.heartbeat_interval_ms", "must be above 0".into());
        }
        if t.election_timeout_min_ms < 3 * t.heartbeat_interval_ms {
            return fail(
                "raft.election_timeout_min_ms",
                format!(
                    "must be at least 3 heartbeats ({} ms)",
                    3 * t.heartbeat_interval_ms
                ),
            );
        }
        if t.election_timeout_max_ms <= t.election_timeout_min_ms {
            return fail(
                "raft.election_timeout_max_ms",
                "must be above election_timeout_min_ms".into(),
            );
        }
        if t.snapshot_logs_since_last == 0 {
            return fail("raft.snapshot_logs_since_last", "must be above 0".into());
        }
        for (field, value) in [
            ("raft.max_append_bytes", t.max_append_bytes),
            ("raft.snapshot_chunk_bytes", t.snapshot_chunk_bytes),
        ] {
            if !(MIN_RPC_PAYLOAD_BYTES..=MAX_RPC_PAYLOAD_BYTES).contains(&value) {
                return fail(
                    field,
                    format!(
                        "must be {MIN_RPC_PAYLOAD_BYTES}..={MAX_RPC_PAYLOAD_BYTES} bytes (64 KiB to 16 MiB), got {value}"
                    ),
                );
            }
        }
        let a = &self.api;
        for (field, value) in [
            ("api.write_timeout_ms", a.write_timeout_ms as usize),
            ("api.read_timeout_ms", a.read_timeout_ms as usize),
            ("api.max_inflight_writes", a.max_inflight_writes),
            ("api.max_watchers", a.max_watchers),
            ("api.max_body_bytes", a.max_body_bytes),
        ] {
            if value == 0 {
                return fail(field, "must be above 0".into());
            }
        }
        Ok(())
    }
}

fn read_bounded(path: &Path) -> Result<String> {
    let io = |source| Error::Io {
        path: path.to_path_buf(),
        source,
    };
    let len = std::fs::metadata(path).map_err(io)?.len();
    if len > MAX_CONFIG_BYTES {
        return Err(Error::Config {
            path: path.to_path_buf(),
            line: 0,
            column: 0,
            message: format!("file is {len} bytes, over the {MAX_CONFIG_BYTES}-byte limit"),
        });
    }
    std::fs::read_to_string(path).map_err(io)
}

/// The line (1-based) where the last segment of a dotted field is written, or 0.
fn locate(text: &str, field: &str) -> usize {
    let name = field.rsplit('.').next().unwrap_or(field);
    let name = name.split('[').next().unwrap_or(name);
    text.lines()
        .position(|line| {
            let line = line.trim_start().trim_start_matches("- ");
            line.starts_with(&format!("{name}:"))
        })
        .map_or(0, |i| i + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "\
cluster: test
node_id: 1
site: pangyo
listen: 127.0.0.1:7001
peer_listen: 127.0.0.1:7002
admin_listen: 127.0.0.1:7003
data_dir: /tmp/x
tls:
  plaintext_for_debugging: true
peers:
  - { id: 1, site: pangyo, addr: \"127.0.0.1:7002\" }
raft:
  heartbeat_interval_ms: 50
";

    fn load(text: &str) -> Result<NodeConfig> {
        let dir = tempfile::TempDir::new().unwrap();
        let path = dir.path().join("node.yaml");
        std::fs::write(&path, text).unwrap();
        NodeConfig::load(&path)
    }

    #[test]
    fn good_config_loads_with_defaults() {
        let config = load(GOOD).unwrap();
        assert_eq!(config.raft.heartbeat_interval_ms, 50);
        assert_eq!(config.raft.election_timeout_min_ms, 300);
        assert_eq!(config.member().site, SiteId::from("pangyo"));
    }

    #[test]
    fn errors_name_line_and_field() {
        let cases = [
            (
                GOOD.replace("heartbeat_interval_ms", "heartbeat_ms"),
                13,
                "unknown field `heartbeat_ms`",
            ),
            (GOOD.replace("node_id: 1", "node_id: one"), 2, "node_id"),
            (
                GOOD.replace("heartbeat_interval_ms: 50", "heartbeat_interval_ms: 400"),
                0,
                "raft.election_timeout_min_ms",
            ),
            (
                GOOD.replace("site: pangyo\n", "site: gasan\n"),
                3,
                "site: is gasan",
            ),
            (
                GOOD.replace("  plaintext_for_debugging: true", "  ca_file: /ca.pem"),
                0,
                "tls.cert_file: is required",
            ),
            (
                GOOD.replace("node_id: 1", "node_id: 4"),
                2,
                "node 4 is not listed in peers",
            ),
            (
                GOOD.replace(
                    "heartbeat_interval_ms: 50",
                    "heartbeat_interval_ms: 50\n  max_append_bytes: 1000",
                ),
                0,
                "raft.max_append_bytes: must be 65536..=16777216 bytes",
            ),
            (
                format!("{GOOD}dns:\n  listen: 127.0.0.1:0\n  responses_per_sec: 2000000\n"),
                0,
                "dns.responses_per_sec: is 2000000; use 0 (no limit) to 1000000",
            ),
        ];
        for (text, line, needle) in cases {
            match load(&text) {
                Err(Error::Config {
                    line: got, message, ..
                }) => {
                    assert!(message.contains(needle), "{message:?} lacks {needle:?}");
                    if line > 0 {
                        assert_eq!(got, line, "{message}");
                    }
                }
                other => panic!("expected a config error for {needle:?}, got {other:?}"),
            }
        }
    }

    #[test]
    fn hooks_are_bounded_and_named_in_errors() {
        let long_arg = format!("\"{}\"", "a".repeat(5000));
        let many_args = vec!["\"x\""; 65].join(", ");
        let long_url = format!("http://lb/{}", "a".repeat(3000));
        let cases = [
            ("exec: []".to_string(), "hooks[0].exec: needs a command"),
            (
                "exec: [a]\n    webhook: http://lb/".into(),
                "give exactly one of exec and webhook",
            ),
            (
                format!("exec: [{many_args}]"),
                "hooks[0].exec: has 65 arguments; at most 64",
            ),
            (format!("exec: [a, {long_arg}]"), "argument 1 is 5000 bytes"),
            ("exec: [\"a\\0b\"]".into(), "argument 0 holds a NUL byte"),
            (
                "webhook: ftp://lb/".into(),
                "is not an http:// or https:// URL",
            ),
            (
                format!("webhook: {long_url}"),
                "hooks[0].webhook: is 3010 bytes; at most 2048",
            ),
            (
                "webhook: \"http://[lb/\"".into(),
                "hooks[0].webhook: \"http://[lb/\" is not a URL",
            ),
            (
                "webhook: https://lb/".into(),
                "hooks[0].ca_file: an https webhook needs",
            ),
            (
                "exec: [a]\n    timeout_ms: 0".into(),
                "hooks[0].timeout_ms: is 0",
            ),
            (
                "exec: [a]\n    attempts: 11".into(),
                "hooks[0].attempts: is 11",
            ),
        ];
        for (hook, needle) in cases {
            let text = format!("{GOOD}hooks:\n  - name: lb\n    {hook}\n");
            match load(&text) {
                Err(Error::Config { message, .. }) => {
                    assert!(message.contains(needle), "{message:?} lacks {needle:?}")
                }
                other => panic!("expected a config error for {needle:?}, got {other:?}"),
            }
        }
        let good = format!("{GOOD}hooks:\n  - name: lb\n    exec: [/bin/true, --flag]\n");
        assert_eq!(load(&good).unwrap().hooks.len(), 1);
    }
}
