//! The CLI's HTTP client: tries every given node in turn, so that no command depends on
//! one site being alive.
//!
//! A node that cannot be reached, or answers that it cannot serve (503, 429), is skipped
//! and the next one tried. A write whose outcome is unknown (504) is never retried here:
//! it is reported as unknown (exit 5).

use std::time::Duration;

use anyhow::Result;
use reqwest::{Method, StatusCode};
use serde_json::Value;

use crate::exit::{self, fail};

/// Default node addresses (client listeners): the three sites of `firebreak up`.
pub const DEFAULT_NODES: &str = "127.0.1.1:7001,127.0.2.1:7001,127.0.3.1:7001";
/// Default admin listeners: the three sites of `firebreak up`.
pub const DEFAULT_ADMIN_NODES: &str = "127.0.1.1:7006,127.0.2.1:7006,127.0.3.1:7006";

/// Node addresses as every cluster command takes them.
#[derive(clap::Args, Clone)]
pub struct Nodes {
    /// Comma-separated `host:port` of the nodes' client listeners (keys), tried in turn.
    #[arg(long, env = "FIREBREAK_NODES", default_value = DEFAULT_NODES, value_delimiter = ',')]
    pub nodes: Vec<String>,
    /// Comma-separated `host:port` of the nodes' admin listeners (operator commands,
    /// status), tried in turn.
    #[arg(long, env = "FIREBREAK_ADMIN_NODES", default_value = DEFAULT_ADMIN_NODES, value_delimiter = ',')]
    pub admin_nodes: Vec<String>,
    /// Per-node request timeout in milliseconds.
    #[arg(long, default_value_t = 5000)]
    pub timeout_ms: u64,
    /// File holding the operator token (else FIREBREAK_TOKEN).
    #[arg(long)]
    pub token_file: Option<std::path::PathBuf>,
    /// The cluster CA's certificate; `firebreak up` writes it to `<data-dir>/ca/ca.pem`.
    #[arg(long, env = "FIREBREAK_CA", default_value = "firebreak-data/ca/ca.pem")]
    pub ca: std::path::PathBuf,
    /// An operator certificate to present (with --key), instead of or beside a token.
    #[arg(long = "cert", env = "FIREBREAK_CERT", requires = "operator_key")]
    pub operator_cert: Option<std::path::PathBuf>,
    /// The operator certificate's key.
    #[arg(long = "key", env = "FIREBREAK_KEY", requires = "operator_cert")]
    pub operator_key: Option<std::path::PathBuf>,
    /// Plain HTTP, for nodes run with `tls.plaintext_for_debugging` only.
    #[arg(long)]
    pub plaintext_for_debugging: bool,
}

impl Nodes {
    /// TLS as the flags say; a missing CA file is a usage error that says where to look.
    pub fn tls(&self) -> Result<firebreak_tls::ClientTls> {
        if self.plaintext_for_debugging {
            return Ok(firebreak_tls::ClientTls::plaintext_for_debugging());
        }
        if !self.ca.exists() {
            return Err(fail(
                exit::USAGE,
                format!(
                    "no CA certificate at {}: pass --ca FILE or set FIREBREAK_CA to the cluster CA's certificate (`firebreak up` writes it to <data-dir>/ca/ca.pem)",
                    self.ca.display()
                ),
            ));
        }
        let keys = match (&self.operator_cert, &self.operator_key) {
            (Some(cert), Some(key)) => Some(
                firebreak_tls::Keys::load(firebreak_tls::KeyFiles {
                    cert: cert.clone(),
                    key: key.clone(),
                })
                .map_err(|e| fail(exit::USAGE, e.to_string()))?,
            ),
            _ => None,
        };
        firebreak_tls::ClientTls::new(&self.ca, keys).map_err(|e| fail(exit::USAGE, e.to_string()))
    }

    pub fn token(&self) -> Result<Option<String>> {
        match &self.token_file {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|e| {
                    fail(
                        exit::USAGE,
                        format!("failed to read --token-file {}: {e}", path.display()),
                    )
                })?;
                Ok(Some(text.trim().to_string()))
            }
            None => Ok(std::env::var("FIREBREAK_TOKEN")
                .ok()
                .filter(|t| !t.is_empty())),
        }
    }
}

