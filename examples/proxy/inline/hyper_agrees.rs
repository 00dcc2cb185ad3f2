//! The inline reader's promise, held against hyper itself: bytes it reads
//! as a plain request are bytes hyper's HTTP/1 server reads as the same
//! request.
//!
//! `request.rs`'s property tests check the reader against httparse and
//! against itself; they cannot see what hyper does after httparse (its
//! `Uri`, its header map, its body framing, its keep-alive rules). A
//! client must not be able to tell which of the two read its request, so
//! here both read the same random bytes and everything the stack or the
//! connection depends on is compared: method, target, version, every field
//! in order, the body, and whether the connection stays open.
//!
//! hyper is given the bytes the reader took (head and body), not all of
//! them: what follows is the next request's, and hyper's fate for it (a
//! 400 for junk, a wait for a partial head) would blur whether it kept
//! the connection open after this one. The split is still checked: a
//! shorter body in hyper's reading shows as a different body, a longer
//! one as no answer, a shorter head as different fields. A `Read::Other`
//! is not compared (hyper reads those bytes itself; `request.rs`'s props
//! check they are left whole).

#![forbid(unsafe_code)]

use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::{HeaderMap, Request, Response, Version};
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::select;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::request::{Read, Reader};
use crate::client_body::ClientBody;

/// A request as the stack sees it: what is compared between the readers.
#[derive(Debug, PartialEq)]
struct Seen {
    method: String,
    uri: String,
    version: Version,
    /// Every field, in the header map's order (repeated names kept).
    headers: Vec<(String, Bytes)>,
    body: Result<Bytes, String>,
}

impl Seen {
    fn new(method: &http::Method, uri: &http::Uri, version: Version, map: &HeaderMap) -> Self {
        let headers = map
            .iter()
            .map(|(name, value)| {
                let value = Bytes::copy_from_slice(value.as_bytes());
                (name.as_str().to_owned(), value)
            })
            .collect();
        Self {
            method: method.as_str().to_owned(),
            uri: uri.to_string(),
            version,
            headers,
            body: Ok(Bytes::new()),
        }
    }
}

/// What hyper's server did with the bytes.
#[derive(Debug)]
struct Hyper {
    /// The requests it called the service with.
    requests: Vec<Seen>,
    /// What it wrote back, read until its first response head had ended.
    response: String,
    /// `None` while it waits for another request; `Some` once it has
    /// closed the connection, with its error, if any.
    ended: Option<Result<(), String>>,
}

/// Long enough for any read or write on an in-memory pipe: the clock is
/// paused, so a wait this long passes at once when nothing else can run,
/// and a hang fails the case instead of blocking the test.
const WAIT: Duration = Duration::from_secs(60);

/// Serves `bytes` with hyper's HTTP/1 server configured as the proxy's
/// (`server.rs`: `max_buf_size` is the head limit), the client's end kept
/// open, as a client waiting for its answer does.
fn hyper_reads(bytes: &[u8], max_head: usize) -> Hyper {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .expect("a runtime");
    runtime.block_on(async {
        let (mut client, server) = tokio::io::duplex(bytes.len() + 64 * 1024);
        let seen = Arc::new(Mutex::new(Vec::new()));
        let service = {
            let seen = seen.clone();
            hyper::service::service_fn(move |request: Request<Incoming>| {
                let seen = seen.clone();
                async move {
                    let (parts, body) = request.into_parts();
                    let mut request =
                        Seen::new(&parts.method, &parts.uri, parts.version, &parts.headers);
                    request.body = match body.collect().await {
                        Ok(body) => Ok(body.to_bytes()),
                        Err(error) => Err(error.to_string()),
                    };
                    seen.lock().expect("not poisoned").push(request);
                    Ok::<_, Infallible>(Response::new(Empty::<Bytes>::new()))
                }
            })
        };
        let connection = hyper::server::conn::http1::Builder::new()
            .max_buf_size(max_head)
            .serve_connection(TokioIo::new(server), service);
        let mut connection = tokio::spawn(connection);
        client.write_all(bytes).await.expect("the pipe has room");
        let mut response = Vec::new();
        let _ = tokio::time::timeout(WAIT, async {
            let mut chunk = [0u8; 4096];
            while !response.windows(4).any(|w| w == b"\r\n\r\n") {
                match client.read(&mut chunk).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => response.extend_from_slice(&chunk[..n]),
                }
            }
        })
        .await;
        let ended = match tokio::time::timeout(WAIT, &mut connection).await {
            Ok(Ok(result)) => Some(result.map_err(|error| format!("{error:?}"))),
            Ok(Err(panic)) => Some(Err(format!("hyper's task failed: {panic}"))),
            Err(_) => None,
        };
        // A connection still open ends with the client's.
        drop(client);
        if ended.is_none() {
            let _ = tokio::time::timeout(WAIT, connection).await;
        }
        let requests = std::mem::take(&mut *seen.lock().expect("not poisoned"));
        Hyper {
            requests,
            response: String::from_utf8_lossy(&response).into_owned(),
            ended,
        }
    })
}

