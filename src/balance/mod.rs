//! Load balancing: the layer, the strategies, and what they share.
//!
//! [`LoadBalanceLayer`] wraps a forwarding service (or an axum `Router`) with
//! [`LoadBalance`], which asks a [`Strategy`] for a backend per request and
//! points the request at it. The balancer does not own the client that
//! forwards: anything that serves an `http::Request` can sit underneath
//! ([`Forward`](crate::Forward), your own client, a mock in tests).
//!
//! | strategy | picks | use it when | cost per pick |
//! |---|---|---|---|
//! | [`RoundRobin`] | each backend in turn | backends alike, requests alike | O(1) |
//! | [`WeightedRoundRobin`] | in proportion to weight, smoothly (nginx's sequence) | backends of different sizes | O(1) |
//! | [`LeastConnections`] | fewest in flight per weight | request costs vary widely | O(log n) |
//! | [`ConsistentHash`] | by client IP, header, cookie or path | affinity: caches, sessions, shards | O(1) |
//! | [`PowerOfTwoChoices`] | lower latency × load of two random | backends differ in speed | O(1) |
//! | [`Random`] | at random, by weight | many independent proxies | O(1) |
//!
//! Every strategy skips backends that are not eligible (removed, unhealthy,
//! ejected) and those the request already [`Tried`], and honours slow start
//! and ramp-down. Tables (a schedule, a Maglev table, a tree of loads) are
//! built when the backend set changes; picks take no lock and allocate
//! nothing.
//!
//! A pick writes nothing that threads share, with one exception by design:
//! the position of [`RoundRobin`] and [`WeightedRoundRobin`], one counter
//! for the process so that their sequence is exact (`per_thread()` trades
//! that for a position per thread). It reads the snapshot's packed
//! eligibility bits rather than each backend's flags, and returns a
//! position in the snapshot ([`Balancer::pick_ref`]); [`LoadBalance`]
//! clones the chosen backend's handle once, for the request. Least
//! connections and power of two choices read in-flight counts and latency
//! estimates, never write them (each from its table: a tree of loads, a
//! packed copy of the draws' inputs, both kept by the backends).

mod balancer;
mod body;
mod bounded;
mod counter;
mod future;
mod hash;
mod hash_key;
mod layer;
mod least_conn;
mod load_tree;
mod maglev;
mod named;
mod p2c;
mod p2c_table;
pub mod queue;
mod ramps;
mod random;
mod round_robin;
mod service;
pub mod sticky;
mod strategy;
#[cfg(test)]
pub(crate) mod test_support;
mod tiered;
mod weighted;

pub use crate::extensions::{Target, Tried};
pub use balancer::{Balancer, Picked};
pub use body::ResponseBody;
pub use future::ResponseFuture;
pub use hash::{ConsistentHash, HashTable};
pub use hash_key::HashKey;
pub use layer::LoadBalanceLayer;
pub use least_conn::{LeastConnections, LeastConnectionsTable};
pub use named::{AnyStrategy, AnyTable, STRATEGY_NAMES};
pub use p2c::PowerOfTwoChoices;
pub use p2c_table::PowerOfTwoChoicesTable;
pub use queue::{QueueLayer, QueueStats};
pub use random::{AliasTable, Random};
pub use round_robin::{RoundRobin, RoundRobinTable};
pub use service::LoadBalance;
pub use sticky::{Sticky, StickyCookie, StickyCookieLayer, StickyStats};
pub use strategy::{Candidates, RequestRef, Strategy};
pub use tiered::{Tiered, TieredTable};
pub use weighted::{WeightedRoundRobin, WeightedTable};
