//! The connection's peer on each request, set in place.

use std::task::{Context, Poll};

use http::Request;
use tower::Service;
use tower_lb::ClientAddr;

/// Sets each request's [`ClientAddr`] to the connection's peer, as
/// tower-http's `AddExtension` would, but in place when the request already
/// carries one.
///
/// The connection's own loop hands each plain request the extension map
/// the last response brought back, emptied but for the address this layer
/// set last time (`inline::recycle`): overwriting it where it is costs no
/// box and no insert, where `AddExtension` allocated one a request. Every
/// request still starts with the connection's address and nothing else of
/// the request before it.
#[derive(Clone, Debug)]
pub struct SetClientAddr<S> {
    inner: S,
    addr: ClientAddr,
}

impl<S> SetClientAddr<S> {
    /// `inner`, with `addr` on every request.
    pub fn new(inner: S, addr: ClientAddr) -> Self {
        Self { inner, addr }
    }
}

impl<S, B> Service<Request<B>> for SetClientAddr<S>
where
    S: Service<Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<B>) -> Self::Future {
        let extensions = request.extensions_mut();
        match extensions.get_mut::<ClientAddr>() {
            // A layer may have changed it during the last request.
            Some(addr) if addr.addr() == self.addr.addr() => {}
            Some(addr) => addr.clone_from(&self.addr),
            None => {
                extensions.insert(self.addr.clone());
            }
        }
        self.inner.call(request)
    }
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;

    use tower::ServiceExt;

    use super::*;

    fn peer(text: &str) -> ClientAddr {
        ClientAddr::new(text.parse().unwrap())
    }

    async fn seen(request: Request<()>) -> String {
        let service = SetClientAddr::new(
            tower::service_fn(|request: Request<()>| async move {
                let addr = request
                    .extensions()
                    .get::<ClientAddr>()
                    .map(ClientAddr::addr);
                Ok::<_, Infallible>(format!("{addr:?}"))
            }),
            peer("192.0.2.7:5000"),
        );
        service.oneshot(request).await.unwrap()
    }

    #[tokio::test]
    async fn every_request_carries_the_connections_address() {
        // None yet: inserted.
        assert_eq!(seen(Request::new(())).await, "Some(192.0.2.7:5000)");
        // Kept from the last request: left as it is.
        let mut request = Request::new(());
        request.extensions_mut().insert(peer("192.0.2.7:5000"));
        assert_eq!(seen(request).await, "Some(192.0.2.7:5000)");
        // Changed by a layer during the last request: set back.
        let mut request = Request::new(());
        request.extensions_mut().insert(peer("198.51.100.1:80"));
        assert_eq!(seen(request).await, "Some(192.0.2.7:5000)");
    }
}
