//! One monotonic clock for the whole crate, read as nanoseconds.
//!
//! Deadlines that live in atomics (ejections, EWMA timestamps, slow-start
//! starts) need a plain integer. We count nanoseconds from a process-wide base
//! on tokio's clock, so tests that pause and advance tokio's time see the
//! same time the code does.
//!
//! The base is the real time an hour before the first reading, not the first
//! reading itself: each paused tokio runtime has a clock of its own, which
//! starts at the real time the runtime was built and then moves as the
//! runtime advances it. Taken from whichever runtime asked first, the base
//! could be later than another runtime's time (one built a moment earlier,
//! or one that asked after advancing), and every reading there would
//! saturate to the same instant. An hour back, every clock in the process
//! reads after it.

use std::sync::OnceLock;
use std::time::Duration;

use tokio::time::Instant;

/// Nanoseconds since the process-wide base instant.
pub(crate) type Nanos = u64;

/// How far before the first reading the base lies.
const MARGIN: Duration = Duration::from_secs(3600);

fn base() -> Instant {
    static BASE: OnceLock<Instant> = OnceLock::new();
    *BASE.get_or_init(|| {
        // Real time on purpose (see the module docs): no runtime's paused
        // clock starts before the real time it was built at.
        let real = std::time::Instant::now();
        Instant::from_std(real.checked_sub(MARGIN).unwrap_or(real))
    })
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
