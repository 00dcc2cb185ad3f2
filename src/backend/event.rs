//! Health and membership events.
//!
//! They live beside the backend set, which sends them (membership) and
//! carries them for the health layers (verdicts, ejections, shares), so
//! that the set needs nothing from the layers above it.

use std::sync::Arc;
use std::time::Duration;

use super::{Backend, Verdict};

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
    /// Who made an operator's change (an admin token's name), when known.
    actor: Option<Arc<str>>,
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
    /// Outlier detection, or an operator through
    /// [`BackendSet::eject`](crate::BackendSet::eject), ejected the backend.
    Ejected {
        /// For how long.
        duration: Duration,
        /// How many times in a row outlier detection has ejected it (the
        /// back-off exponent plus one); 0 for an operator's ejection, which
        /// stands outside the back-off.
        count: u32,
    },
    /// The backend asked for a pause (`429`, or `503` with `Retry-After`)
    /// and gets no new requests for `duration`; its return is announced as
    /// [`Returned`](Self::Returned), as an ejection's.
    Overloaded {
        /// For how long (what it asked, capped).
        duration: Duration,
    },
    /// An ejection ended; the backend takes traffic again (through slow
    /// start, when the set has one).
    ///
    /// An ejection ends by its deadline, which is checked when the backend
    /// is next looked at (a pick, a status read, the ejection cap), not by
    /// a timer: so the event comes with the first request that could go to
    /// the backend after the deadline, and a set nobody uses announces
    /// nothing. An ejection ended early (probes that saw the backend come
    /// back, [`BackendSet::readmit`](crate::BackendSet::readmit)) is
    /// announced at once.
    Returned,
    /// An operator drained the backend
    /// ([`BackendSet::drain`](crate::BackendSet::drain)): it stays a member
    /// but gets no new requests.
    Drained,
    /// An operator undrained it: it takes traffic again, through slow start.
    Undrained,
    /// An operator set the backend's weight
    /// ([`BackendSet::set_weight`](crate::BackendSet::set_weight)); a
    /// reloaded list that changes a weight sends no event of its own.
    Reweighted {
        /// The weight before.
        from: u32,
        /// The weight now.
        to: u32,
    },
    /// Outlier detection changed the backend's share of traffic because of
    /// its recent success rate (ramp-down), or restored it.
    Share {
        /// The share of its weight it now gets, `0.0..=1.0`.
        share: f64,
    },
}

impl HealthEvent {
    pub(crate) fn new(backend: Backend, kind: HealthEventKind) -> Self {
        Self {
            backend,
            kind,
            actor: None,
        }
    }

    /// This event, made by `actor`.
    pub(crate) fn by(mut self, actor: Arc<str>) -> Self {
        self.actor = Some(actor);
        self
    }

    /// The backend.
    pub fn backend(&self) -> &Backend {
        &self.backend
    }

    /// What happened.
    pub fn kind(&self) -> &HealthEventKind {
        &self.kind
    }

    /// Who made the change, for an operator's change made through an
    /// authenticated admin API (the name of the token it used); `None` for
    /// what the proxy itself decided (health checks, outlier detection,
    /// discovery) and for calls of the set's methods from code.
    pub fn actor(&self) -> Option<&str> {
        self.actor.as_deref()
    }
}
