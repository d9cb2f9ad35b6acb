//! `firebreak bench control`: the control group's state machine at fleet scale, in this
//! process (pure model code, no cluster): `--services` services (half active-active, half
//! active-passive) in every one of `--sites` sites, each instance health-checked.
//!
//! It measures what a control leader does at that size: `decide()` on a quiet fleet and
//! after a site died, applying the failover it decided, the state's encoded size (what a
//! snapshot holds) and the time to encode and decode it, DNS lookups per second, and this
//! process's resident memory with the state in it. The state is built by applying the
//! model's commands directly, so it bypasses the API's limits (a topology command holds
//! at most 96 KiB; the bench reports whether this one would fit).

use std::time::{Duration, Instant};

use anyhow::Result;
use firebreak_model::control::{ControlCommand, ControlState};
use firebreak_model::dns::{self, QueryType};
use firebreak_model::failover::{decide, Actor, ActorKind, AutoCommand};
use firebreak_model::kv::MAX_COMMAND_BYTES;
use firebreak_model::topology::{Topology, MAX_SERVICES};
use firebreak_model::SiteId;

use crate::bench::check_range;

#[derive(clap::Args)]
pub struct ControlArgs {
    #[arg(long, default_value_t = 1000)]
    services: u64,
    #[arg(long, default_value_t = 5)]
    sites: u64,
    /// Times each measured call is repeated.
    #[arg(long, default_value_t = 20)]
    rounds: u64,
}

pub async fn run(args: ControlArgs) -> Result<()> {
    check_range("--services", args.services, 1, 10_000)?;
    check_range("--sites", args.sites, 2, 32)?;
    check_range("--rounds", args.rounds, 1, 1000)?;
    let sites: Vec<SiteId> = (0..args.sites)
        .map(|i| SiteId(format!("site{i}")))
        .collect();
    let topology = topology(&sites, args.services);
    let encoded = serde_json::to_vec(&topology)?.len();
    let mut state = ControlState::default();
    state.apply(&ControlCommand::ApplyTopology {
        topology,
        actor: Actor {
            kind: ActorKind::Manual,
            name: "bench".into(),
        },
        at_ms: 0,
    });
    let now = renew(&mut state, &sites, 0);
    let quiet = time(args.rounds, || decide(&state.failover, now).commands.len());
    // The last site stops renewing: past site_down_after_ms (and the dwell time since the
    // topology) every active-active service drops it.
    let later = renew(&mut state, &sites[..sites.len() - 1], now + 6_000);
    let decision = decide(&state.failover, later);
    let changed = decision.commands.len();
    let site_down = time(args.rounds, || {
        decide(&state.failover, later).commands.len()
    });
    let started = Instant::now();
    for command in decision.commands {
        if let AutoCommand::Route(change) = command {
            state.apply(&ControlCommand::Route(change));
        }
    }
    let applied = started.elapsed();
    let snapshot = serde_json::to_vec(&state)?;
    let encode = time(args.rounds, || {
        serde_json::to_vec(&state).map_or(0, |b| b.len())
    });
    let decode = time(args.rounds, || {
        serde_json::from_slice::<ControlState>(&snapshot).map_or(0, |s| s.members.len())
    });
    let lookups = dns_lookups(&state, args.services);
    println!(
        "control state at {} services x {} sites ({} instances):",
        args.services,
        args.sites,
        args.services * args.sites
    );
    println!(
        "  topology command: {} KiB encoded (one command holds {} KiB; the API takes {} services)",
        encoded / 1024,
        MAX_COMMAND_BYTES / 1024,
        MAX_SERVICES
    );
    println!(
        "  decide(), quiet fleet: p50 {:.2} ms, max {:.2} ms",
        ms(quiet.0),
        ms(quiet.1)
    );
    println!(
        "  decide(), a site down: p50 {:.2} ms, max {:.2} ms ({changed} route changes)",
        ms(site_down.0),
        ms(site_down.1)
    );
    println!("  applying those changes: {:.2} ms", ms(applied));
    println!(
        "  state (snapshot) {} KiB; encode p50 {:.1} ms, decode p50 {:.1} ms",
        snapshot.len() / 1024,
        ms(encode.0),
        ms(decode.0)
    );
    println!("  DNS lookups: {lookups:.0}/s (one thread, no network)");
    println!(
        "  resident memory of this process: {}",
        rss().unwrap_or_else(|| "unknown".into())
    );
    Ok(())
}

/// Half active-active, half active-passive, each with an endpoint in every site.
fn topology(sites: &[SiteId], services: u64) -> Topology {
    let sites_json: Vec<_> = sites
        .iter()
        .map(|s| serde_json::json!({ "name": s.0 }))
        .collect();
    let services_json: Vec<_> = (0..services)
        .map(|i| {
            let endpoints: serde_json::Map<String, serde_json::Value> = sites
                .iter()
                .enumerate()
                .map(|(j, s)| (s.0.clone(), format!("https://10.{j}.{}.{}:8443", i / 250, i % 250 + 1).into()))
                .collect();
            let mode = if i % 2 == 0 { "active-active" } else { "active-passive" };
            serde_json::json!({ "name": format!("svc-{i:05}"), "mode": mode, "endpoints": endpoints })
        })
        .collect();
    serde_json::from_value(serde_json::json!({ "sites": sites_json, "services": services_json }))
        .expect("the bench's topology parses")
}

/// Renews the leases of `sites` every 500 ms up to `until_ms`, from `from_ms`; the time
/// reached.
fn renew(state: &mut ControlState, sites: &[SiteId], until_ms: u64) -> u64 {
    let from = state.clock_ms;
    let end = until_ms.max(from + 2_000);
    let mut at = from;
    while at <= end {
        for site in sites {
            state.apply(&ControlCommand::RenewLease {
                site: site.clone(),
                at_ms: at,
            });
        }
        at += 500;
    }
    end
}

/// Median and longest of `rounds` calls of `f`.
fn time<T>(rounds: u64, mut f: impl FnMut() -> T) -> (Duration, Duration) {
    let mut took: Vec<Duration> = (0..rounds)
        .map(|_| {
            let started = Instant::now();
            std::hint::black_box(f());
            started.elapsed()
        })
        .collect();
    took.sort();
    (took[took.len() / 2], took[took.len() - 1])
}

fn dns_lookups(state: &ControlState, services: u64) -> f64 {
    let started = Instant::now();
    let n = 20_000u64;
    for i in 0..n {
        let name = format!("svc-{:05}.svc.firebreak.", i % services);
        std::hint::black_box(dns::lookup(state, "svc.firebreak.", &name, QueryType::A));
    }
    n as f64 / started.elapsed().as_secs_f64()
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// VmRSS from /proc (Linux).
fn rss() -> Option<String> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    Some(line.trim_start_matches("VmRSS:").trim().to_string())
}
