//! Metrics and the admin surface (the `metrics` cargo feature, on by default).
//!
//! [`MetricsLayer`] records per-backend request counts by status class,
//! latency histograms, retries and exhaustion into a `prometheus-client`
//! [`Registry`](prometheus_client::registry::Registry), and reads in-flight
//! counts, health, ejections and shares from the backends at scrape time.
//! [`AdminService`] serves `/metrics`, `/status` (JSON) and a status page
//! with five minutes of history per backend, and, given [`AdminTokens`],
//! authenticated write routes (drain, weight, eject) for operators.
//!
//! Why prometheus-client: it is the Prometheus project's own Rust client, it
//! has no global state (the registry is a value the app owns, so a library
//! can register into it), and its counters and gauges are plain atomics. Its
//! histogram takes a mutex per observation, so this module brings a
//! lock-free histogram that encodes through the same registry.
//!
//! For autoscaling, the signals are `lb_backend_in_flight` (load now, per
//! backend: scale out when its sum over backends stays above what the
//! backends can hold), `lb_request_duration_seconds` (latency: scale out when
//! a high quantile crosses the SLO) and `lb_backend_requests_total{code="5xx"}`
//! over all requests (error rate: investigate rather than scale).

mod admin;
mod body;
#[cfg(test)]
mod churn_tests;
mod collector;
mod control;
mod future;
mod histogram;
mod history;
mod layer;
mod monitor;
mod page;
mod recorder;
mod service;
mod sparkline;
mod status;
mod timeline;
mod tokens;
mod traffic;

pub use admin::AdminService;
pub use body::ResponseBody;
pub use future::ResponseFuture;
pub use layer::MetricsLayer;
pub use service::Metrics;
pub use tokens::AdminTokens;
