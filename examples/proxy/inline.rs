//! A client connection's HTTP/1.1 requests, served in its own task: the
//! plain ones by a loop here, everything else by hyper.
//!
//! hyper's server costs about a third of the proxy's instructions per
//! request (its dispatcher, buffered I/O, head parse and encode: about
//! 9,000 of 30,000, measured with callgrind), more than the whole user
//! space of the calibration proxy `examples/inline_floor.rs`. Nearly every
//! request a load balancer gets is plain (see `inline/request.rs`: no
//! body, no upgrade, a path), and for those this loop reads the head with
//! httparse into a reused buffer and header map, calls the stack in place,
//! and writes the response head and body with one write into a reused
//! buffer, as the floor does.
//!
//! The first request that is not plain hands the connection to hyper for
//! the rest of its life, with the bytes read so far given back to it
//! (`inline/replay.rs`): request bodies, `Expect`, upgrades and tunnels,
//! HTTP/2 (its preface is not an HTTP/1 head), and every malformed or
//! oversized head, which hyper answers as it always did. So this loop
//! never refuses anything and has no error responses of its own.

#[cfg(test)]
#[path = "inline/hyper_agrees.rs"]
mod hyper_agrees;
#[path = "inline/replay.rs"]
mod replay;
#[path = "inline/request.rs"]
pub mod request;
#[path = "inline/response.rs"]
mod response;
#[cfg(test)]
#[path = "inline/response_agrees.rs"]
mod response_agrees;

use std::cell::RefCell;
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker, ready};

use bytes::BytesMut;
use futures_util::future::Either;
use http::{Extensions, HeaderMap, Request, Response};
use hyper::body::{Body, Incoming};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite};
use tower::util::Oneshot;
use tower::{Service, ServiceExt};
use tower_lb::extensions::ReturnHead;
use tower_lb::{Backend, ClientAddr, Target};

use crate::client_body::ClientBody;
use crate::supervisor::Graceful;
use replay::Replay;
use request::{Exchange, Read, Reader};
use response::Framing;

/// The read buffer's first size, and what a read asks for at least.
const READ_SIZE: usize = 8 * 1024;

/// A body's bytes are written once this many are waiting.
const WRITE_HIGH_WATER: usize = 64 * 1024;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The future of a call, made in place when the service is ready.
pub type Call<S> =
    Either<<S as Service<Request<ClientBody>>>::Future, Oneshot<S, Request<ClientBody>>>;

/// hyper's connection, once it has taken over.
type Hyper<I, S> =
    auto::UpgradeableConnection<'static, TokioIo<Replay<I>>, Direct<S>, TokioExecutor>;

pin_project_lite::pin_project! {
    /// One client connection (see the module docs).
    pub struct Served<I, S, F, B>
    where
        I: AsyncRead,
        I: AsyncWrite,
        I: Unpin,
        I: Send,
        I: 'static,
        S: Service<Request<ClientBody>, Response = Response<B>, Error = Infallible>,
        S: Clone,
        S: Send,
        S: 'static,
        S::Future: Send,
        S::Future: 'static,
        B: Body,
        B: Send,
        B: 'static,
        B::Data: Send,
        B::Error: Into<BoxError>,
    {
        io: Option<I>,
        service: Option<S>,
        builder: Arc<auto::Builder<TokioExecutor>>,
        read_buf: BytesMut,
        write_buf: Vec<u8>,
        written: usize,
        reader: Reader,
        // The last response's header map, emptied, for the next request.
        spare: HeaderMap,
        // The last response's extensions (the request's, handed back by
        // `Forward`), emptied, for the next request: their map and table
        // are two allocations a request less.
        spare_extensions: Extensions,
        max_head: usize,
        exchange: Exchange,
        framing: Framing,
        keep_alive: bool,
        stopping: bool,
        // hyper has been polled since it took over.
        hyper_polled: bool,
        // A stop to pass on to hyper after its first poll.
        stop_hyper: bool,
        #[pin]
        state: State<F, B>,
        #[pin]
        hyper: Option<Hyper<I, S>>,
    }
}

