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

use serde_json::json;

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
        let outcome = super::bring_up::post_membership(sites, &body, REPLACE_TIMEOUT)
            .await
            .map_err(|last| {
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
