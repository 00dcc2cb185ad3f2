//! One run: a scenario, a strategy, with or without the health layers, in
//! tokio's paused clock.
//!
//! The stack is the crate's own, as an application builds it: `Failover`
//! over `LoadBalance` over `PassiveHealth` over the simulated backends
//! (where `Forward` would be), on a `BackendSet` with slow start. Nothing of
//! the crate is replaced: the strategies read the same in-flight counts and
//! latency estimates, the health layer ejects through the same atomics, the
//! ejection ends in a task sleeping in the same clock.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response};
use http_body::Body;
use http_body_util::{BodyExt, Empty};
use tokio::time::Instant;
use tower::{Layer, Service, ServiceBuilder, ServiceExt};
use tower_lb::balance::{AnyStrategy, STRATEGY_NAMES};
use tower_lb::failover::{Attempts, FailoverLayer};
use tower_lb::health::{OutlierDetection, PassiveHealthLayer};
use tower_lb::{Backend, BackendSet, ClientAddr, LoadBalanceLayer};

use super::backends::{self, Backends};
use super::load::Arrival;
use super::scenario::Scenario;

/// The strategies every scenario runs, by the names operators use: every
/// built-in one (`hash` is `ip-hash` until given another key).
pub fn strategies() -> Vec<&'static str> {
    STRATEGY_NAMES
        .iter()
        .copied()
        .filter(|&name| name != "hash")
        .collect()
}

/// The slow-start window of guarded runs.
pub const SLOW_START: Duration = Duration::from_secs(10);

/// The first ejection's length in guarded runs: the default 30 s would
/// outlast a 30 s run, so no return would be seen. The rest of
/// [`OutlierDetection`] and all of [`FailoverLayer`] are the defaults.
pub const BASE_EJECTION: Duration = Duration::from_secs(10);

/// Which layers run around the balancer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Layers {
    /// `LoadBalance` alone.
    Bare,
    /// `Failover` (defaults: 2 retries, budget 20 % + 10/s) over
    /// `LoadBalance` over `PassiveHealth` (defaults, but a 10 s first
    /// ejection), the set slow-starting new and returning backends over 10 s.
    Guarded,
}

impl Layers {
    /// Both, in the table's order.
    pub const ALL: [Layers; 2] = [Layers::Bare, Layers::Guarded];

    /// The table's name for it.
    pub fn name(self) -> &'static str {
        match self {
            Layers::Bare => "alone",
            Layers::Guarded => "health+failover",
        }
    }
}

/// What one run measured.
#[derive(Clone, Debug)]
pub struct Outcome {
    /// The scenario's name.
    pub scenario: &'static str,
    /// The strategy's name.
    pub strategy: &'static str,
    /// The layers.
    pub layers: Layers,
    /// Every request's latency (sent to the end of its response body),
    /// sorted.
    pub latencies: Vec<Duration>,
    /// Requests that did not end in a 2xx with a whole body.
    pub errors: usize,
    /// Retries failover sent.
    pub retries: u64,
    /// Tries each backend got (retries included).
    pub tries: Vec<u64>,
    /// Tries each backend got in each second.
    pub tries_per_second: Vec<Vec<u32>>,
    /// Ejections by passive health, over all backends.
    pub ejections: u64,
}

impl Outcome {
    /// The `q` quantile (0 to 1) of latency, nearest rank.
    pub fn percentile(&self, q: f64) -> Duration {
        let n = self.latencies.len();
        if n == 0 {
            return Duration::ZERO;
        }
        let rank = ((q * n as f64).ceil() as usize).clamp(1, n);
        self.latencies[rank - 1]
    }

    /// The share of requests that failed.
    pub fn error_rate(&self) -> f64 {
        self.errors as f64 / self.latencies.len().max(1) as f64
    }

    /// Each backend's share of the tries.
    pub fn shares(&self) -> Vec<f64> {
        let total: u64 = self.tries.iter().sum();
        self.tries
            .iter()
            .map(|&t| t as f64 / total.max(1) as f64)
            .collect()
    }
}

/// Runs `scenario` with `strategy` and `layers` in a fresh paused runtime
/// of its own; the same arguments give the same outcome.
pub fn run(
    scenario: &Scenario,
    strategy: &'static str,
    layers: Layers,
    seed: u64,
) -> Result<Outcome, String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .map_err(|e| format!("runtime: {e}"))?;
    runtime.block_on(run_in(scenario, strategy, layers, seed))
}