pin_project_lite::pin_project! {
    #[project = StateProj]
    enum State<F, B> {
        // Reading a request head.
        Read,
        // The stack has the request.
        Call { #[pin] future: F },
        // The head is in the write buffer; the body's frames follow it.
        Body { #[pin] body: B },
        // The whole response is in the write buffer.
        Write,
        // Closing: the last response is out.
        Shutdown,
    }
}

impl<I, S, B> Served<I, S, Call<S>, B>
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    S: Service<Request<ClientBody>, Response = Response<B>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    /// Serves `io` with `service`; `builder` is hyper's, for a connection
    /// that is not plain; a head larger than `max_head` is hyper's to
    /// refuse.
    pub fn new(
        io: I,
        service: S,
        builder: Arc<auto::Builder<TokioExecutor>>,
        max_head: usize,
    ) -> Self {
        Self {
            io: Some(io),
            service: Some(service),
            builder,
            read_buf: BytesMut::with_capacity(READ_SIZE),
            write_buf: Vec::with_capacity(READ_SIZE),
            written: 0,
            reader: Reader::default(),
            spare: HeaderMap::new(),
            spare_extensions: Extensions::new(),
            max_head,
            exchange: Exchange {
                head: false,
                version: http::Version::HTTP_11,
                keep_alive: true,
            },
            framing: Framing::None,
            keep_alive: true,
            stopping: false,
            hyper_polled: false,
            stop_hyper: false,
            state: State::Read,
            hyper: None,
        }
    }
}

impl<I, S, B> Future for Served<I, S, Call<S>, B>
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    S: Service<Request<ClientBody>, Response = Response<B>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let mut this = self.project();
        loop {
            if let Some(mut hyper) = this.hyper.as_mut().as_pin_mut() {
                // Its errors are the client's (hyper has answered what it
                // could); the connection is over either way.
                if hyper.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(());
                }
                // A stop asked for before hyper's first poll is passed on
                // after it: told at once, hyper-util's connection cancels
                // while it is still telling HTTP/1 from HTTP/2, and the
                // request handed to it would go unanswered. One poll over
                // the replayed bytes settles HTTP/1 (their first byte is
                // not HTTP/2's preface), and hyper then answers the
                // request in hand before it closes.
                *this.hyper_polled = true;
                if std::mem::take(this.stop_hyper) {
                    hyper.graceful_shutdown();
                    continue;
                }
                return Poll::Pending;
            }
            let (Some(io), Some(service)) = (this.io.as_mut(), this.service.as_mut()) else {
                return Poll::Ready(());
            };
            match this.state.as_mut().project() {
                StateProj::Read => {
                    if *this.stopping && this.read_buf.is_empty() {
                        this.state.set(State::Shutdown);
                        continue;
                    }
                    let read = if this.read_buf.is_empty() {
                        Read::Partial
                    } else {
                        this.reader.read(this.read_buf, this.spare, *this.max_head)
                    };
                    match read {
                        Read::Plain(mut request, exchange) => {
                            *request.extensions_mut() = std::mem::take(this.spare_extensions);
                            *this.exchange = exchange;
                            let future = call(service, request);
                            this.state.set(State::Call { future });
                        }
                        Read::Partial => match ready!(poll_read(io, this.read_buf, cx)) {
                            // The end of the stream, or a broken one: a head
                            // cut short is dropped, as hyper drops it.
                            Ok(0) | Err(_) => return Poll::Ready(()),
                            Ok(_) => {}
                        },
                        Read::Other => {
                            let (Some(io), Some(service)) = (this.io.take(), this.service.take())
                            else {
                                return Poll::Ready(());
                            };
                            let replay = Replay::new(std::mem::take(this.read_buf).freeze(), io);
                            let connection = this
                                .builder
                                .serve_connection_with_upgrades(
                                    TokioIo::new(replay),
                                    Direct::new(service),
                                )
                                .into_owned();
                            this.hyper.set(Some(connection));
                            *this.stop_hyper = *this.stopping;
                        }
                    }
                }
                StateProj::Call { future } => {
                    let Ok(response) = ready!(future.poll(cx));
                    let (parts, body) = response.into_parts();
                    let (framing, keep_alive) = response::write_head(
                        this.write_buf,
                        &parts,
                        &body.size_hint(),
                        this.exchange,
                        !*this.stopping,
                    );
                    (*this.framing, *this.keep_alive) = (framing, keep_alive);
                    // The map goes back for the next request: emptied now, so
                    // that the backend's read buffer its values point into
                    // is not held.
                    let mut headers = parts.headers;
                    headers.clear();
                    *this.spare = headers;
                    // Emptied: nothing of this request reaches the next.
                    let mut extensions = parts.extensions;
                    recycle(&mut extensions);
                    *this.spare_extensions = extensions;
                    this.state.set(State::Body { body });
                }
                StateProj::Body { mut body } => {
                    loop {
                        if this.write_buf.len() - *this.written >= WRITE_HIGH_WATER
                            && ready!(poll_drain(io, this.write_buf, this.written, cx)).is_err()
                        {
                            return Poll::Ready(());
                        }
                        if *this.framing == Framing::None || body.is_end_stream() {
                            break;
                        }
                        match body.as_mut().poll_frame(cx) {
                            Poll::Ready(Some(Ok(frame))) => {
                                if let Ok(data) = frame.into_data()
                                    && !response::write_data(this.write_buf, data, this.framing)
                                {
                                    *this.keep_alive = false;
                                    break;
                                }
                            }
                            Poll::Ready(None) => break,
                            // Cut short: the client sees the connection close
                            // before the length it was told (or without the
                            // last chunk), never a shorter body as whole.
                            Poll::Ready(Some(Err(_))) => return Poll::Ready(()),
                            Poll::Pending => {
                                // What the body has given so far goes out now
                                // (and through a TLS stream's buffer).
                                if let Poll::Ready(Err(_)) =
                                    poll_drain(io, this.write_buf, this.written, cx)
                                {
                                    return Poll::Ready(());
                                }
                                let _ = Pin::new(&mut *io).poll_flush(cx);
                                return Poll::Pending;
                            }
                        }
                    }
                    if !response::write_end(this.write_buf, *this.framing) {
                        *this.keep_alive = false;
                    }
                    this.state.set(State::Write);
                }
                StateProj::Write => {
                    if ready!(poll_drain(io, this.write_buf, this.written, cx)).is_err()
                        || ready!(Pin::new(&mut *io).poll_flush(cx)).is_err()
                    {
                        return Poll::Ready(());
                    }
                    if *this.keep_alive && !*this.stopping {
                        this.state.set(State::Read);
                    } else {
                        this.state.set(State::Shutdown);
                    }
                }
                StateProj::Shutdown => {
                    let _ = ready!(Pin::new(&mut *io).poll_shutdown(cx));
                    return Poll::Ready(());
                }
            }
        }
    }
}

