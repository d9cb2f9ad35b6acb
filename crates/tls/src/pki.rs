//! The cluster's certificate authority and the certificates it issues, written as PEM
//! files: `ca.pem` (public, give it to everyone) and `ca.key` (mode 0600; whoever holds it
//! can mint any identity, so keep it off the nodes in production).
//!
//! Every issued certificate names one [`Identity`] as a URI SAN, plus the DNS names and IP
//! addresses its holder serves on. Node and service certificates serve and present (server
//! and client auth); operator certificates only present (client auth). Keys are ECDSA
//! P-256. Files are written to a temp name and renamed, so a node reloading them never
//! reads half a file.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};
use time::{Duration, OffsetDateTime};

use crate::identity::{Identity, Role};
use crate::{Error, Result};

/// File names in a CA directory.
pub const CA_CERT: &str = "ca.pem";
pub const CA_KEY: &str = "ca.key";
/// Longest validity accepted, in days (ten years).
pub const MAX_DAYS: i64 = 3650;

/// Where an issued certificate and its key were written.
#[derive(Debug, Clone)]
pub struct Issued {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// When a certificate is valid: from `start` for `days` days.
#[derive(Debug, Clone, Copy)]
pub struct Validity {
    pub start: OffsetDateTime,
    pub days: i64,
}

impl Validity {
    /// From an hour ago (clock skew between sites) for `days` days.
    pub fn days(days: i64) -> Self {
        Self {
            start: OffsetDateTime::now_utc() - Duration::hours(1),
            days,
        }
    }
}

/// Creates a new CA for `cluster` in `dir`; refuses to replace an existing one.
pub fn init_ca(dir: &Path, cluster: &str, validity: Validity) -> Result<Issued> {
    check_days(validity.days)?;
    let cert_path = dir.join(CA_CERT);
    if cert_path.exists() {
        return Err(Error::Exists(cert_path));
    }
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let key = KeyPair::generate().map_err(Error::Generate)?;
    let mut params = CertificateParams::default();
    params
        .distinguished_name
        .push(DnType::CommonName, ca_common_name(cluster));
    params
        .distinguished_name
        .push(DnType::OrganizationName, "firebreak");
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    set_validity(&mut params, validity);
    let cert = params.self_signed(&key).map_err(Error::Generate)?;
    let key_path = dir.join(CA_KEY);
    write(&key_path, &key.serialize_pem(), 0o600)?;
    write(&cert_path, &cert.pem(), 0o644)?;
    Ok(Issued {
        cert: cert_path,
        key: key_path,
    })
}

/// The cluster a CA certificate (as `ca init` wrote it) was made for.
pub fn ca_cluster(ca_dir: &Path) -> Result<String> {
    let path = ca_dir.join(CA_CERT);
    let der = crate::keys::read_certs(&path)?.remove(0);
    let (_, cert) = x509_parser::parse_x509_certificate(&der)
        .map_err(|e| Error::Pem(path.clone(), e.to_string()))?;
    let cn = cert
        .subject()
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .unwrap_or_default();
    cn.strip_prefix("firebreak CA of ")
        .map(str::to_string)
        .ok_or_else(|| Error::Pem(path, "not a CA made by `firebreak ca init`".into()))
}

fn ca_common_name(cluster: &str) -> String {
    format!("firebreak CA of {cluster}")
}

/// Issues a certificate for `identity`, valid for `hosts` (IP addresses or DNS names),
/// signed by the CA in `ca_dir`; writes `<out>/<stem>.pem` and `<out>/<stem>.key`.
pub fn issue(
    ca_dir: &Path,
    identity: &Identity,
    hosts: &[String],
    validity: Validity,
    out: &Path,
    stem: &str,
) -> Result<Issued> {
    check_days(validity.days)?;
    let cluster = ca_cluster(ca_dir)?;
    if cluster != identity.cluster {
        return Err(Error::WrongCluster {
            ca: cluster,
            asked: identity.cluster.clone(),
        });
    }
    let (ca_pem, ca_key) = read_ca(ca_dir)?;
    let ca_key = KeyPair::from_pem(&ca_key).map_err(Error::Generate)?;
    let issuer = Issuer::from_ca_cert_pem(&ca_pem, ca_key).map_err(Error::Generate)?;
    let mut params = CertificateParams::default();
    params
        .distinguished_name
        .push(DnType::CommonName, identity.uri());
    params.subject_alt_names = sans(identity, hosts)?;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = match identity.role {
        Role::Node(_) | Role::Service(_) => vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ],
        Role::Operator(_) => vec![ExtendedKeyUsagePurpose::ClientAuth],
    };
    params.use_authority_key_identifier_extension = true;
    set_validity(&mut params, validity);
    let key = KeyPair::generate().map_err(Error::Generate)?;
    let cert = params.signed_by(&key, &issuer).map_err(Error::Generate)?;
    std::fs::create_dir_all(out).map_err(|e| Error::io(out, e))?;
    let issued = Issued {
        cert: out.join(format!("{stem}.pem")),
        key: out.join(format!("{stem}.key")),
    };
    write(&issued.key, &key.serialize_pem(), 0o600)?;
    write(&issued.cert, &cert.pem(), 0o644)?;
    Ok(issued)
}

fn sans(identity: &Identity, hosts: &[String]) -> Result<Vec<SanType>> {
    let mut sans = vec![SanType::URI(
        identity.uri().try_into().map_err(Error::Generate)?,
    )];
    for host in hosts {
        sans.push(match host.parse::<IpAddr>() {
            Ok(ip) => SanType::IpAddress(ip),
            Err(_) => SanType::DnsName(
                host.clone()
                    .try_into()
                    .map_err(|_| Error::BadHost(host.clone()))?,
            ),
        });
    }
    Ok(sans)
}

