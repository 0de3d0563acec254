//! Personal data that can be erased. Events never change, so a person's data in them is kept
//! encrypted with a key of their own (by the infrastructure: `parking_infra::personal`); when
//! the person is erased the key is destroyed, and every personal field of theirs reads as
//! [`ERASED`] from then on, wherever history is replayed.

/// What a personal field reads as once its person was erased. No valid input has this form:
/// e-mail addresses have an `@`, vehicle numbers are upper case.
pub const ERASED: &str = "erased";
