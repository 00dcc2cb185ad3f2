//! The forwarding service's response body.

use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use pin_project_lite::pin_project;

use super::h1::BodyReader;
use super::pool::Lease;
use super::stream::Stream;
use crate::body_end::{BodyEnd, body_end};
use crate::local_body::LocalBody;
use crate::{Error, ErrorKind};

pin_project! {
    /// The backend's body, streamed as it arrives: read straight from its
    /// HTTP/1.1 connection, which goes back to the pool after the last
    /// byte, or from hyper's HTTP/2 client; or a short local body (an error
    /// answer).
    ///
    /// Its errors are [`Error`]s of kind [`Upstream`](ErrorKind::Upstream):
    /// the backend broke the body off or framed it wrongly.
    pub struct ResponseBody {
        #[pin]
        kind: Kind,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind {
        Http1 {
            #[pin]
            body: BodyReader<Stream>,
            lease: Option<Lease>,
        },
        Http2 {
            #[pin]
            body: Incoming,
        },
        Local {
            body: LocalBody,
        },
    }
}

impl ResponseBody {
    pub(crate) fn http1(mut body: BodyReader<Stream>, lease: Lease) -> Self {
        // A body that is empty from the start (HEAD, 204, 304, length 0)
        // may never be polled: the exchange is already over.
        let lease = if body.is_end_stream() {
            if let Some(conn) = body.take_reusable() {
                lease.release(conn);
            }
            None
        } else {
            Some(lease)
        };
        Self {
            kind: Kind::Http1 { body, lease },
        }
    }

    pub(crate) fn http2(body: Incoming) -> Self {
        Self {
            kind: Kind::Http2 { body },
        }
    }
}

impl From<Bytes> for ResponseBody {
    fn from(data: Bytes) -> Self {
        Self {
            kind: Kind::Local {
                body: LocalBody::new(data),
            },
        }
    }
}

fn broken(error: impl Into<crate::BoxError>) -> Error {
    Error::new(ErrorKind::Upstream).with_source(error)
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Error>>> {
        match self.project().kind.project() {
            KindProj::Http1 { mut body, lease } => {
                let frame = ready!(body.as_mut().poll_frame(cx));
                // After its last frame the connection may carry another
                // exchange; after an error the reader has closed it.
                let ended = body_end(&frame, || body.is_end_stream());
                if ended == Some(BodyEnd::Complete)
                    && let Some(lease) = lease.take()
                    && let Some(conn) = body.take_reusable()
                {
                    lease.release(conn);
                }
                Poll::Ready(frame.map(|f| f.map_err(broken)))
            }
            KindProj::Http2 { body } => {
                Poll::Ready(ready!(body.poll_frame(cx)).map(|f| f.map_err(broken)))
            }
            KindProj::Local { body } => Poll::Ready(body.next_frame().map(Ok)),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Http1 { body, .. } => body.is_end_stream(),
            Kind::Http2 { body } => body.is_end_stream(),
            Kind::Local { body } => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Http1 { body, .. } => body.size_hint(),
            Kind::Http2 { body } => body.size_hint(),
            Kind::Local { body } => body.size_hint(),
        }
    }
}

impl std::fmt::Debug for ResponseBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match &self.kind {
            Kind::Http1 { .. } => "http1",
            Kind::Http2 { .. } => "http2",
            Kind::Local { .. } => "local",
        };
        f.debug_struct("ResponseBody").field("kind", &kind).finish()
    }
}
