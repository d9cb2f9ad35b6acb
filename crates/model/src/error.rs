//! Errors of the pure model: only bad input can fail here.

/// A command or value that breaks a documented limit or rule; nothing was changed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {field}: {reason}")]
pub struct InvalidInput {
    /// The field at fault, as the user wrote it (`key`, `txn.success[3].value`).
    pub field: String,
    /// What is wrong and, where it helps, what to do instead.
    pub reason: String,
}

impl InvalidInput {
    /// Builds an error for `field` with the reason a user can act on.
    pub fn new(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            reason: reason.into(),
        }
    }
}

/// Result of model validation.
pub type Result<T, E = InvalidInput> = std::result::Result<T, E>;
