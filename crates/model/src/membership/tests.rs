use super::*;
use crate::failover::ActorKind;

/// Three sites, one voter each (node 1 pangyo, 2 gasan, 3 busan), all up.
fn three_sites() -> View {
    let voters: BTreeMap<NodeId, SiteId> = [(1, "pangyo"), (2, "gasan"), (3, "busan")]
        .into_iter()
        .map(|(id, site)| (NodeId(id), SiteId::from(site)))
        .collect();
    View {
        sites_up: voters.values().cloned().collect(),
        voters,
        ..View::default()
    }
}

fn node_add(id: u64, site: &str) -> Request {
    node_add_voter(id, site, false)
}

fn node_add_voter(id: u64, site: &str, voter: bool) -> Request {
    Request::NodeAdd {
        id: NodeId(id),
        site: site.into(),
        addr: "127.0.0.9:7100".into(),
        voter,
    }
}

fn replace(dead: &str, with: &str, id: u64) -> Request {
    Request::SiteReplace {
        dead: dead.into(),
        with: with.into(),
        id: NodeId(id),
        addr: "127.0.0.9:7100".into(),
        force: false,
    }
}

fn ids(list: &[u64]) -> BTreeSet<NodeId> {
    list.iter().map(|id| NodeId(*id)).collect()
}

fn rule(view: &View, request: &Request) -> Rule {
    plan(view, request, 1_000).unwrap_err().rule
}

#[test]
fn a_second_node_in_a_site_joins_as_a_learner_and_a_first_one_as_a_voter() {
    let view = three_sites();
    let plan = plan(&view, &node_add(4, "pangyo"), 0).unwrap();
    assert_eq!(plan.voters, ids(&[1, 2, 3]), "pangyo already has a voter");
    assert!(!plan.promotes());
    let plan = super::plan(
        &view,
        &Request::SiteAdd {
            site: "anyang".into(),
            id: NodeId(4),
            addr: "127.0.0.4:7100".into(),
        },
        0,
    )
    .unwrap();
    assert_eq!(plan.voters, ids(&[1, 2, 3, 4]));
    assert!(plan.promotes());
}

#[test]
fn a_burned_site_is_replaced_in_one_change() {
    let mut view = three_sites();
    view.sites_up.remove(&SiteId::from("pangyo"));
    let plan = plan(&view, &replace("pangyo", "anyang", 4), 0).unwrap();
    assert_eq!(plan.voters, ids(&[2, 3, 4]));
    assert_eq!(plan.remove, ids(&[1]));
    assert!(plan.promotes());
}

#[test]
fn a_healthy_voter_is_removed_only_with_force() {
    let view = three_sites();
    assert_eq!(
        rule(&view, &replace("pangyo", "anyang", 4)),
        Rule::HealthyVoter
    );
    let forced = Request::SiteReplace {
        dead: "pangyo".into(),
        with: "anyang".into(),
        id: NodeId(4),
        addr: "127.0.0.9:7100".into(),
        force: true,
    };
    assert!(plan(&view, &forced, 0).is_ok());
}

#[test]
fn the_control_leader_does_not_remove_itself() {
    let mut view = three_sites();
    view.leader = NodeId(1);
    let request = Request::NodeRemove {
        id: NodeId(1),
        force: true,
    };
    let refusal = plan(&view, &request, 0).unwrap_err();
    assert_eq!(refusal.rule, Rule::Target);
    assert!(refusal.detail.contains("cannot remove itself"), "{refusal}");
}

#[test]
fn voters_never_drop_below_three_sites() {
    let mut view = three_sites();
    view.sites_up.clear();
    let request = Request::SiteRemove {
        site: "busan".into(),
        force: false,
    };
    let refusal = plan(&view, &request, 0).unwrap_err();
    assert_eq!(refusal.rule, Rule::SurvivalGoal);
    assert!(
        refusal.detail.contains("2 site(s) (gasan, pangyo)"),
        "{refusal}"
    );
}

