//! Power of two choices' table: what a pick's cost reads, packed by member.
//!
//! A p2c pick draws two members at random and compares their costs, each
//! made of the member's in-flight count, its latency estimate with the
//! estimate's time stamp, and its weight. Read from the backends
//! themselves, each draw touches that backend's own state line, and in a
//! set of 10,000 backends those lines (one or more per backend, spread over
//! the heap) are rarely in cache: a miss per draw (cachegrind with a
//! 512 KB last level counted 2.27 misses a pick at 10,000 and none at 3).
//! So the table keeps a copy of those four values for every member in one
//! array indexed by member position, 24 bytes a member (240 KB for 10,000,
//! which stays in the second-level cache), and a pick reads that instead;
//! availability comes from the snapshot's packed eligibility bits as
//! before.
//!
//! The copy is kept as bounded load keeps its counts: the table watches
//! its members, and each request start and end and each latency sample
//! writes the member's entry from the backend's state, which stays the
//! one authoritative count (metrics, status views, least-connections and
//! concurrency limits read it). A notification re-reads the state after
//! writing, so that of racing notifications the last leaves the copy equal
//! to the state at rest; between notifications a pick may see a value a
//! few nanoseconds old, as a pick reading the state itself could. The cost
//! on the request path is the notification: a load of the watcher list
//! and one atomic write per start, end and sample, on a line shared by
//! two or three members (so two threads serving different backends rarely
//! write the same line).

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering::AcqRel, Ordering::Relaxed};

use crate::backend::{Backend, BackendState, LoadWatch, Watching};
use crate::clock::Nanos;

/// [`PowerOfTwoChoices`](super::PowerOfTwoChoices)' table: a packed copy of
/// each member's in-flight count, latency estimate and weight, kept
/// current by the backends as requests start and end, so that a pick in a
/// large set reads one small array rather than two backends' states.
pub struct PowerOfTwoChoicesTable {
    members: Arc<Members>,
    _watching: Watching,
}

/// The copies, by member position; what watches the backends.
struct Members(Box<[Member]>);

/// One member as a cost sees it: 24 bytes.
#[repr(C)]
struct Member {
    /// The in-flight count as last notified: the backend's at rest.
    in_flight: AtomicU32,
    /// Its weight when the table was built (a reweight publishes a new
    /// snapshot, and so a new table).
    weight: u32,
    /// The peak-EWMA estimate's bits, undecayed, as last notified.
    estimate_bits: AtomicU64,
    /// When that estimate was taken; 0 until a first sample.
    stamp: AtomicU64,
}

/// What [`Cost`](super::p2c) is computed from, for one member.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(super) struct CostInputs {
    pub(super) pending: u32,
    pub(super) weight: u32,
    /// The estimate undecayed and its stamp; `None` until a first sample.
    pub(super) sample: Option<(f64, Nanos)>,
}

impl PowerOfTwoChoicesTable {
    pub(super) fn build(backends: &[Backend]) -> Self {
        let members = Arc::new(Members(
            backends
                .iter()
                .map(|backend| Member {
                    in_flight: AtomicU32::new(0),
                    weight: backend.weight(),
                    estimate_bits: AtomicU64::new(0),
                    stamp: AtomicU64::new(0),
                })
                .collect(),
        ));
        // Watching reads every member's state once after it starts
        // watching, so the copies start equal to the states.
        let watching = Watching::new(backends, members.clone());
        Self {
            members,
            _watching: watching,
        }
    }

    /// The cost inputs of member `index`, from the packed copy; from the
    /// backend itself for an index outside the table (which a table built
    /// with its snapshot never sees: the fallback only keeps a mismatch
    /// from being a panic on the request path).
    #[inline]
    pub(super) fn inputs(&self, index: usize, backend: &Backend) -> CostInputs {
        match self.members.0.get(index) {
            Some(member) => {
                let stamp = member.stamp.load(Relaxed);
                CostInputs {
                    pending: member.in_flight.load(Relaxed),
                    weight: member.weight,
                    sample: (stamp != 0)
                        .then(|| (f64::from_bits(member.estimate_bits.load(Relaxed)), stamp)),
                }
            }
            None => CostInputs {
                pending: backend.state().in_flight(),
                weight: backend.weight(),
                sample: backend.state().ewma().sample(),
            },
        }
    }

    /// The number of members.
    pub fn len(&self) -> usize {
        self.members.0.len()
    }

    /// Whether the table has no members.
    pub fn is_empty(&self) -> bool {
        self.members.0.is_empty()
    }
}

impl LoadWatch for Members {
    fn load_changed(&self, leaf: usize, state: &BackendState) {
        let Some(member) = self.0.get(leaf) else {
            return;
        };
        // Write, then read the count again: a racing notification whose
        // older count landed after a newer one sees the change and writes
        // again, so the last one leaves the copy equal to the count
        // (acquire-release, so that the count read after the swap is at
        // least the one the swap's previous writer saw).
        loop {
            let load = state.in_flight();
            member.in_flight.swap(load, AcqRel);
            if state.in_flight() == load {
                break;
            }
        }
    }

    fn hears_latency(&self) -> bool {
        true
    }

