//! Peak-EWMA latency, the load signal of power-of-two-choices.
//!
//! This is the estimator of Finagle and tower's `PeakEwma`: a sample above the
//! current estimate replaces it at once (so a backend that slows down is seen
//! immediately), a sample below it is blended in with a weight that grows with
//! the time since the last sample, and the estimate decays towards zero while
//! nothing is observed, so an idle backend is tried again.
//!
//! The value lives in two atomics updated without a lock. Two concurrent
//! observations may race and one may win over the other; for a smoothed
//! estimate that is harmless, and it keeps the request path lock-free.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use crate::clock::Nanos;

/// The decay time constant: how long until an old sample weighs 1/e. Ten
/// seconds, tower's and linkerd's default: slow enough to ride out one slow
/// request, fast enough to follow a backend that recovered.
const DECAY_NS: f64 = 10e9;

/// A lock-free peak-EWMA latency estimate, in nanoseconds.
#[derive(Debug, Default)]
pub(crate) struct PeakEwma {
    estimate_bits: AtomicU64,
    stamp: AtomicU64,
}

impl PeakEwma {
    /// Records one observed latency at time `now`.
    pub(crate) fn observe(&self, rtt: Nanos, now: Nanos) {
        let rtt = rtt as f64;
        let stamp = self.stamp.swap(now, Relaxed);
        let estimate = f64::from_bits(self.estimate_bits.load(Relaxed));
        let next = if stamp == 0 || rtt > estimate {
            rtt
        } else {
            let elapsed = now.saturating_sub(stamp) as f64;
            let weight = (-elapsed / DECAY_NS).exp();
            estimate * weight + rtt * (1.0 - weight)
        };
        self.estimate_bits.store(next.to_bits(), Relaxed);
    }

    /// The estimate at time `now`, decayed for the time since the last
    /// sample; `None` until a first sample arrived.
    pub(crate) fn estimate_at(&self, now: Nanos) -> Option<f64> {
        let stamp = self.stamp.load(Relaxed);
        if stamp == 0 {
            return None;
        }
        let estimate = f64::from_bits(self.estimate_bits.load(Relaxed));
        let elapsed = now.saturating_sub(stamp) as f64;
        Some(estimate * (-elapsed / DECAY_NS).exp())
    }

    /// The last stored estimate without decay, in nanoseconds (0 if none).
    #[cfg(test)]
    pub(crate) fn last_estimate(&self) -> f64 {
        f64::from_bits(self.estimate_bits.load(Relaxed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;

    #[test]
    fn a_peak_replaces_the_estimate_at_once() {
        let ewma = PeakEwma::default();
        ewma.observe(10 * MS, 1);
        ewma.observe(100 * MS, 2);
        assert_eq!(ewma.estimate_at(2).unwrap().round(), (100 * MS) as f64);
    }

    #[test]
    fn lower_samples_blend_in_by_elapsed_time() {
        let ewma = PeakEwma::default();
        ewma.observe(100 * MS, 1);
        // One decay constant later the old value weighs 1/e.
        ewma.observe(0, 1 + 10_000 * MS);
        let expected = 100.0 * MS as f64 * (-1.0f64).exp();
        let got = ewma.last_estimate();
        assert!((got - expected).abs() < 1.0, "{got} vs {expected}");
    }

    #[test]
    fn estimate_decays_while_idle() {
        let ewma = PeakEwma::default();
        assert!(ewma.estimate_at(5).is_none());
        ewma.observe(100 * MS, 1);
        let later = ewma.estimate_at(1 + 20_000 * MS).unwrap();
        assert!(later < 100.0 * MS as f64 * 0.14, "{later}");
    }
}
