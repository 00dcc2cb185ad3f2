//! The admin surface: metrics, status JSON, the status page, and the
//! authenticated write routes.

use std::convert::Infallible;
use std::fmt;
use std::future::{Ready, ready};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};

use bytes::Bytes;
use http::header::{ALLOW, AUTHORIZATION, CACHE_CONTROL, CONTENT_TYPE, WWW_AUTHENTICATE};
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::Full;
use prometheus_client::encoding::text::encode;
use prometheus_client::registry::Registry;
use serde::Serialize;
use tower_service::Service;

use super::control::{self, Action};
use super::monitor::Monitor;
use super::status::{BackendStatus, SCHEMA, Status};
use super::{AdminTokens, MetricsLayer, page};
use crate::backend::BackendSet;
use crate::balance::{QueueLayer, QueueStats, Strategy};
use crate::client_addr::ClientAddr;

/// A tower service answering the operator's questions, and with tokens
/// taking the operator's orders.
///
/// Read routes (open to whoever reaches the listener; serve it on
/// loopback or behind your own access control):
///
/// - `GET /metrics`: the registry in the Prometheus (OpenMetrics) text format;
/// - `GET /status`: the JSON below;
/// - `GET /`: the status page: a card per backend with its health, weight,
///   share and in-flight count, sparklines of its last five minutes
///   (requests per second, error rate, p50 and p99 latency), the recent
///   health events as a timeline, and buttons for the write routes once a
///   token is entered. It refreshes itself in place every 2 s.
///
/// Write routes, on only [`with_tokens`](Self::with_tokens) (404
/// otherwise), each needing `Authorization: Bearer TOKEN` (401 without a
/// valid one, logged with the client's address, never the token):
///
/// | route | effect |
/// |---|---|
/// | `POST /backends/drain?backend=URL` | [`BackendSet::drain`]: no new requests, in-flight ones finish |
/// | `POST /backends/undrain?backend=URL` | [`BackendSet::undrain`]: back, through slow start |
/// | `POST /backends/weight?backend=URL&value=N` | [`BackendSet::set_weight`]: 1 to 10,000, runtime state kept |
/// | `POST /backends/eject?backend=URL&for=DUR` | [`BackendSet::eject`] for `DUR` (`30s`, `5m`, `1h30m`; at most `24h`) |
/// | `POST /backends/readmit?backend=URL` | [`BackendSet::readmit`]: ends an ejection now |
///
/// Each answers `200` with `{"schema", "action", "changed", "by",
/// "backend": {..}}` (`backend` as in `/status`, after the change;
/// `changed` is `false` when there was nothing to do), `404` for a backend
/// not in the set, `400` with the reason for a bad or missing parameter,
/// all as `{"error": ".."}`. Each change is a [`HealthEvent`] whose
/// [`actor`](crate::backend::HealthEvent::actor) is the token's name.
/// A change belongs to the member: when discovery or a reload removes
/// the backend, it ends with it, and a reload that lists the backend with
/// another weight sets that weight.
///
/// # `/status`, schema 1
///
/// `schema` is 1 as long as fields are only added; a field removed or
/// given another meaning raises it.
///
/// | field | meaning |
/// |---|---|
/// | `schema` | 1 |
/// | `version` | the set's snapshot version: moves on every membership or weight change |
/// | `generated_at_ms` | wall clock, ms since the Unix epoch |
/// | `slot_ms` | width of a history slot (2000) |
/// | `write_routes` | whether the write routes are on |
/// | `total` | `requests_per_s`, `error_rate`, `p50_ms`, `p99_ms` over all backends |
/// | `queue` | with [`with_queue`](Self::with_queue): `pending`, `max_pending` (now, at most), `waited_total`, `rejected_total` (queue full), `timeouts_total`, `wait_ms_total`, `longest_wait_ms`; else `null` |
/// | `backends[]` | each member, then each removed backend still finishing requests |
/// | `backends[].url`, `.weight`, `.share`, `.effective_weight` | address; weight; share of it given now (slow start, ramp-down); their product |
/// | `backends[].tls`, `.sources` | spoken to over TLS; the discovery sources listing it (`static`, `dns:..`, `etcd:..`), empty when written to the set directly |
/// | `backends[].priority` | its priority tier: 0 primary (the default), 1 and up backups |
/// | `backends[].state` | `healthy`, `ramping`, `unhealthy`, `ejected`, `draining` (drained by an operator) or `removed` |
/// | `backends[].healthy`, `.verdict` | eligible for new requests; the active checks' `healthy` / `unhealthy` / `unknown` |
/// | `backends[].ejected`, `.ejection_remaining_ms`, `.ejections`, `.consecutive_failures` | passive health |
/// | `backends[].overload_remaining_ms` | while the ejection is an overload pause (a 429, or a 503 with `Retry-After`), the time left; else `null` |
/// | `backends[].sticky_kept`, `.sticky_issued`, `.sticky_reissued` | counted by [`StickyCookieLayer`](crate::balance::StickyCookieLayer): responses to clients whose cookie named it; cookies naming it set on a first visit; set for clients that moved to it; 0 without sticky sessions |
/// | `backends[].draining`, `.removed` | drained or removed; removed |
/// | `backends[].in_flight`, `.requests`, `.failures` | now; since it joined |
/// | `backends[].requests_per_s` | over the last 10 s |
/// | `backends[].error_rate` | failed share of the last minute's responses (5xx when [`with_metrics`](Self::with_metrics), else passive health's failures), `null` without any |
/// | `backends[].p50_ms`, `.p99_ms` | latency of the newest 2 s slot with responses in the last minute (needs `with_metrics`), else `null` |
/// | `backends[].recent_traffic` | its part of the last minute's requests, `0.0..=1.0` |
/// | `backends[].latency_ms`, `.last_probe_error` | the peak-EWMA estimate; why the last probe failed |
/// | `events[]` | newest first, up to 100: `at_ms`, `backend`, `event` (`joined`, `left`, `verdict`, `ejected`, `returned`, `drained`, `undrained`, `reweighted`, `share`, `missed`), `text`, `by`, `tone` (`good`, `bad`, `warn`, `info`) |
///
/// # History
///
/// Created inside a tokio runtime, the service starts a task there that
/// reads the counters every 2 s into fixed rings (150 slots, five minutes,
/// 2.4 KB per backend) and keeps the newest 100 events; the task ends
/// when the last clone of the service is dropped. Outside a runtime, the
/// service samples when it is asked instead. The request path is not
/// touched: the history reads the counters and histograms that the
/// balancer and [`MetricsLayer`] keep anyway.
///
/// Mount it with axum's `nest_service("/admin", admin)` or serve it with
/// hyper on its own (loopback) port. It never fails.
///
/// ```
/// use axum::Router;
/// use prometheus_client::registry::Registry;
/// use tower_lb::BackendSet;
/// use tower_lb::metrics::{AdminService, AdminTokens, MetricsLayer};
///
/// let set = BackendSet::new(["http://127.0.0.1:9001".parse()?]);
/// let mut registry = Registry::default();
/// let metrics = MetricsLayer::new(&set, &mut registry);
/// let admin = AdminService::new(set, registry)
///     .with_metrics(&metrics)
///     .with_tokens(AdminTokens::parse("ops:0f1e2d3c4b5a69788796a5b4")?);
/// let app: Router = Router::new().nest_service("/admin", admin);
/// # Ok::<(), tower_lb::ConfigError>(())
/// ```
///
/// [`HealthEvent`]: crate::backend::HealthEvent
#[derive(Clone)]
pub struct AdminService {
    shared: Arc<Shared>,
    tokens: Option<AdminTokens>,
}

