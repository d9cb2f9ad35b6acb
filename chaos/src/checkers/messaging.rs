//! Messaging: every acknowledged message is stored once and delivered to every recipient
//! of its conversation exactly once and in order.
//!
//! This is the promise DESIGN.md makes for messaging (a per-conversation sequence from
//! the state group, resumption with `Last-Event-ID`), and the one the 2022 fire broke for
//! a national messenger. Per conversation:
//! - stored: every acknowledged `client_msg_id` at exactly one seq, the seq it was
//!   acknowledged with; a refused message never stored; an unknown one at most once;
//! - per recipient: no seq delivered twice (duplicated), none after a higher one
//!   (reordered), every acknowledged message delivered, or else found by the catch-up
//!   read at the end ("recovered": late, not lost); neither is lost.

use std::collections::{BTreeMap, BTreeSet};

use super::{secs, Finding};
use crate::history::{Completion, Event, Op, Operation, StoredMessage};

pub const PROPERTY: &str =
    "every acknowledged message delivered to every recipient once and in order";

/// Checks the messaging property over a history.
pub fn check(events: &[Event], ops: &[Operation]) -> Finding {
    let mut finding = Finding::new("messaging", PROPERTY);
    let mut acked: BTreeMap<&str, BTreeMap<&str, u64>> = BTreeMap::new();
    let mut refused: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for o in ops {
        let Op::Send {
            conversation,
            client_msg_id,
            ..
        } = &o.op
        else {
            continue;
        };
        match &o.completion {
            Some(Completion::Ok { body, .. }) => {
                let seq = body["seq"].as_u64().unwrap_or(0);
                acked
                    .entry(conversation)
                    .or_default()
                    .insert(client_msg_id, seq);
                finding.count("acknowledged", 1);
            }
            Some(Completion::Fail(_)) => {
                refused
                    .entry(conversation)
                    .or_default()
                    .insert(client_msg_id);
            }
            Some(Completion::Unknown(_)) | None => finding.count("unknown", 1),
        }
    }
    let stored: BTreeMap<&str, &[StoredMessage]> = events
        .iter()
        .filter_map(|e| match e {
            Event::Stored {
                conversation,
                messages,
                ..
            } => Some((conversation.as_str(), messages.as_slice())),
            _ => None,
        })
        .collect();
    for (conversation, messages) in &acked {
        match stored.get(conversation) {
            Some(kept) => check_stored(&mut finding, conversation, messages, kept, refused.get(conversation)),
            None => finding.violation(format!(
                "conversation {conversation}: never read back, so its {} acknowledged messages are unverified",
                messages.len()
            )),
        }
    }
    for (recipient, conversation) in recipients(events) {
        let messages = acked
            .get(conversation.as_str())
            .cloned()
            .unwrap_or_default();
        check_recipient(&mut finding, events, &recipient, &conversation, &messages);
    }
    finding
}

fn check_stored(
    finding: &mut Finding,
    conversation: &str,
    acked: &BTreeMap<&str, u64>,
    stored: &[StoredMessage],
    refused: Option<&BTreeSet<&str>>,
) {
    let mut at: BTreeMap<&str, Vec<u64>> = BTreeMap::new();
    for m in stored {
        at.entry(&m.client_msg_id).or_default().push(m.seq);
    }
    for (id, seqs) in &at {
        if seqs.len() > 1 {
            finding.count("duplicated", 1);
            finding.violation(format!(
                "conversation {conversation}: message {id} stored {} times (seqs {seqs:?})",
                seqs.len()
            ));
        }
        if refused.is_some_and(|r| r.contains(id)) {
            finding.violation(format!(
                "conversation {conversation}: message {id} was refused but stored at seq {}",
                seqs[0]
            ));
        }
    }
    for (id, seq) in acked {
        match at.get(id) {
            None => {
                finding.count("lost", 1);
                finding.violation(format!(
                    "conversation {conversation}: message {id} acknowledged as seq {seq} but not stored"
                ));
            }
            Some(seqs) if !seqs.contains(seq) => finding.violation(format!(
                "conversation {conversation}: message {id} acknowledged as seq {seq} but stored as {seqs:?}"
            )),
            Some(_) => {}
        }
    }
}

/// Recipients and the conversation each follows.
fn recipients(events: &[Event]) -> Vec<(String, String)> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::Follow {
                recipient,
                conversation,
                ..
            } => Some((recipient.clone(), conversation.clone())),
            _ => None,
        })
        .collect()
}

