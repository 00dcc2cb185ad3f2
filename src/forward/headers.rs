//! Header rules of a proxy: hop-by-hop stripping and `X-Forwarded-*`.

use http::header::{
    CONNECTION, HOST, PROXY_AUTHENTICATE, PROXY_AUTHORIZATION, TE, TRAILER, TRANSFER_ENCODING,
    UPGRADE,
};
use http::{HeaderMap, HeaderName, HeaderValue};

use crate::ClientAddr;

/// `X-Forwarded-For`.
pub(crate) static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
/// `X-Forwarded-Proto`.
pub(crate) static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
/// `X-Forwarded-Host`.
pub(crate) static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");

/// The protocol an HTTP/1.1 `Upgrade` may never switch to: h2c clients are
/// served with prior knowledge, and an h2c tunnel would let a client speak
/// raw HTTP/2 to a backend past every rule of the proxy.
pub(crate) const H2C: &str = "h2c";

/// Whether `name` is a hop-by-hop header (RFC 9110 §7.6.1, plus the
/// non-standard `Keep-Alive` and `Proxy-Connection`, and `HTTP2-Settings`,
/// which only means something to an h2c upgrade): it describes one
/// connection and must not be forwarded over another.
#[inline]
pub(crate) fn is_hop_by_hop(name: &HeaderName) -> bool {
    name == CONNECTION
        || name == TE
        || name == TRAILER
        || name == TRANSFER_ENCODING
        || name == UPGRADE
        || name == PROXY_AUTHORIZATION
        || name == PROXY_AUTHENTICATE
        || name.as_str() == "keep-alive"
        || name.as_str() == "proxy-connection"
        || name.as_str() == "http2-settings"
}

/// Whether `name` is one the proxy keeps or sets itself, so that naming it
/// in `Connection` cannot remove it: `Connection: Host` must not make the
/// backend see the backend's address as `Host`, nor drop the client's
/// `X-Forwarded-*` chain. `Host` is never hop-by-hop.
#[inline]
fn is_protected(name: &HeaderName) -> bool {
    name == HOST || name == X_FORWARDED_FOR || name == X_FORWARDED_PROTO || name == X_FORWARDED_HOST
}

/// Removes hop-by-hop headers and every header that `Connection` names,
/// except the ones the proxy keeps or sets itself ([`is_protected`]). Runs
/// on the client's headers before the proxy adds its own.
///
/// The common case (none present) costs one pass over the header names and
/// no allocation.
pub(crate) fn strip_hop_by_hop(headers: &mut HeaderMap) {
    if !headers.keys().any(is_hop_by_hop) {
        return;
    }
    let listed: Vec<HeaderName> = headers
        .get_all(CONNECTION)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .filter(|name| !is_protected(name))
        .collect();
    for name in listed {
        headers.remove(name);
    }
    let present: Vec<HeaderName> = headers
        .keys()
        .filter(|n| is_hop_by_hop(n))
        .cloned()
        .collect();
    for name in present {
        headers.remove(name);
    }
}

/// The protocol a request asks to switch to (`Upgrade: <protocol>` with
/// `Connection: upgrade`), if it does and the protocol is one of `allowed`
/// (names compared without case, a `/version` suffix ignored). `h2c` is
/// never allowed, whatever `allowed` says. A request whose upgrade is not
/// allowed is forwarded as an ordinary request, its `Upgrade` dropped.
///
/// Only a single protocol is taken: a list (`Upgrade: h2c, websocket`)
/// leaves the choice to the backend, which could pick one the proxy did
/// not allow.
pub(crate) fn requested_upgrade(headers: &HeaderMap, allowed: &[Box<str>]) -> Option<HeaderValue> {
    let asks = headers
        .get_all(CONNECTION)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .any(|token| token.trim().eq_ignore_ascii_case("upgrade"));
    if !asks {
        return None;
    }
    let mut values = headers.get_all(UPGRADE).iter();
    let (value, None) = (values.next()?, values.next()) else {
        return None;
    };
    let name = protocol_name(value)?;
    let permitted =
        !name.eq_ignore_ascii_case(H2C) && allowed.iter().any(|a| a.eq_ignore_ascii_case(name));
    permitted.then(|| value.clone())
}

