//! `firebreak serve messaging|payments|login`: run a reference service against its site's
//! node (the site's node first in `--nodes`, then the others). The services keep no state
//! of their own: everything is in the state group.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context, Result};
use firebreak_services::{login, messaging, payments};

use crate::client::DEFAULT_NODES;
use crate::exit::{self, fail};

#[derive(clap::Subcommand)]
pub enum Command {
    /// Conversations with sequence numbers and push streams (server-sent events).
    Messaging {
        #[command(flatten)]
        common: Common,
        /// Open push streams at once; beyond it, 503 with Retry-After.
        #[arg(long, default_value_t = 10_000)]
        max_streams: usize,
        /// Keepalive interval on idle streams, in seconds. At 900 s an idle stream costs
        /// about 0.4 KB an hour on the wire (README); short values are for drills.
        #[arg(long, default_value_t = 900)]
        keepalive_secs: u64,
        /// The window, in milliseconds, over which the clients of a stream that ends should
        /// spread their reconnects: size it to the fleet, e.g. clients per site divided by
        /// the reconnects per second the surviving sites can take. Unset: each client's own
        /// backoff (a 1 s first window in firebreak's client).
        #[arg(long, value_parser = clap::value_parser!(u64).range(100..=300_000))]
        reconnect_window_ms: Option<u64>,
    },
    /// Accounts and transfers with idempotency keys.
    Payments {
        #[command(flatten)]
        common: Common,
        /// The site this instance serves: it then refuses a write at a routing epoch whose
        /// primary is another site (epoch fencing, docs/traffic.md).
        #[arg(long)]
        site: Option<String>,
    },
    /// Accounts with argon2 password hashes, and sessions valid in every site.
    Login {
        #[command(flatten)]
        common: Common,
        /// Session lifetime, in seconds.
        #[arg(long, default_value_t = 86_400)]
        session_ttl_secs: u64,
        /// How often expired sessions are swept out of the state group, in seconds.
        #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..=86_400))]
        sweep_interval_secs: u64,
        /// Password hashes computed at once (each takes a core and 19 MiB for tens of
        /// milliseconds); beyond it a login waits up to 200 ms, then 503. Default: the
        /// cores this process may use. Where
        /// several instances or services share a host, give each its share, or login
        /// alone takes every core under a surge.
        #[arg(long, value_parser = clap::value_parser!(u64).range(1..=256))]
        max_hashing: Option<u64>,
        /// Niceness of the hashing threads, 0 to 19: where cores are contended, a hash
        /// yields to cheap work (request handling, other services, the nodes), so a surge
        /// of logins cannot starve them. With a spare core it changes nothing.
        #[arg(long, env = "FIREBREAK_HASHING_NICE", default_value_t = login::DEFAULT_HASHING_NICE, value_parser = clap::value_parser!(i32).range(0..=19))]
        hashing_nice: i32,
    },
}

#[derive(clap::Args)]
pub struct Common {
    /// Where the service listens.
    #[arg(long)]
    listen: SocketAddr,
    /// Nodes to store state through: this site's node first, then the others.
    #[arg(long, env = "FIREBREAK_NODES", default_value = DEFAULT_NODES, value_delimiter = ',')]
    nodes: Vec<String>,
    /// Requests served at once; beyond it, 503 with Retry-After (shedding early keeps
    /// latency bounded under a surge instead of queueing into timeouts).
    #[arg(long, default_value_t = 64)]
    max_concurrent: usize,
    /// The cluster CA's certificate.
    #[arg(
        long,
        env = "FIREBREAK_CA",
        required_unless_present = "plaintext_for_debugging"
    )]
    ca: Option<std::path::PathBuf>,
    /// This service's certificate (`firebreak cert issue service NAME`): it grants the
    /// keys under `NAME/`. Reloaded when the file changes.
    #[arg(
        long,
        env = "FIREBREAK_CERT",
        required_unless_present = "plaintext_for_debugging"
    )]
    cert: Option<std::path::PathBuf>,
    /// Its key.
    #[arg(
        long,
        env = "FIREBREAK_KEY",
        required_unless_present = "plaintext_for_debugging"
    )]
    key: Option<std::path::PathBuf>,
    /// Plain HTTP to the nodes, for nodes run with `tls.plaintext_for_debugging` only.
    #[arg(long)]
    plaintext_for_debugging: bool,
}

