//! The order in which a service asks the state group's nodes: its own site's node first,
//! then the others as configured, except that a node which lately did not answer at all
//! (a connection that timed out: a partition drops packets without a word) goes last.
//!
//! ```text
//!   nodes     [busan (own), pangyo, gasan]     pangyo timed out 3 s ago
//!   order     busan, gasan, pangyo
//! ```
//!
//! A node that answers, even with a refusal, is not suspect: it is up and will say when
//! it can serve. A silent one costs a whole request timeout, and a long-poll that fell
//! through to it held a messaging instance's pushes for the whole of a 20 s partition
//! (`site-isolation` on ssh hosts, where a partition drops packets).

/// The indices of `suspect.len()` nodes in the order to try them: those not suspect in
/// their configured order, then the suspect ones in theirs (still tried: they may be
/// the only ones left).
pub fn try_order(suspect: &[bool]) -> Vec<usize> {
    let (mut first, last): (Vec<usize>, Vec<usize>) =
        (0..suspect.len()).partition(|&i| !suspect[i]);
    first.extend(last);
    first
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_silent_node_goes_last_and_the_rest_keep_their_order() {
        assert_eq!(try_order(&[false, true, false]), vec![0, 2, 1]);
        assert_eq!(try_order(&[true, false, true]), vec![1, 0, 2]);
        assert_eq!(try_order(&[false, false]), vec![0, 1]);
        assert_eq!(try_order(&[true, true]), vec![0, 1]);
        assert!(try_order(&[]).is_empty());
    }
}
