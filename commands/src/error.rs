use cqrs_es::AggregateError;
use parking_domain::{RuleError, Violation};
use parking_infra::personal::SealError;

pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    /// A business rule refused the command; nothing was recorded.
    #[error("{message}")]
    Rejected {
        code: &'static str,
        violation: Violation,
        message: String,
    },
    /// The aggregate kept changing under us for every retry.
    #[error("{aggregate} {id} is being changed by many requests at once; try again")]
    Contention { aggregate: &'static str, id: String },
    /// A service outside ours (the payment provider) is missing or did not answer; what was
    /// recorded stands, and the request may be repeated.
    #[error("{message}")]
    Unavailable { code: &'static str, message: String },
    /// Storage failed; the command may or may not have been recorded.
    #[error("infrastructure failure")]
    Infrastructure(#[source] BoxError),
}

impl CommandError {
    pub fn rejected(code: &'static str, violation: Violation, message: impl Into<String>) -> Self {
        Self::Rejected {
            code,
            violation,
            message: message.into(),
        }
    }

    pub fn code(&self) -> &'static str {
        match self {
            CommandError::Rejected { code, .. } => code,
            CommandError::Contention { .. } => "contention",
            CommandError::Unavailable { code, .. } => code,
            CommandError::Infrastructure(_) => "internal",
        }
    }
}

impl<E: RuleError> From<E> for CommandError {
    fn from(e: E) -> Self {
        Self::Rejected {
            code: e.code(),
            violation: e.violation(),
            message: e.to_string(),
        }
    }
}

/// Sealing personal data failed: an erased person's data may not be recorded again; anything
/// else is a failure of ours.
pub(crate) fn from_sealing(e: SealError) -> CommandError {
    match e {
        SealError::Erased(_) => CommandError::rejected(
            "user_erased",
            Violation::Forbidden,
            "this person was erased: nothing of theirs is recorded any more",
        ),
        SealError::Keys(e) => CommandError::Infrastructure(Box::new(e)),
    }
}

/// Everything but a rule violation or a conflict is an infrastructure failure here.
pub(crate) fn from_aggregate<E: RuleError>(e: AggregateError<E>) -> CommandError {
    match e {
        AggregateError::UserError(e) => e.into(),
        AggregateError::AggregateConflict => {
            CommandError::Infrastructure("unresolved aggregate conflict".into())
        }
        AggregateError::DatabaseConnectionError(e)
        | AggregateError::DeserializationError(e)
        | AggregateError::UnexpectedError(e) => CommandError::Infrastructure(e),
    }
}