impl Common {
    /// TLS with this service's certificate (watched for rotation): to the nodes (which
    /// must answer with a node certificate of the service's cluster), and for the gateways
    /// that call it. Plain HTTP both ways with `--plaintext-for-debugging`.
    fn tls(&self) -> Result<(firebreak_tls::ClientTls, ServerTls)> {
        let (Some(ca), Some(cert), Some(key)) = (&self.ca, &self.cert, &self.key) else {
            return Ok((firebreak_tls::ClientTls::plaintext_for_debugging(), None));
        };
        let usage = |e: firebreak_tls::Error| fail(exit::USAGE, e.to_string());
        let keys = firebreak_tls::Keys::load(firebreak_tls::KeyFiles {
            cert: cert.clone(),
            key: key.clone(),
        })
        .map_err(usage)?;
        keys.watch();
        let server =
            firebreak_tls::server_config(keys.clone(), ca, firebreak_tls::ClientCerts::Optional)
                .map_err(usage)?;
        let client = firebreak_tls::ClientTls::for_service(ca, keys).map_err(usage)?;
        Ok((client, Some(std::sync::Arc::new(server))))
    }
}

/// What a service serves with.
type ServerTls = Option<std::sync::Arc<rustls::ServerConfig>>;

const STATE_TIMEOUT: Duration = Duration::from_secs(5);

pub async fn run(command: Command) -> Result<()> {
    let (name, listen, spawned) = match command {
        Command::Messaging {
            common,
            max_streams,
            keepalive_secs,
            reconnect_window_ms,
        } => {
            let (state_tls, server_tls) = common.tls()?;
            let config = messaging::Config {
                state_tls,
                server_tls,
                nodes: common.nodes,
                max_concurrent: common.max_concurrent,
                max_streams,
                keepalive: Duration::from_secs(keepalive_secs.max(1)),
                reconnect_window: reconnect_window_ms.map(Duration::from_millis),
                state_timeout: STATE_TIMEOUT,
            };
            (
                "messaging",
                common.listen,
                messaging::spawn(common.listen, config).await,
            )
        }
        Command::Payments { common, site } => {
            let (state_tls, server_tls) = common.tls()?;
            let config = payments::Config {
                state_tls,
                server_tls,
                nodes: common.nodes,
                max_concurrent: common.max_concurrent,
                state_timeout: STATE_TIMEOUT,
                site,
            };
            (
                "payments",
                common.listen,
                payments::spawn(common.listen, config).await,
            )
        }
        Command::Login {
            common,
            session_ttl_secs,
            sweep_interval_secs,
            max_hashing,
            hashing_nice,
        } => {
            let (state_tls, server_tls) = common.tls()?;
            let config = login::Config {
                state_tls,
                server_tls,
                nodes: common.nodes,
                max_concurrent: common.max_concurrent,
                max_hashing: max_hashing
                    .map_or_else(firebreak_chaos::driver::cores, |n| n as usize),
                hashing_nice,
                session_ttl: Duration::from_secs(session_ttl_secs),
                sweep_interval: Duration::from_secs(sweep_interval_secs),
                state_timeout: STATE_TIMEOUT,
            };
            (
                "login",
                common.listen,
                login::spawn(common.listen, config).await,
            )
        }
    };
    let (addr, task) = spawned.with_context(|| format!("failed to listen on {listen}"))?;
    tracing::info!(service = name, %addr, "serving");
    crate::node::shutdown_signal().await;
    task.abort();
    Ok(())
}
