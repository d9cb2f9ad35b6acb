//! `firebreak topology apply FILE | show`: the sites, services and failover policy.
//!
//! `apply` parses the YAML here first, so a mistake is reported with its file, line and
//! column before anything is sent; the cluster then validates the rules (three voting
//! sites, known sites, sane timings) and refuses with the field at fault.

use std::path::PathBuf;

use anyhow::Result;
use firebreak_model::topology::Topology;
use reqwest::Method;

use crate::client::{Client, Nodes};
use crate::exit::{self, fail};

#[derive(clap::Subcommand)]
pub enum Command {
    /// Validate a topology YAML file and make it the cluster's (needs a token).
    Apply {
        file: PathBuf,
        /// `table` for people, `json` for scripts (the cluster's answer).
        #[arg(long, default_value = "table", value_parser = ["table", "json"])]
        output: String,
        #[command(flatten)]
        nodes: Nodes,
    },
    /// Print the cluster's topology as YAML (or JSON).
    Show {
        #[arg(long, default_value = "yaml", value_parser = ["yaml", "json"])]
        output: String,
        #[command(flatten)]
        nodes: Nodes,
    },
}

/// Reads and validates a topology file, with file, line and column on error.
pub fn load(file: &PathBuf) -> Result<Topology> {
    let text = std::fs::read_to_string(file).map_err(|e| {
        fail(
            exit::USAGE,
            format!("failed to read {}: {e}", file.display()),
        )
    })?;
    let topology: Topology = serde_yaml::from_str(&text).map_err(|e| {
        let at = e
            .location()
            .map_or(String::new(), |l| format!(":{}:{}", l.line(), l.column()));
        fail(exit::USAGE, format!("{}{at}: {e}", file.display()))
    })?;
    topology
        .validate()
        .map_err(|e| fail(exit::USAGE, format!("{}: {e}", file.display())))?;
    Ok(topology)
}

pub async fn run(command: Command) -> Result<()> {
    match command {
        Command::Apply {
            file,
            output,
            nodes,
        } => {
            let topology = load(&file)?;
            let body = serde_json::to_value(&topology)?;
            let answer = Client::admin(&nodes)?
                .send(Method::POST, "/v1/topology", Some(&body))
                .await?;
            if output == "json" {
                println!("{answer}");
            } else {
                let (sites, services) = (topology.sites.len(), topology.services.len());
                println!(
                    "applied {}: {sites} sites, {services} services",
                    file.display()
                );
            }
        }
        Command::Show { output, nodes } => {
            let answer = Client::admin(&nodes)?
                .send(Method::GET, "/v1/topology", None)
                .await?;
            if answer.is_null() {
                return Err(fail(
                    exit::NOT_FOUND,
                    "no topology applied yet: firebreak topology apply FILE",
                ));
            }
            if output == "json" {
                println!("{}", serde_json::to_string_pretty(&answer)?);
            } else {
                print!("{}", serde_yaml::to_string(&answer)?);
            }
        }
    }
    Ok(())
}
