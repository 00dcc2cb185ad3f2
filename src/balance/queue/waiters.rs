//! The queue's shared state: how many wait, who is woken, what was counted.

use std::fmt;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::Notify;

use crate::backend::{Backend, BackendState, LoadWatch, Snapshot, SnapshotListener, Watching};

/// What the waiting requests share: the count, the FIFO of wakers (tokio's
/// `Notify`, whose `notify_one` wakes the longest waiter), and counters.
pub(super) struct Shared {
    pub(super) notify: Arc<Notify>,
    pending: AtomicUsize,
    pub(super) max_pending: usize,
    queued: AtomicU64,
    rejected: AtomicU64,
    timed_out: AtomicU64,
    /// Sum of the time queued requests waited, in nanoseconds.
    waited_nanos: AtomicU64,
    /// The longest wait so far, in nanoseconds.
    longest_nanos: AtomicU64,
}

impl Shared {
    pub(super) fn new(max_pending: usize) -> Self {
        Self {
            notify: Arc::new(Notify::new()),
            pending: AtomicUsize::new(0),
            max_pending,
            queued: AtomicU64::new(0),
            rejected: AtomicU64::new(0),
            timed_out: AtomicU64::new(0),
            waited_nanos: AtomicU64::new(0),
            longest_nanos: AtomicU64::new(0),
        }
    }

    /// Requests waiting now.
    #[inline]
    pub(super) fn pending(&self) -> usize {
        self.pending.load(Relaxed)
    }

    /// Takes a place in the queue, or counts a rejection when it is full.
    /// Returns the place and whether the queue was empty before.
    pub(super) fn enter(self: &Arc<Self>) -> Option<(Place, bool)> {
        let mut current = self.pending.load(Relaxed);
        loop {
            if current >= self.max_pending {
                self.rejected.fetch_add(1, Relaxed);
                return None;
            }
            match self
                .pending
                .compare_exchange_weak(current, current + 1, Relaxed, Relaxed)
            {
                Ok(_) => break,
                Err(now) => current = now,
            }
        }
        self.queued.fetch_add(1, Relaxed);
        Some((
            Place {
                shared: Arc::clone(self),
            },
            current == 0,
        ))
    }

    pub(super) fn count_timeout(&self) {
        self.timed_out.fetch_add(1, Relaxed);
    }

    pub(super) fn record_wait(&self, nanos: u64) {
        self.waited_nanos.fetch_add(nanos, Relaxed);
        self.longest_nanos.fetch_max(nanos, Relaxed);
    }

    pub(super) fn stats(&self) -> QueueStats {
        QueueStats {
            pending: self.pending(),
            max_pending: self.max_pending,
            queued_total: self.queued.load(Relaxed),
            rejected_total: self.rejected.load(Relaxed),
            timed_out_total: self.timed_out.load(Relaxed),
            wait_seconds_total: self.waited_nanos.load(Relaxed) as f64 / 1e9,
            longest_wait_seconds: self.longest_nanos.load(Relaxed) as f64 / 1e9,
        }
    }
}

/// A place in the queue: dropping it (served, timed out, or the client
/// gone) leaves the queue.
pub(super) struct Place {
    shared: Arc<Shared>,
}

impl Drop for Place {
    fn drop(&mut self) {
        self.shared.pending.fetch_sub(1, Relaxed);
    }
}

impl fmt::Debug for Place {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Place").finish_non_exhaustive()
    }
}

/// The queue's counters at one moment: what `/status` and metrics show.
#[derive(Clone, Debug, Default, PartialEq)]
#[non_exhaustive]
pub struct QueueStats {
    /// Requests waiting now.
    pub pending: usize,
    /// The most that may wait.
    pub max_pending: usize,
    /// Requests that waited (or wait) in the queue since it was made.
    pub queued_total: u64,
    /// Requests answered 503 because the queue was full.
    pub rejected_total: u64,
    /// Requests answered 503 because their wait timed out.
    pub timed_out_total: u64,
    /// The sum of the time served requests waited, in seconds.
    pub wait_seconds_total: f64,
    /// The longest time a served request waited, in seconds.
    pub longest_wait_seconds: f64,
}

/// Listens to the backend set and watches every member's load, to wake the
/// head of the queue when a backend frees a slot (or joins, or returns).
pub(super) struct Wakeup {
    shared: Arc<Shared>,
    watching: Mutex<Option<Watching>>,
}

impl Wakeup {
    pub(super) fn new(shared: Arc<Shared>) -> Self {
        Self {
            shared,
            watching: Mutex::new(None),
        }
    }
}

impl SnapshotListener for Wakeup {
    fn published(&self, snapshot: &Arc<Snapshot>) {
        let watching = watching(snapshot.backends(), Arc::clone(&self.shared));
        // Off the request path: the set's writer publishes.
        let old = self
            .watching
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .replace(watching);
        drop(old);
        // New members may have room: every waiter looks again.
        if self.shared.pending() > 0 {
            self.shared.notify.notify_waiters();
        }
    }
}

fn watching(backends: &[Backend], shared: Arc<Shared>) -> Watching {
    let loads = Arc::new(Loads {
        shared,
        seen: backends
            .iter()
            .map(|b| AtomicU32::new(b.state().in_flight()))
            .collect(),
    });
    Watching::new(backends, loads)
}

/// The last load seen of each member: a fall is a freed slot.
struct Loads {
    shared: Arc<Shared>,
    seen: Box<[AtomicU32]>,
}

impl LoadWatch for Loads {
    fn load_changed(&self, leaf: usize, state: &BackendState) {
        let Some(seen) = self.seen.get(leaf) else {
            return;
        };
        let load = state.in_flight();
        let before = seen.swap(load, Relaxed);
        // A slot freed, or a change of eligibility (the count unchanged):
        // the head of the queue looks again. A rise wakes no one.
        if load <= before && self.shared.pending() > 0 {
            self.shared.notify.notify_one();
        }
    }
}
