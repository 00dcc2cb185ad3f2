//! The body of a client's request, whichever server read its head.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use hyper::body::{Body, Frame, Incoming, SizeHint};

/// A request body: none or a small one read whole, for a request the
/// connection's own loop read (`inline.rs`), or hyper's, for every other
/// request.
#[derive(Debug)]
pub enum ClientBody {
    /// No body (and none to come: the request declared none).
    Empty,
    /// A body read whole with its head (taken by the first poll).
    Full(Option<Bytes>),
    /// Read by hyper's server.
    Hyper(Incoming),
}

impl Body for ClientBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        match self.get_mut() {
            ClientBody::Empty => Poll::Ready(None),
            ClientBody::Full(data) => Poll::Ready(data.take().map(|data| Ok(Frame::data(data)))),
            ClientBody::Hyper(body) => Pin::new(body).poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ClientBody::Empty => true,
            ClientBody::Full(data) => data.is_none(),
            ClientBody::Hyper(body) => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ClientBody::Empty => SizeHint::with_exact(0),
            ClientBody::Full(data) => {
                SizeHint::with_exact(data.as_ref().map_or(0, |data| data.len() as u64))
            }
            ClientBody::Hyper(body) => body.size_hint(),
        }
    }
}
