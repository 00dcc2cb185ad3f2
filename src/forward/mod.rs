//! Forwarding: the service at the bottom of the stack that talks to backends.
//!
//! [`Forward`] sends a request (already pointed at a backend by
//! [`LoadBalance`](crate::LoadBalance)) over pooled keep-alive connections and
//! applies a reverse proxy's header rules. Any other service that takes an
//! `http::Request` can take its place.

mod body;
mod future;
// The HTTP/1.1 codec that will replace hyper's client under `Forward`; not
// used until it is integrated there, so its items (and re-exports) are dead
// code until then.
#[allow(dead_code, unused_imports)]
mod h1;
mod headers;
mod pool;
mod service;
mod tunnel;

pub use body::ResponseBody;
pub use future::ResponseFuture;
pub use service::{Forward, ForwardBuilder};
