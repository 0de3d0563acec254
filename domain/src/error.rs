//! How a broken rule is classified, so that outer layers can answer without knowing every
//! aggregate's error enum.

/// What kind of rule a command broke. The API maps these to status codes; the domain only
/// says what happened in its own words.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Violation {
    /// The command is well formed but its values break a rule (bad range, bad coordinates).
    Invalid,
    /// The command conflicts with the current state (overlap, wrong status, duplicate).
    Conflict,
    /// The actor may not do this.
    Forbidden,
    /// The aggregate the command addresses does not exist.
    NotFound,
}

/// Implemented by every aggregate's error type.
pub trait RuleError: std::error::Error + Send + Sync + 'static {
    /// A stable, machine-readable code (`slot_already_reserved`); clients switch on it.
    fn code(&self) -> &'static str;
    fn violation(&self) -> Violation;
}
