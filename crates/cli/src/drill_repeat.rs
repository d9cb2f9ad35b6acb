//! `firebreak drill PLAYBOOK --repeat N`: one playbook N times in a row, to tell a verdict
//! you can trust from one that flakes. Each run has its own seed (the playbook's, then
//! the next ones) unless `--seed` gives one for all; each prints one line, and the
//! summary names, for every failed run, its seed, the checker and its first violation,
//! and the command that runs it again.
//!
//! A run that could not run (exit 10 on its own: sites that never came up) is reported
//! and the campaign goes on; an interrupt stops it. Exit status: 9 if any run failed its
//! expectations, else 10 if any could not run, else 0.

use std::path::Path;

use anyhow::Result;
use firebreak_chaos::report::Report;
use firebreak_chaos::Playbook;

use crate::drill::{options, Args};
use crate::exit::{self, fail};

/// Most runs one `--repeat` makes (a bound on a campaign's length, not a judgement).
pub const MAX_REPEAT: u32 = 1_000;

/// What one run came to.
enum Run {
    Judged(Box<Report>),
    NotRun(String),
}

/// Parses `--repeat`'s count: 1 to [`MAX_REPEAT`].
pub fn parse_count(text: &str) -> Result<u32, String> {
    match text.trim().parse::<u32>() {
        Ok(n) if (1..=MAX_REPEAT).contains(&n) => Ok(n),
        _ => Err(format!(
            "{text:?} is not a count of runs; give 1 to {MAX_REPEAT}, e.g. --repeat 20"
        )),
    }
}

/// The seed of run `i` (from 1): `--seed` for every run if given, else the playbook's
/// seed for the first and the next ones after it.
fn seed_of(given: Option<u64>, playbook: &Playbook, i: u32) -> u64 {
    given.unwrap_or_else(|| playbook.workload.seed.wrapping_add(u64::from(i - 1)))
}

pub async fn run(args: &Args, path: &Path, playbook: Playbook, count: u32) -> Result<()> {
    let mut runs = Vec::new();
    for i in 1..=count {
        let seed = seed_of(args.seed, &playbook, i);
        let mut options = options(args, path.to_path_buf(), playbook.clone(), None)?;
        options.seed = Some(seed);
        options.out = args.out.as_ref().map(|o| o.join(format!("run-{i}")));
        eprintln!("run {i}/{count}: seed {seed}");
        let outcome = firebreak_chaos::run(options, crate::node::shutdown_signal()).await;
        let (run, logs) = match outcome {
            Ok(outcome) if outcome.interrupted => {
                println!("{}", summary(&playbook.name, path, &runs));
                return Err(fail(
                    exit::DRILL_NOT_RUN,
                    format!("interrupted in run {i} of {count}: no verdict for it; every process it started is stopped"),
                ));
            }
            Ok(outcome) => {
                let logs = outcome.sites_dir.filter(|_| !outcome.report.passed);
                (Run::Judged(Box::new(outcome.report)), logs)
            }
            Err(err) => (Run::NotRun(crate::drill::to_exit(err).to_string()), None),
        };
        println!("{}", run_line(i, count, seed, &run));
        if let Some(dir) = logs {
            println!("  site logs: {}", dir.display());
        }
        runs.push((seed, run));
    }
    println!("{}", summary(&playbook.name, path, &runs));
    let (_, failed, not_run) = tally(&runs);
    match (failed > 0, not_run > 0) {
        (true, _) => Err(fail(
            exit::DRILL_FAILED,
            format!("{}: some runs failed their expectations", playbook.name),
        )),
        (false, true) => Err(fail(
            exit::DRILL_NOT_RUN,
            format!("{}: some runs could not run", playbook.name),
        )),
        (false, false) => Ok(()),
    }
}

/// How many runs passed, failed and could not run.
fn tally(runs: &[(u64, Run)]) -> (usize, usize, usize) {
    let passed = runs
        .iter()
        .filter(|(_, r)| matches!(r, Run::Judged(report) if report.passed))
        .count();
    let not_run = runs
        .iter()
        .filter(|(_, r)| matches!(r, Run::NotRun(_)))
        .count();
    (passed, runs.len() - passed - not_run, not_run)
}

/// One run in a line.
fn run_line(i: u32, count: u32, seed: u64, run: &Run) -> String {
    let verdict = match run {
        Run::Judged(report) => crate::drill_line::verdict(report),
        Run::NotRun(why) => format!("COULD NOT RUN  {why}"),
    };
    format!("run {i}/{count} (seed {seed}): {verdict}")
}

/// The campaign's last lines: the count of each outcome, then one line per run that did
/// not pass: its seed, the first failed checker and violation, and how to run it again.
fn summary(name: &str, path: &Path, runs: &[(u64, Run)]) -> String {
    let (passed, failed, not_run) = tally(runs);
    let mut text = format!(
        "{name}: {} runs: {passed} passed, {failed} failed, {not_run} could not run",
        runs.len()
    );
    for (i, (seed, run)) in runs.iter().enumerate() {
        let (why, repeat) = match run {
            Run::Judged(report) if report.passed => continue,
            Run::Judged(report) => (
                crate::drill_line::first_failure(report),
                report.repeat.clone(),
            ),
            Run::NotRun(why) => (
                format!("could not run: {why}"),
                format!("firebreak drill {} --seed {seed}", path.display()),
            ),
        };
        text.push_str(&format!(
            "\n  run {} (seed {seed}): {why}\n    REPRODUCE WITH: {repeat}",
            i + 1
        ));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    const PLAYBOOK: &str = "name: t\ndescription: d\ntopology:\n  sites: [a, b, c]\n  services: [{ name: login, mode: active-active }]\nworkload: { seed: 41, rate_per_sec: 1, duration_secs: 20, users: 2, mix: { login: 1 } }\ntimeline: []\nexpect: {}\n";

    #[test]
    fn the_count_is_bounded_and_the_error_says_what_to_give() {
        assert_eq!(parse_count("20"), Ok(20));
        for bad in ["0", "1001", "-1", "many"] {
            let err = parse_count(bad).unwrap_err();
            assert!(err.contains("1 to 1000"), "{bad}: {err}");
        }
    }

    #[test]
    fn each_run_has_its_own_seed_unless_one_is_given() {
        let playbook = Playbook::parse("t.yaml", PLAYBOOK).unwrap();
        let seeds: Vec<u64> = (1..=3).map(|i| seed_of(None, &playbook, i)).collect();
        assert_eq!(seeds, [41, 42, 43]);
        assert_eq!(seed_of(Some(7), &playbook, 3), 7);
    }

    #[test]
    fn the_summary_names_every_run_that_did_not_pass_and_how_to_run_it_again() {
        let runs = vec![
            (41, Run::NotRun("the sites elected no leaders".into())),
            (42, Run::NotRun("ports taken".into())),
        ];
        let text = summary("t", Path::new("playbooks/t.yaml"), &runs);
        assert!(
            text.starts_with("t: 2 runs: 0 passed, 0 failed, 2 could not run"),
            "{text}"
        );
        assert!(
            text.contains("run 2 (seed 42): could not run: ports taken"),
            "{text}"
        );
        assert!(
            text.contains("REPRODUCE WITH: firebreak drill playbooks/t.yaml --seed 42"),
            "{text}"
        );
    }
}
