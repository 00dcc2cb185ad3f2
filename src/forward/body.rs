//! The forwarding service's response body.

use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use pin_project_lite::pin_project;

use crate::local_body::LocalBody;

use super::pool::Lease;

pin_project! {
    /// The backend's body, streamed as it arrives, holding its pooled
    /// connection until the last byte (then the connection goes back to the
    /// pool); or a short local body (an error answer).
    pub struct ResponseBody<B> {
        #[pin]
        kind: Kind<B>,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<B> {
        Upstream {
            #[pin]
            body: Incoming,
            lease: Option<Lease<B>>,
        },
        Local {
            body: LocalBody,
        },
    }
}

impl<B> ResponseBody<B> {
    pub(crate) fn upstream(body: Incoming, lease: Option<Lease<B>>) -> Self {
        // A body that is empty from the start (HEAD, 204, 304, length 0)
        // may never be polled: the exchange is already over.
        let lease = match lease {
            Some(lease) if body.is_end_stream() => {
                lease.release();
                None
            }
            lease => lease,
        };
        Self {
            kind: Kind::Upstream { body, lease },
        }
    }
}

impl<B> From<Bytes> for ResponseBody<B> {
    fn from(data: Bytes) -> Self {
        Self {
            kind: Kind::Local {
                body: LocalBody::new(data),
            },
        }
    }
}

impl<B> Body for ResponseBody<B> {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        match self.project().kind.project() {
            KindProj::Upstream { mut body, lease } => {
                let frame = ready!(body.as_mut().poll_frame(cx));
                let ended = match &frame {
                    None => true,
                    Some(Ok(_)) => body.is_end_stream(),
                    // A broken body: the connection is not reused.
                    Some(Err(_)) => {
                        lease.take();
                        false
                    }
                };
                if ended && let Some(lease) = lease.take() {
                    lease.release();
                }
                Poll::Ready(frame)
            }
            KindProj::Local { body } => Poll::Ready(body.next_frame().map(Ok)),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Upstream { body, .. } => body.is_end_stream(),
            Kind::Local { body } => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Upstream { body, .. } => body.size_hint(),
            Kind::Local { body } => body.size_hint(),
        }
    }
}

impl<B> std::fmt::Debug for ResponseBody<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match &self.kind {
            Kind::Upstream { .. } => "upstream",
            Kind::Local { .. } => "local",
        };
        f.debug_struct("ResponseBody").field("kind", &kind).finish()
    }
}
