//! `firebreak bench watchers`: the routing long-poll's fan-out. `--watchers` long polls of
//! `GET /v1/routing/{service}` are held open over the nodes' client listeners (one TLS
//! connection each, as service instances hold them); once every node reports them waiting
//! (`firebreak_watchers_waiting`), the bench evacuates a site that serves the service and
//! times how long after the command was sent each watcher saw the new epoch (the command
//! is acknowledged once applied on its node, so many watchers see it before that).
//! Then it restores the site. Run it against a cluster of its own (`firebreak up
//! --services`): it changes routing.
//!
//! A node serves at most `api.max_watchers` long polls (beyond: 429), and every watcher
//! is an open file on both ends: the bench says so when they do not all get a place.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Result;
use hdrhistogram::Histogram;
use reqwest::Method;
use serde_json::{json, Value};
use tokio::task::JoinSet;

use crate::bench::check_range;
use crate::client::{Client, Nodes};
use crate::exit::{self, fail};

/// A long poll's wait, as asked of the node (its own bound is 30 s).
const POLL_WAIT_MS: u64 = 30_000;
/// The whole run's bound: connecting, holding, waiting for the change, and the change.
const RUN_LIMIT: Duration = Duration::from_secs(180);
/// The promise checked: a routing change visible at every watcher within this.
const VISIBLE_WITHIN: Duration = Duration::from_secs(1);

#[derive(clap::Args)]
pub struct WatchersArgs {
    #[command(flatten)]
    nodes: Nodes,
    /// Long polls held open at once, spread over --nodes.
    #[arg(long, default_value_t = 10_000)]
    watchers: u64,
    /// The service whose route they watch.
    #[arg(long, default_value = "messaging")]
    service: String,
    /// The site to evacuate and then restore (default: the last one serving the service).
    #[arg(long)]
    site: Option<String>,
    /// Seconds to hold every watcher waiting before the change (to measure what idle
    /// watchers cost the nodes).
    #[arg(long, default_value_t = 0)]
    hold_secs: u64,
    /// Print the result as JSON.
    #[arg(long)]
    json: bool,
}

/// What one watcher saw: when the new epoch reached it, or why it did not.
type Seen = std::result::Result<Instant, String>;

pub async fn run(args: WatchersArgs) -> Result<()> {
    check_range("--watchers", args.watchers, 1, 50_000)?;
    check_range("--hold-secs", args.hold_secs, 0, 60)?;
    let keys = Client::new(&args.nodes)?;
    let admin = Client::admin(&args.nodes)?;
    let route = keys
        .send(Method::GET, &format!("/v1/routing/{}", args.service), None)
        .await?;
    let epoch = route["epoch"].as_u64().unwrap_or(0);
    let site = match &args.site {
        Some(site) => site.clone(),
        None => last_serving(&route, &args.service)?,
    };
    let started = Instant::now();
    let refused = Arc::new(AtomicU64::new(0));
    let watchers = spawn_watchers(&args, epoch, &refused)?;
    let waiting = wait_until_waiting(&admin, args.watchers, started, &refused).await?;
    let connected = started.elapsed();
    tokio::time::sleep(Duration::from_secs(args.hold_secs)).await;
    let sent = Instant::now();
    let body = json!({ "site": site, "reason": "bench watchers", "overrides": ["dwell"] });
    let evacuated = admin.send(Method::POST, "/v1/evacuate", Some(&body)).await;
    let acked = Instant::now();
    let seen = watchers.join_all().await;
    let body = json!({ "site": site, "reason": "bench watchers: done" });
    let restored = admin.send(Method::POST, "/v1/restore", Some(&body)).await;
    evacuated?;
    report(&args, &site, waiting, connected, acked - sent, sent, &seen);
    if let Err(err) = restored {
        eprintln!("firebreak: could not restore {site}: {err}; run `firebreak restore {site}`");
    }
    Ok(())
}

