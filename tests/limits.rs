//! The per-backend concurrency limit is exact: threads racing for a
//! backend's last slot never put it above its limit, in any strategy.
//!
//! No sockets: what is under test is the claim `LoadBalance` makes on a
//! backend's in-flight count, so the inner service is a no-op that holds
//! each request for a moment and counts, per backend, how many it holds at
//! once. That count is the one the limit promises to bound (it rises after
//! the balancer's claim and falls before the claim's release).

use std::convert::Infallible;
use std::future::{Future, Ready, ready};
use std::pin::pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering::SeqCst};
use std::task::{Context, Poll, Waker};

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Empty;
use tower::{Layer, Service};
use tower_lb::balance::{AnyStrategy, STRATEGY_NAMES, Target};
use tower_lb::{BackendSet, LoadBalanceLayer};

/// Weights of the backends: a limit of `LIMIT` per unit of weight gives
/// them 1, 2 and 1 slots, fewer than the threads.
const WEIGHTS: [u32; 3] = [1, 2, 1];
const LIMIT: u32 = 1;
/// More threads than slots on any backend, on whatever cores there are:
/// a thread preempted between the pick and the count is the race.
const THREADS: usize = 8;
const REQUESTS_PER_THREAD: usize = 20_000;

/// Per backend (by port): requests held now, the most held at once, and
/// requests served.
struct Held {
    now: Vec<AtomicU32>,
    most: Vec<AtomicU32>,
    served: Vec<AtomicU64>,
    first_port: u16,
}

impl Held {
    fn new(first_port: u16) -> Self {
        let counters = || (0..WEIGHTS.len()).map(|_| AtomicU32::new(0)).collect();
        Self {
            now: counters(),
            most: counters(),
            served: (0..WEIGHTS.len()).map(|_| AtomicU64::new(0)).collect(),
            first_port,
        }
    }
}

/// Holds each request for a few yields, counting it while it does.
#[derive(Clone)]
struct Hold(Arc<Held>);

impl Service<Request<()>> for Hold {
    type Response = Response<Empty<Bytes>>;
    type Error = Infallible;
    type Future = Ready<Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<()>) -> Self::Future {
        let held = &self.0;
        let port = request
            .extensions()
            .get::<Target>()
            .and_then(|target| target.backend().address().authority().port_u16());
        let Some(index) = port.map(|port| usize::from(port - held.first_port)) else {
            panic!("the balancer sent a request without its target");
        };
        let now = held.now[index].fetch_add(1, SeqCst) + 1;
        held.most[index].fetch_max(now, SeqCst);
        held.served[index].fetch_add(1, SeqCst);
        for _ in 0..4 {
            std::thread::yield_now();
        }
        held.now[index].fetch_sub(1, SeqCst);
        ready(Ok(Response::new(Empty::new())))
    }
}

/// Polls a future that is ready at once (the no-op stack's).
fn now<F: Future>(future: F) -> F::Output {
    let mut future = pin!(future);
    match future
        .as_mut()
        .poll(&mut Context::from_waker(Waker::noop()))
    {
        Poll::Ready(output) => output,
        Poll::Pending => panic!("the no-op stack answers at once"),
    }
}

#[test]
fn racing_threads_never_put_a_backend_above_its_limit() {
    const FIRST_PORT: u16 = 9101;
    // Every strategy runs before the verdict, so that a failure names all
    // that overshoot.
    let mut overshoots = Vec::new();
    for name in STRATEGY_NAMES {
        let backends = WEIGHTS.iter().enumerate().map(|(i, weight)| {
            let port = FIRST_PORT + i as u16;
            format!("http://127.0.0.1:{port},weight={weight}")
                .parse()
                .unwrap()
        });
        let set = BackendSet::new(backends);
        let strategy: AnyStrategy = name.parse().unwrap();
        let layer = LoadBalanceLayer::new(set.clone(), strategy).max_in_flight(LIMIT);
        let held = Arc::new(Held::new(FIRST_PORT));
        let refused = AtomicU64::new(0);
        std::thread::scope(|scope| {
            for _ in 0..THREADS {
                let mut service = layer.layer(Hold(Arc::clone(&held)));
                let refused = &refused;
                scope.spawn(move || {
                    for _ in 0..REQUESTS_PER_THREAD {
                        let response = now(service.call(Request::new(()))).unwrap();
                        if response.status() == 503 {
                            refused.fetch_add(1, SeqCst);
                        }
                    }
                });
            }
        });
        let most: Vec<u32> = held.most.iter().map(|m| m.load(SeqCst)).collect();
        let served: Vec<u64> = held.served.iter().map(|s| s.load(SeqCst)).collect();
        let slots: Vec<u32> = WEIGHTS.iter().map(|w| w * LIMIT).collect();
        if most.iter().zip(&slots).any(|(most, slots)| most > slots) {
            overshoots.push(format!(
                "{name}: most held at once {most:?}, limits {slots:?}, served {served:?}"
            ));
        }
        // Every request was either served or refused, the limit was
        // reached (the race was on), and every slot count came back to 0.
        let refused = refused.load(SeqCst);
        assert_eq!(
            served.iter().sum::<u64>() + refused,
            (THREADS * REQUESTS_PER_THREAD) as u64,
            "{name}"
        );
        assert!(refused > 0, "{name}: the backends were never all full");
        assert!(
            most.iter().zip(&slots).any(|(most, slots)| most >= slots),
            "{name}: no backend reached its limit ({most:?})"
        );
        for backend in set.snapshot().backends() {
            assert_eq!(backend.state().in_flight(), 0, "{name}: {backend}");
        }
    }
    assert!(
        overshoots.is_empty(),
        "above the limit:\n{}",
        overshoots.join("\n")
    );
}
