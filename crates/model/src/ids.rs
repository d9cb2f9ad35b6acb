//! Identifiers shared by every crate: nodes, sites, and what the cluster knows of a member.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A Raft node's id. Unique within a cluster for the node's whole life: a node that lost
/// its disk must come back under a new id (RAFT-NOTES.md), never reuse the old one.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct NodeId(pub u64);

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl From<u64> for NodeId {
    fn from(id: u64) -> Self {
        Self(id)
    }
}

/// A site (data center) name such as `pangyo`. Failover moves traffic between sites, so
/// every member and endpoint is tagged with one.
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct SiteId(pub String);

impl SiteId {
    /// Checks that a site name is usable in URLs, file names and metric labels.
    pub fn validate(&self, field: &str) -> crate::Result<()> {
        check_name(field, "site", &self.0, MAX_SITE_NAME_BYTES)
    }
}

/// Checks a name (of a site, a service): 1 to `max` bytes of a-z, 0-9 and '-', so it is
/// usable in URLs, DNS labels, file names and metric labels.
pub fn check_name(field: &str, what: &str, name: &str, max: usize) -> crate::Result<()> {
    let ok_chars = name
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if name.is_empty() || name.len() > max || !ok_chars {
        return Err(crate::InvalidInput::new(
            field,
            format!(
                "{what} name {} must be 1 to {max} characters of a-z, 0-9 and '-'",
                quote(name)
            ),
        ));
    }
    Ok(())
}

/// Most bytes of a rejected input an error message quotes.
const MAX_QUOTED_BYTES: usize = 64;

/// `input` quoted for an error message, cut short (with its length) when it is long: an
/// error must not echo a huge input back.
pub fn quote(input: &str) -> String {
    if input.len() <= MAX_QUOTED_BYTES {
        return format!("{input:?}");
    }
    let mut end = MAX_QUOTED_BYTES;
    while !input.is_char_boundary(end) {
        end -= 1;
    }
    format!("{:?}... ({} bytes)", &input[..end], input.len())
}

/// Longest accepted site name.
pub const MAX_SITE_NAME_BYTES: usize = 63;

impl fmt::Display for SiteId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(&self.0)
    }
}

impl From<&str> for SiteId {
    fn from(name: &str) -> Self {
        Self(name.to_string())
    }
}

/// What a Raft membership records about a node: where to reach it and which site it is in.
/// This is openraft's `Node` type for both groups.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    /// `host:port` of the node's HTTP server, as its peers dial it.
    pub addr: String,
    /// The site the node runs in; status and failover group members by it.
    pub site: SiteId,
}

impl fmt::Display for Member {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.site, self.addr)
    }
}
