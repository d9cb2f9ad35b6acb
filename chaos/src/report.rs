//! The report of a drill: the verdict table in the terminal, and in `--out DIR` the
//! history (JSON lines), a JSON report and one self-contained HTML report.
//!
//! ```text
//!   history + judgement ─► Report ─► terminal: verdict table, failed checks, repeat command
//!                                 ─► DIR/report.json
//!                                 ─► DIR/report.html: per service, operations per second
//!                                    (ok, failed/unknown) and latency, fault windows shaded
//!                                    (SVG drawn by plotters, inlined: no network needed);
//!                                    with idle push clients, the reconnect storm per 100 ms
//!                                 ─► DIR/history.jsonl
//! ```

use std::fmt::Write as _;
use std::path::Path;

use plotters::prelude::*;
use serde::Serialize;

use crate::checkers::availability::ServiceFigures;
use crate::checkers::storm::StormFigures;
use crate::checkers::{Finding, Judgement};
use crate::history::{workload_start_ms, Event, FaultPhase};
use crate::playbook::{Playbook, ServiceKind};

/// Violations per checker shown in the terminal; report.json has up to
/// [`crate::checkers::MAX_LISTED`].
const TERMINAL_VIOLATIONS: usize = 5;

/// A fault as the drill ran it, in seconds of the workload.
#[derive(Debug, Clone, Serialize)]
pub struct FaultWindow {
    pub fault: String,
    pub target: String,
    pub start_secs: f64,
    /// When its effect ended; `None` if it lasted to the end.
    pub end_secs: Option<f64>,
}

/// What one site's power loss threw away: proof that the fault bit.
#[derive(Debug, Clone, Serialize)]
pub struct PowerLossRow {
    pub site: String,
    pub at_secs: f64,
    /// Unsynced bytes discarded.
    pub bytes: u64,
    /// Files and directories whose unsynced content or names were discarded.
    pub files: u64,
}

impl PowerLossRow {
    fn describe(&self) -> String {
        format!(
            "power loss at {}, {:.1} s: discarded {} unsynced bytes ({:.1} MB) in {} files",
            self.site,
            self.at_secs,
            self.bytes,
            self.bytes as f64 / 1e6,
            self.files
        )
    }
}

/// The power losses of a drill, in order.
pub fn power_losses(events: &[Event]) -> Vec<PowerLossRow> {
    let start = workload_start_ms(events);
    events
        .iter()
        .filter_map(|e| match e {
            Event::PowerLoss {
                at_ms,
                site,
                bytes,
                files,
            } => Some(PowerLossRow {
                site: site.clone(),
                at_secs: at_ms.saturating_sub(start) as f64 / 1000.0,
                bytes: *bytes,
                files: *files,
            }),
            _ => None,
        })
        .collect()
}

/// One line of the verdict table.
#[derive(Debug, Clone, Serialize)]
pub struct ServiceRow {
    pub service: ServiceKind,
    /// Longest failover, seconds; `None` if the service never steadied again.
    pub failover_secs: Option<f64>,
    pub availability: f64,
    pub operations: u64,
    pub lost: u64,
    /// Duplicated or reordered deliveries (messaging), balances showing extra movement
    /// (payments).
    pub duplicated: u64,
    pub unknown: u64,
    pub latency_p50_ms: u64,
    pub latency_p99_ms: u64,
}

/// The reconnect storm: idle push clients through one site that a fault hit.
#[derive(Debug, Clone, Serialize)]
pub struct Storm {
    /// The site they connected through.
    pub through: String,
    /// When the first fault there started, in seconds of the workload.
    pub fault_secs: f64,
    /// Per kind of client: firebreak's, then the naive one.
    pub clients: Vec<StormFigures>,
}

