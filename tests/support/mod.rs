//! Shared helpers for the integration tests: real axum backends and a real
//! proxy, each on an ephemeral 127.0.0.1 port.

#![allow(dead_code, unreachable_pub)]

pub mod counting;
pub mod process;
pub mod raw;
pub mod rude;
#[cfg(feature = "tls")]
pub mod tls;

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures_util::StreamExt;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tower::{Layer, Service};
use tower_http::add_extension::AddExtensionLayer;
use tower_lb::balance::Strategy;
use tower_lb::{Backend, BackendSet, ClientAddr, Forward, LoadBalanceLayer};
use xxhash_rust::xxh3::Xxh3;

/// A test backend: an axum server that says its name and counts requests.
///
/// It runs on a runtime of its own in its own thread, so that [`stop`]
/// really kills it: the listener and every open connection close at once,
/// as when a backend process dies.
///
/// [`stop`]: TestBackend::stop
pub struct TestBackend {
    pub name: String,
    pub addr: SocketAddr,
    pub hits: Arc<AtomicUsize>,
    /// Requests to `/hold` wait until this is notified.
    pub release: Arc<Notify>,
    /// What `/health` answers (200 while true, 500 while false).
    pub healthy: Arc<AtomicBool>,
    stop: Mutex<Option<std::sync::mpsc::Sender<()>>>,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
}

#[derive(Clone)]
struct BackendState {
    name: String,
    hits: Arc<AtomicUsize>,
    release: Arc<Notify>,
    healthy: Arc<AtomicBool>,
    delay: Duration,
}

impl TestBackend {
    pub async fn start(name: &str) -> Self {
        Self::start_with_delay(name, Duration::ZERO).await
    }

    /// A backend whose plain answers take `delay`.
    pub async fn start_with_delay(name: &str, delay: Duration) -> Self {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        Self::serve(name, listener, delay)
    }

    /// A backend on `addr` (to bring a stopped one back on its port).
    pub async fn start_on(name: &str, addr: SocketAddr) -> Self {
        let listener = std::net::TcpListener::bind(addr).unwrap();
        Self::serve(name, listener, Duration::ZERO)
    }

    fn serve(name: &str, listener: std::net::TcpListener, delay: Duration) -> Self {
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let hits = Arc::new(AtomicUsize::new(0));
        let release = Arc::new(Notify::new());
        let healthy = Arc::new(AtomicBool::new(true));
        let state = BackendState {
            name: name.to_owned(),
            hits: hits.clone(),
            release: release.clone(),
            healthy: healthy.clone(),
            delay,
        };
        let (stop, stopped) = std::sync::mpsc::channel::<()>();
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.spawn(async move {
                let listener = TcpListener::from_std(listener).unwrap();
                axum::serve(listener, app(state)).await.unwrap();
            });
            // Serve until told to stop; dropping the runtime then closes the
            // listener and every connection.
            runtime.block_on(async {
                while stopped.try_recv() == Err(std::sync::mpsc::TryRecvError::Empty) {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            });
            runtime.shutdown_background();
        });
        Self {
            name: name.to_owned(),
            addr,
            hits,
            release,
            healthy,
            stop: Mutex::new(Some(stop)),
            thread: Mutex::new(Some(thread)),
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn backend(&self) -> Backend {
        self.url().parse().unwrap()
    }

    pub fn weighted(&self, weight: u32) -> Backend {
        format!("{},weight={weight}", self.url()).parse().unwrap()
    }

    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }

    /// Kills the server: the listener and all open connections close.
    pub fn stop(&self) {
        if let Some(stop) = self.stop.lock().unwrap().take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.lock().unwrap().take() {
            let _ = thread.join();
        }
    }
}

impl Drop for TestBackend {
    fn drop(&mut self) {
        self.stop();
    }
}

