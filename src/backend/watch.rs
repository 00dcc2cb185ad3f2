//! Load watchers: structures that hear of every change of a backend's load
//! or eligibility (least-connections keeps its tree of loads this way).
//!
//! The request path pays one relaxed load of the count when nothing
//! watches; the list itself is swapped copy-on-write (arc-swap), so
//! notifying never locks. Watchers join and leave when tables are rebuilt,
//! off the request path.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

use arc_swap::ArcSwap;

use super::BackendState;

/// Something that must hear about every change of a backend's load or
/// eligibility.
pub(crate) trait LoadWatch: Send + Sync + 'static {
    /// `state` (leaf `leaf` of the watcher) changed its in-flight count or
    /// its eligibility.
    fn load_changed(&self, leaf: usize, state: &BackendState);
}

#[derive(Clone)]
struct Watcher {
    watch: Arc<dyn LoadWatch>,
    leaf: usize,
}

/// The watchers of one backend.
pub(crate) struct LoadWatchers {
    count: AtomicUsize,
    list: ArcSwap<Vec<Watcher>>,
}

impl Default for LoadWatchers {
    fn default() -> Self {
        Self {
            count: AtomicUsize::new(0),
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

    pub(crate) fn add(&self, watch: Arc<dyn LoadWatch>, leaf: usize) {
        self.list.rcu(|list| {
            let mut list = Vec::clone(list);
            list.push(Watcher {
                watch: Arc::clone(&watch),
                leaf,
            });
            list
        });
        self.count.fetch_add(1, Relaxed);
    }

    pub(crate) fn remove(&self, watch: &Arc<dyn LoadWatch>) {
        let target = Arc::as_ptr(watch).cast::<()>();
        let mut removed = 0;
        self.list.rcu(|list| {
            let kept: Vec<Watcher> = list
                .iter()
                .filter(|w| Arc::as_ptr(&w.watch).cast::<()>() != target)
                .cloned()
                .collect();
            removed = list.len() - kept.len();
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
        for (leaf, backend) in backends.iter().enumerate() {
            watch.load_changed(leaf, backend.state());
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
