//! The drill runner: one playbook from bring-up to verdict.
//!
//! ```text
//!   ports free? ─► start sites ─► leaders elected ─► topology applied ─► every service
//!   serving everywhere ─► setup (accounts, users) ─► followers ─► idle push clients
//!   (if any) ─► workload + timeline (faults at their times, progress each second, stop
//!   condition) ─► drain deliveries (and the idle clients' probe) ─► read-back (messages, transfers, balances, total, sessions) ─► stop every process
//!   ─► checkers ─► report
//! ```
//!
//! Interrupted (Ctrl-C, SIGTERM: the `shutdown` future), the runner stops the workload,
//! stops every process it started, writes what history it has and returns an outcome
//! marked interrupted. Whatever the drill does, its processes are gone when `run` returns,
//! or when its future is dropped (the driver's `Drop` kills them).

use std::collections::BTreeMap;
use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

mod bring_up;
mod progress;
mod read_back;
mod remote;
mod replace;

use bring_up::{apply_topology, wait_ready, wait_serving};
use progress::Progress;

use crate::checkers::judge;
use crate::driver::{self, DriverConfig, LocalSites};
use crate::error::{Error, Result};
use crate::history::{Event, FaultPhase, History};
use crate::idle::IdleClients;
use crate::netns::{Network, Shaping};
use crate::playbook::{Driver, FaultKind, IdleVia, Playbook, ProcessKind, ServiceKind, Step};
use crate::report::Report;
use crate::site_driver::{Loopback, Namespaced, NetworkFaults, SiteDriver};
use crate::workload::Runner;

/// How long setup (accounts, users) may take.
const SETUP_TIMEOUT: Duration = Duration::from_secs(60);
/// How long the idle push clients may take to connect: this, plus [`IDLE_CONNECT_PER_CLIENT`]
/// each.
const IDLE_CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
const IDLE_CONNECT_PER_CLIENT: Duration = Duration::from_millis(5);
/// How long the idle clients get to receive the probe message after the workload.
const IDLE_PROBE_TIMEOUT: Duration = Duration::from_secs(20);
/// How long a network fault outlives its planned end when the drill never heals it.
const FAULT_EXPIRY_GRACE: Duration = Duration::from_secs(10);
/// Open files a process needs besides those of the idle clients' streams.
const BASE_OPEN_FILES: u64 = 1_024;

/// How to run a drill.
#[derive(Clone)]
pub struct DrillOptions {
    /// The playbook's path as the user gave it (for the repeat command).
    pub playbook_path: PathBuf,
    pub playbook: Playbook,
    /// Overrides the playbook's seed.
    pub seed: Option<u64>,
    /// Overrides the playbook's driver.
    pub driver: Option<Driver>,
    /// The hosts of the ssh driver (`--inventory FILE`).
    pub inventory: Option<PathBuf>,
    /// Where the history and reports go (and the sites' data and logs, under `sites/`).
    pub out: Option<PathBuf>,
    /// The nodes' port; services use the next three.
    pub port: u16,
    /// The `firebreak` binary to run the sites with.
    pub exe: PathBuf,
    /// Draw a progress bar (on a terminal) rather than a line every few seconds.
    pub live: bool,
    /// The command that repeats this drill, when the playbook path and seed do not say it
    /// (a random drill's schedule comes from `--random --seed`).
    pub repeat: Option<String>,
}

/// How a drill ended.
pub struct DrillOutcome {
    pub report: Report,
    /// Interrupted by a signal: the verdict is incomplete.
    pub interrupted: bool,
    /// Where the sites' data and logs are (kept when the drill failed).
    pub sites_dir: Option<PathBuf>,
}

