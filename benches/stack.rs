//! The layer stack around a no-op inner service, against the bare inner
//! service: what tower-lb adds per request on top of the forwarding itself.
//!
//! Run: `cargo bench --bench stack`

use std::convert::Infallible;
use std::future::{Ready, ready};
use std::hint::black_box;
use std::task::{Context, Poll};

use bytes::Bytes;
use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use futures_util::FutureExt;
use http::{Request, Response};
use http_body_util::Empty;
use tower::{Layer, Service};
use tower_lb::balance::RoundRobin;
use tower_lb::{BackendSet, LoadBalanceLayer};

/// Answers 200 at once: stands for the forwarding service.
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

fn request() -> Request<()> {
    Request::get("/index.html")
        .header("host", "shop.example")
        .body(())
        .unwrap()
}

fn call<S: Service<Request<()>>>(service: &mut S, request: Request<()>) -> S::Response {
    match service.call(request).now_or_never() {
        Some(Ok(response)) => response,
        _ => panic!("the no-op stack answers at once"),
    }
}

fn stack(c: &mut Criterion) {
    let mut group = c.benchmark_group("stack");
    group.bench_function("bare", |b| {
        let mut service = NoOp;
        b.iter_batched(
            request,
            |r| black_box(call(&mut service, r)),
            BatchSize::SmallInput,
        )
    });
    let set = BackendSet::new([
        "http://127.0.0.1:9001".parse().unwrap(),
        "http://127.0.0.1:9002".parse().unwrap(),
        "http://127.0.0.1:9003".parse().unwrap(),
    ]);
    group.bench_function("load_balance", |b| {
        let mut service = LoadBalanceLayer::new(set.clone(), RoundRobin::new()).layer(NoOp);
        b.iter_batched(
            request,
            |r| black_box(call(&mut service, r)),
            BatchSize::SmallInput,
        )
    });
    group.finish();
}

criterion_group!(benches, stack);
criterion_main!(benches);
