//! Failover on real sockets: dead backends cost clients nothing when a retry
//! is safe, and never cost a double POST.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::StatusCode;
use http_body_util::{BodyExt, Full};
use support::process::ProxyProcess;
use support::rude::RudeBackend;
use support::{TestBackend, TestProxy, client, get, pattern_digest, send};
use tokio::net::TcpListener;
use tower::ServiceBuilder;
use tower_lb::balance::RoundRobin;
use tower_lb::failover::{Attempts, FailoverLayer, RetryBudget};
use tower_lb::health::{OutlierDetection, PassiveHealthLayer};
use tower_lb::{Backend, BackendSet, Forward, LoadBalanceLayer};

/// 20 clients × 50 GETs through the example proxy while one of three
/// backends is killed: returns how many requests failed.
async fn kill_a_backend_under_load(retries: &str) -> usize {
    let backends = [
        TestBackend::start("a").await,
        TestBackend::start("b").await,
        TestBackend::start("c").await,
    ];
    let urls: Vec<String> = backends.iter().map(TestBackend::url).collect();
    let proxy = ProxyProcess::start(&[
        "--backend",
        &urls[0],
        "--backend",
        &urls[1],
        "--backend",
        &urls[2],
        "--retries",
        retries,
    ])
    .await;
    let client = client();
    let done = Arc::new(AtomicUsize::new(0));
    let failed = Arc::new(AtomicUsize::new(0));
    let mut clients = Vec::new();
    for _ in 0..20 {
        let (client, url) = (client.clone(), proxy.url("/slow?ms=2"));
        let (done, failed) = (done.clone(), failed.clone());
        clients.push(tokio::spawn(async move {
            for _ in 0..50 {
                let request = http::Request::get(&url)
                    .body(Full::<Bytes>::default().boxed())
                    .unwrap();
                let ok = match client.request(request).await {
                    Ok(response) => {
                        let status = response.status();
                        response.into_body().collect().await.is_ok() && status == StatusCode::OK
                    }
                    Err(_) => false,
                };
                if !ok {
                    failed.fetch_add(1, Ordering::SeqCst);
                }
                done.fetch_add(1, Ordering::SeqCst);
            }
        }));
    }
    // Kill "b" once a fifth of the requests are through.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while done.load(Ordering::SeqCst) < 200 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "load did not get going"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    backends[1].stop();
    for client in clients {
        client.await.unwrap();
    }
    assert_eq!(done.load(Ordering::SeqCst), 1000);
    assert!(backends[1].hits() > 0, "b served before it died");
    failed.load(Ordering::SeqCst)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_backend_costs_clients_nothing_with_retries() {
    assert_eq!(kill_a_backend_under_load("2").await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_retries_the_same_kill_shows() {
    assert!(kill_a_backend_under_load("0").await > 0);
}

/// Failover → LoadBalance → PassiveHealth → Forward, the example's stack.
async fn stack(set: &BackendSet, failover: FailoverLayer) -> TestProxy {
    let service = ServiceBuilder::new()
        .layer(failover)
        .layer(LoadBalanceLayer::new(set.clone(), RoundRobin::new()))
        .layer(PassiveHealthLayer::new(
            set.clone(),
            OutlierDetection::new(),
        ))
        .service(Forward::new());
    TestProxy::serve(set.clone(), service).await
}

async fn refused_url() -> String {
    let addr = TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap();
    format!("http://{addr}")
}

#[tokio::test]
async fn a_refused_post_is_retried_and_arrives_once_whole() {
    const SIZE: u64 = 40 * 1024;
    let good = TestBackend::start("good").await;
    let set = BackendSet::new([refused_url().await.parse().unwrap(), good.backend()]);
    let proxy = stack(&set, FailoverLayer::new()).await;
    let request = http::Request::post(proxy.url("/upload"))
        .body(support::streaming_body(SIZE))
        .unwrap();
    let response = client().request(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let body = response.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(String::from_utf8_lossy(&body), pattern_digest(SIZE).await);
    assert_eq!(good.hits(), 1, "exactly once");
}

#[tokio::test]
async fn a_post_that_reached_a_backend_is_not_retried() {
    let rude = RudeBackend::start().await;
    let good = TestBackend::start("good").await;
    let set = BackendSet::new([rude.url().parse().unwrap(), good.backend()]);
    let proxy = stack(&set, FailoverLayer::new()).await;
    let client = client();
    let post = http::Request::post(proxy.url("/status/200"))
        .body(Full::from("order #1"))
        .unwrap();
    let answer = send(&client, post).await;
    assert_eq!(answer.status, StatusCode::BAD_GATEWAY);
    assert_eq!(rude.hits(), 1);
    assert_eq!(good.hits(), 0, "the POST was not sent twice");

    // The same failure on a GET is retried elsewhere (round-robin sends one
    // of two requests to the rude backend first).
    for _ in 0..2 {
        let answer = get(&client, &proxy.url("/status/200")).await;
        assert_eq!(
            (answer.status, answer.body.as_str()),
            (StatusCode::OK, "good")
        );
    }
    assert_eq!(rude.hits(), 2);

    // And so is a POST with an Idempotency-Key.
    for n in 0..2 {
        let keyed = http::Request::post(proxy.url("/status/200"))
            .header("idempotency-key", format!("order-{n}"))
            .body(Full::from("order"))
            .unwrap();
        assert_eq!(send(&client, keyed).await.status, StatusCode::OK);
    }
    assert!(
        rude.hits() >= 3,
        "keyed POSTs met the rude backend and were retried"
    );
}

#[tokio::test]
async fn a_large_body_that_began_streaming_is_not_retried() {
    const SIZE: u64 = 1024 * 1024;
    let rude = RudeBackend::start().await;
    let good = TestBackend::start("good").await;
    let set = BackendSet::new([rude.url().parse().unwrap(), good.backend()]);
    let proxy = stack(&set, FailoverLayer::new().retry_non_idempotent(true)).await;
    let request = http::Request::post(proxy.url("/upload"))
        .header("content-length", SIZE.to_string())
        .body(support::streaming_body(SIZE))
        .unwrap();
    let response = client().request(request).await.unwrap();
    assert_eq!(
        response.status(),
        StatusCode::BAD_GATEWAY,
        "1 MiB > 64 KiB replay bound"
    );
    assert_eq!(good.hits(), 0);
}

#[tokio::test]
async fn the_budget_bounds_attempts_when_every_backend_fails() {
    let backends = [
        TestBackend::start("a").await,
        TestBackend::start("b").await,
        TestBackend::start("c").await,
    ];
    let set = BackendSet::new(backends.iter().map(TestBackend::backend));
    // 20 % of requests plus a floor of 1 per second over 10 s.
    let failover = FailoverLayer::new().max_retries(2).budget(RetryBudget::new(
        Duration::from_secs(10),
        1,
        0.2,
    ));
    let service = ServiceBuilder::new()
        .layer(failover)
        .layer(LoadBalanceLayer::new(set.clone(), RoundRobin::new()))
        .service(Forward::new());
    let proxy = TestProxy::serve(set, service).await;
    let client = client();
    let started = tokio::time::Instant::now();
    let requests = 200;
    for _ in 0..requests {
        let answer = get(&client, &proxy.url("/status/503")).await;
        assert_eq!(answer.status, StatusCode::SERVICE_UNAVAILABLE);
    }
    let attempts: usize = backends.iter().map(TestBackend::hits).sum();
    // Without a budget: 600 attempts. With it: 200 + 20 % of 200 + 10.
    assert!(attempts <= requests + 40 + 10, "{attempts} attempts");
    assert!(
        attempts >= requests + 40,
        "the budget's share was used: {attempts}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "answers came quickly"
    );
}

#[tokio::test]
async fn responses_say_which_attempt_answered() {
    use tower::ServiceExt;
    let good = TestBackend::start("good").await;
    let set = BackendSet::new([
        refused_url().await.parse::<Backend>().unwrap(),
        good.backend(),
    ]);
    let service = ServiceBuilder::new()
        .layer(FailoverLayer::new())
        .layer(LoadBalanceLayer::new(set, RoundRobin::new()))
        .service(Forward::new());
    let request = http::Request::get("/")
        .body(Full::<Bytes>::default())
        .unwrap();
    let response = service.oneshot(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let attempts = response.extensions().get::<Attempts>().unwrap();
    assert_eq!((attempts.answered_by(), attempts.retries()), (2, 1));
}

#[tokio::test]
async fn when_no_backend_is_left_the_last_failure_is_the_answer() {
    let set = BackendSet::new([refused_url().await.parse::<Backend>().unwrap()]);
    let proxy = stack(&set, FailoverLayer::new()).await;
    let answer = get(&client(), &proxy.url("/")).await;
    assert_eq!(
        answer.status,
        StatusCode::BAD_GATEWAY,
        "not 503: the backend was tried"
    );
    assert_eq!(answer.body, "backend unreachable\n");
}

#[tokio::test]
async fn the_deadline_answers_504() {
    let slow = TestBackend::start_with_delay("slow", Duration::from_secs(5)).await;
    let set = BackendSet::new([slow.backend()]);
    let proxy = stack(
        &set,
        FailoverLayer::new().deadline(Duration::from_millis(300)),
    )
    .await;
    let started = tokio::time::Instant::now();
    let answer = get(&client(), &proxy.url("/")).await;
    assert_eq!(answer.status, StatusCode::GATEWAY_TIMEOUT);
    assert!(started.elapsed() < Duration::from_secs(2));
}

/// A retry is built from the head the failed try handed back (no copy is
/// made in advance once failover has learned that `Forward` hands heads
/// back), so it must still carry every header the client sent: after a
/// backend's 503, and after a response that failed mid-head (its parse had
/// begun, so the request's header map must not have been taken for it).
#[tokio::test]
async fn a_retry_carries_the_clients_headers_whatever_the_failure() {
    use support::raw::{RawBackend, header, ok};
    let failing = RawBackend::start(Arc::new(|n, _| {
        let answer: &[u8] = if n % 2 == 0 {
            b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\n\r\n"
        } else {
            b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\ncontent-length: 3\r\n\r\nok"
        };
        (answer.to_vec(), true)
    }))
    .await;
    let good = RawBackend::start(Arc::new(|_, _| (ok("good"), false))).await;
    let set = BackendSet::new([
        good.url().parse::<Backend>().unwrap(),
        failing.url().parse::<Backend>().unwrap(),
    ]);
    let proxy = stack(&set, FailoverLayer::new()).await;
    let client = client();
    for i in 0..8 {
        let request = http::Request::get(proxy.url(&format!("/r{i}")))
            .header("x-trace", format!("t{i}"))
            .body(Full::<Bytes>::default())
            .unwrap();
        let answer = send(&client, request).await;
        assert_eq!(answer.status, StatusCode::OK, "request {i}");
        assert_eq!(answer.body, "good");
    }
    let failed = failing.heads();
    // Round-robin's turns move with the retries too, so not exactly every
    // other request; two or more cover both kinds of failure.
    assert!(
        failed.len() >= 2,
        "the failing backend was met: {}",
        failed.len()
    );
    let heads = good.heads();
    assert_eq!(heads.len(), 8, "each answered once by the good backend");
    for (i, head) in heads.iter().enumerate() {
        let lower = head.to_ascii_lowercase();
        let path = lower.split(' ').nth(1).unwrap_or_default().to_owned();
        let n = &path[2..];
        assert_eq!(
            header(&lower, "x-trace"),
            Some(format!("t{n}").as_str()),
            "head {i}: {head}"
        );
        assert!(
            header(&lower, "host").is_some(),
            "head {i} has its Host: {head}"
        );
        assert!(
            header(&lower, "x-forwarded-for").is_some(),
            "head {i}: {head}"
        );
    }
}