/// A client for a list of nodes.
pub struct Client {
    nodes: Vec<String>,
    http: reqwest::Client,
    tls: firebreak_tls::ClientTls,
    token: Option<String>,
}

impl Client {
    /// A client of the nodes' client listeners (keys).
    pub fn new(nodes: &Nodes) -> Result<Self> {
        Self::of(nodes, &nodes.nodes, "--nodes")
    }

    /// A client of the nodes' admin listeners (operator commands, status).
    pub fn admin(nodes: &Nodes) -> Result<Self> {
        Self::of(nodes, &nodes.admin_nodes, "--admin-nodes")
    }

    fn of(nodes: &Nodes, addrs: &[String], flag: &str) -> Result<Self> {
        if addrs.is_empty() {
            return Err(fail(
                exit::USAGE,
                format!("no node addresses given: pass {flag} host:port,..."),
            ));
        }
        let tls = nodes.tls()?;
        let http = tls
            .apply(reqwest::Client::builder())
            .timeout(Duration::from_millis(nodes.timeout_ms))
            .connect_timeout(Duration::from_millis(nodes.timeout_ms.min(1000)))
            .build()?;
        Ok(Self {
            nodes: addrs.to_vec(),
            http,
            tls,
            token: nodes.token()?,
        })
    }

    pub fn nodes(&self) -> &[String] {
        &self.nodes
    }

    /// The operator token this client sends, if any.
    pub fn token(&self) -> Option<&str> {
        self.token.as_deref()
    }

    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }

    /// The URL of `path` on `node`.
    pub fn url(&self, node: &str, path: &str) -> String {
        self.tls.url(node, path)
    }

    /// Sends a request to the first node that can serve it; returns the JSON answer.
    pub async fn send(
        &self,
        method: Method,
        path_and_query: &str,
        body: Option<&Value>,
    ) -> Result<Value> {
        let mut tried = Vec::new();
        for node in &self.nodes {
            let mut request = self
                .http
                .request(method.clone(), self.url(node, path_and_query));
            if let Some(body) = body {
                request = request.json(body);
            }
            if let Some(token) = &self.token {
                request = request.bearer_auth(token);
            }
            let response = match request.send().await {
                Ok(response) => response,
                Err(err) if err.is_connect() || method == Method::GET => {
                    tried.push(format!("{node}: {err}"));
                    continue;
                }
                Err(err) => {
                    return Err(fail(exit::UNKNOWN, format!("{node} took the write but did not answer ({err}): outcome unknown; read the key to find out")))
                }
            };
            let status = response.status();
            let value: Value = response.json().await.unwrap_or(Value::Null);
            let message = value["error"]["message"].as_str().unwrap_or("").to_string();
            match status {
                s if s.is_success() => return Ok(value),
                StatusCode::SERVICE_UNAVAILABLE | StatusCode::TOO_MANY_REQUESTS => {
                    tried.push(format!("{node}: {message}"));
                }
                StatusCode::GATEWAY_TIMEOUT => {
                    return Err(fail(
                        exit::UNKNOWN,
                        format!("{node}: {message}; the write may or may not have committed"),
                    ))
                }
                StatusCode::BAD_REQUEST | StatusCode::PAYLOAD_TOO_LARGE => {
                    return Err(fail(
                        exit::USAGE,
                        format!("{node} refused the request: {message}"),
                    ))
                }
                StatusCode::CONFLICT => return Err(fail(exit::BLOCKED, message)),
                StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => {
                    return Err(fail(exit::UNAUTHORIZED, format!("{node}: {message}")))
                }
                _ => return Err(anyhow::anyhow!("{node} answered {status}: {message}")),
            }
        }
        Err(fail(
            exit::UNAVAILABLE,
            format!("no node could serve the request:\n  {}", tried.join("\n  ")),
        ))
    }
}