/// The protocol name of a single-protocol `Upgrade` value
/// (`websocket`, `foo/2` → `foo`); `None` for a list or an empty value.
fn protocol_name(value: &HeaderValue) -> Option<&str> {
    let text = value.to_str().ok()?.trim();
    if text.is_empty() || text.contains(',') {
        return None;
    }
    Some(text.split('/').next().unwrap_or(text).trim())
}

/// Whether a `101 Switching Protocols` whose `Upgrade` is `response`
/// answers the upgrade the client asked for: it names the same protocol. A
/// backend that switches to anything else (or with no upgrade asked) gets
/// no tunnel.
pub(crate) fn switches_to(response: Option<&HeaderValue>, requested: &HeaderValue) -> bool {
    match (response.and_then(protocol_name), protocol_name(requested)) {
        (Some(got), Some(asked)) => got.eq_ignore_ascii_case(asked),
        _ => false,
    }
}

/// Puts back the two headers an upgrade travels on, after hop-by-hop
/// stripping removed them.
pub(crate) fn keep_upgrade(headers: &mut HeaderMap, protocol: HeaderValue) {
    headers.insert(UPGRADE, protocol);
    headers.insert(CONNECTION, HeaderValue::from_static("upgrade"));
}

/// Sets `X-Forwarded-For` (appending the client's IP), `X-Forwarded-Proto`
/// and `X-Forwarded-Host` (the client's `Host`).
pub(crate) fn add_forwarded(
    headers: &mut HeaderMap,
    client: Option<&ClientAddr>,
    proto: &HeaderValue,
) {
    if let Some(client) = client {
        append_forwarded_for(headers, client.header_value());
    }
    headers.insert(X_FORWARDED_PROTO.clone(), proto.clone());
    if let Some(host) = headers.get(HOST).cloned() {
        headers.insert(X_FORWARDED_HOST.clone(), host);
    }
}