struct Shared {
    set: BackendSet,
    registry: Registry,
    monitor: Arc<Monitor>,
    /// The queue's counters, read per view (never on the request path).
    queue: Mutex<Option<QueueReader>>,
}

type QueueReader = Box<dyn Fn() -> QueueStats + Send + Sync>;

impl AdminService {
    /// Serves `set`'s status and `registry`'s metrics; the write routes
    /// are off until [`with_tokens`](Self::with_tokens).
    pub fn new(set: BackendSet, registry: Registry) -> Self {
        let monitor = Monitor::start(set.clone());
        Self {
            shared: Arc::new(Shared {
                set,
                registry,
                monitor,
                queue: Mutex::new(None),
            }),
            tokens: None,
        }
    }

    /// Reads the 5xx counts and latency histograms of `metrics` (a layer
    /// on the same set) for the history's error rates and p50 / p99.
    /// Without it, error rates come from passive health's failures and
    /// there is no latency history.
    #[must_use]
    pub fn with_metrics(self, metrics: &MetricsLayer) -> Self {
        self.shared.monitor.attach(metrics.recorder());
        self
    }

    /// Shows `queue`'s length, limit, waits and timeouts in `/status`
    /// (`queue`) and on the page.
    #[must_use]
    pub fn with_queue<St: Strategy>(self, queue: &QueueLayer<St>) -> Self {
        let queue = queue.clone();
        let reader: QueueReader = Box::new(move || queue.stats());
        *self
            .shared
            .queue
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(reader);
        self
    }

    /// Turns the write routes on, for requests bearing one of `tokens`.
    #[must_use]
    pub fn with_tokens(mut self, tokens: AdminTokens) -> Self {
        self.tokens = Some(tokens);
        self
    }

    fn answer<B>(&self, request: &Request<B>) -> Response<Full<Bytes>> {
        let path = request.uri().path().trim_end_matches('/');
        if let Some(action) = Action::at(path) {
            return self.write(action, request);
        }
        if !matches!(path, "" | "/metrics" | "/status") {
            return text(StatusCode::NOT_FOUND, "not found\n");
        }
        if request.method() != Method::GET && request.method() != Method::HEAD {
            return not_allowed("GET, HEAD");
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
            "/status" => self.view(|status, _| json(StatusCode::OK, status)),
            _ => {
                let part = request.uri().query() == Some("part=main");
                self.view(|status, history| {
                    let html = if part {
                        page::render_main(status, history)
                    } else {
                        page::render(status, history)
                    };
                    with_type(html, "text/html; charset=utf-8")
                })
            }
        }
    }

