//! Least-connections: the fewest requests in flight per unit of weight.

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crossbeam_queue::SegQueue;

use super::{Candidates, Strategy};
use crate::backend::{Backend, BackendState, LoadWatch};
use crate::clock;

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
        if table.tree.ramps.due(candidates) {
            table.refresh_ramps();
        }
        table
            .tree
            // One thread-local draw seeds the walk's own generator, so the
            // levels below read no thread-local.
            .walk(candidates, &mut fastrand::Rng::with_seed(fastrand::u64(..)))
            // Leaves marked ineligible whose ejection ran out before the
            // tree heard of it: fall back to a scan.
            .or_else(|| candidates.scan_from(fastrand::usize(..candidates.len())))
    }
}

impl LeastConnectionsTable {
    /// Recomputes the leaves of ramping backends, whose shares moved since
    /// their loads last did, and stops listing those whose ramp is over.
    fn refresh_ramps(&self) {
        let ramps = &self.tree.ramps;
        // Another pick is refreshing: this one need not wait.
        let Ok(mut leaves) = ramps.leaves.try_lock() else {
            return;
        };
        while let Some(leaf) = ramps.started.pop() {
            leaves.push(leaf);
        }
        leaves.retain(|&leaf| {
            let state = self.backends[leaf].state();
            self.tree.store_leaf(leaf, state);
            self.tree.propagate(leaf);
            if state.is_ramping() {
                return true;
            }
            ramps.listed[leaf].store(false, Relaxed);
            // A ramp that began since the test above finds the leaf still
            // listed (and keeps it), or lists it again itself.
            if state.is_ramping() && !ramps.listed[leaf].swap(true, Relaxed) {
                return true;
            }
            ramps.count.fetch_sub(1, Relaxed);
            false
        });
    }
}

/// How often picks refresh the leaves of ramping backends: often enough
/// for ramps that last seconds, rare enough to cost nothing per pick.
const REFRESH: Duration = Duration::from_millis(10);

/// The backends in slow start or ramp-down. Their share of traffic moves
/// with time (and ramp-down with outcomes), which no load change announces:
/// at rest, a backend whose slow start began at 10 % would keep that key
/// and never win a pick. So a pick every [`REFRESH`] recomputes their
/// leaves. A ramp that starts queues its leaf without a lock; the list
/// itself belongs to the refreshing pick, whose mutex others never wait for
/// (`try_lock`). The common path reads one counter.
struct Ramps {
    listed: Box<[AtomicBool]>,
    count: AtomicUsize,
    /// Leaves whose ramp started since the last refresh.
    started: SegQueue<usize>,
    /// The leaves being refreshed; held only by the refreshing pick.
    leaves: Mutex<Vec<usize>>,
    /// When the next refresh is due (clock nanos).
    next: AtomicU64,
}

impl Ramps {
    fn new(leaves: usize) -> Self {
        Self {
            listed: (0..leaves).map(|_| AtomicBool::new(false)).collect(),
            count: AtomicUsize::new(0),
            started: SegQueue::new(),
            leaves: Mutex::new(Vec::new()),
            next: AtomicU64::new(0),
        }
    }

    fn list(&self, leaf: usize) {
        if !self.listed[leaf].swap(true, Relaxed) {
            self.count.fetch_add(1, Relaxed);
            self.started.push(leaf);
        }
    }

