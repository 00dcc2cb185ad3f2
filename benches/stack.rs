//! The layer stack around a no-op inner service, against the bare inner
//! service: what tower-lb adds per request on top of the forwarding itself.
//! Each step adds one layer, outer last: load balancing, passive health,
//! failover, metrics (the whole stack); and the traffic controls: the queue
//! over a limited balancer, sticky cookies over tiers, hedging between
//! failover and the balancer (answered at once: what a hedgeable request
//! pays when no hedge is sent).
//!
//! `stack_threads`: the full stack on one thread and on two, each thread
//! with its own clone of the stack (as each worker of the example proxy
//! has), over the same three backends; requests per second of two threads
//! against one. What the layers write that every thread writes too (a
//! shared counter, the reference count of a shared handle) shows here.
//!
//! `interface_floor`: four pass-through layers that do only what the
//! request type makes the full stack's four layers do (the URI pointed at a
//! backend, two extension entries, four reads, three wrapped bodies; see
//! `support/interface_floor.rs`): `bare` against it is what handing a
//! request through four layers costs at all, it against `full` what the
//! layers' own work costs.
//!
//! Run: `cargo bench --bench stack`

use std::convert::Infallible;
use std::future::{Ready, ready};
use std::hint::black_box;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{BatchSize, BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use futures_util::FutureExt;
use http::{Request, Response};
use http_body_util::Empty;
use prometheus_client::registry::Registry;
use tower::{Layer, Service, ServiceBuilder};
use tower_lb::balance::{QueueLayer, RoundRobin, Sticky, StickyCookie, StickyCookieLayer, Tiered};
use tower_lb::extensions::ReturnHead;
use tower_lb::failover::FailoverLayer;
use tower_lb::health::{OutlierDetection, PassiveHealthLayer};
use tower_lb::hedge::HedgeLayer;
use tower_lb::metrics::MetricsLayer;
use tower_lb::{BackendSet, ClientAddr, LoadBalanceLayer};

#[path = "support/interface_floor.rs"]
mod interface_floor;

/// Answers 200 at once: stands for the forwarding service.
#[derive(Clone, Copy)]
struct NoOp;

impl<B> Service<Request<B>> for NoOp {
    type Response = Response<Empty<Bytes>>;
    type Error = Infallible;
    type Future = Ready<Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    /// Answers at once, handing the request's extensions (and its head,
    /// when failover asks for it) back on the response as `Forward` does,
    /// so the layers above meet the answer the real path gives them. The
    /// marker is read, not taken, as `Forward` reads it: it goes back
    /// with the extensions and is answered in place (taking it out and
    /// answering with a new one made this stand-in pay a box, a map
    /// removal and an insertion that the real path does not).
    fn call(&mut self, request: Request<B>) -> Self::Future {
        let (mut parts, _) = request.into_parts();
        let asked = parts.extensions.get::<ReturnHead>().copied();
        let mut response = Response::new(Empty::new());
        *response.extensions_mut() = std::mem::take(&mut parts.extensions);
        if let Some(marker) = asked {
            marker.answer(&mut parts, &mut response);
        }
        ready(Ok(response))
    }
}

/// A request as a server hands it over: a few headers and the client's
/// address in the extensions.
fn request() -> Request<Empty<Bytes>> {
    let mut request = Request::get("/index.html?q=1")
        .header("host", "shop.example")
        .header("user-agent", "bench/1.0")
        .header("accept", "*/*")
        .body(Empty::new())
        .unwrap();
    request
        .extensions_mut()
        .insert(ClientAddr::new("192.0.2.1:40000".parse().unwrap()));
    request
}

/// Calls the service and drops the response (ending its body), as a server
/// does with a finished exchange.
fn exchange<S>(service: &mut S, request: Request<Empty<Bytes>>)
where
    S: Service<Request<Empty<Bytes>>>,
{
    match service.call(request).now_or_never() {
        Some(Ok(response)) => drop(black_box(response)),
        _ => panic!("the no-op stack answers at once"),
    }
}

fn set() -> BackendSet {
    BackendSet::new([
        "http://127.0.0.1:9001".parse().unwrap(),
        "http://127.0.0.1:9002".parse().unwrap(),
        "http://127.0.0.1:9003".parse().unwrap(),
    ])
}

fn bench<S>(
    c: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    name: &str,
    mut service: S,
) where
    S: Service<Request<Empty<Bytes>>>,
{
    c.bench_function(name, |b| {
        b.iter_batched(
            request,
            |r| exchange(&mut service, r),
            BatchSize::SmallInput,
        )
    });
}

fn stack(c: &mut Criterion) {
    // Layers that time things read tokio's clock; give them a runtime.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let _guard = runtime.enter();
    let mut group = c.benchmark_group("stack");
    let set = set();
    bench(&mut group, "bare", NoOp);
    bench(&mut group, "interface_floor", interface_floor::stack(NoOp));
    bench(
        &mut group,
        "load_balance",
        LoadBalanceLayer::new(set.clone(), RoundRobin::new()).layer(NoOp),
    );
    bench(
        &mut group,
        "load_balance+passive_health",
        ServiceBuilder::new()
            .layer(LoadBalanceLayer::new(set.clone(), RoundRobin::new()))
            .layer(PassiveHealthLayer::new(
                set.clone(),
                OutlierDetection::new(),
            ))
            .service(NoOp),
    );
    bench(
        &mut group,
        "failover+load_balance+passive_health",
        ServiceBuilder::new()
            .layer(FailoverLayer::new())
            .layer(LoadBalanceLayer::new(set.clone(), RoundRobin::new()))
            .layer(PassiveHealthLayer::new(
                set.clone(),
                OutlierDetection::new(),
            ))
            .service(NoOp),
    );
    // Hedging on a GET that answers at once: the head's copy, the slot for
    // the first backend, the timer; no hedge is sent.
    let failover = FailoverLayer::new();
    let hedge = HedgeLayer::new(Duration::from_millis(50))
        .unwrap()
        .with_failover(&failover);
    bench(
        &mut group,
        "failover+hedge+load_balance+passive_health",
        ServiceBuilder::new()
            .layer(failover)
            .layer(hedge.clone())
            .layer(LoadBalanceLayer::new(set.clone(), RoundRobin::new()))
            .layer(hedge.recorder())
            .layer(PassiveHealthLayer::new(
                set.clone(),
                OutlierDetection::new(),
            ))
            .service(NoOp),
    );
    // Limits on (never reached here) and the queue above: what a request
    // pays for the check for room while nothing waits.
    let limited = LoadBalanceLayer::new(set.clone(), RoundRobin::new()).max_in_flight(100);
    bench(
        &mut group,
        "queue+load_balance(max_in_flight)",
        ServiceBuilder::new()
            .layer(QueueLayer::new(&limited, 100, Duration::from_secs(1)))
            .layer(limited.clone())
            .service(NoOp),
    );
    // Sticky cookies over tiers: the cookie read per pick and per
    // response, the Set-Cookie on a request that has none (every request
    // here: the bench's requests carry no cookie, the worst case).
    let cookie = StickyCookie::new("srv").unwrap();
    bench(
        &mut group,
        "sticky+load_balance(tiered, sticky)",
        ServiceBuilder::new()
            .layer(StickyCookieLayer::new(&set, cookie.clone()))
            .layer(LoadBalanceLayer::new(
                set.clone(),
                Tiered::new(Sticky::new(cookie, RoundRobin::new())),
            ))
            .service(NoOp),
    );
    let mut registry = Registry::default();
    bench(
        &mut group,
        "full: metrics+failover+load_balance+passive_health",
        ServiceBuilder::new()
            .layer(MetricsLayer::new(&set, &mut registry))
            .layer(FailoverLayer::new())
            .layer(LoadBalanceLayer::new(set.clone(), RoundRobin::new()))
            .layer(PassiveHealthLayer::new(
                set.clone(),
                OutlierDetection::new(),
            ))
            .service(NoOp),
    );
    group.finish();
}

/// The full stack (as `full` above, round-robin per thread over the same
/// three backends), on one thread and on two.
fn stack_threads(c: &mut Criterion) {
    let set = set();
    let mut registry = Registry::default();
    let metrics = MetricsLayer::new(&set, &mut registry);
    let failover = FailoverLayer::new();
    let balance = LoadBalanceLayer::new(set.clone(), RoundRobin::per_thread());
    let passive = PassiveHealthLayer::new(set.clone(), OutlierDetection::new());
    let stack = || {
        ServiceBuilder::new()
            .layer(metrics.clone())
            .layer(failover.clone())
            .layer(balance.clone())
            .layer(passive.clone())
            .service(NoOp)
    };
    let mut group = c.benchmark_group("stack_threads");
    for threads in [1usize, 2] {
        group.throughput(Throughput::Elements(threads as u64));
        group.bench_with_input(
            BenchmarkId::new("full", threads),
            &threads,
            |b, &threads| {
                b.iter_custom(|iters| {
                    let start = Instant::now();
                    std::thread::scope(|scope| {
                        for _ in 0..threads {
                            let mut service = stack();
                            scope.spawn(move || {
                                // Layers that time things read tokio's clock.
                                let runtime = tokio::runtime::Builder::new_current_thread()
                                    .enable_all()
                                    .build()
                                    .unwrap();
                                let _guard = runtime.enter();
                                for _ in 0..iters {
                                    exchange(&mut service, request());
                                }
                            });
                        }
                    });
                    start.elapsed()
                })
            },
        );
    }
    group.finish();
}

criterion_group!(benches, stack, stack_threads);
criterion_main!(benches);
