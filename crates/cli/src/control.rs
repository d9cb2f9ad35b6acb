//! `firebreak evacuate | restore | freeze | unfreeze | audit`: the operator's controls.
//!
//! Every control needs an operator token (FIREBREAK_TOKEN or --token-file) and is recorded
//! in the audit log under the token's name. A change a safety rule blocks exits 7 with the
//! rule's name; repeat it with `--override RULE` to go ahead, knowingly and on the record.

use std::time::Duration;

use anyhow::Result;
use reqwest::Method;
use serde_json::json;

use crate::client::{Client, Nodes};
use crate::exit::{self, fail};

#[derive(clap::Args)]
pub struct EvacuateArgs {
    /// The site to take out of every service.
    site: String,
    /// Why (recorded in the audit log).
    #[arg(long)]
    reason: String,
    /// When the evacuation lapses by itself, like 30m, 2h or 3d (default and maximum 72h).
    #[arg(long)]
    expires: Option<String>,
    /// A safety rule to override: min-serving, dwell (repeatable).
    #[arg(long = "override")]
    overrides: Vec<String>,
    /// `table` for people, `json` for scripts (the cluster's answer).
    #[arg(long, default_value = "table", value_parser = ["table", "json"])]
    output: String,
    #[command(flatten)]
    nodes: Nodes,
}

#[derive(clap::Args)]
pub struct RestoreArgs {
    site: String,
    #[arg(long, default_value = "restored by operator")]
    reason: String,
    /// `table` for people, `json` for scripts (the cluster's answer).
    #[arg(long, default_value = "table", value_parser = ["table", "json"])]
    output: String,
    #[command(flatten)]
    nodes: Nodes,
}

#[derive(clap::Args)]
pub struct FreezeArgs {
    #[arg(long)]
    reason: String,
    /// `table` for people, `json` for scripts (the cluster's answer).
    #[arg(long, default_value = "table", value_parser = ["table", "json"])]
    output: String,
    #[command(flatten)]
    nodes: Nodes,
}

#[derive(clap::Args)]
pub struct UnfreezeArgs {
    /// `table` for people, `json` for scripts (the cluster's answer).
    #[arg(long, default_value = "table", value_parser = ["table", "json"])]
    output: String,
    #[command(flatten)]
    nodes: Nodes,
}

#[derive(clap::Args)]
pub struct AuditArgs {
    /// Only entries newer than this, like 10m or 2h.
    #[arg(long)]
    since: Option<String>,
    /// Print JSON lines.
    #[arg(long, default_value = "table", value_parser = ["table", "json"])]
    output: String,
    #[command(flatten)]
    nodes: Nodes,
}

/// Parses `90s`, `30m`, `2h`, `3d`.
pub fn parse_duration(text: &str) -> Result<Duration> {
    let (number, unit) = text.split_at(
        text.find(|c: char| !c.is_ascii_digit())
            .unwrap_or(text.len()),
    );
    let n: u64 = number.parse().map_err(|_| {
        fail(
            exit::USAGE,
            format!("bad duration {text:?}: use 90s, 30m, 2h or 3d"),
        )
    })?;
    let seconds = match unit {
        "s" => n,
        "m" => n * 60,
        "h" => n * 3600,
        "d" => n * 86_400,
        _ => {
            return Err(fail(
                exit::USAGE,
                format!("bad duration {text:?}: use 90s, 30m, 2h or 3d"),
            ))
        }
    };
    Ok(Duration::from_secs(seconds))
}

pub async fn evacuate(args: EvacuateArgs) -> Result<()> {
    let expires = args.expires.as_deref().map(parse_duration).transpose()?;
    for rule in &args.overrides {
        if !["min-serving", "dwell"].contains(&rule.as_str()) {
            return Err(fail(
                exit::USAGE,
                format!(
                    "unknown rule {rule:?}: a manual command can override min-serving or dwell"
                ),
            ));
        }
    }
    let mut body = json!({ "site": args.site, "reason": args.reason, "overrides": args.overrides });
    if let Some(expires) = expires {
        body["expires_in_ms"] = json!(expires.as_millis() as u64);
    }
    let answer = Client::admin(&args.nodes)?
        .send(Method::POST, "/v1/evacuate", Some(&body))
        .await?;
    say(&args.output, &answer, &format!("evacuated {}", args.site));
    Ok(())
}

pub async fn restore(args: RestoreArgs) -> Result<()> {
    let body = json!({ "site": args.site, "reason": args.reason });
    let answer = Client::admin(&args.nodes)?
        .send(Method::POST, "/v1/restore", Some(&body))
        .await?;
    say(
        &args.output,
        &answer,
        &format!(
            "restored {}: automation serves it again once it is up and healthy",
            args.site
        ),
    );
    Ok(())
}

pub async fn freeze(args: FreezeArgs) -> Result<()> {
    let answer = Client::admin(&args.nodes)?
        .send(
            Method::POST,
            "/v1/freeze",
            Some(&json!({ "reason": args.reason })),
        )
        .await?;
    say(&args.output, &answer, "automation frozen");
    Ok(())
}

pub async fn unfreeze(args: UnfreezeArgs) -> Result<()> {
    let answer = Client::admin(&args.nodes)?
        .send(Method::POST, "/v1/unfreeze", Some(&json!({})))
        .await?;
    say(&args.output, &answer, "automation unfrozen");
    Ok(())
}

/// Prints the cluster's answer as JSON, or a sentence for people.
fn say(output: &str, answer: &serde_json::Value, sentence: &str) {
    if output == "json" {
        println!("{answer}");
    } else {
        println!("{sentence}");
    }
}

pub async fn audit(args: AuditArgs) -> Result<()> {
    let since_ms = match &args.since {
        Some(text) => {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)?
                .as_millis() as u64;
            now.saturating_sub(parse_duration(text)?.as_millis() as u64)
        }
        None => 0,
    };
    let answer = Client::admin(&args.nodes)?
        .send(Method::GET, &format!("/v1/audit?since_ms={since_ms}"), None)
        .await?;
    for entry in answer["entries"].as_array().into_iter().flatten() {
        if args.output == "json" {
            println!("{entry}");
            continue;
        }
        let overridden = entry["overridden"].as_array().map_or(String::new(), |r| {
            let names: Vec<&str> = r.iter().filter_map(|x| x.as_str()).collect();
            if names.is_empty() {
                String::new()
            } else {
                format!(" override={}", names.join(","))
            }
        });
        let epoch = entry["epoch"]
            .as_u64()
            .map_or(String::new(), |e| format!(" epoch={e}"));
        println!(
            "#{} {} {}:{} {} {}{epoch}{overridden} {:?}",
            entry["seq"],
            format_ms(entry["at_ms"].as_u64().unwrap_or(0)),
            entry["actor"]["kind"].as_str().unwrap_or("?"),
            entry["actor"]["name"].as_str().unwrap_or("?"),
            entry["action"].as_str().unwrap_or("?"),
            entry["target"].as_str().unwrap_or("?"),
            entry["reason"].as_str().unwrap_or("")
        );
    }
    Ok(())
}

/// Milliseconds since the epoch as UTC `HH:MM:SS.mmm` with the day offset from today.
fn format_ms(ms: u64) -> String {
    let secs = ms / 1000;
    format!(
        "{:02}:{:02}:{:02}.{:03}Z",
        (secs / 3600) % 24,
        (secs / 60) % 60,
        secs % 60,
        ms % 1000
    )
}