/// Whether the two readers agree on `bytes`: `Ok` when the inline reader
/// does not take them as plain, or hyper reads them as the same requests
/// and keeps the connection as the reader says it may be kept.
///
/// The reader reads as a connection's does (one reader, one spare map)
/// for as long as it reads plain requests the client lets it keep
/// reading after; hyper is then given the bytes it took, and must read
/// exactly those requests, answer each, and end as the last one asks.
/// When bytes are left after them, hyper is given all of them as well and
/// must read the same requests first, whatever it makes of the rest.
fn agree(bytes: &[u8], max_head: usize) -> Result<(), String> {
    let mut buf = BytesMut::from(bytes);
    let (mut reader, mut spare) = (Reader::default(), HeaderMap::new());
    let mut inline = Vec::new();
    let mut last = None;
    while last.is_none_or(|keep_alive| keep_alive) {
        let Read::Plain(request, exchange) = reader.read(&mut buf, &mut spare, max_head) else {
            break;
        };
        let (parts, body) = request.into_parts();
        let mut seen = Seen::new(&parts.method, &parts.uri, parts.version, &parts.headers);
        seen.body = match body {
            ClientBody::Empty => Ok(Bytes::new()),
            ClientBody::Full(Some(body)) => Ok(body),
            other => return Err(format!("a plain request with the body {other:?}")),
        };
        inline.push(seen);
        last = Some(exchange.keep_alive);
        spare = parts.headers;
    }
    let Some(keep_alive) = last else {
        return Ok(());
    };
    let taken = &bytes[..bytes.len() - buf.len()];
    let hyper = hyper_reads(taken, max_head);
    let case = |bytes: &[u8], hyper: &Hyper| {
        format!(
            "bytes {:?}\ninline read {inline:#?}\nhyper did {hyper:#?}",
            Bytes::copy_from_slice(bytes)
        )
    };
    if let Some(Err(error)) = &hyper.ended {
        let case = case(taken, &hyper);
        return Err(format!("hyper refused what inline read ({error})\n{case}"));
    }
    if !hyper.response.starts_with("HTTP/1.1 200 OK\r\n")
        && !hyper.response.starts_with("HTTP/1.0 200 OK\r\n")
    {
        let case = case(taken, &hyper);
        return Err(format!("hyper's answer is not the service's\n{case}"));
    }
    if hyper.requests != inline {
        return Err(format!(
            "hyper read other requests\n{}",
            case(taken, &hyper)
        ));
    }
    let hyper_keeps = hyper.ended.is_none();
    if keep_alive != hyper_keeps {
        let hyper_did = if hyper_keeps {
            "keeps the connection"
        } else {
            "closes it"
        };
        let case = case(taken, &hyper);
        return Err(format!(
            "inline keep_alive {keep_alive}, hyper {hyper_did}\n{case}"
        ));
    }
    if taken.len() < bytes.len() {
        let whole = hyper_reads(bytes, max_head);
        if whole.requests.get(..inline.len()) != Some(&inline[..]) {
            let case = case(bytes, &whole);
            return Err(format!(
                "hyper given all the bytes read other requests first\n{case}"
            ));
        }
    }
    Ok(())
}

/// `request.rs`'s props fragments, as they are there (its module keeps
/// them private): pieces of heads that are plain, not plain, or broken.
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

