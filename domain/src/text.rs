//! Text that people type: names, addresses, labels, descriptions.
//!
//! Control characters are refused, not stored: they have no business in a name, they break
//! terminals and logs, and PostgreSQL `text` cannot hold a NUL at all, so one would make every
//! read model of its stream fail.

/// Trimmed, 1 to `max` characters, no control characters.
pub fn single_line(value: &str, max: usize) -> Option<String> {
    checked(value, max, |_| false)
}

/// As [`single_line`], but line breaks and tabs are allowed.
pub fn multi_line(value: &str, max: usize) -> Option<String> {
    checked(value, max, |c| matches!(c, '\n' | '\r' | '\t'))
}

fn checked(value: &str, max: usize, allowed_control: impl Fn(char) -> bool) -> Option<String> {
    let value = value.trim();
    let printable = value.chars().all(|c| !c.is_control() || allowed_control(c));
    (printable && !value.is_empty() && value.chars().count() <= max).then(|| value.to_owned())
}

/// Drops control characters other than line breaks and tabs from free text that is kept
/// as given (a cancellation reason), and trims it.
pub fn sanitized(value: &str, max: usize) -> String {
    value
        .chars()
        .filter(|c| !c.is_control() || matches!(c, '\n' | '\r' | '\t'))
        .take(max)
        .collect::<String>()
        .trim()
        .to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_are_refused() {
        assert_eq!(single_line("  Central  ", 20).as_deref(), Some("Central"));
        assert!(single_line("Cen\u{0}tral", 20).is_none());
        assert!(single_line("two\nlines", 20).is_none());
        assert_eq!(multi_line("two\nlines", 20).as_deref(), Some("two\nlines"));
        assert!(multi_line("nul\u{0}", 20).is_none());
        assert!(single_line("   ", 20).is_none());
        assert!(single_line("abc", 2).is_none());
    }

    #[test]
    fn sanitizing_keeps_the_readable_part() {
        assert_eq!(sanitized(" late\u{0} train ", 100), "late train");
    }
}
