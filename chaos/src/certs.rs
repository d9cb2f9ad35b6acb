//! A throwaway CA and certificates for a local cluster (`firebreak up`, every drill), so
//! that TLS is on by default and needs nothing from the user:
//!
//! ```text
//!   dir/ca/ca.pem, ca.key                 the CA (ca.key mode 0600)
//!   dir/<site>/tls/node.pem, node.key     the node's certificate (its id, its site's IP)
//!   dir/<site>/tls/<service>.pem, .key    each service's certificate (its key prefix, its
//!                                         site's IP: the gateways reach it over TLS)
//! ```
//!
//! An existing CA of the same cluster is kept (`firebreak up` run again on its data dir),
//! and certificates are reissued at every start (short-lived: 30 days).

use std::path::{Path, PathBuf};

use firebreak_node::config::{TlsConfig, TlsFiles};
use firebreak_node::NodeConfig;
use firebreak_tls::pki::{self, Validity};
use firebreak_tls::{ClientTls, Identity, KeyFiles, Role};

use crate::error::{Error, Result};

/// Days a local certificate is valid.
const LOCAL_DAYS: i64 = 30;
/// Days a local CA is valid.
const LOCAL_CA_DAYS: i64 = 365;

/// The CA of a local cluster.
#[derive(Debug, Clone)]
pub struct LocalCa {
    dir: PathBuf,
    cluster: String,
}

fn fail(e: firebreak_tls::Error) -> Error {
    Error::CouldNotRun(format!("certificates: {e}"))
}

impl LocalCa {
    /// The CA in `dir/ca`, made if missing.
    pub fn open_or_create(dir: &Path, cluster: &str) -> Result<Self> {
        let ca = dir.join("ca");
        if !ca.join(pki::CA_CERT).exists() {
            pki::init_ca(&ca, cluster, Validity::days(LOCAL_CA_DAYS)).map_err(fail)?;
        }
        let found = pki::ca_cluster(&ca).map_err(fail)?;
        if found != cluster {
            return Err(Error::CouldNotRun(format!(
                "{} is the CA of cluster {found}, not {cluster}: use another data dir",
                ca.display()
            )));
        }
        Ok(Self {
            dir: ca,
            cluster: cluster.to_string(),
        })
    }

    /// The CA certificate every client trusts.
    pub fn ca_file(&self) -> PathBuf {
        self.dir.join(pki::CA_CERT)
    }

    /// A client that trusts this CA and presents no certificate.
    pub fn client(&self) -> Result<ClientTls> {
        ClientTls::new(&self.ca_file(), None).map_err(fail)
    }

    /// Issues `config`'s node certificate for its listeners' IPs and points its `tls` at it.
    pub fn issue_node(&self, config: &mut NodeConfig) -> Result<()> {
        let identity = Identity {
            cluster: self.cluster.clone(),
            role: Role::Node(config.node_id.0),
        };
        let mut hosts = vec![config.listen.ip().to_string(), "localhost".to_string()];
        if config.peer_listen.ip() != config.listen.ip() {
            hosts.push(config.peer_listen.ip().to_string());
        }
        let out = site_tls_dir(config);
        let issued = pki::issue(
            &self.dir,
            &identity,
            &hosts,
            Validity::days(LOCAL_DAYS),
            &out,
            "node",
        )
        .map_err(fail)?;
        config.tls = TlsConfig {
            ca_file: Some(self.ca_file()),
            cert_file: Some(issued.cert),
            key_file: Some(issued.key),
            plaintext_for_debugging: false,
        };
        Ok(())
    }

    /// Issues the certificate of `service`, serving on `hosts`, written under `out`.
    pub fn issue_service(&self, service: &str, hosts: &[String], out: &Path) -> Result<TlsFiles> {
        let identity = Identity {
            cluster: self.cluster.clone(),
            role: Role::Service(service.to_string()),
        };
        let issued = pki::issue(
            &self.dir,
            &identity,
            hosts,
            Validity::days(LOCAL_DAYS),
            out,
            service,
        )
        .map_err(fail)?;
        Ok(TlsFiles {
            ca: self.ca_file(),
            keys: KeyFiles {
                cert: issued.cert,
                key: issued.key,
            },
        })
    }
}

/// `<site>/tls` beside the node's data dir.
fn site_tls_dir(config: &NodeConfig) -> PathBuf {
    config
        .data_dir
        .parent()
        .unwrap_or(&config.data_dir)
        .join("tls")
}

/// The arguments that give a `firebreak serve` process its TLS files.
pub fn service_args(files: &TlsFiles) -> Vec<String> {
    vec![
        "--ca".into(),
        files.ca.display().to_string(),
        "--cert".into(),
        files.keys.cert.display().to_string(),
        "--key".into(),
        files.keys.key.display().to_string(),
    ]
}
