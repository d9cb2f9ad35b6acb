//! How a node checks the peer it calls: the usual chain and address checks against the
//! cluster CA, and then that the certificate names a node of this cluster
//! (`firebreak://<cluster>/node/<id>`). Without the last check, anyone holding a service
//! or operator certificate for a peer's address (a service on the same host, say) could
//! answer Raft RPCs, lease renewals and the election gate's question in a node's place.

use std::fmt;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};

use crate::identity::{Identity, Role};
use crate::{Error, Result};

/// Accepts a server only if its certificate, valid for the CA and the address, names a
/// node of `cluster`.
pub struct NodeServerVerifier {
    inner: Arc<WebPkiServerVerifier>,
    cluster: String,
}

impl NodeServerVerifier {
    pub fn new(roots: Arc<RootCertStore>, cluster: &str) -> Result<Arc<Self>> {
        let inner = WebPkiServerVerifier::builder_with_provider(roots, crate::provider())
            .build()
            .map_err(|e| Error::Rustls(e.to_string()))?;
        Ok(Arc::new(Self {
            inner,
            cluster: cluster.to_string(),
        }))
    }
}

impl fmt::Debug for NodeServerVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "NodeServerVerifier({})", self.cluster)
    }
}

impl ServerCertVerifier for NodeServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        let verified = self.inner.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        )?;
        match Identity::from_cert(end_entity) {
            Some(Identity {
                cluster,
                role: Role::Node(_),
            }) if cluster == self.cluster => Ok(verified),
            found => Err(rustls::Error::General(format!(
                "{} answered as {}, not as a node of cluster {}",
                server_name.to_str(),
                found.map_or("no firebreak identity".into(), |i| i.to_string()),
                self.cluster
            ))),
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}