/// Request lines: odd targets (`%`-escapes, bytes `Uri` may refuse,
/// absolute form, `*`), methods, versions, whitespace, bare LF.
const LINES: &[&[u8]] = &[
    b"GET / HTTP/1.1\r\n",
    b"GET / HTTP/1.0\r\n",
    b"HEAD /a?b HTTP/1.0\r\n",
    b"POST /x HTTP/1.1\r\n",
    b"PUT /a%20b%zz%%/c?d=%e9#frag HTTP/1.1\r\n",
    b"GET //x/../y HTTP/1.0\r\n",
    b"GET /\"<>{}|\\^`[] HTTP/1.1\r\n",
    b"GET /\x80\xff HTTP/1.1\r\n",
    b"GET /a\x7fb HTTP/1.1\r\n",
    b"GET /?#? HTTP/1.1\r\n",
    b"DELETE /* HTTP/1.1\r\n",
    b"M-SEARCH /x HTTP/1.1\r\n",
    b"get / HTTP/1.1\r\n",
    b"GET / HTTP/1.1\n",
    b"GET /;a=b?c=d&e HTTP/1.0\n",
    b"OPTIONS /x HTTP/1.1\r\n",
    b"OPTIONS * HTTP/1.1\r\n",
    b"GET https://h:443/p?q HTTP/1.1\r\n",
    b"GET h:/ HTTP/1.1\r\n",
    b"GET  /  HTTP/1.1\r\n",
    b"GET\t/\tHTTP/1.1\r\n",
    b"GET / http/1.1\r\n",
    b"GET / HTTP/1.1 \r\n",
];

/// Fields the reader may take as plain: `Host` variants, odd value bytes
/// (tabs, obs-text), repeated names, HTTP/1.0 keep-alive and `Connection`
/// lists, `Content-Length` spellings.
const FIELDS: &[&[u8]] = &[
    b"Host: x\r\n",
    b"host: x:80\r\n",
    b"HOST: \r\n",
    b"Host: a, b\r\n",
    b"Host: [::1]:8080\r\n",
    b"Host:x\r\n",
    b"Host:   x   \r\n",
    b"Host: h\xc3\xa9\r\n",
    b"X-Tab:\tv\t\r\n",
    b"X-Tab: a\tb\r\n",
    b"X-Obs: a\x80b\xfe\r\n",
    b"X: \xff\r\n",
    b"X-Empty:\r\n",
    b"x-dup: 1\r\n",
    b"X-Dup: 2\r\n",
    b"Connection: close\r\n",
    b"Connection: Keep-Alive\r\n",
    b"Connection: keep-alive\r\n",
    b"Connection: keep-alive, close\r\n",
    b"Connection: ,close,\r\n",
    b"Connection:\tclose\t\r\n",
    b"Connection: closed\r\n",
    b"Connection: close\x80\r\n",
    b"Connection: close, \x80\r\n",
    b"Connection: keep-alive, \xff\r\n",
    b"Connection: keep-alive\t,\tTE\r\n",
    b"Connection: \"close\"\r\n",
    b"Connection: TE\r\n",
    b"Connection:\r\n",
    b"CONNECTION: CLOSE\r\n",
    b"connection: keep-alive\r\n",
    b"Connection: close\x0c\r\n",
    b"Connection: keep-alive\x0b\r\n",
    b"Connection: close \t \r\n",
    b"Keep-Alive: timeout=5\r\n",
    b"Proxy-Connection: keep-alive\r\n",
    b"Content-Length: 0\r\n",
    b"Content-Length: 3\r\n",
    b"Content-Length: 5\r\n",
    b"Content-Length: 05\r\n",
    b"Content-Length:  3  \r\n",
    b"Content-Length: 3\t\r\n",
    b"CONTENT-LENGTH: 0000000000000000003\r\n",
];

