//! The "next position" of round-robin and the weighted schedule.
//!
//! By default one atomic counter serves all threads, so the sequence is
//! exact across the whole process: a client sending requests one after
//! another sees backends strictly in turn. Under a real load the counter's
//! cache line moves between cores at most once per request, next to the
//! backend's own in-flight counter which moves anyway; the cost is lost in
//! a request's microseconds.
//!
//! A tight pick loop on many cores is another matter: there one shared line
//! serializes the cores. [`Counter::per_thread`] gives each thread its own
//! padded slot instead, like nginx's and Envoy's per-worker state: each
//! thread walks the exact sequence, the threads together spread evenly, and
//! picks never contend.

use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

use crate::thread_slot::{SLOTS, thread_slot};

#[derive(Debug, Default)]
#[repr(align(128))]
struct Slot(AtomicUsize);

/// A position counter, shared or per thread.
#[derive(Debug, Default)]
pub(crate) struct Counter {
    per_thread: bool,
    slots: [Slot; SLOTS],
}

impl Counter {
    /// One position for all threads.
    pub(crate) fn shared() -> Self {
        Self::default()
    }

    /// One position per thread (threads spread over eight padded slots).
    /// The slots start at different places in the sequence, so threads do
    /// not walk it in lockstep onto the same backend at the same moment.
    pub(crate) fn per_thread() -> Self {
        Self {
            per_thread: true,
            slots: std::array::from_fn(|k| Slot(AtomicUsize::new(k.wrapping_mul(0x9e37_79b9)))),
        }
    }

    /// Returns the position and advances it by `step`.
    #[inline]
    pub(crate) fn advance(&self, step: usize) -> usize {
        self.slot().fetch_add(step, Relaxed)
    }

    /// Moves the position on by `step` more.
    #[inline]
    pub(crate) fn skip(&self, step: usize) {
        self.slot().fetch_add(step, Relaxed);
    }

    #[inline]
    fn slot(&self) -> &AtomicUsize {
        if self.per_thread {
            &self.slots[thread_slot()].0
        } else {
            &self.slots[0].0
        }
    }
}
