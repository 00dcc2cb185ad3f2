//! What sticky cookies did for one backend: counters for status views.
//!
//! Kept in the backend's state (not in the cookie layer's tables, which are
//! rebuilt with every snapshot) so that they last as long as the backend,
//! across reloads, and cost one relaxed add on the response that counts.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use super::BackendState;

#[derive(Debug, Default)]
pub(super) struct StickyCounters {
    kept: AtomicU64,
    issued: AtomicU64,
    reissued: AtomicU64,
}

/// A backend's sticky-session counts since it joined the set (all zero
/// without [`StickyCookieLayer`](crate::balance::StickyCookieLayer)).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct StickyCounts {
    /// Responses to requests whose valid cookie named this backend: the
    /// client stayed.
    pub kept: u64,
    /// Cookies naming this backend set on a client's first visit.
    pub issued: u64,
    /// Cookies naming this backend set for a client whose cookie named
    /// another (gone, unavailable, or tried and failed) or was not valid.
    pub reissued: u64,
}

/// What a response did to its client's pin.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum StickyOutcome {
    Kept,
    Issued,
    Reissued,
}

impl BackendState {
    /// The sticky-session counts.
    pub fn sticky(&self) -> StickyCounts {
        StickyCounts {
            kept: self.sticky.kept.load(Relaxed),
            issued: self.sticky.issued.load(Relaxed),
            reissued: self.sticky.reissued.load(Relaxed),
        }
    }

    pub(crate) fn count_sticky(&self, outcome: StickyOutcome) {
        let counter = match outcome {
            StickyOutcome::Kept => &self.sticky.kept,
            StickyOutcome::Issued => &self.sticky.issued,
            StickyOutcome::Reissued => &self.sticky.reissued,
        };
        counter.fetch_add(1, Relaxed);
    }
}
