//! Whether a voter that lost its leader may start an election: pre-vote semantics, decided
//! on the answers of the other voters (the node asks them; see `firebreak_node`'s
//! `election_gate`).
//!
//! ```text
//!   every configuration of the membership (two while a change is joint):
//!     the voters that answered "I hear no leader" (this node included) are a majority
//!       of that configuration                                         ─► elect on
//!   otherwise                                                         ─► elect off
//! ```
//!
//! A majority, not unanimity: one voter that still hears a leader (it may be the only one
//! a partially cut-off leader still reaches, or it may lie) cannot hold back an election
//! that a majority wants, and a leader that a majority cannot hear cannot serve writes
//! anyway. A node cut off from the others gets no majority of answers, so it keeps its
//! term instead of raising it at every timeout and deposing the healthy leader on its
//! return. A joint membership needs a majority of each configuration, as Raft's own
//! quorums do: counted over the union, the old voters alone could elect.

use std::collections::BTreeSet;

use crate::NodeId;

/// What one voter answered when asked whether it hears a leader; `None`: no answer in time.
pub type Answer = Option<bool>;

/// Whether a voter may start an election, given the membership's configurations and what
/// each other voter answered ([`Answer`]: `Some(true)` if it hears a leader). The asking
/// voter counts as one that hears none.
pub fn may_elect(me: NodeId, configs: &[BTreeSet<NodeId>], answers: &[(NodeId, Answer)]) -> bool {
    let hears_none: BTreeSet<NodeId> = answers
        .iter()
        .filter(|(_, answer)| *answer == Some(false))
        .map(|(id, _)| *id)
        .chain([me])
        .collect();
    !configs.is_empty()
        && configs.iter().all(|voters| {
            let without_leader = voters.intersection(&hears_none).count();
            without_leader * 2 > voters.len()
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(ids: &[u64]) -> BTreeSet<NodeId> {
        ids.iter().map(|i| NodeId(*i)).collect()
    }

    fn answers(hears: &[u64], hears_none: &[u64]) -> Vec<(NodeId, Answer)> {
        let mut out: Vec<(NodeId, Answer)> =
            hears.iter().map(|i| (NodeId(*i), Some(true))).collect();
        out.extend(hears_none.iter().map(|i| (NodeId(*i), Some(false))));
        out
    }

    #[test]
    fn a_partial_partition_elects_although_one_voter_still_hears_the_leader() {
        // Leader 1 reaches 5 only; 2, 3 and 4 hear no one.
        let five = [ids(&[1, 2, 3, 4, 5])];
        let mut asked = answers(&[5], &[3, 4]);
        asked.push((NodeId(1), None));
        assert!(may_elect(NodeId(2), &five, &asked));
    }

    #[test]
    fn one_voter_that_hears_a_leader_cannot_veto_a_majority() {
        let three = [ids(&[1, 2, 3])];
        assert!(may_elect(NodeId(1), &three, &answers(&[3], &[2])));
    }

    #[test]
    fn a_majority_that_hears_the_leader_keeps_the_gate_shut() {
        // This node's own link flaps; the others hear the leader fine.
        let five = [ids(&[1, 2, 3, 4, 5])];
        assert!(!may_elect(NodeId(2), &five, &answers(&[1, 3, 4], &[5])));
    }

    #[test]
    fn a_node_cut_off_from_everyone_keeps_its_term() {
        let three = [ids(&[1, 2, 3])];
        let silence = [(NodeId(2), None), (NodeId(3), None)];
        assert!(!may_elect(NodeId(1), &three, &silence));
    }

    #[test]
    fn a_joint_membership_needs_a_majority_of_each_configuration() {
        // Moving from {1,2,3} to {3,4,5}: 1, 2 and 3 hear no leader, 4 and 5 do. Counted
        // over the union that is 3 of 5; the new configuration has only one of three.
        let joint = [ids(&[1, 2, 3]), ids(&[3, 4, 5])];
        let asked = answers(&[4, 5], &[2, 3]);
        assert!(!may_elect(NodeId(1), &joint, &asked));
        let asked = answers(&[5], &[2, 3, 4]);
        assert!(may_elect(NodeId(1), &joint, &asked));
    }

    #[test]
    fn no_configuration_no_election() {
        assert!(!may_elect(NodeId(1), &[], &[]));
    }
}
