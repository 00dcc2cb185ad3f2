//! The forwarding service: pooled backend connections behind the proxy rules.

use std::convert::Infallible;
use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use std::future::Future;
use std::pin::Pin;

use bytes::{Buf, Bytes};
use futures_util::FutureExt;
use futures_util::future::Either;
use http::request::Parts;
use http::{HeaderValue, Request, Response, Version};
use http_body_util::BodyExt;
use http_body_util::combinators::UnsyncBoxBody;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use tower_service::Service;

use hyper::upgrade::OnUpgrade;

use super::h1::{Answer, DEFAULT_MAX_HEAD, Upgraded};
use super::headers::{
    H2C, add_forwarded, keep_upgrade, requested_upgrade, strip_hop_by_hop, switches_to,
};
use super::pool::Pool;
use super::stream::{Connect, Connector, Stream};
use super::tunnel::Tunnel;
use super::{ResponseBody, ResponseFuture};
use crate::backend::Protocol;
use crate::clock::{CallTime, Nanos};
use crate::extensions::{RequestHead, ReturnHead};
use crate::{BoxError, ClientAddr, Error, ErrorKind, Target};

/// Sends each request to the backend its URI names, over pooled keep-alive
/// connections, following the rules of a reverse proxy:
///
/// - the client's `Host` is kept (the balancer put the backend in the URI);
/// - the client's IP ([`ClientAddr`]) is appended to `X-Forwarded-For`;
///   `X-Forwarded-Proto` and `X-Forwarded-Host` are set;
/// - hop-by-hop headers (`Connection` and every header it names,
///   `Keep-Alive`, `Proxy-Connection`, `TE`, `Trailer`, `Transfer-Encoding`,
///   `Upgrade`, `Proxy-Authorization`, `Proxy-Authenticate`) are dropped in
///   both directions;
/// - bodies stream both ways, never buffered whole;
/// - `Host` and the `X-Forwarded-*` headers cannot be removed by naming
///   them in `Connection`;
/// - an HTTP/1.1 `Upgrade` to a protocol the forwarder allows (WebSocket by
///   default, see [`ForwardBuilder::upgrades`]; `h2c` never) is passed to
///   the backend with its `Upgrade` and `Connection` headers, and on
///   `101 Switching Protocols` naming that protocol the two connections are
///   joined: the tunnel stays on that backend for its whole life and counts
///   as one request in flight there. Any other upgrade is forwarded as an
///   ordinary request without its `Upgrade`; a `101` the client did not ask
///   for, or for another protocol, is a 502 and no tunnel;
/// - a request body the client frames wrongly or cuts short is answered
///   400 and carries an [`ErrorKind::Client`] error: not the backend's
///   failure, never retried.
///
/// It never fails: a backend that cannot be reached answers 502, one that
/// breaks the exchange 502, one that does not answer in time 504, each with
/// the [`Error`](crate::Error) in the response extensions (for failover and
/// passive health checking to read). That makes it a ready
/// `fallback_service` for an axum `Router`. A backend that answers before
/// it has read the request's body and closes the connection (a 413 to an
/// upload it refuses) breaks nothing: its answer is the response, on a
/// connection that is not reused.
///
/// Backends are spoken to in HTTP/1.1 (over TLS for `https://` backends:
/// [`ForwardBuilder::tls`], feature `tls`) over a pool of keep-alive
/// connections per backend, by tower-lb's own codec driven in the
/// request's task (lock-free checkout, no connection task or channel per
/// request; a connection returns when its response body ends; a response
/// with ambiguous framing is a 502 and its connection is closed), or in
/// HTTP/2 with prior knowledge for backends whose
/// [`Protocol`](crate::backend::Protocol) says so (hyper-util's client,
/// which multiplexes). The response carries the request's extensions, so
/// the layers above add theirs without a new map.
///
/// ```
/// use std::time::Duration;
/// use tower_lb::Forward;
///
/// // One type whatever request bodies it carries: no annotation needed.
/// let forward = Forward::builder()
///     .timeout(Duration::from_secs(10))
///     .connect_timeout(Duration::from_secs(1))
///     .build();
/// ```
pub struct Forward {
    // One Arc: servers clone the whole service stack per request (hyper's
    // service glue does), and a legacy client is several Arcs to clone.
    shared: Arc<Shared>,
}

