//! One HTTP/1.1 connection to a backend and the exchange on it.
//!
//! The exchange is a plain `async fn` that the request's own future awaits:
//! it writes the head (and a small body with it, in one write), streams the
//! rest of the body, reads the response head, and hands the connection to
//! the response body, which gives it back once the body has ended cleanly.
//! Nothing is spawned and nothing crosses a channel; both buffers live with
//! the connection and are reused by every exchange on it.
//!
//! The request is sent whole before the response is read, as a proxy's
//! upstream exchange nearly always is. A backend that answers early and
//! closes (a 413 to a large upload, or a whole answer to a request whose
//! body it did not want to read) makes a write fail: its answer is then
//! read from what it sent before closing, and is the exchange's, not a
//! 502. One that answers early and stops reading without closing makes
//! the write wait until the timeout; one that streams its answer while
//! still reading (an echo) can fill both directions' buffers: such
//! full-duplex exchanges are not supported here.

use std::future::{Future, poll_fn};
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

use bytes::{Buf, BytesMut};
use futures_util::TryFutureExt;
use futures_util::future::Either;
use http::HeaderValue;
use http_body::{Body, Frame};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};

use super::body::BodyReader;
use super::deadline::Timer;
use super::error::{Error, Kind};
use super::request_head::{BodyFraming, RequestHead, write_hex};
use super::response_head::{self, Parsed};
use crate::BoxError;
use crate::extensions::ReturnHead;

/// The default limit on a response head: 64 KiB, nginx's largest
/// `proxy_buffer_size` advice and far above what any real backend sends.
pub(crate) const DEFAULT_MAX_HEAD: usize = 64 * 1024;
/// What a read asks the kernel for at least. 16 KiB: a typical response in
/// one read, and large bodies in few.
const READ_SIZE: usize = 16 * 1024;
/// Below this much free room the read buffer is grown (or reclaimed)
/// before a read.
const MIN_READ_ROOM: usize = 2 * 1024;
/// Body bytes up to this size are copied into the write buffer and leave
/// with what precedes them (a small POST goes in one write with its head);
/// larger ones are written from where they are.
const COALESCE: usize = 16 * 1024;
/// The most interim (1xx) responses read before the final one.
const MAX_INTERIM: usize = 16;

/// A connection to a backend, with its buffers.
///
/// Always boxed ([`Conn::new`] makes it so): it is moved at every turn of
/// an exchange (out of the pool, into the read future, into the response
/// body, back to the pool), and the body moves with the response through
/// every layer above `Forward`. A box there is a pointer moved instead of
/// the connection's ~130 bytes, for one allocation per connection, not per
/// exchange.
#[derive(Debug)]
pub(crate) struct Conn<S> {
    pub(super) io: S,
    pub(super) write_buf: Vec<u8>,
    pub(super) read_buf: BytesMut,
    max_head: usize,
    /// Whether the connection may carry another exchange: false from the
    /// start of an exchange until its response body ended cleanly.
    pub(super) reusable: bool,
    /// Room for the names of the response heads read on this connection.
    names: response_head::Scratch,
    /// The timer of this connection's exchanges' timeout (`deadline.rs`),
    /// taken out while an exchange runs on it.
    pub(super) timer: Timer,
    /// Whether any byte of this exchange's request was written.
    written: bool,
    /// Whether any frame was taken from this exchange's request body.
    body_started: bool,
}

/// What the backend answered.
#[derive(Debug)]
pub(crate) enum Answer<S> {
    /// A final response; its body reads from the connection.
    Response(http::Response<BodyReader<S>>),
    /// `101 Switching Protocols`: whether it is an upgrade the caller
    /// allowed is the caller's to decide (compare `protocol` with what was
    /// asked); the connection is no longer HTTP.
    Upgrade {
        response: http::Response<()>,
        /// The response's `Upgrade` header.
        protocol: Option<HeaderValue>,
        upgraded: Upgraded<S>,
    },
}

