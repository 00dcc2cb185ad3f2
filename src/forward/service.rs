//! The forwarding service: hyper-util's pooled client behind the proxy rules.

use std::convert::Infallible;
use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::{HeaderValue, Request, Response, Version};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use tower_service::Service;

use hyper::upgrade::OnUpgrade;

use super::headers::{add_forwarded, keep_upgrade, requested_upgrade, strip_hop_by_hop};
use super::tunnel::Tunnel;
use super::{ResponseBody, ResponseFuture};
use crate::backend::Protocol;
use crate::{BoxError, ClientAddr, Target};

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
/// - an HTTP/1.1 `Upgrade` (WebSocket) is passed to the backend with its
///   `Upgrade` and `Connection` headers, and on `101 Switching Protocols`
///   the two connections are joined: the tunnel stays on that backend for
///   its whole life and counts as one request in flight there.
///
/// It never fails: a backend that cannot be reached answers 502, one that
/// breaks the exchange 502, one that does not answer in time 504, each with
/// the [`Error`](crate::Error) in the response extensions (for failover and
/// passive health checking to read). That makes it a ready
/// `fallback_service` for an axum `Router`.
///
/// Backends are spoken to in cleartext HTTP/1.1, or HTTP/2 with prior
/// knowledge for backends whose [`Protocol`](crate::backend::Protocol) says
/// so (over a second pool).
///
/// ```
/// use std::time::Duration;
/// use tower_lb::Forward;
///
/// let forward: Forward<axum::body::Body> = Forward::builder()
///     .timeout(Duration::from_secs(10))
///     .connect_timeout(Duration::from_secs(1))
///     .build();
/// ```
pub struct Forward<B> {
    http1: Client<HttpConnector, B>,
    http2: Client<HttpConnector, B>,
    settings: Arc<Settings>,
}

#[derive(Debug)]
struct Settings {
    timeout: Option<Duration>,
    proto: HeaderValue,
}

impl<B> Forward<B>
where
    B: http_body::Body + Send + 'static + Unpin,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    /// A forwarder with the default settings (see [`ForwardBuilder`]).
    pub fn new() -> Self {
        ForwardBuilder::default().build()
    }
}

impl Forward<()> {
    /// A builder for the settings; the request body type is chosen by
    /// [`build`](ForwardBuilder::build) (usually inferred).
    pub fn builder() -> ForwardBuilder {
        ForwardBuilder::default()
    }
}

impl<B> Default for Forward<B>
where
    B: http_body::Body + Send + 'static + Unpin,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
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
}

impl Default for ForwardBuilder {
    fn default() -> Self {
        Self {
            timeout: Some(Duration::from_secs(30)),
            connect_timeout: Duration::from_secs(5),
            pool_idle_timeout: Duration::from_secs(90),
            pool_max_idle_per_host: usize::MAX,
            forwarded_proto: "http",
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

    /// How long a TCP connect may take. Default 5 s (Envoy's): a backend
    /// that drops SYNs is given up on in time for a retry elsewhere.
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

    /// Builds the forwarder. Needs no runtime until the first request.
    pub fn build<B>(self) -> Forward<B>
    where
        B: http_body::Body + Send + 'static + Unpin,
        B::Data: Send,
        B::Error: Into<BoxError>,
    {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(self.connect_timeout));
        let mut builder = Client::builder(TokioExecutor::new());
        builder
            .pool_timer(TokioTimer::new())
            .timer(TokioTimer::new())
            .pool_idle_timeout(self.pool_idle_timeout)
            .pool_max_idle_per_host(self.pool_max_idle_per_host);
        let http1 = builder.build(connector.clone());
        let http2 = builder.http2_only(true).build(connector);
        Forward {
            http1,
            http2,
            settings: Arc::new(Settings {
                timeout: self.timeout,
                proto: HeaderValue::from_static(self.forwarded_proto),
            }),
        }
    }
}

impl<B> Service<Request<B>> for Forward<B>
where
    B: http_body::Body + Send + 'static + Unpin,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    type Response = Response<ResponseBody>;
    type Error = Infallible;
    type Future = ResponseFuture;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<B>) -> ResponseFuture {
        // Split so the headers can be edited while the extensions are read.
        let (mut parts, body) = request.into_parts();
        let upgrade = requested_upgrade(&parts.headers);
        strip_hop_by_hop(&mut parts.headers);
        let client = parts.extensions.get::<ClientAddr>();
        add_forwarded(&mut parts.headers, client, &self.settings.proto);
        let target = parts.extensions.get::<Target>();
        let http2 =
            upgrade.is_none() && target.is_some_and(|t| t.backend().protocol() == Protocol::Http2);
        let tunnel = match upgrade {
            Some(protocol) => {
                keep_upgrade(&mut parts.headers, protocol);
                let backend = target.map(|t| t.backend().clone());
                parts
                    .extensions
                    .remove::<OnUpgrade>()
                    .map(|client| Tunnel::new(client, backend))
            }
            None => None,
        };
        parts.version = if http2 {
            Version::HTTP_2
        } else {
            Version::HTTP_11
        };
        let client = if http2 { &self.http2 } else { &self.http1 };
        let request = Request::from_parts(parts, body);
        ResponseFuture::new(client.request(request), self.settings.timeout, tunnel)
    }
}

impl<B> Clone for Forward<B> {
    fn clone(&self) -> Self {
        Self {
            http1: self.http1.clone(),
            http2: self.http2.clone(),
            settings: Arc::clone(&self.settings),
        }
    }
}

impl<B> fmt::Debug for Forward<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Forward")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}
