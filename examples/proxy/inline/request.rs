//! A request head, when it is a plain one: read in place, or left alone
//! for hyper.
//!
//! *Plain* is what nearly every request to a load balancer is: HTTP/1.1
//! or 1.0, a path (origin form), no body (no `Transfer-Encoding`, no
//! `Content-Length` other than 0), no `Upgrade`, no `Expect`, valid names.
//! Anything else — a body, a tunnel, HTTP/2's preface, a head httparse
//! refuses, one over the size limit — is not judged here: the connection
//! is handed to hyper with its bytes unread, so hyper answers it exactly
//! as it answered every request before this path existed (its 400s and
//! 431s included).

use std::mem::MaybeUninit;

use bytes::{Bytes, BytesMut};
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Uri, Version};

use crate::client_body::ClientBody;

/// At most this many header fields (hyper's default); more is hyper's
/// to refuse.
const MAX_HEADERS: usize = 100;

/// What the read buffer holds.
pub enum Read {
    /// Not a whole head yet.
    Partial,
    /// A plain request, split off the buffer.
    Plain(Request<ClientBody>, Exchange),
    /// Not plain: hyper's to read, from the buffer's bytes on.
    Other,
}

/// What the response to a request depends on.
#[derive(Clone, Copy, Debug)]
pub struct Exchange {
    /// The request was a HEAD: the response has no body.
    pub head: bool,
    /// The request's version: an HTTP/1.0 client gets no chunked body.
    pub version: Version,
    /// The client allows another request on the connection after this.
    pub keep_alive: bool,
}

/// Reads a plain request head at the start of `buf` into a request whose
/// header map is `spare`'s (cleared). `Other` leaves `buf` as it was.
/// `fields` is the connection's room for the fields' places, reused from
/// request to request.
pub fn read(
    buf: &mut BytesMut,
    spare: &mut HeaderMap,
    fields: &mut Vec<Field>,
    max_head: usize,
) -> Read {
    fields.clear();
    let scanned = match scan(buf, max_head, fields) {
        Some(Scan::Complete(scanned)) => scanned,
        Some(Scan::Partial) => return Read::Partial,
        None => return Read::Other,
    };
    let head = buf.split_to(scanned.len).freeze();
    let Some(headers) = fill(std::mem::take(spare), &head, fields) else {
        // A name `http` refuses, rare after httparse's checks: put the
        // head back for hyper to read and answer.
        let mut whole = BytesMut::with_capacity(head.len() + buf.len());
        whole.extend_from_slice(&head);
        whole.extend_from_slice(buf);
        *buf = whole;
        return Read::Other;
    };
    let Ok(uri) = Uri::from_maybe_shared(head.slice(scanned.path.0..scanned.path.1)) else {
        let mut whole = BytesMut::with_capacity(head.len() + buf.len());
        whole.extend_from_slice(&head);
        whole.extend_from_slice(buf);
        *buf = whole;
        *spare = headers;
        return Read::Other;
    };
    let mut request = Request::new(ClientBody::Empty);
    *request.method_mut() = scanned.method;
    *request.uri_mut() = uri;
    *request.version_mut() = scanned.version;
    *request.headers_mut() = headers;
    let exchange = Exchange {
        head: request.method() == Method::HEAD,
        version: scanned.version,
        keep_alive: scanned.keep_alive,
    };
    Read::Plain(request, exchange)
}

/// The header map of a head: `map`, cleared, holding every field, each
/// value a slice of `head`. `None` for a name `http` does not take.
fn fill(mut map: HeaderMap, head: &Bytes, fields: &[Field]) -> Option<HeaderMap> {
    map.clear();
    map.reserve(fields.len());
    for field in fields {
        let name = HeaderName::from_bytes(&head[field.name.0..field.name.1]).ok()?;
        // httparse takes exactly the value bytes `HeaderValue` does (the
        // forward codec's test `httparse_and_header_value_agree_on_every_byte`
        // holds both to it), so this does not fail.
        let value =
            HeaderValue::from_maybe_shared(head.slice(field.value.0..field.value.1)).ok()?;
        map.append(name, value);
    }
    Some(map)
}

/// A field, as offsets of its name and value in the buffer.
pub struct Field {
    name: (usize, usize),
    value: (usize, usize),
}

/// A whole plain head, as offsets into the buffer.
struct Scanned {
    len: usize,
    method: Method,
    path: (usize, usize),
    version: Version,
    keep_alive: bool,
}

enum Scan {
    Partial,
    Complete(Scanned),
}

/// One httparse pass: `None` when the head is not plain (or not valid,
/// or too large, which hyper is to say).
fn scan(buf: &[u8], max_head: usize, kept: &mut Vec<Field>) -> Option<Scan> {
    let mut fields = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
    let mut request = httparse::Request::new(&mut []);
    let len = match httparse::ParserConfig::default().parse_request_with_uninit_headers(
        &mut request,
        buf,
        &mut fields,
    ) {
        Ok(httparse::Status::Complete(len)) if len <= max_head => len,
        Ok(httparse::Status::Partial) if buf.len() < max_head => return Some(Scan::Partial),
        _ => return None,
    };
    let offset = |slice: &[u8]| {
        let start = slice.as_ptr() as usize - buf.as_ptr() as usize;
        (start, start + slice.len())
    };
    let path = request.path?;
    if !path.starts_with('/') {
        return None;
    }
    let version = match request.version? {
        1 => Version::HTTP_11,
        0 => Version::HTTP_10,
        _ => return None,
    };
    let method = Method::from_bytes(request.method?.as_bytes()).ok()?;
    let (mut close, mut keep_alive) = (false, false);
    for field in request.headers.iter() {
        let name = field.name.as_bytes();
        let is = |known: &[u8]| name.eq_ignore_ascii_case(known);
        match name.len() {
            14 if is(b"content-length") => {
                if field.value != b"0" {
                    return None;
                }
            }
            17 if is(b"transfer-encoding") => return None,
            7 if is(b"upgrade") => return None,
            6 if is(b"expect") => return None,
            14 if is(b"http2-settings") => return None,
            10 if is(b"connection") => {
                for token in field.value.split(|&b| b == b',') {
                    let token = token.trim_ascii();
                    if token.eq_ignore_ascii_case(b"close") {
                        close = true;
                    } else if token.eq_ignore_ascii_case(b"keep-alive") {
                        keep_alive = true;
                    } else if token.eq_ignore_ascii_case(b"upgrade") {
                        return None;
                    }
                }
            }
            _ => {}
        }
        kept.push(Field {
            name: offset(name),
            value: offset(field.value),
        });
    }
    Some(Scan::Complete(Scanned {
        len,
        method,
        path: offset(path.as_bytes()),
        version,
        keep_alive: !close && (version == Version::HTTP_11 || keep_alive),
    }))
}
