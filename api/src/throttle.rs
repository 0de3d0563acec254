//! Sign-in throttling: each account gets at most `max_attempts` sign-in attempts per window
//! without a success; past that, attempts are refused with 429 until the window ends, which
//! caps password guessing.
//!
//! An attempt is counted when it starts, under the lock, so a burst of concurrent guesses
//! cannot all pass the check before the first failure is recorded. A successful sign-in
//! clears the account's count. Counters live in this process (each API node counts for
//! itself), keyed by the normalized e-mail address.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

pub struct LoginThrottle {
    max_attempts: u32,
    window: Duration,
    accounts: Mutex<Accounts>,
}

#[derive(Default)]
struct Accounts {
    windows: HashMap<String, Window>,
    last_sweep: Option<Instant>,
}

struct Window {
    started: Instant,
    attempts: u32,
}

/// Past this many tracked accounts, expired windows are swept on the next attempt.
const SWEEP_ABOVE: usize = 10_000;

impl LoginThrottle {
    pub fn new(max_attempts: u32, window: Duration) -> Self {
        Self {
            max_attempts,
            window,
            accounts: Mutex::new(Accounts::default()),
        }
    }

    /// Counts an attempt on `account`, or refuses it with the time left in the window.
    pub fn attempt(&self, account: &str) -> Result<(), Duration> {
        let mut accounts = self.lock();
        // Expired windows are swept when there are many, at most once a second: a flood of
        // new addresses costs memory for one window, not a full scan per request.
        let due = accounts
            .last_sweep
            .is_none_or(|t| t.elapsed() >= Duration::from_secs(1));
        if accounts.windows.len() > SWEEP_ABOVE && due {
            accounts
                .windows
                .retain(|_, w| w.started.elapsed() < self.window);
            accounts.last_sweep = Some(Instant::now());
        }
        let window = accounts
            .windows
            .entry(account.to_owned())
            .or_insert_with(|| Window {
                started: Instant::now(),
                attempts: 0,
            });
        let elapsed = window.started.elapsed();
        if elapsed >= self.window {
            *window = Window {
                started: Instant::now(),
                attempts: 0,
            };
        } else if window.attempts >= self.max_attempts {
            return Err(self.window.saturating_sub(elapsed));
        }
        window.attempts += 1;
        Ok(())
    }

    /// Gives an attempt back: it could not be checked (the database was unreachable), so it
    /// must not count against the account.
    pub fn refund(&self, account: &str) {
        if let Some(window) = self.lock().windows.get_mut(account) {
            window.attempts = window.attempts.saturating_sub(1);
        }
    }

    /// A successful sign-in: the account starts afresh.
    pub fn succeeded(&self, account: &str) {
        self.lock().windows.remove(account);
    }

    /// The map stays consistent whatever a panicking holder did, so poisoning is ignored.
    fn lock(&self) -> MutexGuard<'_, Accounts> {
        self.accounts.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_account_is_refused_after_its_attempts_and_others_are_not() {
        let throttle = LoginThrottle::new(3, Duration::from_secs(60));
        for _ in 0..3 {
            assert!(throttle.attempt("a@x.com").is_ok());
        }
        let retry_after = throttle.attempt("a@x.com").unwrap_err();
        assert!(retry_after <= Duration::from_secs(60) && retry_after > Duration::from_secs(50));
        assert!(throttle.attempt("b@x.com").is_ok());
    }

    #[test]
    fn the_window_ends_and_success_clears() {
        let throttle = LoginThrottle::new(1, Duration::from_millis(1));
        throttle.attempt("a@x.com").unwrap();
        std::thread::sleep(Duration::from_millis(5));
        assert!(throttle.attempt("a@x.com").is_ok(), "window over");

        let throttle = LoginThrottle::new(1, Duration::from_secs(60));
        throttle.attempt("a@x.com").unwrap();
        throttle.succeeded("a@x.com");
        assert!(throttle.attempt("a@x.com").is_ok());
    }
}