fn app(state: BackendState) -> Router {
    Router::new()
        .route("/headers", axum::routing::any(headers))
        .route("/upload", axum::routing::post(upload))
        .route("/download", axum::routing::get(download))
        .route("/hold", axum::routing::get(hold))
        .route("/slow", axum::routing::get(slow))
        .route("/health", axum::routing::get(health))
        .route("/status/{code}", axum::routing::any(status))
        .route("/version", axum::routing::get(version))
        .route("/ws", axum::routing::get(websocket))
        .fallback(name_handler)
        .with_state(state)
}

/// The HTTP version the request arrived in, and the backend's name.
async fn version(State(state): State<BackendState>, request: Request) -> String {
    state.hits.fetch_add(1, Ordering::SeqCst);
    format!("{} {:?}", state.name, request.version())
}

/// A WebSocket that echoes every text message, prefixed with the backend's name.
async fn websocket(State(state): State<BackendState>, upgrade: WebSocketUpgrade) -> Response {
    state.hits.fetch_add(1, Ordering::SeqCst);
    upgrade.on_upgrade(move |mut socket: WebSocket| async move {
        while let Some(Ok(message)) = socket.recv().await {
            if let Message::Text(text) = message {
                let reply = format!("{}: {}", state.name, text.as_str());
                if socket.send(Message::Text(reply.into())).await.is_err() {
                    return;
                }
            }
        }
    })
}

async fn health(State(state): State<BackendState>) -> StatusCode {
    if state.healthy.load(Ordering::SeqCst) {
        StatusCode::OK
    } else {
        StatusCode::INTERNAL_SERVER_ERROR
    }
}

/// Answers with the status in the path, counting the request.
async fn status(
    State(state): State<BackendState>,
    Path(code): Path<u16>,
    request: Request,
) -> Response {
    state.hits.fetch_add(1, Ordering::SeqCst);
    // Read the body so the exchange completes normally.
    let _ = request.into_body().collect().await;
    let code = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (code, state.name.clone()).into_response()
}

async fn name_handler(State(state): State<BackendState>) -> Response {
    state.hits.fetch_add(1, Ordering::SeqCst);
    if !state.delay.is_zero() {
        tokio::time::sleep(state.delay).await;
    }
    ([("x-backend", state.name.clone())], state.name.clone()).into_response()
}

/// Answers with the headers it received, one `name: value` per line, and a
/// hop-by-hop header of its own that the proxy must not pass on.
async fn headers(State(state): State<BackendState>, headers: HeaderMap) -> Response {
    state.hits.fetch_add(1, Ordering::SeqCst);
    let mut text = String::new();
    for (name, value) in &headers {
        text.push_str(&format!("{name}: {}\n", value.to_str().unwrap_or("?")));
    }
    (
        [
            ("x-backend", state.name.clone()),
            ("keep-alive", "timeout=5".to_owned()),
            ("connection", "x-private".to_owned()),
            ("x-private", "secret".to_owned()),
        ],
        text,
    )
        .into_response()
}

/// Hashes the streamed request body: `<length> <xxh3 hex>`.
async fn upload(State(state): State<BackendState>, request: Request) -> String {
    state.hits.fetch_add(1, Ordering::SeqCst);
    let mut stream = request.into_body().into_data_stream();
    let mut hasher = Xxh3::new();
    let mut length = 0u64;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.unwrap();
        length += chunk.len() as u64;
        hasher.update(&chunk);
    }
    format!("{length} {:016x}", hasher.digest())
}

/// Streams `size` bytes of [`pattern`] data.
async fn download(
    State(state): State<BackendState>,
    Query(q): Query<HashMap<String, u64>>,
) -> Response {
    state.hits.fetch_add(1, Ordering::SeqCst);
    let size = q.get("size").copied().unwrap_or(0);
    Body::from_stream(pattern_stream(size)).into_response()
}

async fn hold(State(state): State<BackendState>) -> String {
    state.hits.fetch_add(1, Ordering::SeqCst);
    state.release.notified().await;
    format!("{} released", state.name)
}

async fn slow(State(state): State<BackendState>, Query(q): Query<HashMap<String, u64>>) -> String {
    state.hits.fetch_add(1, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(q.get("ms").copied().unwrap_or(0))).await;
    state.name.clone()
}

