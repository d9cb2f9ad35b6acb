//! `firebreak drill [BASE] --random --seed N | --seeds A..B`: drills whose fault timeline
//! the randomized nemesis draws from the seed (`firebreak_chaos::nemesis`), on a base
//! playbook (the built-in playbooks/random.yaml unless one is named).
//!
//! Each seed's schedule is printed before it runs (`--check` prints it and runs nothing)
//! and stored in its report, and
//! `--seed N` with the same base, faults and driver draws it again. With `--seeds`, the
//! seeds run one after another, each with one line, then a one-line summary; the exit
//! status is 9 if any failed.

use std::ops::RangeInclusive;
use std::path::PathBuf;

use anyhow::Result;
use firebreak_chaos::nemesis::{self, Bounds, Fault};
use firebreak_chaos::playbook::Driver;
use firebreak_chaos::report::Report;
use firebreak_chaos::Playbook;

use crate::drill::{execute, options, to_exit, Args};
use crate::exit::{self, fail};

/// The base of `--random` without a playbook.
const BUILT_IN: &str = include_str!("../../../playbooks/random.yaml");
const BUILT_IN_NAME: &str = "playbooks/random.yaml";
/// Most seeds one `--seeds` runs.
const MAX_SEEDS: u64 = 1_000;

/// Parses `FIRST..LAST` (both run) or one seed.
pub fn parse_seeds(text: &str) -> Result<RangeInclusive<u64>, String> {
    let parse = |n: &str| {
        n.trim()
            .parse::<u64>()
            .map_err(|_| format!("{n:?} is not a seed; write FIRST..LAST, e.g. 1..20"))
    };
    let range = match text.split_once("..") {
        Some((first, last)) => parse(first)?..=parse(last.trim_start_matches('='))?,
        None => parse(text)?..=parse(text)?,
    };
    let count = range.end().checked_sub(*range.start()).map(|d| d + 1);
    match count {
        Some(n) if n <= MAX_SEEDS => Ok(range),
        Some(n) => Err(format!("{n} seeds; run at most {MAX_SEEDS} at once")),
        None => Err(format!("{text}: the first seed is above the last")),
    }
}

pub async fn run(args: Args) -> Result<()> {
    let (path, mut base) = base_playbook(&args)?;
    if let Some(driver) = args.driver {
        base.driver = driver.driver();
    }
    let faults = match &args.faults {
        Some(list) => Fault::parse_list(list).map_err(|e| fail(exit::USAGE, e))?,
        None => default_faults(base.driver),
    };
    let bounds = bounds(&args, &base)?;
    let seeds: Vec<u64> = match &args.seeds {
        Some(range) => range.clone().collect(),
        None => vec![args.seed.unwrap_or(base.workload.seed)],
    };
    let many = args.seeds.is_some();
    let mut failed = Vec::new();
    for &seed in &seeds {
        let steps = nemesis::schedule(
            seed,
            &base.topology.sites,
            &base.services(),
            &faults,
            &bounds,
        );
        let playbook = base.with_timeline(steps).map_err(|e| {
            fail(exit::DRILL_NOT_RUN, format!("seed {seed} drew a timeline the playbook refuses ({e}); this is a bug in the nemesis"))
        })?;
        if args.check {
            println!("{}", schedule_text(seed, &playbook));
            continue;
        }
        eprintln!("{}", schedule_text(seed, &playbook));
        let repeat = repeat(&args, &path, seed, &faults);
        let mut options = options(&args, path.clone(), playbook, Some(repeat))?;
        options.seed = Some(seed);
        options.out = args.out.as_ref().map(|o| match many {
            true => o.join(format!("seed-{seed}")),
            false => o.clone(),
        });
        let out = options.out.clone();
        let outcome = execute(options, out.as_deref()).await?;
        if many {
            println!("{}", one_line(seed, &outcome.report));
        } else {
            print!("{}", outcome.report.render_terminal());
            if let Some(out) = &out {
                println!("report: {}", out.join("report.html").display());
            }
        }
        if !outcome.report.passed {
            failed.push(seed);
        }
    }
    if many && !args.check {
        println!("{}", summary(seeds.len(), &failed));
    }
    match failed.is_empty() {
        true => Ok(()),
        false => Err(fail(
            exit::DRILL_FAILED,
            format!("random drills failed their expectations: seeds {failed:?}"),
        )),
    }
}

/// The last line of `--seeds`: how many passed, and which failed.
fn summary(seeds: usize, failed: &[u64]) -> String {
    let list: Vec<String> = failed.iter().map(u64::to_string).collect();
    let failed_list = match list.is_empty() {
        true => String::new(),
        false => format!(" (seeds {})", list.join(", ")),
    };
    format!(
        "{seeds} seeds: {} passed, {} failed{failed_list}",
        seeds - failed.len(),
        failed.len()
    )
}

