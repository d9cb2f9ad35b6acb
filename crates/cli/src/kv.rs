//! `firebreak kv get|put|del|range|txn`: the state group's key-value store, for operators.

use std::io::Read;
use std::path::PathBuf;

use anyhow::{Context, Result};
use reqwest::Method;
use serde_json::{json, Value};

use crate::client::{Client, Nodes};
use crate::exit::{self, fail};

#[derive(clap::Subcommand)]
pub enum Command {
    /// Print a key's value (linearizable unless --stale).
    Get {
        key: String,
        /// Read this node's replica without asking the leader: fast, maybe behind.
        #[arg(long)]
        stale: bool,
        /// Print the entry with its revisions as JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        nodes: Nodes,
    },
    /// Set a key.
    Put {
        key: String,
        value: String,
        #[command(flatten)]
        nodes: Nodes,
    },
    /// Remove a key.
    Del {
        key: String,
        #[command(flatten)]
        nodes: Nodes,
    },
    /// List keys under a prefix as JSON lines.
    Range {
        #[arg(default_value = "")]
        prefix: String,
        #[arg(long, default_value_t = 1000)]
        limit: usize,
        #[arg(long)]
        stale: bool,
        #[command(flatten)]
        nodes: Nodes,
    },
    /// Run a transaction from a JSON file (or - for stdin); see the README for its shape.
    Txn {
        file: PathBuf,
        #[command(flatten)]
        nodes: Nodes,
    },
}

fn encode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn consistency(stale: bool) -> &'static str {
    if stale {
        "&consistency=stale"
    } else {
        ""
    }
}

pub async fn run(command: Command) -> Result<()> {
    match command {
        Command::Get {
            key,
            stale,
            json,
            nodes,
        } => {
            let answer = Client::new(&nodes)?
                .send(
                    Method::GET,
                    &format!("/v1/kv?key={}{}", encode(&key), consistency(stale)),
                    None,
                )
                .await?;
            let entry = &answer["entry"];
            if entry.is_null() {
                return Err(fail(
                    exit::NOT_FOUND,
                    format!("key {key:?} not found (revision {})", answer["revision"]),
                ));
            }
            if json {
                println!("{}", serde_json::to_string_pretty(&answer)?);
            } else {
                println!("{}", entry["value"].as_str().unwrap_or_default());
            }
        }
        Command::Put { key, value, nodes } => {
            let answer = Client::new(&nodes)?
                .send(
                    Method::PUT,
                    "/v1/kv",
                    Some(&json!({ "key": key, "value": value })),
                )
                .await?;
            println!("OK revision {}", answer["put"]["revision"]);
        }
        Command::Del { key, nodes } => {
            let answer = Client::new(&nodes)?
                .send(
                    Method::DELETE,
                    &format!("/v1/kv?key={}", encode(&key)),
                    None,
                )
                .await?;
            let deleted = !answer["delete"]["prev"].is_null();
            println!(
                "{} revision {}",
                if deleted { "deleted" } else { "absent" },
                answer["delete"]["revision"]
            );
        }
        Command::Range {
            prefix,
            limit,
            stale,
            nodes,
        } => {
            let path = format!(
                "/v1/kv?prefix={}&limit={limit}{}",
                encode(&prefix),
                consistency(stale)
            );
            let answer = Client::new(&nodes)?.send(Method::GET, &path, None).await?;
            for entry in answer["entries"].as_array().into_iter().flatten() {
                println!("{entry}");
            }
            if answer["more"].as_bool() == Some(true) {
                eprintln!("(more keys match; raise --limit)");
            }
        }
        Command::Txn { file, nodes } => {
            let text = if file.as_os_str() == "-" {
                let mut text = String::new();
                std::io::stdin().read_to_string(&mut text)?;
                text
            } else {
                std::fs::read_to_string(&file)
                    .with_context(|| format!("failed to read {}", file.display()))?
            };
            let body: Value = serde_json::from_str(&text).map_err(|e| {
                fail(
                    exit::USAGE,
                    format!(
                        "{}:{}:{}: not JSON: {e}",
                        file.display(),
                        e.line(),
                        e.column()
                    ),
                )
            })?;
            let answer = Client::new(&nodes)?
                .send(Method::POST, "/v1/txn", Some(&body))
                .await?;
            println!("{}", serde_json::to_string_pretty(&answer)?);
        }
    }
    Ok(())
}
