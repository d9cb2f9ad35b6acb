//! Bearer tokens for operator endpoints. A token maps to a name, which the audit log
//! records as the actor; the same tokens must be configured on every node, because a
//! request to a follower is forwarded, with its token, to the leader, which checks again.
//!
//! A presented token is compared with every configured one in constant time (`subtle`),
//! all of them every time, so the time an answer takes says nothing about how much of a
//! guess was right. What is compared is the tokens' SHA-256 digests, which all have one
//! length: `subtle` answers a comparison of slices of different lengths at once, which
//! told a caller how long the tokens were. The node keeps only the digests. Every token, from the file or from `FIREBREAK_NODE_TOKENS`, is at
//! least [`MIN_TOKEN_CHARS`] long.

use std::path::Path;

use subtle::ConstantTimeEq;

use axum::http::HeaderMap;

use crate::config::AuthConfig;
use crate::{Error, Result};

/// Most tokens accepted.
const MAX_TOKENS: usize = 1024;
/// Shortest token accepted, from the file or the environment.
pub const MIN_TOKEN_CHARS: usize = 16;

/// A token's SHA-256 digest.
type Digest = [u8; 32];

fn digest(token: &str) -> Digest {
    let digest = ring::digest::digest(&ring::digest::SHA256, token.as_bytes());
    digest
        .as_ref()
        .try_into()
        .expect("a SHA-256 digest is 32 bytes")
}

/// The configured tokens.
#[derive(Debug, Default)]
pub struct Tokens {
    /// (digest of the token, name) pairs.
    pairs: Vec<(Digest, String)>,
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
            None => parse_env(&std::env::var("FIREBREAK_NODE_TOKENS").unwrap_or_default())?,
        };
        let pairs = pairs
            .into_iter()
            .take(MAX_TOKENS)
            .map(|(name, token)| (digest(&token), name))
            .collect();
        Ok(Self {
            pairs,
            protect_reads: config.protect_reads,
        })
    }

    /// How many tokens are configured.
    pub fn len(&self) -> usize {
        self.pairs.len()
    }

    /// Whether no token is configured (then every operator endpoint refuses).
    pub fn is_empty(&self) -> bool {
        self.pairs.is_empty()
    }

    /// Tokens from pairs, for tests and `firebreak up`.
    pub fn from_pairs(pairs: &[(&str, &str)]) -> Self {
        let pairs = pairs
            .iter()
            .map(|(name, token)| (digest(token), name.to_string()))
            .collect();
        Self {
            pairs,
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
        // Every configured token is compared, in constant time, whatever matched.
        let presented = digest(token);
        let mut found = None;
        for (secret, name) in &self.pairs {
            if bool::from(secret.ct_eq(&presented)) {
                found = Some(name);
            }
        }
        found.cloned().ok_or(Denied::Unknown)
    }
}

/// `NAME:TOKEN,NAME:TOKEN` from `FIREBREAK_NODE_TOKENS`, held to the file's rules.
fn parse_env(value: &str) -> Result<Vec<(String, String)>> {
    let mut out = Vec::new();
    for (i, pair) in value
        .split(',')
        .filter(|p| !p.trim().is_empty())
        .enumerate()
    {
        match pair.split_once(':') {
            Some((name, token))
                if !name.trim().is_empty() && token.trim().len() >= MIN_TOKEN_CHARS =>
            {
                out.push((name.trim().to_string(), token.trim().to_string()))
            }
            _ => {
                return Err(Error::Config {
                    path: "FIREBREAK_NODE_TOKENS".into(),
                    line: 1,
                    column: i + 1,
                    message: format!(
                        "pair {}: expected `NAME:TOKEN` with a token of at least {MIN_TOKEN_CHARS} characters",
                        i + 1
                    ),
                })
            }
        }
    }
    Ok(out)
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
            (Some(name), Some(token), None) if token.len() >= MIN_TOKEN_CHARS => {
                out.push((name.to_string(), token.to_string()))
            }
            _ => {
                return Err(Error::Config {
                    path: path.to_path_buf(),
                    line: i + 1,
                    column: 1,
                    message: format!(
                    "expected `NAME TOKEN` with a token of at least {MIN_TOKEN_CHARS} characters"
                ),
                })
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bearer(token: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert("authorization", format!("Bearer {token}").parse().unwrap());
        headers
    }

    #[test]
    fn only_a_configured_token_names_its_holder() {
        let tokens = Tokens::from_pairs(&[
            ("alice", "a-token-of-sixteen"),
            ("bob", "b-token-of-sixteen"),
        ]);
        assert_eq!(
            tokens.check(&bearer("b-token-of-sixteen")),
            Ok("bob".into())
        );
        assert_eq!(
            tokens.check(&bearer("b-token-of-sixtee")),
            Err(Denied::Unknown)
        );
        assert_eq!(tokens.check(&bearer("")), Err(Denied::Unknown));
        assert_eq!(tokens.check(&HeaderMap::new()), Err(Denied::Missing));
    }

    /// Digests of one length are compared, never the tokens themselves: a comparison of
    /// slices of different lengths ends at once and told how long the tokens are. Only
    /// the digests are kept, so no token is in the node's memory dumps or debug output.
    #[test]
    fn only_digests_of_one_length_are_kept_and_compared() {
        let tokens = Tokens::from_pairs(&[("alice", "a-token-of-sixteen-chars-and-more")]);
        let kept = format!("{tokens:?}");
        assert!(!kept.contains("a-token-of-sixteen"), "{kept}");
        assert!(tokens.pairs.iter().all(|(d, _)| d.len() == 32));
        assert_eq!(tokens.check(&bearer("a")), Err(Denied::Unknown));
        assert_eq!(
            tokens.check(&bearer("a-token-of-sixteen-chars-and-more")),
            Ok("alice".into())
        );
    }

    #[test]
    fn environment_tokens_are_held_to_the_minimum_length() {
        assert_eq!(
            parse_env("ci:0123456789abcdef").unwrap(),
            vec![("ci".to_string(), "0123456789abcdef".to_string())]
        );
        let err = parse_env("ci:0123456789abcdef,ops:short")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("pair 2") && err.contains("16 characters"),
            "{err}"
        );
        assert!(parse_env("").unwrap().is_empty());
    }
}
