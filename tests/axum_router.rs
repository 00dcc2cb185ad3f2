//! The README's usage: an axum `Router` with `.layer(LoadBalanceLayer::new(..))`.

mod support;

use std::net::SocketAddr;

use axum::Router;
use axum::extract::{ConnectInfo, Request};
use axum::middleware;
use axum::routing::get as route_get;
use support::{TestBackend, client, get, tally};
use tower_lb::balance::RoundRobin;
use tower_lb::{BackendSet, ClientAddr, Forward, LoadBalanceLayer};

async fn client_addr(ConnectInfo(peer): ConnectInfo<SocketAddr>, mut request: Request) -> Request {
    request.extensions_mut().insert(ClientAddr::new(peer));
    request
}

#[tokio::test]
async fn an_axum_router_balances_with_one_layer() {
    let a = TestBackend::start("a").await;
    let b = TestBackend::start("b").await;
    let backends = BackendSet::new([a.backend(), b.backend()]);
    let app = Router::new()
        .fallback_service(Forward::new())
        .layer(LoadBalanceLayer::new(backends, RoundRobin::new()))
        .layer(middleware::map_request(client_addr));
    // A local route beside the balanced fallback.
    let app = Router::new()
        .route("/local", route_get(|| async { "local" }))
        .merge(app);

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(
            listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .await
        .unwrap();
    });

    let client = client();
    let counts = tally(&client, &format!("http://{addr}/any/path"), 10).await;
    assert_eq!(
        (counts.get("a"), counts.get("b")),
        (Some(&5), Some(&5)),
        "{counts:?}"
    );
    let headers = get(&client, &format!("http://{addr}/headers")).await.body;
    assert!(
        headers.contains("x-forwarded-for: 127.0.0.1\n"),
        "{headers}"
    );
}
