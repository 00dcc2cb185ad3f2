//! The forwarding service's response body.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use pin_project_lite::pin_project;

pin_project! {
    /// The backend's body, streamed as it arrives; or a short local body
    /// (an error answer).
    pub struct ResponseBody {
        #[pin]
        kind: Kind,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind {
        Upstream {
            #[pin]
            body: Incoming,
        },
        Local {
            data: Option<Bytes>,
        },
    }
}

impl ResponseBody {
    pub(crate) fn upstream(body: Incoming) -> Self {
        Self {
            kind: Kind::Upstream { body },
        }
    }
}

impl From<Bytes> for ResponseBody {
    fn from(data: Bytes) -> Self {
        Self {
            kind: Kind::Local { data: Some(data) },
        }
    }
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        match self.project().kind.project() {
            KindProj::Upstream { body } => body.poll_frame(cx),
            KindProj::Local { data } => Poll::Ready(data.take().map(|d| Ok(Frame::data(d)))),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Upstream { body } => body.is_end_stream(),
            Kind::Local { data } => data.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Upstream { body } => body.size_hint(),
            Kind::Local { data } => {
                SizeHint::with_exact(data.as_ref().map_or(0, |d| d.len() as u64))
            }
        }
    }
}

impl std::fmt::Debug for ResponseBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match &self.kind {
            Kind::Upstream { .. } => "upstream",
            Kind::Local { .. } => "local",
        };
        f.debug_struct("ResponseBody").field("kind", &kind).finish()
    }
}