/// Everything a drill concluded.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub playbook: String,
    pub description: String,
    pub seed: u64,
    /// The command that runs this drill again.
    pub repeat: String,
    pub passed: bool,
    /// Why the drill stopped early, if it did (a stop condition, an interrupt).
    pub aborted: Option<String>,
    pub duration_secs: u32,
    pub services: Vec<ServiceRow>,
    pub findings: Vec<Finding>,
    /// The faults the drill planned (a random drill's schedule), as timeline steps.
    pub timeline: Vec<crate::playbook::Step>,
    pub faults: Vec<FaultWindow>,
    /// What each power loss discarded.
    pub power_losses: Vec<PowerLossRow>,
    /// Processes that died without the drill killing them, and other oddities.
    pub incidents: Vec<String>,
    /// The reconnect storm, when the playbook has idle push clients.
    pub storm: Option<Storm>,
    /// Each Raft group's voters and learners as they changed.
    pub membership: Vec<crate::membership_timeline::MembershipRow>,
    #[serde(skip)]
    pub figures: Vec<ServiceFigures>,
}

impl Report {
    pub fn new(
        playbook: &Playbook,
        seed: u64,
        repeat: String,
        events: &[Event],
        judgement: Judgement,
        aborted: Option<String>,
        incidents: Vec<String>,
    ) -> Self {
        let finding = |name: &str| judgement.findings.iter().find(|f| f.checker == name);
        let count = |name: &str, key: &str| finding(name).map_or(0, |f| f.get(key));
        let services = judgement
            .services
            .iter()
            .map(|f| {
                let (lost, duplicated) = match f.service {
                    ServiceKind::Messaging => (
                        count("messaging", "lost"),
                        count("messaging", "duplicated") + count("messaging", "reordered"),
                    ),
                    ServiceKind::Payments => {
                        (count("payments", "lost"), count("payments", "balances_off"))
                    }
                    ServiceKind::Login => (count("login", "invalid"), 0),
                    ServiceKind::Kv => (count("kv", "non_linearizable_keys"), 0),
                };
                ServiceRow {
                    service: f.service,
                    failover_secs: f.failover_ms.map(|ms| ms as f64 / 1000.0),
                    availability: f.availability,
                    operations: f.operations,
                    lost,
                    duplicated,
                    unknown: f.unknown,
                    latency_p50_ms: f.latency_p50_ms,
                    latency_p99_ms: f.latency_p99_ms,
                }
            })
            .collect();
        let passed = judgement.passed() && aborted.is_none();
        let storm = playbook.workload.idle_push.as_ref().map(|idle| Storm {
            through: idle.through.clone(),
            fault_secs: playbook.idle_fault_secs().unwrap_or(0.0),
            clients: judgement.storm.clone(),
        });
        Self {
            playbook: playbook.name.clone(),
            description: playbook.description.trim().to_string(),
            seed,
            repeat,
            passed,
            aborted,
            duration_secs: playbook.workload.duration_secs,
            services,
            findings: judgement.findings,
            timeline: playbook.timeline.clone(),
            faults: fault_windows(events),
            power_losses: power_losses(events),
            incidents,
            storm,
            membership: crate::membership_timeline::rows(events),
            figures: judgement.services,
        }
    }

