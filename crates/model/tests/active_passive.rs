//! An active-passive service is served by exactly its primary, whatever changed it: a
//! topology that switches its mode, a manual route, or an evacuation.

use std::collections::BTreeSet;

use firebreak_model::failover::{Actor, ActorKind, Evacuation, Failover, Refusal, RouteChange};
use firebreak_model::topology::Topology;
use firebreak_model::SiteId;

fn ops() -> Actor {
    Actor {
        kind: ActorKind::Manual,
        name: "ops".into(),
    }
}

fn site(name: &str) -> SiteId {
    SiteId(name.into())
}

fn topology(mode: &str) -> Topology {
    serde_json::from_str(&format!(
        r#"{{"sites":[{{"name":"pangyo"}},{{"name":"gasan"}},{{"name":"busan"}}],
            "services":[{{"name":"payments","mode":"{mode}",
              "endpoints":{{"pangyo":"http://127.0.1.1:8001","gasan":"http://127.0.2.1:8001",
                           "busan":"http://127.0.3.1:8001"}},
              "priorities":["gasan"]}}]}}"#
    ))
    .unwrap()
}

fn served_by_primary_only(failover: &Failover) {
    let route = &failover.routing["payments"];
    let primary = route
        .primary
        .clone()
        .expect("an active-passive route names its primary");
    assert_eq!(route.serving, BTreeSet::from([primary]), "{route:?}");
}

#[test]
fn a_service_switched_to_active_passive_is_served_by_its_primary_at_once() {
    let mut failover = Failover::default();
    failover
        .apply_topology(topology("active-active"), &ops(), 0)
        .unwrap();
    assert_eq!(failover.routing["payments"].serving.len(), 3);
    failover
        .apply_topology(topology("active-passive"), &ops(), 1_000)
        .unwrap();
    served_by_primary_only(&failover);
    let route = &failover.routing["payments"];
    assert_eq!(route.primary, Some(site("gasan")), "the top priority");
    assert_eq!(route.epoch, 2, "reshaping the route is a routing change");
    // And back: active-active has no primary.
    failover
        .apply_topology(topology("active-active"), &ops(), 2_000)
        .unwrap();
    assert_eq!(failover.routing["payments"].primary, None);
    assert_eq!(failover.routing["payments"].epoch, 3);
}

#[test]
fn a_manual_route_must_serve_exactly_the_primary_of_an_active_passive_service() {
    let mut failover = Failover::default();
    failover
        .apply_topology(topology("active-passive"), &ops(), 0)
        .unwrap();
    let change = |serving: &[&str], primary: Option<&str>| RouteChange {
        service: "payments".into(),
        serving: serving.iter().map(|s| site(s)).collect(),
        primary: primary.map(site),
        actor: ops(),
        reason: "test".into(),
        overrides: vec![],
        at_ms: 3_600_000,
    };
    for (serving, primary) in [
        (&["pangyo", "gasan"][..], Some("pangyo")),
        (&["pangyo"][..], None),
        (&["pangyo"][..], Some("gasan")),
    ] {
        let refused = failover.clone().change_route(change(serving, primary));
        match refused {
            Err(Refusal::Invalid { message }) => assert!(
                message.contains("active-passive") && message.contains("primary"),
                "{message}"
            ),
            other => panic!("{serving:?} with primary {primary:?}: {other:?}"),
        }
    }
    failover
        .change_route(change(&["pangyo"], Some("pangyo")))
        .unwrap();
    served_by_primary_only(&failover);
}

#[test]
fn an_active_active_route_names_no_primary() {
    let mut failover = Failover::default();
    failover
        .apply_topology(topology("active-active"), &ops(), 0)
        .unwrap();
    let refused = failover.change_route(RouteChange {
        service: "payments".into(),
        serving: [site("pangyo")].into(),
        primary: Some(site("pangyo")),
        actor: ops(),
        reason: "test".into(),
        overrides: vec![],
        at_ms: 3_600_000,
    });
    assert!(
        matches!(refused, Err(Refusal::Invalid { .. })),
        "{refused:?}"
    );
}

#[test]
fn evacuating_the_primary_moves_the_whole_route() {
    let mut failover = Failover::default();
    failover
        .apply_topology(topology("active-passive"), &ops(), 0)
        .unwrap();
    let evacuation = Evacuation {
        actor: ops(),
        reason: "fire".into(),
        at_ms: 3_600_000,
        expires_at_ms: 7_200_000,
    };
    failover.evacuate(&site("gasan"), evacuation, &[]).unwrap();
    served_by_primary_only(&failover);
    assert_ne!(failover.routing["payments"].primary, Some(site("gasan")));
}
