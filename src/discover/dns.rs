//! Backends from DNS: the A/AAAA records of a name on a port, or the SRV
//! records of a service (feature `dns`, on hickory-resolver).

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::stream::{BoxStream, Stream, StreamExt};
use hickory_resolver::TokioResolver;
use hickory_resolver::config::{
    LookupIpStrategy, NameServerConfig, ResolveHosts, ResolverConfig, ResolverOpts,
};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::net::{DnsError, NetError, NoRecords};
use hickory_resolver::proto::rr::{Name, RData};
use tower::discover::Change;

use self::poller::{Answer, BoxFuture, Poller};
use crate::backend::{Address, MAX_WEIGHT};
use crate::{Backend, BoxError, ConfigError};

/// The default lower bound of the re-resolve interval: an answer with a
/// TTL of 0 must not become a query loop.
pub const DEFAULT_MIN_TTL: Duration = Duration::from_secs(1);
/// The default upper bound: a record published with a TTL of a day is
/// still looked at again within five minutes, so a change reaches the
/// proxy even when its operator forgot to lower the TTL first.
pub const DEFAULT_MAX_TTL: Duration = Duration::from_secs(300);

/// What to look up, and where.
///
/// ```no_run
/// use std::time::Duration;
/// use tower_lb::BackendSet;
/// use tower_lb::discover::Dns;
///
/// # async fn run() -> Result<(), tower_lb::ConfigError> {
/// let set = BackendSet::default();
/// // Every A/AAAA record of the name, on port 8000 (a Kubernetes headless service).
/// let pods = Dns::a("web.default.svc.cluster.local", 8000).discover()?;
/// // The SRV records of a service, at a DNS server of our choosing (Consul).
/// let consul = Dns::srv("_web._tcp.service.consul")
///     .server("127.0.0.1:8600".parse().unwrap())
///     .ttl_bounds(Duration::from_secs(1), Duration::from_secs(30))
///     .discover()?;
/// let (a, b) = (set.clone(), set.clone());
/// tokio::spawn(async move { a.follow_source("dns:web", pods).await });
/// tokio::spawn(async move { b.follow_source("srv:web", consul).await });
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
#[must_use]
pub struct Dns {
    query: Query,
    server: Option<SocketAddr>,
    min_ttl: Duration,
    max_ttl: Duration,
    timeout: Duration,
}

#[derive(Clone, Debug)]
enum Query {
    Host { host: String, port: u16 },
    Srv { name: String },
}

impl Dns {
    /// The A and AAAA records of `host`, each a backend on `port` (weight 1).
    pub fn a(host: impl Into<String>, port: u16) -> Self {
        Self::new(Query::Host {
            host: host.into(),
            port,
        })
    }

    /// The SRV records of `name` (such as `_http._tcp.web.example`): each
    /// target's addresses on the record's port, with the record's weight
    /// (0 counts as 1, as it must still get some traffic). SRV priority
    /// becomes the backend's [priority tier](crate::Backend::with_priority):
    /// the lowest priority present is tier 0, the next tier 1, and so on, so
    /// backups take traffic only as the primaries' tier loses healthy
    /// members (see [`Tiered`](crate::balance::Tiered)). A target listed at
    /// several priorities is kept at the lowest.
    pub fn srv(name: impl Into<String>) -> Self {
        Self::new(Query::Srv { name: name.into() })
    }

    fn new(query: Query) -> Self {
        Self {
            query,
            server: None,
            min_ttl: DEFAULT_MIN_TTL,
            max_ttl: DEFAULT_MAX_TTL,
            timeout: Duration::from_secs(2),
        }
    }

    /// Asks this DNS server (UDP, and TCP for long answers) instead of the
    /// system's resolver configuration (`/etc/resolv.conf`). Its answers
    /// are taken as they are: no hosts file, no search domains.
    pub fn server(mut self, server: SocketAddr) -> Self {
        self.server = Some(server);
        self
    }

    /// Bounds on the time between lookups, which is otherwise the answer's
    /// TTL (an empty answer's negative TTL). Defaults [`DEFAULT_MIN_TTL`]
    /// and [`DEFAULT_MAX_TTL`].
    pub fn ttl_bounds(mut self, min: Duration, max: Duration) -> Self {
        self.min_ttl = min;
        self.max_ttl = max.max(min);
        self
    }

