//! Writing a request head straight from `http::request::Parts`, with the
//! proxy's header rules applied as it is written.
//!
//! The rules are those of `forward::headers` (which edits a `HeaderMap`),
//! applied here without editing anything: a header that must not be
//! forwarded is simply not written, and the headers the proxy sets are
//! written from what the caller passes. So the client's map is only read,
//! and the head costs no allocation once the write buffer has grown to the
//! size of a typical head.

use http::header::{CONNECTION, CONTENT_LENGTH, HOST};
use http::request::Parts;
use http::uri::Authority;
use http::{HeaderMap, HeaderName, HeaderValue, Method};

use super::super::headers::{X_FORWARDED_FOR, X_FORWARDED_HOST, X_FORWARDED_PROTO, is_hop_by_hop};

/// How the request body goes on the wire, as the caller decides it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum BodyFraming {
    /// No body: the body is not read at all. `content-length: 0` is written
    /// for the methods that usually carry a body (POST, PUT, PATCH) and when
    /// the client sent a `Content-Length`, so a backend that insists on a
    /// length for those gets one.
    Empty,
    /// Exactly this many bytes, as `Content-Length`.
    Length(u64),
    /// `Transfer-Encoding: chunked`: the length is not known up front.
    Chunked,
}

impl BodyFraming {
    /// The framing a body asks for: empty when it has ended already,
    /// `Content-Length` when its size hint is exact, chunked otherwise.
    pub(crate) fn of<B: http_body::Body>(body: &B) -> Self {
        if body.is_end_stream() {
            return Self::Empty;
        }
        match body.size_hint().exact() {
            Some(0) => Self::Empty,
            Some(length) => Self::Length(length),
            None => Self::Chunked,
        }
    }
}

/// What the head of one request to a backend is made of: the client's
/// request and what the proxy adds.
#[derive(Clone, Copy, Debug)]
pub(crate) struct RequestHead<'a> {
    /// The client's request; its URI is absolute (it points at the
    /// backend) and only its path and query are written.
    pub(crate) parts: &'a Parts,
    /// The backend, written as `Host` when the client sent none (the
    /// request's URI names it: `None` only where it does not, and a
    /// request without a `Host` then gets none).
    pub(crate) backend: Option<&'a Authority>,
    /// The client's IP, appended to `X-Forwarded-For`; when unknown the
    /// client's `X-Forwarded-For` is passed on as it is.
    pub(crate) client_ip: Option<&'a HeaderValue>,
    /// `X-Forwarded-Proto`, replacing the client's.
    pub(crate) proto: &'a HeaderValue,
    /// The protocol of an upgrade the caller allowed: written as
    /// `connection: upgrade` and `upgrade: <protocol>`.
    pub(crate) upgrade: Option<&'a HeaderValue>,
    /// How the body is framed.
    pub(crate) framing: BodyFraming,
}

