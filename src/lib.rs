//! tower-lb: HTTP load balancing and failover as tower middleware.
//!
//! A request travels through the layers from the outside in; each is a
//! tower [`Layer`](tower_layer::Layer) you can use alone or leave out:
//!
//! ```text
//! client -> your axum / hyper server (TLS terminated here)
//!        -> Metrics         counts, latency histograms, per-backend labels   metrics::MetricsLayer
//!        -> Failover        retries on another backend: idempotent,          failover::FailoverLayer
//!                           budgeted, request bodies replayed up to a bound
//!        -> Hedge           a second try elsewhere for a slow bodiless read  hedge::HedgeLayer
//!        -> LoadBalance     a snapshot of the set, the strategy's pick, the  LoadBalanceLayer
//!                           request pointed at it (URI + a `Target`),
//!                           in flight until the response body ends
//!        -> PassiveHealth   reads the `Target`, records success or failure,  health::PassiveHealthLayer
//!                           ejects outliers, ramps failing ones down
//!        -> Forward         pooled upstream connections, proxy header rules  Forward
//!        -> backend
//! ```
//!
//! Beside the request path, writers change the [`BackendSet`] the balancer
//! reads without a lock: a static list, a reload
//! ([`BackendSet::replace`]), any tower [`Discover`](tower::discover::Discover)
//! stream ([`BackendSet::follow`]), the active health checks
//! ([`health::ActiveHealthCheck`]), and an operator through the set's
//! explicit methods ([`drain`](BackendSet::drain),
//! [`set_weight`](BackendSet::set_weight), [`eject`](BackendSet::eject),
//! [`readmit`](BackendSet::readmit)). Every transition is a
//! [`HealthEvent`](backend::HealthEvent) on [`BackendSet::events`].
//!
//! The balancer only decides where a request goes; whatever serves an
//! `http::Request` can sit underneath it. The backend set is dynamic
//! ([`BackendSet`]: a static list, a [`Discover`](tower::discover::Discover)
//! stream, reloads), read lock-free through snapshots, and keeps each
//! backend's runtime state across changes.
//!
//! # Example: a load balancer in an axum app
//!
//! ```no_run
//! use std::net::SocketAddr;
//!
//! use axum::Router;
//! use tower_lb::{BackendSet, Forward, LoadBalanceLayer, balance::RoundRobin};
//!
//! #[tokio::main]
//! async fn main() -> Result<(), Box<dyn std::error::Error>> {
//!     let backends = BackendSet::new([
//!         "http://127.0.0.1:9001".parse()?,
//!         "http://127.0.0.1:9002,weight=2".parse()?,
//!     ]);
//!     let app = Router::new()
//!         .fallback_service(Forward::new())
//!         .layer(LoadBalanceLayer::new(backends, RoundRobin::new()));
//!     let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await?;
//!     axum::serve(listener, app).await?;
//!     Ok(())
//! }
//! ```
//!
//! To pass the client's address on (for `X-Forwarded-For` and `ip-hash`),
//! copy axum's `ConnectInfo` into a [`ClientAddr`] extension:
//!
//! ```
//! use std::net::SocketAddr;
//!
//! use axum::extract::{ConnectInfo, Request};
//! use axum::{Router, middleware};
//! use tower_lb::{BackendSet, ClientAddr, Forward, LoadBalanceLayer, balance::ConsistentHash};
//!
//! async fn client_addr(ConnectInfo(peer): ConnectInfo<SocketAddr>, mut request: Request) -> Request {
//!     request.extensions_mut().insert(ClientAddr::new(peer));
//!     request
//! }
//!
//! let backends = BackendSet::new(["http://127.0.0.1:9001".parse()?]);
//! let app: Router = Router::new()
//!     .fallback_service(Forward::new())
//!     .layer(LoadBalanceLayer::new(backends, ConsistentHash::client_ip()))
//!     .layer(middleware::map_request(client_addr));
//! // serve with app.into_make_service_with_connect_info::<SocketAddr>()
//! # Ok::<(), tower_lb::ConfigError>(())
//! ```
//!
//! # Modules
//!
//! They stand on each other bottom-up: the error type, the clock and the
//! client's address at the ground; [`backend`] on them; [`balance`] and
//! [`health`] on the backend set; the layers on those; [`forward`] at the
//! side, needing only a backend's address.
//!
//! - [`backend`]: backends, their runtime state, the set and its snapshots.
//! - [`balance`]: the [`LoadBalanceLayer`] and the strategies.
//! - [`discover`]: backends from DNS (feature `dns`) and etcd (feature `etcd`).
//! - [`failover`]: retries on another backend, budgeted, with bounded body replay.
//! - [`forward`]: the [`Forward`] service.
//! - [`health`]: active probes, passive outlier detection, health events.
//! - [`hedge`]: a second attempt on another backend for a slow request.
//! - [`metrics`]: Prometheus metrics and the admin surface (feature `metrics`).

#![forbid(unsafe_code)]
#![cfg_attr(docsrs, feature(doc_cfg))]
#![warn(missing_docs, missing_debug_implementations, unreachable_pub)]

pub mod backend;
pub mod balance;
mod body_end;
mod client_addr;
mod clock;
pub mod discover;
mod error;
pub mod extensions;
pub mod failover;
pub mod forward;
pub mod health;
pub mod hedge;
mod local_body;
#[cfg(feature = "metrics")]
#[cfg_attr(docsrs, doc(cfg(feature = "metrics")))]
pub mod metrics;
mod replica;
mod stack;
mod thread_slot;
mod warn_once;

pub use backend::{Backend, BackendSet};
pub use balance::{LoadBalance, LoadBalanceLayer};
pub use client_addr::ClientAddr;
pub use error::{BoxError, ConfigError, Error, ErrorKind};
pub use extensions::{Attempts, Target, Tried};
pub use forward::Forward;
pub use stack::Stack;

/// The README's examples, compiled as doc tests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
