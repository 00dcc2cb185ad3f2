//! Least-connections: the fewest requests in flight per unit of weight.
//!
//! The strategy and its table; the table is the [tree of loads](super::load_tree)
//! watching its backends, and the [ramping leaves](super::ramps) a pick
//! refreshes now and then.

use std::fmt;
use std::sync::Arc;

use super::load_tree::LoadTree;
use super::ramps::Ramps;
use super::{Candidates, Strategy};
use crate::backend::{Backend, BackendState, LoadWatch};

/// Sends each request to the backend with the fewest requests in flight per
/// unit of weight, `(in_flight + 1) / weight` as HAProxy counts it; equal
/// loads are broken at random, uniformly over the tied backends, so ties
/// rotate instead of always hitting the first backend.
///
/// The right choice when requests vary a lot in cost (long polls, uploads,
/// reports): a backend busy with slow requests gets fewer new ones. A request
/// counts as in flight until its response body has ended or been dropped.
///
/// nginx scans every backend per pick (O(n)). Here an 8-ary tournament tree
/// over the backends' loads is updated by each backend's in-flight counter
/// as it changes, with compare-and-swap and no lock, and a pick walks it
/// from the top, one cache line per level (O(log n); five levels at 10,000
/// backends). Under concurrent updates a pick may see a load a few
/// nanoseconds old; at rest it is exact. A backend in slow start or
/// ramp-down counts with its reduced weight, recomputed at least every
/// 10 ms while it ramps (also when its load stands still). When the
/// least-loaded backend was already tried by this request, the walk
/// backtracks to the next-best subtree.
///
/// ```
/// use tower_lb::balance::LeastConnections;
/// use tower_lb::{BackendSet, LoadBalanceLayer};
///
/// let set = BackendSet::new(["http://127.0.0.1:9001".parse()?, "http://127.0.0.1:9002".parse()?]);
/// let layer = LoadBalanceLayer::new(set, LeastConnections::new());
/// # Ok::<(), tower_lb::ConfigError>(())
/// ```
#[derive(Clone, Copy, Debug, Default)]
pub struct LeastConnections;

impl LeastConnections {
    /// Least-connections.
    pub fn new() -> Self {
        Self
    }
}

/// Least-connections' table: the tree of loads, watching its backends.
pub struct LeastConnectionsTable {
    tree: Arc<Loads>,
    watch: Arc<dyn LoadWatch>,
    backends: Vec<Backend>,
}

impl fmt::Debug for LeastConnectionsTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LeastConnectionsTable")
            .field("backends", &self.backends.len())
            .finish_non_exhaustive()
    }
}

impl Drop for LeastConnectionsTable {
    fn drop(&mut self) {
        for backend in &self.backends {
            backend.state().unwatch(&self.watch);
        }
    }
}

impl Strategy for LeastConnections {
    type Table = LeastConnectionsTable;

    fn build(&self, backends: &[Backend]) -> LeastConnectionsTable {
        let tree = Arc::new(Loads {
            tree: LoadTree::new(backends),
            ramps: Ramps::new(backends.len()),
        });
        let watch: Arc<dyn LoadWatch> = tree.clone();
        // Watch first, then read every load: a change racing with the build
        // is either seen by the read or propagated by its own notification.
        for (leaf, backend) in backends.iter().enumerate() {
            backend.state().watch(Arc::clone(&watch), leaf);
        }
        for (leaf, backend) in backends.iter().enumerate() {
            tree.set_leaf(leaf, backend.state());
        }
        tree.tree.rebuild_inner_nodes();
        LeastConnectionsTable {
            tree,
            watch,
            backends: backends.to_vec(),
        }
    }

    fn pick(&self, table: &LeastConnectionsTable, candidates: &Candidates<'_>) -> Option<usize> {
        if candidates.is_empty() {
            return None;
        }
        if table.tree.ramps.due(candidates) {
            table.tree.ramps.refresh(&table.tree.tree, &table.backends);
        }
        table
            .tree
            .tree
            // One thread-local draw seeds the walk's own generator, so the
            // levels below read no thread-local.
            .walk(candidates, &mut fastrand::Rng::with_seed(fastrand::u64(..)))
            // Leaves marked ineligible whose ejection ran out before the
            // tree heard of it: fall back to a scan.
            .or_else(|| candidates.scan_from(fastrand::usize(..candidates.len())))
    }
}

/// The tree and the ramping leaves it refreshes: what watches the
/// backends' loads.
struct Loads {
    tree: LoadTree,
    ramps: Ramps,
}

impl Loads {
    /// Stores the leaf's value, and lists it while its backend ramps.
    fn set_leaf(&self, leaf: usize, state: &BackendState) {
        self.tree.store_leaf(leaf, state);
        if state.is_ramping() {
            self.ramps.list(leaf);
        }
    }
}

