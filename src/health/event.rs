//! Health and membership events.

use std::sync::Arc;
use std::time::Duration;

use crate::backend::{Backend, Verdict};

/// Something that happened to a backend: it joined or left the set, its
/// health verdict changed, it was ejected or let back.
///
/// Subscribe with [`BackendSet::events`](crate::BackendSet::events). Every
/// transition is sent, including each backend's first verdict, so a
/// subscriber can keep an exact picture (metrics, logs, alerts).
#[derive(Clone, Debug)]
pub struct HealthEvent {
    backend: Backend,
    kind: HealthEventKind,
}

/// What happened.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum HealthEventKind {
    /// The backend joined the set.
    Joined,
    /// The backend left the set; it drains.
    Left,
    /// The active health checker's verdict changed (the first verdict is a
    /// change from [`Verdict::Unknown`]).
    Verdict {
        /// The verdict before.
        from: Verdict,
        /// The verdict now.
        to: Verdict,
        /// Why the last probe failed, when it did.
        error: Option<Arc<str>>,
    },
    /// Outlier detection ejected the backend.
    Ejected {
        /// For how long.
        duration: Duration,
        /// How many times in a row it has been ejected (the back-off
        /// exponent plus one).
        count: u32,
    },
    /// An ejection ended; the backend takes traffic again (through slow
    /// start, when the set has one).
    Returned,
    /// Outlier detection changed the backend's share of traffic because of
    /// its recent success rate (ramp-down), or restored it.
    Share {
        /// The share of its weight it now gets, `0.0..=1.0`.
        share: f64,
    },
}

impl HealthEvent {
    pub(crate) fn new(backend: Backend, kind: HealthEventKind) -> Self {
        Self { backend, kind }
    }

    /// The backend.
    pub fn backend(&self) -> &Backend {
        &self.backend
    }

    /// What happened.
    pub fn kind(&self) -> &HealthEventKind {
        &self.kind
    }
}
