//! The guard that owns one request's in-flight count.

use super::Backend;

/// One request in flight to a backend.
///
/// Creating it counts the request; dropping it uncounts it, whatever path
/// the request took (response body ended, body dropped half-read, future
/// cancelled, error). Nothing decrements by hand.
///
/// The count is one atomic per backend, on the cache line that least
/// connections and power of two choices read, not a counter per thread.
/// Per-thread counts would give each thread its own line to write, but
/// every read would sum them (power of two choices reads two backends per
/// pick, least connections re-reads one per change): several lines instead
/// of one, at 10,000 backends several cache misses. And they would not
/// stop the line from moving between cores: the same request also writes
/// the backend's latency estimate on that line, its reference count (the
/// handle the request holds) and passive health's outcome window. Measured
/// with `cargo bench --bench pick -- request_threads` (whole requests
/// through `LoadBalance`, 100 backends), two threads already serve about
/// 1.7 to 1.9 times one thread's requests, so there is little for sharding
/// to win and a cost on every load-aware pick.
#[derive(Debug)]
pub struct InFlight {
    backend: Backend,
}

impl InFlight {
    /// Counts a request to `backend` as in flight until the guard drops.
    pub fn begin(backend: Backend) -> Self {
        backend.state().begin();
        Self { backend }
    }

    /// Counts a request to `backend` as in flight if the backend holds
    /// fewer than `max` requests; `None` when it is full.
    ///
    /// The check and the count are one compare-and-swap, so a limit
    /// enforced through claims is exact: however many threads claim the
    /// last slot at once, one gets it. [`begin`](Self::begin), which
    /// checks nothing, stays the cheaper plain increment for when there is
    /// no limit. The handle is cloned only when the claim succeeds.
    ///
    /// A successful claim acquires what the release of the slot's previous
    /// holder published (the count's decrement is a release, the same
    /// instruction as a relaxed one on x86): whatever that request did
    /// happens before this one starts, as a limit of one promises.
    #[inline]
    pub fn claim(backend: &Backend, max: u64) -> Option<Self> {
        backend.state().try_begin(max).then(|| Self {
            backend: backend.clone(),
        })
    }

    /// The backend the request went to.
    pub fn backend(&self) -> &Backend {
        &self.backend
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.backend.state().end();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dropping_the_guard_uncounts() {
        let backend = Backend::new("http://127.0.0.1:1".parse().unwrap());
        let first = InFlight::begin(backend.clone());
        let second = InFlight::begin(backend.clone());
        assert_eq!(backend.state().in_flight(), 2);
        drop(first);
        assert_eq!(backend.state().in_flight(), 1);
        drop(second);
        assert_eq!(backend.state().in_flight(), 0);
    }

    #[test]
    fn a_claim_counts_only_below_the_limit() {
        let backend = Backend::new("http://127.0.0.1:1".parse().unwrap());
        let first = InFlight::claim(&backend, 2).unwrap();
        let _second = InFlight::claim(&backend, 2).unwrap();
        assert!(InFlight::claim(&backend, 2).is_none(), "full");
        assert_eq!(
            backend.state().in_flight(),
            2,
            "a refused claim counts nothing"
        );
        assert_eq!(backend.state().requests(), 2);
        drop(first);
        assert!(InFlight::claim(&backend, 2).is_some(), "a freed slot");
        assert!(InFlight::claim(&backend, 0).is_none(), "no slot at all");
    }
}
