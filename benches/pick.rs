//! One pick per strategy, through the public `Balancer::pick_ref` (snapshot
//! load, strategy, the picked position; what `LoadBalance` does before the
//! one handle clone of the request): at 3, 100, 1,000 and 10,000 backends;
//! with a tenth of the backends ineligible; with an exclude set of one (a
//! retry); consistent hashing with bounded loads under held loads;
//! `Balancer::pick`, which also clones the backend's handle, at 3
//! and 10,000; two threads against one; and the cost of a backend-set
//! update. Every backend has been timed once, as in a running proxy.
//!
//! Run: `cargo bench --bench pick`

use std::convert::Infallible;
use std::future::{Ready, ready};
use std::hint::black_box;
use std::net::SocketAddr;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use futures_util::FutureExt;
use http::{Request, Response};
use http_body_util::Empty;
use tower::{Layer, Service};
use tower_lb::backend::{Backend, InFlight, Verdict};
use tower_lb::balance::{
    AnyStrategy, Balancer, ConsistentHash, RoundRobin, Tried, WeightedRoundRobin,
};
use tower_lb::{BackendSet, ClientAddr, LoadBalanceLayer};

const SIZES: [usize; 4] = [3, 100, 1_000, 10_000];
const STRATEGIES: [&str; 6] = [
    "round-robin",
    "weighted-round-robin",
    "least-connections",
    "ip-hash",
    "p2c",
    "random",
];

fn backends(n: usize) -> Vec<Backend> {
    (0..n)
        .map(|i| {
            let weight = 1 + (i % 4);
            format!(
                "http://10.{}.{}.{}:8080,weight={weight}",
                i / 65_536,
                (i / 256) % 256,
                i % 256
            )
            .parse()
            .unwrap()
        })
        .collect()
}

/// 1,024 requests from distinct client IPs (the hash key varies).
fn requests() -> Vec<Request<()>> {
    (0..1024u32)
        .map(|i| {
            let mut request = Request::new(());
            let addr = SocketAddr::from(((0xc633_6400 + i).to_be_bytes(), 40_000));
            request.extensions_mut().insert(ClientAddr::new(addr));
            request
        })
        .collect()
}

/// Answers 200 at once: lets `LoadBalance` time every backend.
#[derive(Clone, Copy)]
struct NoOp;

impl Service<Request<()>> for NoOp {
    type Response = Response<Empty<Bytes>>;
    type Error = Infallible;
    type Future = Ready<Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _request: Request<()>) -> Self::Future {
        ready(Ok(Response::new(Empty::new())))
    }
}

/// Sends one request to every backend through `LoadBalance`, so each has a
/// measured latency as in a running proxy (p2c compares those; a backend
/// never timed would take a shortcut).
fn time_every_backend(set: &BackendSet) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let _guard = runtime.enter();
    let mut service = LoadBalanceLayer::new(set.clone(), RoundRobin::new()).layer(NoOp);
    for _ in 0..set.snapshot().len() {
        let response = service.call(Request::new(())).now_or_never();
        drop(response.expect("the no-op stack answers at once"));
    }
    let timed = set
        .snapshot()
        .backends()
        .iter()
        .all(|b| b.state().latency().is_some());
    assert!(timed, "every backend has a latency");
}

fn balancer(name: &str, set: &BackendSet) -> Arc<Balancer<AnyStrategy>> {
    Balancer::new(set, name.parse().unwrap())
}

/// How a bench picks: the position only, or the handle too.
#[derive(Clone, Copy)]
enum Pick {
    Position,
    Handle,
}

fn pick_loop(
    c: &mut Criterion,
    group_name: &str,
    sizes: &[usize],
    how: Pick,
    prepare: impl Fn(&BackendSet, &mut [Request<()>]),
) {
    let mut group = c.benchmark_group(group_name);
    for &n in sizes {
        let set = BackendSet::new(backends(n));
        time_every_backend(&set);
        let mut requests = requests();
        prepare(&set, &mut requests);
        for name in STRATEGIES {
            let balancer = balancer(name, &set);
            let mut i = 0;
            group.bench_with_input(BenchmarkId::new(name, n), &n, |b, _| {
                b.iter(|| {
                    i = (i + 1) & 1023;
                    match how {
                        Pick::Position => {
                            black_box(balancer.pick_ref(&requests[i]).map(|p| p.index()));
                        }
                        Pick::Handle => {
                            black_box(balancer.pick(&requests[i]));
                        }
                    }
                })
            });
        }
    }
    group.finish();
}

fn pick(c: &mut Criterion) {
    pick_loop(c, "pick", &SIZES, Pick::Position, |_, _| {});
}

fn pick_and_clone(c: &mut Criterion) {
    pick_loop(c, "pick_and_clone", &[3, 10_000], Pick::Handle, |_, _| {});
}

fn pick_with_ineligible(c: &mut Criterion) {
    pick_loop(
        c,
        "pick_tenth_ineligible",
        &SIZES,
        Pick::Position,
        |set, _| {
            for backend in set.snapshot().backends().iter().skip(1).step_by(10) {
                backend.state().set_verdict(Verdict::Unhealthy, None);
            }
        },
    );
}

fn pick_retry(c: &mut Criterion) {
    pick_loop(
        c,
        "pick_retry_excluding_one",
        &SIZES,
        Pick::Position,
        |set, requests| {
            let snapshot = set.snapshot();
            for (i, request) in requests.iter_mut().enumerate() {
                let mut tried = Tried::new();
                tried.push(snapshot.backends()[i % snapshot.len()].id());
                request.extensions_mut().insert(tried);
            }
        },
    );
}

