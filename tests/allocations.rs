//! Heap allocations per proxied request through the example proxy's whole
//! stack (its server, tracing, metrics, failover, balance, passive health,
//! forward) on real sockets, counted by a counting global allocator.
//!
//! The count is deterministic (not a timing), so it is a test: it fails
//! when a change makes the request path allocate more than its budget.
//! Only allocations made on the proxy's own thread are counted; the client
//! and the backend run on other threads.

#[path = "../examples/proxy/client_addr.rs"]
mod client_addr;
#[path = "../examples/proxy/client_body.rs"]
mod client_body;
#[path = "../examples/proxy/failures.rs"]
#[allow(dead_code, unreachable_pub)]
mod failures;
#[path = "../examples/proxy/inline.rs"]
#[allow(dead_code, unreachable_pub)]
mod inline;
#[path = "../examples/proxy/server.rs"]
#[allow(dead_code, unreachable_pub)]
mod server;
#[path = "../examples/proxy/supervisor.rs"]
#[allow(dead_code, unreachable_pub)]
mod supervisor;
mod support;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use prometheus_client::registry::Registry;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tower::ServiceBuilder;
use tower_http::trace::TraceLayer;
use tower_lb::balance::RoundRobin;
use tower_lb::failover::FailoverLayer;
use tower_lb::health::{OutlierDetection, PassiveHealthLayer};
use tower_lb::metrics::MetricsLayer;
use tower_lb::{Backend, BackendSet, Forward, LoadBalanceLayer};

/// Allocations (alloc, alloc_zeroed and realloc) per proxied keep-alive GET
/// that the request path may make: issue 10's target, 8, with room for
/// the rare periodic allocation that is not a request's (measured 8.000 to
/// 8.001 over 2,000 requests: a timer or history tick now and then). Any
/// allocation a change adds to every request, or to one request in twenty,
/// goes over it.
const BUDGET: f64 = 8.05;

struct Counting;

static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);
static BYTES: AtomicU64 = AtomicU64::new(0);
/// Allocations over [`SMALL`] bytes.
static LARGE: AtomicU64 = AtomicU64::new(0);

/// The largest request glibc's malloc serves from its per-thread cache
/// (tcache: chunks up to 1,040 bytes, 1,032 of them usable); a larger one
/// takes its slower general path, about 190 more instructions for the
/// allocation and more for its free (callgrind). The forwarding future is
/// boxed once a request and is kept under it in a release build (1,016
/// bytes): one more field of 24 bytes in it would cost every request that.
const SMALL: usize = 1032;

thread_local! {
    static COUNTED: Cell<bool> = const { Cell::new(false) };
}

fn note(size: usize) {
    if COUNTED.try_with(Cell::get).unwrap_or(false) {
        ALLOCATIONS.fetch_add(1, Relaxed);
        BYTES.fetch_add(size as u64, Relaxed);
        if size > SMALL {
            LARGE.fetch_add(1, Relaxed);
        }
    }
}

// SAFETY: every call is passed on to the system allocator unchanged; the
// counter only observes.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note(new_size);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Runs the example's stack on a current-thread runtime in a thread of its
/// own, whose allocations are the ones counted.
fn start_proxy(backend: std::net::SocketAddr) -> std::net::SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        COUNTED.with(|c| c.set(true));
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async move {
            let listener = TcpListener::from_std(listener).unwrap();
            let backend: Backend = format!("http://{backend}").parse().unwrap();
            let set = BackendSet::new([backend]);
            let mut registry = Registry::default();
            let service = ServiceBuilder::new()
                .layer(TraceLayer::new_for_http())
                .layer(MetricsLayer::new(&set, &mut registry))
                .layer(FailoverLayer::new().max_retries(2))
                .layer(LoadBalanceLayer::new(set.clone(), RoundRobin::new()))
                .layer(PassiveHealthLayer::new(
                    set.clone(),
                    OutlierDetection::new(),
                ))
                .service(Forward::new());
            let limits = server::Limits {
                header_timeout: Duration::from_secs(10),
                max_header_size: 16 * 1024,
                idle_timeout: Duration::from_secs(60),
                max_connections: 100,
            };
            server::serve(
                listener,
                service,
                limits,
                std::future::pending(),
                Duration::ZERO,
            )
            .await;
        });
    });
    addr
}

/// Sends `n` keep-alive GETs on `stream`, reading each answer whole.
async fn gets(stream: &mut TcpStream, n: usize) {
    let mut buffer = vec![0u8; 4096];
    for _ in 0..n {
        stream
            .write_all(b"GET /x HTTP/1.1\r\nHost: shop.example\r\nUser-Agent: t\r\n\r\n")
            .await
            .unwrap();
        let mut have = 0;
        loop {
            let n = stream.read(&mut buffer[have..]).await.unwrap();
            assert!(n > 0, "the proxy closed the connection");
            have += n;
            let text = &buffer[..have];
            if let Some(end) = text.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&text[..end]).to_ascii_lowercase();
                assert!(head.starts_with("http/1.1 200"), "{head}");
                let length: usize = head
                    .split("\r\n")
                    .find_map(|l| l.strip_prefix("content-length: "))
                    .and_then(|v| v.parse().ok())
                    .expect("a content-length");
                if have >= end + 4 + length {
                    assert_eq!(have, end + 4 + length, "one answer per request");
                    break;
                }
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proxied_keep_alive_get_stays_within_its_allocation_budget() {
    // The example runs with a subscriber at `info`: spans below it are off.
    let _ = tracing_subscriber::fmt()
        .with_env_filter("info")
        .with_writer(std::io::sink)
        .try_init();
    let backend = support::counting::CountingBackend::start(false).await;
    let proxy = start_proxy(backend.addr);
    let mut stream = TcpStream::connect(proxy).await.unwrap();
    stream.set_nodelay(true).unwrap();
    // Warm: pools, buffers, metric families, the runtime's own caches.
    gets(&mut stream, 300).await;
    const N: u64 = 2_000;
    let (allocations, bytes) = (ALLOCATIONS.load(Relaxed), BYTES.load(Relaxed));
    let large = LARGE.load(Relaxed);
    gets(&mut stream, N as usize).await;
    let per_request = (ALLOCATIONS.load(Relaxed) - allocations) as f64 / N as f64;
    let bytes_per_request = (BYTES.load(Relaxed) - bytes) as f64 / N as f64;
    let large_per_request = (LARGE.load(Relaxed) - large) as f64 / N as f64;
    println!(
        "{per_request:.3} allocations, {bytes_per_request:.0} bytes, \
         {large_per_request:.3} over {SMALL} bytes per proxied GET"
    );
    assert!(
        per_request <= BUDGET,
        "{per_request:.2} allocations per request, over the budget of {BUDGET}"
    );
    // Futures are several times larger in a debug build: the size is held
    // in a release one (`.ci/run` runs this test in both).
    if cfg!(not(debug_assertions)) {
        assert!(
            large_per_request < 0.05,
            "{large_per_request:.2} allocations over {SMALL} bytes per request: \
             the forwarding future (or another per-request box) outgrew glibc's \
             per-thread cache"
        );
    }
}
