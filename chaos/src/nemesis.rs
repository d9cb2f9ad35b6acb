//! The randomized nemesis: a fault schedule drawn from a seed, within bounds.
//!
//! ```text
//!   seed ─► StdRng ─► repeat: wait 1 to max_gap s, pick a fault kind (of those asked),
//!                             a duration (min to max, healed before `heal_by`), and a
//!                             target that keeps the faulted sites within the bound
//!        ─► timeline steps, each healing by itself (a duration on every step)
//! ```
//!
//! Bounds, all checked for 10,000 seeds by the tests:
//! - faults start at `start_secs` or later (the steady state before the faults is
//!   measured) and every one has healed by `heal_by_secs` (the recovery and the final
//!   read-back see a whole cluster);
//! - at most `max_faulted_sites` sites have a fault at any moment (a minority unless asked),
//!   and a site has one fault at a time; a surge (which faults no site) runs alone among
//!   surges;
//! - each fault lasts `min_fault_secs` to `max_fault_secs`; a surge multiplies the rate by
//!   2 to `max_surge_factor`; a link flaps with a period of 2 to 4 s.
//!
//! The same seed, sites, faults and bounds give the same schedule, byte for byte: a drill
//! prints it at the start and stores it in the report, and `--seed N` repeats it.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::playbook::{FaultKind, Playbook, ServiceKind, Step};

/// Most faults one schedule holds.
pub const MAX_FAULTS: usize = 50;

/// A kind of fault the nemesis may draw (`--faults`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Fault {
    /// SIGKILL one process (restarted after the duration) or a whole site (power-cycled).
    Kill,
    /// SIGSTOP one process for the duration.
    Pause,
    /// Cut one site off from the others (netns driver).
    Partition,
    /// A site loses power with its unsynced writes (root and /dev/fuse).
    PowerLoss,
    /// A site's link goes down and up (netns driver).
    Flap,
    /// The workload's rate multiplied.
    Surge,
}

impl Fault {
    pub const ALL: [Fault; 6] = [
        Fault::Kill,
        Fault::Pause,
        Fault::Partition,
        Fault::PowerLoss,
        Fault::Flap,
        Fault::Surge,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Fault::Kill => "kill",
            Fault::Pause => "pause",
            Fault::Partition => "partition",
            Fault::PowerLoss => "power-loss",
            Fault::Flap => "flap",
            Fault::Surge => "surge",
        }
    }

    /// Parses `kill,pause,...`; the error names the unknown kind and the known ones.
    pub fn parse_list(list: &str) -> Result<Vec<Fault>, String> {
        let mut faults = Vec::new();
        for name in list.split(',').map(str::trim).filter(|n| !n.is_empty()) {
            let fault = Fault::ALL
                .into_iter()
                .find(|f| f.name() == name)
                .ok_or_else(|| {
                    let known: Vec<&str> = Fault::ALL.iter().map(|f| f.name()).collect();
                    format!(
                        "--faults: no fault kind {name:?}; the kinds are {}",
                        known.join(", ")
                    )
                })?;
            if !faults.contains(&fault) {
                faults.push(fault);
            }
        }
        if faults.is_empty() {
            return Err("--faults: name at least one fault kind".into());
        }
        Ok(faults)
    }
}

/// Where and how long faults may be.
#[derive(Debug, Clone, PartialEq)]
pub struct Bounds {
    pub start_secs: f64,
    pub heal_by_secs: f64,
    pub min_fault_secs: f64,
    pub max_fault_secs: f64,
    /// Longest wait between one fault's start and the next.
    pub max_gap_secs: f64,
    pub max_faulted_sites: usize,
    pub max_surge_factor: u32,
}

impl Bounds {
    /// The bounds for a playbook: faults after its steady-state window plus a second, all
    /// healed a window plus 8 s before the workload ends (time to fail back and be steady),
    /// a minority of its sites at once unless `max_faulted_sites` says otherwise.
    pub fn for_playbook(playbook: &Playbook, max_faulted_sites: Option<usize>) -> Bounds {
        let window = f64::from(playbook.steady_state.window_secs);
        let sites = playbook.topology.sites.len();
        Bounds {
            start_secs: window + 1.0,
            heal_by_secs: f64::from(playbook.workload.duration_secs) - window - 8.0,
            min_fault_secs: 2.0,
            max_fault_secs: 8.0,
            max_gap_secs: 4.0,
            max_faulted_sites: max_faulted_sites.unwrap_or((sites - 1) / 2).min(sites - 1),
            max_surge_factor: 4,
        }
    }
}

/// A fault drawn and when its target is free again.
struct Active {
    until: f64,
    site: Option<String>,
}

