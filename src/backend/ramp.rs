//! A backend's share of its weight: slow start up, ramp-down by failures.
//!
//! Both are gradual traffic changes, in the fixed-point unit of
//! [`FULL_SHARE`]: slow start grows linearly from a floor over a window
//! (Envoy's slow start, with its "aggression" floor of 10 % so a fresh
//! backend gets traffic at once), ramp-down holds a share that outlier
//! detection set from the success rate. The flags say whether either is on,
//! so a backend at full share pays one flag test.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering::Relaxed};

use crate::clock::Nanos;

/// The full share of traffic, in the fixed-point unit of ramp factors.
pub(crate) const FULL_SHARE: u32 = 1 << 16;

/// Where slow start begins: a tenth of the full share.
const SLOW_START_FLOOR: u32 = FULL_SHARE / 10;

/// The two ramps of one backend.
#[derive(Debug)]
pub(super) struct Ramp {
    /// Start of the current slow-start ramp and its length (clock nanos).
    /// The start may lie ahead: an ejected backend's ramp begins when its
    /// ejection ends.
    since: AtomicU64,
    window: AtomicU64,
    /// The share kept while ramping down, in 1/65536 units.
    down: AtomicU32,
}

impl Default for Ramp {
    fn default() -> Self {
        Self {
            since: AtomicU64::new(0),
            window: AtomicU64::new(0),
            down: AtomicU32::new(FULL_SHARE),
        }
    }
}

/// What a slow-start read found.
pub(super) enum SlowStart {
    /// Still ramping, at this share.
    At(u32),
    /// The window has passed: the caller clears the flag.
    Over,
}

impl Ramp {
    /// Plans a slow start from `since` over `window`; the caller sets the
    /// flag afterwards, so a reader that sees it also sees these.
    pub(super) fn plan_slow_start(&self, since: Nanos, window: Nanos) {
        self.since.store(since, Relaxed);
        self.window.store(window, Relaxed);
    }

    /// The slow-start share at `now`.
    pub(super) fn slow_start(&self, now: Nanos) -> SlowStart {
        let since = self.since.load(Relaxed);
        let window = self.window.load(Relaxed).max(1);
        let elapsed = now.saturating_sub(since);
        if elapsed >= window {
            return SlowStart::Over;
        }
        let grown = (u64::from(FULL_SHARE - SLOW_START_FLOOR) * elapsed) / window;
        SlowStart::At(SLOW_START_FLOOR + grown as u32)
    }

    /// The ramp-down share (1/65536 units).
    pub(super) fn down(&self) -> u32 {
        self.down.load(Relaxed)
    }

    /// Stores the ramp-down share, at most full; returns what it stored.
    pub(super) fn set_down(&self, share: u32) -> u32 {
        let share = share.min(FULL_SHARE);
        self.down.store(share, Relaxed);
        share
    }
}

/// `share` scaled by the ramp-down factor `down` (both 1/65536 units).
#[inline]
pub(super) fn scaled(share: u32, down: u32) -> u32 {
    ((u64::from(share) * u64::from(down)) >> 16) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slow_start_grows_from_a_tenth_and_ends() {
        let ramp = Ramp::default();
        ramp.plan_slow_start(1_000, 10_000);
        assert!(matches!(ramp.slow_start(1_000), SlowStart::At(s) if s == FULL_SHARE / 10));
        assert!(
            matches!(ramp.slow_start(500), SlowStart::At(s) if s == FULL_SHARE / 10),
            "a ramp planned ahead waits at its floor"
        );
        assert!(
            matches!(ramp.slow_start(6_000), SlowStart::At(s) if s > FULL_SHARE / 2 && s < FULL_SHARE)
        );
        assert!(matches!(ramp.slow_start(11_000), SlowStart::Over));
        assert_eq!(scaled(FULL_SHARE, FULL_SHARE / 4), FULL_SHARE / 4);
        assert_eq!(ramp.set_down(2 * FULL_SHARE), FULL_SHARE);
    }
}
