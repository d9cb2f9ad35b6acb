//! The drill runner: one playbook from bring-up to verdict.
//!
//! ```text
//!   ports free? ─► start sites ─► leaders elected ─► topology applied ─► every service
//!   serving everywhere ─► setup (accounts, users) ─► followers ─► workload + timeline
//!   (faults at their times, progress each second, stop condition) ─► drain deliveries
//!   ─► read-back (messages, transfers, balances, total, sessions) ─► stop every process
//!   ─► checkers ─► report
//! ```
//!
//! Interrupted (Ctrl-C, SIGTERM: the `shutdown` future), the runner stops the workload,
//! stops every process it started, writes what history it has and returns an outcome
//! marked interrupted. Whatever the drill does, its processes are gone when `run` returns,
//! or when its future is dropped (the driver's `Drop` kills them).

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::path::PathBuf;
use std::time::Duration;

use firebreak_services::client::Outcome;
use serde_json::{json, Value};
use tokio::sync::watch;

use crate::checkers::judge;
use crate::driver::{self, DriverConfig, LocalSites};
use crate::error::{Error, Result};
use crate::history::{Event, FaultPhase, History, Op, StoredMessage};
use crate::playbook::{FaultKind, Mode, Playbook, ServiceKind, Step};
use crate::report::Report;
use crate::workload::{self, Runner};

/// How long the sites get to elect leaders and serve.
const BRING_UP_TIMEOUT: Duration = Duration::from_secs(60);
/// How long setup (accounts, users) may take.
const SETUP_TIMEOUT: Duration = Duration::from_secs(60);
/// How long push recipients get to catch up after the workload.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(15);
/// Read-back requests in flight at once.
const READ_BACK_CONCURRENCY: usize = 16;
/// Page size of the messaging catch-up read (the service's page).
const MESSAGE_PAGE: usize = 500;
/// Pages read per conversation at most.
const MAX_PAGES: usize = 1_000;

