//! Demo backends, so the proxy runs with nothing else on the machine.

use axum::Router;
use axum::extract::Request;
use tokio::net::TcpListener;
use tower_lb::Backend;

/// Starts `count` small HTTP servers on ephemeral loopback ports; each
/// answers every request with its name, the method and the path.
pub async fn start(count: usize) -> std::io::Result<Vec<Backend>> {
    let mut backends = Vec::with_capacity(count);
    for n in 1..=count {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let app = Router::new().fallback(move |request: Request| async move {
            format!(
                "demo backend {n} ({addr}): {} {}\n",
                request.method(),
                request.uri()
            )
        });
        tokio::spawn(async move { axum::serve(listener, app).await });
        let url = format!("http://{addr}");
        backends.push(url.parse().map_err(std::io::Error::other)?);
    }
    Ok(backends)
}