    /// The verdict as the terminal shows it.
    pub fn render_terminal(&self) -> String {
        let mut out = String::new();
        let verdict = if self.passed { "PASSED" } else { "FAILED" };
        let _ = writeln!(out, "\ndrill {}: {verdict}", self.playbook);
        if let Some(reason) = &self.aborted {
            let _ = writeln!(out, "aborted: {reason}");
        }
        let mut table = comfy_table::Table::new();
        table.load_preset(comfy_table::presets::UTF8_BORDERS_ONLY);
        table.set_header([
            "service",
            "failover",
            "availability",
            "ops",
            "lost",
            "duplicated",
            "unknown",
            "p99",
        ]);
        for row in &self.services {
            table.add_row([
                row.service.to_string(),
                row.failover_secs
                    .map_or("never recovered".into(), |s| format!("{s:.1} s")),
                format!("{:.2}%", row.availability * 100.0),
                row.operations.to_string(),
                row.lost.to_string(),
                row.duplicated.to_string(),
                row.unknown.to_string(),
                format!("{} ms", row.latency_p99_ms),
            ]);
        }
        let _ = writeln!(out, "{table}");
        if let Some(storm) = &self.storm {
            out.push_str(&storm.render_terminal());
        }
        for loss in &self.power_losses {
            let _ = writeln!(out, "{}", loss.describe());
        }
        let membership = crate::membership_timeline::lines(&self.membership);
        if !membership.is_empty() {
            let _ = writeln!(out, "membership over time:\n  {}", membership.join("\n  "));
        }
        for f in &self.findings {
            let mark = if f.passed { "ok  " } else { "FAIL" };
            let counts: Vec<String> = f.counts.iter().map(|(k, v)| format!("{k} {v}")).collect();
            let counts = match counts.is_empty() {
                true => String::new(),
                false => format!(" ({})", counts.join(", ")),
            };
            let _ = writeln!(out, "{mark} {}: {}{counts}", f.checker, f.property);
            for v in f.violations.iter().take(TERMINAL_VIOLATIONS) {
                let _ = writeln!(out, "       - {v}");
            }
            let more = f.more_violations + f.violations.len().saturating_sub(TERMINAL_VIOLATIONS);
            if more > 0 {
                let _ = writeln!(out, "       - and {more} more (see report.json)");
            }
        }
        for incident in &self.incidents {
            let _ = writeln!(out, "note: {incident}");
        }
        let _ = writeln!(out, "seed {}; repeat with: {}", self.seed, self.repeat);
        out
    }

    /// Writes report.json, report.html and history.jsonl into `dir`.
    pub fn write(&self, dir: &Path, events: &[Event]) -> std::io::Result<()> {
        std::fs::create_dir_all(dir)?;
        crate::history::write_jsonl(events, &dir.join("history.jsonl"))?;
        std::fs::write(
            dir.join("report.json"),
            serde_json::to_string_pretty(self).expect("a report serializes"),
        )?;
        std::fs::write(dir.join("report.html"), self.render_html())
    }