impl RequestHead<'_> {
    /// Appends the head, up to and including its empty line, to `buf`.
    pub(crate) fn write(&self, buf: &mut Vec<u8>) {
        let parts = self.parts;
        let headers = &parts.headers;
        buf.extend_from_slice(parts.method.as_str().as_bytes());
        buf.push(b' ');
        match parts.uri.path_and_query() {
            Some(path) if !path.as_str().is_empty() => {
                buf.extend_from_slice(path.as_str().as_bytes());
            }
            _ => buf.push(b'/'),
        }
        buf.extend_from_slice(b" HTTP/1.1\r\n");

        // Host first (RFC 9112 §3.2: a client sends it first); only the
        // first, should a client have sent several.
        let host = headers.get(HOST);
        match host {
            Some(host) => field(buf, b"host", host.as_bytes()),
            None => {
                if let Some(backend) = self.backend {
                    field(buf, b"host", backend.as_str().as_bytes());
                }
            }
        }

        let listed = headers.contains_key(CONNECTION);
        // Noted on the way past, so that the usual request (with neither)
        // pays for no lookup of them afterwards.
        let (mut forwarded_for, mut content_length) = (false, false);
        for (name, value) in headers {
            if is_set_by_proxy(name) {
                forwarded_for |= name == X_FORWARDED_FOR;
                content_length |= name == CONTENT_LENGTH;
                continue;
            }
            if is_hop_by_hop(name) {
                continue;
            }
            if listed && connection_lists(headers, name) {
                continue;
            }
            field(buf, name.as_str().as_bytes(), value.as_bytes());
        }

        let forwarded_for = forwarded_for.then(|| headers.get_all(&X_FORWARDED_FOR));
        match self.client_ip {
            Some(ip) => {
                buf.extend_from_slice(b"x-forwarded-for: ");
                for value in forwarded_for.iter().flatten() {
                    buf.extend_from_slice(value.as_bytes());
                    buf.extend_from_slice(b", ");
                }
                buf.extend_from_slice(ip.as_bytes());
                buf.extend_from_slice(b"\r\n");
            }
            None => {
                for value in forwarded_for.iter().flatten() {
                    field(buf, b"x-forwarded-for", value.as_bytes());
                }
            }
        }
        field(buf, b"x-forwarded-proto", self.proto.as_bytes());
        match host {
            Some(host) => field(buf, b"x-forwarded-host", host.as_bytes()),
            None => {
                for value in headers.get_all(&X_FORWARDED_HOST) {
                    field(buf, b"x-forwarded-host", value.as_bytes());
                }
            }
        }

        if let Some(protocol) = self.upgrade {
            buf.extend_from_slice(b"connection: upgrade\r\n");
            field(buf, b"upgrade", protocol.as_bytes());
        }

        match self.framing {
            BodyFraming::Length(length) => {
                buf.extend_from_slice(b"content-length: ");
                write_decimal(buf, length);
                buf.extend_from_slice(b"\r\n");
            }
            BodyFraming::Chunked => buf.extend_from_slice(b"transfer-encoding: chunked\r\n"),
            BodyFraming::Empty => {
                if usually_has_body(&parts.method) || content_length {
                    buf.extend_from_slice(b"content-length: 0\r\n");
                }
            }
        }
        buf.extend_from_slice(b"\r\n");
    }
}

fn field(buf: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    buf.extend_from_slice(name);
    buf.extend_from_slice(b": ");
    buf.extend_from_slice(value);
    buf.extend_from_slice(b"\r\n");
}

/// Headers the writer sets itself (from the client's values and the
/// caller's): never copied in the loop over the client's headers, and so
/// never removable by naming them in `Connection` (a client must not be
/// able to strip `Host` or hide `X-Forwarded-For`). `Content-Length` is
/// written from the body's framing, never copied.
fn is_set_by_proxy(name: &HeaderName) -> bool {
    name == HOST
        || name == CONTENT_LENGTH
        || name == X_FORWARDED_FOR
        || name == X_FORWARDED_PROTO
        || name == X_FORWARDED_HOST
}

/// Whether any `Connection` line names `name` (comma lists, any case).
/// Reads the values in place: no allocation.
pub(super) fn connection_lists(headers: &HeaderMap, name: &HeaderName) -> bool {
    headers
        .get_all(CONNECTION)
        .iter()
        .any(|value| list_contains(value.as_bytes(), name.as_str().as_bytes()))
}

/// Whether the comma-separated `list` holds `token`, ignoring case and the
/// optional whitespace around each element.
pub(super) fn list_contains(list: &[u8], token: &[u8]) -> bool {
    list.split(|&b| b == b',')
        .any(|element| trim_ows(element).eq_ignore_ascii_case(token))
}

/// `element` without the spaces and tabs around it.
pub(super) fn trim_ows(element: &[u8]) -> &[u8] {
    let is_ows = |b: &u8| *b == b' ' || *b == b'\t';
    let start = element
        .iter()
        .position(|b| !is_ows(b))
        .unwrap_or(element.len());
    let end = element
        .iter()
        .rposition(|b| !is_ows(b))
        .map_or(start, |i| i + 1);
    &element[start..end]
}

fn usually_has_body(method: &Method) -> bool {
    method == Method::POST || method == Method::PUT || method == Method::PATCH
}

/// `n` in decimal, without the formatting machinery.
pub(super) fn write_decimal(buf: &mut Vec<u8>, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    buf.extend_from_slice(&digits[at..]);
}

