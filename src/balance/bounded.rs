//! Bounded loads for consistent hashing (Mirrokni, Thorup and Zadimoghaddam,
//! "Consistent Hashing with Bounded Loads", SODA 2018; HAProxy's
//! `hash-balance-factor`, Vimeo's and Google's production use).
//!
//! Plain consistent hashing sends a hot key's every request to one backend,
//! however busy it is. With a balance factor `F`, no backend takes more than
//! `⌈F × (m + 1) × w / W⌉` requests at once, where `m` is the requests in
//! flight to the set, `w` the backend's weight and `W` the eligible weight:
//! a key whose backend is at its bound goes to the next backend of its own
//! preference order, and comes back as soon as the load falls. Only keys
//! that meet a full backend move, so affinity is kept wherever it costs
//! nothing; `F` trades affinity (high) for evenness (close to 1).
//!
//! The bound needs the set's total in flight. Summing it per pick would be
//! O(n), so the table watches its backends (as least-connections' tree
//! does) and keeps the sum and the eligible weight in two atomics, each
//! changed by the difference a backend's notification brings. The cost is
//! one shared atomic add per request start and end, paid only when the
//! option is on.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering::Relaxed};

use crate::backend::{Backend, BackendState, LoadWatch, Watching};
use crate::error::ConfigError;

/// Fixed-point scale of the factor: thousandths.
const SCALE: u64 = 1000;

/// A validated balance factor, in thousandths (1.25 is 1250).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct BalanceFactor(u64);

impl BalanceFactor {
    /// `factor` as given by an operator: at least 1 (a bound below the
    /// average cannot be met by every backend at once) and finite.
    pub(super) fn new(factor: f64) -> Result<Self, ConfigError> {
        if !(1.0..=1000.0).contains(&factor) {
            return Err(ConfigError::new(format!(
                "hash balance factor {factor} is outside 1.0..=1000.0"
            )));
        }
        Ok(Self((factor * SCALE as f64).round() as u64))
    }

    /// The factor as a number.
    pub(super) fn get(self) -> f64 {
        self.0 as f64 / SCALE as f64
    }
}

/// The bounded-load part of a hash table: the watched sums of the set.
pub(super) struct BoundedLoad {
    sums: Arc<Sums>,
    _watching: Watching,
    factor: BalanceFactor,
}

/// What the bound is computed from, kept current by notifications.
struct Sums {
    /// Requests in flight to the set's members.
    total: AtomicU64,
    /// Weight of the members eligible by their flags.
    weight: AtomicU64,
    /// Per member, the in-flight count last added into `total`.
    seen_load: Box<[AtomicU32]>,
    /// Per member, the weight last added into `weight` (0 when ineligible).
    seen_weight: Box<[AtomicU32]>,
    weights: Box<[u32]>,
}

impl BoundedLoad {
    pub(super) fn build(backends: &[Backend], factor: BalanceFactor) -> Self {
        let sums = Arc::new(Sums {
            total: AtomicU64::new(0),
            weight: AtomicU64::new(0),
            seen_load: backends.iter().map(|_| AtomicU32::new(0)).collect(),
            seen_weight: backends.iter().map(|_| AtomicU32::new(0)).collect(),
            weights: backends.iter().map(Backend::weight).collect(),
        });
        let watching = Watching::new(backends, sums.clone());
        Self {
            sums,
            _watching: watching,
            factor,
        }
    }

    /// The bound at this moment: read once per pick.
    #[inline]
    pub(super) fn bound(&self) -> Bound {
        Bound {
            // The sums are changed by signed differences in two's
            // complement; a transiently negative sum reads as zero.
            total: (self.sums.total.load(Relaxed) as i64).max(0) as u64,
            weight: (self.sums.weight.load(Relaxed) as i64).max(0) as u64,
            factor: self.factor.0,
        }
    }
}

/// The bound read for one pick.
#[derive(Clone, Copy, Debug)]
pub(super) struct Bound {
    total: u64,
    weight: u64,
    factor: u64,
}

impl Bound {
    /// The most requests a backend of `weight` may hold with one more
    /// request arriving: `⌈F × (m + 1) × w / W⌉`, or no bound while no
    /// member is known to be eligible.
    #[inline]
    pub(super) fn capacity(&self, weight: u32) -> u64 {
        if self.weight == 0 {
            return u64::MAX;
        }
        let numerator = u128::from(self.factor) * u128::from(self.total + 1) * u128::from(weight);
        let denominator = u128::from(SCALE) * u128::from(self.weight);
        numerator.div_ceil(denominator).min(u128::from(u64::MAX)) as u64
    }

    /// Whether `backend` is at its bound.
    #[inline]
    pub(super) fn is_full(&self, backend: &Backend) -> bool {
        u64::from(backend.state().in_flight()) >= self.capacity(backend.weight())
    }
}

impl LoadWatch for Sums {
    fn load_changed(&self, leaf: usize, state: &BackendState) {
        let (Some(seen_load), Some(seen_weight), Some(&weight)) = (
            self.seen_load.get(leaf),
            self.seen_weight.get(leaf),
            self.weights.get(leaf),
        ) else {
            return;
        };
        // Swap, then add the difference: `total` is always the sum of the
        // `seen_load`s, whatever the interleaving; a count seen out of order
        // is put right by the next notification.
        let load = state.in_flight();
        let before = seen_load.swap(load, Relaxed);
        if load != before {
            let delta = i64::from(load) - i64::from(before);
            self.total.fetch_add(delta as u64, Relaxed);
        }
        let weight = if state.eligible_by_flags() { weight } else { 0 };
        let before = seen_weight.swap(weight, Relaxed);
        if weight != before {
            let delta = i64::from(weight) - i64::from(before);
            self.weight.fetch_add(delta as u64, Relaxed);
        }
    }
}

impl fmt::Debug for BoundedLoad {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BoundedLoad")
            .field("factor", &self.factor.get())
            .field("bound", &self.bound())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::InFlight;
    use crate::balance::test_support::backends;

    #[test]
    fn factors_below_one_are_refused() {
        assert!(BalanceFactor::new(0.9).is_err());
        assert!(BalanceFactor::new(f64::NAN).is_err());
        assert_eq!(BalanceFactor::new(1.25).unwrap().0, 1250);
    }

    #[test]
    fn the_sums_follow_loads_and_eligibility() {
        let set = backends(&[1, 2, 1]);
        let bounded = BoundedLoad::build(&set, BalanceFactor::new(1.25).unwrap());
        assert_eq!((bounded.bound().total, bounded.bound().weight), (0, 4));
        let held: Vec<InFlight> = (0..5)
            .map(|i| InFlight::begin(set[i % 3].clone()))
            .collect();
        assert_eq!(bounded.bound().total, 5);
        set[1].state().eject(0, u64::MAX, 0);
        assert_eq!(bounded.bound().weight, 2);
        // ⌈1.25 × 6 × 1 / 2⌉ = 4
        assert_eq!(bounded.bound().capacity(1), 4);
        drop(held);
        assert_eq!(bounded.bound().total, 0);
        let sums = Arc::downgrade(&bounded.sums);
        drop(bounded);
        assert!(
            sums.upgrade().is_none(),
            "the table unwatches its backends on drop"
        );
    }
}