    /// One self-contained HTML page: verdict, table, findings, a timeline per service.
    pub fn render_html(&self) -> String {
        let mut html = String::new();
        let verdict = if self.passed { "PASSED" } else { "FAILED" };
        let color = if self.passed { "#1a7f37" } else { "#cf222e" };
        let _ = write!(
            html,
            "<!doctype html><html><head><meta charset=\"utf-8\"><title>drill {name}: {verdict}</title>\
             <style>body{{font-family:sans-serif;max-width:1000px;margin:2em auto;color:#222}}\
             table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:4px 8px;text-align:right}}\
             th{{background:#f4f4f4}}.fail{{color:#cf222e}}.ok{{color:#1a7f37}}code{{background:#f4f4f4;padding:2px 4px}}</style>\
             </head><body><h1>drill {name}: <span style=\"color:{color}\">{verdict}</span></h1><p>{desc}</p>\
             <p>seed {seed}; repeat with <code>{repeat}</code></p>",
            name = escape(&self.playbook),
            desc = escape(&self.description),
            seed = self.seed,
            repeat = escape(&self.repeat),
        );
        if let Some(reason) = &self.aborted {
            let _ = write!(html, "<p class=\"fail\">aborted: {}</p>", escape(reason));
        }
        html.push_str("<table><tr><th>service</th><th>failover</th><th>availability</th><th>ops</th><th>lost</th><th>duplicated</th><th>unknown</th><th>p50</th><th>p99</th></tr>");
        for r in &self.services {
            let _ = write!(
                html,
                "<tr><td>{}</td><td>{}</td><td>{:.2}%</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{} ms</td><td>{} ms</td></tr>",
                r.service,
                r.failover_secs.map_or("never recovered".into(), |s| format!("{s:.1} s")),
                r.availability * 100.0,
                r.operations,
                r.lost,
                r.duplicated,
                r.unknown,
                r.latency_p50_ms,
                r.latency_p99_ms
            );
        }
        html.push_str("</table>");
        if let Some(storm) = &self.storm {
            html.push_str(&storm.render_html(self.duration_secs));
        }
        html.push_str("<h2>Checks</h2><ul>");
        for f in &self.findings {
            let class = if f.passed { "ok" } else { "fail" };
            let _ = write!(
                html,
                "<li class=\"{class}\"><b>{}</b>: {}",
                f.checker,
                escape(f.property)
            );
            if !f.violations.is_empty() {
                html.push_str("<ul>");
                for v in &f.violations {
                    let _ = write!(html, "<li>{}</li>", escape(v));
                }
                html.push_str("</ul>");
            }
            html.push_str("</li>");
        }
        html.push_str("</ul><h2>Faults</h2><ul>");
        for w in &self.faults {
            let end = w.end_secs.map_or("the end".into(), |e| format!("{e:.1} s"));
            let _ = write!(
                html,
                "<li>{} {}: {:.1} s to {end}</li>",
                escape(&w.fault),
                escape(&w.target),
                w.start_secs
            );
        }
        for loss in &self.power_losses {
            let _ = write!(html, "<li>{}</li>", escape(&loss.describe()));
        }
        html.push_str("</ul>");
        let membership = crate::membership_timeline::lines(&self.membership);
        if !membership.is_empty() {
            html.push_str("<h2>Membership over time</h2><ul>");
            for line in membership {
                let _ = write!(html, "<li>{}</li>", escape(&line));
            }
            html.push_str("</ul>");
        }
        html.push_str("<h2>Timelines</h2><p>Operations per second by invoke time (green ok, red failed or unknown) and latency of the ok ones; fault windows shaded.</p>");
        for figures in &self.figures {
            html.push_str(&self.chart(figures));
        }
        html.push_str("</body></html>\n");
        html
    }

    fn chart(&self, figures: &ServiceFigures) -> String {
        let mut svg = String::new();
        if let Err(e) = draw(&mut svg, figures, &self.faults, self.duration_secs) {
            return format!(
                "<p class=\"fail\">chart of {} failed: {}</p>",
                figures.service,
                escape(&e.to_string())
            );
        }
        svg
    }
}

impl Storm {
    /// Idle push clients: through, fault time, and per kind the survivors' peak reconnect
    /// rate and the time until all were back.
    fn header(&self) -> String {
        let clients: u64 = self.clients.iter().map(|c| c.clients).sum();
        format!(
            "reconnect storm: {clients} idle push clients through {}, which a fault hit at {:.1} s",
            self.through, self.fault_secs
        )
    }

    fn cells(figures: &StormFigures) -> [String; 6] {
        [
            figures.kind.name().to_string(),
            format!("{} ({} disrupted)", figures.clients, figures.disrupted),
            format!(
                "{} at +{:.1} s",
                figures.peak_per_100ms,
                figures.peak_at_ms as f64 / 1000.0
            ),
            figures.attempts.to_string(),
            {
                let s = |ms: Option<u64>| {
                    ms.map_or("-".into(), |ms| format!("{:.2}", ms as f64 / 1000.0))
                };
                match figures.back_ms {
                    Some(_) => format!(
                        "{} / {} / {} s",
                        s(figures.back_p50_ms),
                        s(figures.back_p99_ms),
                        s(figures.back_ms)
                    ),
                    None => "not all back".into(),
                }
            },
            format!("{} of {}", figures.got_probe, figures.clients),
        ]
    }

    const HEADERS: [&'static str; 6] = [
        "client",
        "clients",
        "peak reconnects / 100 ms at survivors",
        "reconnects at survivors",
        "back after: half / 99% / all",
        "got the next message",
    ];