struct Shared {
    http1: Pool,
    http2: Client<Connector, Http2Body>,
    timeout: Option<Duration>,
    proto: HeaderValue,
    upgrades: Box<[Box<str>]>,
}

impl Forward {
    /// A forwarder with the default settings (see [`ForwardBuilder`]).
    pub fn new() -> Self {
        ForwardBuilder::default().build()
    }

    /// A builder for the settings.
    pub fn builder() -> ForwardBuilder {
        ForwardBuilder::default()
    }
}

impl Default for Forward {
    fn default() -> Self {
        Self::new()
    }
}

/// Settings of a [`Forward`]. Each default says why it is what it is.
#[derive(Clone, Debug)]
#[must_use]
pub struct ForwardBuilder {
    timeout: Option<Duration>,
    connect_timeout: Duration,
    pool_idle_timeout: Duration,
    pool_max_idle_per_host: usize,
    forwarded_proto: &'static str,
    upgrades: Vec<Box<str>>,
    connect: Connect,
}

impl Default for ForwardBuilder {
    fn default() -> Self {
        Self {
            timeout: Some(Duration::from_secs(30)),
            connect_timeout: Duration::from_secs(5),
            pool_idle_timeout: Duration::from_secs(90),
            pool_max_idle_per_host: usize::MAX,
            forwarded_proto: "http",
            upgrades: vec!["websocket".into()],
            connect: Connect::default(),
        }
    }
}

impl ForwardBuilder {
    /// How long a backend may take to send its response headers before the
    /// client gets 504. Default 30 s: a hung backend must not hold a client
    /// forever, and a slow report still fits. `None` waits forever (when an
    /// outer layer, such as failover, keeps the time).
    pub fn timeout(mut self, timeout: impl Into<Option<Duration>>) -> Self {
        self.timeout = timeout.into();
        self
    }

    /// How long a TCP connect may take (for an `https://` backend, with its
    /// TLS handshake). Default 5 s (Envoy's): a backend that drops SYNs is
    /// given up on in time for a retry elsewhere.
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// How long an idle pooled connection is kept. Default 90 s (hyper's):
    /// long enough to keep the pool warm between bursts. A backend that
    /// closes an idle connection first costs nothing: a request that never
    /// left on a closed connection is resent on another.
    pub fn pool_idle_timeout(mut self, timeout: Duration) -> Self {
        self.pool_idle_timeout = timeout;
        self
    }

    /// How many idle connections to keep per backend. Default unbounded: the
    /// pool is as large as the peak concurrency asked of it, and idle
    /// connections expire after the idle timeout.
    pub fn pool_max_idle_per_host(mut self, max: usize) -> Self {
        self.pool_max_idle_per_host = max;
        self
    }

    /// The `X-Forwarded-Proto` sent: `http` (the default), or `https` when
    /// the server in front terminates TLS.
    pub fn forwarded_proto(mut self, proto: &'static str) -> Self {
        self.forwarded_proto = proto;
        self
    }

    /// The protocols a client may switch to with an HTTP/1.1 `Upgrade`
    /// (names compared without case). Default `["websocket"]`: the one
    /// upgrade browsers make. An empty list turns upgrades off. `h2c` is
    /// left out whatever the list says: a tunnel would let the client speak
    /// raw HTTP/2 to the backend past every rule of the proxy (h2c clients
    /// are served with prior knowledge instead).
    pub fn upgrades<I, P>(mut self, protocols: I) -> Self
    where
        I: IntoIterator<Item = P>,
        P: AsRef<str>,
    {
        self.upgrades = protocols
            .into_iter()
            .map(|p| p.as_ref().trim().to_ascii_lowercase())
            .filter(|p| !p.is_empty() && p != H2C)
            .map(String::into_boxed_str)
            .collect();
        self
    }

