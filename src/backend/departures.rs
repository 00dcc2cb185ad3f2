//! A process-wide count of departures: backends that left their set, and
//! exchanges with a departed backend that ended. Caches keyed by backend
//! (the forwarder's connection pool) compare it with the count they last
//! saw, one relaxed load a request, to know when to look for entries to
//! forget, without a hook from every set into every cache.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

static DEPARTURES: AtomicU64 = AtomicU64::new(0);

/// How many departures so far.
pub(crate) fn count() -> u64 {
    DEPARTURES.load(Relaxed)
}

/// Counts one: a backend left its set, or the last use of one that left
/// may have ended. Written on those rare events only.
pub(crate) fn note() {
    DEPARTURES.fetch_add(1, Relaxed);
}
