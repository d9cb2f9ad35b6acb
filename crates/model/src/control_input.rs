//! What control input is acceptable: every field of every control command, checked before
//! it is proposed (by the node's edge: operator endpoints, internal forwards, automation).
//!
//! A command that passes is safe to propose: no field is over its limit and the whole
//! command, encoded as the log stores it, is under [`MAX_COMMAND_BYTES`], so no request
//! can reach the store's entry limit and stop the group. Apply does not call this: a limit
//! that changes between versions must not make two replicas apply one entry differently.

use crate::control::{ControlCommand, MAX_ADDR_BYTES};
use crate::failover::{Actor, RouteChange, Rule, MAX_EVACUATION_MS, MAX_TEXT_BYTES};
use crate::ids::quote;
use crate::kv::MAX_COMMAND_BYTES;
use crate::topology::{check_service_name, MAX_SITES};
use crate::{InvalidInput, Result};

/// Longest actor name (an operator token's name).
pub const MAX_ACTOR_NAME_BYTES: usize = 128;
/// Most rules one command may override (there are three).
const MAX_OVERRIDES: usize = 3;

impl ControlCommand {
    /// Checks the command's input; a command that passes is safe to propose.
    pub fn validate(&self) -> Result<()> {
        match self {
            ControlCommand::RegisterMember { member, .. } => {
                member.site.validate("member.site")?;
                if member.addr.is_empty() || member.addr.len() > MAX_ADDR_BYTES {
                    return Err(InvalidInput::new(
                        "member.addr",
                        format!("an address must be 1 to {MAX_ADDR_BYTES} bytes of host:port"),
                    ));
                }
            }
            ControlCommand::Ping => {}
            ControlCommand::ApplyTopology {
                topology, actor, ..
            } => {
                topology.validate()?;
                check_actor(actor)?;
            }
            ControlCommand::RenewLease { site, .. } => site.validate("site")?,
            ControlCommand::ReportHealth { service, site, .. } => {
                check_service_name("service", service)?;
                site.validate("site")?;
            }
            ControlCommand::Route(change) => check_route(change)?,
            ControlCommand::Evacuate {
                site,
                actor,
                reason,
                overrides,
                expires_at_ms,
                at_ms,
            } => {
                site.validate("site")?;
                check_actor(actor)?;
                check_text("reason", reason)?;
                check_overrides(overrides)?;
                if *expires_at_ms <= *at_ms || expires_at_ms - at_ms > MAX_EVACUATION_MS {
                    return Err(InvalidInput::new(
                        "expires_in_ms",
                        "an evacuation must expire within 72 hours (and after it starts)",
                    ));
                }
            }
            ControlCommand::Restore {
                site,
                actor,
                reason,
                ..
            } => {
                site.validate("site")?;
                check_actor(actor)?;
                check_text("reason", reason)?;
            }
            ControlCommand::Freeze { actor, reason, .. } => {
                check_actor(actor)?;
                check_text("reason", reason)?;
            }
            ControlCommand::Unfreeze { actor, .. } => check_actor(actor)?,
            ControlCommand::BeginMembership { change } => {
                check_actor(&change.actor)?;
                check_text("change", &change.what)?;
            }
            ControlCommand::EndMembership {
                tombstones, error, ..
            } => {
                if tombstones.len() > crate::membership::MAX_NODES {
                    return Err(InvalidInput::new(
                        "tombstones",
                        format!("more than {} ids", crate::membership::MAX_NODES),
                    ));
                }
                if let Some(error) = error {
                    check_text("error", error)?;
                }
            }
            ControlCommand::NodeSeen { .. } => {}
            ControlCommand::HookResult {
                hook,
                service,
                error,
                ..
            } => {
                check_service_name("hook", hook)?;
                check_service_name("service", service)?;
                if let Some(error) = error {
                    check_text("error", error)?;
                }
            }
        }
        check_encoded(self)
    }
}