#[test]
fn no_site_may_hold_a_majority_of_the_voters() {
    let view = three_sites();
    let request = node_add_voter(4, "pangyo", true);
    // pangyo with 2 of 4 voters is not a majority; with 3 of 5 it is.
    assert!(plan(&view, &request, 0).is_ok());
    let mut view = view;
    view.voters.insert(NodeId(4), "pangyo".into());
    let request = node_add_voter(5, "pangyo", true);
    let refusal = plan(&view, &request, 0).unwrap_err();
    assert_eq!(refusal.rule, Rule::SiteMajority);
    assert!(refusal.detail.contains("3 of 5"), "{refusal}");
}

#[test]
fn an_id_is_never_used_twice() {
    let mut view = three_sites();
    assert_eq!(rule(&view, &node_add(2, "anyang")), Rule::IdReused);
    view.tombstones.insert(NodeId(7));
    let refusal = plan(&view, &node_add(7, "anyang"), 0).unwrap_err();
    assert_eq!(refusal.rule, Rule::IdReused);
    assert!(refusal.detail.contains("never used again"), "{refusal}");
}

#[test]
fn one_change_at_a_time_until_an_abandoned_one_lapses_or_its_leader_is_gone() {
    let mut view = three_sites();
    view.running = Some(Change {
        what: "node-add 4 in pangyo".into(),
        actor: Actor {
            kind: ActorKind::Manual,
            name: "ops".into(),
        },
        at_ms: 1_000,
        leader: NodeId(3),
    });
    view.leader = NodeId(3);
    let request = node_add(5, "gasan");
    let refusal = plan(&view, &request, 2_000).unwrap_err();
    assert_eq!(refusal.rule, Rule::OneAtATime);
    assert!(
        refusal.detail.contains("node-add 4 in pangyo (by ops)"),
        "{refusal}"
    );
    assert!(plan(&view, &request, 1_000 + MAX_CHANGE_MS).is_ok());
    // A change whose leader lost its leadership is abandoned at once: its steps fail
    // on a node that no longer leads, and the new leader may go ahead.
    view.leader = NodeId(2);
    assert!(plan(&view, &request, 2_000).is_ok());
}

#[test]
fn unknown_targets_are_refused_by_name() {
    let view = three_sites();
    let request = Request::NodeRemove {
        id: NodeId(9),
        force: false,
    };
    assert_eq!(rule(&view, &request), Rule::Target);
    assert_eq!(rule(&view, &replace("jeju", "anyang", 4)), Rule::Target);
    assert_eq!(rule(&view, &replace("pangyo", "gasan", 4)), Rule::Target);
}

#[test]
fn bad_fields_are_named() {
    let mut request = replace("pangyo", "pangyo", 4);
    assert_eq!(request.validate().unwrap_err().field, "with");
    request = Request::NodeAdd {
        id: NodeId(4),
        site: "pangyo".into(),
        addr: "no-port".into(),
        voter: false,
    };
    assert_eq!(request.validate().unwrap_err().field, "addr");
    request = node_add(4, "Pangyo!");
    assert_eq!(request.validate().unwrap_err().field, "site");
}

#[test]
fn a_learner_is_not_caught_up_while_it_lags() {
    let mut catch_up = CatchUp::default();
    assert!(!catch_up.observe(None, 0), "nothing acknowledged yet");
    assert!(!catch_up.observe(Some(5), 100));
    assert!(
        !catch_up.observe(Some(CATCH_UP_MAX_LAG + 1), 1_000),
        "lagging again"
    );
    assert!(!catch_up.observe(Some(0), 1_100));
    assert!(
        !catch_up.observe(Some(0), 1_100 + CATCH_UP_STABLE_MS - 1),
        "the stable period restarted when it lagged"
    );
    assert!(catch_up.observe(Some(0), 1_100 + CATCH_UP_STABLE_MS));
}
