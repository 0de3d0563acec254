//! The one place that reads the wall clock, so tests and replays can supply their own time.

use chrono::{DateTime, SubsecRound, Utc};

pub trait Clock: Send + Sync + 'static {
    fn now(&self) -> DateTime<Utc>;
}

#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    /// To the microsecond: what PostgreSQL and the events' metadata keep, so a time a write
    /// answers with reads back the same from the read models.
    fn now(&self) -> DateTime<Utc> {
        Utc::now().trunc_subsecs(6)
    }
}
