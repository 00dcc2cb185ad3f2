//! A request head, when it is a plain one: read in place, or left alone
//! for hyper.
//!
//! *Plain* is what nearly every request to a load balancer is: HTTP/1.1
//! or 1.0, a path (origin form), no body or one of at most
//! [`MAX_BODY`] bytes declared by one `Content-Length` (no
//! `Transfer-Encoding`), no `Upgrade`, no `Expect`, valid names. A body is
//! waited for whole before the request goes to the stack, as nginx
//! buffers a small request body: the stack gets it as one frame. (Until
//! it is whole the request is not in flight, so the head's deadline,
//! `--header-timeout`, covers its body too: 64 KiB in 10 s by default.)
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

/// The largest request body read here (waited for whole, in the read
/// buffer); a larger one is streamed by hyper.
pub const MAX_BODY: u64 = 64 * 1024;

/// What the read buffer holds.
// Moved once per request, where a box would be an allocation per request.
#[allow(clippy::large_enum_variant)]
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

/// A connection's request reader: its room for the fields' places, reused
/// from request to request, and how far the request coming in has been
/// looked at, so that a head or body arriving in many reads is not parsed
/// again at each one.
#[derive(Default)]
pub struct Reader {
    fields: Vec<Field>,
    /// How much of the buffer is known to hold no end of a head.
    searched: usize,
    /// The bytes a whole head and body need, once the head is known.
    need: usize,
}

impl Reader {
    /// Reads a plain request at the start of `buf` into a request whose
    /// header map is `spare`'s (cleared), and `spare` gets the request's
    /// own empty one. `Other` leaves `buf` as it was.
    pub fn read(&mut self, buf: &mut BytesMut, spare: &mut HeaderMap, max_head: usize) -> Read {
        let read = self.read_from(buf, spare, max_head);
        if !matches!(read, Read::Partial) {
            (self.searched, self.need) = (0, 0);
        }
        read
    }

    fn read_from(&mut self, buf: &mut BytesMut, spare: &mut HeaderMap, max_head: usize) -> Read {
        if buf.len() < self.need {
            return Read::Partial;
        }
        if self.need == 0 && !has_empty_line(buf, &mut self.searched) {
            return if buf.len() < max_head {
                Read::Partial
            } else {
                Read::Other
            };
        }
        let fields = &mut self.fields;
        fields.clear();
        let scanned = match scan(buf, max_head, fields) {
            Some(Scan::Complete(scanned)) => scanned,
            Some(Scan::Partial) => {
                // Not expected after an empty line past the request line's
                // start; should it happen, the whole buffer is searched
                // (and parsed) again at the next read rather than waited on.
                self.searched = 0;
                return Read::Partial;
            }
            None => return Read::Other,
        };
        let body_len = scanned.body as usize;
        if buf.len() < scanned.len + body_len {
            // The body is on its way: nothing is looked at again until it
            // is all here.
            self.need = scanned.len + body_len;
            buf.reserve(self.need - buf.len());
            return Read::Partial;
        }
        read_scanned(buf, spare, fields, scanned)
    }
}

/// Whether `buf` holds an empty line (LF, optional CR, LF) after the
/// request line's start, looked for from `searched` on (which then moves
/// to the end).
///
/// Empty lines before the request line are skipped, as httparse skips
/// them (RFC 9112 §2.2): taken for a head's end, they would send a head
/// to httparse that it calls partial, and mark the bytes after them as
/// searched, so the reader waited where the head's real end, or the
/// error in it, had already arrived.
fn has_empty_line(buf: &[u8], searched: &mut usize) -> bool {
    let from = (*searched)
        .min(buf.len())
        .saturating_sub(2)
        .max(leading_empty_lines(buf));
    *searched = buf.len();
    memchr::memchr_iter(b'\n', &buf[from..]).any(|i| {
        let rest = &buf[from + i + 1..];
        rest.first() == Some(&b'\n') || rest.starts_with(b"\r\n")
    })
}

/// How many bytes of empty lines (CRLF or LF) `buf` starts with.
fn leading_empty_lines(buf: &[u8]) -> usize {
    let mut at = 0;
    loop {
        match &buf[at..] {
            [b'\n', ..] => at += 1,
            [b'\r', b'\n', ..] => at += 2,
            _ => return at,
        }
    }
}

