//! The response body that holds a request's in-flight count.

use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;

use crate::backend::InFlight;
use crate::body_end::body_end;
use crate::local_body::LocalBody;

pin_project! {
    /// The backend's response body, holding the request's in-flight count
    /// until the body ends or is dropped; or a short local body (a 503 the
    /// balancer wrote itself).
    pub struct ResponseBody<B> {
        #[pin]
        kind: Kind<B>,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<B> {
        Backend {
            #[pin]
            body: B,
            in_flight: Option<InFlight>,
        },
        Local {
            body: LocalBody,
        },
    }
}

impl<B> ResponseBody<B> {
    pub(crate) fn new(body: B, in_flight: InFlight) -> Self {
        Self {
            kind: Kind::Backend {
                body,
                in_flight: Some(in_flight),
            },
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

impl<B: Body<Data = Bytes>> Body for ResponseBody<B> {
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        match self.project().kind.project() {
            KindProj::Backend {
                mut body,
                in_flight,
            } => {
                let frame = ready!(body.as_mut().poll_frame(cx));
                if body_end(&frame, || body.is_end_stream()).is_some() {
                    in_flight.take();
                }
                Poll::Ready(frame)
            }
            KindProj::Local { body } => Poll::Ready(body.next_frame().map(Ok)),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Backend { body, .. } => body.is_end_stream(),
            Kind::Local { body } => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Backend { body, .. } => body.size_hint(),
            Kind::Local { body } => body.size_hint(),
        }
    }
}

impl<B> std::fmt::Debug for ResponseBody<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match &self.kind {
            Kind::Backend { in_flight, .. } if in_flight.is_some() => "backend (in flight)",
            Kind::Backend { .. } => "backend (ended)",
            Kind::Local { .. } => "local",
        };
        f.debug_struct("ResponseBody").field("kind", &kind).finish()
    }
}
