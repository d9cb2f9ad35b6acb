//! Starting and stopping a node: identity check, stores, both Raft groups, the HTTP server,
//! bootstrap and self-registration.
//!
//! ```text
//!   claim data dir ─► open stores (control/, state/) ─► Raft::new × 2
//!   ─► bind + serve HTTP ─► initialize both groups from `peers` (safe to repeat)
//!   ─► the control leader registers every member's site and address
//!   ... shutdown future resolves ─► stop accepting, Raft::shutdown × 2, stores flushed
//! ```
//!
//! Bootstrap: every node calls openraft's `initialize` with the same member list; openraft
//! allows that, and a node that already holds a log or a vote refuses it harmlessly. So
//! restarting a node, or the whole cluster, is always safe. Caveat: a node whose disk was
//! lost must come back under a new node id (RAFT-NOTES.md); with an empty data dir under
//! its old id it could vote twice in one term.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use firebreak_model::control::{ControlCommand, ControlState};
use firebreak_model::kv::KvStore;
use firebreak_model::{Member, NodeId};
use firebreak_store::{GroupTypes, Machine};
use openraft::error::{InitializeError, RaftError};
use openraft::{Raft, SnapshotPolicy};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::context::Api;
use crate::group::{Group, GroupTimings};
use crate::network::HttpNetwork;
use crate::routes;
use crate::{identity, Error, NodeConfig, Result};
use firebreak_tls::listener::{self, Listener};

/// How long a graceful shutdown waits for in-flight requests before closing anyway.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// A started node. Dropping it does not stop it: call [`RunningNode::shutdown`].
pub struct RunningNode {
    pub api: Arc<Api>,
    /// The client listener's address.
    pub addr: SocketAddr,
    /// The peer listener's address.
    pub peer_addr: SocketAddr,
    /// The admin listener's address.
    pub admin_addr: SocketAddr,
    /// The DNS server's address (UDP and TCP), if it serves DNS.
    pub dns_addr: Option<SocketAddr>,
    dns: Option<crate::dns::DnsServer>,
    stop: watch::Sender<bool>,
    servers: Vec<JoinHandle<()>>,
    registration: JoinHandle<()>,
    failover: Vec<JoinHandle<()>>,
    /// Each group's failure signals (see [`RunningNode::failed`]).
    failures: Vec<Failure>,
}

/// What stops a group for good: its store's flusher gave up on a failed fsync, or
/// openraft's core quit (on that same error, on another storage error, or a panic).
/// Either may be seen first; both mean the same stop (see [`Error::from_fatal`]).
#[derive(Clone)]
struct Failure {
    group: &'static str,
    store: watch::Receiver<Option<String>>,
    core: watch::Receiver<openraft::RaftMetrics<NodeId, Member>>,
}

impl Failure {
    /// Resolves once the group has stopped for good, with the error to stop the node on;
    /// never while it runs, nor when it was shut down on purpose.
    async fn wait(self) -> Error {
        let Failure {
            group,
            mut store,
            mut core,
        } = self;
        let reason = store.clone();
        let store_failed = async {
            match store.wait_for(Option::is_some).await {
                Ok(why) => why.clone(),
                Err(_) => None, // the flusher is gone without a failure: at shutdown
            }
        };
        let core_quit = async {
            match core.wait_for(|m| m.running_state.is_err()).await {
                Ok(metrics) => metrics
                    .running_state
                    .clone()
                    .err()
                    .filter(|fatal| !matches!(fatal, openraft::error::Fatal::Stopped)),
                Err(_) => None,
            }
        };
        tokio::select! {
            Some(why) = store_failed => Error::StoreFailed { group, message: why },
            Some(fatal) = core_quit => Error::from_fatal(group, &fatal, reason.borrow().clone()),
            else => std::future::pending().await,
        }
    }
}

/// Most entries one AppendEntries carries; what bounds it in practice is
/// `raft.max_append_bytes`, which the log store applies (openraft 0.9 gives every
/// AppendEntries one heartbeat interval to arrive, be fsynced and be answered, so a
/// catch-up RPC of 256 group-commit batches of up to 96 KiB, 24 MB, never made it across
/// and the groups churned through elections).
const MAX_PAYLOAD_ENTRIES: u64 = 256;

