//! What outlier detection remembers about a backend's recent requests.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering::Relaxed};

use crate::clock::Nanos;

/// Counters of passive health checking, kept in the backend's shared state
/// so that they survive snapshot rebuilds. All atomics: recorded per
/// response, without a lock.
#[derive(Debug, Default)]
pub(crate) struct Outcomes {
    consecutive_failures: AtomicU32,
    /// Ejections in a row without a quiet period: the back-off exponent.
    ejections: AtomicU32,
    /// Ejections ever.
    ejections_total: AtomicU64,
    /// When the last ejection ended.
    returned_at: AtomicU64,
    /// Successes (high half) and failures (low half) in the current window.
    window: AtomicU64,
    window_start: AtomicU64,
}

/// A closed window's tally.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Tally {
    pub(crate) successes: u32,
    pub(crate) failures: u32,
}

impl Outcomes {
    /// Records a success of a backend that is not ramped down, if the
    /// current window holds no failure: then closing the window could change
    /// nothing, so the clock need not be read. Returns whether it did.
    #[inline]
    pub(crate) fn clean_success(&self) -> bool {
        let window = self.window.load(Relaxed);
        if window as u32 != 0 || self.consecutive_failures.load(Relaxed) != 0 {
            return false;
        }
        self.window.fetch_add(1 << 32, Relaxed);
        true
    }

    /// Records a success; returns the closed window's tally if this outcome
    /// closed one.
    pub(crate) fn success(&self, now: Nanos, window: Nanos) -> Option<Tally> {
        if self.consecutive_failures.load(Relaxed) != 0 {
            self.consecutive_failures.store(0, Relaxed);
        }
        self.count(1 << 32, now, window)
    }

    /// Records a failure; returns the consecutive failures so far and the
    /// closed window's tally if this outcome closed one.
    pub(crate) fn failure(&self, now: Nanos, window: Nanos) -> (u32, Option<Tally>) {
        let consecutive = self.consecutive_failures.fetch_add(1, Relaxed) + 1;
        (consecutive, self.count(1, now, window))
    }

    fn count(&self, unit: u64, now: Nanos, window: Nanos) -> Option<Tally> {
        let start = self.window_start.load(Relaxed);
        if start == 0 {
            // First outcome ever: open the first window.
            let _ = self.window_start.compare_exchange(0, now, Relaxed, Relaxed);
        } else if window > 0 && now.saturating_sub(start) >= window {
            // Whoever moves the start closes the window and reads its tally.
            if self
                .window_start
                .compare_exchange(start, now, Relaxed, Relaxed)
                .is_ok()
            {
                let closed = self.window.swap(unit, Relaxed);
                return Some(Tally {
                    successes: (closed >> 32) as u32,
                    failures: closed as u32,
                });
            }
        }
        self.window.fetch_add(unit, Relaxed);
        None
    }

    /// Starts an ejection: returns the back-off exponent to use (0 for the
    /// first, or after a quiet period of `quiet` since the last return).
    pub(crate) fn next_ejection(&self, now: Nanos, quiet: Nanos) -> u32 {
        let returned = self.returned_at.load(Relaxed);
        if returned != 0 && now.saturating_sub(returned) >= quiet {
            self.ejections.store(0, Relaxed);
        }
        self.consecutive_failures.store(0, Relaxed);
        self.ejections_total.fetch_add(1, Relaxed);
        self.ejections.fetch_add(1, Relaxed)
    }

    /// Notes the end of an ejection.
    pub(crate) fn returned(&self, now: Nanos) {
        self.returned_at.store(now, Relaxed);
        self.window.store(0, Relaxed);
        self.window_start.store(now, Relaxed);
    }

    /// Failures in a row so far.
    pub(crate) fn consecutive_failures(&self) -> u32 {
        self.consecutive_failures.load(Relaxed)
    }

    /// Ejections in a row so far.
    pub(crate) fn ejections(&self) -> u32 {
        self.ejections.load(Relaxed)
    }

    /// Ejections ever.
    pub(crate) fn ejections_total(&self) -> u64 {
        self.ejections_total.load(Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_close_with_their_tally() {
        let outcomes = Outcomes::default();
        assert_eq!(outcomes.success(10, 100), None);
        assert_eq!(outcomes.failure(20, 100), (1, None));
        assert_eq!(outcomes.failure(30, 100), (2, None));
        assert_eq!(outcomes.success(40, 100), None);
        assert_eq!(outcomes.consecutive_failures(), 0);
        let closed = outcomes.success(110, 100);
        assert_eq!(
            closed,
            Some(Tally {
                successes: 2,
                failures: 2
            })
        );
        // The outcome that closed the window opens the next one.
        let next = outcomes.failure(210, 100).1;
        assert_eq!(
            next,
            Some(Tally {
                successes: 1,
                failures: 0
            })
        );
    }

    #[test]
    fn the_back_off_exponent_resets_after_a_quiet_period() {
        let outcomes = Outcomes::default();
        assert_eq!(outcomes.next_ejection(100, 1_000), 0);
        outcomes.returned(200);
        assert_eq!(outcomes.next_ejection(300, 1_000), 1);
        outcomes.returned(400);
        assert_eq!(outcomes.next_ejection(2_000, 1_000), 0, "quiet for 1600");
    }
}