    /// How long one query may take before it counts as a failure.
    /// Default 2 s.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The label status views show for backends from this source:
    /// `dns:HOST:PORT` or `srv:NAME`, as the example proxy's flag reads.
    pub fn label(&self) -> String {
        match &self.query {
            Query::Host { host, port } => format!("dns:{host}:{port}"),
            Query::Srv { name } => format!("srv:{name}"),
        }
    }

    /// The source: a [`Discover`](tower::discover::Discover) stream of the
    /// changes between answers, to [`follow`](crate::BackendSet::follow_source).
    ///
    /// It looks up at once, then again when the answer's TTL runs out
    /// (within the bounds). An answer with no records (NXDOMAIN, or no
    /// record of the type) withdraws every backend this source listed. A
    /// failed lookup (timeout, refusal, a server that is down) is logged
    /// and changes nothing: the last good answer stays, and the lookup is
    /// tried again after a back-off of 1 s doubling to 30 s.
    ///
    /// # Errors
    ///
    /// A name that is not a DNS name, or (without [`server`](Self::server))
    /// a system resolver configuration that cannot be read.
    pub fn discover(self) -> Result<DnsDiscover, ConfigError> {
        let label = self.label();
        let bad = |why: String| ConfigError::new(format!("{label}: {why}"));
        let target = match &self.query {
            Query::Host { host, .. } => host,
            Query::Srv { name } => name,
        };
        Name::from_str_relaxed(target).map_err(|e| bad(format!("not a DNS name: {e}")))?;
        let resolver = self.resolver().map_err(|e| bad(e.to_string()))?;
        let resolve = {
            let query = self.query.clone();
            move || -> BoxFuture<Result<Answer, BoxError>> {
                let (resolver, query) = (resolver.clone(), query.clone());
                Box::pin(async move { lookup(&resolver, &query).await })
            }
        };
        let poller = Poller::new(resolve, Arc::from(label.as_str()), self.bounds());
        Ok(DnsDiscover {
            label,
            changes: poller.into_stream(),
        })
    }

    fn bounds(&self) -> (Duration, Duration) {
        (self.min_ttl, self.max_ttl)
    }

    fn resolver(&self) -> Result<TokioResolver, NetError> {
        let mut builder = match self.server {
            Some(server) => {
                let mut name_server = NameServerConfig::udp_and_tcp(server.ip());
                for connection in &mut name_server.connections {
                    connection.port = server.port();
                }
                TokioResolver::builder_with_config(
                    ResolverConfig::from_name_servers(vec![name_server]),
                    TokioRuntimeProvider::default(),
                )
            }
            None => TokioResolver::builder_tokio()?,
        };
        let options: &mut ResolverOpts = builder.options_mut();
        // We schedule lookups by TTL ourselves; a cache would answer the
        // max-bound lookup of a long-TTL record from memory.
        options.cache_size = 0;
        options.ip_strategy = LookupIpStrategy::Ipv4AndIpv6;
        options.timeout = self.timeout;
        options.attempts = 1;
        if self.server.is_some() {
            options.use_hosts_file = ResolveHosts::Never;
        }
        builder.build()
    }
}

/// The changes of one DNS source: a [`Discover`](tower::discover::Discover)
/// stream keyed by backend address, that never ends and never fails
/// (failures are logged; the last good answer stays). Made by
/// [`Dns::discover`].
pub struct DnsDiscover {
    label: String,
    changes: BoxStream<'static, Change<Address, Backend>>,
}

impl DnsDiscover {
    /// The source's label (see [`Dns::label`]).
    pub fn label(&self) -> &str {
        &self.label
    }
}

impl Stream for DnsDiscover {
    type Item = Result<Change<Address, Backend>, Infallible>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.changes
            .poll_next_unpin(cx)
            .map(|change| change.map(Ok))
    }
}

impl fmt::Debug for DnsDiscover {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DnsDiscover")
            .field("label", &self.label)
            .finish_non_exhaustive()
    }
}

async fn lookup(resolver: &TokioResolver, query: &Query) -> Result<Answer, BoxError> {
    match query {
        Query::Host { host, port } => match addresses(resolver, host).await? {
            Found::Records(ips, ttl) => Ok(Answer {
                backends: ips
                    .into_iter()
                    .map(|ip| backend(SocketAddr::new(ip, *port), 1))
                    .collect::<Result<_, _>>()?,
                ttl,
            }),
            Found::Nothing(ttl) => Ok(Answer {
                backends: Vec::new(),
                ttl,
            }),
        },
        Query::Srv { name } => services(resolver, name).await,
    }
}

