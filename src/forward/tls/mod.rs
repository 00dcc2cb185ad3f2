//! TLS to backends, on rustls: what to trust, what name to check, which
//! client certificate to show, and the handshake itself.
//!
//! A [`BackendTls`] is built once (its configuration is validated then,
//! never while serving) and shared by every forwarder and health check that
//! is given a clone of it: its two rustls client configurations (ALPN
//! `http/1.1` for the HTTP/1.1 codec, `h2` for backends marked
//! [`Protocol::Http2`](crate::backend::Protocol)) share one session cache,
//! so a connection opened to refill a pool resumes an earlier session
//! (TLS 1.3 tickets, TLS 1.2 session ids) instead of paying for a full
//! handshake, whichever worker thread opened the first one.
//!
//! A handshake that fails (an untrusted issuer, a certificate for another
//! name, a backend that does not speak TLS) fails the connection: the
//! request is answered 502 with an [`ErrorKind::Connect`] error, which
//! passive health counts against the backend and failover may retry
//! elsewhere. There is no fallback to cleartext, ever. The reason is logged
//! once per backend until a handshake with it succeeds again, so a broken
//! certificate does not write a line per request.

use std::fmt;
use std::io;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};

use http::uri::Authority;
use rustc_hash::FxHashSet;
use rustls::ClientConfig;
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use crate::{ConfigError, Error, ErrorKind};

mod builder;

pub use builder::BackendTlsBuilder;

/// Which ALPN list a connection offers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Alpn {
    /// `http/1.1`, for our HTTP/1.1 codec.
    Http1,
    /// `h2`, for backends marked `protocol=h2`.
    Http2,
}

/// How `https://` backends are spoken to: the certificates trusted, the
/// name verified, and an optional client certificate (mutual TLS).
///
/// TLS 1.3 and 1.2 only, on rustls with the process's default crypto
/// provider if one was installed, ring otherwise. A backend's certificate
/// is verified against the system's roots, or against the CA bundle given
/// instead, and must name the backend: its host name (sent as SNI too), or
/// its IP address (an IP SAN) when it is addressed by IP, unless
/// [`server_name`](BackendTlsBuilder::server_name) sets the name to check.
///
/// Cheap to clone: clones share the configuration and the session cache.
///
/// ```no_run
/// use tower_lb::Forward;
/// use tower_lb::forward::BackendTls;
///
/// # fn main() -> Result<(), tower_lb::ConfigError> {
/// let tls = BackendTls::builder()
///     .ca_file("/etc/tower-lb/backends-ca.pem") // instead of the system roots
///     .server_name("api.internal")              // backends listed by IP
///     .client_cert_files("/etc/tower-lb/client.pem", "/etc/tower-lb/client.key")
///     .build()?;
/// let forward = Forward::builder().tls(tls).build();
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct BackendTls {
    inner: Arc<Inner>,
}

struct Inner {
    http1: TlsConnector,
    http2: TlsConnector,
    server_name: Option<ServerName<'static>>,
    /// What it trusts and shows, for `Debug`.
    summary: String,
    /// Backends whose last handshake failed and was logged: the next
    /// failure is not logged again until one succeeds. Locked only when a
    /// handshake fails, or succeeds after a failure, never per request.
    failing: Mutex<FxHashSet<Authority>>,
    /// How many `failing` holds, read without the lock on every successful
    /// handshake.
    failing_count: AtomicUsize,
}

impl BackendTls {
    /// A builder: system roots, names from the backends' addresses, no
    /// client certificate.
    pub fn builder() -> BackendTlsBuilder {
        BackendTlsBuilder::default()
    }

    /// Trusts the system's roots, checks each backend's own name, shows no
    /// client certificate: what a forwarder uses for `https://` backends
    /// when it is given no [`BackendTls`].
    ///
    /// # Errors
    ///
    /// When the system has no root certificate to load.
    pub fn system() -> Result<Self, ConfigError> {
        Self::builder().build()
    }