fn raft_config(config: &NodeConfig, group: &str) -> Result<Arc<openraft::Config>> {
    let t = &config.raft;
    let raft = openraft::Config {
        cluster_name: format!("{}-{group}", config.cluster),
        heartbeat_interval: t.heartbeat_interval_ms,
        election_timeout_min: t.election_timeout_min_ms,
        election_timeout_max: t.election_timeout_max_ms,
        install_snapshot_timeout: t.install_snapshot_timeout_ms,
        snapshot_policy: SnapshotPolicy::LogsSinceLast(t.snapshot_logs_since_last),
        max_in_snapshot_log_to_keep: t.max_in_snapshot_log_to_keep,
        max_payload_entries: MAX_PAYLOAD_ENTRIES,
        snapshot_max_chunk_size: t.snapshot_chunk_bytes,
        ..Default::default()
    };
    let raft = raft.validate().map_err(|e| Error::Raft {
        group: "config",
        message: e.to_string(),
    })?;
    Ok(Arc::new(raft))
}

/// A started group and its failure signals.
type Started<M> = (Group<M>, Failure);

async fn start_group<M: Machine>(
    config: &NodeConfig,
    tls: &firebreak_tls::ClientTls,
) -> Result<Started<M>> {
    let name = <M::Types as GroupTypes>::NAME;
    let (log, sm) =
        firebreak_store::open::<M>(&config.data_dir.join(name)).map_err(|source| Error::Store {
            group: name,
            source,
        })?;
    let log = log.limit_payload_bytes(config.raft.max_append_bytes as usize);
    let failed = log.failed();
    let reader = sm.reader();
    let journals = (log.committed_index_handle(), log.election_journal());
    let raft = Raft::new(
        config.node_id,
        raft_config(config, name)?,
        HttpNetwork::<M::Types>::new(
            tls.clone(),
            config.node_id,
            config.raft.max_append_bytes as usize,
        ),
        log,
        sm,
    )
    .await
    .map_err(|fatal| Error::from_fatal(name, &fatal, failed.borrow().clone()))?;
    let failure = Failure {
        group: name,
        store: failed,
        core: raft.metrics(),
    };
    let timings = GroupTimings {
        heartbeat: config.raft.heartbeat(),
        election_timeout_min: Duration::from_millis(config.raft.election_timeout_min_ms),
        election_timeout_max: config.raft.election_timeout_max(),
        write_timeout: Duration::from_millis(config.api.write_timeout_ms),
        read_timeout: Duration::from_millis(config.api.read_timeout_ms),
    };
    let group = Group::new(
        raft,
        reader,
        journals,
        timings,
        config.api.max_inflight_writes,
    );
    Ok((group, failure))
}

/// Initializes `group` with `members` if this node is one of them. A failed fsync on the
/// way is a stopped store (exit 11), as it is once the node runs: a node still
/// bootstrapping when its disk fails must not exit otherwise (seen in CI).
async fn bootstrap<M: Machine>(
    group: &Group<M>,
    failure: &Failure,
    members: std::collections::BTreeMap<NodeId, Member>,
    me: NodeId,
) -> Result<()> {
    if !members.contains_key(&me) {
        tracing::info!(
            group = group.name(),
            "not a voter of this group: requests go to its voters"
        );
        return Ok(());
    }
    let count = members.len();
    match group.raft.initialize(members).await {
        Ok(()) => {
            tracing::info!(group = group.name(), members = count, "initialized cluster");
            Ok(())
        }
        Err(RaftError::APIError(InitializeError::NotAllowed(_))) => {
            tracing::debug!(group = group.name(), "already initialized");
            Ok(())
        }
        Err(RaftError::Fatal(fatal)) => Err(Error::from_fatal(
            group.name(),
            &fatal,
            failure.store.borrow().clone(),
        )),
        Err(err) => Err(Error::Raft {
            group: group.name(),
            message: err.to_string(),
        }),
    }
}

