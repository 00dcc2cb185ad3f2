//! Backends and the dynamic set they form: the ground the other modules
//! stand on.
//!
//! A [`Backend`] is an [`Address`], a weight and a shared [`BackendState`]
//! whose atomics hold what changes per request (in-flight count, latency
//! estimate) or per health event (verdict, ejection, slow start). The
//! [`BackendSet`] publishes immutable [`Snapshot`]s that the request path reads
//! without a lock; writers (a static list, a [`Discover`](tower::discover::Discover)
//! stream, a reload, an operator) publish new ones or change a member's
//! state through the set's explicit methods. A member kept across a change
//! keeps its state. A removed member drains. Every transition is a
//! [`HealthEvent`] on [`BackendSet::events`].
//!
//! A backend is *eligible* for a new request when it is not removed, not
//! drained, not found unhealthy by active probes, and not ejected.
//!
//! This module imports nothing from the layers above it (balancing, health,
//! failover, forwarding): they build on it.

mod address;
mod claims;
pub(crate) mod departures;
mod discover;
mod eligibility;
mod event;
pub(crate) mod ewma;
mod flags;
mod home;
mod id;
mod in_flight;
mod member;
mod outcomes;
mod ramp;
mod set;
mod snapshot;
mod state;
mod verdict;
mod watch;

pub use address::Address;
pub(crate) use claims::{Claim, Source, SourceId};
pub use event::{HealthEvent, HealthEventKind};
pub use id::BackendId;
pub use in_flight::InFlight;
pub use member::{Backend, MAX_WEIGHT, Protocol};
pub(crate) use outcomes::Tally;
pub(crate) use ramp::FULL_SHARE;
pub(crate) use set::SnapshotListener;
pub use set::{BackendSet, Update};
pub use snapshot::Snapshot;
pub(crate) use state::StickyOutcome;
pub use state::{BackendState, StickyCounts};
pub use verdict::Verdict;
pub(crate) use watch::{LoadWatch, Watching};