fn set_validity(params: &mut CertificateParams, validity: Validity) {
    params.not_before = validity.start;
    params.not_after = validity.start + Duration::days(validity.days);
}

fn check_days(days: i64) -> Result<()> {
    match (1..=MAX_DAYS).contains(&days) {
        true => Ok(()),
        false => Err(Error::Days(days)),
    }
}

/// The CA's certificate and key, as PEM.
fn read_ca(dir: &Path) -> Result<(String, String)> {
    let read = |name: &str| {
        let path = dir.join(name);
        std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))
    };
    Ok((read(CA_CERT)?, read(CA_KEY)?))
}

/// Writes `text` to `path` with `mode`, through a temp file renamed into place.
fn write(path: &Path, text: &str, mode: u32) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    let result = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(&tmp)
        .and_then(|mut f| f.write_all(text.as_bytes()).and_then(|()| f.sync_all()))
        .and_then(|()| std::fs::rename(&tmp, path));
    result.map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        Error::io(path, e)
    })
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::keys::{KeyFiles, Keys};

    fn node(cluster: &str, id: u64) -> Identity {
        Identity {
            cluster: cluster.into(),
            role: Role::Node(id),
        }
    }

    #[test]
    fn an_issued_certificate_names_its_holder_and_loads() {
        let dir = tempfile::tempdir().unwrap();
        let ca = dir.path().join("ca");
        init_ca(&ca, "prod", Validity::days(30)).unwrap();
        assert_eq!(ca_cluster(&ca).unwrap(), "prod");
        let issued = issue(
            &ca,
            &node("prod", 2),
            &["127.0.0.1".into(), "localhost".into()],
            Validity::days(10),
            dir.path(),
            "node-2",
        )
        .unwrap();
        let keys = Keys::load(KeyFiles {
            cert: issued.cert,
            key: issued.key.clone(),
        })
        .unwrap();
        assert_eq!(keys.identity(), Some(node("prod", 2)));
        assert!(
            (8..=10).contains(&keys.days_to_expiry()),
            "{}",
            keys.days_to_expiry()
        );
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(&issued.key).unwrap().permissions(),
        );
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn a_ca_is_never_replaced_and_issues_only_for_its_cluster() {
        let dir = tempfile::tempdir().unwrap();
        init_ca(dir.path(), "prod", Validity::days(30)).unwrap();
        let again = init_ca(dir.path(), "prod", Validity::days(30)).unwrap_err();
        assert!(matches!(again, Error::Exists(_)), "{again}");
        let wrong = issue(
            dir.path(),
            &node("other", 1),
            &[],
            Validity::days(1),
            dir.path(),
            "n",
        )
        .unwrap_err();
        assert!(wrong.to_string().contains("cluster `prod`"), "{wrong}");
        let days = issue(
            dir.path(),
            &node("prod", 1),
            &[],
            Validity::days(0),
            dir.path(),
            "n",
        )
        .unwrap_err();
        assert!(matches!(days, Error::Days(0)), "{days}");
    }

    #[test]
    fn a_rotated_pair_is_picked_up_and_a_mismatched_one_is_not() {
        let dir = tempfile::tempdir().unwrap();
        init_ca(dir.path(), "prod", Validity::days(30)).unwrap();
        let first = issue(
            dir.path(),
            &node("prod", 1),
            &[],
            Validity::days(5),
            dir.path(),
            "a",
        )
        .unwrap();
        let keys = Keys::load(KeyFiles {
            cert: first.cert.clone(),
            key: first.key.clone(),
        })
        .unwrap();
        let before = keys.current();
        // A new certificate without its key: refused, the old pair stays.
        let other = issue(
            dir.path(),
            &node("prod", 1),
            &[],
            Validity::days(20),
            dir.path(),
            "b",
        )
        .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(20));
        std::fs::copy(&other.cert, &first.cert).unwrap();
        assert!(keys.reload().is_err());
        assert!(Arc::ptr_eq(&before, &keys.current()));
        std::fs::copy(&other.key, &first.key).unwrap();
        assert!(keys.reload().unwrap());
        assert!(keys.days_to_expiry() >= 18, "{}", keys.days_to_expiry());
    }

    #[test]
    fn a_rotated_pair_that_names_another_holder_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        init_ca(dir.path(), "prod", Validity::days(30)).unwrap();
        let issue_for = |who: &Identity, name: &str| {
            issue(dir.path(), who, &[], Validity::days(5), dir.path(), name).unwrap()
        };
        let mine = issue_for(&node("prod", 1), "mine");
        let keys = Keys::load(KeyFiles {
            cert: mine.cert.clone(),
            key: mine.key.clone(),
        })
        .unwrap();
        let before = keys.current();
        // Another node's valid pair, both files, copied over this node's.
        let theirs = issue_for(&node("prod", 2), "theirs");
        std::thread::sleep(std::time::Duration::from_millis(20));
        std::fs::copy(&theirs.cert, &mine.cert).unwrap();
        std::fs::copy(&theirs.key, &mine.key).unwrap();
        let refused = keys.reload().unwrap_err().to_string();
        assert!(
            refused.contains("names firebreak://prod/node/2, not firebreak://prod/node/1"),
            "{refused}"
        );
        assert!(Arc::ptr_eq(&before, &keys.current()), "the old pair stays");
        assert_eq!(keys.identity(), Some(node("prod", 1)));
    }
}
