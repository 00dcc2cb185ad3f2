//! A backend's runtime state, shared by every snapshot that lists it.
//!
//! Everything that changes per request or per health event lives here, in
//! atomics, behind an `Arc` that survives snapshot rebuilds: a backend that
//! stays in the set across an update keeps its in-flight count, latency
//! estimate, health verdict, ejection and slow-start state. (Balancers that
//! keep such state inside the rebuilt structure lose it on every reload.)

use std::fmt;
use std::sync::atomic::{
    AtomicU32, AtomicU64,
    Ordering::{Relaxed, SeqCst},
};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use super::eligibility::{Eligibility, Mirrors};
use super::ewma::PeakEwma;
use super::outcomes::Outcomes;
use super::watch::{LoadWatch, LoadWatchers};
use crate::clock::{self, Nanos};

/// A process-unique, never reused identifier of a backend's runtime state.
///
/// Retries carry the identifiers of the backends a request already tried, so
/// that the next attempt goes elsewhere.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BackendId(u64);

impl BackendId {
    fn next() -> Self {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        Self(NEXT.fetch_add(1, Relaxed))
    }
}

/// The active health checker's verdict on a backend.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Verdict {
    /// Not probed yet (or no prober runs). Eligible: an unprobed backend is
    /// given the benefit of the doubt, as nginx and Envoy do.
    Unknown,
    /// The last `healthy-after` probes passed.
    Healthy,
    /// The last `unhealthy-after` probes failed. Not eligible.
    Unhealthy,
}

const REMOVED: u32 = 1 << 0;
const UNHEALTHY: u32 = 1 << 1;
const HEALTHY: u32 = 1 << 2;
const EJECTED: u32 = 1 << 3;
const SLOW_START: u32 = 1 << 4;
const RAMP_DOWN: u32 = 1 << 5;
/// The flags that take a backend off the plain path of picks (see
/// [`Eligibility`]): any of them makes a pick ask the backend itself.
const NOT_PLAIN: u32 = REMOVED | UNHEALTHY | EJECTED | SLOW_START | RAMP_DOWN;

/// The full share of traffic, in the fixed-point unit of ramp factors.
pub(crate) const FULL_SHARE: u32 = 1 << 16;

/// The runtime state of one backend: atomics read and written without locks.
///
/// Laid out in order (`repr(C)`): what every pick reads or every request
/// writes (flags, in-flight, identifier, latency) shares the first cache
/// line; what health events touch comes after.
#[repr(C)]
pub struct BackendState {
    flags: AtomicU32,
    in_flight: AtomicU32,
    id: BackendId,
    requests: AtomicU64,
    watchers: LoadWatchers,
    ewma: PeakEwma,
    failures: AtomicU64,
    /// End of the current passive ejection (clock nanos), meaningful while
    /// the `EJECTED` flag is set.
    ejected_until: AtomicU64,
    /// Start of the current slow-start ramp and its length (clock nanos).
    slow_start_since: AtomicU64,
    slow_start_window: AtomicU64,
    /// The share of traffic kept while ramping down, in 1/65536 units.
    ramp_down_share: AtomicU32,
    outcomes: Outcomes,
    /// The snapshots' eligibility bits that mirror `flags`.
    mirrors: Mirrors,
    /// Written by the prober only; read by status views. Never on the
    /// request path, so a mutex is fine.
    last_probe_error: Mutex<Option<Arc<str>>>,
}

impl BackendState {
    pub(crate) fn new() -> Self {
        Self {
            id: BackendId::next(),
            flags: AtomicU32::new(0),
            in_flight: AtomicU32::new(0),
            requests: AtomicU64::new(0),
            failures: AtomicU64::new(0),
            ewma: PeakEwma::default(),
            ejected_until: AtomicU64::new(0),
            slow_start_since: AtomicU64::new(0),
            slow_start_window: AtomicU64::new(0),
            ramp_down_share: AtomicU32::new(FULL_SHARE),
            outcomes: Outcomes::default(),
            watchers: LoadWatchers::default(),
            mirrors: Mirrors::default(),
            last_probe_error: Mutex::new(None),
        }
    }

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

