//! firebreak's certificates and TLS settings.
//!
//! ```text
//!   firebreak ca init ──► ca.pem, ca.key (0600)
//!   firebreak cert issue node|service|operator ──► <name>.pem, <name>.key (0600)
//!        │   the URI SAN firebreak://<cluster>/<kind>/<name> says who holds it
//!        ▼
//!   Keys (reloads on file change) ──► server_config (peer: client cert required;
//!                                      client, admin: optional) / ClientTls (reqwest;
//!                                      `for_nodes`: the server must be a node too)
//! ```
//!
//! TLS 1.3 only, ring as the crypto provider, the cluster CA as the only root.

pub mod configs;
pub mod identity;
pub mod keys;
pub mod listener;
pub mod node_verifier;
pub mod pki;
pub mod serve;

use std::path::{Path, PathBuf};
use std::sync::Arc;

pub use configs::{client_config, node_client_config, server_config, ClientCerts, ClientTls};
pub use identity::{Identity, Role};
pub use keys::{KeyFiles, Keys};

/// What went wrong with a certificate, a key or the CA.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0} already exists: a CA is never replaced in place (move it away first, and reissue every certificate)")]
    Exists(PathBuf),
    #[error("{0}: {1}")]
    Pem(PathBuf, String),
    #[error("failed to make a key or certificate: {0}")]
    Generate(rcgen::Error),
    #[error("TLS settings refused: {0}")]
    Rustls(String),
    #[error("the CA is for cluster `{ca}`, not `{asked}`: issue with that CA's cluster name")]
    WrongCluster { ca: String, asked: String },
    #[error("validity of {0} days: must be 1 to {max}", max = pki::MAX_DAYS)]
    Days(i64),
    #[error("host `{0}` is neither an IP address nor a DNS name")]
    BadHost(String),
    #[error("{cert}: the new certificate names {now}, not {was}: a rotation keeps the holder; issue the new one for {was} (the current pair stays in use)")]
    HolderChanged {
        cert: PathBuf,
        was: String,
        now: String,
    },
}

impl Error {
    fn io(path: &Path, source: std::io::Error) -> Self {
        Self::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The crypto provider of every config: ring.
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}
