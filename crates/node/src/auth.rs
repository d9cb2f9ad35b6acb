//! Bearer tokens for operator endpoints. A token maps to a name, which the audit log
//! records as the actor; the same tokens must be configured on every node, because a
//! request to a follower is forwarded, with its token, to the leader, which checks again.

use std::collections::HashMap;
use std::path::Path;

use axum::http::HeaderMap;

use crate::config::AuthConfig;
use crate::{Error, Result};

/// Most tokens accepted.
const MAX_TOKENS: usize = 1024;

/// The configured tokens.
#[derive(Debug, Default)]
pub struct Tokens {
    by_secret: HashMap<String, String>,
    /// Whether reads need a token too.
    pub protect_reads: bool,
}

/// Why a request was not authorized.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Denied {
    /// No `Authorization: Bearer …` header.
    Missing,
    /// A token that is not configured.
    Unknown,
}

impl Tokens {
    /// Loads tokens from the config's file, or `FIREBREAK_NODE_TOKENS`.
    pub fn load(config: &AuthConfig) -> Result<Self> {
        let pairs: Vec<(String, String)> = match &config.tokens_file {
            Some(path) => parse_file(path)?,
            None => std::env::var("FIREBREAK_NODE_TOKENS")
                .unwrap_or_default()
                .split(',')
                .filter_map(|pair| pair.split_once(':'))
                .map(|(name, token)| (name.trim().to_string(), token.trim().to_string()))
                .filter(|(name, token)| !name.is_empty() && !token.is_empty())
                .collect(),
        };
        let by_secret = pairs
            .into_iter()
            .take(MAX_TOKENS)
            .map(|(name, token)| (token, name))
            .collect();
        Ok(Self {
            by_secret,
            protect_reads: config.protect_reads,
        })
    }

    /// Tokens from pairs, for tests and `firebreak up`.
    pub fn from_pairs(pairs: &[(&str, &str)]) -> Self {
        let by_secret = pairs
            .iter()
            .map(|(name, token)| (token.to_string(), name.to_string()))
            .collect();
        Self {
            by_secret,
            protect_reads: false,
        }
    }

    /// The name behind the request's bearer token.
    pub fn check(&self, headers: &HeaderMap) -> Result<String, Denied> {
        let value = headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .ok_or(Denied::Missing)?;
        let token = value.strip_prefix("Bearer ").ok_or(Denied::Missing)?.trim();
        self.by_secret.get(token).cloned().ok_or(Denied::Unknown)
    }
}

fn parse_file(path: &Path) -> Result<Vec<(String, String)>> {
    let text = std::fs::read_to_string(path).map_err(|source| Error::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let mut parts = line.split_whitespace();
        match (parts.next(), parts.next(), parts.next()) {
            (Some(name), Some(token), None) if token.len() >= 16 => {
                out.push((name.to_string(), token.to_string()))
            }
            _ => {
                return Err(Error::Config {
                    path: path.to_path_buf(),
                    line: i + 1,
                    column: 1,
                    message: "expected `NAME TOKEN` with a token of at least 16 characters".into(),
                })
            }
        }
    }
    Ok(out)
}