fn check_recipient(
    finding: &mut Finding,
    events: &[Event],
    recipient: &str,
    conversation: &str,
    acked: &BTreeMap<&str, u64>,
) {
    let mut seen: BTreeSet<u64> = BTreeSet::new();
    let mut delivered_ids: BTreeSet<&str> = BTreeSet::new();
    let mut recovered_ids: BTreeSet<&str> = BTreeSet::new();
    let mut highest = 0;
    for event in events {
        match event {
            Event::Deliver {
                at_ms,
                recipient: r,
                seq,
                client_msg_id,
                ..
            } if r == recipient => {
                if !seen.insert(*seq) {
                    finding.count("duplicated", 1);
                    finding.violation(format!(
                        "recipient {recipient}: seq {seq} ({client_msg_id}) delivered again at {}",
                        secs(*at_ms)
                    ));
                } else if *seq < highest {
                    finding.count("reordered", 1);
                    finding.violation(format!(
                        "recipient {recipient}: seq {seq} ({client_msg_id}) delivered after seq {highest} at {}",
                        secs(*at_ms)
                    ));
                }
                highest = highest.max(*seq);
                delivered_ids.insert(client_msg_id);
            }
            Event::Recovered {
                recipient: r,
                client_msg_id,
                ..
            } if r == recipient => {
                recovered_ids.insert(client_msg_id);
            }
            _ => {}
        }
    }
    for (id, seq) in acked {
        if delivered_ids.contains(id) {
            continue;
        }
        if recovered_ids.contains(id) {
            finding.count("recovered", 1);
        } else {
            finding.count("lost", 1);
            finding.violation(format!(
                "recipient {recipient} of {conversation}: acknowledged message {id} (seq {seq}) never delivered"
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::history::operations;

    /// A history: three acknowledged sends to `c`, stored in order, and the deliveries
    /// given as (seq, id) pairs.
    fn history(deliveries: &[(u64, &str)], stored: &[(u64, &str)]) -> Vec<Event> {
        let mut events = vec![Event::Follow {
            at_ms: 0,
            recipient: "r".into(),
            conversation: "c".into(),
        }];
        for (i, id) in ["m1", "m2", "m3"].iter().enumerate() {
            let id_num = i as u64 + 1;
            events.push(Event::Invoke {
                at_ms: 10 * id_num,
                id: id_num,
                op: Op::Send {
                    conversation: "c".into(),
                    client_msg_id: id.to_string(),
                    sender: "u".into(),
                },
            });
            events.push(Event::Ok {
                at_ms: 10 * id_num + 5,
                id: id_num,
                status: 201,
                body: json!({ "seq": id_num }),
                site: None,
            });
        }
        for (seq, id) in deliveries {
            events.push(Event::Deliver {
                at_ms: 100,
                recipient: "r".into(),
                conversation: "c".into(),
                seq: *seq,
                client_msg_id: id.to_string(),
            });
        }
        events.push(Event::Stored {
            at_ms: 200,
            conversation: "c".into(),
            messages: stored
                .iter()
                .map(|(seq, id)| StoredMessage {
                    seq: *seq,
                    client_msg_id: id.to_string(),
                })
                .collect(),
        });
        events
    }

    fn run(events: &[Event]) -> Finding {
        check(events, &operations(events))
    }

    const STORED: [(u64, &str); 3] = [(1, "m1"), (2, "m2"), (3, "m3")];

    #[test]
    fn a_clean_history_passes() {
        let f = run(&history(&STORED, &STORED));
        assert!(f.passed, "{:?}", f.violations);
        assert_eq!(f.get("acknowledged"), 3);
    }

    #[test]
    fn a_lost_message_is_caught() {
        let f = run(&history(&[(1, "m1"), (3, "m3")], &STORED));
        assert!(!f.passed);
        assert_eq!(f.get("lost"), 1);
        assert!(f.violations[0].contains("m2"), "{:?}", f.violations);
    }

    #[test]
    fn a_message_missing_from_the_store_is_lost() {
        let f = run(&history(&[(1, "m1"), (2, "m2")], &[(1, "m1"), (2, "m2")]));
        assert!(!f.passed);
        assert!(f
            .violations
            .iter()
            .any(|v| v.contains("m3") && v.contains("not stored")));
    }

    #[test]
    fn a_duplicated_delivery_is_caught() {
        let f = run(&history(
            &[(1, "m1"), (2, "m2"), (2, "m2"), (3, "m3")],
            &STORED,
        ));
        assert!(!f.passed);
        assert_eq!(f.get("duplicated"), 1);
    }

    #[test]
    fn a_message_stored_twice_is_caught() {
        let stored = [(1, "m1"), (2, "m2"), (3, "m3"), (4, "m2")];
        let f = run(&history(&STORED, &stored));
        assert!(!f.passed);
        assert!(
            f.violations[0].contains("stored 2 times"),
            "{:?}",
            f.violations
        );
    }

    #[test]
    fn a_reordered_delivery_is_caught() {
        let f = run(&history(&[(1, "m1"), (3, "m3"), (2, "m2")], &STORED));
        assert!(!f.passed);
        assert_eq!(f.get("reordered"), 1);
    }

    #[test]
    fn a_late_message_is_recovered_not_lost() {
        let mut events = history(&[(1, "m1"), (2, "m2")], &STORED);
        events.push(Event::Recovered {
            at_ms: 300,
            recipient: "r".into(),
            conversation: "c".into(),
            seq: 3,
            client_msg_id: "m3".into(),
        });
        let f = run(&events);
        assert!(f.passed, "{:?}", f.violations);
        assert_eq!(f.get("recovered"), 1);
    }
}
