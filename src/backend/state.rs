//! A backend's runtime state, shared by every snapshot that lists it.
//!
//! Everything that changes per request or per health event lives here, in
//! atomics, behind an `Arc` that survives snapshot rebuilds: a backend that
//! stays in the set across an update keeps its in-flight count, latency
//! estimate, health verdict, ejection and slow-start state. (Balancers that
//! keep such state inside the rebuilt structure lose it on every reload.)
//!
//! The parts are small types of their own: the [flag word](super::flags),
//! the [ramps](super::ramp) of the share, passive health's
//! [counters](super::outcomes), the [latency estimate](super::ewma), the
//! [watchers](super::watch) of the load and the [mirrors](super::eligibility)
//! of eligibility. This file binds them and holds the one set of questions a
//! reader asks: *eligible?* and *what share?*, each at a given time or now.

use std::fmt;
use std::sync::atomic::{
    AtomicU32, AtomicU64, Ordering::Acquire, Ordering::Relaxed, Ordering::Release,
};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::Duration;

mod ejection;
mod sticky;

use sticky::StickyCounters;
pub use sticky::StickyCounts;
pub(crate) use sticky::StickyOutcome;

use super::eligibility::{Eligibility, Mirrors};
use super::ewma::PeakEwma;
use super::flags::{
    self, DRAINING, EJECTED, Flags, NOT_ELIGIBLE, NOT_PLAIN, NOT_ROUTABLE, RAMP_DOWN, RAMPING,
    REMOVED, SLOW_START,
};
use super::home::{Home, Homes};
use super::outcomes::Outcomes;
use super::ramp::{FULL_SHARE, Ramp, SlowStart, scaled};
use super::watch::{LoadWatch, LoadWatchers};
use super::{BackendId, Verdict};
use crate::clock::{self, Nanos};

/// The runtime state of one backend: atomics read and written without locks.
///
/// A backend is *eligible* for a new request when it is in the set, not
/// drained, not found unhealthy by active probes and not ejected (an
/// ejection ends by its deadline, checked on read). Its *share* of its
/// weight is full, or less during slow start and ramp-down.
///
/// Laid out in order (`repr(C)`): what every pick reads or every request
/// writes (flags, in-flight, identifier, latency) shares the first cache
/// line; what health events touch comes after.
#[repr(C)]
pub struct BackendState {
    flags: Flags,
    in_flight: AtomicU32,
    id: BackendId,
    requests: AtomicU64,
    watchers: LoadWatchers,
    ewma: PeakEwma,
    failures: AtomicU64,
    /// End of the current ejection (clock nanos), meaningful while the
    /// `EJECTED` flag is set.
    ejected_until: AtomicU64,
    /// End of an overload pause (a 429 or a 503 with `Retry-After`),
    /// meaningful while the ejection it started is in force.
    overloaded_until: AtomicU64,
    ramp: Ramp,
    outcomes: Outcomes,
    /// The snapshots' eligibility bits that mirror the flags.
    mirrors: Mirrors,
    /// The sets told when an ejection ends on read.
    homes: Homes,
    /// Written by the prober only; read by status views. Never on the
    /// request path, so a mutex is fine.
    last_probe_error: Mutex<Option<Arc<str>>>,
    /// What sticky cookies did for this backend, for status views.
    sticky: StickyCounters,
}

impl BackendState {
    pub(crate) fn new() -> Self {
        Self {
            flags: Flags::default(),
            in_flight: AtomicU32::new(0),
            id: BackendId::next(),
            requests: AtomicU64::new(0),
            watchers: LoadWatchers::default(),
            ewma: PeakEwma::default(),
            failures: AtomicU64::new(0),
            ejected_until: AtomicU64::new(0),
            overloaded_until: AtomicU64::new(0),
            ramp: Ramp::default(),
            outcomes: Outcomes::default(),
            mirrors: Mirrors::default(),
            homes: Homes::default(),
            last_probe_error: Mutex::new(None),
            sticky: StickyCounters::default(),
        }
    }