/// Runs a drill; `shutdown` resolving interrupts it.
pub async fn run(
    options: DrillOptions,
    shutdown: impl Future<Output = ()>,
) -> Result<DrillOutcome> {
    let mut options = options;
    options.playbook.workload.seed = options.seed.unwrap_or(options.playbook.workload.seed);
    if let Some(driver) = options.driver.filter(|d| *d != options.playbook.driver) {
        options.playbook = options
            .playbook
            .with_driver(driver)
            .map_err(|e| Error::CouldNotRun(format!("{}: {e}", options.playbook_path.display())))?;
    }
    let (sites_dir, temp) = match &options.out {
        Some(out) => (out.join("sites"), None),
        None => {
            let temp = tempfile::Builder::new()
                .prefix("firebreak-drill-")
                .tempdir()
                .map_err(|e| Error::CouldNotRun(format!("failed to create a temp dir: {e}")))?;
            (temp.path().to_path_buf(), Some(temp))
        }
    };
    if sites_dir.exists() {
        std::fs::remove_dir_all(&sites_dir).map_err(|e| {
            Error::CouldNotRun(format!("failed to clear {}: {e}", sites_dir.display()))
        })?;
    }
    if let Some(idle) = &options.playbook.workload.idle_push {
        // A gateway holds a stream's client side and its upstream side.
        let per_stream = match idle.via {
            IdleVia::Gateway => 2,
            IdleVia::Messaging => 1,
        };
        driver::raise_open_files(per_stream * u64::from(idle.clients) + BASE_OPEN_FILES)?;
    }
    // The drill mounts the drop-unsynced disks itself, but for the ssh driver's (on the hosts).
    if options.playbook.has_power_loss() && options.playbook.driver != Driver::Ssh {
        crate::lazyfs::probe()?;
    }
    let (report, interrupted) = match options.playbook.driver {
        Driver::Local => {
            let services = options.playbook.process_services();
            let topology = &options.playbook.topology;
            let sites = topology.sites.len() + topology.spare_sites.len();
            driver::check_ports_free(sites, options.port, &services)?;
            run_sites(
                options,
                sites_dir.clone(),
                Arc::new(Loopback),
                None,
                shutdown,
            )
            .await?
        }
        Driver::Netns => run_in_namespaces(options, sites_dir.clone(), shutdown).await?,
        Driver::Ssh => remote::run_on_hosts(options, sites_dir.clone(), shutdown).await?,
        Driver::Command => remote::run_with_commands(options, sites_dir.clone(), shutdown).await?,
    };
    let sites_dir = match temp {
        Some(temp) if !report.passed => Some(temp.keep()),
        Some(_) => None,
        None => Some(sites_dir),
    };
    Ok(DrillOutcome {
        report,
        interrupted,
        sites_dir,
    })
}

/// The netns driver: creates the drill's namespaces, then runs the drill on a thread (and
/// a runtime) inside the clients' namespace, so every connection the drill opens comes
/// from there; deletes the namespaces when the drill is over, however it ended.
async fn run_in_namespaces(
    options: DrillOptions,
    sites_dir: PathBuf,
    shutdown: impl Future<Output = ()>,
) -> Result<(Report, bool)> {
    let run_id = driver::random_token()[..6].to_string();
    let network = Arc::new(Network::create(&run_id, &options.playbook.topology.sites)?);
    let timeline = &options.playbook.timeline;
    if timeline
        .iter()
        .any(|s| s.delay_ms.is_some() || s.jitter_ms.is_some())
    {
        if let Err(why) = network.probe_netem() {
            tracing::debug!(cause = %why, "no netem");
            eprintln!(
                "this kernel has no netem qdisc (sch_netem): latency and jitter come from user space (NFQUEUE) instead"
            );
            network.delay_in_user_space_from_now();
        }
    }
    let count = options.playbook.topology.sites.len();
    let placement = Namespaced {
        run_id: run_id.clone(),
        ips: (0..count).map(|i| network.site_ip(i)).collect(),
        namespaces: (0..count)
            .map(|i| Network::ns_path(&network.site_ns(i)))
            .collect(),
    };
    let clients = Network::ns_path(&network.clients_ns());
    let (stop, stopped) = watch::channel(false);
    let (done, finished) = tokio::sync::oneshot::channel();
    let inner = network.clone();
    std::thread::spawn(move || {
        let result = (|| {
            crate::netns::enter(&clients)?;
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .map_err(|e| Error::CouldNotRun(format!("failed to start a runtime: {e}")))?;
            let mut stopped = stopped;
            let shutdown = async move {
                let _ = stopped.wait_for(|s| *s).await;
            };
            let faults: Arc<dyn NetworkFaults> = inner;
            runtime.block_on(run_sites(
                options,
                sites_dir,
                Arc::new(placement),
                Some(faults),
                shutdown,
            ))
        })();
        let _ = done.send(result);
    });
    tokio::pin!(shutdown);
    tokio::pin!(finished);
    let result = tokio::select! {
        result = &mut finished => result,
        _ = &mut shutdown => {
            let _ = stop.send(true);
            finished.await
        }
    };
    drop(network); // the last handle: the namespaces go now
    result.map_err(|_| Error::CouldNotRun("the drill's thread died".into()))?
}

