//! tower-lb: HTTP load balancing and failover as tower middleware.
//!
//! Wrap a forwarding service (or an axum `Router`) in layers:
//!
//! ```text
//! client -> your axum / hyper server
//!        -> LoadBalance   picks a backend (strategy over a snapshot of the set),
//!                         points the request at it, counts it in flight until
//!                         the response body ends
//!        -> Forward       pooled keep-alive connections, proxy header rules
//!        -> backend
//! ```
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
//! # Ok::<(), tower_lb::Error>(())
//! ```
//!
//! # Modules
//!
//! - [`backend`]: backends, their runtime state, the set and its snapshots.
//! - [`balance`]: the [`LoadBalanceLayer`] and the strategies.
//! - [`discover`]: backends from DNS (feature `dns`) and etcd (feature `etcd`).
//! - [`failover`]: retries on another backend, budgeted, with bounded body replay.
//! - [`forward`]: the [`Forward`] service.
//! - [`health`]: active probes, passive outlier detection, health events.
//! - [`metrics`]: Prometheus metrics and the admin surface (feature `metrics`).

#![forbid(unsafe_code)]
#![warn(missing_docs, missing_debug_implementations, unreachable_pub)]

pub mod backend;
pub mod balance;
mod client_addr;
mod clock;
pub mod discover;
mod error;
pub mod extensions;
pub mod failover;
pub mod forward;
pub mod health;
mod local_body;
#[cfg(feature = "metrics")]
pub mod metrics;
mod stack;
mod warn_once;

pub use backend::{Backend, BackendSet};
pub use balance::{LoadBalance, LoadBalanceLayer};
pub use client_addr::ClientAddr;
pub use error::{BoxError, Error, ErrorKind};
pub use extensions::{Attempts, Target, Tried};
pub use forward::Forward;
pub use stack::Stack;

/// The README's examples, compiled as doc tests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