/// Appends `ip` to the (possibly multi-line) `X-Forwarded-For` list as one
/// comma-separated value.
fn append_forwarded_for(headers: &mut HeaderMap, ip: &HeaderValue) {
    let mut values = headers.get_all(&X_FORWARDED_FOR).iter().peekable();
    if values.peek().is_none() {
        headers.insert(X_FORWARDED_FOR.clone(), ip.clone());
        return;
    }
    let mut joined = Vec::new();
    for value in values {
        if !joined.is_empty() {
            joined.extend_from_slice(b", ");
        }
        joined.extend_from_slice(value.as_bytes());
    }
    joined.extend_from_slice(b", ");
    joined.extend_from_slice(ip.as_bytes());
    if let Ok(value) = HeaderValue::from_bytes(&joined) {
        headers.insert(X_FORWARDED_FOR.clone(), value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strips_the_fixed_list_and_what_connection_names() {
        let mut headers = HeaderMap::new();
        for (name, value) in [
            ("connection", "close, x-secret"),
            ("keep-alive", "timeout=5"),
            ("proxy-connection", "keep-alive"),
            ("te", "trailers"),
            ("trailer", "x-sum"),
            ("transfer-encoding", "chunked"),
            ("upgrade", "h2c"),
            ("proxy-authorization", "Basic x"),
            ("proxy-authenticate", "Basic"),
            ("x-secret", "1"),
            ("x-kept", "1"),
        ] {
            headers.append(
                HeaderName::from_static(name),
                HeaderValue::from_static(value),
            );
        }
        strip_hop_by_hop(&mut headers);
        let left: Vec<&str> = headers.keys().map(|n| n.as_str()).collect();
        assert_eq!(left, ["x-kept"]);
    }

    fn websocket_only() -> Vec<Box<str>> {
        vec!["websocket".into()]
    }

    #[test]
    fn an_upgrade_needs_both_headers() {
        let allowed = websocket_only();
        let mut headers = HeaderMap::new();
        headers.insert(UPGRADE, HeaderValue::from_static("websocket"));
        assert_eq!(requested_upgrade(&headers, &allowed), None);
        headers.insert(CONNECTION, HeaderValue::from_static("keep-alive, Upgrade"));
        assert_eq!(requested_upgrade(&headers, &allowed).unwrap(), "websocket");
    }

    #[test]
    fn only_allowed_single_protocols_upgrade_and_h2c_never() {
        let upgrade = |value: &'static str, allowed: &[Box<str>]| {
            let mut headers = HeaderMap::new();
            headers.insert(
                CONNECTION,
                HeaderValue::from_static("Upgrade, HTTP2-Settings"),
            );
            headers.insert(UPGRADE, HeaderValue::from_static(value));
            requested_upgrade(&headers, allowed)
        };
        let allowed = websocket_only();
        assert_eq!(upgrade("h2c", &allowed), None);
        assert_eq!(upgrade("H2C", &["h2c".into()]), None);
        assert_eq!(upgrade("h2c, websocket", &allowed), None);
        assert_eq!(upgrade("foo/2", &allowed), None);
        assert_eq!(upgrade("foo/2", &["foo".into()]).unwrap(), "foo/2");
        assert_eq!(upgrade("WebSocket", &allowed).unwrap(), "WebSocket");
        assert_eq!(upgrade("websocket", &[]), None);
    }

    #[test]
    fn a_switch_must_name_the_protocol_asked_for() {
        let asked = HeaderValue::from_static("websocket");
        assert!(!switches_to(None, &asked));
        assert!(!switches_to(Some(&HeaderValue::from_static("h2c")), &asked));
        let list = HeaderValue::from_static("websocket, h2c");
        assert!(!switches_to(Some(&list), &asked));
        assert!(switches_to(
            Some(&HeaderValue::from_static("WebSocket")),
            &asked
        ));
    }

    #[test]
    fn connection_cannot_strip_what_the_proxy_keeps() {
        let mut headers = HeaderMap::new();
        for (name, value) in [
            (
                "connection",
                "Host, X-Forwarded-For, x-forwarded-host, x-forwarded-proto, x-a",
            ),
            ("host", "shop.example"),
            ("x-forwarded-for", "203.0.113.5"),
            ("x-forwarded-host", "edge.example"),
            ("x-forwarded-proto", "https"),
            ("x-a", "1"),
            ("http2-settings", "AAMAAABkAAQAAP__"),
        ] {
            headers.append(
                HeaderName::from_static(name),
                HeaderValue::from_static(value),
            );
        }
        strip_hop_by_hop(&mut headers);
        let mut left: Vec<&str> = headers.keys().map(|n| n.as_str()).collect();
        left.sort_unstable();
        assert_eq!(
            left,
            [
                "host",
                "x-forwarded-for",
                "x-forwarded-host",
                "x-forwarded-proto"
            ]
        );
    }

    #[test]
    fn forwarded_for_appends_the_client() {
        let client = ClientAddr::new("192.0.2.1:5000".parse().unwrap());
        let mut headers = HeaderMap::new();
        headers.insert(HOST, HeaderValue::from_static("shop.example"));
        headers.append(&X_FORWARDED_FOR, HeaderValue::from_static("203.0.113.5"));
        headers.append(&X_FORWARDED_FOR, HeaderValue::from_static("198.51.100.2"));
        add_forwarded(
            &mut headers,
            Some(&client),
            &HeaderValue::from_static("http"),
        );
        assert_eq!(
            headers.get_all(&X_FORWARDED_FOR).iter().collect::<Vec<_>>(),
            ["203.0.113.5, 198.51.100.2, 192.0.2.1"]
        );
        assert_eq!(headers[&X_FORWARDED_HOST], "shop.example");
        assert_eq!(headers[&X_FORWARDED_PROTO], "http");
    }
}
