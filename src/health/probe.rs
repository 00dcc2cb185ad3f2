//! What an active health check asks a backend.

use std::fmt;
use std::ops::RangeInclusive;
use std::sync::Arc;

use bytes::Bytes;
use http::header::{HOST, USER_AGENT};
use http::{HeaderValue, Method, Request, StatusCode, Uri};
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use crate::backend::Backend;
use crate::error::ConfigError;
use crate::forward::{Connect, Connector};

/// How much of a probe response body is read to look for the expected text.
const BODY_LIMIT: usize = 64 * 1024;

/// A health probe: an HTTP request with an expected answer, or a TCP connect.
#[derive(Clone, Debug)]
pub struct Probe {
    kind: Kind,
}

#[derive(Clone, Debug)]
enum Kind {
    Tcp,
    Http(Arc<HttpProbe>),
}

#[derive(Clone, Debug)]
struct HttpProbe {
    method: Method,
    path: String,
    statuses: RangeInclusive<u16>,
    body_contains: Option<String>,
}

impl Probe {
    /// Passes when a TCP connection to the backend opens.
    pub fn tcp() -> Self {
        Self { kind: Kind::Tcp }
    }

    /// Passes when `GET path` answers 200 to 399 (the classes HAProxy and
    /// nginx accept: a redirect to a login page still means the app is up).
    ///
    /// # Errors
    ///
    /// When `path` is not an absolute path (`/healthz`).
    pub fn http(path: &str) -> Result<Self, ConfigError> {
        if !path.starts_with('/') || path.parse::<http::uri::PathAndQuery>().is_err() {
            return Err(ConfigError::new(format!(
                "health path `{path}`: must be an absolute path such as /healthz"
            )));
        }
        Ok(Self {
            kind: Kind::Http(Arc::new(HttpProbe {
                method: Method::GET,
                path: path.to_owned(),
                statuses: 200..=399,
                body_contains: None,
            })),
        })
    }

    /// Uses `method` instead of `GET` (an HTTP probe only).
    pub fn method(self, method: Method) -> Self {
        self.map_http(|probe| probe.method = method)
    }

    /// Accepts these statuses instead of 200 to 399 (an HTTP probe only).
    pub fn expect_status(self, statuses: RangeInclusive<u16>) -> Self {
        self.map_http(|probe| probe.statuses = statuses)
    }

    /// Also requires this text in the first 64 KiB of the body (an HTTP
    /// probe only): for health pages that answer 200 with a status inside.
    pub fn expect_body(self, text: impl Into<String>) -> Self {
        let text = text.into();
        self.map_http(|probe| probe.body_contains = Some(text))
    }

    fn map_http(self, change: impl FnOnce(&mut HttpProbe)) -> Self {
        match self.kind {
            Kind::Http(probe) => {
                let mut probe = Arc::unwrap_or_clone(probe);
                change(&mut probe);
                Self {
                    kind: Kind::Http(Arc::new(probe)),
                }
            }
            Kind::Tcp => self,
        }
    }

    /// Probes `backend` once; the error says why it failed.
    pub(crate) async fn check(
        &self,
        backend: &Backend,
        client: &ProbeClient,
    ) -> Result<(), String> {
        match &self.kind {
            // Over TLS for an `https://` backend: it passes when the
            // handshake does, with the forwarder's settings.
            Kind::Tcp => {
                let address = backend.address();
                let tls = address.scheme() == &http::uri::Scheme::HTTPS;
                crate::forward::connect(
                    &client.connect,
                    address.authority(),
                    tls,
                    false,
                    client.timeout,
                )
                .await
                .map(drop)
                .map_err(|e| format!("connect: {}", root_cause(&e)))
            }
            Kind::Http(probe) => probe.check(backend, client).await,
        }
    }
}

impl HttpProbe {
    async fn check(&self, backend: &Backend, client: &ProbeClient) -> Result<(), String> {
        let address = backend.address();
        let uri: Uri = format!(
            "{}://{}{}",
            address.scheme(),
            address.authority(),
            self.path
        )
        .parse()
        .map_err(|e| format!("bad probe URL: {e}"))?;
        let request = Request::builder()
            .method(self.method.clone())
            .uri(uri)
            .header(HOST, address.host_header().clone())
            .header(USER_AGENT, HeaderValue::from_static("tower-lb-health"))
            .body(Empty::new())
            .map_err(|e| format!("bad probe request: {e}"))?;
        let response = client.inner.request(request).await.map_err(|e| {
            if e.is_connect() {
                format!("connect: {}", root_cause(&e))
            } else {
                format!("request: {}", root_cause(&e))
            }
        })?;
        let status = response.status();
        if !self.statuses.contains(&status.as_u16()) {
            return Err(format!("status {}", status_text(status)));
        }
        if let Some(text) = &self.body_contains {
            let body = Limited::new(response.into_body(), BODY_LIMIT)
                .collect()
                .await
                .map_err(|e| format!("body: {e}"))?
                .to_bytes();
            if !contains(&body, text.as_bytes()) {
                return Err(format!("body lacks `{text}`"));
            }
        }
        Ok(())
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    needle.is_empty() || haystack.windows(needle.len()).any(|w| w == needle)
}

fn status_text(status: StatusCode) -> String {
    match status.canonical_reason() {
        Some(reason) => format!("{} {reason}", status.as_u16()),
        None => status.as_u16().to_string(),
    }
}

fn root_cause(error: &(dyn std::error::Error + 'static)) -> String {
    let mut cause = error;
    while let Some(next) = cause.source() {
        cause = next;
    }
    cause.to_string()
}

/// The pooled client probes share: keep-alive connections, as Envoy's HTTP
/// health checks use, so probing costs the backends no connection churn.
#[derive(Clone)]
pub(crate) struct ProbeClient {
    inner: Client<Connector, Empty<Bytes>>,
    connect: Connect,
    timeout: std::time::Duration,
}

impl ProbeClient {
    /// Opens connections as the forwarder does (`connect`: TLS for
    /// `https://` backends), each within `timeout` (the probe's own).
    pub(crate) fn new(connect: Connect, timeout: std::time::Duration) -> Self {
        let connector = Connector::new(connect.clone(), timeout, false);
        Self {
            inner: Client::builder(TokioExecutor::new())
                .pool_timer(TokioTimer::new())
                .timer(TokioTimer::new())
                .pool_max_idle_per_host(1)
                .build(connector),
            connect,
            timeout,
        }
    }
}

impl fmt::Debug for ProbeClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProbeClient").finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_must_be_absolute() {
        assert!(Probe::http("/healthz").is_ok());
        let error = Probe::http("healthz").unwrap_err();
        assert!(error.to_string().contains("absolute path"), "{error}");
    }

    #[test]
    fn body_search_finds_text() {
        assert!(contains(b"status: ok\n", b"ok"));
        assert!(!contains(b"status: down\n", b"ok"));
    }
}
