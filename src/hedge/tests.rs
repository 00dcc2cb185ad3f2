//! The race on tokio's paused clock, over a balancer and a fake backend
//! service that answers by port.

use std::convert::Infallible;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Empty, Full};
use tokio::time::Instant;
use tower::{Layer, Service, ServiceExt, service_fn};

use super::{HedgeLayer, RequestBody};
use crate::balance::{ConsistentHash, RoundRobin, Strategy};
use crate::failover::{FailoverLayer, RetryBudget};
use crate::{BackendSet, LoadBalanceLayer, Target};

/// Port 1 answers after 300 ms, port 3 answers 502 after 5 ms, any other
/// 200 after 10 ms.
async fn answer<B>(request: Request<RequestBody<B>>) -> Result<Response<Full<Bytes>>, Infallible> {
    let port = request.uri().port_u16();
    let (delay, status) = match port {
        Some(1) => (300, StatusCode::OK),
        Some(3) => (5, StatusCode::BAD_GATEWAY),
        _ => (10, StatusCode::OK),
    };
    tokio::time::sleep(Duration::from_millis(delay)).await;
    let mut response = Response::new(Full::new(Bytes::from(format!("{port:?}"))));
    *response.status_mut() = status;
    Ok(response)
}

fn set(ports: &[u16]) -> BackendSet {
    BackendSet::new(
        ports
            .iter()
            .map(|port| format!("http://127.0.0.1:{port}").parse().unwrap()),
    )
}

/// Hedge over a balancer over `ports`, the recorder below it.
fn stack<St: Strategy>(
    hedge: &HedgeLayer,
    set: &BackendSet,
    strategy: St,
) -> impl Service<
    Request<Empty<Bytes>>,
    Response = Response<impl http_body::Body<Data = Bytes, Error: std::fmt::Debug>>,
    Error = Infallible,
> + Clone {
    hedge.layer(
        LoadBalanceLayer::new(set, strategy).layer(hedge.recorder().layer(service_fn(answer))),
    )
}

/// One GET through a fresh stack with round-robin.
async fn once(
    hedge: &HedgeLayer,
    set: &BackendSet,
) -> Response<impl http_body::Body<Data = Bytes, Error: std::fmt::Debug>> {
    stack(hedge, set, RoundRobin::new())
        .oneshot(Request::new(Empty::new()))
        .await
        .unwrap()
}

fn port<B>(response: &Response<B>) -> Option<u16> {
    let target = response.extensions().get::<Target>()?;
    target.backend().address().authority().port_u16()
}

fn in_flight(set: &BackendSet) -> Vec<u32> {
    set.snapshot()
        .backends()
        .iter()
        .map(|b| b.state().in_flight())
        .collect()
}

fn hedge(ms: u64) -> HedgeLayer {
    HedgeLayer::new(Duration::from_millis(ms)).unwrap()
}

#[tokio::test(start_paused = true)]
async fn a_slow_first_attempt_is_hedged_elsewhere_and_the_hedge_wins() {
    let hedge = hedge(50);
    let set = set(&[1, 2]);
    // Round-robin sends the first attempt to port 1, the slow one.
    let started = Instant::now();
    let response = once(&hedge, &set).await;
    assert_eq!(response.status(), 200);
    assert_eq!(port(&response), Some(2));
    assert_eq!(started.elapsed(), Duration::from_millis(60), "50 + 10 ms");
    // The slow attempt was dropped: only the winner's body holds a count.
    assert_eq!(in_flight(&set), [0, 1]);
    drop(response);
    assert_eq!(in_flight(&set), [0, 0]);
    let stats = hedge.stats();
    assert_eq!((stats.sent_total, stats.won_total), (1, 1));
}

#[tokio::test(start_paused = true)]
async fn a_prompt_answer_sends_no_hedge() {
    let hedge = hedge(50);
    let set = set(&[2, 1]);
    let response = once(&hedge, &set).await;
    assert_eq!(port(&response), Some(2));
    assert_eq!(hedge.stats().sent_total, 0);
}

#[tokio::test(start_paused = true)]
async fn the_hedge_avoids_the_first_backend_even_when_the_key_maps_there() {
    // A hash on a fixed path sends every attempt to one backend, unless it
    // was tried. Find a path whose backend is the slow one.
    let hedge = hedge(50);
    let set = set(&[1, 2, 4]);
    let path = (0..100)
        .map(|n| format!("/key{n}"))
        .find(|path| {
            let balancer =
                crate::balance::Balancer::new(&set, ConsistentHash::new("path".parse().unwrap()));
            let request = Request::get(path.as_str()).body(()).unwrap();
            let picked = balancer.pick(&request);
            picked.is_some_and(|p| p.address().authority().port_u16() == Some(1))
        })
        .unwrap();
    let request = Request::get(path.as_str()).body(Empty::new()).unwrap();
    let response = stack(&hedge, &set, ConsistentHash::new("path".parse().unwrap()))
        .oneshot(request)
        .await
        .unwrap();
    assert_ne!(port(&response), Some(1));
    assert_eq!(hedge.stats().won_total, 1);
}

