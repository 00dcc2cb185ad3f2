//! tower-lb's own HTTP/1.1 client codec, on `httparse`.
//!
//! hyper's client is general: each connection is driven by a task of its
//! own, each request crosses to it over a channel and its response comes
//! back over another, and each message gets fresh read buffers. A proxy
//! pays for all of that on every request (PERF-NOTES.md: a third of our
//! cost above nginx). This codec is the minimum a proxy needs instead:
//!
//! - the exchange runs in the caller's task ([`Conn::send`] is an `async fn`
//!   the request's future awaits): no connection task, no channel;
//! - the request head is written straight from `http::request::Parts` into
//!   the connection's reused write buffer, with the proxy's header rules
//!   applied as it is written ([`RequestHead`]);
//! - the response head is parsed in the connection's reused read buffer and
//!   its header values are slices of it; body data frames are too
//!   ([`BodyReader`]);
//! - the connection is generic over its stream, so TLS streams plug in
//!   (the pool's is `forward::stream::Stream`, TCP or TLS).
//!
//! It is strict with backends, since whatever it accepts it must frame the
//! one way the backend meant: ambiguous framing, malformed heads and chunks
//! are errors, and a connection is only ever handed back for reuse when its
//! response ended exactly where its framing said, with no byte left over.

mod body;
mod chunked;
mod conn;
mod deadline;
mod error;
mod request_head;
mod response_head;
#[cfg(test)]
mod tests;

pub(crate) use body::BodyReader;
pub(crate) use conn::{Answer, Conn, DEFAULT_MAX_HEAD, Upgraded};
pub(crate) use deadline::within;
pub(crate) use error::{Error, Kind};
pub(crate) use request_head::{BodyFraming, RequestHead};
