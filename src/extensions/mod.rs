//! The vocabulary the layers pass to each other in request and response
//! extensions, in one place so that every layer imports it from here.
//!
//! | extension | set by | read by |
//! |---|---|---|
//! | [`ClientAddr`](crate::ClientAddr) | the server (per connection) | [`Forward`](crate::Forward) (`X-Forwarded-For`), hash strategies |
//! | [`Target`] | [`LoadBalance`](crate::LoadBalance), on the request and the response | passive health, `Forward`, failover, metrics |
//! | [`Tried`] | [`Failover`](crate::failover::Failover), on a retry's request | `LoadBalance` (skips those backends) |
//! | [`Attempts`] | `Failover`, on a response that took more than one try | metrics, the application |
//! | [`Error`](crate::Error) | any layer, on a response it made from a failure | failover, passive health, metrics |
//! | [`ReturnHead`] | `Failover`, on a request it may retry; answered in place by `Forward` ([`ReturnHead::answer`]) | `Forward` (hands the head back), then `Failover` (learns that heads come back) |
//! | [`RequestHead`] | `Forward`, on a failure or retried status answering a request marked [`ReturnHead`] | `Failover` (builds a retry from it) |
//!
//! A layer that finds an extension missing where its place in the stack
//! promises one (passive health below no balancer, failover above none)
//! says so once in the log, naming the missing layer; see
//! [`Stack`](crate::Stack) for the order that needs no thought.

mod attempts;
mod head;
mod target;
mod tried;

pub use attempts::Attempts;
pub use head::{RequestHead, ReturnHead};
pub use target::Target;
pub use tried::Tried;