    pub(crate) fn ewma(&self) -> &PeakEwma {
        &self.ewma
    }

    /// Whether the backend was removed from the set and is draining.
    pub fn is_removed(&self) -> bool {
        self.flags.load(Relaxed) & REMOVED != 0
    }

    /// The active health checker's verdict.
    pub fn verdict(&self) -> Verdict {
        let flags = self.flags.load(Relaxed);
        if flags & UNHEALTHY != 0 {
            Verdict::Unhealthy
        } else if flags & HEALTHY != 0 {
            Verdict::Healthy
        } else {
            Verdict::Unknown
        }
    }

    /// The last active probe's error, if the last probe failed.
    pub fn last_probe_error(&self) -> Option<Arc<str>> {
        self.last_probe_error
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// How long the current passive ejection still lasts, if one is in force.
    pub fn ejection_remaining(&self) -> Option<Duration> {
        let now = clock::now();
        self.ejected_until(now)
            .map(|until| Duration::from_nanos(until - now))
    }

    pub(crate) fn ejected_until(&self, now: Nanos) -> Option<Nanos> {
        if self.flags.load(Relaxed) & EJECTED == 0 {
            return None;
        }
        let until = self.ejected_until.load(Relaxed);
        (now < until).then_some(until)
    }

    /// Whether a new request may go here at `now`: not removed, not found
    /// unhealthy by probes, not ejected by outlier detection.
    ///
    /// One atomic load in the common case; an ejection's end is checked
    /// against the clock only while the ejected flag is set, so a backend is
    /// let back on time even before the task that announces it runs.
    #[inline]
    pub(crate) fn is_eligible(&self, now: Nanos) -> bool {
        self.is_eligible_at(|| now)
    }

    /// [`is_eligible`](Self::is_eligible), asking for the time only when an
    /// ejection is in force.
    #[inline]
    pub(crate) fn is_eligible_at(&self, now: impl FnOnce() -> Nanos) -> bool {
        let flags = self.flags.load(Relaxed);
        if flags & (REMOVED | UNHEALTHY | EJECTED) == 0 {
            return true;
        }
        flags & (REMOVED | UNHEALTHY) == 0 && now() >= self.ejected_until.load(Relaxed)
    }

    /// Eligibility by the flags alone, ignoring when an ejection ends:
    /// what a structure notified of flag changes can know.
    #[inline]
    pub(crate) fn is_flag_eligible(&self) -> bool {
        self.flags.load(Relaxed) & (REMOVED | UNHEALTHY | EJECTED) == 0
    }

    /// Whether the backend may take a request when no backend is eligible
    /// and panic routing is on: anything still in the set.
    #[inline]
    pub fn is_routable(&self) -> bool {
        self.flags.load(Relaxed) & REMOVED == 0
    }

    /// The share of its weight the backend gets at `now`, in 1/65536 units:
    /// full, or less while it ramps up after a (re)start or ramps down
    /// because part of its requests fail.
    #[inline]
    pub(crate) fn share(&self, now: Nanos) -> u32 {
        self.share_at(|| now)
    }

    /// [`share`](Self::share), asking for the time only during slow start.
    #[inline]
    pub(crate) fn share_at(&self, now: impl FnOnce() -> Nanos) -> u32 {
        let flags = self.flags.load(Relaxed);
        if flags & (SLOW_START | RAMP_DOWN) == 0 {
            return FULL_SHARE;
        }
        let mut share = FULL_SHARE;
        if flags & SLOW_START != 0 {
            share = self.slow_start_share(now());
        }
        if flags & RAMP_DOWN != 0 {
            let down = self.ramp_down_share.load(Relaxed);
            share = ((u64::from(share) * u64::from(down)) >> 16) as u32;
        }
        share
    }

    /// Whether a new request may go here now (see the crate docs for what
    /// makes a backend eligible).
    pub fn is_eligible_now(&self) -> bool {
        self.is_eligible(clock::now())
    }

    /// The share of its weight the backend gets now, in `0.0..=1.0`: below
    /// 1 during slow start or ramp-down.
    pub fn current_share(&self) -> f64 {
        f64::from(self.share(clock::now())) / f64::from(FULL_SHARE)
    }

    /// Whether the share may be below full: in slow start or ramp-down,
    /// when it moves with time and outcomes, not only with the load.
    #[inline]
    pub(crate) fn is_ramping(&self) -> bool {
        self.flags.load(Relaxed) & (SLOW_START | RAMP_DOWN) != 0
    }

    /// [`share`](Self::share), reading the clock only while ramping.
    #[inline]
    pub(crate) fn share_now(&self) -> u32 {
        self.share_at(clock::now)
    }

    fn slow_start_share(&self, now: Nanos) -> u32 {
        let since = self.slow_start_since.load(Relaxed);
        let window = self.slow_start_window.load(Relaxed).max(1);
        let elapsed = now.saturating_sub(since);
        if elapsed >= window {
            // The ramp is over: clear the flag so the common path goes back
            // to one flag test.
            self.set_flags(0, SLOW_START);
            return FULL_SHARE;
        }
        // Start at 10 % so a fresh backend gets some traffic at once (the
        // "aggression" floor of Envoy's slow start), then grow linearly.
        let floor = FULL_SHARE / 10;
        floor + ((u64::from(FULL_SHARE - floor) * elapsed) / window) as u32
    }

    // ----- writes: the request path -----

    /// Counts a request as started (see [`InFlight`](super::InFlight)).
    #[inline]
    pub(crate) fn begin(&self) {
        self.in_flight.fetch_add(1, Relaxed);
        self.requests.fetch_add(1, Relaxed);
        self.notify();
    }

    /// Counts a request as finished.
    #[inline]
    pub(crate) fn end(&self) {
        self.in_flight.fetch_sub(1, Relaxed);
        self.notify();
    }

    /// Records one latency sample.
    #[inline]
    pub(crate) fn observe_latency(&self, rtt: Nanos, now: Nanos) {
        self.ewma.observe(rtt, now);
    }

    // ----- writes: membership and health, off the request path -----

    pub(crate) fn mark_removed(&self) {
        self.set_flags(REMOVED, 0);
    }

    pub(crate) fn mark_restored(&self) {
        self.set_flags(0, REMOVED);
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
        match verdict {
            Verdict::Unknown => self.set_flags(0, HEALTHY | UNHEALTHY),
            Verdict::Healthy => self.set_flags(HEALTHY, UNHEALTHY),
            Verdict::Unhealthy => self.set_flags(UNHEALTHY, HEALTHY),
        };
        before
    }

    /// Ejects the backend until `until`, unless it is ejected already;
    /// returns whether this call ejected it.
    pub(crate) fn eject(&self, until: Nanos) -> bool {
        let before = self.flags.load(Relaxed);
        if before & EJECTED != 0 {
            return false;
        }
        self.ejected_until.store(until, Relaxed);
        self.set_flags(EJECTED, 0) & EJECTED == 0
    }

    /// Whether the ejected flag is set (whatever the deadline).
    pub(crate) fn is_flagged_ejected(&self) -> bool {
        self.flags.load(Relaxed) & EJECTED != 0
    }

    /// Counts one failed request.
    pub(crate) fn count_failure(&self) {
        self.failures.fetch_add(1, Relaxed);
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

    /// Passive health checking's counters.
    pub(crate) fn outcomes(&self) -> &Outcomes {
        &self.outcomes
    }

    /// Ends an ejection; returns whether one was in force.
    pub(crate) fn end_ejection(&self) -> bool {
        let before = self.set_flags(0, EJECTED);
        before & EJECTED != 0
    }

    /// Starts a slow-start ramp at `now` lasting `window`.
    pub(crate) fn start_slow_start(&self, now: Nanos, window: Nanos) {
        if window == 0 {
            return;
        }
        self.slow_start_since.store(now, Relaxed);
        self.slow_start_window.store(window, Relaxed);
        self.set_flags(SLOW_START, 0);
    }

    /// The ramp-down share (1/65536 units).
    pub(crate) fn ramp_down_share(&self) -> u32 {
        self.ramp_down_share.load(Relaxed)
    }

    /// Sets the ramp-down share (1/65536 units); full share clears it.
    pub(crate) fn set_ramp_down(&self, share: u32) {
        let share = share.min(FULL_SHARE);
        self.ramp_down_share.store(share, Relaxed);
        if share >= FULL_SHARE {
            self.set_flags(0, RAMP_DOWN);
        } else {
            self.set_flags(RAMP_DOWN, 0);
        }
    }

    /// Sets `set` and clears `clear`; returns the flags before. Watchers hear
    /// of the change because eligibility may have changed.
    fn set_flags(&self, set: u32, clear: u32) -> u32 {
        let mut current = self.flags.load(Relaxed);
        loop {
            let next = (current | set) & !clear;
            if next == current {
                return current;
            }
            // Sequentially consistent, with the mirrors' reads: see
            // `eligibility` for why the bits end up right.
            match self
                .flags
                .compare_exchange_weak(current, next, SeqCst, Relaxed)
            {
                Ok(before) => {
                    if (before ^ next) & NOT_PLAIN != 0 {
                        self.mirrors.refresh(&self.flags, NOT_PLAIN);
                    }
                    self.notify();
                    return before;
                }
                Err(actual) => current = actual,
            }
        }
    }

    // ----- watchers and mirrors -----

    #[inline]
    fn notify(&self) {
        self.watchers.notify(self);
    }

    pub(crate) fn watch(&self, watch: Arc<dyn LoadWatch>, leaf: usize) {
        self.watchers.add(watch, leaf);
    }

    #[cfg(test)]
    pub(crate) fn watcher_count(&self) -> usize {
        self.watchers.len()
    }

    pub(crate) fn unwatch(&self, watch: &Arc<dyn LoadWatch>) {
        self.watchers.remove(watch);
    }

    /// Lists `bits` as mirroring this backend's eligibility at `index`, and
    /// sets its bit (see [`Eligibility`]).
    pub(crate) fn mirror(&self, bits: &Arc<Eligibility>, index: usize) {
        self.mirrors.add(bits, index, &self.flags, NOT_PLAIN);
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
    fn eligibility_follows_flags_and_ejection_deadline() {
        let state = BackendState::new();
        assert!(state.is_eligible(10));
        state.eject(100);
        assert!(!state.is_eligible(50));
        assert!(
            state.is_eligible(100),
            "eligible again once the deadline passed"
        );
        state.end_ejection();
        state.set_verdict(Verdict::Unhealthy, Some(Arc::from("refused")));
        assert!(!state.is_eligible(200));
        assert!(state.is_routable());
        assert_eq!(state.last_probe_error().as_deref(), Some("refused"));
        state.set_verdict(Verdict::Healthy, None);
        assert!(state.is_eligible(200));
        state.mark_removed();
        assert!(!state.is_eligible(200));
        assert!(!state.is_routable());
    }

    #[test]
    fn slow_start_ramps_from_a_tenth_to_full() {
        let state = BackendState::new();
        state.start_slow_start(1_000, 10_000);
        assert_eq!(state.share(1_000), FULL_SHARE / 10);
        let middle = state.share(6_000);
        assert!(middle > FULL_SHARE / 2 && middle < FULL_SHARE, "{middle}");
        assert_eq!(state.share(11_000), FULL_SHARE);
        assert_eq!(
            state.flags.load(Relaxed) & SLOW_START,
            0,
            "the ramp settled"
        );
        state.set_ramp_down(FULL_SHARE / 4);
        assert_eq!(state.share(11_000), FULL_SHARE / 4);
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
