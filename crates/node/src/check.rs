//! `firebreak node --config FILE --check-config`: what a node checks before it serves
//! (the config's rules, its certificate and key, its tokens, whose its data dir is),
//! without binding a port or writing anything. For `ExecStartPre=` in a systemd unit, and
//! for the ssh driver before it starts a node.

use std::path::Path;

use crate::config::NodeConfig;
use crate::error::{Error, Result};

/// Checks `config` (loaded, so already valid) as a starting node would; one line per
/// thing checked.
pub fn check_config(config: &NodeConfig) -> Result<Vec<String>> {
    let mut found = vec![format!(
        "config: node {} of cluster {} at site {}; client {}, peer {}, admin {}",
        config.node_id,
        config.cluster,
        config.site,
        config.listen,
        config.peer_listen,
        config.admin_listen
    )];
    found.push(check_tls(config)?);
    let tokens = crate::auth::Tokens::load(&config.auth)?;
    found.push(format!("tokens: {} operator token(s)", tokens.len()));
    found.push(crate::identity::inspect(config)?);
    Ok(found)
}

fn check_tls(config: &NodeConfig) -> Result<String> {
    let Some(files) = config.tls.files() else {
        return Ok(
            "tls: OFF (plaintext_for_debugging): never run this way beyond one machine".into(),
        );
    };
    let fail = |e: firebreak_tls::Error| Error::Tls(e.to_string());
    let keys = firebreak_tls::Keys::load(files.keys.clone()).map_err(fail)?;
    crate::node::check_identity(config, &keys)?;
    firebreak_tls::server_config(
        keys.clone(),
        &files.ca,
        firebreak_tls::ClientCerts::Required,
    )
    .map_err(fail)?;
    firebreak_tls::ClientTls::for_nodes(&files.ca, keys.clone(), &config.cluster).map_err(fail)?;
    Ok(format!(
        "tls: {} is node {}'s certificate of cluster {}, {} days to expiry; trusts {}",
        keys.files().cert.display(),
        config.node_id,
        config.cluster,
        keys.days_to_expiry(),
        display(&files.ca)
    ))
}

fn display(path: &Path) -> String {
    path.display().to_string()
}