fn contention(c: &mut Criterion) {
    let mut group = c.benchmark_group("pick_threads");
    let set = BackendSet::new(backends(100));
    time_every_backend(&set);
    let requests = requests();
    let per_thread = [
        (
            "round-robin-per-thread",
            AnyStrategy::RoundRobin(RoundRobin::per_thread()),
        ),
        (
            "weighted-round-robin-per-thread",
            AnyStrategy::WeightedRoundRobin(WeightedRoundRobin::per_thread()),
        ),
    ];
    let all = STRATEGIES
        .iter()
        .map(|&name| (name, name.parse::<AnyStrategy>().unwrap()))
        .chain(per_thread);
    for (name, strategy) in all {
        let balancer = Balancer::new(&set, strategy);
        for threads in [1usize, 2] {
            group.throughput(Throughput::Elements(threads as u64));
            group.bench_with_input(BenchmarkId::new(name, threads), &threads, |b, &threads| {
                b.iter_custom(|iters| {
                    let start = Instant::now();
                    std::thread::scope(|scope| {
                        for t in 0..threads {
                            let balancer = &balancer;
                            let requests = &requests;
                            scope.spawn(move || {
                                for i in 0..iters as usize {
                                    let request = &requests[(i + t * 512) & 1023];
                                    black_box(balancer.pick_ref(request).map(|p| p.index()));
                                }
                            });
                        }
                    });
                    start.elapsed()
                })
            });
        }
    }
    group.finish();
}

/// Whole requests through `LoadBalance` over a no-op service (pick, one
/// handle clone, in-flight guard, latency sample, response body dropped),
/// one thread against two: what the request path writes that threads share
/// (reference counts, in-flight counts, latency estimates), not only what a
/// pick does.
fn request_contention(c: &mut Criterion) {
    let mut group = c.benchmark_group("request_threads");
    let set = BackendSet::new(backends(100));
    time_every_backend(&set);
    let strategies = [
        (
            "round-robin-per-thread",
            AnyStrategy::RoundRobin(RoundRobin::per_thread()),
        ),
        ("least-connections", "least-connections".parse().unwrap()),
        ("p2c", "p2c".parse().unwrap()),
        ("random", "random".parse().unwrap()),
        (
            "ip-hash-bounded",
            AnyStrategy::ConsistentHash(
                ConsistentHash::client_ip()
                    .with_balance_factor(1.25)
                    .unwrap(),
            ),
        ),
    ];
    for (name, strategy) in strategies {
        let layer = LoadBalanceLayer::new(set.clone(), strategy);
        for threads in [1usize, 2] {
            group.throughput(Throughput::Elements(threads as u64));
            group.bench_with_input(BenchmarkId::new(name, threads), &threads, |b, &threads| {
                b.iter_custom(|iters| {
                    let start = Instant::now();
                    std::thread::scope(|scope| {
                        for _ in 0..threads {
                            let mut service = layer.layer(NoOp);
                            scope.spawn(move || {
                                for _ in 0..iters {
                                    let response = service.call(Request::new(())).now_or_never();
                                    black_box(response);
                                }
                            });
                        }
                    });
                    start.elapsed()
                })
            });
        }
    }
    group.finish();
}

/// Consistent hashing with bounded loads (factor 1.25) beside plain
/// ip-hash, with loads held: every backend holds up to 7 requests at random
/// and one backend in ten is at twice that, so some keys meet a full backend
/// and take their spill path.
fn pick_bounded(c: &mut Criterion) {
    let mut group = c.benchmark_group("pick_bounded_load");
    for &n in &SIZES {
        let set = BackendSet::new(backends(n));
        time_every_backend(&set);
        let mut rng = fastrand::Rng::with_seed(14);
        let held: Vec<InFlight> = set
            .snapshot()
            .backends()
            .iter()
            .enumerate()
            .flat_map(|(i, b)| {
                let load = rng.usize(..8) * if i % 10 == 0 { 4 } else { 1 };
                (0..load)
                    .map(|_| InFlight::begin(b.clone()))
                    .collect::<Vec<_>>()
            })
            .collect();
        let requests = requests();
        let strategies = [
            ("ip-hash", "ip-hash".parse::<AnyStrategy>().unwrap()),
            (
                "ip-hash-bounded-1.25",
                AnyStrategy::ConsistentHash(
                    ConsistentHash::client_ip()
                        .with_balance_factor(1.25)
                        .unwrap(),
                ),
            ),
        ];
        for (name, strategy) in strategies {
            let balancer = Balancer::new(&set, strategy);
            let mut i = 0;
            group.bench_with_input(BenchmarkId::new(name, n), &n, |b, _| {
                b.iter(|| {
                    i = (i + 1) & 1023;
                    black_box(balancer.pick_ref(&requests[i]).map(|p| p.index()));
                })
            });
        }
        drop(held);
    }
    group.finish();
}

fn update(c: &mut Criterion) {
    let mut group = c.benchmark_group("set_update_10000");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(10));
    for name in STRATEGIES {
        let set = BackendSet::new(backends(10_000));
        let _balancer = balancer(name, &set);
        let extra: Backend = "http://192.0.2.1:8080".parse().unwrap();
        group.bench_function(name, |b| {
            b.iter(|| {
                set.insert(extra.clone());
                set.remove(extra.address());
            })
        });
    }
    group.finish();
}

criterion_group!(
    benches,
    pick,
    pick_and_clone,
    pick_with_ineligible,
    pick_retry,
    pick_bounded,
    contention,
    request_contention,
    update
);
criterion_main!(benches);
