//! The accept loop: one hyper connection task per client.

use std::convert::Infallible;
use std::time::Duration;

use http::{Request, Response};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tower::{Layer, Service};
use tower_http::add_extension::AddExtensionLayer;
use tower_lb::ClientAddr;

/// Serves `service` on `listener` until the task is dropped. HTTP/1.1 and
/// HTTP/2 (prior knowledge) on the same port.
pub async fn serve<S, B>(listener: TcpListener, service: S)
where
    S: Service<Request<Incoming>, Response = Response<B>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    B: http_body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let builder = auto::Builder::new(TokioExecutor::new());
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(error) => {
                // Out of file descriptors and the like: back off, keep serving.
                eprintln!("accept failed: {error}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let service = AddExtensionLayer::new(ClientAddr::new(peer)).layer(service.clone());
        let builder = builder.clone();
        tokio::spawn(async move {
            let io = TokioIo::new(stream);
            let _ = builder
                .serve_connection(io, TowerToHyperService::new(service))
                .await;
        });
    }
}
