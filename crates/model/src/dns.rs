//! What the embedded DNS server answers, as a pure function of the control state: the
//! node's edge (`firebreak_node::dns`) only turns these answers into DNS messages.
//!
//! ```text
//!   <zone>                    SOA, NS (one name server per site with nodes)
//!   <site>.<zone>             A/AAAA of that site's nodes (the name servers' glue)
//!   <service>.<zone>          A/AAAA/SRV of the serving sites' endpoints, best-ranked
//!                             first; the primary alone for active-passive
//!   _<service>._tcp.<zone>    SRV, the same
//!   <service>.<site>.<zone>   A/AAAA/SRV of that site's endpoint, serving or not
//!   anything else in <zone>   NXDOMAIN;  outside <zone>: refused
//! ```
//!
//! ANY is answered with one synthesized HINFO record (RFC 8482) where the name has
//! records: every record of a name in one small query is what a reflection attack asks for.
//!
//! An endpoint given as an IP address answers A or AAAA, and its SRV target is the
//! per-site name; one given as a host name has no address record here, and its SRV target
//! is that host name.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use crate::control::ControlState;
use crate::topology::{ServiceSpec, Topology};
use crate::SiteId;

/// The record types asked about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueryType {
    A,
    Aaaa,
    Srv,
    Ns,
    Soa,
    /// Every type the name has.
    Any,
    /// A type this server never holds (MX, TXT, ...).
    Other,
}

/// The data of one record; names are absolute, lower case, with the final dot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecordData {
    A(Ipv4Addr),
    Aaaa(Ipv6Addr),
    Srv {
        port: u16,
        target: String,
    },
    Ns(String),
    Soa {
        mname: String,
        rname: String,
        serial: u32,
    },
    /// The answer to ANY (RFC 8482): CPU `RFC8482`, OS empty.
    Hinfo,
}

/// One record of an answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub name: String,
    pub data: RecordData,
}

/// The answer to one question.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// The name exists; these are its records of the type asked (none: NODATA).
    Records(Vec<Record>),
    /// The name does not exist in the zone.
    NxDomain,
    /// The name is outside the zone: not ours to answer.
    NotOurs,
}

/// Normalizes a zone or query name: lower case, one final dot.
pub fn absolute(name: &str) -> String {
    let name = name.trim_end_matches('.').to_ascii_lowercase();
    format!("{name}.")
}

/// Where an endpoint (`http://10.0.0.1:8001`, `https://[::1]:443/`, `http://pay.example:80`)
/// lives: its address, or its host name and port.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Place {
    Addr(SocketAddr),
    Host(String, u16),
}

fn place(endpoint: &str) -> Option<Place> {
    let rest = endpoint
        .split_once("://")
        .map_or(endpoint, |(_, rest)| rest);
    let authority = rest.split('/').next()?;
    if let Ok(addr) = authority.parse::<SocketAddr>() {
        return Some(Place::Addr(addr));
    }
    let (host, port) = authority.rsplit_once(':')?;
    Some(Place::Host(absolute(host), port.parse().ok()?))
}

/// Answers `qtype` for `name` in `zone` from `state` (the node's applied replica).
pub fn lookup(state: &ControlState, zone: &str, name: &str, qtype: QueryType) -> Answer {
    match records_of(state, zone, name, qtype) {
        Answer::Records(records) if qtype == QueryType::Any && !records.is_empty() => {
            Answer::Records(vec![Record {
                name: absolute(name),
                data: RecordData::Hinfo,
            }])
        }
        answer => answer,
    }
}

/// Every record of `qtype` that `name` has (ANY: all of them).
fn records_of(state: &ControlState, zone: &str, name: &str, qtype: QueryType) -> Answer {
    let (zone, name) = (absolute(zone), absolute(name));
    // The zone is whole labels: `paymentssvc.firebreak.` ends with `svc.firebreak.` as
    // text only.
    let Some(relative) = name
        .strip_suffix(&zone)
        .filter(|r| r.is_empty() || r.ends_with('.'))
    else {
        return Answer::NotOurs;
    };
    if relative.is_empty() {
        return Answer::Records(apex(state, &zone, qtype));
    }
    let labels: Vec<&str> = relative.trim_end_matches('.').split('.').collect();
    let Some(topology) = &state.failover.topology else {
        return Answer::NxDomain;
    };
    let records = match labels[..] {
        [site] if state.sites.contains_key(&SiteId(site.into())) => {
            glue(state, &SiteId(site.into()), &name)
        }
        [service] => match topology.service(service) {
            Some(spec) => serving(state, spec, &zone, &name, qtype),
            None => return Answer::NxDomain,
        },
        [srv, "_tcp"] => match srv.strip_prefix('_').and_then(|s| topology.service(s)) {
            Some(spec) => serving(state, spec, &zone, &name, qtype),
            None => return Answer::NxDomain,
        },
        [service, site] => {
            let site = SiteId(site.into());
            match topology.service(service) {
                Some(spec) if spec.endpoints.contains_key(&site) => {
                    endpoint_records(spec, &site, &zone, &name, qtype)
                }
                _ => return Answer::NxDomain,
            }
        }
        _ => return Answer::NxDomain,
    };
    Answer::Records(
        records
            .into_iter()
            .filter(|r| wanted(&r.data, qtype))
            .collect(),
    )
}