/// The request `scanned` describes, split off `buf` (whole, head and body).
fn read_scanned(
    buf: &mut BytesMut,
    spare: &mut HeaderMap,
    fields: &[Field],
    scanned: Scanned,
) -> Read {
    let body_len = scanned.body as usize;
    let head = buf.split_to(scanned.len).freeze();
    // A name or target `http` refuses, rare after httparse's checks:
    // the head goes back for hyper to read and answer.
    let uri = Uri::from_maybe_shared(head.slice(scanned.path.0..scanned.path.1));
    let (Some(()), Ok(uri)) = (fill(spare, &head, fields), uri) else {
        spare.clear();
        put_back(&head, buf);
        return Read::Other;
    };
    let body = match body_len {
        0 => ClientBody::Empty,
        _ => ClientBody::Full(Some(buf.split_to(body_len).freeze())),
    };
    let mut request = Request::new(body);
    *request.method_mut() = scanned.method;
    *request.uri_mut() = uri;
    *request.version_mut() = scanned.version;
    // Swapped, not assigned: the request's own (empty) map is the spare
    // now, so no map is made or dropped for nothing.
    std::mem::swap(request.headers_mut(), spare);
    let exchange = Exchange {
        head: request.method() == Method::HEAD,
        version: scanned.version,
        keep_alive: scanned.keep_alive,
    };
    Read::Plain(request, exchange)
}

/// Puts `head` back in front of what `buf` holds.
fn put_back(head: &Bytes, buf: &mut BytesMut) {
    let mut whole = BytesMut::with_capacity(head.len() + buf.len());
    whole.extend_from_slice(head);
    whole.extend_from_slice(buf);
    *buf = whole;
}

/// Fills `map`, cleared first, with every field of a head, each value a
/// slice of `head`. `None` for a name `http` does not take.
fn fill(map: &mut HeaderMap, head: &Bytes, fields: &[Field]) -> Option<()> {
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
    Some(())
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
    /// The body's length (at most [`MAX_BODY`]).
    body: u64,
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
    if method == Method::CONNECT {
        // A tunnel, whatever its target: hyper's (its answer to a 2xx has
        // no body and ends HTTP on the connection).
        return None;
    }
    let (mut close, mut keep_alive) = (false, false);
    let mut body = None;
    for field in request.headers.iter() {
        let name = field.name.as_bytes();
        let is = |known: &[u8]| name.eq_ignore_ascii_case(known);
        match name.len() {
            14 if is(b"content-length") => {
                // One length, of digits only and small: anything else
                // (a list, a sign, a second length) is hyper's to judge.
                let length = parse_length(field.value).filter(|&n| n <= MAX_BODY)?;
                if body.replace(length).is_some() {
                    return None;
                }
            }
            17 if is(b"transfer-encoding") => return None,
            7 if is(b"upgrade") => return None,
            6 if is(b"expect") => return None,
            14 if is(b"http2-settings") => return None,
            // A value `HeaderValue::to_str` refuses (obs-text in it) names
            // nothing, as hyper reads it.
            10 if is(b"connection") && is_visible_ascii(field.value) => {
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
        body: body.unwrap_or(0),
    }))
}

/// Whether `value` is what `HeaderValue::to_str` takes: tab and visible
/// ASCII.
fn is_visible_ascii(value: &[u8]) -> bool {
    value
        .iter()
        .all(|&b| b == b'\t' || (b' '..=b'~').contains(&b))
}

