//! A response, written as hyper's server writes it: the same framing
//! rules, the same added headers (`date`, `connection`), lower-case names.
//!
//! `response_agrees.rs` holds this against hyper itself on random
//! responses. Where the stack's response is unusual (a wrong or repeated
//! length, its own `transfer-encoding`, HTTP/1.0 from a backend) the two
//! differ in thirteen shapes it lists; this writer keeps its own answer in
//! each, the one that cannot be read two ways or the RFC's (no byte past
//! the length it wrote, then a close; no length on a 204; a `keep-alive`
//! an HTTP/1.0 client asked for kept and said once).

use std::cell::RefCell;
use std::io::Write;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Buf;
use http::header::{CONNECTION, CONTENT_LENGTH, DATE, TRANSFER_ENCODING};
use http::response::Parts;
use http::{StatusCode, Version};
use hyper::body::SizeHint;

use super::request::Exchange;

/// How the body goes on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Framing {
    /// No body bytes at all (HEAD, 1xx, 204, 304).
    None,
    /// At most this many more bytes (`Content-Length`).
    Length(u64),
    /// Chunked, for a body of unknown length to an HTTP/1.1 client.
    Chunked,
    /// Until the connection closes: unknown length, HTTP/1.0 client.
    Close,
}

/// Writes the head of a response to the request `exchange` describes into
/// `out`; returns the body's framing and whether the connection may carry
/// another request after it (`keep_alive` is the server's wish: false once
/// it is stopping).
pub fn write_head(
    out: &mut Vec<u8>,
    parts: &Parts,
    hint: &SizeHint,
    exchange: &Exchange,
    keep_alive: bool,
) -> (Framing, bool) {
    let status = parts.status;
    // An HTTP/1.0 client is answered in HTTP/1.0 (hyper's
    // `enforce_version`), whatever the response says.
    let old = exchange.version == Version::HTTP_10 || parts.version == Version::HTTP_10;
    out.extend_from_slice(if old { b"HTTP/1.0 " } else { b"HTTP/1.1 " });
    if status == StatusCode::OK {
        out.extend_from_slice(b"200 OK\r\n");
    } else {
        out.extend_from_slice(status.as_str().as_bytes());
        out.push(b' ');
        out.extend_from_slice(status.canonical_reason().unwrap_or("").as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    // hyper's rules (its `role::Server::encode`): no length on a 1xx or a
    // 204; no body on those, a 304, or an answer to HEAD.
    let may_have_length = !(status.is_informational() || status == StatusCode::NO_CONTENT);
    let has_body = may_have_length && status != StatusCode::NOT_MODIFIED && !exchange.head;
    let mut keep_alive = keep_alive && exchange.keep_alive;
    let (mut length, mut has_date, mut says_close) = (None, false, false);
    for (name, value) in &parts.headers {
        if name == CONTENT_LENGTH {
            if !may_have_length || length.is_some() {
                continue;
            }
            length = Some(parse_length(value.as_bytes()));
        } else if name == TRANSFER_ENCODING {
            // The framing is this server's to choose, as below.
            continue;
        } else if name == CONNECTION {
            if has_token(value.as_bytes(), b"close") {
                keep_alive = false;
                says_close = true;
            }
        } else if name == DATE {
            has_date = true;
        }
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    let framing = if !has_body {
        Framing::None
    } else if let Some(length) = length {
        // A length that does not parse is sent as it came, and the body
        // is cut at the connection's close: nothing read two ways.
        length.map_or_else(
            || {
                keep_alive = false;
                Framing::Close
            },
            Framing::Length,
        )
    } else if let Some(exact) = hint.exact() {
        if may_have_length {
            let _ = write!(out, "content-length: {exact}\r\n");
        }
        Framing::Length(exact)
    } else if !old {
        // Chunked only under an HTTP/1.1 status line: in an HTTP/1.0
        // message a recipient must read `Transfer-Encoding` as faulty
        // framing (RFC 9112 §6.1), so a 1.0 answer is delimited by the close.
        out.extend_from_slice(b"transfer-encoding: chunked\r\n");
        Framing::Chunked
    } else {
        keep_alive = false;
        Framing::Close
    };
    if !has_date {
        out.extend_from_slice(b"date: ");
        DATE_NOW.with_borrow_mut(|date| out.extend_from_slice(date.now()));
        out.extend_from_slice(b"\r\n");
    }
    // As hyper: a connection that ends says so (unless the stack's own
    // header already does), and an HTTP/1.0 one that stays says that.
    if !keep_alive && !says_close && !old {
        out.extend_from_slice(b"connection: close\r\n");
    } else if keep_alive && old && !has_token_in(&parts.headers, b"keep-alive") {
        out.extend_from_slice(b"connection: keep-alive\r\n");
    }
    out.extend_from_slice(b"\r\n");
    (framing, keep_alive)
}

/// Appends a data frame as `framing` carries it, and what is left of a
/// length. Bytes past a declared length are not sent (and the connection
/// is not reused: `false`).
pub fn write_data(out: &mut Vec<u8>, mut data: impl Buf, framing: &mut Framing) -> bool {
    let len = data.remaining();
    match framing {
        Framing::None => return true,
        Framing::Length(left) => {
            let take = len.min(usize::try_from(*left).unwrap_or(usize::MAX));
            copy(out, &mut data, take);
            *left -= take as u64;
            return take == len;
        }
        Framing::Chunked if len == 0 => return true,
        Framing::Chunked => {
            let _ = write!(out, "{len:x}\r\n");
            copy(out, &mut data, len);
            out.extend_from_slice(b"\r\n");
        }
        Framing::Close => copy(out, &mut data, len),
    }
    true
}

/// Appends the end of the body (the last chunk), and whether the body
/// was as long as it said.
pub fn write_end(out: &mut Vec<u8>, framing: Framing) -> bool {
    match framing {
        Framing::Chunked => {
            out.extend_from_slice(b"0\r\n\r\n");
            true
        }
        Framing::Length(left) => left == 0,
        Framing::None | Framing::Close => true,
    }
}

fn copy(out: &mut Vec<u8>, data: &mut impl Buf, mut len: usize) {
    while len > 0 {
        let chunk = data.chunk();
        let n = chunk.len().min(len);
        out.extend_from_slice(&chunk[..n]);
        data.advance(n);
        len -= n;
    }
}

/// A `Content-Length` value: digits only.
fn parse_length(value: &[u8]) -> Option<u64> {
    if value.is_empty() {
        return None;
    }
    value.iter().try_fold(0u64, |n, &b| {
        b.is_ascii_digit()
            .then(|| n.checked_mul(10)?.checked_add(u64::from(b - b'0')))
            .flatten()
    })
}

fn has_token_in(headers: &http::HeaderMap, token: &[u8]) -> bool {
    headers
        .get_all(CONNECTION)
        .iter()
        .any(|value| has_token(value.as_bytes(), token))
}

fn has_token(list: &[u8], token: &[u8]) -> bool {
    list.split(|&b| b == b',')
        .any(|item| item.trim_ascii().eq_ignore_ascii_case(token))
}

thread_local! {
    static DATE_NOW: RefCell<CachedDate> = const { RefCell::new(CachedDate { second: u64::MAX, text: Vec::new() }) };
}

/// The `Date` value, formatted once a second (as hyper caches it).
struct CachedDate {
    second: u64,
    text: Vec<u8>,
}

impl CachedDate {
    fn now(&mut self) -> &[u8] {
        let now = SystemTime::now();
        let second = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        if second != self.second {
            self.second = second;
            self.text.clear();
            self.text
                .extend_from_slice(httpdate::fmt_http_date(now).as_bytes());
        }
        &self.text
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use http::Response;

    const GET: Exchange = Exchange {
        head: false,
        version: Version::HTTP_11,
        keep_alive: true,
    };

    fn head_of(
        response: Response<()>,
        hint: SizeHint,
        exchange: Exchange,
        keep_alive: bool,
    ) -> (String, Framing, bool) {
        let (parts, ()) = response.into_parts();
        let mut out = Vec::new();
        let (framing, keep) = write_head(&mut out, &parts, &hint, &exchange, keep_alive);
        (String::from_utf8(out).unwrap(), framing, keep)
    }

    fn with(status: u16, headers: &[(&str, &str)]) -> Response<()> {
        let mut response = Response::builder().status(status);
        for (name, value) in headers {
            response = response.header(*name, *value);
        }
        response.body(()).unwrap()
    }

    #[test]
    fn a_length_given_is_kept_and_a_date_added_when_missing() {
        let (head, framing, keep) = head_of(
            with(200, &[("content-length", "2"), ("x-a", "b")]),
            SizeHint::with_exact(2),
            GET,
            true,
        );
        assert!(head.starts_with("HTTP/1.1 200 OK\r\ncontent-length: 2\r\nx-a: b\r\ndate: "));
        assert!(head.ends_with(" GMT\r\n\r\n"), "{head}");
        assert_eq!(framing, Framing::Length(2));
        assert!(keep);
        let (head, _, _) = head_of(
            with(502, &[("date", "Tue, 01 Dec 2026 00:00:00 GMT")]),
            SizeHint::with_exact(0),
            GET,
            true,
        );
        assert_eq!(
            head,
            "HTTP/1.1 502 Bad Gateway\r\ndate: Tue, 01 Dec 2026 00:00:00 GMT\r\ncontent-length: 0\r\n\r\n"
        );
    }

    #[test]
    fn an_unknown_length_is_chunked_for_http11_and_closed_for_http10() {
        let (head, framing, keep) =
            head_of(with(200, &[("date", "d")]), SizeHint::new(), GET, true);
        assert!(head.contains("transfer-encoding: chunked\r\n"));
        assert_eq!(framing, Framing::Chunked);
        assert!(keep);
        let old = Exchange {
            version: Version::HTTP_10,
            ..GET
        };
        let (head, framing, keep) =
            head_of(with(200, &[("date", "d")]), SizeHint::new(), old, true);
        assert!(!head.contains("transfer-encoding"), "{head}");
        assert_eq!(framing, Framing::Close);
        assert!(!keep);
    }

    #[test]
    fn an_http10_response_is_never_chunked() {
        // A backend's HTTP/1.0 answer of unknown length, to an HTTP/1.1
        // client: an HTTP/1.0 status line, so the close delimits the body.
        let mut response = with(200, &[("date", "d")]);
        *response.version_mut() = Version::HTTP_10;
        let (head, framing, keep) = head_of(response, SizeHint::new(), GET, true);
        assert!(head.starts_with("HTTP/1.0 200 OK\r\n"), "{head}");
        assert!(!head.contains("transfer-encoding"), "{head}");
        assert_eq!(framing, Framing::Close);
        assert!(!keep);
    }

    #[test]
    fn a_closing_connection_says_close_beside_the_stacks_connection_header() {
        let (head, _, keep) = head_of(
            with(200, &[("connection", "keep-alive"), ("date", "d")]),
            SizeHint::with_exact(0),
            GET,
            false,
        );
        assert!(head.contains("connection: keep-alive\r\n"), "{head}");
        assert!(head.contains("connection: close\r\n"), "{head}");
        assert!(!keep);
    }

    #[test]
    fn head_204_and_304_have_no_body() {
        let head_request = Exchange { head: true, ..GET };
        let (head, framing, _) = head_of(
            with(200, &[("content-length", "10"), ("date", "d")]),
            SizeHint::with_exact(0),
            head_request,
            true,
        );
        assert!(
            head.contains("content-length: 10\r\n"),
            "HEAD keeps the GET's length"
        );
        assert_eq!(framing, Framing::None);
        let (head, framing, _) = head_of(
            with(204, &[("content-length", "0"), ("date", "d")]),
            SizeHint::with_exact(0),
            GET,
            true,
        );
        assert!(
            !head.contains("content-length"),
            "no length on a 204: {head}"
        );
        assert_eq!(framing, Framing::None);
        let (_, framing, _) = head_of(
            with(304, &[("date", "d")]),
            SizeHint::with_exact(0),
            GET,
            true,
        );
        assert_eq!(framing, Framing::None);
    }

    #[test]
    fn connection_close_is_said_when_the_connection_ends() {
        let (head, _, keep) = head_of(
            with(200, &[("date", "d")]),
            SizeHint::with_exact(0),
            GET,
            false,
        );
        assert!(head.contains("connection: close\r\n"));
        assert!(!keep);
        let client_closes = Exchange {
            keep_alive: false,
            ..GET
        };
        let (head, _, keep) = head_of(
            with(200, &[("date", "d")]),
            SizeHint::with_exact(0),
            client_closes,
            true,
        );
        assert!(head.contains("connection: close\r\n") && !keep);
        let old_keep = Exchange {
            version: Version::HTTP_10,
            ..GET
        };
        let (head, _, keep) = head_of(
            with(200, &[("date", "d")]),
            SizeHint::with_exact(0),
            old_keep,
            true,
        );
        assert!(head.contains("connection: keep-alive\r\n") && keep);
        let (_, _, keep) = head_of(
            with(200, &[("connection", "close"), ("date", "d")]),
            SizeHint::with_exact(0),
            GET,
            true,
        );
        assert!(!keep, "the stack's own connection: close is heeded");
    }

    #[test]
    fn a_transfer_encoding_from_the_stack_is_replaced_by_the_framing_chosen() {
        let (head, framing, _) = head_of(
            with(
                200,
                &[("transfer-encoding", "gzip, chunked"), ("date", "d")],
            ),
            SizeHint::with_exact(3),
            GET,
            true,
        );
        assert!(!head.contains("gzip"), "{head}");
        assert!(head.contains("content-length: 3\r\n"));
        assert_eq!(framing, Framing::Length(3));
    }

    #[test]
    fn data_is_framed_and_cut_at_the_length() {
        let mut out = Vec::new();
        let mut framing = Framing::Chunked;
        assert!(write_data(
            &mut out,
            Bytes::from_static(b"hello"),
            &mut framing
        ));
        assert!(
            write_data(&mut out, Bytes::new(), &mut framing),
            "an empty frame is no chunk"
        );
        assert!(write_end(&mut out, framing));
        assert_eq!(out, b"5\r\nhello\r\n0\r\n\r\n");

        let mut out = Vec::new();
        let mut framing = Framing::Length(3);
        assert!(!write_data(
            &mut out,
            Bytes::from_static(b"hello"),
            &mut framing
        ));
        assert_eq!(out, b"hel", "no byte past the length");
        let mut framing = Framing::Length(3);
        assert!(write_data(
            &mut Vec::new(),
            Bytes::from_static(b"he"),
            &mut framing
        ));
        assert!(!write_end(&mut Vec::new(), framing), "short of its length");
    }
}
