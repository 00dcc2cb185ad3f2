//! What `Forward` does to requests and responses, on real sockets.

mod support;

use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use http::StatusCode;
use http_body_util::{BodyExt, Full};
use support::{TestBackend, TestProxy, client, get, pattern_digest, send, streaming_body};
use tokio::net::TcpListener;
use tower::Layer;
use tower_lb::balance::RoundRobin;
use tower_lb::{BackendSet, Error, Forward, LoadBalanceLayer};
use xxhash_rust::xxh3::Xxh3;

#[tokio::test]
async fn proxy_header_rules_hold_both_ways() {
    let backend = TestBackend::start("a").await;
    let proxy = TestProxy::start(BackendSet::new([backend.backend()]), RoundRobin::new()).await;
    let request = http::Request::get(proxy.url("/headers"))
        .header("host", "shop.example")
        .header("x-forwarded-for", "203.0.113.5")
        .header("connection", "x-hop")
        .header("x-hop", "1")
        .header("keep-alive", "timeout=5")
        .header("proxy-authorization", "Basic eDp5")
        .header("te", "trailers")
        .header("upgrade", "websocket")
        .header("x-kept", "yes")
        .body(Full::default())
        .unwrap();
    let answer = send(&client(), request).await;
    assert_eq!(answer.status, StatusCode::OK);
    let seen = answer.body.to_lowercase();
    assert!(seen.contains("host: shop.example\n"), "Host kept:\n{seen}");
    assert!(
        seen.contains("x-forwarded-for: 203.0.113.5, 127.0.0.1\n"),
        "{seen}"
    );
    assert!(seen.contains("x-forwarded-proto: http\n"), "{seen}");
    assert!(seen.contains("x-forwarded-host: shop.example\n"), "{seen}");
    assert!(seen.contains("x-kept: yes\n"), "{seen}");
    for hop in [
        "x-hop",
        "keep-alive",
        "proxy-authorization",
        "te:",
        "upgrade",
        "connection",
    ] {
        assert!(!seen.contains(hop), "{hop} reached the backend:\n{seen}");
    }
    // The backend's own hop-by-hop headers stay on its side too.
    assert!(answer.headers.get("keep-alive").is_none());
    assert!(answer.headers.get("x-private").is_none());
    assert_eq!(answer.headers["x-backend"], "a");
}

#[tokio::test]
async fn a_100_mb_upload_and_download_stream_through_intact() {
    const SIZE: u64 = 100 * 1024 * 1024;
    let backend = TestBackend::start("a").await;
    let proxy = TestProxy::start(BackendSet::new([backend.backend()]), RoundRobin::new()).await;
    let client = client();
    let expected = pattern_digest(SIZE).await;

    let upload = http::Request::post(proxy.url("/upload"))
        .body(streaming_body(SIZE))
        .unwrap();
    let response = client.request(upload).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let body = response.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(String::from_utf8_lossy(&body), expected, "upload");

    let download = client.get(
        proxy
            .url(&format!("/download?size={SIZE}"))
            .parse()
            .unwrap(),
    );
    let response = download.await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let mut stream = response.into_body().into_data_stream();
    let mut hasher = Xxh3::new();
    let mut length = 0u64;
    while let Some(chunk) = stream.next().await {
        let chunk: Bytes = chunk.unwrap();
        length += chunk.len() as u64;
        hasher.update(&chunk);
    }
    assert_eq!(
        format!("{length} {:016x}", hasher.digest()),
        expected,
        "download"
    );
}

