//! The accept loop and each client connection, with the limits a server
//! facing the internet needs.

use std::convert::Infallible;
use std::fmt::Display;
use std::future::Future;
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::task::{Context, Poll};
use std::time::Duration;

use http::{Request, Response};
use hyper::body::{Body, Frame, SizeHint};
use hyper_util::rt::TokioExecutor;
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tower::Service;
use tower_lb::ClientAddr;

use crate::client_addr::SetClientAddr;
use crate::client_body::ClientBody;
use crate::failures;
use crate::inline::Served;
use crate::supervisor::{Activity, Drain, Supervised};

/// Limits on client connections.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// A request's head must arrive within this, counted from its first
    /// byte: a slowloris client is closed.
    pub header_timeout: Duration,
    /// Largest request head; hyper answers 431 past it.
    pub max_header_size: usize,
    /// A connection with no request in flight and no bytes moving for this
    /// long is closed.
    pub idle_timeout: Duration,
    /// Connections served at once; the next waits to be accepted. A limit
    /// for one `serve`; workers share one semaphore of this many permits
    /// (see `serve_sharing`), so it stays one limit for the process.
    pub max_connections: usize,
}

/// What runs on each accepted connection before HTTP is served over the
/// stream it gives: a TLS handshake (`tls.rs`), or nothing ([`Cleartext`]).
/// `None` closes the connection.
pub trait Handshake: Clone + Send + Sync + 'static {
    type Stream: AsyncRead + AsyncWrite + Unpin + Send + 'static;
    fn handshake(&self, io: Tracked) -> impl Future<Output = Option<Self::Stream>> + Send;
}

/// No handshake: HTTP in cleartext (no value of it exists; `None` of it
/// is what `serve` passes).
#[derive(Clone, Copy, Debug)]
pub enum Cleartext {}

impl Handshake for Cleartext {
    type Stream = Tracked;
    async fn handshake(&self, _io: Tracked) -> Option<Tracked> {
        match *self {}
    }
}

/// How a worker's connections ended once it stopped accepting.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Drained {
    /// Every connection finished within the grace period.
    AllClosed,
    /// The grace period ran out with connections still open; they are
    /// dropped.
    GraceOver,
}

/// Serves `service` on `listener` (HTTP/1.1 with upgrades, and h2c) until
/// `stop` resolves; then stops accepting and gives open connections
/// `grace` to finish their requests. At most `limits.max_connections` are
/// served at once.
pub async fn serve<S, B>(
    listener: TcpListener,
    service: S,
    limits: Limits,
    stop: impl Future<Output = ()>,
    grace: Duration,
) -> Drained
where
    S: Service<Request<ClientBody>, Response = Response<B>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>> + Display,
{
    let permits = Arc::new(Semaphore::new(
        limits.max_connections.min(Semaphore::MAX_PERMITS),
    ));
    serve_sharing(
        listener,
        service,
        permits,
        limits,
        None::<Cleartext>,
        stop,
        grace,
    )
    .await
}

