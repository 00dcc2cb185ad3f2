//! Discovery sources: the systems that hold the backend list, each a
//! [`Discover`](tower::discover::Discover) stream that a
//! [`BackendSet`](crate::BackendSet) follows.
//!
//! - `Dns` (feature `dns`, on hickory-resolver): the A/AAAA records of a
//!   name on a port (a Kubernetes headless service), or SRV records
//!   (Consul's DNS interface), looked up again when the answer's TTL runs
//!   out.
//! - `Etcd` (feature `etcd`, on etcd-client): every key under a prefix is
//!   one backend, its value written as on the example proxy's command line
//!   (`http://10.0.0.1:8000,weight=2`); read, then watched.
//!
//! Sources never end and never fail: a DNS server that does not answer or
//! an etcd that went away leaves the set as it was (logged), and the
//! source tries again with back-off. Several sources may feed one set
//! ([`BackendSet::follow_source`](crate::BackendSet::follow_source)): the
//! set's membership is their union, and each source owns its keys.
//! Backends a source adds join as any added backend does: probed by the
//! active health check from their first appearance, slow-started; those it
//! drops drain.
//!
//! Why each source is a stream of changes rather than a list the set polls:
//! the set already applies `Discover` streams (a reloaded file is one), in
//! bursts published once, and a stream is what tower users write for their
//! own registries.

#[cfg(any(feature = "dns", feature = "etcd"))]
mod backoff;
#[cfg(feature = "dns")]
mod dns;
#[cfg(feature = "etcd")]
mod etcd;
#[cfg(any(feature = "dns", feature = "etcd"))]
mod listing;

#[cfg(feature = "dns")]
pub use dns::{DEFAULT_MAX_TTL, DEFAULT_MIN_TTL, Dns, DnsDiscover};
#[cfg(feature = "etcd")]
pub use etcd::{Etcd, EtcdDiscover};
