//! The forwarding service's response future.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use http::Response;
use hyper::body::Incoming;
use hyper_util::client::legacy;
use pin_project_lite::pin_project;
use tokio::time::Sleep;

use http::StatusCode;
use http::header::UPGRADE;

use super::ResponseBody;
use super::headers::{keep_upgrade, strip_hop_by_hop};
use super::tunnel::Tunnel;
use crate::{Error, ErrorKind};

pin_project! {
    /// Resolves to the backend's response (hop-by-hop headers removed), or
    /// to a 502 / 504 answer carrying the [`Error`].
    pub struct ResponseFuture {
        #[pin]
        inner: legacy::ResponseFuture,
        #[pin]
        deadline: Option<Sleep>,
        tunnel: Option<Tunnel>,
    }
}

impl ResponseFuture {
    pub(crate) fn new(
        inner: legacy::ResponseFuture,
        timeout: Option<Duration>,
        tunnel: Option<Tunnel>,
    ) -> Self {
        Self {
            inner,
            deadline: timeout.map(tokio::time::sleep),
            tunnel,
        }
    }
}

impl Future for ResponseFuture {
    type Output = Result<Response<ResponseBody>, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        if let Poll::Ready(result) = this.inner.poll(cx) {
            return Poll::Ready(Ok(match result {
                Ok(response) => answer(response, this.tunnel.take()),
                Err(error) => failure(error).to_response(),
            }));
        }
        if let Some(deadline) = this.deadline.as_pin_mut()
            && deadline.poll(cx).is_ready()
        {
            return Poll::Ready(Ok(Error::new(ErrorKind::Timeout).to_response()));
        }
        Poll::Pending
    }
}

fn answer(mut response: Response<Incoming>, tunnel: Option<Tunnel>) -> Response<ResponseBody> {
    let switching = response.status() == StatusCode::SWITCHING_PROTOCOLS;
    let upgrade = match (switching, tunnel) {
        (true, Some(tunnel)) => {
            tunnel.spawn(hyper::upgrade::on(&mut response));
            response.headers().get(UPGRADE).cloned()
        }
        _ => None,
    };
    let (mut parts, body) = response.into_parts();
    strip_hop_by_hop(&mut parts.headers);
    if let Some(protocol) = upgrade {
        keep_upgrade(&mut parts.headers, protocol);
    }
    Response::from_parts(parts, ResponseBody::upstream(body))
}

/// Connect failures (the backend never saw the request) are told apart from
/// failures after the request was sent: only the former are always safe to
/// retry.
fn failure(error: legacy::Error) -> Error {
    let kind = if error.is_connect() {
        ErrorKind::Connect
    } else {
        ErrorKind::Upstream
    };
    Error::new(kind).with_source(error)
}

impl std::fmt::Debug for ResponseFuture {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}