/// The named base playbook, or the built-in one.
fn base_playbook(args: &Args) -> Result<(PathBuf, Playbook)> {
    match &args.playbook {
        Some(path) => Ok((path.clone(), Playbook::load(path).map_err(to_exit)?)),
        None => {
            let playbook = Playbook::parse(BUILT_IN_NAME, BUILT_IN).map_err(to_exit)?;
            Ok((PathBuf::from(BUILT_IN_NAME), playbook))
        }
    }
}

/// Kill, pause and surge work with any driver; partition and flap need netns. Power loss
/// needs root and /dev/fuse, so it is drawn only when asked.
fn default_faults(driver: Driver) -> Vec<Fault> {
    let mut faults = vec![Fault::Kill, Fault::Pause, Fault::Surge];
    if driver == Driver::Netns {
        faults.extend([Fault::Partition, Fault::Flap]);
    }
    faults
}

/// The nemesis' bounds for the base, checked against the command line.
fn bounds(args: &Args, base: &Playbook) -> Result<Bounds> {
    let sites = base.topology.sites.len();
    if let Some(max) = args.max_faulted_sites.filter(|m| *m == 0 || *m >= sites) {
        return Err(fail(
            exit::USAGE,
            format!(
                "--max-faulted-sites {max}: a drill of {sites} sites can fault 1 to {} at once",
                sites - 1
            ),
        ));
    }
    let bounds = Bounds::for_playbook(base, args.max_faulted_sites);
    if bounds.heal_by_secs - bounds.start_secs < bounds.min_fault_secs {
        return Err(fail(
            exit::USAGE,
            format!(
                "{}: its workload of {} s leaves no room for faults: they start after {} s and must heal {} s before the end; give it a longer workload.duration_secs",
                base.name,
                base.workload.duration_secs,
                bounds.start_secs,
                f64::from(base.workload.duration_secs) - bounds.heal_by_secs
            ),
        ));
    }
    Ok(bounds)
}

/// The drawn schedule, as printed before the seed runs (and by `--check`).
fn schedule_text(seed: u64, playbook: &Playbook) -> String {
    let faults = match playbook.timeline.len() {
        1 => "1 fault".to_string(),
        n => format!("{n} faults"),
    };
    let mut text = format!("seed {seed}: {faults} drawn for {}:", playbook.name);
    for line in nemesis::describe(&playbook.timeline) {
        text.push_str(&format!("\n  {line}"));
    }
    text
}

/// The command that draws and runs this seed again.
fn repeat(args: &Args, path: &std::path::Path, seed: u64, faults: &[Fault]) -> String {
    let names: Vec<&str> = faults.iter().map(|f| f.name()).collect();
    let base = match &args.playbook {
        Some(_) => format!("{} ", path.display()),
        None => String::new(),
    };
    let mut command = format!(
        "firebreak drill {base}--random --seed {seed} --faults {}",
        names.join(",")
    );
    if let Some(driver) = args.driver {
        command.push_str(&format!(" --driver {}", driver.driver().name()));
    }
    if let Some(max) = args.max_faulted_sites {
        command.push_str(&format!(" --max-faulted-sites {max}"));
    }
    command
}

/// One seed's verdict in a line.
fn one_line(seed: u64, report: &Report) -> String {
    format!("seed {seed}: {}", crate::drill_line::verdict(report))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeds_parse_as_inclusive_ranges_within_a_bound() {
        assert_eq!(parse_seeds("1..20").unwrap(), 1..=20);
        assert_eq!(parse_seeds("7").unwrap(), 7..=7);
        assert_eq!(parse_seeds("3..=4").unwrap(), 3..=4);
        assert!(parse_seeds("20..1")
            .unwrap_err()
            .contains("first seed is above the last"));
        assert!(parse_seeds("1..5000").unwrap_err().contains("at most 1000"));
        assert!(parse_seeds("a..b").unwrap_err().contains("is not a seed"));
    }

    #[test]
    fn the_summary_names_the_failed_seeds() {
        assert_eq!(summary(20, &[]), "20 seeds: 20 passed, 0 failed");
        assert_eq!(
            summary(5, &[2, 4]),
            "5 seeds: 3 passed, 2 failed (seeds 2, 4)"
        );
    }

    #[test]
    fn the_built_in_base_is_valid_and_leaves_room_for_faults() {
        let base = Playbook::parse(BUILT_IN_NAME, BUILT_IN).unwrap();
        let b = Bounds::for_playbook(&base, None);
        assert!(b.heal_by_secs - b.start_secs >= 30.0, "{b:?}");
    }
}
