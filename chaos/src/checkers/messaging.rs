//! Messaging: every acknowledged message is stored once and delivered to every recipient
//! of its conversation exactly once and in order.
//!
//! This is the promise DESIGN.md makes for messaging (a per-conversation sequence from
//! the state group, resumption with `Last-Event-ID`), and the one the 2022 fire broke for
//! a national messenger. Per conversation:
//! - stored: every acknowledged `client_msg_id` at exactly one seq, the seq it was
//!   acknowledged with; a refused message never stored; an unknown one at most once;
//! - per recipient, on the raw record of what its push stream received (before the
//!   client's dedupe, so that the server's faults show): no seq pushed twice
//!   (duplicated), none after a higher one (reordered), no stored seq jumped over
//!   (skipped); every acknowledged message pushed, or else, after the last one pushed,
//!   found by the catch-up read at the end ("recovered": late, not lost);
//! - with `expect.push_delay_secs_max`: every acknowledged message pushed to every
//!   recipient within that long of its acknowledgement (a recovered one was never pushed
//!   and breaks it too). The longest delay is counted either way (`push_delay_max_ms`).

use std::collections::{BTreeMap, BTreeSet};

use super::{secs, Finding};
use crate::history::{Completion, Event, Op, Operation, StoredMessage};

pub const PROPERTY: &str =
    "every acknowledged message delivered to every recipient once and in order";

/// Checks the messaging property over a history; `push_delay_max` bounds how late a push
/// may arrive after its message was acknowledged.
pub fn check(
    events: &[Event],
    ops: &[Operation],
    push_delay_max: Option<std::time::Duration>,
) -> Finding {
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
            None => finding.could_not_verify(format!(
                "conversation {conversation}: it was not read back, so neither are its {} acknowledged messages",
                messages.len()
            )),
        }
    }
    for (recipient, conversation) in recipients(events) {
        let messages = acked
            .get(conversation.as_str())
            .cloned()
            .unwrap_or_default();
        let kept = stored.get(conversation.as_str()).copied();
        check_recipient(
            &mut finding,
            events,
            (&recipient, &conversation),
            &messages,
            kept,
        );
    }
    check_push_delay(&mut finding, events, ops, push_delay_max);
    finding
}

/// The longest time from a message's acknowledgement to its push to a recipient.
fn check_push_delay(
    finding: &mut Finding,
    events: &[Event],
    ops: &[Operation],
    limit: Option<std::time::Duration>,
) {
    let acked_at: BTreeMap<(&str, &str), u64> = ops
        .iter()
        .filter(|o| o.is_ok())
        .filter_map(|o| match &o.op {
            Op::Send {
                conversation,
                client_msg_id,
                ..
            } => Some((
                (conversation.as_str(), client_msg_id.as_str()),
                o.completed_ms?,
            )),
            _ => None,
        })
        .collect();
    let limit_ms = limit.map(|l| l.as_millis() as u64);
    let mut longest = 0;
    for event in events {
        let Event::Deliver {
            at_ms,
            recipient,
            conversation,
            client_msg_id,
            ..
        } = event
        else {
            continue;
        };
        let Some(acked) = acked_at.get(&(conversation.as_str(), client_msg_id.as_str())) else {
            continue;
        };
        let delay = at_ms.saturating_sub(*acked);
        longest = longest.max(delay);
        if limit_ms.is_some_and(|l| delay > l) {
            finding.count("pushed_late", 1);
            finding.violation(format!(
                "recipient {recipient}: {client_msg_id} of {conversation} pushed {} after it was acknowledged; the playbook allows {}",
                secs(delay),
                secs(limit_ms.unwrap_or(0))
            ));
        }
    }
    finding.count("push_delay_max_ms", longest);
    if limit.is_some() && finding.get("recovered") > 0 {
        finding.violation(format!(
            "{} acknowledged messages were never pushed (only the catch-up read found them)",
            finding.get("recovered")
        ));
    }
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

/// One recipient's raw record: every message its stream received, in order, as the server
/// sent it. A seq received twice is duplicated; one below a seq received before it is
/// reordered; a stored seq that the stream jumped over is skipped (a gap), even if the
/// catch-up read found it later. Only messages after the last one pushed may be recovered.
fn check_recipient(
    finding: &mut Finding,
    events: &[Event],
    (recipient, conversation): (&str, &str),
    acked: &BTreeMap<&str, u64>,
    stored: Option<&[StoredMessage]>,
) {
    let stored_seqs: BTreeSet<u64> = stored.unwrap_or_default().iter().map(|m| m.seq).collect();
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
                via,
                ..
            } if r == recipient => {
                let when = format!("at {} via {via}", secs(*at_ms));
                if !seen.insert(*seq) {
                    finding.count("duplicated", 1);
                    finding.violation(format!(
                        "recipient {recipient}: seq {seq} ({client_msg_id}) pushed again {when}"
                    ));
                } else if *seq < highest {
                    finding.count("reordered", 1);
                    finding.violation(format!(
                        "recipient {recipient}: seq {seq} ({client_msg_id}) pushed after seq {highest} {when}"
                    ));
                } else {
                    skipped(finding, recipient, &stored_seqs, (highest, *seq), &when);
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
        } else if stored.is_none() {
            // Not read back: the conversation is "could not verify" already, not lost.
        } else {
            finding.count("lost", 1);
            finding.violation(format!(
                "recipient {recipient} of {conversation}: acknowledged message {id} (seq {seq}) never delivered"
            ));
        }
    }
}

