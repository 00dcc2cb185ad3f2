//! What an operator sees and needs: metrics, status, upgrades, HTTP/2.

mod support;

use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use prometheus_client::registry::Registry;
use support::{TestBackend, TestProxy, client, get};
use tokio_tungstenite::tungstenite::Message;
use tower::ServiceBuilder;
use tower_lb::backend::{Protocol, Verdict};
use tower_lb::balance::{LeastConnections, RoundRobin};
use tower_lb::failover::FailoverLayer;
use tower_lb::metrics::{AdminService, MetricsLayer};
use tower_lb::{BackendSet, Forward, LoadBalanceLayer};

/// Metrics → Failover → LoadBalance → Forward, and the admin service on a
/// port of its own.
async fn observed(set: &BackendSet) -> (TestProxy, TestProxy) {
    let mut registry = Registry::default();
    let service = ServiceBuilder::new()
        .layer(MetricsLayer::new(set, &mut registry))
        .layer(FailoverLayer::new())
        .layer(LoadBalanceLayer::new(set.clone(), RoundRobin::new()))
        .service(Forward::new());
    let proxy = TestProxy::serve(set.clone(), service).await;
    let admin = TestProxy::serve(set.clone(), AdminService::new(set.clone(), registry)).await;
    (proxy, admin)
}

fn sample(metrics: &str, series: &str) -> f64 {
    metrics
        .lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no `{series}` in:\n{metrics}"))
}

#[tokio::test]
async fn metrics_count_what_was_sent() {
    let backends = [TestBackend::start("a").await, TestBackend::start("b").await];
    let set = BackendSet::new(backends.iter().map(TestBackend::backend));
    let (proxy, admin) = observed(&set).await;
    let client = client();
    for _ in 0..20 {
        assert_eq!(get(&client, &proxy.url("/")).await.status, 200);
    }
    for _ in 0..4 {
        assert_eq!(get(&client, &proxy.url("/status/404")).await.status, 404);
    }
    let metrics = get(&client, &admin.url("/metrics")).await.body;
    let a = backends[0].backend().address().as_str().to_owned();
    let b = backends[1].backend().address().as_str().to_owned();
    for backend in [&a, &b] {
        let ok = format!("lb_backend_requests_total{{backend=\"{backend}\",code=\"2xx\"}}");
        assert_eq!(sample(&metrics, &ok), 10.0);
        let missing = format!("lb_backend_requests_total{{backend=\"{backend}\",code=\"4xx\"}}");
        assert_eq!(sample(&metrics, &missing), 2.0);
        let in_flight = format!("lb_backend_in_flight{{backend=\"{backend}\"}}");
        assert_eq!(sample(&metrics, &in_flight), 0.0);
        let healthy = format!("lb_backend_healthy{{backend=\"{backend}\"}}");
        assert_eq!(sample(&metrics, &healthy), 1.0);
        let count = format!("lb_backend_request_duration_seconds_count{{backend=\"{backend}\"}}");
        assert_eq!(sample(&metrics, &count), 12.0);
    }
    assert_eq!(sample(&metrics, "lb_request_duration_seconds_count"), 24.0);
    assert_eq!(sample(&metrics, "lb_retries_total"), 0.0);
    assert_eq!(sample(&metrics, "lb_no_backend_total"), 0.0);

    // A failing backend: retries are counted; with no backend left, 503s.
    backends[1].stop();
    for _ in 0..4 {
        assert_eq!(get(&client, &proxy.url("/")).await.status, 200);
    }
    let metrics = get(&client, &admin.url("/metrics")).await.body;
    // Whichever requests met b first were retried on a, which answered all.
    let retries = sample(&metrics, "lb_retries_total");
    assert!((1.0..=4.0).contains(&retries), "{retries}");
    let ok = format!("lb_backend_requests_total{{backend=\"{a}\",code=\"2xx\"}}");
    assert_eq!(sample(&metrics, &ok), 14.0);
    set.remove(&backends[0].backend().address().clone());
    set.remove(&backends[1].backend().address().clone());
    assert_eq!(get(&client, &proxy.url("/")).await.status, 503);
    let metrics = get(&client, &admin.url("/metrics")).await.body;
    assert_eq!(sample(&metrics, "lb_no_backend_total"), 1.0);
}