    // ----- what a reader asks: eligible, and at what share -----

    /// Whether a new request may go here now.
    pub fn is_eligible(&self) -> bool {
        self.eligible_at(clock::now)
    }

    /// The share of its weight the backend gets now, in `0.0..=1.0`: below
    /// 1 during slow start or ramp-down.
    pub fn share(&self) -> f64 {
        f64::from(self.share_at(clock::now)) / f64::from(FULL_SHARE)
    }

    /// Whether a new request may go here, asking for the time only when an
    /// ejection is in force: one atomic load in the common case.
    ///
    /// The read that finds an ejection past its deadline ends it (clears
    /// the flag, so the plain path returns, and has the backend's sets
    /// announce the return): no timer task has to run for the backend to
    /// come back.
    #[inline]
    pub(crate) fn eligible_at(&self, now: impl FnOnce() -> Nanos) -> bool {
        let flags = self.flags.load();
        if flags & NOT_ELIGIBLE == 0 {
            return true;
        }
        if flags & (NOT_ELIGIBLE & !EJECTED) != 0 {
            return false;
        }
        !self.still_ejected(now())
    }

    /// Eligibility by the flags alone, ignoring when an ejection ends: what
    /// a structure notified of flag changes can know.
    #[inline]
    pub(crate) fn eligible_by_flags(&self) -> bool {
        self.flags.load() & NOT_ELIGIBLE == 0
    }

    /// Whether panic routing may send here when no backend is eligible:
    /// anything in the set and not drained, healthy or not.
    #[inline]
    pub(crate) fn routable(&self) -> bool {
        self.flags.load() & NOT_ROUTABLE == 0
    }

    /// The share of its weight at the time `now` gives, in 1/65536 units,
    /// asking for the time only during slow start.
    #[inline]
    pub(crate) fn share_at(&self, now: impl FnOnce() -> Nanos) -> u32 {
        let flags = self.flags.load();
        if flags & RAMPING == 0 {
            return FULL_SHARE;
        }
        let mut share = FULL_SHARE;
        if flags & SLOW_START != 0 {
            match self.ramp.slow_start(now()) {
                SlowStart::At(ramped) => share = ramped,
                // Clear the flag so the common path goes back to one test.
                SlowStart::Over => {
                    self.set_flags(0, SLOW_START);
                }
            }
        }
        if flags & RAMP_DOWN != 0 {
            share = scaled(share, self.ramp.down());
        }
        share
    }

    /// Whether the share may be below full: in slow start or ramp-down,
    /// when it moves with time and outcomes, not only with the load.
    #[inline]
    pub(crate) fn is_ramping(&self) -> bool {
        self.flags.load() & RAMPING != 0
    }

    // ----- what status views show -----

    /// This state's identifier.
    pub fn id(&self) -> BackendId {
        self.id
    }

    /// Requests sent to this backend whose response body has not yet ended.
    pub fn in_flight(&self) -> u32 {
        self.in_flight.load(Relaxed)
    }

    /// Requests sent to this backend since it joined the set.
    pub fn requests(&self) -> u64 {
        self.requests.load(Relaxed)
    }

    /// Requests recorded as failed by passive health checking.
    pub fn failures(&self) -> u64 {
        self.failures.load(Relaxed)
    }

    /// The peak-EWMA estimate of the time to response headers, decayed to
    /// now; `None` until a first response was timed.
    pub fn latency(&self) -> Option<Duration> {
        self.ewma
            .estimate_at(clock::now())
            .map(|nanos| Duration::from_nanos(nanos as u64))
    }

    /// Whether the backend was removed from the set and is draining.
    pub fn is_removed(&self) -> bool {
        self.flags.load() & REMOVED != 0
    }

    /// Whether an operator drained the backend
    /// ([`BackendSet::drain`](super::BackendSet::drain)).
    pub fn is_draining(&self) -> bool {
        self.flags.load() & DRAINING != 0
    }

