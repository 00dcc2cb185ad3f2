//! The short body of an answer a layer writes itself (503, 502, 504).

use bytes::Bytes;
use http_body::{Frame, SizeHint};

/// A body of one chunk, known in full: what the response bodies of
/// [`LoadBalance`](crate::LoadBalance) and [`Forward`](crate::Forward)
/// carry when they answer instead of a backend.
#[derive(Debug)]
pub(crate) struct LocalBody(Option<Bytes>);

impl LocalBody {
    pub(crate) fn new(data: Bytes) -> Self {
        Self(Some(data))
    }

    /// The chunk, once.
    pub(crate) fn next_frame(&mut self) -> Option<Frame<Bytes>> {
        self.0.take().map(Frame::data)
    }

    pub(crate) fn is_end_stream(&self) -> bool {
        self.0.is_none()
    }

    pub(crate) fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.0.as_ref().map_or(0, |d| d.len() as u64))
    }
}