/// A lookup's outcome that is not a failure.
enum Found<T> {
    Records(T, u32),
    /// No such name, or no record of the type: the negative TTL, if the
    /// answer had one.
    Nothing(u32),
}

async fn addresses(resolver: &TokioResolver, host: &str) -> Result<Found<Vec<IpAddr>>, NetError> {
    match resolver.lookup_ip(host).await {
        Ok(lookup) => {
            let ttl = min_ttl(lookup.as_lookup().answers().iter().map(|r| r.ttl));
            let ips: Vec<IpAddr> = lookup.iter().collect();
            Ok(Found::Records(ips, ttl))
        }
        Err(error) => no_records(error).map(Found::Nothing),
    }
}

async fn services(resolver: &TokioResolver, name: &str) -> Result<Answer, BoxError> {
    let lookup = match resolver.srv_lookup(name).await {
        Ok(lookup) => lookup,
        Err(error) => {
            return Ok(Answer {
                backends: Vec::new(),
                ttl: no_records(error)?,
            });
        }
    };
    let records: Vec<Service> = lookup
        .answers()
        .iter()
        .filter_map(|record| match &record.data {
            RData::SRV(srv) => Some(Service {
                priority: srv.priority,
                weight: srv.weight,
                port: srv.port,
                target: srv.target.clone(),
                ttl: record.ttl,
            }),
            _ => None,
        })
        .collect();
    let chosen = tiered(&records);
    let mut ttl = min_ttl(chosen.iter().map(|(s, _)| s.ttl));
    let mut targets: BTreeMap<&Name, Vec<IpAddr>> = BTreeMap::new();
    for (service, _) in &chosen {
        if targets.contains_key(&service.target) {
            continue;
        }
        let ips = match addresses(resolver, &service.target.to_ascii()).await? {
            Found::Records(ips, target_ttl) => {
                ttl = ttl.min(target_ttl);
                ips
            }
            Found::Nothing(_) => {
                tracing::debug!(target = %service.target, "SRV target has no address; skipped");
                Vec::new()
            }
        };
        targets.insert(&service.target, ips);
    }
    // Per address: its tier (the lowest it is listed at) and the sum of
    // its weights in that tier.
    let mut weights: BTreeMap<SocketAddr, (u8, u32)> = BTreeMap::new();
    for (service, tier) in &chosen {
        for ip in targets.get(&service.target).into_iter().flatten() {
            let entry = weights
                .entry(SocketAddr::new(*ip, service.port))
                .or_insert((*tier, 0));
            if *tier < entry.0 {
                *entry = (*tier, 0);
            }
            if *tier == entry.0 {
                entry.1 = entry.1.saturating_add(u32::from(service.weight.max(1)));
            }
        }
    }
    let backends = weights
        .into_iter()
        .map(|(addr, (tier, weight))| {
            backend(addr, weight.min(MAX_WEIGHT)).map(|b| b.with_priority(tier))
        })
        .collect::<Result<_, _>>()?;
    Ok(Answer { backends, ttl })
}

#[derive(Debug, Clone)]
struct Service {
    priority: u16,
    weight: u16,
    port: u16,
    target: Name,
    ttl: u32,
}

/// The records with their tier: the rank of their priority among the
/// priorities present (0 for the lowest; past 255, 255), without the "no
/// service" target (`.`).
fn tiered(records: &[Service]) -> Vec<(Service, u8)> {
    let usable = records.iter().filter(|s| !s.target.is_root());
    let mut priorities: Vec<u16> = usable.clone().map(|s| s.priority).collect();
    priorities.sort_unstable();
    priorities.dedup();
    usable
        .map(|s| {
            let rank = priorities.partition_point(|&p| p < s.priority);
            (s.clone(), u8::try_from(rank).unwrap_or(u8::MAX))
        })
        .collect()
}

/// An empty answer is an answer (the source lists nothing: its negative
/// TTL, 0 without one); any other error is a failure (the last answer
/// stays).
fn no_records(error: NetError) -> Result<u32, NetError> {
    match error {
        NetError::Dns(DnsError::NoRecordsFound(NoRecords { negative_ttl, .. })) => {
            Ok(negative_ttl.unwrap_or(0))
        }
        other => Err(other),
    }
}

fn min_ttl(ttls: impl Iterator<Item = u32>) -> u32 {
    ttls.min().unwrap_or(0)
}

fn backend(addr: SocketAddr, weight: u32) -> Result<Backend, ConfigError> {
    Backend::weighted(format!("http://{addr}").parse()?, weight)
}

mod poller;
#[cfg(test)]
mod tests;
