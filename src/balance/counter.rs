//! A counter that several threads advance without sharing a cache line.
//!
//! Round-robin and the weighted schedule need "the next position". One
//! atomic for all threads would bounce its cache line between cores on every
//! pick. Instead each thread advances its own padded slot (threads are spread
//! over the slots by a per-thread number), like nginx's per-worker state:
//! each thread walks the exact sequence, and the threads together still
//! spread evenly.

use std::cell::Cell;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

const SLOTS: usize = 8;

#[derive(Debug, Default)]
#[repr(align(128))]
struct Slot(AtomicUsize);

/// A per-thread-sharded position counter.
#[derive(Debug, Default)]
pub(crate) struct Counter {
    slots: [Slot; SLOTS],
}

impl Counter {
    /// Returns the calling thread's position and advances it by `step`.
    #[inline]
    pub(crate) fn advance(&self, step: usize) -> usize {
        self.slot().fetch_add(step, Relaxed)
    }

    /// Moves the calling thread's position on by `step` more.
    #[inline]
    pub(crate) fn skip(&self, step: usize) {
        self.slot().fetch_add(step, Relaxed);
    }

    #[inline]
    fn slot(&self) -> &AtomicUsize {
        &self.slots[thread_slot()].0
    }
}

fn thread_slot() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static SLOT: Cell<usize> = Cell::new(NEXT.fetch_add(1, Relaxed) % SLOTS);
    }
    SLOT.with(Cell::get)
}