    fn render_terminal(&self) -> String {
        let mut table = comfy_table::Table::new();
        table.load_preset(comfy_table::presets::UTF8_BORDERS_ONLY);
        table.set_header(Self::HEADERS);
        for figures in &self.clients {
            table.add_row(Self::cells(figures));
        }
        format!("{}\n{table}\n", self.header())
    }

    fn render_html(&self, duration: u32) -> String {
        let mut html = format!(
            "<h2>Reconnect storm</h2><p>{}.</p><table><tr>",
            escape(&self.header())
        );
        for h in Self::HEADERS {
            let _ = write!(html, "<th>{}</th>", escape(h));
        }
        html.push_str("</tr>");
        for figures in &self.clients {
            html.push_str("<tr>");
            for cell in Self::cells(figures) {
                let _ = write!(html, "<td>{}</td>", escape(&cell));
            }
            html.push_str("</tr>");
        }
        html.push_str("</table>");
        let mut svg = String::new();
        match draw_storm(&mut svg, &self.clients, duration) {
            Ok(()) => html.push_str(&svg),
            Err(e) => {
                let _ = write!(
                    html,
                    "<p class=\"fail\">chart of the storm failed: {}</p>",
                    escape(&e.to_string())
                );
            }
        }
        html
    }
}

type DrawResult = Result<(), Box<dyn std::error::Error>>;

/// Reconnects per 100 ms at the survivors, one line per kind of client.
fn draw_storm(svg: &mut String, clients: &[StormFigures], duration: u32) -> DrawResult {
    // Up to a second after the last client was back (all of the series if some never were).
    let windows = clients
        .iter()
        .map(|c| {
            c.back_ms
                .map_or(c.per_100ms.len(), |ms| ms as usize / 100 + 10)
        })
        .max()
        .unwrap_or(0)
        .max(10)
        .min(duration as usize * 10);
    let end = windows as f64 / 10.0;
    let most = clients
        .iter()
        .map(|c| c.peak_per_100ms)
        .max()
        .unwrap_or(1)
        .max(1) as f64;
    let root = SVGBackend::with_string(svg, (960, 260)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            "reconnects per 100 ms at the surviving sites, from the fault on",
            ("sans-serif", 16),
        )
        .margin(8)
        .x_label_area_size(34)
        .y_label_area_size(56)
        .build_cartesian_2d(0.0..end, 0.0..most * 1.1)?;
    chart
        .configure_mesh()
        .x_desc("seconds after the fault")
        .y_label_formatter(&|y| format!("{y:.0}"))
        .disable_mesh()
        .draw()?;
    for (figures, color) in clients.iter().zip([BLUE, RED]) {
        let points = figures
            .per_100ms
            .iter()
            .take(windows)
            .enumerate()
            .map(|(i, n)| (i as f64 / 10.0 + 0.05, *n as f64));
        chart
            .draw_series(LineSeries::new(points, color.stroke_width(2)))?
            .label(figures.kind.name())
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 16, y)], color));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()?;
    root.present()?;
    Ok(())
}