    /// How `https://` backends are spoken to (feature `tls`): the roots
    /// trusted, the name checked, a client certificate. Default: the
    /// system's roots and each backend's own name ([`BackendTls::system`],
    /// loaded once per process on the first `https://` connection).
    ///
    /// [`BackendTls::system`]: crate::forward::BackendTls::system
    #[cfg(feature = "tls")]
    pub fn tls(mut self, tls: crate::forward::BackendTls) -> Self {
        self.connect.tls = Some(tls);
        self
    }

    /// Builds the forwarder. Needs no runtime until the first request.
    pub fn build(self) -> Forward {
        let connector = Connector::new(self.connect.clone(), self.connect_timeout, true);
        let mut builder = Client::builder(TokioExecutor::new());
        builder
            .pool_timer(TokioTimer::new())
            .timer(TokioTimer::new())
            .pool_idle_timeout(self.pool_idle_timeout)
            .pool_max_idle_per_host(self.pool_max_idle_per_host);
        let http1 = Pool::new(
            self.connect,
            self.connect_timeout,
            self.timeout,
            self.pool_idle_timeout,
            self.pool_max_idle_per_host,
            DEFAULT_MAX_HEAD,
        );
        let http2 = builder.http2_only(true).build(connector);
        Forward {
            shared: Arc::new(Shared {
                http1,
                http2,
                timeout: self.timeout,
                proto: HeaderValue::from_static(self.forwarded_proto),
                upgrades: self.upgrades.into_boxed_slice(),
            }),
        }
    }
}

impl<B> Service<Request<B>> for Forward
where
    B: http_body::Body + Send + 'static + Unpin,
    B::Data: Send,
    B::Error: Into<BoxError> + Send,
{
    type Response = Response<ResponseBody>;
    type Error = Infallible;
    type Future = ResponseFuture;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<B>) -> ResponseFuture {
        let (mut parts, body) = request.into_parts();
        let upgrade = requested_upgrade(&parts.headers, &self.shared.upgrades);
        let target = parts.extensions.get::<Target>();
        let http2 =
            upgrade.is_none() && target.is_some_and(|t| t.backend().protocol() == Protocol::Http2);
        let shared = Arc::clone(&self.shared);
        if http2 {
            return ResponseFuture::new(Box::pin(shared.send_http2(parts, http2_body(body))));
        }
        let tunnel = match upgrade {
            Some(protocol) => {
                let backend = target.map(|t| t.backend().clone());
                parts
                    .extensions
                    .remove::<OnUpgrade>()
                    .map(|client| Box::new(Tunnel::new(client, backend, protocol)))
            }
            None => None,
        };
        // The reading of the call chain (one for the whole stack), for the
        // pool's idle check and the request's deadline.
        let now = CallTime::enter().nanos();
        // The box first, so that the future is built in it (see `in_box`).
        let slot = Box::new_uninit();
        let future = shared.send_http1(parts, body, tunnel, now);
        let boxed = in_box(slot, future);
        ResponseFuture::new(boxed)
    }
}

/// `future` in `slot`, a box made before the future was: with the box
/// there first, the compiler builds the future in it. `Box::pin(future)`
/// allocates after its argument is evaluated, so the future was built on
/// the stack and all of it copied in: 1,008 bytes a request here, for a
/// future whose first state holds only its arguments (the largest of the
/// 63 copies a proxied GET made, counted with an interposed `memcpy`).
#[inline(always)]
fn in_box<F>(slot: Box<std::mem::MaybeUninit<F>>, future: F) -> Pin<Box<F>> {
    Box::into_pin(Box::write(slot, future))
}

