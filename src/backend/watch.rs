//! Load watchers: structures that hear of every change of a backend's load
//! or eligibility (least-connections keeps its tree of loads this way), and
//! those that also hear of its latency samples (power of two choices keeps
//! a packed copy of what its cost reads).
//!
//! The request path pays one relaxed load of the count when nothing
//! watches; the list itself is swapped copy-on-write (arc-swap), so
//! notifying never locks. Watchers join and leave when tables are rebuilt,
//! off the request path. The count is two counts in one word (all
//! watchers below, those that hear latency above), so that a latency
//! sample costs one load when no watcher hears it, and the backend's
//! state keeps its layout.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use arc_swap::ArcSwap;

use super::BackendState;

/// Something that must hear about every change of a backend's load or
/// eligibility.
pub(crate) trait LoadWatch: Send + Sync + 'static {
    /// `state` (leaf `leaf` of the watcher) changed its in-flight count or
    /// its eligibility.
    fn load_changed(&self, leaf: usize, state: &BackendState);

    /// Whether this watcher hears latency samples too (asked once, when it
    /// starts watching): most do not, and a sample then costs one load.
    fn hears_latency(&self) -> bool {
        false
    }

    /// `state` (leaf `leaf`) recorded a latency sample; only called on
    /// watchers whose [`hears_latency`](Self::hears_latency) is true.
    fn latency_changed(&self, _leaf: usize, _state: &BackendState) {}
}

/// One watcher in the low half of the count.
const ONE: u64 = 1;
/// One watcher that hears latency, in the high half.
const ONE_HEARING_LATENCY: u64 = 1 << 32;

#[derive(Clone)]
struct Watcher {
    watch: Arc<dyn LoadWatch>,
    leaf: usize,
    hears_latency: bool,
}

impl Watcher {
    /// What this watcher adds to the count.
    fn weight(&self) -> u64 {
        ONE + if self.hears_latency {
            ONE_HEARING_LATENCY
        } else {
            0
        }
    }
}

/// The watchers of one backend.
pub(crate) struct LoadWatchers {
    /// Watchers in the low 32 bits, those hearing latency in the high 32.
    count: AtomicU64,
    list: ArcSwap<Vec<Watcher>>,
}

impl Default for LoadWatchers {
    fn default() -> Self {
        Self {
            count: AtomicU64::new(0),
            list: ArcSwap::from_pointee(Vec::new()),
        }
    }
}

impl LoadWatchers {
    /// Tells every watcher that `state` changed.
    #[inline]
    pub(crate) fn notify(&self, state: &BackendState) {
        if self.count.load(Relaxed) == 0 {
            return;
        }
        for watcher in self.list.load().iter() {
            watcher.watch.load_changed(watcher.leaf, state);
        }
    }

    /// Tells every watcher that hears latency that `state` took a sample.
    #[inline]
    pub(crate) fn notify_latency(&self, state: &BackendState) {
        if self.count.load(Relaxed) < ONE_HEARING_LATENCY {
            return;
        }
        for watcher in self.list.load().iter() {
            if watcher.hears_latency {
                watcher.watch.latency_changed(watcher.leaf, state);
            }
        }
    }

    /// Whether any watcher listens.
    #[cfg(test)]
    pub(crate) fn any(&self) -> bool {
        self.count.load(Relaxed) != 0
    }

    pub(crate) fn add(&self, watch: Arc<dyn LoadWatch>, leaf: usize) {
        let watcher = Watcher {
            hears_latency: watch.hears_latency(),
            watch,
            leaf,
        };
        self.list.rcu(|list| {
            let mut list = Vec::clone(list);
            list.push(watcher.clone());
            list
        });
        self.count.fetch_add(watcher.weight(), Relaxed);
    }

    pub(crate) fn remove(&self, watch: &Arc<dyn LoadWatch>) {
        let target = Arc::as_ptr(watch).cast::<()>();
        let mut removed = 0;
        self.list.rcu(|list| {
            let (gone, kept): (Vec<Watcher>, Vec<Watcher>) = list
                .iter()
                .cloned()
                .partition(|w| Arc::as_ptr(&w.watch).cast::<()>() == target);
            removed = gone.iter().map(Watcher::weight).sum();
            kept
        });
        self.count.fetch_sub(removed, Relaxed);
    }
}

/// A watcher registered on every member of one snapshot (leaf `i` for
/// member `i`), told of each member's state as it is now; it unwatches them
/// all when dropped, with the table or queue that owns it.
pub(crate) struct Watching {
    watch: Arc<dyn LoadWatch>,
    backends: Vec<super::Backend>,
}

impl Watching {
    pub(crate) fn new(backends: &[super::Backend], watch: Arc<dyn LoadWatch>) -> Self {
        // Watch first, then read: a change racing with this is seen by the
        // read or brings its own notification, so the watcher ends up
        // matching the states.
        for (leaf, backend) in backends.iter().enumerate() {
            backend.state().watch(Arc::clone(&watch), leaf);
        }
        let hears_latency = watch.hears_latency();
        for (leaf, backend) in backends.iter().enumerate() {
            watch.load_changed(leaf, backend.state());
            if hears_latency {
                watch.latency_changed(leaf, backend.state());
            }
        }
        Self {
            watch,
            backends: backends.to_vec(),
        }
    }
}

impl Drop for Watching {
    fn drop(&mut self) {
        for backend in &self.backends {
            backend.state().unwatch(&self.watch);
        }
    }
}
