//! The data dir's identity: which node of which cluster wrote it.
//!
//! Starting node 1 on node 2's data, or on a data dir of another cluster, would make a
//! replica lie about what it voted and stored. The first start writes `identity.json`;
//! every later start compares and refuses a mismatch with a message.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::{Error, NodeConfig, Result};

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Identity {
    cluster: String,
    node_id: u64,
}

/// Says whose the data dir is without changing it: new (missing or empty), this node's,
/// or an error if it belongs to another node or cluster or holds something else.
pub fn inspect(config: &NodeConfig) -> Result<String> {
    let dir = config.data_dir.display();
    Ok(match recorded(config)? {
        true => format!("data dir: {dir} is node {}'s", config.node_id),
        false => format!("data dir: {dir} is new; the node will claim it"),
    })
}

/// Creates the data dir and checks (or records) whose it is.
pub fn claim(config: &NodeConfig) -> Result<()> {
    let dir = &config.data_dir;
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| Error::Io { path, source }
    };
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    if recorded(config)? {
        return Ok(());
    }
    let mine = Identity {
        cluster: config.cluster.clone(),
        node_id: config.node_id.0,
    };
    let (tmp, path) = (dir.join("identity.json.tmp"), dir.join("identity.json"));
    let bytes = serde_json::to_vec_pretty(&mine).expect("identity serializes");
    std::fs::write(&tmp, bytes).map_err(io(&tmp))?;
    std::fs::File::open(&tmp)
        .and_then(|f| f.sync_all())
        .map_err(io(&tmp))?;
    std::fs::rename(&tmp, &path).map_err(io(&path))?;
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io(dir))?;
    Ok(())
}

/// Whether the data dir records this node (`true`) or is new, missing or empty (`false`);
/// an error if it records another node or cluster, or holds files of something else.
fn recorded(config: &NodeConfig) -> Result<bool> {
    let dir = &config.data_dir;
    let path = dir.join("identity.json");
    match std::fs::read(&path) {
        Ok(bytes) => {
            let found: Identity = serde_json::from_slice(&bytes).map_err(|e| Error::Io {
                path: path.clone(),
                source: std::io::Error::new(std::io::ErrorKind::InvalidData, e),
            })?;
            if found.cluster != config.cluster || found.node_id != config.node_id.0 {
                return Err(Error::DataDirMismatch {
                    path: dir.clone(),
                    found_node: found.node_id,
                    found_cluster: found.cluster,
                    node: config.node_id.0,
                    cluster: config.cluster.clone(),
                });
            }
            Ok(true)
        }
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
            let empty = match std::fs::read_dir(dir) {
                Ok(mut entries) => entries.next().is_none(),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => true,
                Err(source) => {
                    return Err(Error::Io {
                        path: dir.clone(),
                        source,
                    })
                }
            };
            if !empty {
                return Err(Error::Io {
                    path: dir.clone(),
                    source: std::io::Error::other(
                        "data dir is not empty and has no identity.json; it was not written by a firebreak node: choose an empty or new directory",
                    ),
                });
            }
            Ok(false)
        }
        Err(source) => Err(Error::Io { path, source }),
    }
}