impl<I, S, B> Graceful for Served<I, S, Call<S>, B>
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    S: Service<Request<ClientBody>, Response = Response<B>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    /// The request in flight is answered (with `connection: close` if its
    /// head is not written yet) and the connection closed; an idle one is
    /// closed at its next poll.
    fn graceful_shutdown(self: Pin<&mut Self>) {
        let mut this = self.project();
        *this.stopping = true;
        match this.hyper.as_mut().as_pin_mut() {
            Some(hyper) if *this.hyper_polled => hyper.graceful_shutdown(),
            Some(_) => *this.stop_hyper = true,
            None => {}
        }
    }
}

/// Calls `service` in place when it is ready (every layer of the proxy's
/// stack always is), or a ready clone of it when it is not.
fn call<S>(service: &mut S, request: Request<ClientBody>) -> Call<S>
where
    S: Service<Request<ClientBody>> + Clone,
{
    let mut cx = Context::from_waker(Waker::noop());
    match service.poll_ready(&mut cx) {
        Poll::Ready(Ok(())) => Either::Left(service.call(request)),
        _ => Either::Right(service.clone().oneshot(request)),
    }
}

/// One read into the free room of `buf`, growing it (or reclaiming it,
/// once the heads split off it are gone) when the room is small. An empty
/// buffer whose heads are all gone starts again at its first byte, so a
/// connection's requests are read into the same (cached) lines rather than
/// walking through the buffer (as `Forward`'s backend reads do).
fn poll_read<I: AsyncRead + Unpin>(
    io: &mut I,
    buf: &mut BytesMut,
    cx: &mut Context<'_>,
) -> Poll<std::io::Result<usize>> {
    if buf.is_empty() {
        let _ = buf.try_reclaim(READ_SIZE);
    }
    if buf.capacity() - buf.len() < READ_SIZE / 4 {
        buf.reserve(READ_SIZE);
    }
    // tokio's `read_buf` fills the spare capacity without zeroing it; its
    // future keeps no state between polls.
    let read = std::pin::pin!(tokio::io::AsyncReadExt::read_buf(io, buf));
    read.poll(cx)
}