impl Shared {
    /// HTTP/1.1 on our own codec, in this task: the head is written from
    /// `parts` with the header rules applied as it is written.
    ///
    /// The response, and the answer to a failure, carry the request's
    /// extensions (its map already exists, so what the layers above add to
    /// the response costs no new map); the tunnel's `OnUpgrade` was taken
    /// out before. A request marked [`ReturnHead`] gets its head back in the
    /// response as a [`RequestHead`].
    ///
    /// A plain function returning an `async` block, not an `async fn`: an
    /// `async fn` keeps each argument twice in its future (as argument and
    /// as local, 336 bytes here), and this future is boxed and moved once a
    /// request. The functions it awaits in the pool and the codec are
    /// written the same way for the same reason, and the tunnel (an
    /// upgrade's, rare) comes boxed: together they keep the box at 1,016
    /// bytes in a release build, under the 1,032 that glibc's malloc serves
    /// from its per-thread cache (at 1,208 each request's box took the
    /// general path: 22,518 against 22,135 instructions a proxied GET,
    /// callgrind). `tests/allocations.rs` fails a release build whose
    /// requests allocate above that size.
    #[allow(clippy::manual_async_fn)] // on purpose: the size, above
    fn send_http1<B>(
        self: Arc<Self>,
        mut parts: Parts,
        mut body: B,
        tunnel: Option<Box<Tunnel>>,
        now: Nanos,
    ) -> impl Future<Output = Response<ResponseBody>>
    where
        B: http_body::Body + Unpin,
        B::Error: Into<BoxError>,
    {
        async move {
            let upgrade = tunnel.as_deref().map(Tunnel::protocol);
            // Read, not taken: the marker goes back with the request's
            // extensions and is answered in place (see `ReturnHead`).
            let return_head = match tunnel {
                None => parts.extensions.get::<ReturnHead>().copied(),
                Some(_) => None,
            };
            let exchange = self.http1.send(
                &mut parts,
                &self.proto,
                upgrade,
                return_head.as_ref(),
                Pin::new(&mut body),
                now,
            );
            // The timeout is the pool's: on the connection's own timer.
            let answer = exchange.await;
            parts.extensions.remove::<OnUpgrade>();
            let mut response = match answer {
                Ok((Answer::Response(response), lease)) => {
                    let mut response = response.map(|body| ResponseBody::http1(body, lease));
                    *response.extensions_mut() = std::mem::take(&mut parts.extensions);
                    response
                }
                Ok((
                    Answer::Upgrade {
                        response,
                        protocol,
                        upgraded,
                    },
                    _,
                )) => return switch(response, protocol, upgraded, tunnel.map(|tunnel| *tunnel)),
                Err(error) => {
                    let mut response = failure(&error, std::mem::take(&mut parts.extensions));
                    if let Some(marker) = return_head {
                        let head = RequestHead::take(&mut parts);
                        marker.reply(Some(head), response.extensions_mut());
                    }
                    return response;
                }
            };
            // The head goes back untouched (the rules were applied as it was
            // written, not to the map) when the response may be retried; any
            // other response's headers are in the request's map, and say so.
            if let Some(marker) = return_head {
                marker.answer(&mut parts, &mut response);
            }
            response
        }
    }

    /// HTTP/2 with prior knowledge on hyper-util's client, which
    /// multiplexes; the header rules edit the map first.
    async fn send_http2(
        self: Arc<Self>,
        mut parts: Parts,
        body: Http2Body,
    ) -> Response<ResponseBody> {
        // This path edits the map before hyper takes the request, so the
        // head asked back is a copy made first (HTTP/2 backends are the
        // rare case).
        let asked = parts.extensions.remove::<ReturnHead>();
        let head = asked.map(|_| RequestHead {
            method: parts.method.clone(),
            uri: parts.uri.clone(),
            version: parts.version,
            headers: parts.headers.clone(),
        });
        let mut response = self.exchange_http2(parts, body).await;
        if let Some(marker) = asked {
            marker.reply(head, response.extensions_mut());
        }
        response
    }