/// How to run a drill.
pub struct DrillOptions {
    /// The playbook's path as the user gave it (for the repeat command).
    pub playbook_path: PathBuf,
    pub playbook: Playbook,
    /// Overrides the playbook's seed.
    pub seed: Option<u64>,
    /// Where the history and reports go (and the sites' data and logs, under `sites/`).
    pub out: Option<PathBuf>,
    /// The nodes' port; services use the next three.
    pub port: u16,
    /// The `firebreak` binary to run the sites with.
    pub exe: PathBuf,
    /// Draw a progress bar (on a terminal) rather than a line every few seconds.
    pub live: bool,
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
    let mut playbook = options.playbook.clone();
    let seed = options.seed.unwrap_or(playbook.workload.seed);
    playbook.workload.seed = seed;
    let services = playbook.services();
    driver::check_ports_free(playbook.topology.sites.len(), options.port, &services)?;
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
    let mut sites = LocalSites::start(DriverConfig {
        exe: options.exe.clone(),
        dir: sites_dir.clone(),
        port: options.port,
        sites: playbook.topology.sites.clone(),
        state_voters: playbook.topology.state_voters.clone(),
        services: services.clone(),
    })?;
    eprintln!(
        "drill {}: seed {seed}; {} sites on 127.0.N.1:{}; logs in {}",
        playbook.name,
        playbook.topology.sites.len(),
        options.port,
        sites.logs()
    );
    let history = History::new();
    let drill = Drill {
        playbook: &playbook,
        history: history.clone(),
        live: options.live,
    };
    let result = tokio::select! {
        result = drill.run(&mut sites) => result.map(|(aborted, incidents)| (aborted, incidents, false)),
        _ = shutdown => Ok((Some("interrupted by a signal".to_string()), Vec::new(), true)),
    };
    sites.shutdown().await;
    let (aborted, incidents, interrupted) = result?;
    let events = history.snapshot();
    let repeat = format!(
        "firebreak drill {} --seed {seed}",
        options.playbook_path.display()
    );
    let report = Report::new(
        &playbook,
        seed,
        repeat,
        &events,
        judge(&playbook, &events),
        aborted,
        incidents,
    );
    if let Some(out) = &options.out {
        report.write(out, &events).map_err(|e| {
            Error::CouldNotRun(format!(
                "failed to write the report to {}: {e}",
                out.display()
            ))
        })?;
    }
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

struct Drill<'a> {
    playbook: &'a Playbook,
    history: History,
    live: bool,
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
        apply_topology(self.playbook, sites).await?;
        wait_serving(self.playbook, &nodes, sites).await?;
        let (stop_observer, stopped) = watch::channel(false);
        let observer = tokio::spawn(crate::observer::observe(
            nodes.clone(),
            self.history.clone(),
            stopped,
        ));
        phase("setup");
        let runner = Runner::new(nodes.clone(), &self.playbook.workload, self.history.clone());
        runner
            .setup(
                self.playbook.workload.users,
                tokio::time::Instant::now() + SETUP_TIMEOUT,
            )
            .await
            .map_err(|e| Error::CouldNotRun(format!("{e}; see the logs: {}", sites.logs())))?;
        let followers = if self.playbook.services().contains(&ServiceKind::Messaging) {
            runner.follow(&nodes, &self.playbook.workload)
        } else {
            Vec::new()
        };
        phase("workload");
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
        heal_pauses(self.playbook, sites);
        incidents.extend(sites.unexpected_exits());
        if aborted.is_none() {
            self.drain(&runner).await;
            phase("read_back");
            self.read_back(&runner).await;
        }
        for follower in followers {
            follower.abort();
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
        let mut progress = crate::runner::Progress::new(self.playbook, self.live);
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
                let what = self.act(sites, action).await?;
                progress.note(&format!("[{elapsed:>5.1} s] {what}"));
            }
            for exit in sites.unexpected_exits() {
                tracing::warn!(process = %exit, "a process died without the drill killing it");
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
            let what = self.act(sites, action).await?;
            eprintln!("[ end of workload] {what}");
        }
        Ok((None, incidents))
    }

    /// Runs one action; returns what it did, for the progress display.
    async fn act(&self, sites: &mut LocalSites, action: Action<'_>) -> Result<String> {
        let record = |fault: &str, target: &str, phase: FaultPhase| {
            self.history.record(Event::Fault {
                at_ms: self.history.now_ms(),
                fault: fault.into(),
                target: target.into(),
                phase,
            })
        };
        let (step, starting) = match action {
            Action::Start(step) => (step, true),
            Action::End(step) => (step, false),
        };
        let (site, process) = step.site_and_process();
        let name = step.fault.name();
        tracing::debug!(fault = name, target = %step.target, start = starting, "fault");
        let what = match (starting, step.fault) {
            (true, FaultKind::SiteLoss) if step.wipe_data => {
                format!("{name} {} (data wiped)", step.target)
            }
            (true, _) => format!("{name} {}", step.target),
            (false, FaultKind::ProcessPause) => format!("{} resumed (SIGCONT)", step.target),
            (false, _) => format!("{} started again", step.target),
        };
        match (step.fault, starting, process) {
            (FaultKind::SiteLoss | FaultKind::SitePowerCycle, true, _) => {
                record(name, &step.target, FaultPhase::Start);
                sites.kill_site(site, step.wipe_data).await;
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
                sites.restart_process(site, p).await?;
                record(name, &step.target, FaultPhase::End);
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
            (fault, _, None) => unreachable!("validated: {} targets a process", fault.name()),
            (FaultKind::SiteLoss, false, _) => unreachable!("a site loss ends with site-restore"),
        }
        Ok(what)
    }

    /// Waits until every recipient has been pushed the last stored message of its
    /// conversation, or [`DRAIN_TIMEOUT`].
    async fn drain(&self, runner: &Runner) {
        let deadline = tokio::time::Instant::now() + DRAIN_TIMEOUT;
        let users = self.playbook.workload.users;
        if !self.playbook.services().contains(&ServiceKind::Messaging) {
            return;
        }
        let mut newest: BTreeMap<String, u64> = BTreeMap::new();
        for user in 0..users {
            let room = workload::conversation(user);
            if let Outcome::Done {
                status: 200, body, ..
            } = runner.client().messages(&room, 0).await
            {
                let last = body["messages"]
                    .as_array()
                    .and_then(|m| m.last())
                    .map(|m| m["seq"].as_u64().unwrap_or(0));
                newest.insert(room, last.unwrap_or(0));
            }
        }
        // Paged reads give the first page only; that is enough to wait on most of it, and
        // the read-back below catches the rest.
        while tokio::time::Instant::now() < deadline {
            let events = self.history.snapshot();
            let mut delivered: HashMap<&str, u64> = HashMap::new();
            for e in &events {
                if let Event::Deliver {
                    conversation, seq, ..
                } = e
                {
                    let top = delivered.entry(conversation.as_str()).or_default();
                    *top = (*top).max(*seq);
                }
            }
            if newest
                .iter()
                .all(|(room, seq)| delivered.get(room.as_str()).copied().unwrap_or(0) >= *seq)
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Reads back what the checkers need from the end state.
    async fn read_back(&self, runner: &Runner) {
        let services = self.playbook.services();
        if services.contains(&ServiceKind::Messaging) {
            self.read_back_messages(runner).await;
        }
        if services.contains(&ServiceKind::Payments) {
            self.read_back_payments(runner).await;
        }
        if services.contains(&ServiceKind::Login) {
            self.read_back_sessions(runner).await;
        }
    }

    async fn read_back_messages(&self, runner: &Runner) {
        let events = self.history.snapshot();
        for user in 0..self.playbook.workload.users {
            let room = workload::conversation(user);
            let mut stored = Vec::new();
            let mut failed = None;
            for _ in 0..MAX_PAGES {
                let after = stored.last().map_or(0, |m: &StoredMessage| m.seq);
                match runner.client().messages(&room, after).await {
                    Outcome::Done {
                        status: 200, body, ..
                    } => {
                        let page: Vec<StoredMessage> = body["messages"]
                            .as_array()
                            .into_iter()
                            .flatten()
                            .map(|m| StoredMessage {
                                seq: m["seq"].as_u64().unwrap_or(0),
                                client_msg_id: m["client_msg_id"].as_str().unwrap_or("").into(),
                            })
                            .collect();
                        let full = page.len() >= MESSAGE_PAGE;
                        stored.extend(page);
                        if !full {
                            break;
                        }
                    }
                    other => {
                        failed = Some(format!("{other:?}"));
                        break;
                    }
                }
            }
            let at_ms = self.history.now_ms();
            if let Some(error) = failed {
                self.history.record(Event::ReadBackFailed {
                    at_ms,
                    what: format!("conversation {room}"),
                    error,
                });
                continue;
            }
            let who = workload::recipient(user);
            let delivered: std::collections::HashSet<u64> = events
                .iter()
                .filter_map(|e| match e {
                    Event::Deliver { recipient, seq, .. } if *recipient == who => Some(*seq),
                    _ => None,
                })
                .collect();
            for m in stored.iter().filter(|m| !delivered.contains(&m.seq)) {
                self.history.record(Event::Recovered {
                    at_ms,
                    recipient: who.clone(),
                    conversation: room.clone(),
                    seq: m.seq,
                    client_msg_id: m.client_msg_id.clone(),
                });
            }
            self.history.record(Event::Stored {
                at_ms,
                conversation: room,
                messages: stored,
            });
        }
    }

    async fn read_back_payments(&self, runner: &Runner) {
        let keys: Vec<String> = self
            .history
            .snapshot()
            .into_iter()
            .filter_map(|e| match e {
                Event::Invoke {
                    op: Op::Transfer { key, .. },
                    ..
                } => Some(key),
                _ => None,
            })
            .collect();
        let history = self.history.clone();
        for_each_bounded(keys, |key| {
            let history = history.clone();
            async move {
                let at_ms = history.now_ms();
                match runner.client().transfer_record(&key).await {
                    Outcome::Done {
                        status: 200, body, ..
                    } => history.record(Event::TransferRecord {
                        at_ms,
                        key,
                        record: Some(body),
                    }),
                    Outcome::Done { status: 404, .. } => history.record(Event::TransferRecord {
                        at_ms,
                        key,
                        record: None,
                    }),
                    other => history.record(Event::ReadBackFailed {
                        at_ms,
                        what: format!("transfer {key}"),
                        error: format!("{other:?}"),
                    }),
                }
            }
        })
        .await;
        for user in 0..self.playbook.workload.users {
            let account = workload::account(user);
            let at_ms = self.history.now_ms();
            match runner.client().balance(&account).await {
                Outcome::Done {
                    status: 200, body, ..
                } => self.history.record(Event::Balance {
                    at_ms,
                    account,
                    balance: body["balance"].as_u64().unwrap_or(0),
                }),
                Outcome::Done { status: 404, .. } => self.history.record(Event::Balance {
                    at_ms,
                    account,
                    balance: 0,
                }),
                other => self.history.record(Event::ReadBackFailed {
                    at_ms,
                    what: format!("account {account}"),
                    error: format!("{other:?}"),
                }),
            }
        }
        let at_ms = self.history.now_ms();
        match runner.client().total().await {
            Outcome::Done {
                status: 200, body, ..
            } => self.history.record(Event::Total {
                at_ms,
                total: body["total"].as_u64().unwrap_or(0),
            }),
            other => self.history.record(Event::ReadBackFailed {
                at_ms,
                what: "total".into(),
                error: format!("{other:?}"),
            }),
        }
    }

    async fn read_back_sessions(&self, runner: &Runner) {
        let tokens: Vec<String> = crate::history::operations(&self.history.snapshot())
            .into_iter()
            .filter(|o| matches!(o.op, Op::Login { .. }))
            .filter_map(|o| {
                o.body()
                    .and_then(|b| b["token"].as_str())
                    .map(str::to_string)
            })
            .collect();
        let history = self.history.clone();
        for_each_bounded(tokens, |token| {
            let history = history.clone();
            async move {
                let at_ms = history.now_ms();
                match runner.client().validate(&token).await {
                    Outcome::Done { status: 200, .. } => history.record(Event::Session {
                        at_ms,
                        token,
                        valid: true,
                    }),
                    Outcome::Done {
                        status: 401 | 404, ..
                    } => history.record(Event::Session {
                        at_ms,
                        token,
                        valid: false,
                    }),
                    other => history.record(Event::ReadBackFailed {
                        at_ms,
                        what: "a session".into(),
                        error: format!("{other:?}"),
                    }),
                }
            }
        })
        .await;
    }
}

/// Runs `f` over `items`, [`READ_BACK_CONCURRENCY`] at a time.
async fn for_each_bounded<T, F, Fut>(items: Vec<T>, f: F)
where
    F: Fn(T) -> Fut,
    Fut: Future<Output = ()>,
{
    use futures::StreamExt;
    futures::stream::iter(items.into_iter().map(f))
        .buffer_unordered(READ_BACK_CONCURRENCY)
        .collect::<Vec<()>>()
        .await;
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
        actions.push((step.at_secs, Action::Start(step)));
        let ends_by_itself = matches!(
            step.fault,
            FaultKind::SitePowerCycle | FaultKind::ProcessPause
        ) || (step.fault == FaultKind::ProcessKill
            && step.duration_secs.is_some());
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

async fn wait_ready(nodes: &[String], sites: &LocalSites) -> Result<()> {
    let http = http_client();
    let deadline = tokio::time::Instant::now() + BRING_UP_TIMEOUT;
    loop {
        let mut control_led = 0;
        let mut state_led = false;
        for node in nodes {
            let info: Option<Value> =
                match http.get(format!("http://{node}/v1/cluster")).send().await {
                    Ok(r) => r.json().await.ok(),
                    Err(_) => None,
                };
            let groups = info
                .as_ref()
                .and_then(|i| i["groups"].as_array().cloned())
                .unwrap_or_default();
            let led = |name: &str| {
                groups
                    .iter()
                    .any(|g| g["name"] == name && !g["leader"].is_null())
            };
            control_led += usize::from(led("control"));
            state_led |= led("state");
        }
        if control_led == nodes.len() && state_led {
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(Error::CouldNotRun(format!(
                "the sites elected no leaders within {BRING_UP_TIMEOUT:?}; see the logs: {}",
                sites.logs()
            )));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .build()
        .expect("reqwest client builds with static options")
}

/// The topology a playbook describes, as `/v1/topology` takes it.
fn topology(playbook: &Playbook, sites: &LocalSites) -> Value {
    let names = &playbook.topology.sites;
    let services: Vec<Value> = playbook
        .topology
        .services
        .iter()
        .map(|s| {
            let endpoints: serde_json::Map<String, Value> = names
                .iter()
                .enumerate()
                .map(|(i, site)| (site.clone(), json!(sites.service_url(i, s.name))))
                .collect();
            json!({
                "name": s.name.name(), "mode": s.mode.name(), "endpoints": endpoints, "priorities": names,
                "health": { "path": "/health", "interval_ms": 500, "timeout_ms": 250, "fall": 2, "rise": 2 },
            })
        })
        .collect();
    json!({
        "sites": names.iter().map(|s| json!({ "name": s })).collect::<Vec<_>>(),
        "services": services,
        "policy": { "dwell_ms": playbook.topology.dwell_ms },
    })
}

async fn apply_topology(playbook: &Playbook, sites: &LocalSites) -> Result<()> {
    let http = http_client();
    let body = topology(playbook, sites);
    let deadline = tokio::time::Instant::now() + BRING_UP_TIMEOUT;
    let mut last = String::new();
    while tokio::time::Instant::now() < deadline {
        for node in sites.node_addrs() {
            let url = format!("http://{node}/v1/topology");
            match http
                .post(url)
                .bearer_auth(&sites.token)
                .json(&body)
                .send()
                .await
            {
                Ok(r) if r.status().is_success() => return Ok(()),
                Ok(r) => {
                    last = format!(
                        "{node}: {} {}",
                        r.status(),
                        r.text().await.unwrap_or_default()
                    )
                }
                Err(e) => last = format!("{node}: {e}"),
            }
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    Err(Error::CouldNotRun(format!(
        "the cluster did not take the drill's topology: {last}"
    )))
}

/// Waits until routing has every service served where the playbook says, and every
/// gateway answers for every service.
async fn wait_serving(playbook: &Playbook, nodes: &[String], sites: &LocalSites) -> Result<()> {
    let http = http_client();
    let deadline = tokio::time::Instant::now() + BRING_UP_TIMEOUT;
    let wanted = |mode: Mode| match mode {
        Mode::ActiveActive => playbook.topology.sites.len(),
        Mode::ActivePassive => 1,
    };
    loop {
        let routing: Option<Value> = match http
            .get(format!("http://{}/v1/routing", nodes[0]))
            .send()
            .await
        {
            Ok(r) => r.json().await.ok(),
            Err(_) => None,
        };
        let routed = routing.as_ref().is_some_and(|r| {
            playbook.topology.services.iter().all(|s| {
                r["routes"][s.name.name()]["serving"]
                    .as_array()
                    .is_some_and(|a| a.len() == wanted(s.mode))
            })
        });
        let mut answering = routed;
        for node in nodes.iter().filter(|_| routed) {
            for service in playbook.services() {
                let path = match service {
                    ServiceKind::Messaging => "/messaging/conversations/warmup/messages?after=0",
                    ServiceKind::Payments => "/payments/total",
                    ServiceKind::Login => "/login/sessions/warmup",
                };
                let status = http
                    .get(format!("http://{node}{path}"))
                    .send()
                    .await
                    .map(|r| r.status().as_u16());
                answering &= matches!(status, Ok(200 | 401 | 404));
            }
        }
        if answering {
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(Error::CouldNotRun(format!(
                "the services were not served everywhere within {BRING_UP_TIMEOUT:?}; see the logs: {}",
                sites.logs()
            )));
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Live progress: the phase and each service's success rate over the last second, on a
/// progress bar (terminal) or a line every [`PLAIN_EVERY_SECS`] seconds; it also watches
/// the stop condition.
pub struct Progress {
    bar: Option<indicatif::ProgressBar>,
    services: Vec<ServiceKind>,
    cursor: usize,
    owner: HashMap<u64, ServiceKind>,
    second: BTreeMap<ServiceKind, (u64, u64)>,
    last_second: u64,
    low_for: BTreeMap<ServiceKind, u32>,
    stop: Option<crate::playbook::StopWhen>,
    phase: String,
    timeline: Vec<(f64, String)>,
    duration: u32,
    last_line: String,
}

/// How often a plain (non-terminal) progress line is printed.
const PLAIN_EVERY_SECS: u64 = 5;

impl Progress {
    fn new(playbook: &Playbook, live: bool) -> Self {
        let duration = playbook.workload.duration_secs;
        let bar = live.then(|| {
            let bar = indicatif::ProgressBar::new(u64::from(duration));
            bar.set_style(
                indicatif::ProgressStyle::with_template("{bar:30} {pos:>4}/{len} s  {msg}")
                    .expect("a static template parses"),
            );
            bar.set_draw_target(indicatif::ProgressDrawTarget::stderr());
            bar
        });
        Self {
            bar,
            services: playbook.services(),
            cursor: 0,
            owner: HashMap::new(),
            second: BTreeMap::new(),
            last_second: 0,
            low_for: BTreeMap::new(),
            stop: playbook.stop.clone(),
            phase: "steady".into(),
            timeline: playbook
                .timeline
                .iter()
                .map(|s| (s.at_secs, format!("{} {}", s.fault.name(), s.target)))
                .collect(),
            duration,
            last_line: String::new(),
        }
    }

    /// Takes in new history; once a second redraws and checks the stop condition, which
    /// it returns as the reason to abort when it holds.
    fn update(&mut self, history: &History, elapsed: f64, in_flight: usize) -> Option<String> {
        let fresh = history.since(self.cursor);
        self.cursor += fresh.len();
        for event in fresh {
            match event {
                Event::Invoke { id, op, .. } if op.is_workload() => {
                    self.owner.insert(id, op.service());
                }
                Event::Ok { id, .. } | Event::Fail { id, .. } | Event::Unknown { id, .. } => {
                    if let Some(service) = self.owner.remove(&id) {
                        let entry = self.second.entry(service).or_default();
                        entry.1 += 1;
                        entry.0 += u64::from(matches!(event, Event::Ok { .. }));
                    }
                }
                _ => {}
            }
        }
        let second = elapsed as u64;
        if second == self.last_second {
            return None;
        }
        self.last_second = second;
        if let Some((_, name)) = self.timeline.iter().rev().find(|(at, _)| *at <= elapsed) {
            self.phase = format!("after {name}");
        }
        let rates: Vec<String> = self
            .services
            .iter()
            .map(|s| match self.second.get(s) {
                Some((ok, total)) if *total > 0 => {
                    format!("{s} {:>3.0}%", *ok as f64 * 100.0 / *total as f64)
                }
                _ => format!("{s}    -"),
            })
            .collect();
        self.last_line = format!(
            "{}  |  {}  |  in flight {in_flight}",
            self.phase,
            rates.join("  ")
        );
        match &self.bar {
            Some(bar) => {
                bar.set_position(second.min(u64::from(self.duration)));
                bar.set_message(self.last_line.clone());
            }
            None if second % PLAIN_EVERY_SECS == 0 => {
                eprintln!("[{second:>4}/{} s] {}", self.duration, self.last_line)
            }
            None => {}
        }
        let verdict = self.check_stop();
        self.second.clear();
        verdict
    }

    fn check_stop(&mut self) -> Option<String> {
        let stop = self.stop.as_ref()?;
        for (service, (ok, total)) in &self.second {
            let low = self.low_for.entry(*service).or_default();
            if *total > 0 && (*ok as f64 / *total as f64) < stop.availability_below {
                *low += 1;
            } else if *total > 0 {
                *low = 0;
            }
            if *low >= stop.for_secs {
                return Some(format!(
                    "{service} stayed under {:.0}% availability for {} s (stop condition)",
                    stop.availability_below * 100.0,
                    stop.for_secs
                ));
            }
        }
        None
    }

    /// Prints a line above the progress bar, or plainly.
    fn note(&self, line: &str) {
        match &self.bar {
            Some(bar) => bar.println(line),
            None => eprintln!("{line}"),
        }
    }

    fn finish(&mut self) {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
    }
}