/// Writes `buf` from `written` on until it is all out, then empties it.
fn poll_drain<I: AsyncWrite + Unpin>(
    io: &mut I,
    buf: &mut Vec<u8>,
    written: &mut usize,
    cx: &mut Context<'_>,
) -> Poll<std::io::Result<()>> {
    while *written < buf.len() {
        match ready!(Pin::new(&mut *io).poll_write(cx, &buf[*written..])) {
            Ok(0) => return Poll::Ready(Err(std::io::ErrorKind::WriteZero.into())),
            Ok(n) => *written += n,
            Err(error) => return Poll::Ready(Err(error)),
        }
    }
    buf.clear();
    *written = 0;
    Poll::Ready(Ok(()))
}

/// The stack as hyper calls it, for a connection hyper has taken over.
///
/// hyper calls a service through `&self`, so hyper-util's
/// `TowerToHyperService` clones the whole tower stack for every request
/// (and drops the clone when the response is done): a dozen reference
/// counts up and down per request for nothing, since one connection's
/// requests are called one at a time from its own task. This adaptor
/// calls the connection's copy in place (see [`call`]).
pub struct Direct<S> {
    service: RefCell<S>,
}

impl<S> Direct<S> {
    pub fn new(service: S) -> Self {
        Self {
            service: RefCell::new(service),
        }
    }
}

impl<S, B> hyper::service::Service<Request<Incoming>> for Direct<S>
where
    S: Service<Request<ClientBody>, Response = Response<B>, Error = Infallible> + Clone,
{
    type Response = Response<B>;
    type Error = Infallible;
    type Future = Call<S>;

    fn call(&self, request: Request<Incoming>) -> Self::Future {
        // hyper never calls one connection's service from two places at
        // once (HTTP/1 requests are sequential, HTTP/2 streams are accepted
        // by the connection's task), and `call` returns before any future
        // runs, so the borrow is never contended.
        let Ok(mut service) = self.service.try_borrow_mut() else {
            unreachable!("a connection's service is called from its task only");
        };
        call(&mut *service, request.map(ClientBody::Hyper))
    }
}

/// Empties the extensions a response handed back, for the connection's
/// next plain request: nothing of one request reaches the next. Three
/// entries may stay, in their boxes: the client's address, the same for
/// every request on the connection, which the server's layer
/// (`SetClientAddr`) checks and sets again on each; failover's
/// `ReturnHead` marker, which failover sets again in place on each request
/// it asks (and takes away from one it does not), its answer read and reset
/// on the way back; and the balancer's `Target`, which the balancer sets
/// again in place on each request, parked meanwhile on a placeholder
/// backend of this thread's (the request's own holds a backend, which must
/// not outlive the request: a removed backend's state would live on with
/// an idle connection). They stay only when they are all that is left;
/// anything else, the application's own or a retry's, empties the whole
/// map.
///
/// Why the `Target` is parked rather than taken out: taking it out freed
/// its box, and the balancer's insert made a new one and hashed it into
/// the map again, every request (about 300 instructions and one of the
/// two allocations a proxied GET made); parking costs the placeholder's
/// reference count, taken and given back.
fn recycle(extensions: &mut Extensions) {
    let parked = match extensions.get_mut::<Target>() {
        Some(target) => {
            *target = PARKED.with(Target::clone);
            1
        }
        None => 0,
    };
    let kept = 1 + parked + usize::from(extensions.get::<ReturnHead>().is_some());
    if extensions.len() != kept || extensions.get::<ClientAddr>().is_none() {
        extensions.clear();
    }
}