    fn latency_changed(&self, leaf: usize, state: &BackendState) {
        let Some(member) = self.0.get(leaf) else {
            return;
        };
        // The same loop over two words: the estimate stored, then the
        // stamp swapped (acquire-release, the point racing writers order
        // on), then both checked. A writer whose stamp swap came before
        // ours stored its estimate before that swap, so we see it here if
        // it landed after ours, and write again: the last swapper leaves
        // the pair equal to the state's.
        loop {
            let (bits, stamp) = state.ewma().raw();
            member.estimate_bits.store(bits, Relaxed);
            member.stamp.swap(stamp, AcqRel);
            if state.ewma().raw() == (bits, stamp) && member.estimate_bits.load(Relaxed) == bits {
                break;
            }
        }
    }
}

impl fmt::Debug for PowerOfTwoChoicesTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PowerOfTwoChoicesTable")
            .field("members", &self.len())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::InFlight;
    use crate::balance::test_support::backends;
    use std::sync::Barrier;

    /// What the table holds for member `i`, next to what the backend holds.
    fn both(table: &PowerOfTwoChoicesTable, set: &[Backend], i: usize) -> (CostInputs, CostInputs) {
        let copy = table.inputs(i, &set[i]);
        let own = table.inputs(usize::MAX, &set[i]);
        (copy, own)
    }

    #[test]
    fn the_copy_starts_from_and_follows_the_backends() {
        let set = backends(&[1, 3]);
        set[1].state().observe_latency(5_000, 42);
        let _held = InFlight::begin(set[1].clone());
        let table = PowerOfTwoChoicesTable::build(&set);
        let (copy, own) = both(&table, &set, 1);
        assert_eq!(copy, own);
        assert_eq!(copy.pending, 1);
        assert_eq!(copy.weight, 3);
        assert_eq!(copy.sample, Some((5_000.0, 42)));
        assert_eq!(table.inputs(0, &set[0]).sample, None, "never timed");
        set[0].state().observe_latency(7_000, 50);
        let held = InFlight::begin(set[0].clone());
        assert_eq!(table.inputs(0, &set[0]).pending, 1);
        assert_eq!(table.inputs(0, &set[0]).sample, Some((7_000.0, 50)));
        drop(held);
        assert_eq!(table.inputs(0, &set[0]).pending, 0);
        assert_eq!(set[0].state().in_flight(), 0, "the backend keeps its own");
    }

    /// Two threads start and end requests and take latency samples on the
    /// same backends at once, in many short rounds that both end in the
    /// middle of a race; after each round what a pick reads is the
    /// backends' own state. (A copy written without reading the state
    /// again, or kept by adding deltas with a load and a store, leaves it
    /// behind.)
    #[test]
    fn the_copy_matches_the_backends_after_racing_changes() {
        const ROUNDS: u64 = 20_000;
        let set = backends(&[1, 1]);
        let table = PowerOfTwoChoicesTable::build(&set);
        let (start, end) = (Barrier::new(2), Barrier::new(2));
        let mismatches = std::thread::scope(|scope| {
            let workers: Vec<_> = (0..2u64)
                .map(|t| {
                    let (set, table, start, end) = (&set, &table, &start, &end);
                    scope.spawn(move || {
                        let mut held: Vec<InFlight> = Vec::new();
                        let mut mismatches = Vec::new();
                        for round in 0..ROUNDS {
                            start.wait();
                            for k in 0..4 {
                                let backend = &set[((round + k) % 2) as usize];
                                if (round + k + t) % 3 == 2 {
                                    drop(held.pop());
                                } else {
                                    held.push(InFlight::begin(backend.clone()));
                                }
                                let now = 1 + round * 8 + k * 2 + t;
                                backend
                                    .state()
                                    .observe_latency(1_000 + (now * 7919) % 5_000, now);
                            }
                            end.wait();
                            // Thread 0 checks while thread 1 waits for the
                            // next round.
                            if t == 0 {
                                for i in 0..2 {
                                    let (copy, own) = both(table, set, i);
                                    if copy != own {
                                        mismatches.push((round, i, copy, own));
                                    }
                                }
                            }
                        }
                        // Kept until both are done: dropping them here
                        // would race with the last check.
                        (mismatches, held)
                    })
                })
                .collect();
            let results: Vec<_> = workers.into_iter().map(|w| w.join().unwrap()).collect();
            results
                .into_iter()
                .flat_map(|(mismatches, _held)| mismatches)
                .collect::<Vec<_>>()
        });
        assert!(
            mismatches.is_empty(),
            "{} of {ROUNDS} rounds left the copy behind, first {:?}",
            mismatches.len(),
            mismatches.first()
        );
    }

    #[test]
    fn the_table_unwatches_its_backends_on_drop() {
        let set = backends(&[1, 1]);
        let table = PowerOfTwoChoicesTable::build(&set);
        let members = Arc::downgrade(&table.members);
        drop(table);
        assert!(
            members.upgrade().is_none(),
            "no backend still lists the dropped table's copies"
        );
        set[0].state().observe_latency(1_000, 1);
        let fresh = PowerOfTwoChoicesTable::build(&set);
        assert_eq!(fresh.inputs(0, &set[0]).sample, Some((1_000.0, 1)));
    }
}