/// `n` in lowercase hexadecimal (a chunk size).
pub(super) fn write_hex(buf: &mut Vec<u8>, mut n: u64) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut digits = [0u8; 16];
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = HEX[(n & 0xf) as usize];
        n >>= 4;
        if n == 0 {
            break;
        }
    }
    buf.extend_from_slice(&digits[at..]);
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::Request;

    fn parts(method: &str, uri: &str, headers: &[(&str, &str)]) -> Parts {
        let mut builder = Request::builder().method(method).uri(uri);
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        builder.body(()).unwrap().into_parts().0
    }

    fn write(parts: &Parts, ip: Option<&str>, framing: BodyFraming) -> String {
        let backend = Authority::from_static("10.0.0.1:8080");
        let ip = ip.map(HeaderValue::from_str).transpose().unwrap();
        let proto = HeaderValue::from_static("https");
        let head = RequestHead {
            parts,
            backend: Some(&backend),
            client_ip: ip.as_ref(),
            proto: &proto,
            upgrade: None,
            framing,
        };
        let mut buf = Vec::new();
        head.write(&mut buf);
        String::from_utf8(buf).unwrap()
    }

    #[test]
    fn hop_by_hop_and_what_connection_names_are_dropped_but_not_host_or_forwarded() {
        let parts = parts(
            "POST",
            "http://10.0.0.1:8080/submit?x=1",
            &[
                ("host", "shop.example"),
                ("connection", "keep-alive, Host, X-Forwarded-For"),
                (
                    "connection",
                    "x-secret , x-forwarded-host,x-forwarded-proto",
                ),
                ("keep-alive", "timeout=5"),
                ("proxy-connection", "keep-alive"),
                ("te", "trailers"),
                ("trailer", "x-sum"),
                ("transfer-encoding", "chunked"),
                ("upgrade", "h2c"),
                ("http2-settings", "AAMAAABkAAQAAP__"),
                ("proxy-authorization", "Basic eA=="),
                ("proxy-authenticate", "Basic"),
                ("x-secret", "1"),
                ("content-length", "999"),
                ("x-forwarded-for", "203.0.113.5"),
                ("x-forwarded-for", "198.51.100.2"),
                ("x-forwarded-proto", "ftp"),
                ("x-forwarded-host", "spoofed.example"),
                ("accept", "*/*"),
                ("x-multi", "a"),
                ("x-multi", "b"),
            ],
        );
        let head = write(&parts, Some("192.0.2.1"), BodyFraming::Length(5));
        assert_eq!(
            head,
            "POST /submit?x=1 HTTP/1.1\r\n\
             host: shop.example\r\n\
             accept: */*\r\n\
             x-multi: a\r\n\
             x-multi: b\r\n\
             x-forwarded-for: 203.0.113.5, 198.51.100.2, 192.0.2.1\r\n\
             x-forwarded-proto: https\r\n\
             x-forwarded-host: shop.example\r\n\
             content-length: 5\r\n\
             \r\n"
        );
    }

    #[test]
    fn without_host_the_backend_is_the_host_and_forwarded_headers_pass() {
        let parts = parts(
            "GET",
            "http://10.0.0.1:8080",
            &[
                ("connection", "host, x-forwarded-for, x-secret"),
                ("x-secret", "1"),
                ("x-forwarded-for", "203.0.113.5"),
                ("x-forwarded-for", "198.51.100.2"),
                ("x-forwarded-host", "front.example"),
            ],
        );
        assert_eq!(
            write(&parts, None, BodyFraming::Empty),
            "GET / HTTP/1.1\r\n\
             host: 10.0.0.1:8080\r\n\
             x-forwarded-for: 203.0.113.5\r\n\
             x-forwarded-for: 198.51.100.2\r\n\
             x-forwarded-proto: https\r\n\
             x-forwarded-host: front.example\r\n\
             \r\n"
        );
        assert!(
            write(&parts, Some("192.0.2.1"), BodyFraming::Empty)
                .contains("\r\nx-forwarded-for: 203.0.113.5, 198.51.100.2, 192.0.2.1\r\n")
        );
    }

    #[test]
    fn the_framing_is_the_callers() {
        let get = parts("GET", "http://b/", &[("content-length", "3")]);
        assert!(write(&get, None, BodyFraming::Empty).ends_with("content-length: 0\r\n\r\n"));
        let get = parts("GET", "http://b/", &[]);
        assert!(!write(&get, None, BodyFraming::Empty).contains("content-length"));
        for method in ["POST", "PUT", "PATCH"] {
            let parts = parts(method, "http://b/", &[]);
            assert!(write(&parts, None, BodyFraming::Empty).ends_with("content-length: 0\r\n\r\n"));
        }
        let post = parts("POST", "http://b/", &[("content-length", "3")]);
        let chunked = write(&post, None, BodyFraming::Chunked);
        assert!(chunked.ends_with("transfer-encoding: chunked\r\n\r\n"));
        assert!(!chunked.contains("content-length"));
        assert!(
            write(&post, None, BodyFraming::Length(18_446_744_073_709_551_615))
                .ends_with("content-length: 18446744073709551615\r\n\r\n")
        );
    }

    #[test]
    fn an_allowed_upgrade_is_written_the_clients_is_not() {
        let parts = parts(
            "GET",
            "http://b/chat",
            &[
                ("host", "chat.example"),
                ("connection", "Upgrade"),
                ("upgrade", "websocket"),
                ("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ=="),
            ],
        );
        let backend = Authority::from_static("b");
        let proto = HeaderValue::from_static("http");
        let websocket = HeaderValue::from_static("websocket");
        let mut head = RequestHead {
            parts: &parts,
            backend: Some(&backend),
            client_ip: None,
            proto: &proto,
            upgrade: None,
            framing: BodyFraming::Empty,
        };
        let mut buf = Vec::new();
        head.write(&mut buf);
        let text = String::from_utf8_lossy(&buf).into_owned();
        assert!(!text.contains("upgrade") && !text.contains("connection"));
        head.upgrade = Some(&websocket);
        buf.clear();
        head.write(&mut buf);
        let text = String::from_utf8_lossy(&buf).into_owned();
        assert!(text.ends_with("connection: upgrade\r\nupgrade: websocket\r\n\r\n"));
        assert!(text.contains("sec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\n"));
    }

    #[test]
    fn the_buffer_is_reused_without_growing() {
        let parts = parts("GET", "http://b/a", &[("host", "h"), ("accept", "*/*")]);
        let backend = Authority::from_static("b");
        let proto = HeaderValue::from_static("http");
        let head = RequestHead {
            parts: &parts,
            backend: Some(&backend),
            client_ip: None,
            proto: &proto,
            upgrade: None,
            framing: BodyFraming::Empty,
        };
        let mut buf = Vec::with_capacity(256);
        let start = buf.as_ptr();
        for _ in 0..3 {
            buf.clear();
            head.write(&mut buf);
        }
        assert_eq!(buf.as_ptr(), start);
    }

    #[test]
    fn list_matching_ignores_case_and_whitespace_only() {
        assert!(list_contains(b" a ,\tX-Secret\t, b", b"x-secret"));
        assert!(!list_contains(b"x-secrets, xx-secret", b"x-secret"));
        assert!(!list_contains(b"", b"x"));
        assert_eq!(trim_ows(b" \t "), b"");
        let mut buf = Vec::new();
        write_decimal(&mut buf, 0);
        write_hex(&mut buf, 0x1f0);
        write_hex(&mut buf, 0);
        assert_eq!(buf, b"01f00");
    }

    #[test]
    fn framing_follows_the_body() {
        use http_body_util::{BodyExt, Empty, Full, StreamBody};
        assert_eq!(
            BodyFraming::of(&Empty::<bytes::Bytes>::new()),
            BodyFraming::Empty
        );
        assert_eq!(
            BodyFraming::of(&Full::new(bytes::Bytes::from_static(b"abc"))),
            BodyFraming::Length(3)
        );
        let stream = StreamBody::new(futures_util::stream::empty::<
            Result<http_body::Frame<bytes::Bytes>, std::io::Error>,
        >());
        assert_eq!(BodyFraming::of(&stream.boxed()), BodyFraming::Chunked);
    }
}
