//! `firebreak bench kv`: puts over HTTP/JSON with N concurrent connections, against
//! firebreak or, for comparison on the same machine, etcd's JSON gateway.
//!
//! Each connection loops: put a fresh key, record the latency, repeat; on an error it moves
//! to the next node after a short pause. The run stops after `--duration-secs` or
//! `--max-requests`, whichever comes first. It prints throughput, p50/p99/max latency, and
//! the longest gap between two acknowledged writes: run it while killing the leader to
//! measure the leader-loss gap (scripts/failover-gap.sh does that). The other benches
//! have their own modules: `bench_dns`, `bench_failover`, `bench_control` and
//! `bench_watchers`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Result;
use base64::Engine;
use hdrhistogram::Histogram;
use serde_json::json;

use crate::client::Nodes;
use crate::exit::{self, fail};

/// Longest run allowed, for every bench.
pub(crate) const MAX_DURATION_SECS: u64 = 600;
/// Most connections allowed.
const MAX_CONNECTIONS: usize = 1024;
/// Pause after a failed request before trying the next node.
const ERROR_PAUSE: Duration = Duration::from_millis(10);

#[derive(clap::Subcommand)]
pub enum Command {
    /// Drive puts and report throughput and latency.
    Kv(KvArgs),
    /// Ask one node's DNS server as fast as it answers; report answers per second.
    Dns(crate::bench_dns::DnsArgs),
    /// One client's view of a failover, through the gateways or through DNS.
    Failover(crate::bench_failover::FailoverArgs),
    /// The control state machine at fleet scale (in this process): decide(), snapshot
    /// size and time, DNS lookups, memory.
    Control(crate::bench_control::ControlArgs),
    /// The routing long-poll's fan-out: how soon every watcher sees a routing change.
    Watchers(crate::bench_watchers::WatchersArgs),
}

#[derive(clap::Args)]
pub struct KvArgs {
    #[command(flatten)]
    nodes: Nodes,
    /// `firebreak` (PUT /v1/kv) or `etcd` (POST /v3/kv/put, etcd's JSON gateway).
    #[arg(long, default_value = "firebreak", value_parser = ["firebreak", "etcd"])]
    target: String,
    /// Concurrent connections (each with one request in flight).
    #[arg(long, default_value_t = 64)]
    connections: usize,
    /// Stop after this many seconds.
    #[arg(long, default_value_t = 10)]
    duration_secs: u64,
    /// Stop after this many requests in all.
    #[arg(long, default_value_t = 10_000_000)]
    max_requests: u64,
    /// Size of each value in bytes.
    #[arg(long, default_value_t = 100)]
    value_bytes: usize,
    /// Print the result as JSON.
    #[arg(long)]
    json: bool,
}

struct Worker {
    latencies: Histogram<u64>,
    acks: Vec<Duration>,
    failed: u64,
}