#[tokio::test]
async fn status_json_reflects_a_health_flip() {
    let backends = [TestBackend::start("a").await, TestBackend::start("b").await];
    let set = BackendSet::new(backends.iter().map(TestBackend::backend));
    let (_proxy, admin) = observed(&set).await;
    let client = client();
    let read = || async {
        let body = get(&client, &admin.url("/status")).await.body;
        serde_json::from_str::<serde_json::Value>(&body).unwrap()
    };
    let status = read().await;
    assert_eq!(status["backends"][1]["healthy"], true);
    assert_eq!(status["backends"][1]["verdict"], "unknown");
    assert_eq!(status["backends"][1]["weight"], 1);
    set.snapshot().backends()[1]
        .state()
        .set_verdict(Verdict::Unhealthy, Some("status 500".into()));
    let status = read().await;
    let b = &status["backends"][1];
    assert_eq!(b["url"], backends[1].url());
    assert_eq!(b["healthy"], false);
    assert_eq!(b["verdict"], "unhealthy");
    assert_eq!(b["last_probe_error"], "status 500");
    assert_eq!(status["backends"][0]["healthy"], true);
}

#[tokio::test]
async fn the_status_page_renders() {
    let backends = [TestBackend::start("a").await, TestBackend::start("b").await];
    let set = BackendSet::new(backends.iter().map(TestBackend::backend));
    let (proxy, admin) = observed(&set).await;
    let client = client();
    for _ in 0..10 {
        get(&client, &proxy.url("/")).await;
    }
    set.snapshot().backends()[1]
        .state()
        .set_verdict(Verdict::Unhealthy, Some("connect: <refused>".into()));
    let page = get(&client, &admin.url("/")).await;
    assert_eq!(page.status, 200);
    assert_eq!(page.headers["content-type"], "text/html; charset=utf-8");
    let html = page.body;
    for backend in &backends {
        let card = format!("data-backend=\"{}\"", backend.url());
        assert!(html.contains(&card), "a card per backend: {html}");
    }
    assert!(html.contains("1 of 2 backends eligible"), "{html}");
    assert!(html.contains("data-state=\"unhealthy\""), "{html}");
    assert!(html.contains("connect: &lt;refused&gt;"), "escaped: {html}");
    // Three sparklines per backend and three for the whole set.
    assert_eq!(html.matches("<svg class=\"spark\"").count(), 9, "{html}");
    assert!(
        !html.contains("<button type=\"button\" data-action"),
        "no write routes, no buttons"
    );
    let part = get(&client, &admin.url("/?part=main")).await.body;
    assert!(
        part.starts_with("<header"),
        "the refresh gets the main part only: {part}"
    );
    assert_eq!(get(&client, &admin.url("/nope")).await.status, 404);
}

#[tokio::test]
async fn a_websocket_echoes_through_the_proxy_and_stays_on_its_backend() {
    let backends = [TestBackend::start("a").await, TestBackend::start("b").await];
    let set = BackendSet::new(backends.iter().map(TestBackend::backend));
    let service = ServiceBuilder::new()
        .layer(FailoverLayer::new())
        .layer(LoadBalanceLayer::new(set.clone(), LeastConnections::new()))
        .service(Forward::new());
    let proxy = TestProxy::serve(set.clone(), service).await;
    let url = format!("ws://{}/ws", proxy.addr);
    let (mut socket, response) = tokio_tungstenite::connect_async(&url).await.unwrap();
    assert_eq!(response.status(), 101);
    let mut first = None;
    for n in 0..5 {
        socket
            .send(Message::text(format!("hello {n}")))
            .await
            .unwrap();
        let reply = socket.next().await.unwrap().unwrap().into_text().unwrap();
        let (name, text) = reply.split_once(": ").unwrap();
        assert_eq!(text, format!("hello {n}"));
        assert_eq!(
            *first.get_or_insert(name.to_owned()),
            name,
            "pinned to one backend"
        );
    }
    // The open tunnel counts as a request in flight on its backend.
    let pinned = first.unwrap();
    let index = if pinned == "a" { 0 } else { 1 };
    assert_eq!(set.snapshot().backends()[index].state().in_flight(), 1);
    socket.close(None).await.unwrap();
    drop(socket);
    for _ in 0..100 {
        if set.snapshot().backends()[index].state().in_flight() == 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("the tunnel still counts after closing");
}

#[tokio::test]
async fn h2c_clients_are_proxied_and_h2_backends_spoken_to() {
    let h1 = TestBackend::start("a").await;
    let h2 = TestBackend::start("b").await;
    let set = BackendSet::new([h1.backend(), h2.backend().with_protocol(Protocol::Http2)]);
    let proxy = TestProxy::start(set, RoundRobin::new()).await;
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build_http();
    let mut seen = Vec::new();
    for _ in 0..2 {
        let request = http::Request::get(proxy.url("/version"))
            .version(http::Version::HTTP_2)
            .body(Full::default())
            .unwrap();
        let response = client.request(request).await.unwrap();
        assert_eq!(response.version(), http::Version::HTTP_2);
        assert_eq!(response.status(), 200);
        let body = response.into_body().collect().await.unwrap().to_bytes();
        seen.push(String::from_utf8_lossy(&body).into_owned());
    }
    seen.sort();
    assert_eq!(seen, ["a HTTP/1.1", "b HTTP/2.0"]);
}
