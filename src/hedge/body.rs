//! The request body of an attempt: the client's, or none for a hedge.

use std::pin::Pin;
use std::task::{Context, Poll};

use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;

pin_project! {
    /// The body an attempt sends: the client's own for the first attempt,
    /// nothing for a hedge.
    ///
    /// Only requests without a body are hedged, so a hedge needs no copy of
    /// one; this type lets it send "no body" whatever the client's body
    /// type is (hyper's `Incoming` has no empty value to make).
    pub struct RequestBody<B> {
        #[pin]
        kind: Kind<B>,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<B> {
        Client {
            #[pin]
            body: B,
        },
        Empty,
    }
}

impl<B> RequestBody<B> {
    pub(crate) fn client(body: B) -> Self {
        Self {
            kind: Kind::Client { body },
        }
    }

    pub(crate) fn empty() -> Self {
        Self { kind: Kind::Empty }
    }
}

impl<B: Body> Body for RequestBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<B::Data>, B::Error>>> {
        match self.project().kind.project() {
            KindProj::Client { body } => body.poll_frame(cx),
            KindProj::Empty => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Client { body } => body.is_end_stream(),
            Kind::Empty => true,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Client { body } => body.size_hint(),
            Kind::Empty => SizeHint::with_exact(0),
        }
    }
}

impl<B> std::fmt::Debug for RequestBody<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match &self.kind {
            Kind::Client { .. } => "client",
            Kind::Empty => "empty",
        };
        f.debug_struct("RequestBody").field("kind", &kind).finish()
    }
}