pub async fn run(command: Command) -> Result<()> {
    let args = match command {
        Command::Kv(args) => args,
        Command::Dns(args) => return crate::bench_dns::run(args).await,
        Command::Failover(args) => return crate::bench_failover::run(args).await,
        Command::Control(args) => return crate::bench_control::run(args).await,
        Command::Watchers(args) => return crate::bench_watchers::run(args).await,
    };
    check_range(
        "--connections",
        args.connections as u64,
        1,
        MAX_CONNECTIONS as u64,
    )?;
    check_range("--duration-secs", args.duration_secs, 1, MAX_DURATION_SECS)?;
    // firebreak's keys need a credential (an operator token or certificate); etcd is
    // measured the way it is set up by default, in plain HTTP without auth.
    let (tls, token) = match args.target.as_str() {
        "etcd" => (firebreak_tls::ClientTls::plaintext_for_debugging(), None),
        _ => (args.nodes.tls()?, args.nodes.token()?),
    };
    let http = tls
        .apply(reqwest::Client::builder())
        .timeout(Duration::from_millis(args.nodes.timeout_ms))
        .pool_max_idle_per_host(args.connections)
        .tcp_nodelay(true)
        .build()?;
    let issued = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let deadline = start + Duration::from_secs(args.duration_secs);
    let value = "x".repeat(args.value_bytes);
    let tasks: Vec<_> = (0..args.connections)
        .map(|id| {
            let (http, tls, token, nodes, issued, value, target) = (
                http.clone(),
                tls.clone(),
                token.clone(),
                args.nodes.nodes.clone(),
                issued.clone(),
                value.clone(),
                args.target.clone(),
            );
            let max = args.max_requests;
            tokio::spawn(async move {
                let mut worker = Worker {
                    latencies: Histogram::new(3).expect("3 significant figures is valid"),
                    acks: Vec::new(),
                    failed: 0,
                };
                let mut node = id % nodes.len();
                let mut seq = 0u64;
                while Instant::now() < deadline && issued.fetch_add(1, Ordering::Relaxed) < max {
                    seq += 1;
                    let key = format!("bench/{id}/{seq}");
                    let sent = Instant::now();
                    let ok = put(
                        &http,
                        &target,
                        &tls.url(&nodes[node], ""),
                        token.as_deref(),
                        &key,
                        &value,
                    )
                    .await;
                    if ok {
                        worker
                            .latencies
                            .record(sent.elapsed().as_micros() as u64)
                            .expect("histogram auto-resizes");
                        worker.acks.push(start.elapsed());
                    } else {
                        worker.failed += 1;
                        node = (node + 1) % nodes.len();
                        tokio::time::sleep(ERROR_PAUSE).await;
                    }
                }
                worker
            })
        })
        .collect();
    let mut latencies = Histogram::<u64>::new(3).expect("valid");
    let mut acks = Vec::new();
    let mut failed = 0;
    for task in tasks {
        let worker = task.await?;
        latencies
            .add(&worker.latencies)
            .expect("same-precision histograms add");
        acks.extend(worker.acks);
        failed += worker.failed;
    }
    let elapsed = start.elapsed().as_secs_f64();
    acks.sort();
    let longest_gap = acks
        .windows(2)
        .map(|w| w[1] - w[0])
        .max()
        .unwrap_or_default();
    let ok = latencies.len();
    let ms = |q: f64| latencies.value_at_quantile(q) as f64 / 1000.0;
    let report = json!({
        "target": args.target, "connections": args.connections, "seconds": elapsed,
        "ok": ok, "failed": failed, "puts_per_second": ok as f64 / elapsed,
        "latency_ms": { "p50": ms(0.5), "p99": ms(0.99), "max": latencies.max() as f64 / 1000.0 },
        "longest_gap_ms": longest_gap.as_secs_f64() * 1000.0,
    });
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!(
            "target {} | {} connections | {:.1} s | {ok} ok, {failed} failed",
            args.target, args.connections, elapsed
        );
        println!("throughput {:.0} puts/s", ok as f64 / elapsed);
        println!(
            "latency    p50 {:.1} ms  p99 {:.1} ms  max {:.1} ms",
            ms(0.5),
            ms(0.99),
            latencies.max() as f64 / 1000.0
        );
        println!(
            "longest gap between acknowledged puts: {:.0} ms",
            longest_gap.as_secs_f64() * 1000.0
        );
    }
    if ok == 0 {
        return Err(fail(
            exit::UNAVAILABLE,
            "no put succeeded: is the cluster up at --nodes?",
        ));
    }
    Ok(())
}

/// One put to `base` (`https://host:port`), with the operator token if there is one.
async fn put(
    http: &reqwest::Client,
    target: &str,
    base: &str,
    token: Option<&str>,
    key: &str,
    value: &str,
) -> bool {
    let mut request = if target == "etcd" {
        let b64 = base64::engine::general_purpose::STANDARD;
        http.post(format!("{base}/v3/kv/put"))
            .json(&json!({ "key": b64.encode(key), "value": b64.encode(value) }))
    } else {
        http.put(format!("{base}/v1/kv"))
            .json(&json!({ "key": key, "value": value }))
    };
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    matches!(request.send().await, Ok(r) if r.status().is_success())
}

/// A usage error unless `min <= value <= max`, naming the flag.
pub(crate) fn check_range(flag: &str, value: u64, min: u64, max: u64) -> Result<()> {
    if value < min || value > max {
        return Err(fail(exit::USAGE, format!("{flag} must be {min} to {max}")));
    }
    Ok(())
}