/// Starts the sites, runs the drill on them, stops them, judges and writes the report.
async fn run_sites(
    options: DrillOptions,
    sites_dir: PathBuf,
    site_driver: Arc<dyn SiteDriver>,
    network: Option<Arc<dyn NetworkFaults>>,
    shutdown: impl Future<Output = ()>,
) -> Result<(Report, bool)> {
    let playbook = &options.playbook;
    let seed = playbook.workload.seed;
    let begun = std::time::Instant::now();
    let place = site_driver.describe(options.port);
    let cleaner = site_driver.clone();
    let mut sites = LocalSites::start(DriverConfig {
        exe: options.exe.clone(),
        dir: sites_dir,
        port: options.port,
        sites: playbook.topology.sites.clone(),
        spare_sites: playbook.topology.spare_sites.clone(),
        nodes_per_site: playbook.topology.nodes_per_site(),
        state_voters: playbook.topology.state_voters.clone(),
        services: playbook.process_services(),
        driver: site_driver,
        raft: playbook.topology.raft.clone(),
        power_loss: playbook.has_power_loss(),
        reconnect_window_ms: playbook
            .workload
            .idle_push
            .as_ref()
            .and_then(|i| i.window_ms),
    })?;
    eprintln!(
        "drill {}: seed {seed}; {} sites {place}; DNS for {} on port {} (UDP, TCP); logs in {}",
        playbook.name,
        playbook.topology.sites.len(),
        firebreak_node::config::DEFAULT_ZONE,
        options.port + crate::driver::DNS_PORT_OFFSET,
        sites.logs()
    );
    let history = History::new();
    let drill = Drill {
        playbook,
        history: history.clone(),
        live: options.live,
        network,
        begun,
    };
    let result = tokio::select! {
        result = drill.run(&mut sites) => result.map(|(aborted, incidents)| (aborted, incidents, false)),
        _ = shutdown => Ok((Some("interrupted by a signal".to_string()), Vec::new(), true)),
    };
    sites.shutdown().await;
    let cleanup = cleaner.clean_up();
    let (aborted, mut incidents, interrupted) = result?;
    if let Err(left) = cleanup {
        eprintln!("{left}");
        incidents.push(left);
    }
    let events = history.snapshot();
    let repeat = options.repeat.clone().unwrap_or_else(|| {
        let mut repeat = format!(
            "firebreak drill {} --seed {seed}",
            options.playbook_path.display()
        );
        match &options.inventory {
            Some(file) if playbook.driver == Driver::Command => {
                repeat.push_str(&format!(" --driver command --inventory {}", file.display()))
            }
            Some(file) => repeat.push_str(&format!(" --inventory {}", file.display())),
            None if options.driver.is_some() => {
                repeat.push_str(&format!(" --driver {}", playbook.driver.name()))
            }
            None => {}
        }
        repeat
    });
    let judgement = judge(playbook, &events);
    let report = Report::new(
        playbook, seed, repeat, &events, judgement, aborted, incidents,
    );
    if let Some(out) = &options.out {
        report.write(out, &events).map_err(|e| {
            Error::CouldNotRun(format!(
                "failed to write the report to {}: {e}",
                out.display()
            ))
        })?;
    }
    Ok((report, interrupted))
}

struct Drill<'a> {
    playbook: &'a Playbook,
    history: History,
    live: bool,
    /// The driver's network faults (netns, ssh).
    network: Option<Arc<dyn NetworkFaults>>,
    /// When the sites started to be brought up (configs, certificates, install, start).
    begun: std::time::Instant,
}

/// Why the drill stopped early, and processes that died unasked.
type Ending = (Option<String>, Vec<String>);