thread_local! {
    /// The backend a reused map's `Target` names between requests: one
    /// per thread (so that parking one writes no line another thread
    /// writes), never picked, never sent to.
    static PARKED: Target = Target::new(Backend::new(
        "http://0.0.0.0:9".parse().expect("a valid address"),
    ));
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use bytes::Bytes;
    use http_body_util::{BodyExt, Full};
    use hyper::body::{Frame, SizeHint};
    use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};
    use tower::util::BoxCloneService;

    use super::*;

    /// A body of unknown length (so it goes chunked).
    struct Unsized(Full<Bytes>);

    impl Body for Unsized {
        type Data = Bytes;
        type Error = Infallible;
        fn poll_frame(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
            Pin::new(&mut self.0).poll_frame(cx)
        }
        fn size_hint(&self) -> SizeHint {
            SizeHint::new()
        }
    }

    /// Answers with who read the request (`inline` or `hyper`), its method
    /// and path, and its body; `/chunked` with a body of unknown length.
    async fn answer(request: Request<ClientBody>) -> Result<Response<Unsized>, Infallible> {
        let reader = match request.body() {
            ClientBody::Empty | ClientBody::Full(_) => "inline",
            ClientBody::Hyper(_) => "hyper",
        };
        let (parts, body) = request.into_parts();
        let body = body
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        let text = format!("{reader} {} {} {}", parts.method, parts.uri, body.len());
        let mut response = Response::new(Unsized(Full::new(Bytes::from(text))));
        if parts.uri.path() != "/chunked" {
            let length = response.body().0.size_hint().exact().unwrap_or(0);
            response
                .headers_mut()
                .insert("content-length", length.to_string().parse().unwrap());
        }
        Ok(response)
    }

    fn serve() -> DuplexStream {
        let (client, server) = tokio::io::duplex(64 * 1024);
        let service = tower::service_fn(answer);
        let builder = Arc::new(auto::Builder::new(TokioExecutor::new()));
        tokio::spawn(Served::new(server, service, builder, 16 * 1024));
        client
    }

    /// A connection served by `service`, which answers with whole bodies,
    /// and its client's end.
    fn serve_with(
        service: BoxCloneService<Request<ClientBody>, Response<Full<Bytes>>, Infallible>,
    ) -> DuplexStream {
        let (client, server) = tokio::io::duplex(64 * 1024);
        let builder = Arc::new(auto::Builder::new(TokioExecutor::new()));
        tokio::spawn(Served::new(server, service, builder, 16 * 1024));
        client
    }

    /// Reads until `until` has been seen `times` times (or the end).
    async fn read_until(client: &mut DuplexStream, until: &str, times: usize) -> String {
        let mut text = String::new();
        let mut buf = [0u8; 4096];
        while text.matches(until).count() < times {
            let n = client.read(&mut buf).await.unwrap();
            if n == 0 {
                break;
            }
            text.push_str(std::str::from_utf8(&buf[..n]).unwrap());
        }
        text
    }

    #[tokio::test]
    async fn pipelined_plain_requests_are_answered_in_order_inline() {
        let mut client = serve();
        client
            .write_all(b"GET /one HTTP/1.1\r\nHost: x\r\n\r\nHEAD /two HTTP/1.1\r\nHost: x\r\n\r\nGET /three HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let text = read_until(&mut client, "inline GET /three 0", 1).await;
        let one = text.find("inline GET /one 0").expect("first answered");
        let three = text.find("inline GET /three 0").expect("third answered");
        assert!(one < three, "{text}");
        assert!(!text.contains("HEAD /two"), "no body for a HEAD: {text}");
        assert_eq!(text.matches("HTTP/1.1 200 OK").count(), 3, "{text}");
    }

    /// A mark one request leaves in its extensions.
    #[derive(Clone)]
    struct Mark(&'static str);

    #[tokio::test]
    async fn the_extensions_handed_back_reach_the_next_request_empty() {
        // As `Forward` does, the service hands the request's extensions
        // back in the response; the loop reuses their map, which must
        // carry nothing of one request into the next.
        let service = tower::service_fn(|request: Request<ClientBody>| async move {
            let (mut parts, _) = request.into_parts();
            let seen = parts.extensions.len();
            let leaked = parts.extensions.get::<Mark>().map_or("none", |mark| mark.0);
            parts.extensions.insert(Mark("first"));
            let text = format!("seen {seen} leaked {leaked}");
            let mut response = Response::new(Full::new(Bytes::from(text)));
            *response.extensions_mut() = parts.extensions;
            Ok::<_, Infallible>(response)
        });
        let mut client = serve_with(BoxCloneService::new(service));
        client
            .write_all(b"GET /1 HTTP/1.1\r\nHost: x\r\n\r\nGET /2 HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        // Both answers, whatever they say (each body ends its response).
        let (mut text, mut buf) = (String::new(), [0u8; 4096]);
        while text.matches("leaked none").count() + text.matches("leaked first").count() < 2 {
            let n = client.read(&mut buf).await.unwrap();
            assert!(n > 0, "closed early: {text}");
            text.push_str(std::str::from_utf8(&buf[..n]).unwrap());
        }
        assert_eq!(text.matches("seen 0 leaked none").count(), 2, "{text}");
    }

    #[tokio::test]
    async fn the_client_address_the_marker_and_a_parked_target_are_kept_for_the_next_request() {
        // Each request reports what it found, then leaves the client's
        // address, failover's marker and the balancer's target (as the
        // example's stack does); `/mark` also leaves an entry of its own,
        // which must empty the whole map. The target kept names the
        // thread's placeholder, never the backend the request went to.
        let service = tower::service_fn(|request: Request<ClientBody>| async move {
            let (mut parts, _) = request.into_parts();
            let found = format!(
                "{} {} addr {} marker {} target {}",
                parts.uri.path(),
                parts.extensions.len(),
                parts.extensions.get::<ClientAddr>().is_some(),
                parts.extensions.get::<ReturnHead>().is_some(),
                parts
                    .extensions
                    .get::<Target>()
                    .map_or("none", |target| { target.backend().address().as_str() }),
            );
            parts
                .extensions
                .insert(ClientAddr::new("192.0.2.7:5000".parse().unwrap()));
            parts.extensions.insert(ReturnHead::new(&[502]));
            let backend = tower_lb::BackendSet::new(["http://127.0.0.1:1".parse().unwrap()])
                .snapshot()
                .backends()[0]
                .clone();
            parts.extensions.insert(Target::new(backend));
            if parts.uri.path() == "/mark" {
                parts.extensions.insert(Mark("mark"));
            }
            let mut response = Response::new(Full::new(Bytes::from(format!("[{found}]"))));
            *response.extensions_mut() = parts.extensions;
            Ok::<_, Infallible>(response)
        });
        let mut client = serve_with(BoxCloneService::new(service));
        client
            .write_all(b"GET /1 HTTP/1.1\r\nHost: x\r\n\r\nGET /mark HTTP/1.1\r\nHost: x\r\n\r\nGET /3 HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let text = read_until(&mut client, "]", 3).await;
        let none = "0 addr false marker false target none";
        assert!(text.contains(&format!("[/1 {none}]")), "{text}");
        let parked = PARKED.with(|target| target.backend().address().as_str().to_owned());
        assert_ne!(parked, "http://127.0.0.1:1");
        assert!(
            text.contains(&format!("[/mark 3 addr true marker true target {parked}]")),
            "{text}"
        );
        assert!(text.contains(&format!("[/3 {none}]")), "{text}");
    }

    #[tokio::test]
    async fn a_streamed_body_hands_the_connection_to_hyper() {
        let mut client = serve();
        client
            .write_all(b"GET /first HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let text = read_until(&mut client, "inline GET /first 0", 1).await;
        assert!(text.contains("inline GET /first 0"), "{text}");
        // A small body, in two pieces: waited for, and read here.
        client
            .write_all(b"POST /small HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhe")
            .await
            .unwrap();
        tokio::task::yield_now().await;
        client.write_all(b"llo").await.unwrap();
        let text = read_until(&mut client, "inline POST /small 5", 1).await;
        assert!(text.contains("inline POST /small 5"), "{text}");
        // A chunked one: hyper's, and the connection stays with hyper.
        client
            .write_all(b"POST /up HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\nGET /after HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let text = read_until(&mut client, "hyper GET /after 0", 1).await;
        assert!(
            text.contains("hyper POST /up 5"),
            "the body reached the stack: {text}"
        );
        assert!(
            text.contains("hyper GET /after 0"),
            "hyper keeps the connection: {text}"
        );
    }

    #[tokio::test]
    async fn a_malformed_head_gets_hypers_answer() {
        let mut client = serve();
        client
            .write_all(b"GET / HTTP/1.1\r\nBad Name: x\r\n\r\n")
            .await
            .unwrap();
        let text = read_until(&mut client, "\r\n\r\n", 1).await;
        assert!(text.starts_with("HTTP/1.1 400 Bad Request\r\n"), "{text}");
    }

    #[tokio::test]
    async fn a_body_of_unknown_length_is_chunked_and_close_is_heeded() {
        let mut client = serve();
        client
            .write_all(b"GET /chunked HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut text = String::new();
        client.read_to_string(&mut text).await.unwrap();
        assert!(text.contains("transfer-encoding: chunked\r\n"), "{text}");
        assert!(text.contains("connection: close\r\n"), "{text}");
        assert!(
            text.ends_with("\r\n15\r\ninline GET /chunked 0\r\n0\r\n\r\n"),
            "{text:?}"
        );
    }

    /// A connection the test polls itself, and its client end.
    fn polled_by_hand() -> (DuplexStream, Pin<Box<impl Graceful + Send + 'static>>) {
        let (client, server) = tokio::io::duplex(4096);
        let builder = Arc::new(auto::Builder::new(TokioExecutor::new()));
        let served = Served::new(server, tower::service_fn(answer), builder, 1024);
        (client, Box::pin(served))
    }

    #[tokio::test]
    async fn a_stop_while_a_request_for_hyper_arrives_still_answers_it() {
        let (mut client, mut served) = polled_by_hand();
        let mut cx = Context::from_waker(Waker::noop());
        client
            .write_all(b"POST /x HTTP/1.1\r\nHost: x\r\n")
            .await
            .unwrap();
        assert!(served.as_mut().poll(&mut cx).is_pending(), "a partial head");
        served.as_mut().graceful_shutdown();
        client
            .write_all(b"Transfer-Encoding: chunked\r\n\r\n2\r\nhi\r\n0\r\n\r\n")
            .await
            .unwrap();
        let serve = tokio::spawn(served);
        let mut text = String::new();
        client.read_to_string(&mut text).await.unwrap();
        assert!(
            text.contains("hyper POST /x 2"),
            "answered by hyper: {text:?}"
        );
        serve.await.unwrap();
    }

    #[tokio::test]
    async fn each_request_is_read_into_the_start_of_the_buffer() {
        let (mut client, server) = tokio::io::duplex(4096);
        let builder = Arc::new(auto::Builder::new(TokioExecutor::new()));
        let mut served = Box::pin(Served::new(
            server,
            tower::service_fn(answer),
            builder,
            1024,
        ));
        let mut cx = Context::from_waker(Waker::noop());
        let mut starts = Vec::new();
        for path in ["/one", "/two", "/three"] {
            let request = format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n");
            client.write_all(request.as_bytes()).await.unwrap();
            for _ in 0..4 {
                assert!(served.as_mut().poll(&mut cx).is_pending());
            }
            let text = read_until(&mut client, &format!("inline GET {path} 0"), 1).await;
            assert!(text.contains(path), "{text}");
            starts.push(served.as_mut().project().read_buf.as_ptr() as usize);
        }
        // Each request's head was split off the front: without going back
        // to the start, each read would begin where the last head ended.
        assert_eq!(starts[0], starts[1], "{starts:?}");
        assert_eq!(starts[1], starts[2], "{starts:?}");
    }

    #[tokio::test]
    async fn a_graceful_stop_closes_an_idle_connection_at_once() {
        let (mut client, mut served) = polled_by_hand();
        client.write_all(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
        let mut cx = Context::from_waker(Waker::noop());
        // Answers the request, then waits for the next one.
        for _ in 0..10 {
            assert!(served.as_mut().poll(&mut cx).is_pending());
        }
        served.as_mut().graceful_shutdown();
        assert!(served.as_mut().poll(&mut cx).is_ready(), "idle: closed");
        let mut text = String::new();
        client.read_to_string(&mut text).await.unwrap();
        assert!(text.contains("inline GET / 0"), "{text}");
    }
}
