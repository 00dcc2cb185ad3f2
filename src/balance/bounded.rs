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
//! does) and keeps the sum and the eligible weight in atomics, each
//! changed by the difference a backend's notification brings. The cost is
//! an atomic add per request start and end, paid only when the option is
//! on. The total is split in [`SHARDS`] counters on lines of their own, a
//! member's changes always going to the same one (its index modulo
//! `SHARDS`): with one counter every start and end on every thread wrote
//! the same cache line, and threads serving different backends passed it
//! back and forth; a pick sums the shards, eight loads of lines that stay
//! in cache while their members are quiet.
//!
//! The count that the sum is made of is also what a pick compares with the
//! bound: each member's in-flight count as last added into the sum, beside
//! its weight, packed by index in the table. So a pick that checks a
//! backend touches 8 bytes of the table (80 KB for 10,000 backends, which
//! stay in cache), not the backend's own state: at 10,000 backends that
//! state is rarely in cache, and reading it cost a miss per backend
//! checked (`cargo bench --bench pick -- pick_bounded_load`). The mirror is
//! the count itself at rest, and a notification re-reads the count after
//! writing it, so that of racing notifications the last one leaves the two
//! equal (as the eligibility bits are kept).

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering::AcqRel, Ordering::Relaxed};

use crate::backend::{Backend, BackendState, LoadWatch, Watching};
use crate::error::ConfigError;

/// Fixed-point scale of the factor: thousandths.
const SCALE: u64 = 1000;

/// Counters the set's total in flight is split over (see the module docs).
const SHARDS: usize = 8;

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
    /// Requests in flight to the set's members: shard `i % SHARDS` sums
    /// the loads of members `i`.
    total: [Shard; SHARDS],
    /// Weight of the members eligible by their flags.
    weight: AtomicU64,
    /// Per member, what a pick compares with the bound, packed by index
    /// so that checking a backend reads the table, not the backend (see
    /// the module docs).
    members: Box<[Member]>,
    /// Per member, the weight last added into `weight` (0 when ineligible).
    seen_weight: Box<[AtomicU32]>,
}

/// One member as the bound sees it: 8 bytes, eight to a cache line.
struct Member {
    /// The in-flight count last added into `total`: the backend's count
    /// at rest (see the module docs).
    load: AtomicU32,
    /// Its weight when the table was built (a reweight publishes a new
    /// snapshot, and so a new table).
    weight: u32,
}

impl BoundedLoad {
    pub(super) fn build(backends: &[Backend], factor: BalanceFactor) -> Self {
        let sums = Arc::new(Sums {
            total: Default::default(),
            weight: AtomicU64::new(0),
            members: backends
                .iter()
                .map(|backend| Member {
                    load: AtomicU32::new(0),
                    weight: backend.weight(),
                })
                .collect(),
            seen_weight: backends.iter().map(|_| AtomicU32::new(0)).collect(),
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
    pub(super) fn bound(&self) -> Bound<'_> {
        Bound {
            // The sums are changed by signed differences in two's
            // complement; a transiently negative sum reads as zero.
            total: (self.sums.total() as i64).max(0) as u64,
            weight: (self.sums.weight.load(Relaxed) as i64).max(0) as u64,
            factor: self.factor.0,
            members: &self.sums.members,
        }
    }
}

/// The bound read for one pick, and the members' counts to check it on.
#[derive(Clone, Copy)]
pub(super) struct Bound<'a> {
    total: u64,
    weight: u64,
    factor: u64,
    members: &'a [Member],
}

impl Bound<'_> {
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

    /// Whether member `index` is at its bound. (An index outside the
    /// table, which no lookup returns, is not full.)
    #[inline]
    pub(super) fn is_full(&self, index: usize) -> bool {
        self.members.get(index).is_some_and(|member| {
            u64::from(member.load.load(Relaxed)) >= self.capacity(member.weight)
        })
    }
}

