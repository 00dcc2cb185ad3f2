//! One monotonic clock for the whole crate, read as nanoseconds.
//!
//! Deadlines that live in atomics (ejections, EWMA timestamps, slow-start
//! starts) need a plain integer. We count nanoseconds from a process-wide base
//! taken on tokio's clock, so tests that pause and advance tokio's time see the
//! same time the code does.

use std::sync::OnceLock;
use std::time::Duration;

use tokio::time::Instant;

/// Nanoseconds since the process-wide base instant.
pub(crate) type Nanos = u64;

fn base() -> Instant {
    static BASE: OnceLock<Instant> = OnceLock::new();
    *BASE.get_or_init(Instant::now)
}

/// The current time. Never 0, so that 0 can mean "not set" in atomics.
pub(crate) fn now() -> Nanos {
    since_base(Instant::now())
}

/// `instant` as nanoseconds since the base (saturating at the base).
pub(crate) fn since_base(instant: Instant) -> Nanos {
    let nanos = instant.saturating_duration_since(base()).as_nanos();
    u64::try_from(nanos).unwrap_or(u64::MAX).max(1)
}

/// `duration` in nanoseconds, saturating.
pub(crate) fn nanos(duration: Duration) -> Nanos {
    u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX)
}
