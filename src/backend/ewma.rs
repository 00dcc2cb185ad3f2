//! Peak-EWMA latency, the load signal of power-of-two-choices.
//!
//! This is the estimator of Finagle and tower's `PeakEwma`: a sample above the
//! current estimate replaces it at once (so a backend that slows down is seen
//! immediately), a sample below it is blended in with a weight that grows with
//! the time since the last sample, and the estimate decays towards zero while
//! nothing is observed, so an idle backend is tried again.
//!
//! A sample taken by a *probe* (a request a balancer sent to re-measure a
//! backend it had been avoiding) replaces the estimate instead of blending
//! in: the old estimate described the backend as it was when it was last
//! chosen, and blending a fresh sample into it with the time-based weight
//! would keep a backend that answered slowly once penalised for tens of
//! seconds (at low load, where nothing is pending, for good: it would get
//! no samples at all).
//!
//! The value lives in two atomics updated without a lock. Two concurrent
//! observations may race and one may win over the other; for a smoothed
//! estimate that is harmless, and it keeps the request path lock-free.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};

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
    /// The next sample answers a probe: it replaces the estimate.
    probed: AtomicBool,
}

impl PeakEwma {
    /// Records one observed latency at time `now`.
    pub(crate) fn observe(&self, rtt: Nanos, now: Nanos) {
        let rtt = rtt as f64;
        // A load and a store, not a swap: a swap is a locked instruction
        // (about 6 ns here, once a request), and two observations racing
        // between the load and the store are the race the module docs
        // accept already (both blend from the same stamp).
        let stamp = self.stamp.load(Relaxed);
        self.stamp.store(now, Relaxed);
        let estimate = f64::from_bits(self.estimate_bits.load(Relaxed));
        // A load first: the swap (a write) only when a probe is pending.
        let probed = self.probed.load(Relaxed) && self.probed.swap(false, Relaxed);
        let next = if stamp == 0 || probed || rtt > estimate {
            rtt
        } else {
            // e^(-elapsed / DECAY_NS): between a busy backend's samples
            // (under a millisecond) a short series, not a call to `exp`.
            let weight = decay_between(stamp, now.max(stamp));
            estimate * weight + rtt * (1.0 - weight)
        };
        self.estimate_bits.store(next.to_bits(), Relaxed);
    }

    /// Marks the next sample as a probe's (see the module docs).
    pub(crate) fn probe(&self) {
        self.probed.store(true, Relaxed);
    }

    /// The last estimate and when it was taken (no decay applied), or `None`
    /// until a first sample: enough to compare two estimates without
    /// reading the clock (see [`decay_between`]).
    #[inline]
    pub(crate) fn sample(&self) -> Option<(f64, Nanos)> {
        let stamp = self.stamp.load(Relaxed);
        if stamp == 0 {
            return None;
        }
        Some((f64::from_bits(self.estimate_bits.load(Relaxed)), stamp))
    }

    /// The estimate's bits and its stamp as stored (stamp 0: no sample
    /// yet), for a copy kept elsewhere to compare with.
    #[inline]
    pub(crate) fn raw(&self) -> (u64, Nanos) {
        (self.estimate_bits.load(Relaxed), self.stamp.load(Relaxed))
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
}

/// How much an estimate stamped `from` has decayed by the time `to`,
/// relative to one stamped `to`: `exp(-(to - from) / τ)` for any later
/// `now`, since both decay by the same factor from `to` on. It lets two
/// estimates be compared as of any common time without reading the clock.
/// (The exponent is clamped so that stamps hours apart give 0 or a large
/// finite number, never infinity.)
///
/// Backends that all take traffic have stamps a few milliseconds apart, an
/// exponent below 1/1000: there a five-term Taylor series is exact to 1e-15
/// and costs a fraction of `exp`.
#[inline]
pub(crate) fn decay_between(from: Nanos, to: Nanos) -> f64 {
    let x = (from as f64 - to as f64) / DECAY_NS;
    if x.abs() < 1.0 / 1024.0 {
        1.0 + x * (1.0 + x * (0.5 + x * (1.0 / 6.0 + x * (1.0 / 24.0))))
    } else {
        x.clamp(-700.0, 700.0).exp()
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
        let got = ewma.sample().unwrap().0;
        assert!((got - expected).abs() < 1.0, "{got} vs {expected}");
    }

    /// The blend's weight is e^(-elapsed / τ) for gaps on both sides of
    /// the short series' range (under and over about 10 ms).
    #[test]
    fn a_blend_weighs_the_old_estimate_by_its_exact_decay() {
        for gap in [1, 1_000, MS, 9 * MS, 11 * MS, 500 * MS, 10_000 * MS] {
            let ewma = PeakEwma::default();
            ewma.observe(100 * MS, 1);
            ewma.observe(20 * MS, 1 + gap);
            let weight = (-(gap as f64) / DECAY_NS).exp();
            let expected = 100.0 * MS as f64 * weight + 20.0 * MS as f64 * (1.0 - weight);
            let got = ewma.sample().unwrap().0;
            assert!(
                (got / expected - 1.0).abs() < 1e-12,
                "{gap}: {got} vs {expected}"
            );
        }
    }

    #[test]
    fn relative_decay_orders_estimates_as_of_any_time() {
        let (a, b) = (PeakEwma::default(), PeakEwma::default());
        a.observe(40 * MS, 1);
        b.observe(30 * MS, 1 + 5_000 * MS);
        let (ea, sa) = a.sample().unwrap();
        let (eb, sb) = b.sample().unwrap();
        for now in [sb, sb + 1_000 * MS, sb + 60_000 * MS] {
            let direct = a.estimate_at(now).unwrap() / b.estimate_at(now).unwrap();
            let relative = ea * decay_between(sa, sb) / eb;
            assert!(
                (direct / relative - 1.0).abs() < 1e-9,
                "{direct} vs {relative}"
            );
        }
        assert_eq!(decay_between(0, u64::MAX), (-700f64).exp());
        for elapsed in [0, 1, 1_000, MS, 9 * MS, 10 * MS, 11 * MS, 5_000 * MS] {
            let exact = (-(elapsed as f64) / DECAY_NS).exp();
            assert!(
                (decay_between(0, elapsed) / exact - 1.0).abs() < 1e-14,
                "{elapsed}"
            );
            assert!(
                (decay_between(elapsed, 0) * exact - 1.0).abs() < 1e-14,
                "{elapsed}"
            );
        }
    }

    #[test]
    fn a_probe_answer_replaces_the_estimate() {
        let ewma = PeakEwma::default();
        ewma.observe(50 * MS, 1);
        ewma.observe(MS, 2);
        assert!(ewma.sample().unwrap().0 > 49.0 * MS as f64, "blended in");
        ewma.probe();
        ewma.observe(MS, 3);
        assert_eq!(ewma.sample().unwrap().0, MS as f64, "replaced");
        ewma.observe(0, 4);
        assert!(
            ewma.sample().unwrap().0 > 0.99 * MS as f64,
            "one probe, one sample"
        );
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
