//! Failover: retrying a failed request on another backend.
//!
//! [`FailoverLayer`] sits above [`LoadBalance`](crate::LoadBalance). When a
//! try fails in a way that is safe to retry, it sends the request again
//! with the backends already tried in a [`Tried`](crate::Tried)
//! extension, so the balancer picks another. A [`RetryBudget`] bounds the
//! extra load, a [`ReplayBody`] bounds what is kept of the request body, and
//! every response says which try answered ([`Attempts::of`]).
//!
//! Failover reads outcomes from responses: the crate's services answer
//! failures with 502 / 503 / 504 responses carrying the
//! [`Error`](crate::Error). An `Err` from the inner service is returned as
//! it is, without retry.

mod budget;
mod future;
mod head_back;
mod layer;
mod policy;
mod replay;
mod service;

pub use crate::extensions::Attempts;
pub use budget::RetryBudget;
pub use future::ResponseFuture;
pub use layer::FailoverLayer;
pub use replay::ReplayBody;
pub use service::Failover;
// For hedging (crate::hedge), which spends from the same budget and judges
// answers by the same rules.
pub(crate) use layer::SharedBudget;
pub(crate) use policy::{Policy, Verdict};
