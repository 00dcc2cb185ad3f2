//! The admin surface: metrics, status JSON and a status page.

use std::convert::Infallible;
use std::fmt;
use std::future::{Ready, ready};
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::header::{ALLOW, CONTENT_TYPE};
use http::{HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::Full;
use prometheus_client::encoding::text::encode;
use prometheus_client::registry::Registry;
use tower_service::Service;

use super::page;
use super::status::{Status, TrafficSample};
use crate::backend::BackendSet;

/// A tower service answering the operator's questions:
///
/// - `GET /metrics`: the registry in the Prometheus (OpenMetrics) text format;
/// - `GET /status`: JSON, `{"version": .., "backends": [{"url", "healthy",
///   "verdict", "ejected", "ejection_remaining_ms", "weight",
///   "effective_weight", "share", "in_flight", "requests", "failures",
///   "recent_traffic", "latency_ms", "last_probe_error", "draining", ..}]}`;
/// - `GET /`: the same as a small HTML page that refreshes itself.
///
/// Mount it with axum's `nest_service("/admin", admin)` or serve it with
/// hyper on its own (loopback) port. It never fails.
///
/// ```
/// use axum::Router;
/// use prometheus_client::registry::Registry;
/// use tower_lb::BackendSet;
/// use tower_lb::metrics::{AdminService, MetricsLayer};
///
/// let set = BackendSet::new(["http://127.0.0.1:9001".parse()?]);
/// let mut registry = Registry::default();
/// let metrics = MetricsLayer::new(&set, &mut registry);
/// let app: Router = Router::new().nest_service("/admin", AdminService::new(set, registry));
/// # Ok::<(), tower_lb::Error>(())
/// ```
#[derive(Clone)]
pub struct AdminService {
    shared: Arc<Shared>,
}

struct Shared {
    set: BackendSet,
    registry: Registry,
    sample: TrafficSample,
}

impl AdminService {
    /// Serves `set`'s status and `registry`'s metrics.
    pub fn new(set: BackendSet, registry: Registry) -> Self {
        Self {
            shared: Arc::new(Shared {
                set,
                registry,
                sample: TrafficSample::default(),
            }),
        }
    }

    fn answer(&self, method: &Method, path: &str) -> Response<Full<Bytes>> {
        let path = path.trim_end_matches('/');
        let known = matches!(path, "" | "/metrics" | "/status");
        if !known {
            return text(StatusCode::NOT_FOUND, "not found\n");
        }
        if method != Method::GET && method != Method::HEAD {
            let mut response = text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n");
            response
                .headers_mut()
                .insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
            return response;
        }
        match path {
            "/metrics" => {
                let mut body = String::new();
                if encode(&mut body, &self.shared.registry).is_err() {
                    return text(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        "metrics encoding failed\n",
                    );
                }
                with_type(
                    body,
                    "application/openmetrics-text; version=1.0.0; charset=utf-8",
                )
            }
            "/status" => {
                let status = Status::of(&self.shared.set, &self.shared.sample);
                match serde_json::to_string(&status) {
                    Ok(json) => with_type(json, "application/json"),
                    Err(_) => text(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        "status encoding failed\n",
                    ),
                }
            }
            _ => {
                let status = Status::of(&self.shared.set, &self.shared.sample);
                with_type(page::render(&status), "text/html; charset=utf-8")
            }
        }
    }
}

fn with_type(body: String, content_type: &'static str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

fn text(status: StatusCode, body: &'static str) -> Response<Full<Bytes>> {
    let mut response = with_type(body.to_owned(), "text/plain; charset=utf-8");
    *response.status_mut() = status;
    response
}

impl<B> Service<Request<B>> for AdminService {
    type Response = Response<Full<Bytes>>;
    type Error = Infallible;
    type Future = Ready<Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        ready(Ok(self.answer(request.method(), request.uri().path())))
    }
}

impl fmt::Debug for AdminService {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AdminService")
            .field("set", &self.shared.set)
            .finish_non_exhaustive()
    }
}
