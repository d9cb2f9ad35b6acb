//! The topology: which sites exist, which services run where, how their health is checked,
//! and the failover policy. Operators write it in YAML and apply it with
//! `firebreak topology apply FILE`; it lives in the control group.
//!
//! Validation refuses what would make failover unsafe or meaningless, naming the field:
//! fewer than three voting sites (the two-site quorum trap), endpoints in unknown or
//! witness sites, priorities that name sites without an endpoint, nonsensical timings.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::{InvalidInput, Result, SiteId};

/// Most services one topology may hold.
pub const MAX_SERVICES: usize = 256;
/// Most sites one topology may hold.
pub const MAX_SITES: usize = 32;
/// Longest service name.
pub const MAX_SERVICE_NAME_BYTES: usize = 63;

/// Checks a service name: 1 to [`MAX_SERVICE_NAME_BYTES`] of a-z, 0-9 and '-'.
pub fn check_service_name(field: &str, name: &str) -> Result<()> {
    crate::ids::check_name(field, "service", name, MAX_SERVICE_NAME_BYTES)
}
/// Longest endpoint URL.
pub const MAX_ENDPOINT_BYTES: usize = 512;

/// Sites, services and policy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Topology {
    /// Every site of the cluster, voting or witness.
    pub sites: Vec<SiteSpec>,
    /// The services failover keeps alive.
    #[serde(default)]
    pub services: Vec<ServiceSpec>,
    /// Timings and limits of automation.
    #[serde(default)]
    pub policy: Policy,
}

/// One site.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SiteSpec {
    pub name: SiteId,
    /// A witness votes in Raft (breaking two-site ties) but serves nothing.
    #[serde(default)]
    pub witness: bool,
}

/// How a service is spread over its sites.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    /// Served from every healthy site at once.
    ActiveActive,
    /// Served from one primary site, named with an epoch that grows at every change.
    ActivePassive,
}

/// One service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceSpec {
    pub name: String,
    pub mode: Mode,
    /// Base URL of the service's instance in each site that runs it.
    pub endpoints: BTreeMap<SiteId, String>,
    /// How each site's agent checks its own instance.
    #[serde(default)]
    pub health: HealthCheck,
    /// Preferred sites first (the primary for active-passive); sites left out follow in
    /// name order.
    #[serde(default)]
    pub priorities: Vec<SiteId>,
    /// Writes that may be sent again after their outcome became unknown, as
    /// `"METHOD /path"` with `*` for one segment: the ones the service deduplicates.
    /// GET and HEAD are always safe; see [`crate::retry`].
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub retry_safe: Vec<String>,
}

impl ServiceSpec {
    /// Whether a `method` request to `path` may be sent again after a lost answer.
    pub fn retry_safe(&self, method: &str, path: &str) -> bool {
        crate::retry::is_safe(&self.retry_safe, method, path)
    }
}

/// An HTTP health check, run by the agent of the site the endpoint is in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HealthCheck {
    /// Path appended to the endpoint; 2xx means healthy.
    pub path: String,
    pub interval_ms: u64,
    pub timeout_ms: u64,
    /// Consecutive failures before the instance is reported unhealthy.
    pub fall: u32,
    /// Consecutive successes before it is reported healthy again.
    pub rise: u32,
}

impl Default for HealthCheck {
    fn default() -> Self {
        Self {
            path: "/health".into(),
            interval_ms: 1000,
            timeout_ms: 500,
            fall: 3,
            rise: 2,
        }
    }
}

/// Timings and limits of automatic failover.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Policy {
    /// How often every node renews its site's lease.
    pub lease_interval_ms: u64,
    /// A site whose lease is older than this is down. Pick it well above the lease interval
    /// plus an election (a new leader needs time to see renewals): 2 s on one machine; across
    /// sites, at least 4 lease intervals plus the Raft leader-loss gap.
    pub site_down_after_ms: u64,
    /// Renewals in a row a site that was down must make before it serves again.
    pub site_rise: u32,
    /// Least time between two routing changes of one service, so flapping cannot flip it.
    pub dwell_ms: u64,
    /// Most sites automation may hold out of one service at once; beyond it, automation
    /// fails static (the fault is more likely on the observer's side).
    pub max_sites_down_auto: usize,
    /// Audit entries kept; older ones are counted as archived.
    pub audit_keep: usize,
}

