//! Least-connections: the fewest requests in flight per unit of weight.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

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
/// nginx scans every backend per pick (O(n)). Here a tournament tree over the
/// backends' loads is updated by each backend's in-flight counter as it
/// changes, with compare-and-swap and no lock, and a pick walks it from the
/// root (O(log n)). Under concurrent updates a pick may see a load a few
/// nanoseconds old; at rest it is exact. A backend in slow start or
/// ramp-down counts with its reduced weight. When the least-loaded backend
/// was already tried by this request, the walk backtracks to the next-best
/// subtree.
///
/// ```
/// use tower_lb::balance::LeastConnections;
/// use tower_lb::{BackendSet, LoadBalanceLayer};
///
/// let set = BackendSet::new(["http://127.0.0.1:9001".parse()?, "http://127.0.0.1:9002".parse()?]);
/// let layer = LoadBalanceLayer::new(set, LeastConnections::new());
/// # Ok::<(), tower_lb::Error>(())
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
    tree: Arc<LoadTree>,
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
        let tree = Arc::new(LoadTree::new(backends));
        let watch: Arc<dyn LoadWatch> = tree.clone();
        // Watch first, then read every load: a change racing with the build
        // is either seen by the read or propagated by its own notification.
        for (leaf, backend) in backends.iter().enumerate() {
            backend.state().watch(Arc::clone(&watch), leaf);
        }
        for (leaf, backend) in backends.iter().enumerate() {
            tree.set_leaf(leaf, backend.state());
        }
        tree.rebuild_inner_nodes();
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
        table
            .tree
            .descend(1, candidates)
            // Leaves marked ineligible whose ejection ran out before the
            // tree heard of it: fall back to a scan.
            .or_else(|| candidates.scan_from(fastrand::usize(..candidates.len())))
    }
}

/// Bits of a node value that count the leaves sharing the minimum.
const COUNT_BITS: u32 = 20;
const COUNT_MASK: u64 = (1 << COUNT_BITS) - 1;
/// The load of an ineligible leaf: above every real load.
const KEY_MAX: u64 = (1 << (64 - COUNT_BITS)) - 1;
const INELIGIBLE: u64 = KEY_MAX << COUNT_BITS;
/// In-flight counts are clamped here so keys fit their bits.
const MAX_COUNTED: u64 = (1 << COUNT_BITS) - 1;

/// A complete binary tree whose node `i` holds the minimum load of its
/// subtree and how many leaves have it, packed in one atomic:
/// `load << 20 | count`. Node 1 is the root; node `i` has children `2i` and
/// `2i + 1`; leaf `j` is node `width + j`.
struct LoadTree {
    width: usize,
    nodes: Box<[AtomicU64]>,
    weights: Box<[u64]>,
}

impl LoadTree {
    fn new(backends: &[Backend]) -> Self {
        let width = backends.len().next_power_of_two().max(1);
        Self {
            width,
            nodes: (0..2 * width).map(|_| AtomicU64::new(INELIGIBLE)).collect(),
            weights: backends.iter().map(|b| u64::from(b.weight())).collect(),
        }
    }

    /// The packed value of a leaf: its load key and a count of 1.
    fn leaf_value(&self, leaf: usize, state: &BackendState) -> u64 {
        if !state.is_flag_eligible() {
            return INELIGIBLE;
        }
        // (in_flight + 1) / (weight × share), as a fixed-point number whose
        // resolution separates consecutive in-flight counts at any weight.
        let effective = ((self.weights[leaf] * u64::from(state.share_now())) >> 10).max(1);
        let in_flight = u64::from(state.in_flight()).min(MAX_COUNTED - 1) + 1;
        let key = ((in_flight << 24) / effective).min(KEY_MAX - 1);
        (key << COUNT_BITS) | 1
    }

    fn set_leaf(&self, leaf: usize, state: &BackendState) {
        self.nodes[self.width + leaf].store(self.leaf_value(leaf, state), Relaxed);
    }

