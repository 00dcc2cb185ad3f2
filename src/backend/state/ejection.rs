//! Ejection: out of rotation until a deadline, which ends it on read.
//!
//! An ejection is a flag and a deadline. Nothing clears the flag at the
//! deadline: the first read after it does (a pick, a status view, the
//! ejection cap's count reads without clearing), so no timer task has to
//! run, with or without a runtime. Everything the return involves (slow
//! start, a fresh ramp-down window, the back-off's quiet period) is
//! arranged when the ejection starts, from the deadline.

use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use super::super::flags::{EJECTED, RAMP_DOWN, SLOW_START};
use super::super::ramp::FULL_SHARE;
use super::BackendState;
use crate::clock::{self, Nanos};

impl BackendState {
    /// How long the current ejection still lasts, if one is in force.
    pub fn ejection_remaining(&self) -> Option<Duration> {
        let now = clock::now();
        self.is_ejected_at(now)
            .then(|| Duration::from_nanos(self.ejected_until.load(Relaxed).saturating_sub(now)))
    }

    /// How long the overload pause in force still lasts: the backend
    /// answered 429, or 503 with `Retry-After`, and passive health paused
    /// it for that long. `None` when it is not paused (or an operator's
    /// ejection replaced the pause, or it was readmitted).
    pub fn overload_remaining(&self) -> Option<Duration> {
        let now = clock::now();
        let until = self
            .overloaded_until
            .load(Relaxed)
            .min(self.ejected_until.load(Relaxed));
        (self.is_ejected_at(now) && now < until).then(|| Duration::from_nanos(until - now))
    }

    /// Marks the ejection just begun (by [`eject`](Self::eject)) as an
    /// overload pause until `until`.
    pub(crate) fn mark_overloaded(&self, until: Nanos) {
        self.overloaded_until.store(until, Relaxed);
    }

    /// Whether an ejection is in force at `now`. Only reads: what the
    /// ejection cap counts.
    pub(crate) fn is_ejected_at(&self, now: Nanos) -> bool {
        self.flags.load() & EJECTED != 0 && now < self.ejected_until.load(Relaxed)
    }

    /// Ejects the backend from `now` until `until`, unless an ejection is in
    /// force already; returns whether this call ejected it.
    ///
    /// The return is arranged here, not when it happens: the back-off's
    /// quiet period and the next ramp-down window count from `until`, the
    /// ramp-down share is reset, and with a slow-start `window` the ramp
    /// starts at `until`. So the deadline alone ends the ejection.
    pub(crate) fn eject(&self, now: Nanos, until: Nanos, window: Nanos) -> bool {
        if self.still_ejected(now) {
            return false;
        }
        self.ejected_until.store(until, Relaxed);
        // An ejection is not a pause unless the pause says so.
        self.overloaded_until.store(0, Relaxed);
        self.outcomes.returned(until);
        self.ramp.set_down(FULL_SHARE);
        let mut set = EJECTED;
        if window > 0 {
            self.ramp.plan_slow_start(until, window);
            set |= SLOW_START;
        }
        self.set_flags(set, RAMP_DOWN);
        true
    }

    /// Moves the end of the ejection in force to `until` (an operator's
    /// ejection replaces outlier detection's deadline); the planned slow
    /// start moves with it.
    pub(crate) fn reschedule_ejection(&self, until: Nanos, window: Nanos) {
        self.ejected_until.store(until, Relaxed);
        self.overloaded_until.store(0, Relaxed);
        self.outcomes.returned(until);
        if window > 0 {
            self.ramp.plan_slow_start(until, window);
        }
    }

    /// Ends an ejection at `now`, before its deadline (probes that saw the
    /// backend recover, an operator); returns whether one was in force. The
    /// caller announces it.
    pub(crate) fn readmit(&self, now: Nanos, window: Nanos) -> bool {
        if !self.is_ejected_at(now) {
            return false;
        }
        self.ejected_until.store(now, Relaxed);
        self.outcomes.returned(now);
        let mut set = 0;
        if window > 0 {
            self.ramp.plan_slow_start(now, window);
            set = SLOW_START;
        }
        self.set_flags(set, EJECTED)
            .is_some_and(|before| before & EJECTED != 0)
    }

    /// Whether the ejected flag stands at `now`; ends an ejection whose
    /// deadline passed (see [`eligible_at`](Self::eligible_at)).
    pub(super) fn still_ejected(&self, now: Nanos) -> bool {
        if self.flags.load() & EJECTED == 0 {
            return false;
        }
        if now < self.ejected_until.load(Relaxed) {
            return true;
        }
        self.end_ejection_on_read();
        false
    }

    /// Clears the ejected flag of an ejection that ran out; the reader that
    /// clears it has the backend's sets announce the return.
    #[cold]
    fn end_ejection_on_read(&self) {
        if self
            .set_flags(0, EJECTED)
            .is_some_and(|before| before & EJECTED != 0)
        {
            self.homes.returned(self.id);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;
    use std::sync::{Arc, Weak};

    use super::super::super::BackendId;
    use super::super::super::home::Home;
    use super::*;

    #[derive(Default)]
    struct Returns(AtomicUsize);

    impl Home for Returns {
        fn returned(&self, _id: BackendId) {
            self.0.fetch_add(1, Relaxed);
        }
    }

    #[test]
    fn an_ejection_ends_by_its_deadline_on_read_without_a_task() {
        let state = BackendState::new();
        let home = Arc::new(Returns::default());
        state.add_home(Arc::downgrade(&home) as Weak<dyn Home>);
        assert!(state.eject(50, 100, 0));
        assert!(!state.eject(60, 500, 0), "an ejection in force stays");
        assert!(!state.eligible_at(|| 99) && state.is_ejected_at(99));
        assert!(state.routable(), "panic routing ignores ejections");
        assert!(
            !state.is_ejected_at(100),
            "the cap stops counting it on time"
        );
        assert_eq!(home.0.load(Relaxed), 0, "counting is only a read");
        assert!(state.eligible_at(|| 100));
        assert!(state.eligible_by_flags(), "the read cleared the flag");
        assert!(state.eligible_at(|| 101));
        assert_eq!(home.0.load(Relaxed), 1, "announced once");
    }

    #[test]
    fn a_return_comes_through_the_slow_start_planned_at_ejection() {
        let state = BackendState::new();
        state.set_ramp_down(FULL_SHARE / 2);
        state.eject(0, 1_000, 10_000);
        assert_eq!(state.ramp_down_share(), FULL_SHARE, "ramp-down reset");
        assert!(state.eligible_at(|| 1_000));
        assert_eq!(state.share_at(|| 1_000), FULL_SHARE / 10);
        let middle = state.share_at(|| 6_000);
        assert!(middle > FULL_SHARE / 2 && middle < FULL_SHARE, "{middle}");
        assert_eq!(state.share_at(|| 11_000), FULL_SHARE);
        assert!(!state.is_ramping(), "the ramp settled");
    }

    #[test]
    fn readmitting_ends_an_ejection_at_once() {
        let state = BackendState::new();
        assert!(!state.readmit(10, 0), "nothing to end");
        state.eject(10, 1_000_000, 100);
        assert!(state.readmit(20, 100));
        assert!(state.eligible_at(|| 20));
        assert_eq!(state.share_at(|| 20), FULL_SHARE / 10, "ramps from now");
        state.eject(30, 1_000, 0);
        state.reschedule_ejection(5_000, 0);
        assert!(!state.eligible_at(|| 4_000));
        assert!(state.eligible_at(|| 5_000));
    }
}
