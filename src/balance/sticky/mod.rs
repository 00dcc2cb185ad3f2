//! Sticky sessions set by the balancer: a cookie pins a client to the
//! backend that first served it (HAProxy's `cookie ... insert`).
//!
//! Two halves with one [`StickyCookie`]: the [`Sticky`] strategy wrapper
//! sends a request with a valid cookie to its backend while that backend
//! is available, and [`StickyCookieLayer`] sets the cookie on the first
//! response and re-issues it when the client was balanced anew.
//!
//! Use it when backends keep per-client state in memory (sessions, carts,
//! WebSocket-adjacent caches) and clients take cookies (browsers). Unlike
//! consistent hashing on the client IP, a cookie survives NAT changes and
//! spreads clients behind one IP, and a new backend does not take existing
//! clients away; unlike hashing on an application cookie, the balancer
//! decides the first backend by load. A drained backend (removed, or
//! drained through the admin API) gets no new requests, sticky clients
//! included: they move and their cookie is re-issued, so stickiness never
//! holds a backend in service. The cookie's value is a MAC of the backend's
//! address under the key (see [`StickyCookie`]): it does not say where the
//! backend is, and a forged or altered value is ignored.

mod cookie;
mod layer;
mod strategy;

pub use cookie::StickyCookie;
pub use layer::{ResponseFuture, StickyCookieLayer, StickyCookies, StickyStats};
pub use strategy::{Sticky, StickyTable};
