//! The identity of a backend's runtime state.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// A process-unique, never reused identifier of a backend's runtime state.
///
/// Retries carry the identifiers of the backends a request already tried, so
/// that the next attempt goes elsewhere; a backend listed again (with a new
/// weight, say) keeps its identifier, because it keeps its state.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BackendId(u64);

impl BackendId {
    /// The next identifier: a counter, so identifiers never repeat within a
    /// process even when states are dropped.
    pub(crate) fn next() -> Self {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        Self(NEXT.fetch_add(1, Relaxed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_never_repeat() {
        let (a, b) = (BackendId::next(), BackendId::next());
        assert_ne!(a, b);
        assert!(b > a);
    }
}
