//! rustls configurations for firebreak's listeners and clients: TLS 1.3 only, the
//! cluster's CA as the only root, keys from [`Keys`] (so they reload).

use std::path::Path;
use std::sync::Arc;

use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};

use crate::keys::{read_certs, Keys};
use crate::{Error, Result};

/// Whether a listener asks its clients for a certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientCerts {
    /// The handshake fails without a certificate signed by the CA (the peer listener).
    Required,
    /// A certificate is verified if presented; requests without one need another
    /// credential (the client and admin listeners).
    Optional,
}

/// The CA certificates of `path` as the only roots.
pub fn roots(path: &Path) -> Result<Arc<RootCertStore>> {
    let mut roots = RootCertStore::empty();
    for cert in read_certs(path)? {
        roots
            .add(cert)
            .map_err(|e| Error::Pem(path.to_path_buf(), e.to_string()))?;
    }
    Ok(Arc::new(roots))
}

/// A listener's config: serves `keys`, verifies client certificates against `ca`.
pub fn server_config(keys: Arc<Keys>, ca: &Path, clients: ClientCerts) -> Result<ServerConfig> {
    let provider = crate::provider();
    let verifier = WebPkiClientVerifier::builder_with_provider(roots(ca)?, provider.clone());
    let verifier = match clients {
        ClientCerts::Required => verifier.build(),
        ClientCerts::Optional => verifier.allow_unauthenticated().build(),
    }
    .map_err(|e| Error::Rustls(e.to_string()))?;
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| Error::Rustls(e.to_string()))?
        .with_client_cert_verifier(verifier)
        .with_cert_resolver(keys);
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// A client's config: trusts only `ca`, presents `keys` when given.
pub fn client_config(ca: &Path, keys: Option<Arc<Keys>>) -> Result<ClientConfig> {
    let builder = ClientConfig::builder_with_provider(crate::provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| Error::Rustls(e.to_string()))?
        .with_root_certificates(roots(ca)?);
    let mut config = match keys {
        Some(keys) => builder.with_client_cert_resolver(keys),
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// A node's config for calling its peers: trusts only `ca`, presents `keys`, and accepts
/// a server only if its certificate names a node of `cluster`.
pub fn node_client_config(ca: &Path, keys: Arc<Keys>, cluster: &str) -> Result<ClientConfig> {
    let verifier = crate::node_verifier::NodeServerVerifier::new(roots(ca)?, cluster)?;
    let mut config = ClientConfig::builder_with_provider(crate::provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| Error::Rustls(e.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_client_cert_resolver(keys);
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// How an HTTP client reaches firebreak: over TLS (the default), or in plain text for
/// debugging only.
#[derive(Clone, Debug)]
pub struct ClientTls {
    config: Option<Arc<ClientConfig>>,
}

impl ClientTls {
    /// TLS that trusts `ca` and presents `keys` when given.
    pub fn new(ca: &Path, keys: Option<Arc<Keys>>) -> Result<Self> {
        Ok(Self {
            config: Some(Arc::new(client_config(ca, keys)?)),
        })
    }

    /// How a node calls its peers: as [`ClientTls::new`] with its own keys, and the server
    /// must be a node of `cluster` (see [`crate::node_verifier`]).
    pub fn for_nodes(ca: &Path, keys: Arc<Keys>, cluster: &str) -> Result<Self> {
        Ok(Self {
            config: Some(Arc::new(node_client_config(ca, keys, cluster)?)),
        })
    }

    /// How a service calls its nodes: presenting `keys`, and the server must be a node of
    /// the cluster its own certificate names. With the CA alone, any certificate of the
    /// cluster (another service's, on a port it took) could answer in a node's place and
    /// read every write the service makes.
    pub fn for_service(ca: &Path, keys: Arc<Keys>) -> Result<Self> {
        let cluster = keys.identity().map(|i| i.cluster).ok_or_else(|| {
            Error::Pem(
                keys.files().cert.clone(),
                "names no firebreak identity: issue it with `firebreak cert issue service`".into(),
            )
        })?;
        Self::for_nodes(ca, keys, &cluster)
    }

    /// Plain HTTP; for debugging, against nodes run with `plaintext_for_debugging`.
    pub fn plaintext_for_debugging() -> Self {
        Self { config: None }
    }

    /// The rustls config of TLS; `None` in plain text.
    pub fn rustls_config(&self) -> Option<&ClientConfig> {
        self.config.as_deref()
    }

    /// `https` or `http`.
    pub fn scheme(&self) -> &'static str {
        match self.config {
            Some(_) => "https",
            None => "http",
        }
    }

    /// `<scheme>://<host_port><path>`.
    pub fn url(&self, host_port: &str, path: &str) -> String {
        format!("{}://{host_port}{path}", self.scheme())
    }

    /// Configures a reqwest client to use this for `https` URLs while still allowing plain
    /// `http` ones (the gateway's pool to service instances, which may serve either).
    pub fn apply_any_scheme(&self, builder: reqwest::ClientBuilder) -> reqwest::ClientBuilder {
        match &self.config {
            Some(config) => builder.use_preconfigured_tls(ClientConfig::clone(config)),
            None => builder,
        }
    }

    /// Configures a reqwest client to use this.
    pub fn apply(&self, builder: reqwest::ClientBuilder) -> reqwest::ClientBuilder {
        match &self.config {
            Some(config) => builder
                .use_preconfigured_tls(ClientConfig::clone(config))
                .https_only(true),
            None => builder,
        }
    }
}