impl Drill<'_> {
    async fn run(&self, sites: &mut LocalSites) -> Result<Ending> {
        let nodes = sites.node_addrs().to_vec();
        let phase = |name: &str| {
            self.history.record(Event::Phase {
                at_ms: self.history.now_ms(),
                name: name.into(),
            })
        };
        phase("bring_up");
        wait_ready(&nodes, sites).await?;
        bring_up::add_extra_nodes(sites).await?;
        apply_topology(self.playbook, sites).await?;
        wait_serving(self.playbook, &nodes, sites).await?;
        eprintln!(
            "sites up and serving {:.1} s after the drill began to bring them up",
            self.begun.elapsed().as_secs_f64()
        );
        let (stop_observer, stopped) = watch::channel(false);
        let (first_round, observed) = tokio::sync::oneshot::channel();
        let observer = tokio::spawn(crate::observer::observe(
            sites.all_admin_addrs().to_vec(),
            sites.tls.clone(),
            self.history.clone(),
            stopped,
            first_round,
        ));
        // The leaders of the start, known before the workload: elections after it count.
        let _ = tokio::time::timeout(crate::observer::POLL_TIMEOUT * 4, observed).await;
        phase("setup");
        let kv_token = self
            .playbook
            .services()
            .contains(&ServiceKind::Kv)
            .then(|| sites.token.clone());
        let runner = Runner::new(
            (nodes.clone(), kv_token),
            sites.tls.clone(),
            &self.playbook.workload,
            self.history.clone(),
        );
        runner
            .setup(
                self.playbook.workload.users,
                &self.playbook.services(),
                tokio::time::Instant::now() + SETUP_TIMEOUT,
            )
            .await
            .map_err(|e| Error::CouldNotRun(format!("{e}; see the logs: {}", sites.logs())))?;
        let followers = if self.playbook.services().contains(&ServiceKind::Messaging) {
            runner.follow(&nodes, &self.playbook.workload)
        } else {
            Vec::new()
        };
        let idle = match &self.playbook.workload.idle_push {
            Some(push) => {
                phase("idle_connect");
                let started = std::time::Instant::now();
                // Gateways and service instances alike serve TLS from the run's CA.
                let addresses: Vec<String> = match push.via {
                    IdleVia::Gateway => nodes.clone(),
                    IdleVia::Messaging => (0..nodes.len())
                        .map(|i| {
                            let url = sites.service_url(i, ServiceKind::Messaging);
                            url.trim_start_matches("https://").to_string()
                        })
                        .collect(),
                };
                let idle = IdleClients::start(
                    &addresses,
                    &self.playbook.topology.sites,
                    push,
                    self.playbook.workload.seed,
                    Duration::from_millis(self.playbook.workload.timeout_ms),
                    self.history.clone(),
                    sites.tls.clone(),
                )
                .await;
                let deadline = tokio::time::Instant::now()
                    + IDLE_CONNECT_TIMEOUT
                    + IDLE_CONNECT_PER_CLIENT * push.clients;
                idle.wait_connected(deadline).await.map_err(|e| {
                    Error::CouldNotRun(format!("{e}; see the logs: {}", sites.logs()))
                })?;
                eprintln!(
                    "{} idle push clients connected through {} in {:.1} s",
                    push.clients,
                    push.through,
                    started.elapsed().as_secs_f64()
                );
                Some(idle)
            }
            None => None,
        };
        // Last, so that nothing of the setup (idle clients connecting through one site)
        // is still moving the routes when the workload starts.
        bring_up::wait_steady(self.playbook, sites).await?;
        phase("workload");
        // The sites' data is on this machine's disk with the local and netns drivers only.
        let local_data = matches!(self.playbook.driver, Driver::Local | Driver::Netns);
        let lag = crate::host_lag::HostLag::start(local_data.then(|| sites.dir()));
        let workload = {
            let (runner, w, services) = (
                runner.clone(),
                self.playbook.workload.clone(),
                self.playbook.services(),
            );
            tokio::spawn(async move { runner.run(&w, &services).await })
        };
        let (aborted, mut incidents) = self.timeline(sites, &runner, workload).await?;
        phase("drain");
        incidents.extend(lag.stop().notes());
        heal_pauses(self.playbook, sites);
        for exit in sites.unexpected_exits() {
            self.record_exit(&exit);
            incidents.push(format!("{exit} (not killed by the drill)"));
        }
        if aborted.is_none() {
            self.drain(&runner).await;
            if let Some(idle) = &idle {
                idle.probe(
                    runner.client(),
                    tokio::time::Instant::now() + IDLE_PROBE_TIMEOUT,
                )
                .await;
            }
            phase("read_back");
            self.read_back(&runner).await;
        }
        for follower in followers {
            follower.abort();
        }
        if let Some(idle) = idle {
            idle.stop();
        }
        let _ = stop_observer.send(true);
        let _ = observer.await;
        Ok((aborted, incidents))
    }

    /// Runs the faults at their times while the workload runs; shows progress; enforces
    /// the stop condition.
    async fn timeline(
        &self,
        sites: &mut LocalSites,
        runner: &Runner,
        mut workload: tokio::task::JoinHandle<()>,
    ) -> Result<Ending> {
        let started = tokio::time::Instant::now();
        let mut actions = plan(&self.playbook.timeline);
        let mut progress = Progress::new(self.playbook, self.live);
        let mut incidents = Vec::new();
        let mut tick = tokio::time::interval(Duration::from_millis(100));
        loop {
            tokio::select! {
                _ = &mut workload => break,
                _ = tick.tick() => {}
            }
            let elapsed = started.elapsed().as_secs_f64();
            while actions.first().is_some_and(|(at, _)| *at <= elapsed) {
                let (_, action) = actions.remove(0);
                let begun = std::time::Instant::now();
                let what = self.act(sites, runner, action).await?;
                let took = begun.elapsed().as_millis();
                progress.note(&format!("[{elapsed:>5.1} s] {what} ({took} ms)"));
            }
            for target in sites.poll_restarts()? {
                self.record_fault(FaultKind::ProcessRestart.name(), &target, FaultPhase::End);
                progress.note(&format!("[{elapsed:>5.1} s] {target} started again"));
            }
            for exit in sites.unexpected_exits() {
                self.record_exit(&exit);
                incidents.push(format!("{exit} (not killed by the drill)"));
            }
            if let Some(reason) = progress.update(&self.history, elapsed, runner.in_flight()) {
                workload.abort();
                progress.finish();
                self.history.record(Event::Phase {
                    at_ms: self.history.now_ms(),
                    name: "abort".into(),
                });
                for site in &self.playbook.topology.sites {
                    sites.restore_site(site)?;
                }
                return Ok((Some(reason), incidents));
            }
        }
        progress.finish();
        // Faults planned after the workload's last operation still heal (a restore at the
        // very end, say), so the read-back sees the intended end state.
        for (_, action) in actions {
            let what = self.act(sites, runner, action).await?;
            eprintln!("[ end of workload] {what}");
        }
        let deadline = tokio::time::Instant::now() + driver::STOP_GRACE + Duration::from_secs(1);
        while sites.restarting() && tokio::time::Instant::now() < deadline {
            sites.poll_restarts()?;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Ok((None, incidents))
    }

    /// Runs one action; returns what it did, for the progress display.
    async fn act(
        &self,
        sites: &mut LocalSites,
        runner: &Runner,
        action: Action<'_>,
    ) -> Result<String> {
        let record = |fault: &str, target: &str, phase| self.record_fault(fault, target, phase);
        let (step, starting) = match action {
            Action::Start(step) => (step, true),
            Action::End(step) => (step, false),
        };
        let resolved = self.resolve_leader(step);
        let step = &resolved;
        let (site, process) = step.site_and_process();
        let name = step.fault.name();
        tracing::debug!(fault = name, target = %step.target, start = starting, "fault");
        let led = self.leaders_in(site);
        let led = match (process, led.is_empty()) {
            (None | Some(ProcessKind::Node), false) => format!(" (it led {})", led.join(" and ")),
            _ => String::new(),
        };
        let what = match (starting, step.fault) {
            (true, FaultKind::SiteLoss) if step.wipe_data => {
                format!("{name} {} (data wiped){led}", step.target)
            }
            (true, _) => format!("{name} {}{led}", step.target),
            (false, FaultKind::ProcessPause) => format!("{} resumed (SIGCONT)", step.target),
            (false, _) => format!("{} started again", step.target),
        };
        if step.fault == FaultKind::Surge {
            let factor = if starting {
                step.factor.unwrap_or(1)
            } else {
                1
            };
            runner.set_surge(factor);
            record(
                name,
                &step.target,
                if starting {
                    FaultPhase::Start
                } else {
                    FaultPhase::End
                },
            );
            return Ok(if starting {
                format!("surge: the workload's rate x{factor}")
            } else {
                "surge over: the workload back to its rate".into()
            });
        }
        if step.fault == FaultKind::Evacuate {
            return self.act_evacuate(sites, step, starting).await;
        }
        if step.fault == FaultKind::SiteReplace {
            return self.act_site_replace(sites, step).await;
        }
        if step.fault.needs_netns() {
            let phase = if starting {
                FaultPhase::Start
            } else {
                FaultPhase::End
            };
            let what = self.act_on_network(step, starting)?;
            record(name, &step.target, phase);
            return Ok(what);
        }
        if matches!(step.fault, FaultKind::PowerLoss | FaultKind::PowerRestore) {
            return self.act_on_power(sites, step, starting, &what).await;
        }
        match (step.fault, starting, process) {
            (FaultKind::SiteLoss | FaultKind::SitePowerCycle, true, _) => {
                record(name, &step.target, FaultPhase::Start);
                sites.kill_sites(&step.target_sites(), step.wipe_data).await;
            }
            (FaultKind::SitePowerCycle, false, _) | (FaultKind::SiteRestore, _, _) => {
                sites.restore_site(site)?;
                if step.fault == FaultKind::SiteRestore {
                    record(name, &step.target, FaultPhase::Start);
                    record(name, &step.target, FaultPhase::End);
                    for open in ["site-loss", "site-power-cycle"] {
                        record(open, site, FaultPhase::End);
                    }
                    for p in ["node", "messaging", "payments", "login"] {
                        record("process-kill", &format!("{site}/{p}"), FaultPhase::End);
                    }
                } else {
                    record(name, &step.target, FaultPhase::End);
                }
            }
            (FaultKind::ProcessKill, true, Some(p)) => {
                record(name, &step.target, FaultPhase::Start);
                sites.kill_process(site, p).await;
            }
            (FaultKind::ProcessKill, false, Some(p)) => {
                sites.start_process(site, p)?;
                record(name, &step.target, FaultPhase::End);
            }
            (FaultKind::ProcessRestart, _, Some(p)) => {
                record(name, &step.target, FaultPhase::Start);
                sites.begin_restart(site, p);
            }
            (FaultKind::ProcessPause, pause, Some(p)) => {
                sites.pause_process(site, p, pause);
                let phase = if pause {
                    FaultPhase::Start
                } else {
                    FaultPhase::End
                };
                record(name, &step.target, phase);
            }
            (
                FaultKind::Partition
                | FaultKind::Loss
                | FaultKind::Latency
                | FaultKind::Bandwidth
                | FaultKind::LinkFlap
                | FaultKind::Surge
                | FaultKind::PowerLoss
                | FaultKind::PowerRestore
                | FaultKind::Evacuate
                | FaultKind::SiteReplace,
                _,
                _,
            ) => unreachable!(
                "network, power faults, evacuations, replacements and surges are handled above"
            ),
            (fault, _, None) => unreachable!("validated: {} targets a process", fault.name()),
            (FaultKind::SiteLoss, false, _) => unreachable!("a site loss ends with site-restore"),
        }
        Ok(what)
    }

    /// Evacuates the target site through the admin API as an operator would, or restores
    /// it; a refusal stops the drill (the playbook asked for something the rules forbid).
    async fn act_evacuate(
        &self,
        sites: &LocalSites,
        step: &Step,
        starting: bool,
    ) -> Result<String> {
        let (path, body, phase, what) = if starting {
            let body = serde_json::json!({ "site": step.target, "reason": "drill evacuation" });
            (
                "/v1/evacuate",
                body,
                FaultPhase::Start,
                format!("{} evacuated", step.target),
            )
        } else {
            let body = serde_json::json!({ "site": step.target, "reason": "drill over" });
            (
                "/v1/restore",
                body,
                FaultPhase::End,
                format!("{} restored", step.target),
            )
        };
        bring_up::operator_post(sites, path, &body, Duration::from_secs(10))
            .await
            .map_err(|last| Error::CouldNotRun(format!("{path} {}: {last}", step.target)))?;
        self.record_fault(step.fault.name(), &step.target, phase);
        Ok(what)
    }

    /// Cuts or restores the power of the target sites; records what each power loss threw
    /// away, so the report shows that the fault bit.
    async fn act_on_power(
        &self,
        sites: &mut LocalSites,
        step: &Step,
        starting: bool,
        what: &str,
    ) -> Result<String> {
        let targets = step.target_sites();
        let fault = step.fault.name();
        let record = |fault: &str, target: &str, phase| self.record_fault(fault, target, phase);
        if step.fault == FaultKind::PowerLoss && starting {
            record(fault, &step.target, FaultPhase::Start);
            let lost = sites.power_loss(&targets).await?;
            let mut parts = Vec::new();
            for (site, discarded) in targets.iter().zip(lost) {
                self.history.record(Event::PowerLoss {
                    at_ms: self.history.now_ms(),
                    site: site.to_string(),
                    bytes: discarded.bytes,
                    files: discarded.files,
                });
                parts.push(format!(
                    "{site} {:.1} MB in {} files",
                    discarded.bytes as f64 / 1e6,
                    discarded.files
                ));
            }
            return Ok(format!(
                "{what}: unsynced data discarded: {}",
                parts.join(", ")
            ));
        }
        for site in &targets {
            sites.restore_site(site)?;
        }
        // A restore ends every power loss of its sites (and the loss's own duration, its own).
        if step.fault == FaultKind::PowerRestore {
            record(fault, &step.target, FaultPhase::Start);
            record(fault, &step.target, FaultPhase::End);
        }
        for loss in self
            .playbook
            .timeline
            .iter()
            .filter(|s| s.fault == FaultKind::PowerLoss)
            .filter(|s| s.target_sites().iter().any(|t| targets.contains(t)))
        {
            record(FaultKind::PowerLoss.name(), &loss.target, FaultPhase::End);
        }
        Ok(format!("{} powered on again", step.target))
    }

    /// Records that a fault started or ended, now.
    fn record_fault(&self, fault: &str, target: &str, phase: FaultPhase) {
        self.history.record(Event::Fault {
            at_ms: self.history.now_ms(),
            fault: fault.into(),
            target: target.into(),
            phase,
        })
    }

    /// Records a process that died unasked (`site/process: status`).
    fn record_exit(&self, exit: &str) {
        tracing::warn!(process = %exit, "a process died without the drill killing it");
        let (process, status) = exit.split_once(": ").unwrap_or((exit, ""));
        self.history.record(Event::ProcessExit {
            at_ms: self.history.now_ms(),
            process: process.into(),
            status: status.into(),
        });
    }

    /// Starts or ends a network fault (netns driver); returns what it did.
    fn act_on_network(&self, step: &Step, starting: bool) -> Result<String> {
        let network = self
            .network
            .as_ref()
            .expect("validated: network faults run with the netns driver");
        let sites = &self.playbook.topology.sites;
        let index = |name: &str| {
            sites
                .iter()
                .position(|s| s == name)
                .expect("validated site")
        };
        let targets: Vec<usize> = step.target_sites().into_iter().map(index).collect();
        let peer_names = step.peer_sites(sites);
        let peers: Vec<usize> = peer_names.iter().map(|p| index(p)).collect();
        let site = targets[0];
        let expiry = self.fault_expiry(step);
        let fault = step.fault.name();
        let target = &step.target;
        match (step.fault, starting) {
            (FaultKind::Partition, true) => {
                network.partition(&targets, &peers, step.one_way, expiry)?
            }
            (FaultKind::Partition, false) => {
                network.heal_partition(&targets, &peers, step.one_way)?
            }
            (FaultKind::Loss, true) => {
                network.loss(site, &peers, step.percent.unwrap_or(0), expiry)?
            }
            (FaultKind::Loss, false) => network.clear_loss(site)?,
            (FaultKind::Latency | FaultKind::Bandwidth, true) => network.shape(
                site,
                &peers,
                &Shaping {
                    delay_ms: step.delay_ms.unwrap_or(0),
                    jitter_ms: step.jitter_ms.unwrap_or(0),
                    rate_kbit: step.rate_kbit.unwrap_or(0),
                },
                expiry,
            )?,
            (FaultKind::Latency | FaultKind::Bandwidth, false) => network.clear_shape(site)?,
            (FaultKind::LinkFlap, up) => network.link(site, !up, expiry)?,
            (other, _) => unreachable!("{} is not a network fault", other.name()),
        }
        let arrow = if step.one_way { "->" } else { "<->" };
        Ok(match (step.fault, starting) {
            (FaultKind::Partition, true) => {
                format!("{fault} {target} {arrow} {}", peer_names.join(", "))
            }
            (FaultKind::Latency | FaultKind::Bandwidth | FaultKind::Loss, true) => {
                format!("{fault} {target} -> {}", peer_names.join(", "))
            }
            (FaultKind::LinkFlap, true) => format!("{target} link down"),
            (FaultKind::LinkFlap, false) => format!("{target} link up"),
            (_, true) => format!("{fault} {target}"),
            (_, false) => format!("{fault} {target} healed"),
        })
    }

    /// How long a network fault may last if the drill never heals it (killed, or cut off
    /// from the hosts): its step's duration, or the whole workload's, plus
    /// [`FAULT_EXPIRY_GRACE`].
    fn fault_expiry(&self, step: &Step) -> Duration {
        let planned = step
            .duration_secs
            .unwrap_or(f64::from(self.playbook.workload.duration_secs));
        Duration::from_secs_f64(planned.max(0.0)) + FAULT_EXPIRY_GRACE
    }

    /// The Raft groups whose latest known leader is the node of `site`: what a fault there
    /// takes down besides the site's own processes.
    /// The step with `leader/PROCESS` resolved to the site whose node leads the control
    /// group now (as the observer last saw it); other steps as they are.
    fn resolve_leader(&self, step: &Step) -> Step {
        let Some(process) = step.target.strip_prefix("leader/") else {
            return step.clone();
        };
        let leader = self.latest_leaders().get("control").map_or(0, |(_, l)| *l);
        // The driver numbers the sites' first nodes 1, 2, ... in site order.
        let index = (leader as usize).saturating_sub(1);
        let sites = &self.playbook.topology.sites;
        let site = sites.get(index).map_or("", String::as_str);
        Step {
            target: format!("{site}/{process}"),
            ..step.clone()
        }
    }

    /// The groups `site`'s first node leads, as the observer last saw them.
    fn leaders_in(&self, site: &str) -> Vec<String> {
        let Some(index) = self.playbook.topology.sites.iter().position(|s| s == site) else {
            return Vec::new();
        };
        let node = index as u64 + 1; // the driver numbers nodes in site order
        self.latest_leaders()
            .into_iter()
            .filter(|(_, (_, leader))| *leader == node)
            .map(|(group, _)| format!("the {group} group"))
            .collect()
    }

    /// Per group, the latest (term, leader) the observer recorded.
    fn latest_leaders(&self) -> BTreeMap<String, (u64, u64)> {
        let mut latest: BTreeMap<String, (u64, u64)> = BTreeMap::new();
        for event in self.history.snapshot() {
            if let Event::Leader {
                group,
                term,
                leader,
                ..
            } = event
            {
                let known = latest.entry(group).or_default();
                if term >= known.0 {
                    *known = (term, leader);
                }
            }
        }
        latest
    }
}

