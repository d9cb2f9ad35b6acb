//! The hosts a drill runs on with the ssh driver: an inventory file in YAML.
//!
//! ```yaml
//! known_hosts: /etc/firebreak/known_hosts   # the hosts' keys (default: ssh's own files)
//! dir: /var/lib/firebreak-drill             # where firebreak lives on every host
//! sites:
//!   pangyo:
//!     hosts:
//!       - { address: 10.0.1.10, user: root, key: /home/ops/.ssh/drill }
//!   gasan:
//!     hosts:
//!       - { address: 10.0.2.10, user: root, key: /home/ops/.ssh/drill, port: 2222,
//!           jump: ops@bastion.example, dir: /opt/firebreak }
//! ```
//!
//! A site's first host runs its node and services and is where its faults land; the others
//! are listed for the operator and for `drill cleanup`. Errors carry file:line:column.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::error::{Error, Result};

/// The largest inventory file read.
const MAX_INVENTORY_BYTES: u64 = 256 * 1024;
/// Most sites, and most hosts per site, an inventory may list.
const MAX_SITES: usize = 16;
const MAX_HOSTS_PER_SITE: usize = 8;

/// A parsed, checked inventory.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Inventory {
    /// The hosts' public keys, in ssh's known_hosts format; ssh checks every host against
    /// them and refuses an unknown one (no key is accepted on first sight).
    #[serde(default)]
    pub known_hosts: Option<PathBuf>,
    /// Where firebreak lives on each host unless the host says otherwise.
    #[serde(default = "default_dir")]
    pub dir: PathBuf,
    pub sites: BTreeMap<String, SiteHosts>,
}

/// The hosts of one site.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SiteHosts {
    pub hosts: Vec<Host>,
}

/// One host, reached over ssh.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Host {
    /// The host's address: ssh reaches it there, and its processes listen on it.
    pub address: IpAddr,
    pub user: String,
    /// The private key that logs in.
    pub key: PathBuf,
    #[serde(default = "default_port")]
    pub port: u16,
    /// A jump host (`user@host[:port]`), passed to `ssh -J`.
    #[serde(default)]
    pub jump: Option<String>,
    /// Where firebreak lives on this host (default: the inventory's `dir`).
    #[serde(default)]
    pub dir: Option<PathBuf>,
}

fn default_dir() -> PathBuf {
    PathBuf::from("/var/lib/firebreak-drill")
}

fn default_port() -> u16 {
    22
}

impl Inventory {
    /// Reads and checks `path`.
    pub fn load(path: &Path) -> Result<Self> {
        let (file, text) = read_bounded(path)?;
        Self::parse(&file, &text)
    }

    /// Parses and checks an inventory's text; `file` names it in errors.
    pub fn parse(file: &str, text: &str) -> Result<Self> {
        let mut inventory: Inventory = parse_yaml(file, text)?;
        if let Err((key, message)) = inventory.check() {
            let (line, column) = locate(text, &key);
            return Err(at(file, line, column, message));
        }
        for site in inventory.sites.values_mut() {
            for host in &mut site.hosts {
                host.dir.get_or_insert_with(|| inventory.dir.clone());
            }
        }
        Ok(inventory)
    }

    /// The rules serde cannot say: bounds, absolute paths, safe directory names. On
    /// failure, the key to point at and the message.
    fn check(&self) -> std::result::Result<(), (String, String)> {
        if self.sites.is_empty() || self.sites.len() > MAX_SITES {
            let n = self.sites.len();
            return Err((
                "sites".into(),
                format!("sites: {n} listed; 1 to {MAX_SITES} allowed"),
            ));
        }
        check_dir("dir", &self.dir)?;
        for (name, site) in &self.sites {
            if site.hosts.is_empty() || site.hosts.len() > MAX_HOSTS_PER_SITE {
                let n = site.hosts.len();
                let message =
                    format!("sites.{name}.hosts: {n} listed; 1 to {MAX_HOSTS_PER_SITE} allowed");
                return Err((name.clone(), message));
            }
            for host in &site.hosts {
                let user_ok = !host.user.is_empty()
                    && host
                        .user
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c));
                if !user_ok {
                    let message = format!("sites.{name}: user {:?} is not a login name", host.user);
                    return Err(("user".into(), message));
                }
                if let Some(dir) = &host.dir {
                    check_dir("dir", dir)?;
                }
                if let Some(jump) = &host.jump {
                    if jump.starts_with('-') || jump.contains(char::is_whitespace) {
                        return Err((
                            "jump".into(),
                            format!("sites.{name}: jump {jump:?} is not user@host[:port]"),
                        ));
                    }
                }
            }
        }
        Ok(())
    }

    /// Checks that every site of a playbook has hosts; the first host of each, in the
    /// playbook's site order.
    pub fn hosts_for(&self, sites: &[String], file: &Path) -> Result<Vec<(String, Host)>> {
        sites
            .iter()
            .map(|site| match self.sites.get(site) {
                Some(s) => Ok((site.clone(), s.hosts[0].clone())),
                None => Err(Error::CouldNotRun(format!(
                    "{}: the playbook's site {site} has no hosts; add sites.{site}.hosts (the inventory lists {})",
                    file.display(),
                    self.sites.keys().cloned().collect::<Vec<_>>().join(", ")
                ))),
            })
            .collect()
    }
}