fn check_route(change: &RouteChange) -> Result<()> {
    check_service_name("service", &change.service)?;
    if change.serving.len() > MAX_SITES {
        return Err(InvalidInput::new(
            "serving",
            format!(
                "{} sites exceed the limit of {MAX_SITES}",
                change.serving.len()
            ),
        ));
    }
    for site in &change.serving {
        site.validate("serving")?;
    }
    if let Some(primary) = &change.primary {
        primary.validate("primary")?;
    }
    check_actor(&change.actor)?;
    check_text("reason", &change.reason)?;
    check_overrides(&change.overrides)
}

fn check_actor(actor: &Actor) -> Result<()> {
    if actor.name.is_empty() || actor.name.len() > MAX_ACTOR_NAME_BYTES {
        return Err(InvalidInput::new(
            "actor.name",
            format!(
                "actor name {} must be 1 to {MAX_ACTOR_NAME_BYTES} bytes (it is the operator token's name)",
                quote(&actor.name)
            ),
        ));
    }
    Ok(())
}

/// A reason or other free text: what the audit log keeps.
fn check_text(field: &str, text: &str) -> Result<()> {
    if text.trim().is_empty() || text.len() > MAX_TEXT_BYTES {
        return Err(InvalidInput::new(
            field,
            format!(
                "must be 1 to {MAX_TEXT_BYTES} bytes, not blank; got {} bytes",
                text.len()
            ),
        ));
    }
    Ok(())
}

fn check_overrides(overrides: &[Rule]) -> Result<()> {
    if overrides.len() > MAX_OVERRIDES {
        return Err(InvalidInput::new(
            "overrides",
            format!("at most {MAX_OVERRIDES} rules (each rule once)"),
        ));
    }
    Ok(())
}

fn check_encoded(command: &ControlCommand) -> Result<()> {
    let encoded = serde_json::to_vec(command).map_or(usize::MAX, |b| b.len());
    if encoded > MAX_COMMAND_BYTES {
        return Err(InvalidInput::new(
            "command",
            format!("{encoded} bytes once encoded exceed the limit of {MAX_COMMAND_BYTES}"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::failover::ActorKind;
    use crate::SiteId;

    fn operator() -> Actor {
        Actor {
            kind: ActorKind::Manual,
            name: "ops".into(),
        }
    }

    fn refused_field(command: ControlCommand) -> String {
        command.validate().expect_err("refused").field
    }

    #[test]
    fn every_field_is_bounded_at_its_limit() {
        let freeze = |n: usize| ControlCommand::Freeze {
            actor: operator(),
            reason: "r".repeat(n),
            at_ms: 0,
        };
        assert!(freeze(MAX_TEXT_BYTES).validate().is_ok());
        assert_eq!(refused_field(freeze(MAX_TEXT_BYTES + 1)), "reason");
        assert_eq!(refused_field(freeze(0)), "reason");
        let lease = |n: usize| ControlCommand::RenewLease {
            site: SiteId("s".repeat(n)),
            at_ms: 0,
        };
        assert!(lease(63).validate().is_ok());
        assert_eq!(refused_field(lease(64)), "site");
        assert_eq!(refused_field(lease(200_000)), "site");
        let health = |service: String| ControlCommand::ReportHealth {
            service,
            site: "pangyo".into(),
            healthy: true,
            at_ms: 0,
        };
        assert!(health("s".repeat(63)).validate().is_ok());
        assert_eq!(refused_field(health("s".repeat(64))), "service");
        assert_eq!(refused_field(health("Payments".into())), "service");
        let unfreeze = ControlCommand::Unfreeze {
            actor: Actor {
                kind: ActorKind::Manual,
                name: "a".repeat(MAX_ACTOR_NAME_BYTES + 1),
            },
            at_ms: 0,
        };
        assert_eq!(refused_field(unfreeze), "actor.name");
    }

    #[test]
    fn a_huge_input_is_not_echoed_back() {
        let err = ControlCommand::RenewLease {
            site: SiteId("s".repeat(200_000)),
            at_ms: 0,
        }
        .validate()
        .unwrap_err();
        assert!(err.reason.len() < 256, "{}", err.reason.len());
        assert!(err.reason.contains("200000 bytes"), "{}", err.reason);
    }
}
