//! Round-robin: each backend in turn.

use super::counter::Counter;
use super::{Candidates, Strategy};
use crate::backend::Backend;

/// Sends each request to the next backend in turn, ignoring weights.
///
/// The right choice when backends are alike and requests cost about the
/// same. A backend that is unavailable is passed over, and the position moves
/// past the one that took its turn, so the backend after a down one does not
/// get a double share.
///
/// The position is one counter for the whole process, so the sequence is
/// exact across threads; [`per_thread`](Self::per_thread) trades that for
/// picks that never contend between cores (nginx's and Envoy's per-worker
/// behaviour).
///
/// ```
/// use tower_lb::balance::RoundRobin;
/// use tower_lb::{BackendSet, LoadBalanceLayer};
///
/// let set = BackendSet::new(["http://127.0.0.1:9001".parse()?, "http://127.0.0.1:9002".parse()?]);
/// let layer = LoadBalanceLayer::new(set, RoundRobin::new());
/// # Ok::<(), tower_lb::ConfigError>(())
/// ```
#[derive(Clone, Copy, Debug, Default)]
pub struct RoundRobin {
    per_thread: bool,
}

impl RoundRobin {
    /// Round-robin, one sequence for all threads.
    pub fn new() -> Self {
        Self::default()
    }

    /// Round-robin with a position per thread: each thread walks the
    /// sequence on its own, so picks on different cores never share a cache
    /// line. Even over time, but requests sent one after another may land
    /// out of turn when they are served by different threads.
    pub fn per_thread() -> Self {
        Self { per_thread: true }
    }
}

/// Round-robin's table: the position of each thread.
#[derive(Debug, Default)]
pub struct RoundRobinTable {
    position: Counter,
}

impl Strategy for RoundRobin {
    type Table = RoundRobinTable;

    fn build(&self, _backends: &[Backend]) -> RoundRobinTable {
        RoundRobinTable {
            position: if self.per_thread {
                Counter::per_thread()
            } else {
                Counter::shared()
            },
        }
    }

    fn pick(&self, table: &RoundRobinTable, candidates: &Candidates<'_>) -> Option<usize> {
        let n = candidates.len();
        if n == 0 {
            return None;
        }
        let start = table.position.advance(1) % n;
        if candidates.admits(start) {
            return Some(start);
        }
        let found = candidates.scan_from(start + 1)?;
        table.position.skip((found + n - start) % n);
        Some(found)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::balance::test_support::Fixture;

    #[test]
    fn every_backend_in_turn() {
        let fixture = Fixture::new(RoundRobin::new(), &[1, 1, 1, 1]);
        let picks: Vec<usize> = (0..8).map(|_| fixture.pick().unwrap()).collect();
        assert_eq!(picks, [0, 1, 2, 3, 0, 1, 2, 3]);
    }

    #[test]
    fn evenly_over_many_picks_and_weights_ignored() {
        let fixture = Fixture::new(RoundRobin::new(), &[1, 5, 1]);
        assert_eq!(fixture.tally(3000), [1000, 1000, 1000]);
    }

    #[test]
    fn a_down_backend_does_not_double_its_successor() {
        let fixture = Fixture::new(RoundRobin::new(), &[1, 1, 1, 1]);
        fixture.eject(1);
        assert_eq!(fixture.tally(3000), [1000, 0, 1000, 1000]);
    }

    #[test]
    fn tried_backends_are_skipped() {
        let fixture = Fixture::new(RoundRobin::new(), &[1, 1, 1]);
        for _ in 0..10 {
            assert_eq!(fixture.pick_excluding(&[0, 2]), Some(1));
        }
        assert_eq!(fixture.pick_excluding(&[0, 1, 2]), None);
    }
}

#[cfg(test)]
mod per_thread_tests {
    use super::*;
    use crate::balance::test_support::Fixture;

    #[test]
    fn per_thread_positions_still_walk_the_sequence() {
        let fixture = Fixture::new(RoundRobin::per_thread(), &[1, 1, 1]);
        let picks: Vec<usize> = (0..6).map(|_| fixture.pick().unwrap()).collect();
        let first = picks[0];
        let expected: Vec<usize> = (0..6).map(|k| (first + k) % 3).collect();
        assert_eq!(picks, expected, "each thread walks the sequence in turn");
    }
}
