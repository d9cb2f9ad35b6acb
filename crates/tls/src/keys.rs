//! A certificate and key loaded from files and reloaded when the files change, so that
//! certificates are rotated without a restart: [`Keys::watch`] polls the files' mtimes
//! every second (and [`Keys::reload`] may be called on SIGHUP). A new pair is taken only
//! when it parses and the key matches the certificate; otherwise the old pair stays in use
//! and a warning says why, so a half-done rotation never takes a node off the network.
//!
//! A rotation renews a certificate; it never changes whom it names. A new pair that names
//! another holder than the one loaded at start (another node's certificate copied over
//! this one's, a service's) is refused like a mismatched one: the node checked its
//! identity against its config once, at start, and would otherwise speak as someone else
//! until it restarts.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock, Weak};
use std::time::{Duration, SystemTime};

use rustls::client::ResolvesClientCert;
use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::SignatureScheme;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::identity::{days_to_expiry, Identity};
use crate::{Error, Result};

/// How often [`Keys::watch`] looks at the files.
pub const WATCH_INTERVAL: Duration = Duration::from_secs(1);

/// A certificate file and its key file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

#[derive(Debug)]
struct Loaded {
    key: Arc<CertifiedKey>,
    stamp: (Option<SystemTime>, Option<SystemTime>),
}

/// The current certificate and key of one holder.
#[derive(Debug)]
pub struct Keys {
    files: KeyFiles,
    provider: Arc<CryptoProvider>,
    current: RwLock<Loaded>,
}

impl Keys {
    /// Loads the pair; fails if either file is missing, unreadable or they do not match.
    pub fn load(files: KeyFiles) -> Result<Arc<Self>> {
        let provider = crate::provider();
        let loaded = load(&files, &provider)?;
        Ok(Arc::new(Self {
            files,
            provider,
            current: RwLock::new(loaded),
        }))
    }

    /// Reloads the pair if either file changed; `Ok(true)` when a new pair is in use.
    pub fn reload(&self) -> Result<bool> {
        let stamp = stamps(&self.files);
        if self.read().stamp == stamp {
            return Ok(false);
        }
        let loaded = load(&self.files, &self.provider)?;
        let (was, now) = (self.identity(), identity_of(&loaded));
        if now != was {
            let name =
                |i: Option<Identity>| i.map_or("no firebreak identity".into(), |i| i.to_string());
            return Err(Error::HolderChanged {
                cert: self.files.cert.clone(),
                was: name(was),
                now: name(now),
            });
        }
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = loaded;
        Ok(true)
    }

    /// Polls the files every [`WATCH_INTERVAL`] on a thread of its own, until `self` is
    /// dropped.
    pub fn watch(self: &Arc<Self>) {
        let weak: Weak<Self> = Arc::downgrade(self);
        let spawned = std::thread::Builder::new()
            .name("firebreak-tls-watch".into())
            .spawn(move || loop {
                std::thread::sleep(WATCH_INTERVAL);
                let Some(keys) = weak.upgrade() else { return };
                match keys.reload() {
                    Ok(true) => tracing::info!(cert = %keys.files.cert.display(), days_to_expiry = keys.days_to_expiry(), "reloaded certificate"),
                    Ok(false) => {}
                    Err(err) => tracing::warn!(cause = %err, "kept the current certificate: the new files do not load"),
                }
            });
        if let Err(err) = spawned {
            tracing::warn!(cause = %err, "certificates will not reload: no watcher thread");
        }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Loaded> {
        self.current.read().unwrap_or_else(|e| e.into_inner())
    }

    /// The pair in use.
    pub fn current(&self) -> Arc<CertifiedKey> {
        self.read().key.clone()
    }

    /// Who the certificate in use names.
    pub fn identity(&self) -> Option<Identity> {
        identity_of(&self.read())
    }

    /// Whole days until the certificate in use expires.
    pub fn days_to_expiry(&self) -> i64 {
        self.read()
            .key
            .cert
            .first()
            .and_then(days_to_expiry)
            .unwrap_or(i64::MIN)
    }

    pub fn files(&self) -> &KeyFiles {
        &self.files
    }
}

fn identity_of(loaded: &Loaded) -> Option<Identity> {
    loaded.key.cert.first().and_then(Identity::from_cert)
}

fn stamps(files: &KeyFiles) -> (Option<SystemTime>, Option<SystemTime>) {
    let mtime = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    (mtime(&files.cert), mtime(&files.key))
}

fn load(files: &KeyFiles, provider: &CryptoProvider) -> Result<Loaded> {
    let stamp = stamps(files);
    let chain = read_certs(&files.cert)?;
    let key = PrivateKeyDer::from_pem_file(&files.key)
        .map_err(|e| Error::Pem(files.key.clone(), e.to_string()))?;
    let key = CertifiedKey::from_der(chain, key, provider).map_err(|e| {
        Error::Pem(
            files.key.clone(),
            format!("does not go with {}: {e}", files.cert.display()),
        )
    })?;
    Ok(Loaded {
        key: Arc::new(key),
        stamp,
    })
}

/// Every certificate in a PEM file; an error if there is none.
pub fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>> {
    let certs: Vec<_> = CertificateDer::pem_file_iter(path)
        .map_err(|e| Error::Pem(path.to_path_buf(), e.to_string()))?
        .collect::<std::result::Result<_, _>>()
        .map_err(|e| Error::Pem(path.to_path_buf(), e.to_string()))?;
    match certs.is_empty() {
        true => Err(Error::Pem(
            path.to_path_buf(),
            "holds no certificate".into(),
        )),
        false => Ok(certs),
    }
}

impl ResolvesServerCert for Keys {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }
}

impl ResolvesClientCert for Keys {
    fn resolve(&self, _hints: &[&[u8]], _schemes: &[SignatureScheme]) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }

    fn has_certs(&self) -> bool {
        true
    }
}