/// An absolute path made of characters that need no quoting in a shell.
fn check_dir(key: &str, dir: &Path) -> std::result::Result<(), (String, String)> {
    let text = dir.display().to_string();
    let safe = text
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "/_.-".contains(c));
    if !dir.is_absolute() || !safe || text.contains("..") {
        return Err((
            key.into(),
            format!("{key}: {text:?} must be an absolute path of letters, digits and / _ . -"),
        ));
    }
    Ok(())
}

/// Reads a drill's YAML file of at most [`MAX_INVENTORY_BYTES`]: its name for errors and
/// its text.
pub(crate) fn read_bounded(path: &Path) -> Result<(String, String)> {
    let file = path.display().to_string();
    let read = |source| Error::Read {
        file: file.clone(),
        source,
    };
    let meta = std::fs::metadata(path).map_err(read)?;
    if meta.len() > MAX_INVENTORY_BYTES {
        let message = format!(
            "is {} bytes; the limit is {MAX_INVENTORY_BYTES}",
            meta.len()
        );
        return Err(at(&file, 1, 1, message));
    }
    let text = std::fs::read_to_string(path).map_err(read)?;
    Ok((file, text))
}

/// Parses YAML; an error carries `file:line:column`.
pub(crate) fn parse_yaml<T: serde::de::DeserializeOwned>(file: &str, text: &str) -> Result<T> {
    serde_yaml::from_str(text).map_err(|err| {
        let (line, column) = err.location().map_or((1, 1), |l| (l.line(), l.column()));
        at(file, line, column, err.to_string())
    })
}

fn at(file: &str, line: usize, column: usize, message: String) -> Error {
    Error::Inventory {
        file: file.to_string(),
        line,
        column,
        message,
    }
}

/// The line and column of the first `key:` in `text` (1, 1 if it is not there).
fn locate(text: &str, key: &str) -> (usize, usize) {
    let needle = format!("{key}:");
    text.lines()
        .enumerate()
        .find_map(|(i, line)| line.find(&needle).map(|col| (i + 1, col + 1)))
        .unwrap_or((1, 1))
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "\
known_hosts: /tmp/kh
sites:
  pangyo:
    hosts:
      - { address: 10.0.0.1, user: root, key: /tmp/k }
  gasan:
    hosts:
      - { address: 10.0.0.2, user: ops, key: /tmp/k, port: 2222, dir: /opt/fb }
";

    #[test]
    fn a_good_inventory_gives_each_site_its_first_host_with_defaults_filled_in() {
        let inventory = Inventory::parse("inv.yaml", GOOD).unwrap();
        let sites = vec!["pangyo".to_string(), "gasan".to_string()];
        let hosts = inventory.hosts_for(&sites, Path::new("inv.yaml")).unwrap();
        assert_eq!(
            hosts[0].1.dir.as_deref(),
            Some(Path::new("/var/lib/firebreak-drill"))
        );
        assert_eq!(hosts[0].1.port, 22);
        assert_eq!(hosts[1].1.dir.as_deref(), Some(Path::new("/opt/fb")));
        assert_eq!(hosts[1].1.port, 2222);
    }

    #[test]
    fn errors_say_file_line_and_column() {
        let typo = GOOD.replace("user: ops", "usr: ops");
        let err = Inventory::parse("inv.yaml", &typo).unwrap_err().to_string();
        assert!(err.starts_with("inv.yaml:8:"), "{err}");
        assert!(err.contains("usr"), "{err}");

        let relative = GOOD.replace("dir: /opt/fb", "dir: opt/fb");
        let err = Inventory::parse("inv.yaml", &relative)
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("inv.yaml:8:"), "{err}");
        assert!(err.contains("absolute"), "{err}");

        let not_ip = GOOD.replace("10.0.0.1", "pangyo.example");
        let err = Inventory::parse("inv.yaml", &not_ip)
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("inv.yaml:5:"), "{err}");
    }

    #[test]
    fn a_site_without_hosts_is_named() {
        let inventory = Inventory::parse("inv.yaml", GOOD).unwrap();
        let sites = vec!["pangyo".to_string(), "busan".to_string()];
        let err = inventory
            .hosts_for(&sites, Path::new("inv.yaml"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("site busan has no hosts"), "{err}");
        assert!(err.contains("gasan, pangyo"), "{err}");
    }
}
