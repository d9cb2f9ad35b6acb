//! `firebreak up --nodes-per-site N`: a site's second and third nodes.
//!
//! ```text
//!   node-J of site N: 127.0.N.J, `<site>/node-J.yaml` (join: true), its own certificate,
//!   data, log and pid file ─► started with the first nodes ─► once the cluster has
//!   leaders, added as a learner (`POST /v1/membership`, node_add), one at a time
//! ```

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result};
use firebreak_chaos::certs::LocalCa;
use firebreak_node::NodeConfig;
use firebreak_tls::ClientTls;

use super::{spawn, Site};
use crate::exit::{self, fail};

/// How long adding one node may take.
const ADD_TIMEOUT: Duration = Duration::from_secs(30);

/// An extra node: its site's index, its name there (`node-2`), its config.
pub(super) struct Extra {
    site: usize,
    name: &'static str,
    config: NodeConfig,
}

/// The extra nodes' configs, with certificates (none in plain-text mode).
pub(super) fn configs(
    firsts: &[NodeConfig],
    per_site: u8,
    ca: Option<&LocalCa>,
) -> Result<Vec<Extra>> {
    let mut extras = Vec::new();
    for (site, j, mut config) in
        firebreak_chaos::driver::extra_configs(firsts, firsts.len(), per_site)
    {
        match ca {
            Some(ca) => ca.issue_node(&mut config)?,
            None => config.tls.plaintext_for_debugging = true,
        }
        let name = if j == 2 { "node-2" } else { "node-3" };
        extras.push(Extra { site, name, config });
    }
    Ok(extras)
}

/// Writes each extra node's config beside its site's and starts it (it waits to be added).
pub(super) fn start(
    exe: &Path,
    sites: &mut [Site],
    extras: &[Extra],
    data_dir: &Path,
) -> Result<()> {
    for extra in extras {
        let site = &mut sites[extra.site];
        let dir = data_dir.join(site.name);
        let path = dir.join(format!("{}.yaml", extra.name));
        std::fs::write(&path, serde_yaml::to_string(&extra.config)?)
            .with_context(|| format!("failed to write {}", path.display()))?;
        let args = ["node", "--config", &path.display().to_string()].map(String::from);
        let log = dir.join(format!("{}.log", extra.name));
        let pid_file = dir.join(format!("{}.pid", extra.name));
        site.others
            .push((extra.name, spawn(exe, &args, &log, &pid_file)?));
    }
    Ok(())
}

/// Adds each extra node as a learner through the nodes' admin listeners, in turn until
/// the control leader takes it.
pub(super) async fn add(
    extras: &[Extra],
    sites: &[Site],
    token: &str,
    tls: &ClientTls,
) -> Result<()> {
    let http = tls
        .apply(reqwest::Client::builder())
        .timeout(ADD_TIMEOUT)
        .build()?;
    for extra in extras {
        let c = &extra.config;
        let body = serde_json::json!({"action": "node_add", "id": c.node_id, "site": c.site,
            "addr": c.peer_listen.to_string()});
        let deadline = tokio::time::Instant::now() + ADD_TIMEOUT;
        let mut last = String::new();
        'add: while tokio::time::Instant::now() < deadline {
            for site in sites {
                let url = tls.url(&site.config.admin_listen.to_string(), "/v1/membership");
                match http.post(url).bearer_auth(token).json(&body).send().await {
                    Ok(r) if r.status().is_success() => break 'add,
                    Ok(r) => {
                        last = format!("{} {}", r.status(), r.text().await.unwrap_or_default())
                    }
                    Err(e) => last = e.to_string(),
                }
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(fail(
                exit::UNAVAILABLE,
                format!(
                    "node {} of {} was not added within {ADD_TIMEOUT:?}: {last}",
                    c.node_id, c.site
                ),
            ));
        }
    }
    Ok(())
}