fn draw(
    svg: &mut String,
    figures: &ServiceFigures,
    faults: &[FaultWindow],
    duration: u32,
) -> DrawResult {
    let end = f64::from(duration.max(1));
    let root = SVGBackend::with_string(svg, (960, 420)).into_drawing_area();
    root.fill(&WHITE)?;
    let (top, bottom) = root.split_vertically(230);
    let per_second = |f: fn(&crate::checkers::availability::Second) -> u64| {
        figures
            .seconds
            .iter()
            .enumerate()
            .map(move |(i, s)| (i as f64 + 0.5, f(s) as f64))
    };
    let most = figures
        .seconds
        .iter()
        .map(|s| s.ok.max(s.failed + s.unknown))
        .max()
        .unwrap_or(1)
        .max(1) as f64;
    let mut ops = ChartBuilder::on(&top)
        .caption(
            format!("{}: operations per second", figures.service),
            ("sans-serif", 16),
        )
        .margin(8)
        .x_label_area_size(34)
        .y_label_area_size(48)
        .build_cartesian_2d(0.0..end, 0.0..most * 1.1)?;
    ops.configure_mesh()
        .x_desc("seconds")
        .disable_mesh()
        .draw()?;
    shade(&mut ops, faults, end, most * 1.1)?;
    ops.draw_series(LineSeries::new(per_second(|s| s.ok), GREEN.stroke_width(2)))?
        .label("ok")
        .legend(|(x, y)| PathElement::new([(x, y), (x + 16, y)], GREEN));
    ops.draw_series(LineSeries::new(
        per_second(|s| s.failed + s.unknown),
        RED.stroke_width(2),
    ))?
    .label("failed or unknown")
    .legend(|(x, y)| PathElement::new([(x, y), (x + 16, y)], RED));
    ops.configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()?;
    let slowest = figures
        .seconds
        .iter()
        .map(|s| s.max_ms)
        .max()
        .unwrap_or(1)
        .max(1) as f64;
    let mut latency = ChartBuilder::on(&bottom)
        .caption(
            format!("{}: latency (ms) of ok operations", figures.service),
            ("sans-serif", 16),
        )
        .margin(8)
        .x_label_area_size(34)
        .y_label_area_size(48)
        .build_cartesian_2d(0.0..end, 0.0..slowest * 1.1)?;
    latency
        .configure_mesh()
        .x_desc("seconds")
        .disable_mesh()
        .draw()?;
    shade(&mut latency, faults, end, slowest * 1.1)?;
    latency
        .draw_series(LineSeries::new(
            per_second(|s| s.p50_ms),
            BLUE.stroke_width(2),
        ))?
        .label("p50")
        .legend(|(x, y)| PathElement::new([(x, y), (x + 16, y)], BLUE));
    latency
        .draw_series(LineSeries::new(per_second(|s| s.max_ms), MAGENTA))?
        .label("max")
        .legend(|(x, y)| PathElement::new([(x, y), (x + 16, y)], MAGENTA));
    latency
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()?;
    root.present()?;
    Ok(())
}

fn shade<DB: DrawingBackend>(
    chart: &mut ChartContext<
        '_,
        DB,
        Cartesian2d<plotters::coord::types::RangedCoordf64, plotters::coord::types::RangedCoordf64>,
    >,
    faults: &[FaultWindow],
    end: f64,
    top: f64,
) -> Result<(), DrawingAreaErrorKind<DB::ErrorType>> {
    for w in faults {
        let stop = w.end_secs.unwrap_or(end).max(w.start_secs + 0.2);
        chart.draw_series(std::iter::once(Rectangle::new(
            [(w.start_secs, 0.0), (stop, top)],
            RGBColor(255, 140, 0).mix(0.18).filled(),
        )))?;
    }
    Ok(())
}

/// Fault windows from the history's fault events, in seconds of the workload.
pub fn fault_windows(events: &[Event]) -> Vec<FaultWindow> {
    let start = workload_start_ms(events);
    let secs = |ms: u64| ms.saturating_sub(start) as f64 / 1000.0;
    let mut windows: Vec<FaultWindow> = Vec::new();
    for event in events {
        let Event::Fault {
            at_ms,
            fault,
            target,
            phase,
        } = event
        else {
            continue;
        };
        match phase {
            FaultPhase::Start => windows.push(FaultWindow {
                fault: fault.clone(),
                target: target.clone(),
                start_secs: secs(*at_ms),
                end_secs: None,
            }),
            FaultPhase::End => {
                if let Some(w) = windows
                    .iter_mut()
                    .rev()
                    .find(|w| w.fault == *fault && w.target == *target && w.end_secs.is_none())
                {
                    w.end_secs = Some(secs(*at_ms));
                }
            }
        }
    }
    windows
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}
