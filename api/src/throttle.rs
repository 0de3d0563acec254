//! Sign-in throttling: after too many failed attempts on one account within a window, further
//! attempts are refused with 429 until the window ends, which caps password guessing.
//!
//! Counters live in this process (each API node counts for itself), keyed by the normalized
//! e-mail address. A successful sign-in clears the account's counter.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

pub struct LoginThrottle {
    max_failures: u32,
    window: Duration,
    failures: Mutex<HashMap<String, Window>>,
}

struct Window {
    started: Instant,
    failures: u32,
}

/// Past this many tracked accounts, expired windows are swept on the next failure.
const SWEEP_ABOVE: usize = 10_000;

impl LoginThrottle {
    pub fn new(max_failures: u32, window: Duration) -> Self {
        Self {
            max_failures,
            window,
            failures: Mutex::new(HashMap::new()),
        }
    }

    /// `Err(retry_after)` when `account` has used up its failures in the current window.
    pub fn check(&self, account: &str) -> Result<(), Duration> {
        let failures = self.failures.lock().expect("throttle lock");
        match failures.get(account) {
            Some(w) if w.failures >= self.max_failures && w.started.elapsed() < self.window => {
                Err(self.window - w.started.elapsed())
            }
            _ => Ok(()),
        }
    }

    pub fn record_failure(&self, account: &str) {
        let mut failures = self.failures.lock().expect("throttle lock");
        if failures.len() > SWEEP_ABOVE {
            failures.retain(|_, w| w.started.elapsed() < self.window);
        }
        let window = failures
            .entry(account.to_owned())
            .or_insert_with(|| Window {
                started: Instant::now(),
                failures: 0,
            });
        if window.started.elapsed() >= self.window {
            *window = Window {
                started: Instant::now(),
                failures: 0,
            };
        }
        window.failures += 1;
    }

    pub fn record_success(&self, account: &str) {
        self.failures.lock().expect("throttle lock").remove(account);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_account_is_refused_after_its_failures_and_others_are_not() {
        let throttle = LoginThrottle::new(3, Duration::from_secs(60));
        for _ in 0..3 {
            assert!(throttle.check("a@x.com").is_ok());
            throttle.record_failure("a@x.com");
        }
        let retry_after = throttle.check("a@x.com").unwrap_err();
        assert!(retry_after <= Duration::from_secs(60) && retry_after > Duration::from_secs(50));
        assert!(throttle.check("b@x.com").is_ok());
    }

    #[test]
    fn the_window_ends_and_success_clears() {
        let throttle = LoginThrottle::new(1, Duration::from_millis(1));
        throttle.record_failure("a@x.com");
        std::thread::sleep(Duration::from_millis(5));
        assert!(throttle.check("a@x.com").is_ok(), "window over");

        let throttle = LoginThrottle::new(1, Duration::from_secs(60));
        throttle.record_failure("a@x.com");
        throttle.record_success("a@x.com");
        assert!(throttle.check("a@x.com").is_ok());
    }
}