/// [`serve`], with a connection served while it holds one of `permits`,
/// which the caller shares with other listeners to make one limit of them
/// all (`limits.max_connections` is the caller's to apply).
///
/// It accepts first and then waits for a permit, not the other way round:
/// with several listeners on one port (one per worker, `SO_REUSEPORT`), the
/// kernel picks the listener a connection queues on, and a worker holding
/// a permit while it waits on an empty queue would starve a connection
/// queued at another worker. So each listener takes at most one connection
/// out of its queue before a permit is free for it.
///
/// With `tls`, each connection's TLS handshake runs in that connection's
/// own task (bounded by the handshake timeout), never in the accept loop.
pub async fn serve_sharing<S, B, H>(
    listener: TcpListener,
    service: S,
    permits: Arc<Semaphore>,
    limits: Limits,
    tls: Option<H>,
    stop: impl Future<Output = ()>,
    grace: Duration,
) -> Drained
where
    S: Service<Request<ClientBody>, Response = Response<B>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>> + Display,
    H: Handshake,
{
    // hyper's server, for the connections the inline loop hands over.
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder.http1().max_buf_size(limits.max_header_size);
    builder
        .http2()
        .max_header_list_size(u32::try_from(limits.max_header_size).unwrap_or(u32::MAX));
    let builder = Arc::new(builder);
    let drain = Arc::new(Drain::default());
    let mut stop = pin!(stop);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of file descriptors and the like: back off, keep serving.
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut stop => break,
        };
        let permit = tokio::select! {
            permit = permits.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => break,
            },
            () = &mut stop => break,
        };
        let _ = stream.set_nodelay(true);
        let activity = Arc::new(Activity::default());
        let service = Counted {
            inner: SetClientAddr::new(service.clone(), ClientAddr::new(peer)),
            activity: activity.clone(),
        };
        let tracked = Tracked {
            stream,
            activity: activity.clone(),
        };
        let max_head = limits.max_header_size;
        if let Some(tls) = &tls {
            let (tls, builder, open) = (tls.clone(), builder.clone(), drain.open());
            tokio::spawn(async move {
                let _permit = permit;
                let Some(stream) = tls.handshake(tracked).await else {
                    return;
                };
                let connection = Served::new(stream, service, builder, max_head);
                Supervised::new(connection, activity, limits, open).await;
            });
            continue;
        }
        let connection = Served::new(tracked, service, builder.clone(), max_head);
        let connection = Supervised::new(connection, activity, limits, drain.open());
        tokio::spawn(async move {
            let _permit = permit;
            connection.await;
        });
    }
    drop(listener);
    drain.stop();
    tokio::select! {
        () = drain.all_closed() => Drained::AllClosed,
        () = tokio::time::sleep(grace) => Drained::GraceOver,
    }
}

/// The socket, noting when bytes move.
pub struct Tracked {
    stream: TcpStream,
    activity: Arc<Activity>,
}

impl AsyncRead for Tracked {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let result = Pin::new(&mut self.stream).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.activity.bump();
            if self.activity.in_flight.load(Relaxed) == 0 {
                self.activity.head_pending.store(true, Relaxed);
            }
        }
        result
    }
}

impl AsyncWrite for Tracked {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let result = Pin::new(&mut self.stream).poll_write(cx, data);
        if matches!(result, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.bump();
        }
        result
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let result = Pin::new(&mut self.stream).poll_write_vectored(cx, data);
        if matches!(result, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.bump();
        }
        result
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

/// The service, counting requests in flight on this connection until their
/// response bodies end (and logging the failures among them: `failures`).
#[derive(Clone)]
struct Counted<S> {
    inner: S,
    activity: Arc<Activity>,
}

impl<S, B> Service<Request<ClientBody>> for Counted<S>
where
    S: Service<Request<ClientBody>, Response = Response<B>, Error = Infallible>,
{
    type Response = Response<CountedBody<B>>;
    type Error = Infallible;
    type Future = CountedFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<ClientBody>) -> Self::Future {
        self.activity.in_flight.fetch_add(1, Relaxed);
        self.activity.head_pending.store(false, Relaxed);
        CountedFuture {
            inner: self.inner.call(request),
            guard: Some(InFlight(self.activity.clone())),
        }
    }
}

/// One request's place in its connection's count.
struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Relaxed);
        self.0.bump();
    }
}

pin_project_lite::pin_project! {
    /// The response future, handing the count to the body.
    pub struct CountedFuture<F> {
        #[pin]
        inner: F,
        guard: Option<InFlight>,
    }
}

impl<F, B> Future for CountedFuture<F>
where
    F: Future<Output = Result<Response<B>, Infallible>>,
{
    type Output = Result<Response<CountedBody<B>>, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let response = std::task::ready!(this.inner.poll(cx))?;
        failures::response(&response);
        let guard = this.guard.take();
        Poll::Ready(Ok(response.map(|body| CountedBody {
            body,
            _guard: guard,
        })))
    }
}

pin_project_lite::pin_project! {
    /// A response body that holds its request's place in the count.
    pub struct CountedBody<B> {
        #[pin]
        body: B,
        _guard: Option<InFlight>,
    }
}

impl<B: Body<Error: Display>> Body for CountedBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<B::Data>, B::Error>>> {
        let frame = self.project().body.poll_frame(cx);
        if let Poll::Ready(Some(Err(error))) = &frame {
            failures::body(error);
        }
        frame
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}