/// The last site of the service's route, as the one to evacuate.
fn last_serving(route: &Value, service: &str) -> Result<String> {
    let serving: Vec<&str> = route["serving"]
        .as_array()
        .map(|s| s.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    match serving.as_slice() {
        [_, .., last] => Ok(last.to_string()),
        _ => Err(fail(
            exit::USAGE,
            format!(
                "service {service} is served by {serving:?}: evacuating one would leave none; pick a service served by two sites or more"
            ),
        )),
    }
}

/// One task per watcher, spread over the nodes, sharing one client (one connection each).
fn spawn_watchers(
    args: &WatchersArgs,
    epoch: u64,
    refused: &Arc<AtomicU64>,
) -> Result<JoinSet<Seen>> {
    let tls = args.nodes.tls()?;
    let http = tls
        .apply(reqwest::Client::builder())
        .connect_timeout(Duration::from_secs(10))
        .timeout(Duration::from_millis(POLL_WAIT_MS) + Duration::from_secs(10))
        .build()?;
    let token = args.nodes.token()?.map(Arc::<str>::from);
    let deadline = Instant::now() + RUN_LIMIT;
    let mut set = JoinSet::new();
    for i in 0..args.watchers as usize {
        let node = &args.nodes.nodes[i % args.nodes.nodes.len()];
        let url = tls.url(
            node,
            &format!(
                "/v1/routing/{}?after_epoch={epoch}&timeout_ms={POLL_WAIT_MS}",
                args.service
            ),
        );
        let (http, token, refused) = (http.clone(), token.clone(), refused.clone());
        set.spawn(async move {
            let seen = watch(&http, &url, token.as_deref(), epoch, deadline).await;
            if seen.is_err() {
                refused.fetch_add(1, Ordering::Relaxed);
            }
            seen
        });
    }
    Ok(set)
}

/// Long-polls until the route's epoch passes `epoch`; polls again when one expires.
async fn watch(
    http: &reqwest::Client,
    url: &str,
    token: Option<&str>,
    epoch: u64,
    deadline: Instant,
) -> Seen {
    while Instant::now() < deadline {
        let mut request = http.get(url);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.map_err(|e| reason_of(&e))?;
        let status = response.status();
        if !status.is_success() {
            return Err(format!("answered {status}"));
        }
        let route: Value = response.json().await.map_err(|e| reason_of(&e))?;
        if route["epoch"].as_u64().unwrap_or(0) > epoch {
            return Ok(Instant::now());
        }
    }
    Err("no change within the run's limit".into())
}

fn reason_of(e: &reqwest::Error) -> String {
    if e.is_connect() {
        "could not connect".into()
    } else if e.is_timeout() {
        "timed out".into()
    } else {
        "connection failed".into()
    }
}

/// Polls the admin listeners' `firebreak_watchers_waiting` until they add up to `want`;
/// fails as soon as a watcher failed.
async fn wait_until_waiting(
    admin: &Client,
    want: u64,
    started: Instant,
    failed: &AtomicU64,
) -> Result<u64> {
    let limit = RUN_LIMIT / 2;
    let hint = "each node serves api.max_watchers long polls, and each watcher is an open file on both ends (ulimit -n)";
    loop {
        let failed = failed.load(Ordering::Relaxed);
        if failed > 0 {
            return Err(fail(
                exit::UNAVAILABLE,
                format!("{failed} of {want} watchers failed before the change (refused or cut off): {hint}"),
            ));
        }
        let mut waiting = 0u64;
        for node in admin.nodes() {
            waiting += scrape_waiting(admin, node).await.unwrap_or(0);
        }
        if waiting >= want {
            return Ok(waiting);
        }
        if started.elapsed() > limit {
            return Err(fail(
                exit::UNAVAILABLE,
                format!("only {waiting} of {want} watchers were waiting after {limit:?}: {hint}"),
            ));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn scrape_waiting(admin: &Client, node: &str) -> Option<u64> {
    let mut request = admin.http().get(admin.url(node, "/metrics"));
    if let Some(token) = admin.token() {
        request = request.bearer_auth(token);
    }
    let text = request.send().await.ok()?.text().await.ok()?;
    let line = text
        .lines()
        .find(|l| l.starts_with("firebreak_watchers_waiting "))?;
    line.rsplit(' ')
        .next()?
        .parse::<f64>()
        .ok()
        .map(|v| v as u64)
}

fn report(
    args: &WatchersArgs,
    site: &str,
    waiting: u64,
    connected: Duration,
    command: Duration,
    sent: Instant,
    seen: &[Seen],
) {
    let mut after = Histogram::<u64>::new(3).expect("3 significant figures is valid");
    let mut failed = std::collections::BTreeMap::<&str, u64>::new();
    for s in seen {
        match s {
            Ok(at) => {
                let _ = after.record(at.saturating_duration_since(sent).as_micros() as u64);
            }
            Err(why) => *failed.entry(why.as_str()).or_default() += 1,
        }
    }
    let within = seen
        .iter()
        .filter(|s| matches!(s, Ok(at) if at.saturating_duration_since(sent) <= VISIBLE_WITHIN))
        .count();
    let ms = |us: u64| us as f64 / 1000.0;
    let result = json!({
        "watchers": args.watchers, "waiting": waiting, "service": args.service, "site": site,
        "connect_secs": connected.as_secs_f64(), "command_ms": command.as_secs_f64() * 1000.0,
        "saw_change": after.len(), "within_1s": within,
        "p50_ms": ms(after.value_at_quantile(0.5)), "p99_ms": ms(after.value_at_quantile(0.99)),
        "max_ms": ms(after.max()), "failed": failed,
    });
    if args.json {
        println!("{result}");
        return;
    }
    println!(
        "{} watchers of {} on {} nodes, all waiting after {:.1} s",
        args.watchers,
        args.service,
        args.nodes.nodes.len(),
        connected.as_secs_f64()
    );
    println!(
        "evacuate {site}: acknowledged after {:.1} ms",
        command.as_secs_f64() * 1000.0
    );
    println!(
        "saw the new epoch: {} of {}, {within} within 1 s; after the command was sent p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        after.len(),
        args.watchers,
        ms(after.value_at_quantile(0.5)),
        ms(after.value_at_quantile(0.99)),
        ms(after.max())
    );
    for (why, n) in failed {
        println!("failed: {n} ({why})");
    }
}