/// This node's TLS: its keys (reloading), the peer listener's config, the client and
/// admin listeners' config, how it connects to peers (who must be nodes) and to service
/// instances (the gateway). `None` keys in plain-text mode.
struct Tls {
    keys: Option<Arc<firebreak_tls::Keys>>,
    peer: Option<Arc<rustls::ServerConfig>>,
    client: Option<Arc<rustls::ServerConfig>>,
    connect: firebreak_tls::ClientTls,
    services: firebreak_tls::ClientTls,
}

fn tls(config: &NodeConfig) -> Result<Tls> {
    let Some(files) = config.tls.files() else {
        tracing::warn!("TLS is off (tls.plaintext_for_debugging): anyone who reaches the peer port can forge leases and Raft messages; never run this way beyond one machine");
        return Ok(Tls {
            keys: None,
            peer: None,
            client: None,
            connect: firebreak_tls::ClientTls::plaintext_for_debugging(),
            services: firebreak_tls::ClientTls::plaintext_for_debugging(),
        });
    };
    let fail = |e: firebreak_tls::Error| Error::Tls(e.to_string());
    let keys = firebreak_tls::Keys::load(files.keys.clone()).map_err(fail)?;
    check_identity(config, &keys)?;
    keys.watch();
    let server = |clients| {
        firebreak_tls::server_config(keys.clone(), &files.ca, clients)
            .map(Arc::new)
            .map_err(fail)
    };
    Ok(Tls {
        peer: Some(server(firebreak_tls::ClientCerts::Required)?),
        client: Some(server(firebreak_tls::ClientCerts::Optional)?),
        connect: firebreak_tls::ClientTls::for_nodes(&files.ca, keys.clone(), &config.cluster)
            .map_err(fail)?,
        services: firebreak_tls::ClientTls::new(&files.ca, Some(keys.clone())).map_err(fail)?,
        keys: Some(keys),
    })
}

/// Refuses a certificate that names another node or cluster than this config.
pub(crate) fn check_identity(config: &NodeConfig, keys: &firebreak_tls::Keys) -> Result<()> {
    let expected = firebreak_tls::Identity {
        cluster: config.cluster.clone(),
        role: firebreak_tls::Role::Node(config.node_id.0),
    };
    match keys.identity() {
        Some(found) if found == expected => Ok(()),
        found => Err(Error::Tls(format!(
            "{} names {}, not {expected}: issue this node's certificate with `firebreak cert issue node --id {} --cluster {}`",
            keys.files().cert.display(),
            found.map_or("no firebreak identity".to_string(), |f| f.to_string()),
            config.node_id,
            config.cluster,
        ))),
    }
}

/// Each listener's share of the file descriptors beyond `listener::RESERVED_FDS`, in
/// percent: the peer listener keeps its own, so Raft and leases go on while the client
/// and admin listeners are full.
const PEER_SHARE: u64 = 25;
const CLIENT_SHARE: u64 = 55;
const ADMIN_SHARE: u64 = 20;

/// Serves `router` on `addr`, holding at most `limits` connections, until `stop` turns
/// true; returns the bound address.
fn serve(
    addr: SocketAddr,
    tls: Option<Arc<rustls::ServerConfig>>,
    (limits, counters): (listener::Limits, Arc<listener::Counters>),
    router: axum::Router,
    mut stop: watch::Receiver<bool>,
) -> Result<(SocketAddr, JoinHandle<()>)> {
    let bind = |source| Error::Bind { addr, source };
    let listener =
        Listener::new(listener::bind(addr).map_err(bind)?, tls, limits, counters).map_err(bind)?;
    let bound = listener.local_addr();
    let server = tokio::spawn(async move {
        let stopped = async move {
            let _ = stop.wait_for(|s| *s).await;
        };
        firebreak_tls::serve::serve(listener, router, stopped).await;
    });
    Ok((bound, server))
}

