//! The stream to a backend: TCP, or TLS over TCP for `https://` backends.
//!
//! One enum rather than a generic parameter, so that one pool, one
//! response body type and one tunnel serve a set that mixes cleartext and
//! TLS backends; each read and write pays one `match`, nothing next to a
//! system call. The TLS stream is boxed: rustls' connection state is a few
//! KiB, and a cleartext connection should not carry that room.
//!
//! [`connect`] is the one way a connection to a backend is opened, for the
//! HTTP/1.1 pool, the HTTP/2 client and the health probes alike, so they
//! all speak TLS with the same settings and none of them can fall back to
//! cleartext for an `https://` backend.

use std::future::Future;
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use http::Uri;
use http::uri::{Authority, Scheme};
use hyper_util::client::legacy::connect::{Connected, Connection};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

#[cfg(feature = "tls")]
use super::tls::{Alpn, BackendTls};
#[cfg(feature = "tls")]
use crate::ConfigError;
use crate::{Error, ErrorKind};

/// A connection's byte stream.
#[derive(Debug)]
pub(crate) enum Stream {
    Plain(TcpStream),
    #[cfg(feature = "tls")]
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

/// What a connection is opened with, besides the address.
#[derive(Clone, Debug, Default)]
pub(crate) struct Connect {
    /// The TLS settings for `https://` backends; `None` is the process's
    /// default ([`BackendTls::system`]), loaded when first needed.
    #[cfg(feature = "tls")]
    pub(crate) tls: Option<BackendTls>,
}

/// Whether a backend URI's scheme asks for TLS.
pub(crate) fn is_tls(scheme: Option<&Scheme>) -> bool {
    scheme == Some(&Scheme::HTTPS)
}

/// Opens a connection to `authority` within `timeout` (the TCP connect
/// and, for TLS, the handshake together), speaking TLS when `tls` is set
/// (offering `http2`'s ALPN or HTTP/1.1's).
pub(crate) async fn connect(
    settings: &Connect,
    authority: &Authority,
    tls: bool,
    http2: bool,
    timeout: Duration,
) -> Result<Stream, Error> {
    let open = open(settings, authority, tls, http2);
    match tokio::time::timeout(timeout, open).await {
        Ok(result) => result,
        Err(_) => Err(Error::new(ErrorKind::Connect).with_message(if tls {
            format!("connect and TLS handshake timed out after {timeout:?}")
        } else {
            format!("connect timed out after {timeout:?}")
        })),
    }
}

#[cfg_attr(not(feature = "tls"), allow(unused_variables))]
async fn open(
    settings: &Connect,
    authority: &Authority,
    tls: bool,
    http2: bool,
) -> Result<Stream, Error> {
    #[cfg(not(feature = "tls"))]
    if tls {
        return Err(Error::new(ErrorKind::Connect).with_message(
            "an https backend needs tower-lb's `tls` feature; refusing to send it cleartext",
        ));
    }
    // Looked up before connecting: a TLS setup that cannot work fails
    // without a connection the backend would see opened and dropped.
    #[cfg(feature = "tls")]
    let backend_tls = match (tls, &settings.tls) {
        (false, _) => None,
        (true, Some(configured)) => Some(configured),
        (true, None) => Some(BackendTls::shared_default().map_err(no_default_tls)?),
    };
    let port = authority.port_u16().unwrap_or(if tls { 443 } else { 80 });
    let tcp = TcpStream::connect((authority.host().trim_matches(['[', ']']), port))
        .await
        .map_err(|e| Error::new(ErrorKind::Connect).with_source(e))?;
    let _ = tcp.set_nodelay(true);
    #[cfg(feature = "tls")]
    if let Some(backend_tls) = backend_tls {
        let alpn = if http2 { Alpn::Http2 } else { Alpn::Http1 };
        let stream = backend_tls.handshake(tcp, authority, alpn).await?;
        return Ok(Stream::Tls(Box::new(stream)));
    }
    Ok(Stream::Plain(tcp))
}

/// The one configuration error met at request time: the default TLS
/// settings load on the first `https://` backend, and a system without
/// roots refuses them. The backend never saw a connection, so it is a
/// connect error (502, retried on another backend, counted against this
/// one, which this proxy cannot reach), with the [`ConfigError`] kept as
/// its cause; a 500 would blame no one and retry nothing.
#[cfg(feature = "tls")]
fn no_default_tls(error: ConfigError) -> Error {
    Error::new(ErrorKind::Connect)
        .with_message(format!("no TLS settings for https backends: {error}"))
        .with_source(error)
}

impl Stream {
    /// Whether TLS negotiated `h2` by ALPN.
    fn negotiated_h2(&self) -> bool {
        match self {
            Stream::Plain(_) => false,
            #[cfg(feature = "tls")]
            Stream::Tls(tls) => tls.get_ref().1.alpn_protocol() == Some(b"h2"),
        }
    }
}

/// For hyper-util's client (HTTP/2 backends, health probes).
impl Connection for Stream {
    fn connected(&self) -> Connected {
        let connected = Connected::new();
        if self.negotiated_h2() {
            connected.negotiated_h2()
        } else {
            connected
        }
    }
}

macro_rules! each {
    ($self:ident, $io:ident => $call:expr) => {
        match $self.get_mut() {
            Stream::Plain($io) => $call,
            #[cfg(feature = "tls")]
            Stream::Tls($io) => $call,
        }
    };
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        each!(self, io => Pin::new(io).poll_read(cx, buf))
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        each!(self, io => Pin::new(io).poll_write(cx, data))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        each!(self, io => Pin::new(io).poll_write_vectored(cx, data))
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Stream::Plain(io) => io.is_write_vectored(),
            #[cfg(feature = "tls")]
            Stream::Tls(io) => io.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        each!(self, io => Pin::new(io).poll_flush(cx))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        each!(self, io => Pin::new(io).poll_shutdown(cx))
    }
}

/// [`connect`] as hyper-util's client wants it: a service from a URI to a
/// stream. The HTTP/2 client and the health probes use it, so their
/// `https://` backends get the same TLS as the HTTP/1.1 pool's.
#[derive(Clone, Debug)]
pub(crate) struct Connector {
    settings: Connect,
    timeout: Duration,
    http2: bool,
}

impl Connector {
    pub(crate) fn new(settings: Connect, timeout: Duration, http2: bool) -> Self {
        Self {
            settings,
            timeout,
            http2,
        }
    }
}

impl tower_service::Service<Uri> for Connector {
    type Response = TokioIo<Stream>;
    type Error = Error;
    type Future = Pin<Box<dyn Future<Output = Result<TokioIo<Stream>, Error>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let this = self.clone();
        Box::pin(async move {
            let Some(authority) = uri.authority() else {
                return Err(Error::new(ErrorKind::Connect).with_message("URI names no backend"));
            };
            let tls = is_tls(uri.scheme());
            connect(&this.settings, authority, tls, this.http2, this.timeout)
                .await
                .map(TokioIo::new)
        })
    }
}

#[cfg(all(test, feature = "tls"))]
mod tests {
    use std::error::Error as _;

    use super::*;

    #[test]
    fn default_tls_refused_is_a_connect_error_with_its_cause() {
        let error = no_default_tls(ConfigError::new("TLS: no system root certificate"));
        assert!(error.is_connect(), "{error:?}");
        assert_eq!(error.status(), http::StatusCode::BAD_GATEWAY);
        assert!(error.to_string().contains("no system root"), "{error}");
        let cause = error.source().and_then(|e| e.downcast_ref::<ConfigError>());
        assert!(cause.is_some(), "the ConfigError is the cause: {error:?}");
    }
}
