//! Which of a few padded slots this thread writes: the shards of counters
//! that every request on every thread would otherwise write at one place
//! (round-robin's per-thread positions, the request latency histogram,
//! the retry budget's deposits).
//!
//! Threads take slots in the order they first ask, so up to [`SLOTS`]
//! threads (the example proxy's workers on up to eight cores) never share
//! one; beyond that two threads share a slot, which is still correct (the
//! slots are atomics), only not contention-free.

use std::cell::Cell;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

/// How many slots a sharded counter has.
pub(crate) const SLOTS: usize = 8;

/// This thread's slot, in `0..SLOTS`.
#[inline]
pub(crate) fn thread_slot() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static SLOT: Cell<usize> = Cell::new(NEXT.fetch_add(1, Relaxed) % SLOTS);
    }
    SLOT.with(Cell::get)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (Which slot a new thread takes depends on how many threads asked
    /// before it, other tests' included, so only its range is checked.)
    #[test]
    fn a_thread_keeps_its_slot() {
        let mine = thread_slot();
        assert_eq!(thread_slot(), mine);
        let theirs = std::thread::spawn(|| (thread_slot(), thread_slot()))
            .join()
            .unwrap();
        assert!(mine < SLOTS && theirs.0 < SLOTS);
        assert_eq!(theirs.0, theirs.1);
    }
}
