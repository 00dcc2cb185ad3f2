//! Failed requests, logged: an `error` line for each response with a 5xx
//! status and for each response body that ends in an error.
//!
//! tower-http's `TraceLayer` logs these too (its `on_failure`, at `error`),
//! but it costs every request about 1,200 instructions, 5 % of a proxied
//! GET (six clock readings, a span, a wrapper around the future and the
//! body), for its other events, which are all at `debug` and which the
//! default filter (`info`) drops. So the example puts `TraceLayer` in its
//! stack only when the filter records them ([`request_tracing`]), and logs
//! failures here, where a success costs a status comparison. A failure the
//! stack answered itself (503, 502, 504) carries its [`tower_lb::Error`],
//! which the line names with its cause; a backend's own 5xx is logged by
//! its status alone.

use std::error::Error as _;
use std::fmt::Display;

use http::Response;

/// Whether the log filter records any of `TraceLayer`'s `debug` spans and
/// events (for example `RUST_LOG=info,tower_http=debug`). The filter is set
/// once at start-up, so the answer holds for the process.
pub fn request_tracing() -> bool {
    use tracing::Level;
    tracing::enabled!(target: "tower_http::trace::make_span", Level::DEBUG)
        || tracing::enabled!(target: "tower_http::trace::on_request", Level::DEBUG)
        || tracing::enabled!(target: "tower_http::trace::on_response", Level::DEBUG)
        || tracing::enabled!(target: "tower_http::trace::on_eos", Level::DEBUG)
}

/// Logs `response` when its status is a server error.
pub fn response<B>(response: &Response<B>) {
    let status = response.status();
    if !status.is_server_error() {
        return;
    }
    match response.extensions().get::<tower_lb::Error>() {
        Some(error) => match error.source() {
            Some(cause) => tracing::error!(%status, %error, %cause, "response failed"),
            None => tracing::error!(%status, %error, "response failed"),
        },
        None => tracing::error!(%status, "response failed"),
    }
}

/// Logs a response body's error: the response was cut short.
pub fn body(error: &impl Display) {
    tracing::error!(%error, "response body failed");
}
