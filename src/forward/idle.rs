//! One backend's idle connections: a small ring allocated once, before an
//! unbounded overflow.
//!
//! crossbeam's `SegQueue` alone grows and shrinks in blocks of 31 slots, so
//! a connection going out and back in on every request allocates a new
//! block every 31 requests (0.03 allocations a request, a 4.4 KB block
//! each time). The ring (`ArrayQueue`, allocated with the host) holds the
//! few connections a backend has idle at low concurrency, with no
//! allocation at all; only the connections beyond it, at high
//! concurrency, go to the growing queue. Both are lock-free.

use crossbeam_queue::{ArrayQueue, SegQueue};

/// Idle connections the ring holds before the overflow is used: enough
/// for the connections a backend has idle at moderate concurrency, small
/// enough (about 1.2 KB) to allocate for every backend a pool meets.
const RING: usize = 8;

/// A lock-free queue of idle connections that allocates only beyond
/// [`RING`] entries.
pub(super) struct IdleQueue<T> {
    ring: ArrayQueue<T>,
    overflow: SegQueue<T>,
}

impl<T> IdleQueue<T> {
    pub(super) fn new() -> Self {
        Self {
            ring: ArrayQueue::new(RING),
            overflow: SegQueue::new(),
        }
    }

    pub(super) fn push(&self, item: T) {
        if let Err(item) = self.ring.push(item) {
            self.overflow.push(item);
        }
    }

    /// How many are queued (a moment's count, for debug output).
    pub(super) fn len(&self) -> usize {
        self.ring.len() + self.overflow.len()
    }

    /// The ring first: its connections are the recently used ones. Those
    /// in the overflow are reached when the ring is empty; one idle past
    /// its timeout is closed when it is reached, as before.
    pub(super) fn pop(&self) -> Option<T> {
        self.ring.pop().or_else(|| self.overflow.pop())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holds_everything_pushed_ring_first() {
        let queue = IdleQueue::new();
        for i in 0..RING + 3 {
            queue.push(i);
        }
        let popped: Vec<_> = std::iter::from_fn(|| queue.pop()).collect();
        let expected: Vec<_> = (0..RING + 3).collect();
        assert_eq!(popped, expected);
    }
}
