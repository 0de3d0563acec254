//! What a command does after losing an optimistic-concurrency race, for the bus and the booking
//! desk alike: it is decided again on the streams as they are now, after a short jittered pause
//! (racing writers spread out), at most [`MAX_ATTEMPTS`] times in all; then it answers
//! `409 contention`.

use std::time::Duration;

/// How many times a command is decided in all. Each retry reloads what it decides on, so under
/// N concurrent writers every round lets at least one through.
pub(crate) const MAX_ATTEMPTS: u32 = 24;

/// After the `attempt`-th decision of a command (counting from 1) lost a race: the pause before
/// the next, or `None` when that was the last attempt.
pub(crate) fn after_lost_race(attempt: u32) -> Option<Duration> {
    (attempt < MAX_ATTEMPTS).then(|| pause(attempt))
}

/// Jittered, slowly growing pauses (at most 2 ms per attempt, 24 ms from the 12th on).
fn pause(attempt: u32) -> Duration {
    let ceiling_ms = u64::from(attempt.min(12)) * 2;
    Duration::from_micros(rand::random_range(0..=ceiling_ms * 1000))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_command_is_decided_at_most_max_attempts_times() {
        let retries = (1..).take_while(|&attempt| after_lost_race(attempt).is_some());
        assert_eq!(retries.count() as u32, MAX_ATTEMPTS - 1);
        assert_eq!(after_lost_race(MAX_ATTEMPTS), None);
        assert_eq!(after_lost_race(MAX_ATTEMPTS + 1), None);
    }

    #[test]
    fn pauses_grow_with_the_attempt_up_to_a_ceiling() {
        for _ in 0..200 {
            assert!(after_lost_race(1).unwrap() <= Duration::from_millis(2));
            assert!(after_lost_race(5).unwrap() <= Duration::from_millis(10));
            assert!(after_lost_race(20).unwrap() <= Duration::from_millis(24));
        }
    }
}
