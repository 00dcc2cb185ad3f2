//! A response, written as hyper's server writes it: the same framing
//! rules, the same added headers (`date`, `connection`), lower-case names.

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
    out.extend_from_slice(match parts.version {
        Version::HTTP_10 => b"HTTP/1.0 ",
        _ => b"HTTP/1.1 ",
    });
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
    let (mut length, mut has_date, mut has_connection) = (None, false, false);
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
            has_connection = true;
            if has_token(value.as_bytes(), b"close") {
                keep_alive = false;
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
    } else if exchange.version == Version::HTTP_11 {
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
    if !has_connection {
        if !keep_alive && exchange.version == Version::HTTP_11 {
            out.extend_from_slice(b"connection: close\r\n");
        } else if keep_alive && exchange.version == Version::HTTP_10 {
            out.extend_from_slice(b"connection: keep-alive\r\n");
        }
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