/// A timeline action: a fault starts, or its effect ends by itself.
#[derive(Clone, Copy)]
enum Action<'a> {
    Start(&'a Step),
    End(&'a Step),
}

/// The timeline's actions, in time order (seconds of the workload).
fn plan(timeline: &[Step]) -> Vec<(f64, Action<'_>)> {
    let mut actions = Vec::new();
    for step in timeline {
        if let (FaultKind::LinkFlap, Some(period)) = (step.fault, step.period_secs) {
            // Down for the first half of every period, up for the second.
            let mut at = step.at_secs;
            while at < step.end_secs() {
                actions.push((at, Action::Start(step)));
                actions.push(((at + period / 2.0).min(step.end_secs()), Action::End(step)));
                at += period;
            }
            continue;
        }
        actions.push((step.at_secs, Action::Start(step)));
        let ends_by_itself = matches!(
            step.fault,
            FaultKind::SitePowerCycle | FaultKind::ProcessPause
        ) || (matches!(
            step.fault,
            FaultKind::ProcessKill | FaultKind::Surge | FaultKind::PowerLoss
        ) || step.fault.needs_netns())
            && step.duration_secs.is_some();
        if ends_by_itself {
            actions.push((step.end_secs(), Action::End(step)));
        }
    }
    actions.sort_by(|a, b| a.0.total_cmp(&b.0));
    actions
}

/// Resumes every paused process (for an abort or the end of the workload).
fn heal_pauses(playbook: &Playbook, sites: &mut LocalSites) {
    for step in playbook
        .timeline
        .iter()
        .filter(|s| s.fault == FaultKind::ProcessPause)
    {
        let (site, process) = step.site_and_process();
        if let Some(p) = process {
            sites.pause_process(site, p, false);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn faults_that_end_by_themselves_are_planned_twice() {
        let text = "name: t\ndescription: d\ntopology:\n  sites: [a, b, c]\n  services: [{ name: login, mode: active-active }]\nworkload: { seed: 1, rate_per_sec: 1, duration_secs: 60, users: 2, mix: { login: 1 } }\ntimeline:\n  - { at_secs: 5, fault: site-power-cycle, target: a, duration_secs: 10 }\n  - { at_secs: 8, fault: process-pause, target: b/login, duration_secs: 1 }\n  - { at_secs: 20, fault: site-loss, target: c }\n  - { at_secs: 30, fault: surge, target: workload, factor: 10, duration_secs: 12 }\nexpect: {}\n";
        let p = Playbook::parse("t.yaml", text).unwrap();
        let times: Vec<f64> = plan(&p.timeline).iter().map(|(at, _)| *at).collect();
        assert_eq!(times, vec![5.0, 8.0, 9.0, 15.0, 20.0, 30.0, 42.0]);
    }
}