    async fn exchange_http2(&self, mut parts: Parts, body: Http2Body) -> Response<ResponseBody> {
        strip_hop_by_hop(&mut parts.headers);
        let client = parts.extensions.get::<ClientAddr>();
        add_forwarded(&mut parts.headers, client, &self.proto);
        parts.version = Version::HTTP_2;
        let exchange = async {
            self.http2
                .request(Request::from_parts(parts, body))
                .await
                .map_err(legacy_failure)
        };
        match within(self.timeout, exchange).await {
            Ok(response) => {
                let (mut parts, body) = response.into_parts();
                strip_hop_by_hop(&mut parts.headers);
                Response::from_parts(parts, ResponseBody::http2(body))
            }
            Err(error) => error.to_response(),
        }
    }
}

/// The answer to a failed exchange: the error's response, carrying the
/// request's extensions as a backend's answer does (so that a retry built
/// from it keeps the client's [`ClientAddr`] and the application's own).
fn failure(error: &Error, extensions: http::Extensions) -> Response<ResponseBody> {
    let mut response: Response<ResponseBody> = error.to_response();
    let made = std::mem::replace(response.extensions_mut(), extensions);
    response.extensions_mut().extend(made);
    response
}

/// `exchange`, or a timeout error once `limit` has passed.
///
/// A plain function of combinators, not an `async fn`: an `async fn` keeps
/// its argument (the whole exchange, about 1 KB) beside the timeout that
/// took it over, which doubled the forwarding future every request boxes
/// and moves.
fn within<T, F>(limit: Option<Duration>, exchange: F) -> impl Future<Output = Result<T, Error>>
where
    F: Future<Output = Result<T, Error>>,
{
    match limit {
        Some(limit) => Either::Left(
            tokio::time::timeout(limit, exchange)
                .map(|answer| answer.unwrap_or_else(|_| Err(Error::new(ErrorKind::Timeout)))),
        ),
        None => Either::Right(exchange),
    }
}

/// A `101` from the backend: on the upgrade the client asked for (and the
/// forwarder allowed), the tunnel starts and the upgrade headers go back to
/// the client. Any other `101` is the backend's failure: 502, and the
/// switched connection is dropped (closed), never pooled.
fn switch(
    response: Response<()>,
    protocol: Option<HeaderValue>,
    upgraded: Upgraded<Stream>,
    tunnel: Option<Tunnel>,
) -> Response<ResponseBody> {
    match tunnel {
        Some(tunnel) if switches_to(protocol.as_ref(), tunnel.protocol()) => {
            let protocol = tunnel.protocol().clone();
            tunnel.spawn(upgraded);
            let (mut parts, ()) = response.into_parts();
            keep_upgrade(&mut parts.headers, protocol);
            Response::from_parts(parts, ResponseBody::from(Bytes::new()))
        }
        _ => Error::new(ErrorKind::Upstream)
            .with_message("backend switched protocols to one the client did not ask for")
            .to_response(),
    }
}

/// Connect failures (the backend never saw the request) are told apart from
/// failures after the request was sent: only the former are always safe to
/// retry.
/// The body type of the HTTP/2 client: any request body, boxed, so that
/// `Forward` is one type whatever bodies it carries (HTTP/2 backends are
/// the rare case, and the box is one allocation per HTTP/2 request).
type Http2Body = UnsyncBoxBody<Bytes, BoxError>;

fn http2_body<B>(body: B) -> Http2Body
where
    B: http_body::Body + Send + 'static,
    B::Error: Into<BoxError>,
{
    body.map_frame(|frame| frame.map_data(|mut data| data.copy_to_bytes(data.remaining())))
        .map_err(Into::into)
        .boxed_unsync()
}

fn legacy_failure(error: hyper_util::client::legacy::Error) -> Error {
    let kind = if error.is_connect() {
        ErrorKind::Connect
    } else {
        ErrorKind::Upstream
    };
    Error::new(kind).with_source(error)
}

impl Clone for Forward {
    fn clone(&self) -> Self {
        Self {
            shared: Arc::clone(&self.shared),
        }
    }
}

impl fmt::Debug for Forward {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Forward")
            .field("timeout", &self.shared.timeout)
            .field("forwarded_proto", &self.shared.proto)
            .finish_non_exhaustive()
    }
}
