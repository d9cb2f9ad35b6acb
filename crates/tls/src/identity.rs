//! Who a certificate names: a node of a cluster, a service, or an operator.
//!
//! The name is a URI subject-alternative name, `firebreak://<cluster>/<kind>/<name>`, e.g.
//! `firebreak://firebreak-local/node/2`. Only certificates signed by the cluster's CA are
//! ever parsed for it (rustls verified the chain first), so the URI is as trustworthy as
//! the CA key.

use std::fmt;

use rustls_pki_types::CertificateDer;
use x509_parser::extensions::GeneralName;

/// What a certificate is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Role {
    /// A cluster member, by node id: may use the peer listener.
    Node(u64),
    /// A service, by name: may read and write keys under `<name>/`.
    Service(String),
    /// An operator, by name (the audit log's actor).
    Operator(String),
}

/// The holder of a verified certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The cluster the certificate was issued for.
    pub cluster: String,
    pub role: Role,
}

const SCHEME: &str = "firebreak://";

impl Identity {
    /// The URI that names this identity in a certificate.
    pub fn uri(&self) -> String {
        let (kind, name) = match &self.role {
            Role::Node(id) => ("node", id.to_string()),
            Role::Service(name) => ("service", name.clone()),
            Role::Operator(name) => ("operator", name.clone()),
        };
        format!("{SCHEME}{}/{kind}/{name}", self.cluster)
    }

    /// Parses `firebreak://<cluster>/<kind>/<name>`; `None` for anything else.
    pub fn from_uri(uri: &str) -> Option<Self> {
        let rest = uri.strip_prefix(SCHEME)?;
        let mut parts = rest.split('/');
        let (cluster, kind, name) = (parts.next()?, parts.next()?, parts.next()?);
        if parts.next().is_some() || cluster.is_empty() || name.is_empty() {
            return None;
        }
        let role = match kind {
            "node" => Role::Node(name.parse().ok()?),
            "service" => Role::Service(name.to_string()),
            "operator" => Role::Operator(name.to_string()),
            _ => return None,
        };
        Some(Self {
            cluster: cluster.to_string(),
            role,
        })
    }

    /// The identity a (verified) end-entity certificate names, if it names exactly one.
    pub fn from_cert(cert: &CertificateDer<'_>) -> Option<Self> {
        let (_, cert) = x509_parser::parse_x509_certificate(cert).ok()?;
        let san = cert.subject_alternative_name().ok()??;
        let mut found = san
            .value
            .general_names
            .iter()
            .filter_map(|name| match name {
                GeneralName::URI(uri) => Self::from_uri(uri),
                _ => None,
            });
        let first = found.next()?;
        found.next().is_none().then_some(first)
    }
}

impl fmt::Display for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.uri())
    }
}

/// Whole days until a certificate expires (negative once it has).
pub fn days_to_expiry(cert: &CertificateDer<'_>) -> Option<i64> {
    let (_, cert) = x509_parser::parse_x509_certificate(cert).ok()?;
    let left =
        cert.validity().not_after.timestamp() - time::OffsetDateTime::now_utc().unix_timestamp();
    Some(left.div_euclid(86_400))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uris_round_trip_and_nothing_else_parses() {
        for role in [
            Role::Node(7),
            Role::Service("payments".into()),
            Role::Operator("alice".into()),
        ] {
            let id = Identity {
                cluster: "prod".into(),
                role,
            };
            assert_eq!(Identity::from_uri(&id.uri()), Some(id));
        }
        for bad in [
            "https://prod/node/1",
            "firebreak://prod/node/x",
            "firebreak://prod/admin/1",
            "firebreak:///node/1",
            "firebreak://prod/node/1/2",
            "firebreak://prod/service/",
        ] {
            assert_eq!(Identity::from_uri(bad), None, "{bad}");
        }
    }
}
