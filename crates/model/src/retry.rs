//! Which requests to a service may be sent again after their outcome became unknown: the
//! service's `retry_safe` routes in the topology, declared by whoever knows what the
//! service deduplicates, never guessed from a request header.
//!
//! ```text
//!   retry_safe: ["POST /messaging/conversations/*/messages", "POST /payments/transfers"]
//!   GET, HEAD ─► always safe (HTTP's safe methods)
//!   other     ─► safe only when a rule matches: same method, same number of segments,
//!                each segment equal or `*`
//! ```
//!
//! The gateway tries another site after a lost answer only for a safe request; for any
//! other one it answers 504 `outcome_unknown`, because the instance may have applied it.

use crate::ids::quote;
use crate::{InvalidInput, Result};

/// Most `retry_safe` rules one service may declare.
pub const MAX_RULES: usize = 32;
/// Longest rule.
pub const MAX_RULE_BYTES: usize = 256;
/// Methods a rule may name (GET and HEAD need no rule).
const METHODS: [&str; 4] = ["POST", "PUT", "PATCH", "DELETE"];

/// Checks the rules of `field` (e.g. `services[2].retry_safe`).
pub fn check_rules(field: &str, rules: &[String]) -> Result<()> {
    if rules.len() > MAX_RULES {
        return Err(InvalidInput::new(
            field,
            format!("{} rules exceed the limit of {MAX_RULES}", rules.len()),
        ));
    }
    for (i, rule) in rules.iter().enumerate() {
        let ok = rule.len() <= MAX_RULE_BYTES
            && match rule.split_once(' ') {
                Some((method, path)) => {
                    METHODS.contains(&method)
                        && path.starts_with('/')
                        && !path.contains(['?', '#', ' '])
                        && !path.split('/').skip(1).any(str::is_empty)
                }
                None => false,
            };
        if !ok {
            return Err(InvalidInput::new(
                format!("{field}[{i}]"),
                format!(
                    "rule {} must be \"METHOD /path\" of at most {MAX_RULE_BYTES} bytes: METHOD \
                     one of {}, path segments not empty, `*` for any one segment \
                     (e.g. \"POST /payments/transfers\")",
                    quote(rule),
                    METHODS.join(", ")
                ),
            ));
        }
    }
    Ok(())
}

/// Whether a `method` request to `path` (its query ignored) may be sent again after its
/// outcome became unknown.
pub fn is_safe(rules: &[String], method: &str, path: &str) -> bool {
    if method == "GET" || method == "HEAD" {
        return true;
    }
    let path = path.split(['?', '#']).next().unwrap_or(path);
    rules.iter().any(|rule| {
        let Some((rule_method, pattern)) = rule.split_once(' ') else {
            return false;
        };
        let mut wanted = pattern.split('/');
        let mut got = path.split('/');
        rule_method == method
            && loop {
                match (wanted.next(), got.next()) {
                    (None, None) => break true,
                    (Some(w), Some(g)) if w == g || (w == "*" && !g.is_empty()) => {}
                    _ => break false,
                }
            }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules() -> Vec<String> {
        vec![
            "POST /messaging/conversations/*/messages".into(),
            "POST /payments/transfers".into(),
        ]
    }

    #[test]
    fn reads_are_safe_and_writes_only_as_declared() {
        let r = rules();
        assert!(is_safe(&r, "GET", "/payments/accounts/a"));
        assert!(is_safe(&r, "HEAD", "/anything"));
        assert!(is_safe(&r, "POST", "/payments/transfers"));
        assert!(is_safe(&r, "POST", "/payments/transfers?trace=1"));
        assert!(is_safe(&r, "POST", "/messaging/conversations/c1/messages"));
        assert!(!is_safe(&r, "PUT", "/payments/transfers"));
        assert!(!is_safe(&r, "POST", "/payments/accounts"));
        assert!(!is_safe(&r, "POST", "/payments/transfers/x"));
        assert!(!is_safe(&r, "POST", "/messaging/conversations//messages"));
        assert!(!is_safe(
            &r,
            "POST",
            "/messaging/conversations/c1/messages/2"
        ));
        assert!(!is_safe(&[], "DELETE", "/login/sessions/t"));
    }

    #[test]
    fn bad_rules_are_refused_naming_the_rule() {
        assert!(check_rules("retry_safe", &rules()).is_ok());
        for bad in [
            "POST",
            "GET /x",
            "POST x",
            "POST /a//b",
            "POST /a?b",
            "post /a",
        ] {
            let err = check_rules("retry_safe", &[bad.to_string()]).unwrap_err();
            assert_eq!(err.field, "retry_safe[0]", "{bad}");
            assert!(err.reason.contains("METHOD /path"), "{err}");
        }
        let many = vec!["POST /a".to_string(); MAX_RULES + 1];
        assert!(check_rules("retry_safe", &many).is_err());
    }
}
