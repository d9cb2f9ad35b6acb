//! `firebreak ca init` and `firebreak cert issue node|service|operator`: the cluster's CA
//! and the certificates that say who may do what (see docs/security.md).
//!
//! ```text
//!   firebreak ca init --cluster prod --dir ca/
//!   firebreak cert issue node --ca ca/ --id 1 --host 10.0.1.5 --out tls/
//!   firebreak cert issue service payments --ca ca/ --host 10.0.1.6 --out tls/
//!   firebreak cert issue operator alice --ca ca/ --out tls/
//! ```

use std::path::PathBuf;

use anyhow::Result;
use firebreak_tls::pki::{self, Validity};
use firebreak_tls::{Identity, Role};

use crate::exit::{self, fail};

#[derive(clap::Subcommand)]
pub enum CaCommand {
    /// Make a new CA for a cluster: `ca.pem` (give it to every node and client) and
    /// `ca.key` (mode 0600; whoever holds it can mint any identity).
    Init {
        /// The cluster's name, as in every node's config.
        #[arg(long)]
        cluster: String,
        /// Where to write the CA; an existing CA there is never replaced.
        #[arg(long, default_value = "ca")]
        dir: PathBuf,
        /// Days the CA is valid.
        #[arg(long, default_value_t = 3650)]
        days: i64,
    },
}

#[derive(clap::Subcommand)]
pub enum CertCommand {
    /// Issue a certificate.
    #[command(subcommand)]
    Issue(Kind),
}

#[derive(clap::Subcommand)]
pub enum Kind {
    /// A node's certificate: serves its listeners and authenticates it to its peers.
    Node {
        /// The node's id, as in its config.
        #[arg(long)]
        id: u64,
        /// IP addresses and DNS names the node is reached at (repeat or comma-separate).
        #[arg(long = "host", required = true, value_delimiter = ',')]
        hosts: Vec<String>,
        #[command(flatten)]
        common: Common,
    },
    /// A service's certificate: reads and writes the keys under `<name>/` only, and serves
    /// the gateways over TLS.
    Service {
        name: String,
        /// IP addresses and DNS names the service is reached at (repeat or comma-separate).
        #[arg(long = "host", value_delimiter = ',')]
        hosts: Vec<String>,
        #[command(flatten)]
        common: Common,
    },
    /// An operator's certificate: operator commands and every key, audited by name.
    Operator {
        name: String,
        #[command(flatten)]
        common: Common,
    },
}

#[derive(clap::Args)]
pub struct Common {
    /// The CA directory (`ca.pem`, `ca.key`).
    #[arg(long, default_value = "ca")]
    ca: PathBuf,
    /// Where to write `<name>.pem` and `<name>.key`.
    #[arg(long, default_value = ".")]
    out: PathBuf,
    /// Days the certificate is valid; rotate well before (nodes reload changed files).
    #[arg(long, default_value_t = 90)]
    days: i64,
}

pub fn ca(command: CaCommand) -> Result<()> {
    let CaCommand::Init { cluster, dir, days } = command;
    firebreak_model::ids::check_name("--cluster", "cluster", &cluster, 63)
        .map_err(|e| fail(exit::USAGE, e.to_string()))?;
    let issued = pki::init_ca(&dir, &cluster, Validity::days(days))
        .map_err(|e| fail(exit::USAGE, e.to_string()))?;
    println!(
        "made the CA of cluster {cluster}: {} (share) and {} (keep secret)",
        issued.cert.display(),
        issued.key.display()
    );
    Ok(())
}

pub fn cert(command: CertCommand) -> Result<()> {
    let CertCommand::Issue(kind) = command;
    let (role, hosts, common, stem) = match kind {
        Kind::Node { id, hosts, common } => (Role::Node(id), hosts, common, format!("node-{id}")),
        Kind::Service {
            name,
            hosts,
            common,
        } => (Role::Service(name.clone()), hosts, common, name),
        Kind::Operator { name, common } => (Role::Operator(name.clone()), vec![], common, name),
    };
    if let Role::Service(name) | Role::Operator(name) = &role {
        firebreak_model::ids::check_name("NAME", "certificate holder", name, 63)
            .map_err(|e| fail(exit::USAGE, e.to_string()))?;
    }
    let cluster = pki::ca_cluster(&common.ca).map_err(|e| fail(exit::USAGE, e.to_string()))?;
    let identity = Identity { cluster, role };
    let issued = pki::issue(
        &common.ca,
        &identity,
        &hosts,
        Validity::days(common.days),
        &common.out,
        &stem,
    )
    .map_err(|e| fail(exit::USAGE, e.to_string()))?;
    println!(
        "issued {identity} for {} days: {} and {}",
        common.days,
        issued.cert.display(),
        issued.key.display()
    );
    Ok(())
}