/// A `Content-Length` value of digits only (at most 19 of them, so it
/// cannot overflow).
fn parse_length(value: &[u8]) -> Option<u64> {
    if value.is_empty() || value.len() > 19 {
        return None;
    }
    value.iter().try_fold(0u64, |n, &b| {
        b.is_ascii_digit().then(|| n * 10 + u64::from(b - b'0'))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read_all(bytes: &[u8]) -> (Read, BytesMut) {
        let mut buf = BytesMut::from(bytes);
        let read = Reader::default().read(&mut buf, &mut HeaderMap::new(), 16 * 1024);
        (read, buf)
    }

    fn plain(bytes: &[u8]) -> (Request<ClientBody>, Exchange, BytesMut) {
        match read_all(bytes) {
            (Read::Plain(request, exchange), rest) => (request, exchange, rest),
            (Read::Partial, _) => panic!("partial: {:?}", String::from_utf8_lossy(bytes)),
            (Read::Other, _) => panic!("not plain: {:?}", String::from_utf8_lossy(bytes)),
        }
    }

    /// Not plain, and the buffer exactly as it was, for hyper to read.
    fn assert_other(bytes: &[u8]) {
        match read_all(bytes) {
            (Read::Other, rest) => assert_eq!(&rest[..], bytes, "the bytes are left for hyper"),
            _ => panic!("taken as plain: {:?}", String::from_utf8_lossy(bytes)),
        }
    }

    #[test]
    fn a_plain_get_is_read_and_split_off() {
        let (request, exchange, rest) =
            plain(b"GET /a?b=c HTTP/1.1\r\nHost: x\r\nX-Y: 1\r\nX-Y: 2\r\n\r\nGET /next");
        assert_eq!(request.method(), Method::GET);
        assert_eq!(request.uri(), "/a?b=c");
        assert_eq!(request.version(), Version::HTTP_11);
        assert_eq!(request.headers()["host"], "x");
        let values: Vec<_> = request.headers().get_all("x-y").iter().collect();
        assert_eq!(values, ["1", "2"], "repeated fields kept in order");
        assert!(exchange.keep_alive && !exchange.head);
        assert_eq!(
            &rest[..],
            b"GET /next",
            "a pipelined request stays in the buffer"
        );
    }

    #[test]
    fn keep_alive_follows_version_and_connection() {
        let (_, ex, _) = plain(b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n");
        assert!(!ex.keep_alive);
        let (_, ex, _) = plain(b"GET / HTTP/1.0\r\n\r\n");
        assert!(!ex.keep_alive && ex.version == Version::HTTP_10);
        let (_, ex, _) = plain(b"GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n");
        assert!(ex.keep_alive);
        let (_, ex, _) = plain(b"HEAD / HTTP/1.1\r\nContent-Length: 0\r\n\r\n");
        assert!(ex.head && ex.keep_alive);
    }

    #[test]
    fn a_small_body_is_waited_for_and_split_off_whole() {
        let head = b"POST /up HTTP/1.1\r\nContent-Length: 5\r\n\r\n";
        let mut bytes = head.to_vec();
        bytes.extend_from_slice(b"hel");
        let (read, rest) = read_all(&bytes);
        assert!(matches!(read, Read::Partial), "waits for the body");
        assert_eq!(&rest[..], &bytes[..], "nothing split off yet");
        bytes.extend_from_slice(b"loGET /next");
        let (request, _, rest) = plain(&bytes);
        assert_eq!(&rest[..], b"GET /next");
        match request.body() {
            ClientBody::Full(Some(body)) => assert_eq!(&body[..], b"hello"),
            other => panic!("{other:?}"),
        }
        assert_eq!(request.headers()["content-length"], "5");
    }

    #[test]
    fn a_partial_head_waits() {
        assert!(matches!(
            read_all(b"GET / HTTP/1.1\r\nHost: x\r\n").0,
            Read::Partial
        ));
        assert!(matches!(read_all(b"").0, Read::Partial));
    }

    #[test]
    fn everything_but_a_plain_request_is_left_to_hyper() {
        for bytes in [
            // bodies, and framing that could be read two ways
            &b"POST / HTTP/1.1\r\nContent-Length: 65537\r\n\r\nhello"[..],
            b"POST / HTTP/1.1\r\nContent-Length: +5\r\n\r\nhello",
            b"POST / HTTP/1.1\r\nContent-Length: 5, 5\r\n\r\nhello",
            b"POST / HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nhello",
            b"POST / HTTP/1.1\r\nContent-Length: 99999999999999999999\r\n\r\n",
            b"POST / HTTP/1.1\r\nContent-Length: \r\n\r\n",
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
            b"POST / HTTP/1.1\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"GET / HTTP/1.1\r\nContent-Length: 0\r\nContent-Length: 1\r\n\r\n",
            // upgrades, tunnels, HTTP/2
            b"GET / HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
            b"GET / HTTP/1.1\r\nConnection: upgrade\r\n\r\n",
            b"GET / HTTP/1.1\r\nHTTP2-Settings: AAAA\r\n\r\n",
            b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n",
            b"CONNECT /x HTTP/1.1\r\nHost: x\r\n\r\n",
            b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
            b"POST / HTTP/1.1\r\nExpect: 100-continue\r\n\r\n",
            // targets other than a path
            b"GET http://example.com/ HTTP/1.1\r\n\r\n",
            b"OPTIONS * HTTP/1.1\r\n\r\n",
            // what httparse refuses: hyper answers it
            b"GET / HTTP/1.1\r\nBad Name: x\r\n\r\n",
            b"GET  / HTTP/1.1\r\n\r\n",
            b"GET / HTTP/1.1\r\nX: a\r\n b\r\n\r\n",
            b"GET / HTTP/1.2\r\n\r\n",
        ] {
            assert_other(bytes);
        }
    }

    #[test]
    fn empty_lines_before_the_request_line_are_not_its_end() {
        // Found by the split-read property test in CI: the leading CRLFs
        // were taken for a head's end, so these bytes read whole went to
        // hyper, while read in two pieces they waited, the fold that
        // makes them hyper's never looked at.
        let bytes = b"\r\n\r\nGET / HTTP/1.1\r\nX-Folded: a\r\n b\r\n";
        let map = &mut HeaderMap::new();
        assert!(matches!(read_all(bytes).0, Read::Partial), "no end yet");
        let mut reader = Reader::default();
        let mut buf = BytesMut::from(&bytes[..10]);
        assert!(matches!(reader.read(&mut buf, map, 1024), Read::Partial));
        buf.extend_from_slice(&bytes[10..]);
        assert!(matches!(reader.read(&mut buf, map, 1024), Read::Partial));
        buf.extend_from_slice(b"\r\n");
        assert!(matches!(reader.read(&mut buf, map, 1024), Read::Other));
        assert_eq!(&buf[..bytes.len()], &bytes[..], "left whole for hyper");
        // A plain head after empty lines is read when its end arrives.
        let mut buf = BytesMut::from(&b"\r\n\nGET / HTTP/1.1\r\nHost: x\r\n"[..]);
        assert!(matches!(reader.read(&mut buf, map, 1024), Read::Partial));
        buf.extend_from_slice(b"\r\n");
        assert!(matches!(reader.read(&mut buf, map, 1024), Read::Plain(..)));
        assert!(buf.is_empty());
    }

    #[test]
    fn a_head_over_the_limit_is_left_to_hyper() {
        let mut big = b"GET / HTTP/1.1\r\nX: ".to_vec();
        big.resize(20 * 1024, b'a');
        assert_other(&big);
        big.extend_from_slice(b"\r\n\r\n");
        assert_other(&big);
    }

    #[test]
    fn a_target_http_refuses_puts_the_head_back() {
        // httparse takes bytes in a path that `Uri` does not (non-ASCII).
        assert_other(b"GET /a\xffb HTTP/1.1\r\n\r\nGET / HTTP/1.1\r\n\r\n");
    }

    #[test]
    fn the_map_of_the_last_response_is_reused() {
        let mut spare = HeaderMap::with_capacity(32);
        spare.insert("old", HeaderValue::from_static("x"));
        let capacity = spare.capacity();
        let mut buf = BytesMut::from(&b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"[..]);
        let Read::Plain(request, _) = Reader::default().read(&mut buf, &mut spare, 1024) else {
            panic!("not plain");
        };
        assert!(request.headers().get("old").is_none(), "cleared");
        assert_eq!(request.headers().capacity(), capacity, "the same table");
    }
}

/// Property tests: any bytes a client sends, given whole or a piece at a
/// time, are either a plain request read exactly (its head split off, the
/// rest left for the next one) or left untouched for hyper.
#[cfg(test)]
mod props {
    use proptest::collection::vec;
    use proptest::prelude::*;

    use super::*;

    /// Pieces of heads that are plain, not plain, or broken.
    const FRAGMENTS: &[&[u8]] = &[
        b"GET / HTTP/1.1\r\n",
        b"HEAD /a?b HTTP/1.0\r\n",
        b"POST /x HTTP/1.1\r\n",
        b"GET http://h/ HTTP/1.1\r\n",
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
        b"Host: x\r\n",
        b"Content-Length: 0\r\n",
        b"Content-Length: 5\r\n",
        b"Content-Length: -1\r\n",
        b"Transfer-Encoding: chunked\r\n",
        b"Transfer-Encoding : chunked\r\n",
        b"Connection: close\r\n",
        b"Connection: keep-alive, Upgrade\r\n",
        b"Upgrade: websocket\r\n",
        b"Expect: 100-continue\r\n",
        b"X-Folded: a\r\n b\r\n",
        b"Bad Name: x\r\n",
        b"X: \x7f\r\n",
        b"X: \xff\r\n",
        b"\r\n",
        b"\n",
        b"\r",
        b"hello",
        b"0\r\n\r\n",
    ];

    fn bytes() -> impl Strategy<Value = Vec<u8>> {
        let fragment = prop_oneof![
            4 => proptest::sample::select(FRAGMENTS).prop_map(<[u8]>::to_vec),
            1 => vec(any::<u8>(), 0..8),
        ];
        vec(fragment, 0..10).prop_map(|parts| parts.concat())
    }

    /// 512 cases a property, or `PROPTEST_CASES` when set (for a longer
    /// hunt: `PROPTEST_CASES=1000000 cargo test --release --test
    /// allocations props`).
    fn config() -> ProptestConfig {
        let cases = std::env::var("PROPTEST_CASES")
            .ok()
            .and_then(|n| n.parse().ok())
            .unwrap_or(512);
        ProptestConfig {
            cases,
            failure_persistence: None,
            ..ProptestConfig::default()
        }
    }

    fn read_once(bytes: &[u8], max_head: usize) -> (Read, BytesMut) {
        let mut buf = BytesMut::from(bytes);
        let read = Reader::default().read(&mut buf, &mut HeaderMap::new(), max_head);
        (read, buf)
    }

    proptest! {
        #![proptest_config(config())]

        #[test]
        fn a_head_is_read_exactly_or_left_whole(
            bytes in bytes(),
            max_head in prop_oneof![Just(16 * 1024), 8usize..128],
        ) {
            let (read, rest) = read_once(&bytes, max_head);
            match read {
                Read::Other => prop_assert_eq!(&rest[..], &bytes[..]),
                Read::Partial => prop_assert_eq!(&rest[..], &bytes[..]),
                Read::Plain(request, _) => {
                    // httparse's own reading of the head decides where it ends.
                    let mut fields = [httparse::EMPTY_HEADER; MAX_HEADERS];
                    let mut check = httparse::Request::new(&mut fields);
                    let Ok(httparse::Status::Complete(len)) = check.parse(&bytes) else {
                        return Err(TestCaseError::fail("plain but not a complete head"));
                    };
                    prop_assert!(len <= max_head);
                    let body = match request.body() {
                        ClientBody::Full(Some(body)) => body.len(),
                        _ => 0,
                    };
                    prop_assert_eq!(&rest[..], &bytes[len + body..], "exactly head and body split off");
                    prop_assert!(request.uri().path().starts_with('/'));
                    for name in ["transfer-encoding", "upgrade", "expect"] {
                        prop_assert!(request.headers().get(name).is_none(), "{} taken", name);
                    }
                    let lengths: Vec<_> = request.headers().get_all("content-length").iter().collect();
                    prop_assert!(lengths.len() <= 1);
                    if let Some(length) = lengths.first() {
                        let declared = body.to_string();
                        prop_assert_eq!(length.as_bytes(), declared.as_bytes());
                    }
                }
            }
        }

        #[test]
        fn a_request_split_across_reads_is_read_as_the_whole_is(
            bytes in bytes(),
            cuts in vec(any::<prop::sample::Index>(), 0..4),
        ) {
            // One reader, as a connection has, given the bytes a piece at a
            // time, ends where a reader given all of them at once does.
            let (whole, whole_rest) = read_once(&bytes, 16 * 1024);
            let mut at: Vec<usize> = cuts.iter().map(|cut| cut.index(bytes.len() + 1)).collect();
            at.sort_unstable();
            at.push(bytes.len());
            let mut reader = Reader::default();
            let mut buf = BytesMut::new();
            let mut given = 0;
            let mut outcome = None;
            for end in at {
                buf.extend_from_slice(&bytes[given..end]);
                given = end;
                match reader.read(&mut buf, &mut HeaderMap::new(), 16 * 1024) {
                    Read::Partial => continue,
                    read => {
                        outcome = Some(read);
                        break;
                    }
                }
            }
            buf.extend_from_slice(&bytes[given..]);
            match (whole, outcome) {
                (Read::Partial, None) => {}
                (Read::Plain(..), Some(Read::Plain(..))) => {
                    prop_assert_eq!(&buf[..], &whole_rest[..], "the same split");
                }
                (Read::Other, Some(Read::Other)) => prop_assert_eq!(&buf[..], &bytes[..]),
                (Read::Plain(..), None) | (Read::Other, None) => {
                    return Err(TestCaseError::fail("a whole request still waits"));
                }
                (_, Some(read)) => {
                    let name = match read {
                        Read::Partial => "partial",
                        Read::Plain(..) => "plain",
                        Read::Other => "other",
                    };
                    return Err(TestCaseError::fail(format!("pieces read as {name}, the whole not")));
                }
            }
        }
    }
}
