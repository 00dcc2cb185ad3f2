//! hyper's server alone, set up as the example proxy sets it up, answering
//! `200 ok` itself on one current-thread runtime.
//!
//! This is the floor of the proxy's client-facing side: `benches/e2e.sh`
//! runs it beside nginx answering directly (both on one core, the same
//! load), so the share of the proxy's cost that hyper's server takes, and
//! that no change below it can remove, is measured rather than guessed.
//!
//! ```text
//! cargo run --release --example server_floor -- 127.0.0.1:18080
//! ```

use std::convert::Infallible;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:18080".into());
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(&addr).await?;
        println!("answering on http://{addr}/");
        let mut builder = auto::Builder::new(TokioExecutor::new());
        // The proxy's own setting (its default --max-header-size).
        builder.http1().max_buf_size(16 * 1024);
        loop {
            let (stream, _) = listener.accept().await?;
            let _ = stream.set_nodelay(true);
            let connection = builder
                .serve_connection_with_upgrades(TokioIo::new(stream), service_fn(answer))
                .into_owned();
            tokio::spawn(connection);
        }
    })
}

async fn answer(_: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    Ok(Response::new(Full::new(Bytes::from_static(b"ok\n"))))
}