impl Default for Policy {
    fn default() -> Self {
        Self {
            lease_interval_ms: 500,
            site_down_after_ms: 2000,
            site_rise: 3,
            dwell_ms: 5000,
            max_sites_down_auto: 1,
            audit_keep: 10_000,
        }
    }
}

impl Topology {
    /// The spec of `site`, if it exists.
    pub fn site(&self, site: &SiteId) -> Option<&SiteSpec> {
        self.sites.iter().find(|s| &s.name == site)
    }

    /// The spec of `service`, if it exists.
    pub fn service(&self, name: &str) -> Option<&ServiceSpec> {
        self.services.iter().find(|s| s.name == name)
    }

    /// Checks every rule; a topology that passes is safe to apply.
    pub fn validate(&self) -> Result<()> {
        if self.sites.len() > MAX_SITES {
            return Err(InvalidInput::new(
                "sites",
                format!("{} sites exceed the limit of {MAX_SITES}", self.sites.len()),
            ));
        }
        let mut names = BTreeSet::new();
        for (i, site) in self.sites.iter().enumerate() {
            site.name.validate(&format!("sites[{i}].name"))?;
            if !names.insert(&site.name) {
                return Err(InvalidInput::new(
                    format!("sites[{i}].name"),
                    format!("site {} appears twice", site.name),
                ));
            }
        }
        if self.sites.len() < 3 {
            return Err(InvalidInput::new(
                "sites",
                format!(
                    "{} voting site(s); firebreak needs at least 3 (or 2 plus a witness): with two \
                     sites, losing either one loses the Raft quorum, so the survivor could decide \
                     nothing, which is exactly when failover is needed",
                    self.sites.len()
                ),
            ));
        }
        if self.services.len() > MAX_SERVICES {
            return Err(InvalidInput::new(
                "services",
                format!(
                    "{} services exceed the limit of {MAX_SERVICES}",
                    self.services.len()
                ),
            ));
        }
        let mut services = BTreeSet::new();
        for (i, service) in self.services.iter().enumerate() {
            self.validate_service(&format!("services[{i}]"), service)?;
            if !services.insert(&service.name) {
                return Err(InvalidInput::new(
                    format!("services[{i}].name"),
                    format!("service {} appears twice", service.name),
                ));
            }
        }
        self.policy.validate()
    }

    fn validate_service(&self, at: &str, service: &ServiceSpec) -> Result<()> {
        check_service_name(&format!("{at}.name"), &service.name)?;
        if self.sites.iter().any(|s| s.name.0 == service.name) {
            return Err(InvalidInput::new(
                format!("{at}.name"),
                format!(
                    "{} is also a site's name: in DNS `<name>.<zone>` must mean one of them; rename the service",
                    service.name
                ),
            ));
        }
        if service.endpoints.is_empty() {
            return Err(InvalidInput::new(
                format!("{at}.endpoints"),
                "a service needs an endpoint in at least one site",
            ));
        }
        let known: Vec<String> = self.sites.iter().map(|s| s.name.to_string()).collect();
        for (site, url) in &service.endpoints {
            let field = format!("{at}.endpoints.{site}");
            match self.site(site) {
                None => {
                    return Err(InvalidInput::new(
                        field,
                        format!("unknown site {site}; sites are {}", known.join(", ")),
                    ))
                }
                Some(spec) if spec.witness => {
                    return Err(InvalidInput::new(
                        field,
                        format!("site {site} is a witness: it votes but serves nothing"),
                    ))
                }
                Some(_) => {}
            }
            if !(url.starts_with("http://") || url.starts_with("https://"))
                || url.len() > MAX_ENDPOINT_BYTES
            {
                return Err(InvalidInput::new(field, format!("endpoint {url:?} must be an http:// or https:// URL of at most {MAX_ENDPOINT_BYTES} bytes")));
            }
        }
        let mut seen = BTreeSet::new();
        for (i, site) in service.priorities.iter().enumerate() {
            if !service.endpoints.contains_key(site) {
                return Err(InvalidInput::new(
                    format!("{at}.priorities[{i}]"),
                    format!("site {site} has no endpoint for this service"),
                ));
            }
            if !seen.insert(site) {
                return Err(InvalidInput::new(
                    format!("{at}.priorities[{i}]"),
                    format!("site {site} appears twice"),
                ));
            }
        }
        crate::retry::check_rules(&format!("{at}.retry_safe"), &service.retry_safe)?;
        let h = &service.health;
        if !h.path.starts_with('/') {
            return Err(InvalidInput::new(
                format!("{at}.health.path"),
                "must start with /",
            ));
        }
        if h.interval_ms == 0 || h.timeout_ms == 0 || h.timeout_ms >= h.interval_ms {
            return Err(InvalidInput::new(
                format!("{at}.health.timeout_ms"),
                "must be above 0 and below interval_ms",
            ));
        }
        if h.fall == 0 || h.rise == 0 {
            return Err(InvalidInput::new(
                format!("{at}.health"),
                "fall and rise must be at least 1",
            ));
        }
        Ok(())
    }