    /// Whether this pick should refresh: something ramps, the time has come,
    /// and no other pick claimed this refresh.
    #[inline]
    fn due(&self, candidates: &Candidates<'_>) -> bool {
        if self.count.load(Relaxed) == 0 {
            return false;
        }
        let now = candidates.now();
        let next = self.next.load(Relaxed);
        now >= next
            && self
                .next
                .compare_exchange(next, now + clock::nanos(REFRESH), Relaxed, Relaxed)
                .is_ok()
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

/// Children per node: eight packed values fill one cache line, so each
/// level of a walk costs one line, and 10,000 backends are five levels deep.
const FANOUT: usize = 8;

/// A complete 8-ary tree whose nodes hold the minimum load of their subtree
/// and how many leaves have it, packed in one atomic: `load << 20 | count`.
///
/// Levels are stored one after another without a root: level 1 is nodes
/// `0..8`, and the children of node `i` are `8(i + 1)..8(i + 1) + 8`, a
/// cache-line-aligned group. Leaf `j` is node `first_leaf + j`.
struct LoadTree {
    first_leaf: usize,
    nodes: Box<[Group]>,
    weights: Box<[u64]>,
    ramps: Ramps,
}

/// Eight sibling nodes on one cache line.
#[repr(align(64))]
struct Group([AtomicU64; FANOUT]);

impl LoadTree {
    fn new(backends: &[Backend]) -> Self {
        // Levels until there is a leaf per backend.
        let mut width = FANOUT;
        let mut first_leaf = 0;
        while width < backends.len() {
            first_leaf = FANOUT * (first_leaf + 1);
            width *= FANOUT;
        }
        let groups = (first_leaf + width) / FANOUT;
        Self {
            first_leaf,
            nodes: (0..groups)
                .map(|_| Group(std::array::from_fn(|_| AtomicU64::new(INELIGIBLE))))
                .collect(),
            weights: backends.iter().map(|b| u64::from(b.weight())).collect(),
            ramps: Ramps::new(backends.len()),
        }
    }

    #[inline]
    fn node(&self, index: usize) -> &AtomicU64 {
        &self.nodes[index / FANOUT].0[index % FANOUT]
    }

    /// The group holding the children of `index`.
    #[inline]
    fn children(&self, index: usize) -> &[AtomicU64; FANOUT] {
        &self.nodes[index + 1].0
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

    /// Stores the leaf's value, and lists it while its backend ramps.
    fn set_leaf(&self, leaf: usize, state: &BackendState) {
        self.store_leaf(leaf, state);
        if state.is_ramping() {
            self.ramps.list(leaf);
        }
    }

    fn store_leaf(&self, leaf: usize, state: &BackendState) {
        self.node(self.first_leaf + leaf)
            .store(self.leaf_value(leaf, state), Relaxed);
    }

    fn rebuild_inner_nodes(&self) {
        for index in (0..self.first_leaf).rev() {
            self.node(index).store(self.combined(index), Relaxed);
        }
    }

    /// The value node `index` should hold, from its children.
    fn combined(&self, index: usize) -> u64 {
        self.children(index)
            .iter()
            .map(|child| child.load(Relaxed))
            .fold(INELIGIBLE, combine)
    }

    /// Recomputes the ancestors of `leaf`, stopping where nothing changes.
    ///
    /// Each node is replaced by compare-and-swap against the value its
    /// children gave when read, retried on conflict: whichever update runs
    /// last reads all children after all were written, so no change is lost
    /// to a race.
    fn propagate(&self, leaf: usize) {
        let mut index = self.first_leaf + leaf;
        while index >= FANOUT {
            let parent = index / FANOUT - 1;
            let node = self.node(parent);
            let mut current = node.load(Relaxed);
            loop {
                let wanted = self.combined(parent);
                if wanted == current {
                    return;
                }
                match node.compare_exchange_weak(current, wanted, Relaxed, Relaxed) {
                    Ok(_) => break,
                    Err(actual) => current = actual,
                }
            }
            index = parent;
        }
    }

    /// The best available leaf: straight down the lowest loads when the leaf
    /// found there is available (a loop, nothing kept per level), else the
    /// backtracking [`descend`](Self::descend) from the top.
    #[inline]
    fn walk(&self, candidates: &Candidates<'_>, rng: &mut fastrand::Rng) -> Option<usize> {
        let mut first = 0;
        loop {
            let index = first + choose_in(&self.nodes.get(first / FANOUT)?.0, rng)?;
            if index >= self.first_leaf {
                let leaf = index - self.first_leaf;
                if leaf < candidates.len() && candidates.is_available(leaf) {
                    return Some(leaf);
                }
                // Tried already, or ineligible since the tree last heard.
                return self.descend(0, candidates, rng);
            }
            first = FANOUT * (index + 1);
        }
    }

    /// The best available leaf in the group starting at `first`: into the
    /// lowest load first, among equal loads at random weighted by how many
    /// leaves tie, and on to the next best when a subtree holds nothing
    /// available.
    fn descend(
        &self,
        first: usize,
        candidates: &Candidates<'_>,
        rng: &mut fastrand::Rng,
    ) -> Option<usize> {
        let group = &self.nodes[first / FANOUT].0;
        let mut values: [u64; FANOUT] = std::array::from_fn(|i| group[i].load(Relaxed));
        loop {
            let slot = choose(&values, rng)?;
            let index = first + slot;
            let found = if index >= self.first_leaf {
                let leaf = index - self.first_leaf;
                (leaf < candidates.len() && candidates.is_available(leaf)).then_some(leaf)
            } else {
                self.descend(FANOUT * (index + 1), candidates, rng)
            };
            if found.is_some() {
                return found;
            }
            // Nothing available down there: try the next best sibling.
            values[slot] = INELIGIBLE;
        }
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

/// A slot among those holding the lowest load, drawn with a chance
/// proportional to how many leaves share it there; `None` when all eight
/// are ineligible.
///
/// Every level of a walk runs this, and the next level's load waits for
/// it, so it is kept short and free of branches on the data (the draw lands
/// on a random slot, which an early-exit search mispredicts about once per
/// level): the tied counts add up to running totals, the draw is scaled
/// into their sum by one multiplication (Lemire's, without the rejection
/// step: a bias below 2^-40 at any real count), and a three-step binary
/// search finds the first total above it. (Counts of loads below
/// `KEY_MAX` are at least 1 by construction: a leaf counts itself.)
#[inline(always)]
fn choose(values: &[u64; FANOUT], rng: &mut fastrand::Rng) -> Option<usize> {
    let best = values
        .iter()
        .fold(KEY_MAX, |best, value| best.min(value >> COUNT_BITS));
    if best == KEY_MAX {
        return None;
    }
    let mut totals = [0u64; FANOUT];
    let mut total = 0;
    for (running, value) in totals.iter_mut().zip(values) {
        let count = (value & COUNT_MASK).max(1);
        total += if value >> COUNT_BITS == best {
            count
        } else {
            0
        };
        *running = total;
    }
    let draw = ((u128::from(rng.u64(..)) * u128::from(total)) >> 64) as u64;
    let mut slot = 0;
    for half in [4, 2, 1] {
        slot += half * usize::from(totals[slot + half - 1] <= draw);
    }
    Some(slot)
}

/// [`choose`] on a group as it is now. Not inlined: inside the walk's loop
/// the compiler turns `choose`'s conditional moves into branches on the
/// data, which mispredict.
#[inline(never)]
fn choose_in(group: &[AtomicU64; FANOUT], rng: &mut fastrand::Rng) -> Option<usize> {
    choose(&std::array::from_fn(|i| group[i].load(Relaxed)), rng)
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
    use crate::backend::{FULL_SHARE, InFlight};
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
    fn a_backend_whose_ramp_ended_at_rest_gets_its_traffic() {
        // Nothing in flight, so no load change tells the tree that the
        // ramp moved on: the tree must look by itself.
        let fixture = Fixture::new(LeastConnections, &[1, 1]);
        let window = 100_000_000;
        let started = clock::now();
        fixture.backends[1]
            .state()
            .start_slow_start(started, window);
        let early = fixture.tally(100);
        // (Unless this thread was held up past half the ramp.)
        if clock::now() - started < window / 2 {
            assert_eq!(early, [100, 0], "early in the ramp it loses every tie");
        }
        std::thread::sleep(Duration::from_nanos(window) + REFRESH * 2);
        fixture.tally(1);
        std::thread::sleep(REFRESH * 2);
        let tally = fixture.tally(1000);
        assert!((400..=600).contains(&tally[1]), "{tally:?}");
    }

    #[test]
    fn a_deepening_ramp_down_is_seen_at_rest() {
        let fixture = Fixture::new(LeastConnections, &[1, 1]);
        let state = fixture.backends[1].state();
        state.set_ramp_down(FULL_SHARE / 2);
        let _held = InFlight::begin(fixture.backends[0].clone());
        // Backend 0 at (1 + 1) / 1 beats backend 1 at (0 + 1) / 0.5 only
        // on a tie; at a quarter share, backend 1 costs 4 and loses.
        state.set_ramp_down(FULL_SHARE / 4);
        std::thread::sleep(REFRESH * 2);
        fixture.tally(1);
        std::thread::sleep(REFRESH * 2);
        assert_eq!(fixture.tally(100), [100, 0]);
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
    fn choose_draws_among_the_lowest_by_their_counts() {
        let value = |key: u64, count: u64| (key << COUNT_BITS) | count;
        let mut values = [INELIGIBLE; FANOUT];
        values[..5].copy_from_slice(&[
            value(5, 1),
            value(3, 2),
            value(3, 1),
            value(9, 1),
            value(3, 5),
        ]);
        let mut tally = [0usize; FANOUT];
        let mut rng = fastrand::Rng::new();
        for _ in 0..8000 {
            tally[choose(&values, &mut rng).unwrap()] += 1;
        }
        assert_eq!(tally[0] + tally[3] + tally[5..].iter().sum::<usize>(), 0);
        // 2 : 1 : 5 of 8000, within about five standard deviations.
        for (slot, want) in [(1, 2000), (2, 1000), (4, 5000)] {
            assert!(tally[slot].abs_diff(want) < 250, "{tally:?}");
        }
        assert_eq!(choose(&[INELIGIBLE; FANOUT], &mut rng), None);
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