impl<S: AsyncRead + AsyncWrite + Unpin> Answer<S> {
    /// Gives the connection its timer back (an upgraded one has no more
    /// use for it).
    pub(crate) fn keep_timer(&mut self, timer: Timer) {
        if let Self::Response(response) = self {
            response.body_mut().keep_timer(timer);
        }
    }
}

/// A connection after `101`: the stream and whatever the backend had
/// already sent past the head (the first bytes of the new protocol).
#[derive(Debug)]
pub(crate) struct Upgraded<S> {
    io: S,
    read_ahead: BytesMut,
}

impl<S> Upgraded<S> {
    /// The stream, and the bytes to hand to the other side before any read.
    pub(crate) fn into_parts(self) -> (S, bytes::Bytes) {
        (self.io, self.read_ahead.freeze())
    }
}

impl<S> Conn<S>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    /// A new connection over `io` (connected, handshaken if TLS).
    pub(crate) fn new(io: S) -> Box<Self> {
        Box::new(Self {
            io,
            write_buf: Vec::with_capacity(1024),
            read_buf: BytesMut::with_capacity(READ_SIZE),
            max_head: DEFAULT_MAX_HEAD,
            reusable: true,
            names: response_head::Scratch::default(),
            timer: Timer::default(),
            written: false,
            body_started: false,
        })
    }

    /// The connection's timer, for an exchange to run under (and to be
    /// given back with [`Answer::keep_timer`]).
    pub(crate) fn take_timer(&mut self) -> Timer {
        std::mem::take(&mut self.timer)
    }

    /// Sets the limit on the size of a response head.
    pub(crate) fn with_max_head(mut self: Box<Self>, max_head: usize) -> Box<Self> {
        self.max_head = max_head;
        self
    }

    /// The stream (for a test).
    #[cfg(test)]
    pub(crate) fn into_io(self) -> S {
        self.io
    }

    /// For a pool's checkout: whether the idle connection still looks
    /// usable. Reads without waiting: nothing to read is good; the end of
    /// the stream, an error or bytes nobody asked for mean the backend
    /// closed it or is out of step, and it is not reused.
    pub(crate) fn is_reusable_now(&mut self) -> bool {
        if !self.reusable || !self.read_buf.is_empty() {
            return false;
        }
        let mut cx = Context::from_waker(Waker::noop());
        let mut byte = [0u8; 1];
        let mut read = ReadBuf::new(&mut byte);
        match Pin::new(&mut self.io).poll_read(&mut cx, &mut read) {
            Poll::Pending => true,
            Poll::Ready(_) => {
                self.reusable = false;
                false
            }
        }
    }

    /// One exchange: sends the request (`head`, then `body` framed as
    /// `head.framing` says) and reads the response head: [`write`] then
    /// [`read`] with a new header map.
    ///
    /// [`write`]: Self::write
    /// [`read`]: Self::read
    #[cfg(test)]
    pub(crate) async fn send<B>(
        mut self: Box<Self>,
        head: &RequestHead<'_>,
        body: Pin<&mut B>,
    ) -> Result<Answer<S>, Error>
    where
        B: Body,
        B::Error: Into<BoxError>,
    {
        let written = self.write(head, body).await;
        let head_request = head.parts.method == http::Method::HEAD;
        self.read(written, head_request, &mut http::HeaderMap::new(), None)
            .await
    }

    /// The first half of an exchange: writes the request (`head`, then
    /// `body` framed as `head.framing` says).
    ///
    /// The body is borrowed, so that a request the backend never saw
    /// (`!error.request_sent() && !error.body_started()`) can be sent
    /// again, on another connection. After an error the connection is not
    /// to be used again (drop it).
    #[allow(clippy::manual_async_fn)] // the size: see `send_http1`
    pub(crate) fn write<B>(
        &mut self,
        head: &RequestHead<'_>,
        body: Pin<&mut B>,
    ) -> impl Future<Output = Result<(), Error>>
    where
        B: Body,
        B::Error: Into<BoxError>,
    {
        async move {
            self.reusable = false;
            self.written = false;
            self.body_started = false;
            if !self.read_buf.is_empty() {
                return Err(Error::malformed("bytes before the request was sent").at(false, false));
            }
            self.write_buf.clear();
            head.write(&mut self.write_buf);
            let sent = self.send_body(head.framing, body).await;
            sent.map_err(|error| error.at(self.written, self.body_started))
        }
    }

    /// The second half, given what [`write`](Self::write) returned: reads
    /// the response head (of a HEAD request or not), into the header map
    /// taken from `spare` (the request's own, so that no map is allocated
    /// per exchange; left in place unless a head was parsed, or when
    /// `keep` says a response of its status may be retried).
    ///
    /// After a write the backend cut short by closing the connection
    /// while the body was going out, the answer it sent before closing
    /// (see the module docs), on a connection that is not reused; without
    /// one, the write's error.
    ///
    /// The connection is consumed: the response body gives it back when
    /// it ends cleanly on a connection that may be reused. On an error it
    /// is closed.
    pub(crate) fn read(
        self: Box<Self>,
        written: Result<(), Error>,
        head_request: bool,
        spare: &mut http::HeaderMap,
        keep: Option<&ReturnHead>,
    ) -> impl Future<Output = Result<Answer<S>, Error>> {
        // Either of two futures, not one `async` block: the common path's
        // future stays the plain `read_head` it was before the early path.
        match written {
            Ok(()) => {
                let (sent, body_started) = (self.written, self.body_started);
                Either::Left(
                    self.read_head(head_request, spare, keep, true)
                        .map_err(move |error| error.at(sent, body_started)),
                )
            }
            Err(error) => Either::Right(self.read_early(error, head_request, spare, keep)),
        }
    }

    /// After a write that failed: the answer waiting behind it when the
    /// backend cut the write short (see [`read`](Self::read)), else the
    /// write's error.
    #[allow(clippy::manual_async_fn)] // the size: see `send_http1`
    fn read_early(
        self: Box<Self>,
        error: Error,
        head_request: bool,
        spare: &mut http::HeaderMap,
        keep: Option<&ReturnHead>,
    ) -> impl Future<Output = Result<Answer<S>, Error>> {
        async move {
            if !error.cut_short() {
                return Err(error);
            }
            match self.read_head(head_request, spare, keep, false).await {
                Ok(answer @ Answer::Response(_)) => Ok(answer),
                Ok(Answer::Upgrade { .. }) | Err(_) => Err(error),
            }
        }
    }

    #[allow(clippy::manual_async_fn)] // the size: see `send_http1`
    fn send_body<B>(
        &mut self,
        framing: BodyFraming,
        mut body: Pin<&mut B>,
    ) -> impl Future<Output = Result<(), Error>>
    where
        B: Body,
        B::Error: Into<BoxError>,
    {
        async move {
            match framing {
                BodyFraming::Empty => {}
                BodyFraming::Length(length) => {
                    let mut remaining = length;
                    while remaining > 0 || !body.is_end_stream() {
                        let Some(frame) = self.next_frame(body.as_mut()).await? else {
                            break;
                        };
                        let Ok(mut data) = frame.into_data() else {
                            continue; // trailers are not forwarded
                        };
                        let len = data.remaining() as u64;
                        if len > remaining {
                            return Err(Error::client_body("longer than its declared length"));
                        }
                        remaining -= len;
                        self.push_data(&mut data).await?;
                    }
                    if remaining > 0 {
                        return Err(Error::client_body("shorter than its declared length"));
                    }
                }
                BodyFraming::Chunked => {
                    while let Some(frame) = self.next_frame(body.as_mut()).await? {
                        let Ok(mut data) = frame.into_data() else {
                            continue;
                        };
                        if !data.has_remaining() {
                            continue; // a zero-size chunk would end the body
                        }
                        write_hex(&mut self.write_buf, data.remaining() as u64);
                        self.write_buf.extend_from_slice(b"\r\n");
                        self.push_data(&mut data).await?;
                        self.write_buf.extend_from_slice(b"\r\n");
                    }
                    self.write_buf.extend_from_slice(b"0\r\n\r\n");
                }
            }
            self.flush_buf().await?;
            self.io.flush().await.map_err(Error::io)
        }
    }

    /// The body's next frame. Polled once at once, so that data that is
    /// already there joins what the write buffer holds; if it is not there,
    /// the write buffer leaves first (the backend should not wait for the
    /// head while the client is slow).
    #[allow(clippy::manual_async_fn)] // the size: see `send_http1`
    fn next_frame<B>(
        &mut self,
        mut body: Pin<&mut B>,
    ) -> impl Future<Output = Result<Option<Frame<B::Data>>, Error>>
    where
        B: Body,
        B::Error: Into<BoxError>,
    {
        async move {
            let frame = match poll_fn(|cx| Poll::Ready(body.as_mut().poll_frame(cx))).await {
                Poll::Ready(frame) => frame,
                Poll::Pending => {
                    self.flush_buf().await?;
                    // A TLS stream may hold what was written in its own
                    // buffer (a socket that was full): out with it too.
                    self.io.flush().await.map_err(Error::io)?;
                    poll_fn(|cx| body.as_mut().poll_frame(cx)).await
                }
            };
            match frame {
                None => Ok(None),
                Some(Ok(frame)) => {
                    self.body_started = true;
                    Ok(Some(frame))
                }
                Some(Err(error)) => {
                    self.body_started = true;
                    Err(Error::client_body("it yielded an error").with_source(error))
                }
            }
        }
    }

    /// Queues small data behind what the write buffer holds; writes large
    /// data from where it is, after the buffer.
    #[allow(clippy::manual_async_fn)] // the size: see `send_http1`
    fn push_data(&mut self, data: &mut impl Buf) -> impl Future<Output = Result<(), Error>> {
        async move {
            if self.write_buf.len() + data.remaining() <= COALESCE {
                while data.has_remaining() {
                    let chunk = data.chunk();
                    self.write_buf.extend_from_slice(chunk);
                    let n = chunk.len();
                    data.advance(n);
                }
                return Ok(());
            }
            self.flush_buf().await?;
            while data.has_remaining() {
                let n = write_some(&mut self.io, data.chunk(), &mut self.written).await?;
                data.advance(n);
            }
            Ok(())
        }
    }

    /// Writes out the write buffer and empties it.
    #[allow(clippy::manual_async_fn)] // the size: see `send_http1`
    fn flush_buf(&mut self) -> impl Future<Output = Result<(), Error>> {
        async move {
            let mut at = 0;
            while at < self.write_buf.len() {
                at += write_some(&mut self.io, &self.write_buf[at..], &mut self.written).await?;
            }
            self.write_buf.clear();
            Ok(())
        }
    }

    /// Reads until a final (or `101`) response head, passing over interim
    /// ones; the connection may carry another exchange after it only if
    /// `reuse` (and the response allows it).
    #[allow(clippy::manual_async_fn)] // the size: see `send_http1`
    fn read_head(
        mut self: Box<Self>,
        head_request: bool,
        spare: &mut http::HeaderMap,
        keep: Option<&ReturnHead>,
        reuse: bool,
    ) -> impl Future<Output = Result<Answer<S>, Error>> {
        async move {
            let mut received = false;
            let mut interim = 0;
            let mut searched = 0;
            let head = loop {
                // Bytes not looked at yet are parsed at once: a head nearly
                // always arrives whole in the first read, and the search for
                // its end would cost as much as the parse. After a partial
                // parse only a search that finds an end parses again, so a
                // head trickling in a byte a read is not parsed once a byte.
                let parsed = if searched == 0
                    || response_head::has_empty_line(&self.read_buf, &mut searched)
                {
                    response_head::parse_into(
                        &mut self.read_buf,
                        head_request,
                        self.max_head,
                        spare,
                        keep,
                        &mut self.names,
                    )
                } else if self.read_buf.len() >= self.max_head {
                    Err(Error::new(Kind::HeadTooLarge))
                } else {
                    Ok(Parsed::Partial)
                };
                match parsed {
                    Ok(Parsed::Head(head)) => break head,
                    Ok(Parsed::Interim) => {
                        interim += 1;
                        if interim > MAX_INTERIM {
                            return Err(Error::malformed("too many interim responses"));
                        }
                        searched = 0;
                        continue;
                    }
                    Ok(Parsed::Partial) => searched = searched.max(self.read_buf.len()),
                    Err(error) => return Err(error.with_response_started(true)),
                }
                let read = poll_fn(|cx| poll_read_buf(&mut self.io, &mut self.read_buf, cx)).await;
                match read {
                    Ok(0) => {
                        return Err(Error::new(Kind::ClosedBeforeResponse)
                            .with_response_started(received || interim > 0));
                    }
                    Ok(_) => received = true,
                    Err(error) => return Err(Error::io(error).with_response_started(received)),
                }
            };
            let mut response = http::Response::new(());
            *response.status_mut() = head.status;
            *response.version_mut() = head.version;
            *response.headers_mut() = head.headers;
            if head.status == http::StatusCode::SWITCHING_PROTOCOLS {
                let read_ahead = std::mem::take(&mut self.read_buf);
                return Ok(Answer::Upgrade {
                    response,
                    protocol: head.upgrade,
                    upgraded: Upgraded {
                        io: self.io,
                        read_ahead,
                    },
                });
            }
            let (parts, ()) = response.into_parts();
            let body = BodyReader::new(self, head.framing, head.keep_alive && reuse);
            Ok(Answer::Response(http::Response::from_parts(parts, body)))
        }
    }
}

