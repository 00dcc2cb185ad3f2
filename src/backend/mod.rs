//! Backends and the dynamic set they form.
//!
//! A [`Backend`] is an [`Address`], a weight and a shared [`BackendState`]
//! whose atomics hold what changes per request (in-flight count, latency
//! estimate) or per health event (verdict, ejection, slow start). The
//! [`BackendSet`] publishes immutable [`Snapshot`]s that the request path reads
//! without a lock; writers (a static list, a [`Discover`](tower::discover::Discover)
//! stream, a reload) publish new ones. A member kept across a change keeps its
//! state. A removed member drains.
//!
//! A backend is *eligible* for a new request when it is not removed, not
//! found unhealthy by active probes, and not ejected by outlier detection.

mod address;
mod claims;
mod discover;
mod eligibility;
pub(crate) mod ewma;
mod in_flight;
mod member;
mod outcomes;
mod set;
mod snapshot;
mod state;
mod watch;

pub use address::Address;
pub(crate) use claims::{Claim, Source, SourceId};
pub use in_flight::InFlight;
pub use member::{Backend, MAX_WEIGHT, Protocol};
pub(crate) use outcomes::Tally;
pub(crate) use set::SnapshotListener;
pub use set::{BackendSet, Update};
pub use snapshot::Snapshot;
pub(crate) use state::FULL_SHARE;
pub use state::{BackendId, BackendState, Verdict};
pub(crate) use watch::LoadWatch;