#[tokio::test(start_paused = true)]
async fn a_failed_hedge_does_not_win_over_a_slow_good_answer() {
    let hedge = hedge(50);
    // The hedge goes to port 3, which answers 502.
    let set = set(&[1, 3]);
    let started = Instant::now();
    let response = once(&hedge, &set).await;
    assert_eq!(response.status(), 200);
    assert_eq!(port(&response), Some(1));
    assert_eq!(started.elapsed(), Duration::from_millis(300));
    assert_eq!(in_flight(&set), [1, 0], "the failed hedge's count released");
    let stats = hedge.stats();
    assert_eq!((stats.sent_total, stats.won_total), (1, 0));
}

#[tokio::test(start_paused = true)]
async fn both_failing_gives_the_later_failure() {
    let hedge = hedge(1);
    let set = set(&[3, 5]);
    // Port 3 fails at 5 ms, after the hedge to port 5 went at 1 ms; port 5
    // answers 200 at 11 ms: the good answer wins even after a failure.
    let response = once(&hedge, &set).await;
    assert_eq!(response.status(), 200);
    assert_eq!(port(&response), Some(5));
    // Both fail: one backend that fails, and the hedge with nowhere to go
    // answers 503 at once; the later failure (the 502) is the answer.
    let set = crate::BackendSet::new(["http://127.0.0.1:3".parse().unwrap()]);
    let response = once(&hedge, &set).await;
    assert_eq!(response.status(), 502);
}

#[tokio::test(start_paused = true)]
async fn an_empty_budget_sends_no_hedge() {
    // No floor, 10 %: two requests allow no hedge, ten allow one.
    let hedge = hedge(50).budget(RetryBudget::new(Duration::from_secs(10), 0, 0.1));
    let set = set(&[1, 2]);
    let service = stack(&hedge, &set, RoundRobin::new());
    let response = service
        .clone()
        .oneshot(Request::new(Empty::new()))
        .await
        .unwrap();
    assert_eq!(port(&response), Some(1), "not hedged");
    let stats = hedge.stats();
    assert_eq!((stats.sent_total, stats.budget_exhausted_total), (0, 1));
    for _ in 0..10 {
        let response = service
            .clone()
            .oneshot(Request::new(Empty::new()))
            .await
            .unwrap();
        response.into_body().collect().await.unwrap();
    }
    // 11 requests deposited: one hedge allowed over the slow ones.
    assert_eq!(hedge.stats().sent_total, 1);
}

#[tokio::test(start_paused = true)]
async fn with_failover_it_spends_the_failover_budget_and_deposits_nothing() {
    let failover = FailoverLayer::new().budget(RetryBudget::new(Duration::from_secs(10), 0, 1.0));
    let hedge = hedge(50).with_failover(&failover);
    let set = set(&[1, 2]);
    // One deposit (failover's), so one hedge; none more without deposits.
    let service = failover.layer(
        hedge.layer(
            LoadBalanceLayer::new(&set, RoundRobin::new())
                .layer(hedge.recorder().layer(service_fn(answer))),
        ),
    );
    let response = service
        .clone()
        .oneshot(Request::new(Empty::new()))
        .await
        .unwrap();
    assert_eq!(port(&response), Some(2));
    assert_eq!(hedge.stats().sent_total, 1);
    // Straight through the hedge layer, bypassing failover: nothing is
    // deposited, so nothing may be spent.
    let response = once(&hedge, &set).await;
    assert_eq!(port(&response), Some(1));
    assert_eq!(hedge.stats().budget_exhausted_total, 1);
}

#[tokio::test(start_paused = true)]
async fn requests_with_a_body_or_an_unsafe_method_are_never_hedged() {
    let hedge = hedge(50);
    let set = set(&[1, 2]);
    let post = Request::builder()
        .method(Method::POST)
        .body(Empty::new())
        .unwrap();
    let response = stack(&hedge, &set, RoundRobin::new())
        .oneshot(post)
        .await
        .unwrap();
    assert_eq!(port(&response), Some(1));
    let with_body = hedge.layer(
        LoadBalanceLayer::new(&set, RoundRobin::new())
            .layer(hedge.recorder().layer(service_fn(answer))),
    );
    let response = with_body
        .oneshot(Request::new(Full::new(Bytes::from_static(b"body"))))
        .await
        .unwrap();
    // A balancer of its own: its first pick is the slow backend again.
    assert_eq!(port(&response), Some(1), "not hedged");
    assert_eq!(hedge.stats().sent_total, 0);
}

#[tokio::test(start_paused = true)]
async fn without_a_recorder_nothing_is_hedged() {
    let hedge = hedge(50);
    let set = set(&[1, 2]);
    let service = hedge.layer(
        LoadBalanceLayer::new(&set, RoundRobin::new()).layer(service_fn(answer::<Empty<Bytes>>)),
    );
    let response = service.oneshot(Request::new(Empty::new())).await.unwrap();
    assert_eq!(port(&response), Some(1));
    assert_eq!(hedge.stats().sent_total, 0);
}

#[test]
fn a_zero_delay_is_refused() {
    assert!(HedgeLayer::new(Duration::ZERO).is_err());
}