    /// The active health checker's verdict.
    pub fn verdict(&self) -> Verdict {
        flags::verdict(self.flags.load())
    }

    /// The last active probe's error, if the last probe failed.
    pub fn last_probe_error(&self) -> Option<Arc<str>> {
        self.last_probe_error
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Failures in a row recorded by passive health checking.
    pub fn consecutive_failures(&self) -> u32 {
        self.outcomes.consecutive_failures()
    }

    /// Ejections in a row (the back-off exponent plus one while ejected).
    pub fn ejections(&self) -> u32 {
        self.outcomes.ejections()
    }

    /// Times outlier detection ejected this backend.
    pub fn ejections_total(&self) -> u64 {
        self.outcomes.ejections_total()
    }

    pub(crate) fn ewma(&self) -> &PeakEwma {
        &self.ewma
    }

    /// Passive health checking's counters.
    pub(crate) fn outcomes(&self) -> &Outcomes {
        &self.outcomes
    }

    /// The ramp-down share (1/65536 units).
    pub(crate) fn ramp_down_share(&self) -> u32 {
        self.ramp.down()
    }

    // ----- writes: the request path -----

    /// Counts a request as started (see [`InFlight`](super::InFlight)).
    #[inline]
    pub(crate) fn begin(&self) {
        self.in_flight.fetch_add(1, Relaxed);
        self.requests.fetch_add(1, Relaxed);
        self.notify();
    }

    /// Counts a request as started if fewer than `max` are in flight, in
    /// one compare-and-swap; whether it did (see
    /// [`InFlight::claim`](super::InFlight::claim), also for the orderings).
    #[inline]
    pub(crate) fn try_begin(&self, max: u64) -> bool {
        let below = |n: u32| (u64::from(n) < max).then(|| n + 1);
        let claimed = self.in_flight.fetch_update(Acquire, Relaxed, below).is_ok();
        if claimed {
            self.requests.fetch_add(1, Relaxed);
            self.notify();
        }
        claimed
    }

    /// Counts a request as finished.
    #[inline]
    pub(crate) fn end(&self) {
        self.in_flight.fetch_sub(1, Release);
        self.notify();
    }

    /// Records one latency sample.
    #[inline]
    pub(crate) fn observe_latency(&self, rtt: Nanos, now: Nanos) {
        self.ewma.observe(rtt, now);
        self.watchers.notify_latency(self);
    }

    /// Counts one failed request.
    pub(crate) fn count_failure(&self) {
        self.failures.fetch_add(1, Relaxed);
    }

    // ----- writes: membership and health, off the request path -----

    /// Marks the backend removed; an operator's drain ends with its
    /// membership (relisted before it finished draining, it is not drained).
    pub(crate) fn mark_removed(&self) {
        self.set_flags(REMOVED, DRAINING);
        super::departures::note();
    }

    pub(crate) fn mark_restored(&self) {
        self.set_flags(0, REMOVED);
    }

    /// Drains (or undrains) the backend; returns whether that changed it.
    pub(crate) fn set_draining(&self, on: bool) -> bool {
        let (set, clear) = if on { (DRAINING, 0) } else { (0, DRAINING) };
        self.set_flags(set, clear).is_some()
    }

    /// Sets the health verdict, returning the previous one, with the error
    /// that explains it (shown by status views).
    ///
    /// The active health checker calls this; so can a health system of your
    /// own (a service registry's checks, an operator marking a backend down).
    /// An unhealthy backend gets no new requests until it is set healthy (or
    /// unknown) again.
    pub fn set_verdict(&self, verdict: Verdict, error: Option<Arc<str>>) -> Verdict {
        *self
            .last_probe_error
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = error;
        let before = self.verdict();
        let (set, clear) = flags::verdict_bits(verdict);
        self.set_flags(set, clear);
        before
    }

    /// Starts a slow-start ramp at `now` lasting `window` (none when zero).
    pub(crate) fn start_slow_start(&self, now: Nanos, window: Nanos) {
        if window == 0 {
            return;
        }
        self.ramp.plan_slow_start(now, window);
        self.set_flags(SLOW_START, 0);
    }

    /// Sets the ramp-down share (1/65536 units); full share clears it.
    pub(crate) fn set_ramp_down(&self, share: u32) {
        if self.ramp.set_down(share) >= FULL_SHARE {
            self.set_flags(0, RAMP_DOWN);
        } else {
            self.set_flags(RAMP_DOWN, 0);
        }
    }

    /// Sets `set` and clears `clear`; returns the flags before, or `None`
    /// when nothing changed. The mirrors and watchers hear of a change,
    /// because eligibility or share may have changed.
    pub(super) fn set_flags(&self, set: u32, clear: u32) -> Option<u32> {
        let before = self.flags.update(set, clear)?;
        let after = (before | set) & !clear;
        if (before ^ after) & NOT_PLAIN != 0 {
            self.mirrors.refresh(self.flags.word(), NOT_PLAIN);
        }
        self.notify();
        Some(before)
    }

    // ----- who listens: watchers, mirrors, homes -----

    #[inline]
    fn notify(&self) {
        self.watchers.notify(self);
    }

    /// Whether a watcher hears this backend's changes.
    #[cfg(test)]
    pub(crate) fn watched(&self) -> bool {
        self.watchers.any()
    }

    pub(crate) fn watch(&self, watch: Arc<dyn LoadWatch>, leaf: usize) {
        self.watchers.add(watch, leaf);
    }

    pub(crate) fn unwatch(&self, watch: &Arc<dyn LoadWatch>) {
        self.watchers.remove(watch);
    }

    /// Lists `bits` as mirroring this backend's eligibility at `index`, and
    /// sets its bit (see [`Eligibility`]).
    pub(crate) fn mirror(&self, bits: &Arc<Eligibility>, index: usize) {
        self.mirrors.add(bits, index, self.flags.word(), NOT_PLAIN);
    }

    /// Lists `home` among the sets told when an ejection ends on read.
    pub(crate) fn add_home(&self, home: Weak<dyn Home>) {
        self.homes.add(home);
    }
}

impl fmt::Debug for BackendState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BackendState")
            .field("id", &self.id)
            .field("verdict", &self.verdict())
            .field("removed", &self.is_removed())
            .field("in_flight", &self.in_flight())
            .field("requests", &self.requests())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn eligibility_follows_flags_verdicts_and_drains() {
        let state = BackendState::new();
        assert!(state.eligible_at(|| 10));
        state.set_verdict(Verdict::Unhealthy, Some(Arc::from("refused")));
        assert!(!state.eligible_at(|| 200));
        assert!(state.routable(), "panic routing may still use it");
        assert_eq!(state.last_probe_error().as_deref(), Some("refused"));
        state.set_verdict(Verdict::Healthy, None);
        assert!(state.eligible_at(|| 200));
        assert!(state.set_draining(true));
        assert!(!state.set_draining(true), "drained already");
        assert!(!state.eligible_at(|| 200) && !state.routable());
        state.set_draining(false);
        state.mark_removed();
        assert!(!state.eligible_at(|| 200) && !state.routable());
    }

    #[test]
    fn ramp_down_scales_the_share() {
        let state = BackendState::new();
        state.start_slow_start(1_000, 10_000);
        assert_eq!(state.share_at(|| 1_000), FULL_SHARE / 10);
        assert_eq!(state.share_at(|| 11_000), FULL_SHARE);
        state.set_ramp_down(FULL_SHARE / 4);
        assert_eq!(state.share_at(|| 11_000), FULL_SHARE / 4);
        state.set_ramp_down(FULL_SHARE);
        assert!(!state.is_ramping());
    }

    #[test]
    fn in_flight_counts_up_and_down() {
        let state = BackendState::new();
        state.begin();
        state.begin();
        state.end();
        assert_eq!(state.in_flight(), 1);
        assert_eq!(state.requests(), 2);
    }
}