/// One write; notes that bytes left (so the request can no longer be sent
/// again elsewhere as if unseen).
#[allow(clippy::manual_async_fn)] // the size: see `send_http1`
fn write_some<S: AsyncWrite + Unpin>(
    io: &mut S,
    bytes: &[u8],
    written: &mut bool,
) -> impl Future<Output = Result<usize, Error>> {
    async move {
        match io.write(bytes).await {
            Ok(0) => Err(Error::io(io::Error::from(io::ErrorKind::WriteZero))),
            Ok(n) => {
                *written = true;
                Ok(n)
            }
            Err(error) => Err(Error::io(error)),
        }
    }
}

/// One read into the free room of `buf`, growing it (or reclaiming it
/// once the `Bytes` split off it are gone) when the room is small.
/// `Ok(0)` is the end of the stream.
///
/// An empty buffer whose earlier heads are all gone starts again at its
/// first byte: each response head is split off the front, so without this
/// the reads would walk through the whole buffer before it is reclaimed,
/// every exchange on new (cold) cache lines, for the kernel's copy as for
/// the parse; from the start, a connection's exchanges reuse the same few.
pub(super) fn poll_read_buf<S: AsyncRead + Unpin>(
    io: &mut S,
    buf: &mut BytesMut,
    cx: &mut Context<'_>,
) -> Poll<io::Result<usize>> {
    if buf.is_empty() {
        // Moves nothing and allocates nothing: false while a head split
        // off it is still alive somewhere, and the read goes where it is.
        let _ = buf.try_reclaim(READ_SIZE);
    }
    if buf.capacity() - buf.len() < MIN_READ_ROOM {
        buf.reserve(READ_SIZE);
    }
    // tokio's `read_buf` fills the spare capacity without zeroing it first
    // (which safe code here could not do); its future keeps no state
    // between polls, so a fresh one per poll is the same as one kept.
    let read = std::pin::pin!(io.read_buf(buf));
    std::future::Future::poll(read, cx)
}
