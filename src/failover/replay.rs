//! A request body that can be sent again, within a bound.

use std::fmt;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};

use bytes::Bytes;
use http::HeaderMap;
use http_body::{Body, Frame, SizeHint};

use crate::BoxError;

/// A request body that streams through as it arrives and keeps a copy of
/// what it has read, up to a bound, so that a clone can send it again to
/// another backend.
///
/// Nothing waits for the body: the first attempt streams it as the client
/// sends it (a streaming upload is not held back). A clone made for a retry
/// first replays the copy, then goes on reading the client's body where the
/// previous attempt left it (an attempt that failed to connect read nothing;
/// the retry reads it all). Once more than the bound has been read, the
/// copy is dropped and the body can no longer be replayed
/// ([`is_replayable`](Self::is_replayable) turns false): a large upload is
/// never buffered, and is not retried once it began to stream.
///
/// The state is shared by the clones of one request only, behind a mutex
/// that only they take.
pub struct ReplayBody<B> {
    kind: Kind<B>,
}

enum Kind<B> {
    /// No body at all (most GETs): nothing to keep, nothing to lock.
    Empty,
    /// Passed straight through, never replayed (failover without retries).
    Direct(B),
    Shared {
        shared: Arc<Mutex<Shared<B>>>,
        /// Data frames this clone has yielded.
        position: usize,
        trailers_sent: bool,
        size_hint: SizeHint,
    },
}

struct Shared<B> {
    /// The client's body, until it ends.
    inner: Option<B>,
    limit: usize,
    /// Every data frame read so far, while within the limit.
    copy: Vec<Bytes>,
    copied: usize,
    /// Data frames read from the client's body so far.
    read: usize,
    trailers: Option<HeaderMap>,
    ended: bool,
    overflowed: bool,
    failed: bool,
}

impl<B: Body> ReplayBody<B> {
    /// Wraps `body`, keeping up to `limit` bytes for replay.
    pub fn new(body: B, limit: usize) -> Self {
        if body.is_end_stream() {
            return Self { kind: Kind::Empty };
        }
        let size_hint = body.size_hint();
        Self {
            kind: Kind::Shared {
                shared: Arc::new(Mutex::new(Shared {
                    inner: Some(body),
                    limit,
                    copy: Vec::new(),
                    copied: 0,
                    read: 0,
                    trailers: None,
                    ended: false,
                    overflowed: false,
                    failed: false,
                })),
                position: 0,
                trailers_sent: false,
                size_hint,
            },
        }
    }
}

impl<B> ReplayBody<B> {
    /// `body` passed through as it is, kept for no replay.
    pub(crate) fn direct(body: B) -> Self {
        Self {
            kind: Kind::Direct(body),
        }
    }

    /// Whether a clone can still send the whole body: nothing beyond the
    /// bound was read and reading did not fail.
    pub fn is_replayable(&self) -> bool {
        match &self.kind {
            Kind::Empty => true,
            Kind::Direct(_) => false,
            Kind::Shared { shared, .. } => {
                let shared = shared.lock().unwrap_or_else(PoisonError::into_inner);
                !shared.overflowed && !shared.failed
            }
        }
    }
}

impl<B> Clone for ReplayBody<B> {
    /// A body that starts over from the first byte. (A pass-through body
    /// cannot start over: its clone is empty, and only the original is ever
    /// sent.)
    fn clone(&self) -> Self {
        match &self.kind {
            Kind::Empty | Kind::Direct(_) => Self { kind: Kind::Empty },
            Kind::Shared {
                shared, size_hint, ..
            } => Self {
                kind: Kind::Shared {
                    shared: Arc::clone(shared),
                    position: 0,
                    trailers_sent: false,
                    size_hint: *size_hint,
                },
            },
        }
    }
}

/// The error of a body that cannot be replayed any more.
#[derive(Debug)]
struct NotReplayable;

impl fmt::Display for NotReplayable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("request body can no longer be replayed")
    }
}

impl std::error::Error for NotReplayable {}