impl fmt::Debug for Bound<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Bound")
            .field("total", &self.total)
            .field("weight", &self.weight)
            .field("factor", &self.factor)
            .finish_non_exhaustive()
    }
}

impl LoadWatch for Sums {
    fn load_changed(&self, leaf: usize, state: &BackendState) {
        let (Some(member), Some(seen_weight)) =
            (self.members.get(leaf), self.seen_weight.get(leaf))
        else {
            return;
        };
        // Swap, then add the difference: the shard is always the sum of
        // its members' loads, whatever the interleaving. Then read the count
        // again: a racing notification whose older count landed after a
        // newer one sees the change and writes again, so the last one
        // leaves the mirror equal to the count (acquire-release, so that
        // the count read after the swap is at least the one the swap's
        // previous writer saw).
        loop {
            let load = state.in_flight();
            let before = member.load.swap(load, AcqRel);
            if load != before {
                add(
                    &self.total[leaf % SHARDS].0,
                    i64::from(load) - i64::from(before),
                );
            }
            if state.in_flight() == load {
                break;
            }
        }
        // The eligible weight changes rarely: a load first, so that the
        // notification of every request start and end writes nothing here
        // (these lines are shared by eight members and by every thread).
        loop {
            let weight = if state.eligible_by_flags() {
                member.weight
            } else {
                0
            };
            if seen_weight.load(Relaxed) != weight {
                let before = seen_weight.swap(weight, AcqRel);
                if weight != before {
                    add(&self.weight, i64::from(weight) - i64::from(before));
                }
            }
            if state.eligible_by_flags() == (weight != 0) {
                break;
            }
        }
    }
}

impl Sums {
    /// The total in flight, in two's complement: the shards' sum.
    #[inline]
    fn total(&self) -> u64 {
        self.total
            .iter()
            .fold(0u64, |sum, shard| sum.wrapping_add(shard.0.load(Relaxed)))
    }
}

/// One shard of the total, on a cache line of its own.
#[derive(Default)]
#[repr(align(64))]
struct Shard(AtomicU64);

/// Adds a signed difference to a sum kept in two's complement.
#[inline]
fn add(sum: &AtomicU64, delta: i64) {
    sum.fetch_add(delta as u64, Relaxed);
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

    /// Two threads start and end requests on the same two backends at
    /// once; whenever they stop, the counts a pick reads are the backends'
    /// own, and the total is their sum.
    #[test]
    fn the_mirrored_counts_match_the_backends_after_racing_changes() {
        let set = backends(&[1, 1]);
        let bounded = BoundedLoad::build(&set, BalanceFactor::new(1.25).unwrap());
        let start = std::sync::Barrier::new(2);
        for round in 0..20 {
            let held: Vec<Vec<InFlight>> = std::thread::scope(|scope| {
                let workers: Vec<_> = (0..2)
                    .map(|t| {
                        let (set, start) = (&set, &start);
                        scope.spawn(move || {
                            let mut held = Vec::new();
                            start.wait();
                            for k in 0..20_000usize {
                                if (k + t) % 3 == 2 {
                                    held.pop();
                                } else {
                                    held.push(InFlight::begin(set[(k + t) % 2].clone()));
                                }
                            }
                            held
                        })
                    })
                    .collect();
                workers.into_iter().map(|w| w.join().unwrap()).collect()
            });
            let counts: Vec<u32> = set.iter().map(|b| b.state().in_flight()).collect();
            let mirrored: Vec<u32> = bounded
                .sums
                .members
                .iter()
                .map(|m| m.load.load(Relaxed))
                .collect();
            assert_eq!(mirrored, counts, "round {round}");
            let sum: u32 = counts.iter().sum();
            assert_eq!(bounded.bound().total, u64::from(sum), "round {round}");
            drop(held);
        }
        assert_eq!(bounded.bound().total, 0);
    }
}
