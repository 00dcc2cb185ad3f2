//! The ramping leaves of least-connections' tree: backends in slow start or
//! ramp-down, whose keys move with time, which no load change announces.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::time::Duration;

use crossbeam_queue::SegQueue;

use super::Candidates;
use super::load_tree::LoadTree;
use crate::backend::Backend;
use crate::clock;

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
pub(super) struct Ramps {
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
    pub(super) fn new(leaves: usize) -> Self {
        Self {
            listed: (0..leaves).map(|_| AtomicBool::new(false)).collect(),
            count: AtomicUsize::new(0),
            started: SegQueue::new(),
            leaves: Mutex::new(Vec::new()),
            next: AtomicU64::new(0),
        }
    }

    pub(super) fn list(&self, leaf: usize) {
        if !self.listed[leaf].swap(true, Relaxed) {
            self.count.fetch_add(1, Relaxed);
            self.started.push(leaf);
        }
    }

    /// Whether this pick should refresh: something ramps, the time has come,
    /// and no other pick claimed this refresh.
    #[inline]
    pub(super) fn due(&self, candidates: &Candidates<'_>) -> bool {
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

    /// Recomputes the leaves of ramping backends, whose shares moved since
    /// their loads last did, and stops listing those whose ramp is over.
    pub(super) fn refresh(&self, tree: &LoadTree, backends: &[Backend]) {
        // Another pick is refreshing: this one need not wait.
        let Ok(mut leaves) = self.leaves.try_lock() else {
            return;
        };
        while let Some(leaf) = self.started.pop() {
            leaves.push(leaf);
        }
        leaves.retain(|&leaf| {
            let state = backends[leaf].state();
            tree.store_leaf(leaf, state);
            tree.propagate(leaf);
            if state.is_ramping() {
                return true;
            }
            self.listed[leaf].store(false, Relaxed);
            // A ramp that began since the test above finds the leaf still
            // listed (and keeps it), or lists it again itself.
            if state.is_ramping() && !self.listed[leaf].swap(true, Relaxed) {
                return true;
            }
            self.count.fetch_sub(1, Relaxed);
            false
        });
    }
}