async fn run_in(
    scenario: &Scenario,
    strategy: &'static str,
    layers: Layers,
    seed: u64,
) -> Result<Outcome, String> {
    // The crate draws from the thread's fastrand generator (random picks,
    // p2c's pair, least-connections' ties): seeded, those repeat too.
    fastrand::seed(seed);
    let parsed: AnyStrategy = strategy.parse().map_err(|e| format!("{e}"))?;
    let start = Instant::now();
    let mut members = Vec::new();
    let mut later = Vec::new();
    for (i, model) in scenario.backends.iter().enumerate() {
        let backend = Backend::weighted(
            backends::address(i).parse().map_err(|e| format!("{e}"))?,
            model.weight,
        )
        .map_err(|e| format!("{e}"))?;
        match model.joins_at {
            None => members.push(backend),
            Some(at) => later.push((at, backend)),
        }
    }
    let mut set = BackendSet::new(members);
    if layers == Layers::Guarded {
        set = set.with_slow_start(SLOW_START);
    }
    for (at, backend) in later {
        let set = set.clone();
        tokio::spawn(async move {
            tokio::time::sleep_until(start + at).await;
            set.insert(backend);
        });
    }
    let backends = Backends::new(&scenario.backends, start, scenario.timeout);
    let arrivals = scenario.load.arrivals(scenario.duration, seed);
    let balance = LoadBalanceLayer::new(set.clone(), parsed);
    let records = match layers {
        Layers::Bare => drive(balance.layer(backends.clone()), &arrivals, start).await,
        Layers::Guarded => {
            let detection = OutlierDetection::new().base_ejection(BASE_EJECTION);
            let service = ServiceBuilder::new()
                .layer(FailoverLayer::new())
                .layer(balance)
                .layer(PassiveHealthLayer::new(set.clone(), detection))
                .service(backends.clone());
            drive(service, &arrivals, start).await
        }
    }?;
    let mut latencies: Vec<Duration> = records.iter().map(|r| r.latency).collect();
    latencies.sort_unstable();
    Ok(Outcome {
        scenario: scenario.name,
        strategy,
        layers,
        latencies,
        errors: records.iter().filter(|r| !r.ok).count(),
        retries: records.iter().map(|r| u64::from(r.retries)).sum(),
        tries: backends.tries(),
        tries_per_second: backends.tries_per_second(),
        ejections: set
            .snapshot()
            .backends()
            .iter()
            .map(|b| b.state().ejections_total())
            .sum(),
    })
}

/// What one request saw.
struct Record {
    latency: Duration,
    ok: bool,
    retries: u32,
}

/// Sends every arrival at its time, each from a task of its own, as
/// concurrent clients do, and waits for all the answers.
async fn drive<S, RB>(
    service: S,
    arrivals: &[Arrival],
    start: Instant,
) -> Result<Vec<Record>, String>
where
    S: Service<Request<Empty<Bytes>>, Response = Response<RB>> + Clone + Send + 'static,
    S::Future: Send,
    S::Error: Send,
    RB: Body + Send + 'static,
    RB::Data: Send,
    RB::Error: Send,
{
    let mut answers = Vec::with_capacity(arrivals.len());
    for arrival in arrivals {
        let at = start + Duration::from_secs_f64(arrival.at);
        if at > Instant::now() {
            tokio::time::sleep_until(at).await;
        }
        let request = request(arrival)?;
        let service = service.clone();
        answers.push(tokio::spawn(async move {
            let sent = Instant::now();
            let (ok, retries) = match service.oneshot(request).await {
                Ok(response) => {
                    let status = response.status();
                    let retries = response
                        .extensions()
                        .get::<Attempts>()
                        .map_or(0, Attempts::retries);
                    let whole = response.into_body().collect().await.is_ok();
                    (status.is_success() && whole, retries)
                }
                Err(_) => (false, 0),
            };
            Record {
                latency: sent.elapsed(),
                ok,
                retries,
            }
        }));
    }
    let mut records = Vec::with_capacity(answers.len());
    for answer in answers {
        records.push(
            answer
                .await
                .map_err(|e| format!("a client task failed: {e}"))?,
        );
    }
    Ok(records)
}

/// The request of `arrival`: a GET, or a POST for an upload (failover never
/// sends a POST twice), from its client's address, carrying its draws.
fn request(arrival: &Arrival) -> Result<Request<Empty<Bytes>>, String> {
    let method = if arrival.upload {
        Method::POST
    } else {
        Method::GET
    };
    let mut request = Request::builder()
        .method(method)
        .uri("/")
        .header("host", "app.example")
        .body(Empty::new())
        .map_err(|e| format!("{e}"))?;
    let [a, b] = (arrival.client as u16).to_be_bytes();
    let ip = IpAddr::V4(Ipv4Addr::new(10, 1, a, b));
    let extensions = request.extensions_mut();
    extensions.insert(ClientAddr::new(SocketAddr::new(ip, 40_000)));
    extensions.insert(arrival.job);
    Ok(request)
}
