//! Data-driven tests of the failover policy: each `tests/decide/NAME.yaml` is a scenario
//! (a topology and timed steps), and `NAME.out` the expected transcript of what happened:
//! every command automation proposed (and that the state machine then applied), every rule
//! that blocked it, and every operator action's outcome. `UPDATE_GOLDEN=1 cargo test -p
//! firebreak-model --test decide` rewrites the transcripts; review the diff before commit.
//!
//! The runner plays the engine's part: at each decide tick it calls `decide` and applies
//! what comes back through `ControlState::apply`, exactly as the control leader would.

use std::fmt::Write;
use std::path::Path;

use firebreak_model::control::{ControlCommand, ControlResponse, ControlState};
use firebreak_model::failover::{decide, Actor, ActorKind, AutoCommand, Rule};
use firebreak_model::topology::Topology;
use firebreak_model::SiteId;
use serde::Deserialize;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Scenario {
    topology: Topology,
    steps: Vec<Step>,
}

/// One timed step; exactly one action besides `at`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Step {
    at: u64,
    /// Run the clock from `at` to `until`, every `every` ms renewing `renew` and deciding.
    until: Option<u64>,
    #[serde(default = "default_every")]
    every: u64,
    #[serde(default)]
    renew: Vec<SiteId>,
    health: Option<HealthStep>,
    evacuate: Option<EvacuateStep>,
    restore: Option<SiteId>,
    freeze: Option<String>,
    unfreeze: Option<bool>,
}