#[tokio::test]
async fn no_backend_is_503_with_the_error_attached() {
    let proxy = TestProxy::start(BackendSet::default(), RoundRobin::new()).await;
    let answer = get(&client(), &proxy.url("/")).await;
    assert_eq!(answer.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(answer.body, "no backend available\n");
    assert_eq!(answer.headers["content-type"], "text/plain; charset=utf-8");
}

/// A backend that answers before it has read a request's body (the test
/// backend's default route answers its name and never reads the body, as
/// the example's demo backends do, and as a server refusing an upload with
/// a 413 does) and closes the connection: its answer reaches the client,
/// not a 502 for the writes that the close cut short. Before the fix about
/// half of such uploads got a 502.
#[tokio::test]
async fn an_answer_sent_before_the_body_was_read_reaches_the_client() {
    let backend = TestBackend::start("a").await;
    let set = BackendSet::new([backend.backend()]);
    let proxy = TestProxy::start(set, RoundRobin::new()).await;
    let client = client();
    let upload = Bytes::from(vec![b'u'; 8 << 20]);
    for _ in 0..5 {
        let request = http::Request::post(proxy.url("/"))
            .body(Full::new(upload.clone()))
            .unwrap();
        let answer = send(&client, request).await;
        assert_eq!(answer.status, StatusCode::OK, "{answer:?}");
        assert_eq!(answer.body, "a");
    }
}

#[tokio::test]
async fn a_refused_connection_is_502() {
    // Bind then drop: the port is closed.
    let addr = TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap();
    let set = BackendSet::new([format!("http://{addr}").parse().unwrap()]);
    let proxy = TestProxy::start(set, RoundRobin::new()).await;
    let answer = get(&client(), &proxy.url("/")).await;
    assert_eq!(answer.status, StatusCode::BAD_GATEWAY);
    assert_eq!(answer.body, "backend unreachable\n");
}

#[tokio::test]
async fn a_slow_backend_is_504_after_the_timeout() {
    let backend = TestBackend::start("a").await;
    let set = BackendSet::new([backend.backend()]);
    let forward = Forward::builder()
        .timeout(Duration::from_millis(200))
        .build();
    let service = LoadBalanceLayer::new(set.clone(), RoundRobin::new()).layer(forward);
    let proxy = TestProxy::serve(set, service).await;
    let started = tokio::time::Instant::now();
    let answer = get(&client(), &proxy.url("/slow?ms=5000")).await;
    assert_eq!(answer.status, StatusCode::GATEWAY_TIMEOUT);
    assert!(started.elapsed() < Duration::from_secs(3));
}

/// The timeout runs on a timer each backend connection keeps and moves
/// on from exchange to exchange: a slow answer on a connection that has
/// already carried quick ones is still cut at its own deadline, and one
/// that comes within it is not.
#[tokio::test]
async fn the_timeout_holds_on_a_reused_connection_too() {
    let backend = TestBackend::start("a").await;
    let set = BackendSet::new([backend.backend()]);
    let forward = Forward::builder()
        .timeout(Duration::from_millis(300))
        .build();
    let service = LoadBalanceLayer::new(set.clone(), RoundRobin::new()).layer(forward);
    let proxy = TestProxy::serve(set, service).await;
    let client = client();
    for _ in 0..3 {
        assert_eq!(get(&client, &proxy.url("/")).await.status, StatusCode::OK);
    }
    // Under the timeout, though later than the quick ones' deadlines.
    tokio::time::sleep(Duration::from_millis(350)).await;
    let answer = get(&client, &proxy.url("/slow?ms=100")).await;
    assert_eq!(answer.status, StatusCode::OK);
    let started = tokio::time::Instant::now();
    let answer = get(&client, &proxy.url("/slow?ms=5000")).await;
    assert_eq!(answer.status, StatusCode::GATEWAY_TIMEOUT);
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(290),
        "cut early, after {took:?}"
    );
    assert!(took < Duration::from_secs(3), "cut late, after {took:?}");
    assert_eq!(get(&client, &proxy.url("/")).await.status, StatusCode::OK);
}

#[tokio::test]
async fn error_answers_carry_the_error_for_outer_layers() {
    use tower::ServiceExt;
    let addr = TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap();
    let set = BackendSet::new([format!("http://{addr}").parse().unwrap()]);
    let service = LoadBalanceLayer::new(set, RoundRobin::new()).layer(Forward::new());
    let request = http::Request::get("/")
        .body(Full::<Bytes>::default())
        .unwrap();
    let response = service.oneshot(request).await.unwrap();
    let error = response.extensions().get::<Error>().expect("the error");
    assert!(error.is_connect(), "{error:?}");
    let target = response
        .extensions()
        .get::<tower_lb::Target>()
        .expect("the target");
    assert_eq!(
        target.backend().address().as_str(),
        format!("http://{addr}")
    );
}

#[tokio::test]
async fn backend_connections_are_kept_alive_and_reused() {
    let backend = support::counting::CountingBackend::start(false).await;
    let set = BackendSet::new([backend.url().parse().unwrap()]);
    let proxy = TestProxy::start(set, RoundRobin::new()).await;
    let client = client();
    for _ in 0..20 {
        let answer = get(&client, &proxy.url("/")).await;
        assert_eq!((answer.status.as_u16(), answer.body.as_str()), (200, "ok"));
    }
    assert_eq!(
        backend.connections(),
        1,
        "one connection for 20 sequential requests"
    );
}

#[tokio::test]
async fn a_connection_the_backend_closed_while_idle_costs_nothing() {
    let backend = support::counting::CountingBackend::start(true).await;
    let set = BackendSet::new([backend.url().parse().unwrap()]);
    let proxy = TestProxy::start(set, RoundRobin::new()).await;
    let client = client();
    for _ in 0..20 {
        let answer = get(&client, &proxy.url("/")).await;
        assert_eq!((answer.status.as_u16(), answer.body.as_str()), (200, "ok"));
        // Let the backend's hang-up arrive before the next request.
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(backend.connections(), 20);
}
