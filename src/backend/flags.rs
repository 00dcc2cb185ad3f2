//! The flag word of a backend's state: what takes it out of rotation or
//! off its full share.
//!
//! One `u32`, so that the question every pick asks ("may this backend take a
//! request, at full share?") is one load and one mask in the common case.

use std::sync::atomic::{AtomicU32, Ordering};

use super::Verdict;

/// Removed from the set; draining its in-flight requests.
pub(super) const REMOVED: u32 = 1 << 0;
/// Found unhealthy by active probes.
pub(super) const UNHEALTHY: u32 = 1 << 1;
/// Found healthy by active probes (neither bit: not probed yet).
pub(super) const HEALTHY: u32 = 1 << 2;
/// Ejected by outlier detection or an operator, until the state's deadline.
pub(super) const EJECTED: u32 = 1 << 3;
/// Ramping up after joining, recovering or returning.
pub(super) const SLOW_START: u32 = 1 << 4;
/// Ramped down by its recent success rate.
pub(super) const RAMP_DOWN: u32 = 1 << 5;
/// Drained by an operator: still a member, no new requests.
pub(super) const DRAINING: u32 = 1 << 6;

/// Any of these makes a backend ineligible (an ejection only until its
/// deadline, which is checked on read).
pub(super) const NOT_ELIGIBLE: u32 = REMOVED | UNHEALTHY | EJECTED | DRAINING;
/// Any of these keeps a backend out even of panic routing: an operator's
/// or the set's own decision, not a health guess.
pub(super) const NOT_ROUTABLE: u32 = REMOVED | DRAINING;
/// Either of these may put the share below full.
pub(super) const RAMPING: u32 = SLOW_START | RAMP_DOWN;
/// The flags that take a backend off the plain path of picks (see
/// [`Eligibility`](super::eligibility::Eligibility)): any of them makes a
/// pick ask the backend itself.
pub(super) const NOT_PLAIN: u32 = NOT_ELIGIBLE | RAMPING;

/// The flag word.
#[derive(Debug, Default)]
pub(super) struct Flags(AtomicU32);

impl Flags {
    /// The flags now (relaxed: a change racing with a pick is seen a few
    /// nanoseconds late, which no caller can tell from the pick coming first).
    #[inline]
    pub(super) fn load(&self) -> u32 {
        self.0.load(Ordering::Relaxed)
    }

    /// The word itself, for the eligibility mirrors that copy it.
    pub(super) fn word(&self) -> &AtomicU32 {
        &self.0
    }

    /// Sets `set` and clears `clear`; returns the flags before, or `None`
    /// when nothing changed.
    ///
    /// Sequentially consistent, with the mirrors' reads: see `eligibility`
    /// for why the mirrored bits end up right.
    pub(super) fn update(&self, set: u32, clear: u32) -> Option<u32> {
        let mut current = self.load();
        loop {
            let next = (current | set) & !clear;
            if next == current {
                return None;
            }
            match self
                .0
                .compare_exchange_weak(current, next, Ordering::SeqCst, Ordering::Relaxed)
            {
                Ok(before) => return Some(before),
                Err(actual) => current = actual,
            }
        }
    }
}

/// The verdict the flags record.
pub(super) fn verdict(flags: u32) -> Verdict {
    if flags & UNHEALTHY != 0 {
        Verdict::Unhealthy
    } else if flags & HEALTHY != 0 {
        Verdict::Healthy
    } else {
        Verdict::Unknown
    }
}

/// The (set, clear) pair that records `verdict`.
pub(super) fn verdict_bits(verdict: Verdict) -> (u32, u32) {
    match verdict {
        Verdict::Unknown => (0, HEALTHY | UNHEALTHY),
        Verdict::Healthy => (HEALTHY, UNHEALTHY),
        Verdict::Unhealthy => (UNHEALTHY, HEALTHY),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn updates_report_the_flags_before_only_on_a_change() {
        let flags = Flags::default();
        assert_eq!(flags.update(EJECTED | SLOW_START, 0), Some(0));
        assert_eq!(flags.update(EJECTED, 0), None, "already set");
        assert_eq!(flags.update(0, EJECTED), Some(EJECTED | SLOW_START));
        assert_eq!(flags.load(), SLOW_START);
    }

    #[test]
    fn verdicts_round_trip_through_the_bits() {
        let flags = Flags::default();
        for verdict in [Verdict::Unhealthy, Verdict::Healthy, Verdict::Unknown] {
            let (set, clear) = verdict_bits(verdict);
            flags.update(set, clear);
            assert_eq!(super::verdict(flags.load()), verdict);
        }
    }
}
