//! Login: a session acknowledged to a user stays valid after any fault: it validates when
//! checked during the drill and in the read-back at the end.
//!
//! This is the promise that a session made in one site survives that site (sessions live
//! in the state group, DESIGN.md); in the 2022 fire, users were logged out of services
//! whose login lived in the burning building.

use std::collections::BTreeMap;

use super::{secs, Finding};
use crate::history::{Completion, Event, Op, Operation};

pub const PROPERTY: &str = "every acknowledged session still validates after the faults";

/// Checks the login property over a history.
pub fn check(events: &[Event], ops: &[Operation]) -> Finding {
    let mut finding = Finding::new("login", PROPERTY);
    // Token → when its login was acknowledged.
    let mut sessions: BTreeMap<&str, u64> = BTreeMap::new();
    for o in ops {
        match (&o.op, &o.completion) {
            (Op::Login { .. }, Some(Completion::Ok { body, .. })) => {
                if let Some(token) = body["token"].as_str() {
                    sessions.insert(token, o.completed_ms.unwrap_or(o.invoked_ms));
                    finding.count("acknowledged", 1);
                }
            }
            (Op::Login { .. }, Some(Completion::Unknown(_)) | None) => finding.count("unknown", 1),
            _ => {}
        }
    }
    for o in ops {
        let (Op::Validate { token }, Some(Completion::Ok { status, .. })) = (&o.op, &o.completion)
        else {
            continue;
        };
        if *status != 200 {
            if let Some(made) = sessions
                .get(token.as_str())
                .filter(|made| **made <= o.invoked_ms)
            {
                finding.count("invalid", 1);
                finding.violation(format!(
                    "session acknowledged at {} refused ({status}) at {}",
                    secs(*made),
                    secs(o.invoked_ms)
                ));
            }
        }
    }
    let mut checked: BTreeMap<&str, bool> = BTreeMap::new();
    for event in events {
        if let Event::Session { token, valid, .. } = event {
            checked.insert(token, *valid);
        }
    }
    for (token, made) in &sessions {
        match checked.get(token) {
            Some(true) => {}
            Some(false) => {
                finding.count("invalid", 1);
                finding.violation(format!(
                    "session acknowledged at {} is invalid at the end",
                    secs(*made)
                ));
            }
            None => finding.could_not_verify(format!(
                "the session acknowledged at {}: it was not read back",
                secs(*made)
            )),
        }
    }
    finding
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::history::operations;

    fn history(valid_at_end: bool, validate_status: u16) -> Vec<Event> {
        vec![
            Event::Invoke {
                at_ms: 0,
                id: 1,
                op: Op::Login { user: "u".into() },
            },
            Event::Ok {
                at_ms: 5,
                id: 1,
                status: 201,
                body: json!({ "token": "s1" }),
                site: None,
                epoch: None,
            },
            Event::Invoke {
                at_ms: 50,
                id: 2,
                op: Op::Validate { token: "s1".into() },
            },
            Event::Ok {
                at_ms: 55,
                id: 2,
                status: validate_status,
                body: json!({}),
                site: None,
                epoch: None,
            },
            Event::Session {
                at_ms: 100,
                token: "s1".into(),
                valid: valid_at_end,
            },
        ]
    }

    fn run(events: &[Event]) -> Finding {
        check(events, &operations(events))
    }

    #[test]
    fn a_clean_history_passes() {
        let f = run(&history(true, 200));
        assert!(f.passed, "{:?}", f.violations);
    }

    #[test]
    fn a_session_invalid_at_the_end_is_caught() {
        let f = run(&history(false, 200));
        assert!(!f.passed);
        assert_eq!(f.get("invalid"), 1);
    }

    #[test]
    fn a_session_refused_during_the_drill_is_caught() {
        let f = run(&history(true, 401));
        assert!(!f.passed);
        assert!(
            f.violations[0].contains("refused (401)"),
            "{:?}",
            f.violations
        );
    }
}
