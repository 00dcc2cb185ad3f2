//! The response body, read straight from the connection.
//!
//! Each data frame is a slice split off the connection's read buffer
//! (`split_to(n).freeze()`): no copy, and the buffer's memory is taken back
//! by the next read's `reserve` once the frames are dropped. The reader owns
//! the connection while the body streams; when the body has ended cleanly,
//! on a connection that may be reused and holds no byte past the body, the
//! connection can be taken back for the pool. Anything else closes it: a
//! backend that sent more than it declared is out of step with us.

use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::{Bytes, BytesMut};
use http_body::{Body, Frame, SizeHint};
use tokio::io::{AsyncRead, AsyncWrite};

use super::chunked::{ChunkedDecoder, Step};
use super::conn::{Conn, poll_read_buf};
use super::error::{Error, Kind};
use super::response_head::Framing;

/// A response body on its connection.
#[derive(Debug)]
pub(crate) struct BodyReader<S> {
    /// The connection: `None` once closed (an error, a body that ends the
    /// connection, or after it was taken back).
    conn: Option<Box<Conn<S>>>,
    decoder: Decoder,
    /// Whether the response allows another exchange on the connection.
    keep_alive: bool,
    ended: bool,
}

#[derive(Debug)]
enum Decoder {
    /// This many bytes still to come.
    Length(u64),
    Chunked(ChunkedDecoder),
    /// Until the end of the stream.
    Close,
}

impl<S> BodyReader<S>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    /// Gives the connection its timer back, if it is still open.
    pub(crate) fn keep_timer(&mut self, timer: super::deadline::Timer) {
        if let Some(conn) = &mut self.conn {
            conn.timer = timer;
        }
    }

    pub(super) fn new(conn: Box<Conn<S>>, framing: Framing, keep_alive: bool) -> Self {
        let decoder = match framing {
            Framing::Empty => Decoder::Length(0),
            Framing::Length(length) => Decoder::Length(length),
            Framing::Chunked => Decoder::Chunked(ChunkedDecoder::new()),
            Framing::Close => Decoder::Close,
        };
        let mut reader = Self {
            conn: Some(conn),
            decoder,
            keep_alive: keep_alive && framing != Framing::Close,
            ended: false,
        };
        if framing == Framing::Empty {
            // Ended before any poll: an empty body need never be polled.
            reader.finish();
        }
        reader
    }

    /// After the body has ended: the connection, if it may carry another
    /// exchange. `None` before the end, after an error, or when the
    /// connection is not reusable (it is closed then).
    pub(crate) fn take_reusable(&mut self) -> Option<Box<Conn<S>>> {
        if self.ended { self.conn.take() } else { None }
    }

    /// The body has ended: keep the connection only if it can be reused.
    fn finish(&mut self) {
        self.ended = true;
        match self.conn.as_mut() {
            Some(conn) if self.keep_alive && conn.read_buf.is_empty() => conn.reusable = true,
            _ => self.conn = None,
        }
    }

    fn fail(&mut self, error: Error) -> Poll<Option<Result<Frame<Bytes>, Error>>> {
        self.conn = None;
        Poll::Ready(Some(Err(error)))
    }
}

impl<S> Body for BodyReader<S>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    type Data = Bytes;
    type Error = Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Error>>> {
        let this = self.get_mut();
        if this.ended {
            return Poll::Ready(None);
        }
        loop {
            let Some(conn) = this.conn.as_mut() else {
                return Poll::Ready(None);
            };
            let step = match next(&mut this.decoder, &mut conn.read_buf) {
                Ok(step) => step,
                Err(error) => return this.fail(error),
            };
            match step {
                Step::Data(data) => {
                    let done = match &mut this.decoder {
                        Decoder::Length(remaining) => *remaining == 0,
                        Decoder::Chunked(decoder) => {
                            // An error here is found again by the next poll.
                            let _ = decoder.settle(&mut conn.read_buf);
                            decoder.is_done()
                        }
                        Decoder::Close => false,
                    };
                    if done {
                        this.finish();
                    }
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                Step::End => {
                    this.finish();
                    return Poll::Ready(None);
                }
                Step::NeedMore => {}
            }
            match ready!(poll_read_buf(&mut conn.io, &mut conn.read_buf, cx)) {
                Ok(0) if matches!(this.decoder, Decoder::Close) => {
                    this.finish();
                    return Poll::Ready(None);
                }
                Ok(0) => return this.fail(Error::new(Kind::BodyCut)),
                Ok(_) => {}
                Err(error) => return this.fail(Error::io(error)),
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.ended || self.conn.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        match &self.decoder {
            _ if self.is_end_stream() => SizeHint::with_exact(0),
            Decoder::Length(remaining) => SizeHint::with_exact(*remaining),
            Decoder::Chunked(_) | Decoder::Close => SizeHint::default(),
        }
    }
}

/// The next step of the body from what `buf` holds.
fn next(decoder: &mut Decoder, buf: &mut BytesMut) -> Result<Step, Error> {
    match decoder {
        Decoder::Length(0) => Ok(Step::End),
        Decoder::Length(remaining) => {
            if buf.is_empty() {
                return Ok(Step::NeedMore);
            }
            let n = usize::try_from(*remaining).map_or(buf.len(), |r| r.min(buf.len()));
            *remaining -= n as u64;
            Ok(Step::Data(buf.split_to(n).freeze()))
        }
        Decoder::Chunked(decoder) => decoder.decode(buf),
        Decoder::Close if buf.is_empty() => Ok(Step::NeedMore),
        Decoder::Close => Ok(Step::Data(buf.split().freeze())),
    }
}