/// Fields and bytes that make a head not plain, or broken.
const BREAKERS: &[&[u8]] = &[
    b"Content-Length: 0, 0\r\n",
    b"Content-Length: 3\r\nContent-Length: 3\r\n",
    b"Transfer-Encoding: identity\r\n",
    b"Transfer-Encoding: chunked\r\n",
    b"Upgrade: h2c\r\n",
    b"HTTP2-Settings: AAMAAABkAAQAAP__\r\n",
    b"Expect: 100-Continue\r\n",
    b"Connection: upgrade\r\n",
    b"X-Folded: a\r\n b\r\n",
    b"Bad Name: x\r\n",
    b"X : x\r\n",
    b": x\r\n",
    b"X: \x7f\r\n",
    b"X-Ctl: a\x01b\r\n",
    b"X-Nul: \x00\r\n",
    b"X-Cr: a\rb\r\n",
    b"X-\xe9: x\r\n",
    b"\r",
];

/// What may follow a head: nothing, a body (of the lengths in `FIELDS`,
/// or not), a pipelined request.
const BODIES: &[&[u8]] = &[
    b"",
    b"",
    b"abc",
    b"hello",
    b"hel",
    b"abcGET / HTTP/1.1\r\n\r\n",
];

const ENDS: &[&[u8]] = &[b"\r\n", b"\n"];

/// An 8,000 to 9,000 byte field, to meet the head limit.
fn long_field() -> impl Strategy<Value = Vec<u8>> {
    (7_900usize..9_000, any::<bool>()).prop_map(|(n, in_name)| {
        let mut field = b"X-".to_vec();
        if in_name {
            field.resize(n, b'n');
            field.extend_from_slice(b": v\r\n");
        } else {
            field.extend_from_slice(b"Long: ");
            field.resize(n, b'v');
            field.extend_from_slice(b"\r\n");
        }
        field
    })
}

fn pick(from: &'static [&'static [u8]]) -> impl Strategy<Value = Vec<u8>> + Clone {
    select(from).prop_map(<[u8]>::to_vec)
}

/// 95 to 105 fields, around the limit of 100 both readers have.
fn many_fields() -> impl Strategy<Value = Vec<u8>> {
    (95usize..106).prop_map(|n| b"X: y\r\n".repeat(n))
}

/// Any pieces in any order with random bytes, as request.rs's props make
/// them.
fn bytes() -> impl Strategy<Value = Vec<u8>> {
    let fragment = prop_oneof![
        8 => pick(FRAGMENTS),
        4 => pick(LINES),
        8 => pick(FIELDS),
        2 => pick(BREAKERS),
        4 => vec(any::<u8>(), 0..8),
        1 => long_field(),
    ];
    vec(fragment, 0..12).prop_map(|parts| parts.concat())
}

/// A head shaped as a request's (empty lines, a request line, fields, its
/// end) with what follows it, so that most cases are plain and compared.
fn heads() -> impl Strategy<Value = Vec<u8>> {
    let field = prop_oneof![
        30 => pick(FIELDS),
        2 => pick(BREAKERS),
        1 => long_field(),
        1 => many_fields(),
    ];
    // Now and then a body of the length declared, up to past the largest
    // read inline (`MAX_BODY`) and past hyper's buffer limit.
    let sized = prop_oneof![
        8 => Just(None),
        1 => (0usize..70_000).prop_map(Some),
        1 => (65_530usize..65_542).prop_map(Some),
    ];
    (
        vec(pick(ENDS), 0..3),
        pick(LINES),
        vec(field, 0..6),
        sized,
        pick(ENDS),
        pick(BODIES),
    )
        .prop_map(|(empty, line, fields, sized, end, body)| {
            let (length, sized) = match sized {
                Some(n) => (format!("Content-Length: {n}\r\n"), vec![b'b'; n]),
                None => (String::new(), Vec::new()),
            };
            let fields = [fields.concat(), length.into_bytes()].concat();
            [empty.concat(), line, fields, end, sized, body].concat()
        })
}

/// Plain-looking requests one after another, as a client pipelines them.
fn pipelined() -> impl Strategy<Value = Vec<u8>> {
    vec(heads(), 2..5).prop_map(|heads| heads.concat())
}