/// Deterministic data in 64 KiB chunks: byte i is a function of i.
pub fn pattern_stream(
    size: u64,
) -> impl futures_util::Stream<Item = Result<Bytes, Infallible>> + Send {
    const CHUNK: u64 = 64 * 1024;
    futures_util::stream::iter((0..size.div_ceil(CHUNK)).map(move |c| {
        let start = c * CHUNK;
        let end = (start + CHUNK).min(size);
        let data: Vec<u8> = (start..end)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        Ok(Bytes::from(data))
    }))
}

/// `<length> <xxh3 hex>` of [`pattern_stream`] data of `size` bytes.
pub async fn pattern_digest(size: u64) -> String {
    let mut hasher = Xxh3::new();
    let mut stream = Box::pin(pattern_stream(size));
    while let Some(Ok(chunk)) = stream.next().await {
        hasher.update(&chunk);
    }
    format!("{size} {:016x}", hasher.digest())
}

/// A proxy built from the public API, serving on 127.0.0.1.
pub struct TestProxy {
    pub addr: SocketAddr,
    pub set: BackendSet,
    task: JoinHandle<()>,
}

impl TestProxy {
    /// `LoadBalanceLayer` over `Forward`, served by hyper with the client
    /// address added per connection, as the example proxy does.
    pub async fn start<St: Strategy>(set: BackendSet, strategy: St) -> Self {
        let service = LoadBalanceLayer::new(set.clone(), strategy).layer(Forward::new());
        Self::serve(set, service).await
    }

    pub async fn serve<S, B>(set: BackendSet, service: S) -> Self
    where
        S: Service<http::Request<Incoming>, Response = http::Response<B>, Error = Infallible>
            + Clone
            + Send
            + 'static,
        S::Future: Send + 'static,
        B: http_body::Body + Send + 'static,
        B::Data: Send,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>> + std::fmt::Display,
    {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, peer)) = listener.accept().await else {
                    continue;
                };
                let service = AddExtensionLayer::new(ClientAddr::new(peer)).layer(service.clone());
                tokio::spawn(async move {
                    let _ = auto::Builder::new(TokioExecutor::new())
                        .serve_connection_with_upgrades(
                            TokioIo::new(stream),
                            TowerToHyperService::new(service),
                        )
                        .await;
                });
            }
        });
        Self { addr, set, task }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }
}

impl Drop for TestProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A plain HTTP client for the tests.
pub type TestClient =
    Client<HttpConnector, http_body_util::combinators::BoxBody<Bytes, Infallible>>;

pub fn client() -> TestClient {
    Client::builder(TokioExecutor::new()).build_http()
}

/// A response read whole: status, headers, body as text.
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: String,
}

pub async fn send(client: &TestClient, request: http::Request<Full<Bytes>>) -> Answer {
    let request = request.map(|b| b.boxed());
    let response = tokio::time::timeout(Duration::from_secs(30), client.request(request))
        .await
        .expect("response within 30 s")
        .expect("a response");
    let (parts, body) = response.into_parts();
    let body = body.collect().await.unwrap().to_bytes();
    Answer {
        status: parts.status,
        headers: parts.headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    }
}

pub async fn get(client: &TestClient, url: &str) -> Answer {
    send(
        client,
        http::Request::get(url).body(Full::default()).unwrap(),
    )
    .await
}

/// A streaming request body of `size` pattern bytes.
pub fn streaming_body(size: u64) -> http_body_util::combinators::BoxBody<Bytes, Infallible> {
    BodyExt::boxed(StreamBody::new(StreamExt::map(
        pattern_stream(size),
        |chunk| chunk.map(Frame::data),
    )))
}

/// Counts answers by body over `n` sequential GETs.
pub async fn tally(client: &TestClient, url: &str, n: usize) -> HashMap<String, usize> {
    let mut counts = HashMap::new();
    for _ in 0..n {
        let answer = get(client, url).await;
        assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
        *counts.entry(answer.body).or_insert(0) += 1;
    }
    counts
}

/// A shared log of answers, for concurrent tests.
pub type Log = Arc<Mutex<Vec<String>>>;
