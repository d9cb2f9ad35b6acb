//! The `site-replace` step: an operator replaces a burned site by a spare one, as
//! docs/membership.md tells a person to.
//!
//! ```text
//!   start the spare's node (join: true, an empty disk, a new id)
//!   ─► POST /v1/membership {"action": "site_replace", ...} to the admin listeners in turn,
//!      with the drill's operator token, until the control leader takes it
//!   ─► apply the topology without the dead site, the spare in as a witness (it runs no
//!      services), as docs/membership.md tells an operator to
//!   ─► the fault ends when both are done: the report shows how long it took
//! ```
//!
//! A refusal (a rule, a bad request) stops the drill: the playbook asked for something the
//! cluster must not do.

use std::time::Duration;

use serde_json::{json, Value};

use super::Drill;
use crate::driver::LocalSites;
use crate::error::{Error, Result};
use crate::history::FaultPhase;
use crate::playbook::Step;

/// Longest a replacement may take, the new voter's catch-up included.
const REPLACE_TIMEOUT: Duration = Duration::from_secs(120);

impl Drill<'_> {
    pub(super) async fn act_site_replace(
        &self,
        sites: &mut LocalSites,
        step: &Step,
    ) -> Result<String> {
        let spare = step
            .with
            .clone()
            .expect("validated: site-replace names `with`");
        let name = step.fault.name();
        self.record_fault(name, &step.target, FaultPhase::Start);
        sites.restore_site(&spare)?;
        let (id, addr) = sites.node_of(&spare);
        let body = json!({"action": "site_replace", "dead": step.target, "with": spare,
            "id": id, "addr": addr});
        let started = std::time::Instant::now();
        let outcome = post_membership(sites, &body).await.map_err(|last| {
            Error::CouldNotRun(format!(
                "site-replace {} with {spare}: {last}; see the logs: {}",
                step.target,
                sites.logs()
            ))
        })?;
        super::bring_up::apply_replaced_topology(self.playbook, sites, &step.target, &spare)
            .await?;
        self.record_fault(name, &step.target, FaultPhase::End);
        Ok(format!(
            "{} replaced by {spare} (node {id}) in {:.1} s: voters {}",
            step.target,
            started.elapsed().as_secs_f64(),
            outcome["voters"]
        ))
    }
}

/// POSTs a membership request to the admin listeners in turn until the control leader
/// takes it; a refusal (4xx) is final. The answer, or the last error.
async fn post_membership(sites: &LocalSites, body: &Value) -> std::result::Result<Value, String> {
    let http = sites
        .tls
        .apply(reqwest::Client::builder())
        .timeout(REPLACE_TIMEOUT)
        .connect_timeout(Duration::from_secs(1))
        .build()
        .map_err(|e| e.to_string())?;
    let deadline = tokio::time::Instant::now() + REPLACE_TIMEOUT;
    let mut last = String::new();
    while tokio::time::Instant::now() < deadline {
        for node in sites.admin_addrs() {
            let request = http
                .post(sites.tls.url(node, "/v1/membership"))
                .bearer_auth(&sites.token)
                .json(body);
            match request.send().await {
                Ok(r) if r.status().is_success() => {
                    return r.json().await.map_err(|e| format!("{node}: {e}"))
                }
                Ok(r) => {
                    let status = r.status();
                    last = format!("{node}: {status} {}", r.text().await.unwrap_or_default());
                    if status.is_client_error() {
                        return Err(last);
                    }
                }
                Err(e) => last = format!("{node}: {e}"),
            }
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    Err(last)
}