/// 256 cases, or `PROPTEST_CASES` when set (for a longer hunt:
/// `PROPTEST_CASES=20000 cargo test --release --example proxy
/// hyper_agrees`).
fn config() -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(256);
    ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn hyper_reads_a_plain_request_as_the_inline_reader_does(
        bytes in prop_oneof![3 => heads(), 1 => pipelined(), 1 => bytes()],
        max_head in prop_oneof![Just(16 * 1024), Just(8 * 1024)],
    ) {
        if let Err(disagreement) = agree(&bytes, max_head) {
            return Err(TestCaseError::fail(disagreement));
        }
    }
}

/// The comparison itself can tell the readers apart: a head read two
/// ways by construction, here hyper with a smaller limit than the
/// reader's, is a disagreement.
#[test]
fn a_head_hyper_refuses_is_a_disagreement() {
    let mut bytes = b"GET / HTTP/1.1\r\nX: ".to_vec();
    bytes.resize(12 * 1024, b'v');
    bytes.extend_from_slice(b"\r\n\r\n");
    assert!(
        agree(&bytes, 16 * 1024).is_ok(),
        "both read it under 16 KiB"
    );
    let mut buf = BytesMut::from(&bytes[..]);
    assert!(matches!(
        Reader::default().read(&mut buf, &mut HeaderMap::new(), 16 * 1024),
        Read::Plain(..)
    ));
    let hyper = hyper_reads(&bytes, 8 * 1024);
    assert!(hyper.requests.is_empty(), "{hyper:?}");
    assert!(matches!(hyper.ended, Some(Err(_))), "{hyper:?}");
    assert!(hyper.response.starts_with("HTTP/1.1 431"), "{hyper:?}");
}

#[test]
fn hyper_keeps_or_closes_as_the_request_asks() {
    for (bytes, keeps) in [
        (&b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"[..], true),
        (b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n", false),
        (b"GET / HTTP/1.0\r\n\r\n", false),
        (b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n", true),
    ] {
        let hyper = hyper_reads(bytes, 16 * 1024);
        assert_eq!(hyper.ended.is_none(), keeps, "{hyper:?}");
        assert_eq!(hyper.requests.len(), 1, "{hyper:?}");
        assert!(agree(bytes, 16 * 1024).is_ok());
    }
}

#[test]
fn a_longer_body_in_hypers_reading_is_no_answer() {
    // What hyper gets when it reads more body than the reader took.
    let hyper = hyper_reads(
        b"POST / HTTP/1.1\r\nContent-Length: 5\r\n\r\nhel",
        16 * 1024,
    );
    assert!(hyper.response.is_empty(), "{hyper:?}");
    // The body ends short when the client goes, after the wait.
    assert!(hyper.requests.iter().all(|r| r.body.is_err()), "{hyper:?}");
}

/// Found by the property: `close` beside obs-text in one `Connection`
/// value. The reader closed after the answer; hyper reads no `close` in a
/// value `to_str` refuses, and keeps the connection (the reader now reads
/// such a value as hyper does).
#[test]
fn connection_close_beside_obs_text_http_11() {
    let bytes = b"GET / HTTP/1.1\r\nConnection: close, \x80\r\n\r\n";
    agree(bytes, 16 * 1024).unwrap();
}

/// Found by the property: an HTTP/1.0 `keep-alive` beside obs-text. The
/// reader kept the connection; hyper reads no `keep-alive` and closes it.
#[test]
fn connection_keep_alive_beside_obs_text_http_10() {
    let bytes = b"GET / HTTP/1.0\r\nConnection: keep-alive, \xff\r\n\r\n";
    agree(bytes, 16 * 1024).unwrap();
}

#[test]
fn pipelined_plain_requests_are_all_compared() {
    let bytes = b"GET /1 HTTP/1.1\r\n\r\nPOST /2 HTTP/1.1\r\nContent-Length: 3\r\n\r\nabcGET /3 HTTP/1.0\r\n\r\nGET /4 HTTP/1.1\r\n\r\n";
    let hyper = hyper_reads(bytes, 16 * 1024);
    let paths: Vec<_> = hyper.requests.iter().map(|r| r.uri.as_str()).collect();
    assert_eq!(paths, ["/1", "/2", "/3"], "HTTP/1.0 ends it: {hyper:?}");
    assert_eq!(hyper.requests[1].body, Ok(Bytes::from_static(b"abc")));
    assert!(agree(bytes, 16 * 1024).is_ok());
}