/// Starts a node and returns once it serves HTTP; `run` is the daemon's entry point.
pub async fn start(config: NodeConfig) -> Result<RunningNode> {
    identity::claim(&config)?;
    let tls = tls(&config)?;
    let (control, control_failed) = start_group::<ControlState>(&config, &tls.connect).await?;
    let (state, state_failed) = start_group::<KvStore>(&config, &tls.connect).await?;
    let failures = vec![control_failed, state_failed];
    let empty = crate::id_check::is_empty(&control) && crate::id_check::is_empty(&state);
    if let Err(err) = crate::id_check::check(&config, &tls.connect, empty).await {
        let _ = control.raft.shutdown().await;
        let _ = state.raft.shutdown().await;
        return Err(err);
    }
    let tokens = crate::auth::Tokens::load(&config.auth)?;
    let api = Arc::new(Api::new(
        config.clone(),
        control.clone(),
        state.clone(),
        tokens,
        tls.connect.clone(),
        tls.services.clone(),
        tls.keys.clone(),
    ));
    let (stop, stopped) = watch::channel(false);
    let open_files = listener::raise_open_file_limit();
    let share = |percent| listener::Limits::share_of(open_files, percent);
    let counters = &api.counters;
    tracing::info!(
        open_files,
        peer = share(PEER_SHARE).connections,
        client = share(CLIENT_SHARE).connections,
        admin = share(ADMIN_SHARE).connections,
        "connections each listener may hold"
    );
    let (peer_addr, peer_server) = serve(
        config.peer_listen,
        tls.peer,
        (share(PEER_SHARE), counters.peer_listener.clone()),
        routes::peer_routes(api.clone()),
        stopped.clone(),
    )?;
    let (addr, client_server) = serve(
        config.listen,
        tls.client.clone(),
        (share(CLIENT_SHARE), counters.client_listener.clone()),
        routes::client_routes(api.clone()),
        stopped.clone(),
    )?;
    let (admin_addr, admin_server) = serve(
        config.admin_listen,
        tls.client,
        (share(ADMIN_SHARE), counters.admin_listener.clone()),
        routes::admin_routes(api.clone()),
        stopped,
    )?;
    let dns = match &config.dns {
        Some(dns) => Some(crate::dns::serve(api.clone(), dns).await?),
        None => None,
    };
    if config.join {
        tracing::info!("joining a running cluster: waiting for its leader to add this node");
    } else {
        bootstrap(&control, &failures[0], config.members(), config.node_id).await?;
        bootstrap(&state, &failures[1], config.state_members(), config.node_id).await?;
    }
    let registration = tokio::spawn(register(control.clone()));
    let mut failover = crate::failover::spawn(api.clone());
    failover.extend(crate::hooks::spawn(api.clone())?);
    failover.push(tokio::spawn(crate::election_gate::run(
        api.clone(),
        control.clone(),
    )));
    failover.push(tokio::spawn(crate::election_gate::run(
        api.clone(),
        state.clone(),
    )));
    tracing::info!(node = %config.node_id, site = %config.site, %addr, %peer_addr, %admin_addr, tls = api.keys.is_some(), "node serving");
    Ok(RunningNode {
        api,
        addr,
        peer_addr,
        admin_addr,
        dns_addr: dns.as_ref().map(|d| d.addr),
        dns,
        stop,
        servers: vec![peer_server, client_server, admin_server],
        registration,
        failover,
        failures,
    })
}

/// How often the control leader checks that every member is registered.
const REGISTRATION_INTERVAL: Duration = Duration::from_millis(500);