impl<B> Body for ReplayBody<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let (shared, position, trailers_sent) = match &mut self.get_mut().kind {
            Kind::Empty => return Poll::Ready(None),
            Kind::Direct(body) => {
                return Pin::new(body)
                    .poll_frame(cx)
                    .map(|frame| frame.map(|f| f.map_err(Into::into)));
            }
            Kind::Shared {
                shared,
                position,
                trailers_sent,
                ..
            } => (shared, position, trailers_sent),
        };
        let mut state = shared.lock().unwrap_or_else(PoisonError::into_inner);
        // Replay what an earlier attempt read.
        if *position < state.read {
            if state.overflowed || *position >= state.copy.len() {
                return Poll::Ready(Some(Err(NotReplayable.into())));
            }
            let data = state.copy[*position].clone();
            *position += 1;
            return Poll::Ready(Some(Ok(Frame::data(data))));
        }
        if state.ended {
            if !*trailers_sent && let Some(trailers) = state.trailers.clone() {
                *trailers_sent = true;
                return Poll::Ready(Some(Ok(Frame::trailers(trailers))));
            }
            return Poll::Ready(None);
        }
        // Caught up: read on from the client's body.
        let Some(inner) = state.inner.as_mut() else {
            return Poll::Ready(None);
        };
        match Pin::new(inner).poll_frame(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(None) => {
                state.ended = true;
                state.inner = None;
                Poll::Ready(None)
            }
            Poll::Ready(Some(Err(error))) => {
                state.failed = true;
                Poll::Ready(Some(Err(error.into())))
            }
            Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                Ok(data) => {
                    state.read += 1;
                    *position += 1;
                    if !state.overflowed {
                        if state.copied + data.len() <= state.limit {
                            state.copied += data.len();
                            state.copy.push(data.clone());
                        } else {
                            state.overflowed = true;
                            state.copy = Vec::new();
                        }
                    }
                    Poll::Ready(Some(Ok(Frame::data(data))))
                }
                Err(frame) => {
                    if let Some(trailers) = frame.trailers_ref() {
                        state.trailers = Some(trailers.clone());
                        *trailers_sent = true;
                    }
                    Poll::Ready(Some(Ok(frame)))
                }
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Empty => true,
            Kind::Direct(body) => body.is_end_stream(),
            Kind::Shared {
                shared,
                position,
                trailers_sent,
                ..
            } => {
                let state = shared.lock().unwrap_or_else(PoisonError::into_inner);
                state.ended
                    && *position >= state.read
                    && (*trailers_sent || state.trailers.is_none())
            }
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Empty => SizeHint::with_exact(0),
            Kind::Direct(body) => body.size_hint(),
            Kind::Shared { size_hint, .. } => *size_hint,
        }
    }
}

impl<B> fmt::Debug for ReplayBody<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            Kind::Empty => f.write_str("ReplayBody(empty)"),
            Kind::Direct(_) => f.write_str("ReplayBody(direct)"),
            Kind::Shared { position, .. } => f
                .debug_struct("ReplayBody")
                .field("position", position)
                .field("replayable", &self.is_replayable())
                .finish(),
        }
    }
}

#[cfg(test)]
mod tests {
    use http_body_util::{BodyExt, StreamBody};

    use super::*;

    type Chunks = StreamBody<
        futures_util::stream::Iter<
            std::vec::IntoIter<Result<Frame<Bytes>, std::convert::Infallible>>,
        >,
    >;

    fn chunks(parts: &[&'static str]) -> Chunks {
        let frames: Vec<_> = parts
            .iter()
            .map(|p| Ok(Frame::data(Bytes::from_static(p.as_bytes()))))
            .collect();
        StreamBody::new(futures_util::stream::iter(frames))
    }

    async fn read_all<B>(body: B) -> Result<Bytes, BoxError>
    where
        B: Body<Data = Bytes, Error = BoxError>,
    {
        Ok(body.collect().await?.to_bytes())
    }

    #[tokio::test]
    async fn a_clone_replays_the_whole_body() {
        let body = ReplayBody::new(chunks(&["hello ", "world"]), 1024);
        let retry = body.clone();
        assert_eq!(read_all(body).await.unwrap(), "hello world");
        assert!(retry.is_replayable());
        assert_eq!(read_all(retry).await.unwrap(), "hello world");
    }

    #[tokio::test]
    async fn a_retry_continues_where_a_partial_attempt_stopped() {
        let mut first = ReplayBody::new(chunks(&["a", "b", "c"]), 1024);
        let retry = first.clone();
        let frame = first.frame().await.unwrap().unwrap();
        assert_eq!(frame.into_data().unwrap(), "a");
        drop(first);
        assert_eq!(read_all(retry).await.unwrap(), "abc");
    }

    #[tokio::test]
    async fn an_unread_body_is_replayable_whatever_its_size() {
        let body = ReplayBody::new(chunks(&["0123456789", "0123456789"]), 4);
        let retry = body.clone();
        drop(body); // the attempt never connected
        assert!(retry.is_replayable());
        assert_eq!(read_all(retry).await.unwrap().len(), 20);
    }

    #[tokio::test]
    async fn reading_past_the_bound_ends_replay() {
        let body = ReplayBody::new(chunks(&["0123456789", "0123456789"]), 15);
        let retry = body.clone();
        assert_eq!(
            read_all(body).await.unwrap().len(),
            20,
            "the first attempt streams all"
        );
        assert!(!retry.is_replayable());
        assert!(read_all(retry).await.is_err());
    }

    #[tokio::test]
    async fn empty_bodies_need_no_state() {
        let body = ReplayBody::new(http_body_util::Empty::<Bytes>::new(), 1024);
        assert!(body.is_end_stream());
        assert!(matches!(body.kind, Kind::Empty));
        assert_eq!(read_all(body.clone()).await.unwrap().len(), 0);
    }
}