    /// Runs `f` on the status, with the history it was made from.
    fn view<R>(&self, f: impl FnOnce(&Status<'_>, &super::history::History) -> R) -> R {
        let shared = &self.shared;
        let backends = shared.monitor.backends();
        let inner = shared.monitor.read();
        let queue = (shared.queue.lock().unwrap_or_else(PoisonError::into_inner))
            .as_ref()
            .map(|read| read());
        let status = Status::of(
            &shared.set,
            &backends,
            &inner.history,
            &inner.timeline,
            self.tokens.is_some(),
            queue,
        );
        f(&status, &inner.history)
    }

    fn write<B>(&self, action: Action, request: &Request<B>) -> Response<Full<Bytes>> {
        let Some(tokens) = &self.tokens else {
            return text(StatusCode::NOT_FOUND, "not found\n");
        };
        if request.method() != Method::POST {
            return not_allowed("POST");
        }
        let client = request
            .extensions()
            .get::<ClientAddr>()
            .map(|c| c.addr().to_string());
        let client = client.as_deref().unwrap_or("unknown");
        let route = action.name();
        let name = match bearer(request.headers()) {
            None => {
                tracing::warn!(
                    client,
                    route,
                    "admin: refused a write without a bearer token"
                );
                return unauthorized("this route needs Authorization: Bearer TOKEN");
            }
            Some(presented) => match tokens.check(presented) {
                Some(name) => name,
                None => {
                    tracing::warn!(
                        client,
                        route,
                        "admin: refused a write with an unknown token"
                    );
                    return unauthorized("the token is not valid");
                }
            },
        };
        let actor = tokens.actor(name).unwrap_or_else(|| Arc::from(name));
        match control::apply(&self.shared.set, action, request.uri().query(), &actor) {
            Ok(done) => {
                let backend = done.address.to_string();
                tracing::info!(
                    by = name,
                    client,
                    route,
                    backend,
                    changed = done.changed,
                    "admin: change"
                );
                self.view(|status, _| {
                    let Some(after) = status.backends.iter().find(|b| b.url == backend) else {
                        return error(
                            StatusCode::NOT_FOUND,
                            &format!("no backend {backend} in the set"),
                        );
                    };
                    let change = Change {
                        schema: SCHEMA,
                        action: route,
                        changed: done.changed,
                        by: name,
                        backend: after,
                    };
                    json(StatusCode::OK, &change)
                })
            }
            Err(refusal) => {
                tracing::info!(by = name, client, route, reason = %refusal.reason, "admin: change refused");
                error(refusal.status, &refusal.reason)
            }
        }
    }
}

/// A write route's answer.
#[derive(Serialize)]
struct Change<'a> {
    schema: u32,
    action: &'static str,
    changed: bool,
    by: &'a str,
    backend: &'a BackendStatus,
}

/// The token of an `Authorization: Bearer TOKEN` header (the scheme in
/// any case, as RFC 9110 has it).
fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.trim().split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

fn with_type(body: String, content_type: &'static str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    // Live figures: a cached copy is a wrong one.
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

fn text(status: StatusCode, body: &'static str) -> Response<Full<Bytes>> {
    let mut response = with_type(body.to_owned(), "text/plain; charset=utf-8");
    *response.status_mut() = status;
    response
}

fn json(status: StatusCode, value: &impl Serialize) -> Response<Full<Bytes>> {
    match serde_json::to_string(value) {
        Ok(body) => {
            let mut response = with_type(body, "application/json");
            *response.status_mut() = status;
            response
        }
        Err(_) => text(
            StatusCode::INTERNAL_SERVER_ERROR,
            "status encoding failed\n",
        ),
    }
}

fn error(status: StatusCode, reason: &str) -> Response<Full<Bytes>> {
    json(status, &serde_json::json!({ "error": reason }))
}

fn unauthorized(reason: &str) -> Response<Full<Bytes>> {
    let mut response = error(StatusCode::UNAUTHORIZED, reason);
    response.headers_mut().insert(
        WWW_AUTHENTICATE,
        HeaderValue::from_static("Bearer realm=\"tower-lb admin\""),
    );
    response
}

fn not_allowed(allow: &'static str) -> Response<Full<Bytes>> {
    let mut response = text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n");
    response
        .headers_mut()
        .insert(ALLOW, HeaderValue::from_static(allow));
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
        ready(Ok(self.answer(&request)))
    }
}

impl fmt::Debug for AdminService {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AdminService")
            .field("set", &self.shared.set)
            .field("tokens", &self.tokens)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_tokens_are_read_in_any_case_of_the_scheme() {
        let mut headers = HeaderMap::new();
        assert_eq!(bearer(&headers), None);
        for (value, token) in [
            ("Bearer abc", Some("abc")),
            ("bearer   abc ", Some("abc")),
            ("Basic abc", None),
            ("Bearer", None),
            ("Bearer ", None),
        ] {
            headers.insert(AUTHORIZATION, HeaderValue::from_static(value));
            assert_eq!(bearer(&headers), token, "{value}");
        }
    }
}