impl LoadWatch for Loads {
    fn load_changed(&self, leaf: usize, state: &BackendState) {
        if leaf < self.tree.len() {
            self.set_leaf(leaf, state);
            self.tree.propagate(leaf);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::backend::{FULL_SHARE, InFlight};
    use crate::balance::test_support::Fixture;
    use crate::clock;

    fn hold(fixture: &Fixture<LeastConnections>) -> (usize, InFlight) {
        let index = fixture.pick().unwrap();
        (index, InFlight::begin(fixture.backends[index].clone()))
    }

    #[test]
    fn held_requests_spread_to_the_least_loaded() {
        let fixture = Fixture::new(LeastConnections, &[1, 1, 1]);
        let mut held = Vec::new();
        for _ in 0..9 {
            held.push(hold(&fixture));
        }
        let loads: Vec<u32> = fixture
            .backends
            .iter()
            .map(|b| b.state().in_flight())
            .collect();
        assert_eq!(loads, [3, 3, 3]);
        // Finish two requests on backend 1: the next two go there.
        let on_one: Vec<usize> = held
            .iter()
            .enumerate()
            .filter(|(_, (i, _))| *i == 1)
            .map(|(k, _)| k)
            .take(2)
            .collect();
        for k in on_one.into_iter().rev() {
            held.remove(k);
        }
        assert_eq!(hold(&fixture).0, 1);
        let (index, _guard) = hold(&fixture);
        assert_eq!(index, 1);
    }

    #[test]
    fn weight_scales_the_load() {
        let fixture = Fixture::new(LeastConnections, &[3, 1]);
        let held: Vec<_> = (0..8).map(|_| hold(&fixture)).collect();
        let on_heavy = held.iter().filter(|(i, _)| *i == 0).count();
        assert_eq!(on_heavy, 6, "3:1 weights hold 6 and 2");
    }

    #[test]
    fn ties_rotate_instead_of_hitting_the_first() {
        let fixture = Fixture::new(LeastConnections, &[1, 1, 1]);
        let tally = fixture.tally(3000);
        for count in tally {
            assert!((850..=1150).contains(&count), "uneven ties: {count}");
        }
    }

    #[test]
    fn ineligible_and_tried_backends_are_skipped() {
        let fixture = Fixture::new(LeastConnections, &[1, 1, 1, 1, 1]);
        fixture.eject(2);
        for _ in 0..50 {
            assert_ne!(fixture.pick(), Some(2));
        }
        // Backend 0 is the least loaded but already tried.
        let _load: Vec<_> = [1, 3, 4]
            .iter()
            .map(|&i| InFlight::begin(fixture.backends[i].clone()))
            .collect();
        assert_eq!(fixture.pick(), Some(0));
        assert_eq!(
            fixture.pick_excluding(&[0]).map(|i| [1, 3, 4].contains(&i)),
            Some(true)
        );
        assert_eq!(fixture.pick_excluding(&[0, 1, 3, 4]), None);
    }

    /// Twice the ramp refresh period: long enough for one refresh to be due.
    const REFRESH_DUE: Duration = Duration::from_millis(20);

    #[tokio::test(start_paused = true)]
    async fn a_backend_whose_ramp_ended_at_rest_gets_its_traffic() {
        // Nothing in flight, so no load change tells the tree that the
        // ramp moved on: the tree must look by itself.
        let fixture = Fixture::new(LeastConnections, &[1, 1]);
        let window = Duration::from_millis(100);
        fixture.backends[1]
            .state()
            .start_slow_start(clock::now(), clock::nanos(window));
        assert_eq!(
            fixture.tally(100),
            [100, 0],
            "early in the ramp it loses every tie"
        );
        tokio::time::advance(window + REFRESH_DUE).await;
        fixture.tally(1);
        tokio::time::advance(REFRESH_DUE).await;
        let tally = fixture.tally(1000);
        assert!((400..=600).contains(&tally[1]), "{tally:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_deepening_ramp_down_is_seen_at_rest() {
        let fixture = Fixture::new(LeastConnections, &[1, 1]);
        let state = fixture.backends[1].state();
        state.set_ramp_down(FULL_SHARE / 2);
        let _held = InFlight::begin(fixture.backends[0].clone());
        // Backend 0 at (1 + 1) / 1 beats backend 1 at (0 + 1) / 0.5 only
        // on a tie; at a quarter share, backend 1 costs 4 and loses.
        state.set_ramp_down(FULL_SHARE / 4);
        tokio::time::advance(REFRESH_DUE).await;
        fixture.tally(1);
        tokio::time::advance(REFRESH_DUE).await;
        assert_eq!(fixture.tally(100), [100, 0]);
    }

    #[test]
    fn a_rebuilt_table_stops_watching() {
        let fixture = Fixture::new(LeastConnections, &[1, 1]);
        let backends = fixture.backends.clone();
        // The backends' watcher lists hold the tree: once the table is gone,
        // nothing may keep it alive.
        let tree = Arc::downgrade(&fixture.table.tree);
        drop(fixture);
        assert!(tree.upgrade().is_none(), "still watched by {backends:?}");
    }

    #[test]
    fn many_backends_stay_exact() {
        let weights = vec![1; 1000];
        let fixture = Fixture::new(LeastConnections, &weights);
        let held: Vec<_> = (0..2000).map(|_| hold(&fixture)).collect();
        assert!(fixture.backends.iter().all(|b| b.state().in_flight() == 2));
        drop(held);
        assert!(fixture.backends.iter().all(|b| b.state().in_flight() == 0));
    }
}