/// Keeps the control group's member records in step with the Raft membership: whichever
/// node leads the control group proposes a registration for every member (site, address)
/// that is missing or changed, and records every member it has seen hold log entries (so
/// that one starting again on an empty disk is refused). Only the leader can commit, so
/// followers just wait; a new leader picks up where the old one stopped.
async fn register(control: Group<ControlState>) {
    let mut ticker = tokio::time::interval(REGISTRATION_INTERVAL);
    loop {
        ticker.tick().await;
        let metrics = control.metrics();
        if metrics.state != openraft::ServerState::Leader {
            continue;
        }
        let mut commands = Vec::new();
        for (node_id, member) in metrics.membership_config.membership().nodes() {
            if !control
                .reader
                .read(|c| c.members.get(node_id) == Some(member))
            {
                commands.push(ControlCommand::RegisterMember {
                    node_id: *node_id,
                    member: member.clone(),
                });
            }
            let holds_log = *node_id == metrics.id
                || metrics
                    .replication
                    .as_ref()
                    .is_some_and(|r| r.get(node_id).is_some_and(Option::is_some));
            if holds_log && !control.reader.read(|c| c.membership.seen.contains(node_id)) {
                commands.push(ControlCommand::NodeSeen { node_id: *node_id });
            }
        }
        for command in commands {
            match control.write(command.clone()).await {
                Ok(_) => tracing::info!(?command, "recorded member in control group"),
                Err(err) => {
                    tracing::debug!(cause = %err, "member record not committed yet");
                    break;
                }
            }
        }
    }
}

impl RunningNode {
    /// Resolves once a group stopped for good (a failed fsync, another storage error, or
    /// openraft's core quit), with the error to stop the node on.
    pub async fn failed(&self) -> Error {
        let waits = self.failures.iter().map(|f| Box::pin(f.clone().wait()));
        futures::future::select_all(waits).await.0
    }

    /// Stops serving and shuts both Raft groups down; the stores flush as they close.
    pub async fn shutdown(self) {
        self.registration.abort();
        for task in &self.failover {
            task.abort();
        }
        // Stop taking connections, then step out of Raft at once rather than after the
        // HTTP grace: a leader that no client can reach any more would hold its groups
        // hostage for the whole grace (push streams keep the server busy until it ends),
        // while a leader that stops lets the others elect within an election timeout.
        // Requests still in flight fail over to other nodes (the services retry).
        let _ = self.stop.send(true);
        if let Some(dns) = self.dns {
            dns.shutdown().await;
        }
        for (name, result) in [
            ("control", self.api.control.raft.shutdown().await),
            ("state", self.api.state.raft.shutdown().await),
        ] {
            if let Err(err) = result {
                tracing::warn!(group = name, cause = %err, "raft shutdown failed");
            }
        }
        let _ = tokio::time::timeout(SHUTDOWN_GRACE, futures::future::join_all(self.servers)).await;
        tracing::info!("node stopped");
    }
}

/// Runs a node until `shutdown` resolves, then stops it gracefully; or until a group stops
/// for good (a store failed to make writes durable, or openraft's core quit), then stops
/// it and returns that error.
pub async fn run(config: NodeConfig, shutdown: impl Future<Output = ()>) -> Result<()> {
    let node = start(config).await?;
    let reloader = node
        .api
        .keys
        .clone()
        .map(|keys| tokio::spawn(reload_on_sighup(keys)));
    let failure = tokio::select! {
        () = shutdown => None,
        err = node.failed() => Some(err),
    };
    match &failure {
        None => tracing::info!("shutting down"),
        Some(_) => tracing::info!("shutting down: a group stopped for good (the error follows)"),
    }
    if let Some(task) = reloader {
        task.abort();
    }
    node.shutdown().await;
    failure.map_or(Ok(()), Err)
}

/// Reloads the certificate and key at every SIGHUP (they are also reloaded within a
/// second of a file change).
async fn reload_on_sighup(keys: Arc<firebreak_tls::Keys>) {
    use tokio::signal::unix::{signal, SignalKind};
    let Ok(mut hangups) = signal(SignalKind::hangup()) else {
        tracing::warn!("no SIGHUP handler: certificates reload on file change only");
        return;
    };
    while hangups.recv().await.is_some() {
        match keys.reload() {
            Ok(true) => tracing::info!(
                days_to_expiry = keys.days_to_expiry(),
                "SIGHUP: reloaded the certificate"
            ),
            Ok(false) => tracing::info!("SIGHUP: the certificate files have not changed"),
            Err(err) => {
                tracing::warn!(cause = %err, "SIGHUP: kept the current certificate: the new files do not load")
            }
        }
    }
}