    /// Wraps a rustls configuration made elsewhere (a custom verifier, a
    /// key in a hardware module). Its ALPN list is replaced: `http/1.1`,
    /// or `h2` for HTTP/2 backends.
    pub fn from_client_config(config: ClientConfig) -> Self {
        Self::from_parts(config, None, "a given rustls ClientConfig".into())
    }

    fn from_parts(
        mut config: ClientConfig,
        server_name: Option<ServerName<'static>>,
        summary: String,
    ) -> Self {
        // The clone shares the session store (an `Arc`), so a session made
        // for HTTP/1.1 and one for h2 land in the same cache.
        let mut http2 = config.clone();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        http2.alpn_protocols = vec![b"h2".to_vec()];
        Self {
            inner: Arc::new(Inner {
                http1: TlsConnector::from(Arc::new(config)),
                http2: TlsConnector::from(Arc::new(http2)),
                server_name,
                summary,
                failing: Mutex::default(),
                failing_count: AtomicUsize::new(0),
            }),
        }
    }

    /// The process-wide default ([`BackendTls::system`]), loaded on first
    /// use: the system's roots are read once, however many forwarders and
    /// health checks there are, and they share one session cache.
    pub(crate) fn shared_default() -> Result<&'static BackendTls, ConfigError> {
        static DEFAULT: OnceLock<Result<BackendTls, ConfigError>> = OnceLock::new();
        DEFAULT
            .get_or_init(BackendTls::system)
            .as_ref()
            .map_err(Clone::clone)
    }

    /// The name to verify (and send as SNI, for a host name) for the
    /// backend at `authority`.
    pub(crate) fn server_name(&self, authority: &Authority) -> Result<ServerName<'static>, Error> {
        if let Some(name) = &self.inner.server_name {
            return Ok(name.clone());
        }
        let host = authority.host();
        let host = host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(host);
        ServerName::try_from(host.to_owned()).map_err(|_| {
            Error::new(ErrorKind::Connect)
                .with_message(format!("`{host}` is not a name TLS can verify"))
        })
    }

    /// The TLS handshake over `tcp` with the backend at `authority`,
    /// offering `alpn`. A failure is logged once per backend (see the
    /// module docs) and is a connect error: the backend saw no request.
    pub(crate) async fn handshake(
        &self,
        tcp: TcpStream,
        authority: &Authority,
        alpn: Alpn,
    ) -> Result<TlsStream<TcpStream>, Error> {
        let name = self.server_name(authority)?;
        let connector = match alpn {
            Alpn::Http1 => &self.inner.http1,
            Alpn::Http2 => &self.inner.http2,
        };
        match connector.connect(name, tcp).await {
            Ok(stream) => {
                self.succeeded(authority);
                Ok(stream)
            }
            Err(error) => {
                self.failed(authority, &error);
                Err(Error::new(ErrorKind::Connect)
                    .with_message(format!("TLS handshake with {authority} failed: {error}"))
                    .with_source(error))
            }
        }
    }

    fn failed(&self, authority: &Authority, error: &io::Error) {
        let first = {
            let mut failing = self
                .inner
                .failing
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            let first = failing.insert(authority.clone());
            self.inner.failing_count.store(failing.len(), Relaxed);
            first
        };
        if first {
            tracing::warn!(
                backend = authority.as_str(),
                "TLS handshake with backend failed (logged once until it succeeds): {error}"
            );
        }
    }

    fn succeeded(&self, authority: &Authority) {
        // The common case reads one counter: the set is almost always
        // empty, and is only locked when it is not.
        if self.inner.failing_count.load(Relaxed) == 0 {
            return;
        }
        let removed = {
            let mut failing = self
                .inner
                .failing
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            let removed = failing.remove(authority);
            self.inner.failing_count.store(failing.len(), Relaxed);
            removed
        };
        if removed {
            tracing::info!(
                backend = authority.as_str(),
                "TLS handshake with backend succeeds again"
            );
        }
    }
}

impl fmt::Debug for BackendTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("BackendTls")
            .field(&self.inner.summary)
            .finish()
    }
}
