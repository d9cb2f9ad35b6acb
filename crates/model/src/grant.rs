//! Which keys of the state group a caller may touch: everything (operators and member
//! nodes) or one prefix (a service: `payments/` for the payments service).
//!
//! A transaction is judged by every key it names, in its compares and both branches, so
//! a service cannot read or write another's keys by hiding them in the branch that does
//! not run. A range read or watch is judged by its prefix, which must lie inside the grant.

use crate::kv::{KvCommand, TxnOp};

/// What a credential allows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Grant {
    /// Every key.
    All,
    /// Keys starting with this prefix.
    Prefix(String),
}

impl Grant {
    /// The grant of a service: its name and a slash.
    pub fn service(name: &str) -> Self {
        Self::Prefix(format!("{name}/"))
    }

    /// Whether `key` may be read or written.
    pub fn allows_key(&self, key: &str) -> bool {
        match self {
            Self::All => true,
            Self::Prefix(prefix) => key.starts_with(prefix.as_str()),
        }
    }

    /// Whether every key under `prefix` may be read (a range read or a watch).
    pub fn allows_prefix(&self, prefix: &str) -> bool {
        self.allows_key(prefix)
    }

    /// The first key of `command` outside the grant, if any.
    pub fn denied_key<'a>(&self, command: &'a KvCommand) -> Option<&'a str> {
        let keys: Vec<&str> = match command {
            KvCommand::Put { key, .. } | KvCommand::Delete { key } => vec![key],
            KvCommand::Txn(txn) => txn
                .compare
                .iter()
                .map(|c| c.key.as_str())
                .chain(txn.success.iter().chain(&txn.failure).map(op_key))
                .collect(),
        };
        keys.into_iter().find(|key| !self.allows_key(key))
    }

    /// How the grant reads in an error message.
    pub fn describe(&self) -> String {
        match self {
            Self::All => "every key".into(),
            Self::Prefix(prefix) => format!("keys under `{prefix}`"),
        }
    }
}

fn op_key(op: &TxnOp) -> &str {
    match op {
        TxnOp::Get { key } | TxnOp::Put { key, .. } | TxnOp::Delete { key } => key,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kv::Txn;

    #[test]
    fn a_service_reaches_only_its_own_prefix_in_every_part_of_a_txn() {
        let payments = Grant::service("payments");
        let put = |key: &str| KvCommand::Put {
            key: key.into(),
            value: "1".into(),
        };
        assert_eq!(payments.denied_key(&put("payments/accounts/1")), None);
        assert_eq!(
            payments.denied_key(&put("paymentsX/1")),
            Some("paymentsX/1")
        );
        assert_eq!(
            payments.denied_key(&put("login/users/a")),
            Some("login/users/a")
        );
        let txn = KvCommand::Txn(Txn {
            compare: vec![],
            success: vec![TxnOp::Put {
                key: "payments/a".into(),
                value: "1".into(),
            }],
            failure: vec![TxnOp::Delete {
                key: "login/sessions/x".into(),
            }],
        });
        assert_eq!(payments.denied_key(&txn), Some("login/sessions/x"));
        assert_eq!(Grant::All.denied_key(&txn), None);
        assert!(!payments.allows_prefix(""));
        assert!(payments.allows_prefix("payments/accounts/"));
    }
}
