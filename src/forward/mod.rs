//! Forwarding: the service at the bottom of the stack that talks to backends.
//!
//! [`Forward`] sends a request (already pointed at a backend by
//! [`LoadBalance`](crate::LoadBalance)) over pooled keep-alive connections and
//! applies a reverse proxy's header rules. Any other service that takes an
//! `http::Request` can take its place.
//!
//! HTTP/1.1 backends are spoken to by our own codec (`h1`, on `httparse`),
//! driven inside the request's task; HTTP/2 backends by hyper-util's client.
//! `https://` backends are spoken to over TLS (feature `tls`, on rustls:
//! [`BackendTls`]) beneath the same codec and pool; without the feature an
//! `https://` address is refused when it is parsed.

mod body;
#[cfg(test)]
mod churn_tests;
mod future;
mod h1;
mod headers;
mod idle;
mod pool;
mod service;
mod stream;
#[cfg(feature = "tls")]
mod tls;
mod tunnel;

pub use body::ResponseBody;
pub use future::ResponseFuture;
pub use service::{Forward, ForwardBuilder};
#[cfg(feature = "tls")]
pub use tls::{BackendTls, BackendTlsBuilder};

pub(crate) use stream::{Connect, Connector, connect};
