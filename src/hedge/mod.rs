//! Hedging: a second attempt on another backend for a request that is slow
//! to answer.
//!
//! A backend that is slow now and then (a pause for garbage collection, a
//! cold cache, a noisy neighbour) sets the tail latency of every service
//! behind it. Waiting for it to fail and retrying costs the whole wait;
//! [`HedgeLayer`] instead sends the same request to a *different* backend
//! when the first has not sent response headers after a delay, and the
//! client gets whichever good answer comes first (Dean and Barroso, "The
//! Tail at Scale"; Envoy's hedging, gRPC's hedging policy). The other
//! attempt is dropped at once: its connection is closed, and its backend's
//! in-flight count released.
//!
//! What is hedged: requests with a safe method (GET, HEAD, OPTIONS, TRACE),
//! no body and no protocol upgrade. Not PUT or DELETE although failover
//! retries them: a hedge runs *beside* a live attempt, so two of them would
//! race at the backends. An answer that failover would retry (a connect
//! failure, a timeout, a broken exchange, 502 / 503 / 504 or the statuses
//! of [`with_failover`](HedgeLayer::with_failover)) does not win while the
//! other attempt runs; when both fail, the later failure is the answer, for
//! failover above to judge.
//!
//! What it costs: every hedge is paid from a retry budget, by default the
//! failover layer's ([`with_failover`](HedgeLayer::with_failover)), so
//! hedges and retries together never add more than the budget's share of
//! load; when it is spent, no hedge is sent ([`HedgeStats`] counts those).
//! A hedgeable request also carries a copy of its head (made when it
//! arrives, since the original has moved down the stack by the time the
//! hedge is due), a shared slot for its first backend, and a timer; other
//! requests pay one method check and nothing else.
//!
//! # Where it goes
//!
//! ```text
//! Metrics -> Failover -> Hedge -> [Queue] -> LoadBalance -> RecordTarget -> PassiveHealth -> Forward
//! ```
//!
//! - **Above [`LoadBalanceLayer`](crate::LoadBalanceLayer)**, so that each
//!   attempt is balanced, and the hedge goes elsewhere
//!   ([`Tried`](crate::Tried)).
//! - **Its [`recorder`](HedgeLayer::recorder) below the balancer**: only
//!   there does a request carry the backend it was sent to, which the hedge
//!   must avoid. Without it nothing is hedged.
//! - **Below [`FailoverLayer`](crate::failover::FailoverLayer)**: failover
//!   deposits each client request once and its retries see one answer per
//!   try (a hedged try included). Above failover, each hedge would be
//!   deposited as a client request of its own (hedges would fund
//!   themselves) and failover's retries would forget the backend the hedge
//!   avoided.
//! - Above a [`QueueLayer`](crate::balance::QueueLayer): a first attempt
//!   still waiting for a backend slot when the hedge is due is not hedged
//!   (the hedge would wait too, behind it).
//!
//! Placed otherwise, the layer says so once in the log: a response with no
//! `Target` (no balancer below), one with failover's
//! [`Attempts`](crate::Attempts) (failover below), a hedge due with no
//! recorder made. [`Stack::hedge`](crate::Stack::hedge) puts both parts
//! in place.
//!
//! ```
//! use std::time::Duration;
//! use tower::ServiceBuilder;
//! use tower_lb::hedge::HedgeLayer;
//! use tower_lb::{BackendSet, Forward, LoadBalanceLayer, balance::RoundRobin};
//!
//! let set = BackendSet::new(["http://127.0.0.1:9001".parse()?, "http://127.0.0.1:9002".parse()?]);
//! // No failover: the hedges have a budget of their own.
//! let hedge = HedgeLayer::new(Duration::from_millis(50))?;
//! let service = ServiceBuilder::new()
//!     .layer(hedge.clone())
//!     .layer(LoadBalanceLayer::new(set, RoundRobin::new()))
//!     .layer(hedge.recorder())
//!     .service(Forward::new());
//! # fn is_service<S: tower::Service<http::Request<axum::body::Body>>>(_: &S) {}
//! # is_service(&service);
//! # Ok::<(), tower_lb::ConfigError>(())
//! ```

mod body;
mod future;
mod layer;
mod record;
mod service;

pub use body::RequestBody;
pub use future::ResponseFuture;
pub use layer::{HedgeLayer, HedgeStats};
pub use record::{RecordTarget, RecordTargetLayer};
pub use service::Hedge;

#[cfg(test)]
mod tests;