    fn rebuild_inner_nodes(&self) {
        for node in (1..self.width).rev() {
            self.nodes[node].store(self.combined(node), Relaxed);
        }
    }

    /// The value node `node` should hold, from its children.
    fn combined(&self, node: usize) -> u64 {
        combine(
            self.nodes[2 * node].load(Relaxed),
            self.nodes[2 * node + 1].load(Relaxed),
        )
    }

    /// Recomputes the ancestors of `leaf`, stopping where nothing changes.
    ///
    /// Each node is replaced by compare-and-swap against the value its
    /// children gave when read, retried on conflict: whichever update runs
    /// last reads both children after both were written, so no change is
    /// lost to a race.
    fn propagate(&self, leaf: usize) {
        let mut node = (self.width + leaf) / 2;
        while node >= 1 {
            let mut current = self.nodes[node].load(Relaxed);
            loop {
                let wanted = self.combined(node);
                if wanted == current {
                    return;
                }
                match self.nodes[node].compare_exchange_weak(current, wanted, Relaxed, Relaxed) {
                    Ok(_) => break,
                    Err(actual) => current = actual,
                }
            }
            node /= 2;
        }
    }

    /// The best available leaf under `node`: into the lower load first,
    /// between equal loads at random weighted by how many leaves tie, and
    /// into the other child when the first holds nothing available.
    fn descend(&self, node: usize, candidates: &Candidates<'_>) -> Option<usize> {
        if node >= self.width {
            let leaf = node - self.width;
            return (leaf < candidates.len() && candidates.is_available(leaf)).then_some(leaf);
        }
        let left = self.nodes[2 * node].load(Relaxed);
        let right = self.nodes[2 * node + 1].load(Relaxed);
        let (first, second) = match (left >> COUNT_BITS).cmp(&(right >> COUNT_BITS)) {
            std::cmp::Ordering::Less => (2 * node, 2 * node + 1),
            std::cmp::Ordering::Greater => (2 * node + 1, 2 * node),
            std::cmp::Ordering::Equal => {
                let (l, r) = (left & COUNT_MASK, right & COUNT_MASK);
                if fastrand::u64(..(l + r).max(1)) < l {
                    (2 * node, 2 * node + 1)
                } else {
                    (2 * node + 1, 2 * node)
                }
            }
        };
        for child in [first, second] {
            if self.nodes[child].load(Relaxed) >> COUNT_BITS == KEY_MAX {
                continue;
            }
            if let Some(leaf) = self.descend(child, candidates) {
                return Some(leaf);
            }
        }
        None
    }
}

impl LoadWatch for LoadTree {
    fn load_changed(&self, leaf: usize, state: &BackendState) {
        if leaf < self.weights.len() {
            self.set_leaf(leaf, state);
            self.propagate(leaf);
        }
    }
}

/// The lower of two packed values; on equal loads, the counts add up.
fn combine(a: u64, b: u64) -> u64 {
    let (ka, kb) = (a >> COUNT_BITS, b >> COUNT_BITS);
    match ka.cmp(&kb) {
        std::cmp::Ordering::Less => a,
        std::cmp::Ordering::Greater => b,
        std::cmp::Ordering::Equal if ka == KEY_MAX => INELIGIBLE,
        std::cmp::Ordering::Equal => {
            (ka << COUNT_BITS) | ((a & COUNT_MASK) + (b & COUNT_MASK)).min(COUNT_MASK)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::InFlight;
    use crate::balance::test_support::Fixture;

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

    #[test]
    fn a_rebuilt_table_stops_watching() {
        let fixture = Fixture::new(LeastConnections, &[1, 1]);
        let backend = fixture.backends[0].clone();
        assert_eq!(backend.state().watcher_count(), 1);
        drop(fixture);
        assert_eq!(backend.state().watcher_count(), 0);
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