/// Draws the schedule of `seed` over `sites` (running `services`; a process fault picks
/// the node or one of the services that runs as a process).
pub fn schedule(
    seed: u64,
    sites: &[String],
    services: &[ServiceKind],
    faults: &[Fault],
    bounds: &Bounds,
) -> Vec<Step> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut steps = Vec::new();
    let mut active: Vec<Active> = Vec::new();
    // The first fault leaves room for itself before `heal_by`.
    let first_gap = bounds
        .max_gap_secs
        .min(bounds.heal_by_secs - bounds.start_secs - bounds.min_fault_secs)
        .max(0.0);
    let mut at = tenths(bounds.start_secs + rng.gen_range(0.0..=first_gap));
    while steps.len() < MAX_FAULTS && !faults.is_empty() {
        active.retain(|a| a.until > at);
        let room = bounds.heal_by_secs - at;
        if room < bounds.min_fault_secs {
            break;
        }
        let fault = faults[rng.gen_range(0..faults.len())];
        let duration =
            tenths(rng.gen_range(bounds.min_fault_secs..=bounds.max_fault_secs.min(room)));
        let site = match fault {
            Fault::Surge if active.iter().any(|a| a.site.is_none()) => None,
            Fault::Surge => Some(None),
            _ => free_site(&mut rng, sites, &active, bounds).map(Some),
        };
        let Some(site) = site else {
            // Nothing free for it now: try again once the next fault heals.
            at = active
                .iter()
                .map(|a| a.until)
                .fold(f64::INFINITY, f64::min)
                .max(at + 0.1);
            at = tenths(at);
            continue;
        };
        steps.push(step(
            &mut rng,
            fault,
            site.as_deref(),
            services,
            at,
            duration,
            bounds,
        ));
        active.push(Active {
            until: at + duration,
            site,
        });
        at = tenths(at + rng.gen_range(1.0..=bounds.max_gap_secs));
    }
    steps
}

/// A site with no fault, if the bound allows one more faulted site.
fn free_site(
    rng: &mut StdRng,
    sites: &[String],
    active: &[Active],
    bounds: &Bounds,
) -> Option<String> {
    let busy: Vec<&str> = active.iter().filter_map(|a| a.site.as_deref()).collect();
    if busy.len() >= bounds.max_faulted_sites {
        return None;
    }
    let free: Vec<&String> = sites
        .iter()
        .filter(|s| !busy.contains(&s.as_str()))
        .collect();
    (!free.is_empty()).then(|| free[rng.gen_range(0..free.len())].clone())
}

/// The timeline step of one drawn fault (`site` is `None` for a surge).
fn step(
    rng: &mut StdRng,
    fault: Fault,
    site: Option<&str>,
    services: &[ServiceKind],
    at_secs: f64,
    duration: f64,
    bounds: &Bounds,
) -> Step {
    let site = site.unwrap_or("workload").to_string();
    // `kv` is the nodes' own API: no process of its own to kill or pause.
    let processes: Vec<&ServiceKind> = services.iter().filter(|s| s.is_process()).collect();
    let pick = rng.gen_range(0..=processes.len());
    let process = format!(
        "{site}/{}",
        processes.get(pick).map_or("node", |s| s.name())
    );
    let (kind, target) = match fault {
        Fault::Kill if rng.gen_bool(0.5) => (FaultKind::SitePowerCycle, site),
        Fault::Kill => (FaultKind::ProcessKill, process),
        Fault::Pause => (FaultKind::ProcessPause, process),
        Fault::Partition => (FaultKind::Partition, site),
        Fault::PowerLoss => (FaultKind::PowerLoss, site),
        Fault::Flap => (FaultKind::LinkFlap, site),
        Fault::Surge => (FaultKind::Surge, site),
    };
    let mut step = Step::new(at_secs, kind, target);
    step.duration_secs = Some(duration);
    match fault {
        Fault::Flap => step.period_secs = Some(f64::from(rng.gen_range(2..=4u32)).min(duration)),
        Fault::Surge => step.factor = Some(rng.gen_range(2..=bounds.max_surge_factor.max(2))),
        _ => {}
    }
    step
}

/// Rounded to a tenth of a second, so the printed schedule is what runs.
fn tenths(secs: f64) -> f64 {
    (secs * 10.0).round() / 10.0
}

/// One line per step, as a drill prints the schedule.
pub fn describe(steps: &[Step]) -> Vec<String> {
    steps
        .iter()
        .map(|s| {
            let extra = match (s.factor, s.period_secs) {
                (Some(f), _) => format!(" x{f}"),
                (_, Some(p)) => format!(" every {p} s"),
                _ => String::new(),
            };
            format!(
                "{:>5.1} s  {} {}{extra} for {:.1} s",
                s.at_secs,
                s.fault.name(),
                s.target,
                s.duration_secs.unwrap_or(0.0)
            )
        })
        .collect()
}

#[cfg(test)]
mod tests;