fn default_every() -> u64 {
    500
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct HealthStep {
    service: String,
    site: SiteId,
    healthy: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EvacuateStep {
    site: SiteId,
    reason: String,
    expires_in_ms: u64,
    #[serde(default)]
    overrides: Vec<Rule>,
}

fn ops() -> Actor {
    Actor {
        kind: ActorKind::Manual,
        name: "ops".into(),
    }
}

fn run(scenario: Scenario) -> String {
    let mut state = ControlState::default();
    let mut out = String::new();
    let topology = ControlCommand::ApplyTopology {
        topology: scenario.topology,
        actor: ops(),
        at_ms: 0,
    };
    writeln!(out, "t=0 topology: {}", outcome(&state.apply(&topology))).unwrap();
    let mut last_blocked = Vec::new();
    for step in scenario.steps {
        if let Some(until) = step.until {
            let mut now = step.at;
            while now <= until {
                for site in &step.renew {
                    state.apply(&ControlCommand::RenewLease {
                        site: site.clone(),
                        at_ms: now,
                    });
                }
                tick(&mut state, now, &mut last_blocked, &mut out);
                now += step.every;
            }
            continue;
        }
        let at_ms = step.at;
        let (label, command) = if let Some(h) = step.health {
            (
                format!("health {} {} {}", h.service, h.site, h.healthy),
                ControlCommand::ReportHealth {
                    service: h.service,
                    site: h.site,
                    healthy: h.healthy,
                    at_ms,
                },
            )
        } else if let Some(e) = step.evacuate {
            let overrides: Vec<&str> = e.overrides.iter().map(|r| r.name()).collect();
            (
                format!("evacuate {} overrides={overrides:?}", e.site),
                ControlCommand::Evacuate {
                    site: e.site,
                    actor: ops(),
                    reason: e.reason,
                    expires_at_ms: at_ms + e.expires_in_ms,
                    overrides: e.overrides,
                    at_ms,
                },
            )
        } else if let Some(site) = step.restore {
            (
                format!("restore {site}"),
                ControlCommand::Restore {
                    site,
                    actor: ops(),
                    reason: "done".into(),
                    at_ms,
                },
            )
        } else if let Some(reason) = step.freeze {
            (
                "freeze".into(),
                ControlCommand::Freeze {
                    actor: ops(),
                    reason,
                    at_ms,
                },
            )
        } else if step.unfreeze.is_some() {
            (
                "unfreeze".into(),
                ControlCommand::Unfreeze {
                    actor: ops(),
                    at_ms,
                },
            )
        } else {
            panic!("step at {at_ms} has no action");
        };
        // As the node does: validate when proposing, then apply what was committed.
        let result = match command.validate() {
            Err(err) => format!("invalid: {err}"),
            Ok(()) => outcome(&state.apply(&command)),
        };
        writeln!(out, "t={at_ms} {label}: {result}").unwrap();
    }
    let f = &state.failover;
    writeln!(out, "-- final routing").unwrap();
    for (service, route) in &f.routing {
        let serving: Vec<&str> = route.serving.iter().map(|s| s.0.as_str()).collect();
        let primary = route
            .primary
            .as_ref()
            .map_or("-".to_string(), |p| p.to_string());
        writeln!(
            out,
            "{service}: serving={serving:?} primary={primary} epoch={}",
            route.epoch
        )
        .unwrap();
    }
    writeln!(out, "-- audit ({} entries)", f.audit.entries.len()).unwrap();
    for e in &f.audit.entries {
        let overridden: Vec<&str> = e.overridden.iter().map(|r| r.name()).collect();
        writeln!(
            out,
            "#{} t={} {:?}:{} {} {} epoch={:?} overridden={overridden:?} reason={:?}",
            e.seq, e.at_ms, e.actor.kind, e.actor.name, e.action, e.target, e.epoch, e.reason
        )
        .unwrap();
    }
    out
}

/// One engine round: decide, apply what it proposes, note what changed or got blocked.
fn tick(
    state: &mut ControlState,
    now: u64,
    last_blocked: &mut Vec<(String, Rule)>,
    out: &mut String,
) {
    let decision = decide(&state.failover, now);
    for command in decision.commands {
        let (label, command) = match command {
            AutoCommand::Route(change) => {
                let serving: Vec<&str> = change.serving.iter().map(|s| s.0.as_str()).collect();
                (
                    format!(
                        "route {} serving={serving:?} ({})",
                        change.service, change.reason
                    ),
                    ControlCommand::Route(change.clone()),
                )
            }
            AutoCommand::Restore {
                site,
                reason,
                at_ms,
            } => (
                format!("restore {site} ({reason})"),
                ControlCommand::Restore {
                    site,
                    actor: Actor::automation(),
                    reason,
                    at_ms,
                },
            ),
        };
        writeln!(
            out,
            "t={now} auto {label}: {}",
            outcome(&state.apply(&command))
        )
        .unwrap();
    }
    if decision.blocked != *last_blocked {
        for (service, rule) in &decision.blocked {
            writeln!(out, "t={now} blocked {service} by {}", rule.name()).unwrap();
        }
        *last_blocked = decision.blocked;
    }
}

fn outcome(response: &ControlResponse) -> String {
    match response {
        ControlResponse::Done { epoch: Some(epoch) } => format!("ok epoch={epoch}"),
        ControlResponse::Done { epoch: None } => "ok".into(),
        ControlResponse::Refused(refusal) => format!("refused: {refusal}"),
        other => format!("{other:?}"),
    }
}

#[test]
fn decide_scenarios_match_their_transcripts() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/decide");
    let update = std::env::var_os("UPDATE_GOLDEN").is_some();
    let mut names: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    names.sort();
    assert!(
        names.len() >= 9,
        "expected the scenario files in {}",
        dir.display()
    );
    let mut failures = Vec::new();
    for path in names {
        let text = std::fs::read_to_string(&path).unwrap();
        let scenario: Scenario =
            serde_yaml::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let got = run(scenario);
        let golden = path.with_extension("out");
        if update {
            std::fs::write(&golden, &got).unwrap();
            continue;
        }
        let want = std::fs::read_to_string(&golden).unwrap_or_default();
        if got != want {
            failures.push(format!(
                "{}:\n--- want\n{want}\n--- got\n{got}",
                path.display()
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "transcripts differ (UPDATE_GOLDEN=1 to accept):\n{}",
        failures.join("\n")
    );
}