    /// A service's sites with an endpoint, most preferred first.
    pub fn ranked_sites(service: &ServiceSpec) -> Vec<SiteId> {
        let mut out: Vec<SiteId> = service.priorities.clone();
        out.extend(
            service
                .endpoints
                .keys()
                .filter(|s| !service.priorities.contains(s))
                .cloned(),
        );
        out
    }
}

impl Policy {
    fn validate(&self) -> Result<()> {
        if self.lease_interval_ms == 0 {
            return Err(InvalidInput::new(
                "policy.lease_interval_ms",
                "must be above 0",
            ));
        }
        if self.site_down_after_ms < 2 * self.lease_interval_ms {
            return Err(InvalidInput::new(
                "policy.site_down_after_ms",
                format!("must be at least two lease intervals ({} ms), or one late renewal takes a site down", 2 * self.lease_interval_ms),
            ));
        }
        if self.site_rise == 0 {
            return Err(InvalidInput::new("policy.site_rise", "must be at least 1"));
        }
        if self.audit_keep == 0 || self.audit_keep > 1_000_000 {
            return Err(InvalidInput::new(
                "policy.audit_keep",
                "must be 1 to 1,000,000",
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn three_sites() -> Topology {
        serde_yaml_like(
            r#"{"sites":[{"name":"pangyo"},{"name":"gasan"},{"name":"busan"}],
                "services":[{"name":"payments","mode":"active-passive",
                             "endpoints":{"pangyo":"http://127.0.1.1:8001","gasan":"http://127.0.2.1:8001"},
                             "priorities":["pangyo"]}]}"#,
        )
    }

    fn serde_yaml_like(json: &str) -> Topology {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn good_topology_validates() {
        three_sites().validate().unwrap();
    }

    #[test]
    fn each_rule_names_its_field() {
        type Mutation = Box<dyn Fn(&mut Topology)>;
        let cases: Vec<(Mutation, &str, &str)> = vec![
            (
                Box::new(|t| t.sites.truncate(2)),
                "sites",
                "loses the Raft quorum",
            ),
            (
                Box::new(|t| t.sites[2].name = "pangyo".into()),
                "sites[2].name",
                "twice",
            ),
            (
                Box::new(|t| {
                    t.services[0]
                        .endpoints
                        .insert("mars".into(), "http://x".into());
                }),
                "services[0].endpoints.mars",
                "unknown site mars",
            ),
            (
                Box::new(|t| {
                    t.sites[2].witness = true;
                    t.services[0]
                        .endpoints
                        .insert("busan".into(), "http://x".into());
                }),
                "services[0].endpoints.busan",
                "witness",
            ),
            (
                Box::new(|t| t.services[0].priorities = vec!["busan".into()]),
                "services[0].priorities[0]",
                "no endpoint",
            ),
            (
                Box::new(|t| t.services[0].health.timeout_ms = 5000),
                "services[0].health.timeout_ms",
                "below",
            ),
            (
                Box::new(|t| t.policy.site_down_after_ms = 600),
                "policy.site_down_after_ms",
                "two lease",
            ),
        ];
        for (mutate, field, needle) in cases {
            let mut topology = three_sites();
            mutate(&mut topology);
            let err = topology.validate().unwrap_err();
            assert_eq!(err.field, field, "{err}");
            assert!(err.reason.contains(needle), "{err}");
        }
    }

    #[test]
    fn two_sites_plus_a_witness_is_enough() {
        let mut topology = three_sites();
        topology.sites[2].witness = true;
        topology.validate().unwrap();
    }

    #[test]
    fn ranked_sites_follow_priorities_then_names() {
        let topology = three_sites();
        assert_eq!(
            Topology::ranked_sites(&topology.services[0]),
            vec![SiteId::from("pangyo"), SiteId::from("gasan")]
        );
    }
}