/// Stored seqs strictly between the highest pushed so far and the one just pushed: the
/// stream skipped them.
fn skipped(
    finding: &mut Finding,
    recipient: &str,
    stored: &BTreeSet<u64>,
    (highest, seq): (u64, u64),
    when: &str,
) {
    let gap: Vec<u64> = stored.range(highest + 1..seq).copied().collect();
    if gap.is_empty() {
        return;
    }
    finding.count("skipped", gap.len() as u64);
    finding.violation(format!(
        "recipient {recipient}: seq {seq} pushed {when} right after seq {highest}, skipping stored seqs {gap:?}"
    ));
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
                    body_bytes: None,
                },
            });
            events.push(Event::Ok {
                at_ms: 10 * id_num + 5,
                id: id_num,
                status: 201,
                body: json!({ "seq": id_num }),
                site: None,
                epoch: None,
            });
        }
        for (seq, id) in deliveries {
            events.push(Event::Deliver {
                at_ms: 100,
                recipient: "r".into(),
                conversation: "c".into(),
                seq: *seq,
                client_msg_id: id.to_string(),
                via: "127.0.0.1:7000".into(),
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
        check(events, &operations(events), None)
    }

    /// Pushes arrive at 100 ms, 65 to 85 ms after their acknowledgements.
    #[test]
    fn a_late_push_breaks_the_delay_bound() {
        use std::time::Duration;
        let events = history(&STORED, &STORED);
        let ops = operations(&events);
        let within = check(&events, &ops, Some(Duration::from_secs(1)));
        assert!(within.passed, "{:?}", within.violations);
        assert_eq!(within.get("push_delay_max_ms"), 85);
        let late = check(&events, &ops, Some(Duration::from_millis(70)));
        assert!(!late.passed);
        assert_eq!(late.get("pushed_late"), 2);
        assert!(
            late.violations[0].contains("m1 of c pushed 0.1 s after it was acknowledged"),
            "{:?}",
            late.violations
        );
    }

    #[test]
    fn a_message_never_pushed_breaks_the_delay_bound() {
        let mut events = history(&[(1, "m1"), (2, "m2")], &STORED);
        events.push(recovered(3, "m3"));
        let ops = operations(&events);
        assert!(
            check(&events, &ops, None).passed,
            "recovered is late, not lost"
        );
        let bounded = check(&events, &ops, Some(std::time::Duration::from_secs(5)));
        assert!(!bounded.passed);
        assert!(bounded.violations[0].contains("1 acknowledged messages were never pushed"));
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
        let f = run(&history(&[(1, "m1"), (2, "m2")], &STORED));
        assert!(!f.passed);
        assert_eq!(f.get("lost"), 1);
        assert!(f.violations[0].contains("m3"), "{:?}", f.violations);
    }

    /// A stream that jumps over a stored message breaks the order, even if the catch-up
    /// read finds it at the end.
    #[test]
    fn a_skipped_message_is_caught_even_when_recovered() {
        let mut events = history(&[(1, "m1"), (3, "m3")], &STORED);
        events.push(recovered(2, "m2"));
        let f = run(&events);
        assert!(!f.passed);
        assert_eq!(f.get("skipped"), 1);
        assert!(
            f.violations[0].contains("seq 3 pushed at 0.1 s via 127.0.0.1:7000 right after seq 1, skipping stored seqs [2]"),
            "{:?}",
            f.violations
        );
    }

    fn recovered(seq: u64, id: &str) -> Event {
        Event::Recovered {
            at_ms: 300,
            recipient: "r".into(),
            conversation: "c".into(),
            seq,
            client_msg_id: id.into(),
        }
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
        events.push(recovered(3, "m3"));
        let f = run(&events);
        assert!(f.passed, "{:?}", f.violations);
        assert_eq!(f.get("recovered"), 1);
    }
}