fn wanted(data: &RecordData, qtype: QueryType) -> bool {
    matches!(
        (data, qtype),
        (_, QueryType::Any)
            | (RecordData::A(_), QueryType::A)
            | (RecordData::Aaaa(_), QueryType::Aaaa)
            | (RecordData::Srv { .. }, QueryType::Srv)
            | (RecordData::Ns(_), QueryType::Ns)
            | (RecordData::Soa { .. }, QueryType::Soa)
    )
}

/// The zone's name servers: one name per site with registered nodes.
pub fn name_servers(state: &ControlState, zone: &str) -> Vec<Record> {
    let zone = absolute(zone);
    state
        .sites
        .iter()
        .filter(|(_, record)| !record.nodes.is_empty())
        .map(|(site, _)| Record {
            name: zone.clone(),
            data: RecordData::Ns(format!("{site}.{zone}")),
        })
        .collect()
}

/// The zone's SOA record; its serial is the control group's clock in seconds, which moves
/// whenever anything is applied.
pub fn soa(state: &ControlState, zone: &str) -> Record {
    let zone = absolute(zone);
    let mname = name_servers(state, &zone)
        .into_iter()
        .find_map(|r| match r.data {
            RecordData::Ns(name) => Some(name),
            _ => None,
        })
        .unwrap_or_else(|| zone.clone());
    Record {
        name: zone.clone(),
        data: RecordData::Soa {
            mname,
            rname: format!("hostmaster.{zone}"),
            serial: (state.clock_ms / 1000) as u32,
        },
    }
}

fn apex(state: &ControlState, zone: &str, qtype: QueryType) -> Vec<Record> {
    let mut records = Vec::new();
    if matches!(qtype, QueryType::Soa | QueryType::Any) {
        records.push(soa(state, zone));
    }
    if matches!(qtype, QueryType::Ns | QueryType::Any) {
        records.extend(name_servers(state, zone));
    }
    records
}

/// A and AAAA of a site's nodes, from the addresses they registered.
fn glue(state: &ControlState, site: &SiteId, name: &str) -> Vec<Record> {
    let nodes = state.sites.get(site).map(|s| &s.nodes);
    nodes
        .into_iter()
        .flatten()
        .filter_map(|id| state.members.get(id))
        .filter_map(|member| match place(&member.addr)? {
            Place::Addr(addr) => Some(address(name, addr.ip())),
            Place::Host(..) => None,
        })
        .collect()
}

fn address(name: &str, ip: IpAddr) -> Record {
    Record {
        name: name.to_string(),
        data: match ip {
            IpAddr::V4(ip) => RecordData::A(ip),
            IpAddr::V6(ip) => RecordData::Aaaa(ip),
        },
    }
}

/// The records of the sites serving `spec` now, best-ranked first.
fn serving(
    state: &ControlState,
    spec: &ServiceSpec,
    zone: &str,
    name: &str,
    qtype: QueryType,
) -> Vec<Record> {
    let Some(route) = state.failover.routing.get(&spec.name) else {
        return Vec::new();
    };
    Topology::ranked_sites(spec)
        .into_iter()
        .filter(|site| route.serving.contains(site))
        .flat_map(|site| endpoint_records(spec, &site, zone, name, qtype))
        .collect()
}

/// The records of `spec`'s endpoint in `site`, named `name`.
fn endpoint_records(
    spec: &ServiceSpec,
    site: &SiteId,
    zone: &str,
    name: &str,
    qtype: QueryType,
) -> Vec<Record> {
    let Some(place) = spec.endpoints.get(site).and_then(|e| place(e)) else {
        return Vec::new();
    };
    let (port, target, ip) = match place {
        Place::Addr(addr) => (
            addr.port(),
            format!("{}.{site}.{zone}", spec.name),
            Some(addr.ip()),
        ),
        Place::Host(host, port) => (port, host, None),
    };
    let mut records: Vec<Record> = ip.map(|ip| address(name, ip)).into_iter().collect();
    if matches!(qtype, QueryType::Srv | QueryType::Any) {
        records.push(Record {
            name: name.to_string(),
            data: RecordData::Srv { port, target },
        });
    }
    records
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_are_read_as_addresses_or_host_names() {
        assert_eq!(
            place("http://127.0.1.1:8001"),
            Some(Place::Addr("127.0.1.1:8001".parse().unwrap()))
        );
        assert_eq!(
            place("https://[::1]:443/base"),
            Some(Place::Addr("[::1]:443".parse().unwrap()))
        );
        assert_eq!(
            place("http://Pay.Example:80"),
            Some(Place::Host("pay.example.".into(), 80))
        );
        assert_eq!(place("http://no-port"), None);
    }

    #[test]
    fn names_are_compared_in_lower_case_with_one_final_dot() {
        assert_eq!(absolute("Svc.Firebreak"), "svc.firebreak.");
        assert_eq!(absolute("svc.firebreak."), "svc.firebreak.");
    }
}
