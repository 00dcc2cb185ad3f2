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
