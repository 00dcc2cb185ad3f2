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

use std::cell::Cell;
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

/// The instant `nanos` after the base: the inverse of [`since_base`].
pub(crate) fn instant_at(nanos: Nanos) -> Instant {
    base() + Duration::from_nanos(nanos)
}

/// `duration` in nanoseconds, saturating.
pub(crate) fn nanos(duration: Duration) -> Nanos {
    u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX)
}

thread_local! {
    /// The reading of the call chain this thread is in; 0 when none is open.
    static CALL: Cell<Nanos> = const { Cell::new(0) };
}

/// One clock reading for a whole `call` chain: the time a request entered
/// the stack.
///
/// Every layer that stamps a request when it is called (metrics' start,
/// failover's budget, the balancer's latency sample, the pool's idle check
/// and the request's deadline) would otherwise read the clock for itself:
/// four readings microseconds apart in one synchronous chain of calls, at
/// about 120 instructions each. The first layer to enter reads the clock
/// and opens the scope; the layers it calls, on this thread, before its
/// `call` returns, get the same reading. The scope closes when the layer
/// that opened it drops its `CallTime`, so a reading is never older than
/// the call chain that made it: nothing read in a later poll comes from it.
pub(crate) struct CallTime {
    nanos: Nanos,
    opened: bool,
}

impl CallTime {
    /// The call chain's reading, opening the scope if none is open. Keep the
    /// value alive (bound to a name) until the inner service's `call` has
    /// returned.
    pub(crate) fn enter() -> Self {
        match CALL.get() {
            0 => {
                let nanos = now();
                CALL.set(nanos);
                Self {
                    nanos,
                    opened: true,
                }
            }
            nanos => Self {
                nanos,
                opened: false,
            },
        }
    }

    /// The reading, in nanoseconds since the base.
    pub(crate) fn nanos(&self) -> Nanos {
        self.nanos
    }
}

impl Drop for CallTime {
    fn drop(&mut self) {
        if self.opened {
            CALL.set(0);
        }
    }
}

/// The open call chain's reading (see [`CallTime`]), or the clock read now
/// outside one.
pub(crate) fn call_or_now() -> Nanos {
    match CALL.get() {
        0 => now(),
        nanos => nanos,
    }
}

/// [`call_or_now`] as an instant.
pub(crate) fn call_instant_or_now() -> Instant {
    match CALL.get() {
        0 => Instant::now(),
        nanos => instant_at(nanos),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_call_chain_shares_one_reading_and_the_next_reads_anew() {
        let outer = CallTime::enter();
        tokio::time::advance(Duration::from_millis(5)).await;
        let inner = CallTime::enter();
        assert_eq!(inner.nanos(), outer.nanos(), "inside the chain");
        assert_eq!(since_base(call_instant_or_now()), outer.nanos());
        assert_eq!(call_or_now(), outer.nanos());
        drop(inner);
        assert_eq!(
            call_or_now(),
            outer.nanos(),
            "the inner one did not open it"
        );
        let first = outer.nanos();
        drop(outer);
        let after = call_or_now();
        assert!(
            after >= first + 5_000_000,
            "closed with the one that opened it"
        );
        let next = CallTime::enter();
        assert_eq!(next.nanos(), after, "a new chain reads the clock");
    }
}
