//! Property tests: what the codec does with any bytes a backend may send,
//! split at any points across reads.
//!
//! (a) Random and adversarial bytes: never a panic, never a hang.
//! (b) Valid responses, two on one connection: both read exactly.
//! (c) Responses with framing headers drawn from valid and invalid forms:
//!     the codec accepts exactly the unambiguous ones, and reads each
//!     accepted one exactly as its bytes declare, so the next exchange
//!     starts where it should.

use proptest::collection::vec;
use proptest::prelude::*;

use super::mock::Scripted;
use super::{Outcome, exchange, run};
use crate::forward::h1::{Conn, Error};

/// 256 cases a property, or `PROPTEST_CASES` when set (for a longer hunt).
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

/// Pieces of HTTP/1.1 that parsers get wrong, to be strung together.
const FRAGMENTS: &[&[u8]] = &[
    b"HTTP/1.1 200 OK\r\n",
    b"HTTP/1.0 200 OK\r\n",
    b"HTTP/1.1 100 Continue\r\n\r\n",
    b"HTTP/1.1 101 Switching Protocols\r\n",
    b"HTTP/1.1 204 No Content\r\n",
    b"Content-Length: 5\r\n",
    b"Content-Length: 0\r\n",
    b"Content-Length: 99999999999999999999\r\n",
    b"Content-Length: -1\r\n",
    b"Transfer-Encoding: chunked\r\n",
    b"Transfer-Encoding: chunked, identity\r\n",
    b"Connection: close\r\n",
    b"Connection: keep-alive, content-length\r\n",
    b"X-Folded: a\r\n b\r\n",
    b"\r\n",
    b"\n",
    b"\r",
    b" ",
    b"\0",
    b":",
    b"5\r\nhello\r\n",
    b"0\r\n\r\n",
    b"ffffffffffffffff\r\n",
    b"1;ext=\"\r\n\"\r\nx\r\n",
    b"0\r\nTrailer: x\r\n\r\n",
    b"hello",
];

fn adversarial() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        vec(any::<u8>(), 0..600),
        vec(
            prop_oneof![
                (0..FRAGMENTS.len()).prop_map(|i| FRAGMENTS[i].to_vec()),
                vec(any::<u8>(), 1..8),
            ],
            0..24,
        )
        .prop_map(|pieces| pieces.concat()),
    ]
}

/// What one exchange on the scripted stream gave.
type Exchanged = Result<Outcome<Scripted>, Error>;

/// Runs one exchange on `answers` (one per request) and reads the body;
/// then, if the connection came back, a second one. Whatever happens, it
/// returns.
fn exchange_twice(
    answers: &[&[u8]],
    cuts: &[Vec<usize>],
    pending: Vec<bool>,
    methods: [&str; 2],
    max_head: usize,
    eof_when_idle: bool,
) -> (Exchanged, Option<Exchanged>) {
    run(async {
        let mut io = Scripted::split(answers, cuts).with_pending(pending);
        io.eof_when_idle = eof_when_idle;
        let conn = Conn::new(io).with_max_head(max_head);
        let mut first = exchange(conn, methods[0]).await;
        let second = match first.as_mut().ok().and_then(|outcome| outcome.conn.take()) {
            Some(mut conn) => {
                // The check a pool makes at checkout must not be fooled
                // either: the next answer is only released by the request.
                // Bytes past the body that had not been read when it ended
                // show here, as a pool's checkout would see them.
                if conn.is_reusable_now() || eof_when_idle {
                    Some(exchange(conn, methods[1]).await)
                } else {
                    None
                }
            }
            None => None,
        };
        (first, second)
    })
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn any_bytes_neither_panic_nor_hang(
        bytes in adversarial(),
        more in adversarial(),
        cuts in vec(vec(any::<usize>(), 0..12), 2),
        pending in vec(any::<bool>(), 0..8),
        head in any::<bool>(),
        max_head in prop_oneof![Just(64 * 1024), 16usize..256],
    ) {
        let methods = if head { ["HEAD", "GET"] } else { ["GET", "HEAD"] };
        // Any outcome is fine, so long as there is one.
        // A backend that may close after any answer: a close-delimited body
        // must end, not wait.
        let _ = exchange_twice(&[&bytes, &more], &cuts, pending, methods, max_head, true);
    }
}

/// A generated valid response.
#[derive(Clone, Debug)]
struct Valid {
    interim: Vec<u16>,
    status: u16,
    head_request: bool,
    fields: Vec<(String, String)>,
    body: Vec<u8>,
    framing: ValidFraming,
}

#[derive(Clone, Debug)]
enum ValidFraming {
    Length,
    /// The sizes to cut the body into (cycled; 1 at least), an extension
    /// per chunk, and trailer fields.
    Chunked {
        sizes: Vec<usize>,
        extensions: Vec<Option<String>>,
        trailers: Vec<(String, String)>,
    },
    /// No body by the rules (HEAD, 204, 304): `Content-Length` may still
    /// say what a GET would have had.
    None {
        length: Option<u64>,
    },
    /// Until the close: only ever the last response.
    Close,
}

fn field_value() -> impl Strategy<Value = String> {
    // Visible characters and inner spaces (httparse trims the outer ones).
    "[!-~]([ -~]{0,20}[!-~])?"
}

fn valid(last: bool) -> impl Strategy<Value = Valid> {
    let framing = prop_oneof![
        Just(ValidFraming::Length),
        (
            vec(1usize..40, 1..6),
            vec(proptest::option::of("[a-z]{1,5}(=[a-z0-9]{1,5})?"), 1..6),
            vec(("x-[a-z]{1,8}", field_value()), 0..3),
        )
            .prop_map(|(sizes, extensions, trailers)| ValidFraming::Chunked {
                sizes,
                extensions,
                trailers,
            }),
        proptest::option::of(0u64..10_000).prop_map(|length| ValidFraming::None { length }),
        Just(if last {
            ValidFraming::Close
        } else {
            ValidFraming::Length
        }),
    ];
    (
        vec(prop_oneof![Just(100u16), Just(102), Just(103)], 0..3),
        prop_oneof![
            Just(200u16),
            Just(201),
            Just(206),
            Just(404),
            Just(500),
            Just(503)
        ],
        any::<bool>(),
        vec(("x-[a-z]{1,10}", field_value()), 0..6),
        vec(any::<u8>(), 0..300),
        framing,
        prop_oneof![Just(204u16), Just(304)],
    )
        .prop_map(
            |(interim, status, head_request, fields, body, framing, empty_status)| {
                let (status, head_request, body) = match framing {
                    ValidFraming::None { .. } if head_request => (status, true, Vec::new()),
                    ValidFraming::None { .. } => (empty_status, false, Vec::new()),
                    _ => (status, false, body),
                };
                Valid {
                    interim,
                    status,
                    head_request,
                    fields,
                    body,
                    framing,
                }
            },
        )
}

impl Valid {
    fn bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        for code in &self.interim {
            out.extend_from_slice(
                format!("HTTP/1.1 {code} Interim\r\nx-interim-hint: 1\r\n\r\n").as_bytes(),
            );
        }
        out.extend_from_slice(format!("HTTP/1.1 {} Reason\r\n", self.status).as_bytes());
        for (name, value) in &self.fields {
            out.extend_from_slice(format!("{name}: {value}\r\n").as_bytes());
        }
        match &self.framing {
            ValidFraming::Length => {
                out.extend_from_slice(
                    format!("Content-Length: {}\r\n\r\n", self.body.len()).as_bytes(),
                );
                out.extend_from_slice(&self.body);
            }
            ValidFraming::Chunked {
                sizes,
                extensions,
                trailers,
            } => {
                out.extend_from_slice(b"Transfer-Encoding: chunked\r\n\r\n");
                let mut rest = &self.body[..];
                let mut i = 0;
                while !rest.is_empty() {
                    let n = sizes[i % sizes.len()].min(rest.len());
                    out.extend_from_slice(format!("{n:x}").as_bytes());
                    if let Some(ext) = &extensions[i % extensions.len()] {
                        out.extend_from_slice(format!(";{ext}").as_bytes());
                    }
                    out.extend_from_slice(b"\r\n");
                    out.extend_from_slice(&rest[..n]);
                    out.extend_from_slice(b"\r\n");
                    rest = &rest[n..];
                    i += 1;
                }
                out.extend_from_slice(b"0\r\n");
                for (name, value) in trailers {
                    out.extend_from_slice(format!("{name}: {value}\r\n").as_bytes());
                }
                out.extend_from_slice(b"\r\n");
            }
            ValidFraming::None { length } => {
                if let Some(length) = length {
                    out.extend_from_slice(format!("Content-Length: {length}\r\n").as_bytes());
                }
                out.extend_from_slice(b"\r\n");
            }
            ValidFraming::Close => {
                out.extend_from_slice(b"\r\n");
                out.extend_from_slice(&self.body);
            }
        }
        out
    }

    fn method(&self) -> &'static str {
        if self.head_request { "HEAD" } else { "GET" }
    }

    fn check(&self, outcome: &Outcome<Scripted>) -> Result<(), TestCaseError> {
        prop_assert_eq!(outcome.response.status.as_u16(), self.status);
        prop_assert_eq!(&outcome.body, &self.body);
        for (name, value) in &self.fields {
            let values: Vec<_> = outcome
                .response
                .headers
                .get_all(name.as_str())
                .iter()
                .collect();
            prop_assert!(
                values.iter().any(|v| v.as_bytes() == value.as_bytes()),
                "{name} lost"
            );
        }
        prop_assert!(
            outcome.response.headers.get("x-interim-hint").is_none(),
            "interim headers leaked"
        );
        Ok(())
    }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn valid_responses_back_to_back_are_read_exactly(
        first in valid(false),
        second in valid(true),
        cuts in vec(vec(any::<usize>(), 0..10), 2),
        pending in vec(any::<bool>(), 0..8),
    ) {
        let answers = [first.bytes(), second.bytes()];
        let (one, two) = exchange_twice(
            &[&answers[0], &answers[1]],
            &cuts,
            pending,
            [first.method(), second.method()],
            64 * 1024,
            false,
        );
        let one = one.map_err(|e| TestCaseError::fail(format!("first: {e:?}")))?;
        first.check(&one)?;
        let two = two.ok_or_else(|| TestCaseError::fail("first connection not handed back"))?;
        let two = two.map_err(|e| TestCaseError::fail(format!("second: {e:?}")))?;
        second.check(&two)?;
        let reusable = !matches!(second.framing, ValidFraming::Close);
        prop_assert_eq!(two.conn.is_some(), reusable);
    }
}

/// One framing header, and what it means.
#[derive(Clone, Debug)]
enum FramingField {
    Length {
        text: String,
        value: Option<u64>,
    },
    Encoding {
        text: String,
        chunked: bool,
    },
    /// A line no strict reader accepts (folding, bare CR, NUL...).
    Broken(String),
    Close,
}

fn framing_field() -> impl Strategy<Value = FramingField> {
    let name = |base: &'static str| {
        vec(any::<bool>(), base.len()).prop_map(move |upper| {
            base.chars()
                .zip(upper)
                .map(|(c, u)| if u { c.to_ascii_uppercase() } else { c })
                .collect::<String>()
        })
    };
    let ows = || prop_oneof![Just(""), Just(" "), Just("\t"), Just("  ")];
    prop_oneof![
        (name("content-length"), 0u64..2000, ows(), ows()).prop_map(|(name, n, a, b)| {
            FramingField::Length {
                text: format!("{name}:{a}{n}{b}"),
                value: Some(n),
            }
        }),
        (
            name("content-length"),
            0u64..2000,
            prop_oneof![
                Just("{n}, {n}"),
                Just("+{n}"),
                Just("{n}.0"),
                Just("0x{n}"),
                Just("{n} {n}"),
                Just("-{n}"),
                Just(""),
                Just("{n};"),
                Just("\"{n}\""),
            ]
        )
            .prop_map(|(name, n, form)| FramingField::Length {
                text: format!("{name}: {}", form.replace("{n}", &n.to_string())),
                value: None,
            }),
        (name("transfer-encoding"), name("chunked"), ows(), ows()).prop_map(|(name, c, a, b)| {
            FramingField::Encoding {
                text: format!("{name}:{a}{c}{b}"),
                chunked: true,
            }
        }),
        (
            name("transfer-encoding"),
            prop_oneof![
                Just("\"chunked\""),
                Just("xchunked"),
                Just("chunked, gzip"),
                Just("gzip, chunked"),
                Just("chunked, chunked"),
                Just("identity"),
                Just("chunked;a=b"),
                Just("chunk"),
                Just("chunked,"),
                Just(",chunked"),
            ]
        )
            .prop_map(|(name, value)| FramingField::Encoding {
                text: format!("{name}: {value}"),
                chunked: false,
            }),
        prop_oneof![
            Just("x-a: 1\r\n folded"),
            Just("x-a: 1\r\n\tfolded"),
            Just("x-a: 1\rx-b: 2"),
            Just("x-a: 1\0"),
            Just("x-a : 1"),
            Just("content-length\r\n"),
            Just("x-a: 1\nx-b: 2"),
        ]
        .prop_map(|line| FramingField::Broken(line.to_string())),
        Just(FramingField::Close),
    ]
}

/// What a strict reader makes of a head: an error, or its body framing
/// and whether the connection stays open.
fn reference(fields: &[FramingField], head_request: bool, status: u16) -> Option<(Expected, bool)> {
    let mut lengths = Vec::new();
    let mut encodings = 0;
    let mut close = false;
    for field in fields {
        match field {
            FramingField::Length { value: Some(n), .. } => lengths.push(*n),
            FramingField::Encoding { chunked: true, .. } => encodings += 1,
            FramingField::Length { value: None, .. }
            | FramingField::Encoding { chunked: false, .. }
            | FramingField::Broken(_) => return None,
            FramingField::Close => close = true,
        }
    }
    if lengths.len() > 1 || encodings > 1 || (encodings == 1 && !lengths.is_empty()) {
        return None;
    }
    let expected = if head_request || status == 204 || status == 304 {
        Expected::Empty
    } else if encodings == 1 {
        Expected::Chunked
    } else if let Some(&n) = lengths.first() {
        Expected::Length(n)
    } else {
        Expected::Close
    };
    let keep_alive = !close && expected != Expected::Close;
    Some((expected, keep_alive))
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Expected {
    Empty,
    Length(u64),
    Chunked,
    Close,
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn what_is_accepted_is_framed_as_declared(
        fields in vec(framing_field(), 0..4),
        head_request in any::<bool>(),
        status in prop_oneof![Just(200u16), Just(204), Just(304), Just(404)],
        body in vec(any::<u8>(), 1..2000),
        chunk in 1usize..64,
        cuts in vec(vec(any::<usize>(), 0..10), 2),
        trailing in prop_oneof![Just(Vec::new()), vec(any::<u8>(), 1..4)],
    ) {
        let expected = reference(&fields, head_request, status);
        let mut bytes = format!("HTTP/1.1 {status} X\r\n").into_bytes();
        for field in &fields {
            let line = match field {
                FramingField::Length { text, .. } | FramingField::Encoding { text, .. } => text,
                FramingField::Broken(line) => line,
                FramingField::Close => "connection: close",
            };
            bytes.extend_from_slice(line.as_bytes());
            bytes.extend_from_slice(b"\r\n");
        }
        bytes.extend_from_slice(b"\r\n");
        // The body as the reference reads the head (any bytes when invalid).
        let sent_body: Vec<u8> = match expected {
            Some((Expected::Length(n), _)) => body.iter().copied().cycle().take(n as usize).collect(),
            Some((Expected::Empty, _)) => Vec::new(),
            _ => body.clone(),
        };
        match expected {
            Some((Expected::Chunked, _)) => {
                for piece in sent_body.chunks(chunk) {
                    bytes.extend_from_slice(format!("{:x}\r\n", piece.len()).as_bytes());
                    bytes.extend_from_slice(piece);
                    bytes.extend_from_slice(b"\r\n");
                }
                bytes.extend_from_slice(b"0\r\n\r\n");
            }
            _ => bytes.extend_from_slice(&sent_body),
        }
        // Bytes past the declared end (a backend out of step): never part
        // of the body, and the connection is not reused. (Past a body read
        // to the close they are the body, so none are sent there.)
        let trailing = match expected {
            Some((Expected::Close, _)) => Vec::new(),
            _ => trailing,
        };
        bytes.extend_from_slice(&trailing);
        let keep_alive = matches!(expected, Some((_, true))) && trailing.is_empty();
        // The next answer only when the connection should carry it (a body
        // read to the close ends with the stream).
        let next = &b"HTTP/1.1 200 OK\r\ncontent-length: 4\r\n\r\nnext"[..];
        let answers: &[&[u8]] = if keep_alive { &[&bytes, next] } else { &[&bytes] };
        let method = if head_request { "HEAD" } else { "GET" };
        let (one, two) =
            exchange_twice(answers, &cuts, Vec::new(), [method, "GET"], 64 * 1024, false);
        match (expected, one) {
            (None, Ok(outcome)) => {
                return Err(TestCaseError::fail(format!(
                    "accepted {:?} as {:?}",
                    String::from_utf8_lossy(&bytes),
                    outcome.response
                )));
            }
            (None, Err(_)) => prop_assert!(two.is_none()),
            (Some(_), Err(error)) => {
                return Err(TestCaseError::fail(format!(
                    "refused {:?}: {error:?}",
                    String::from_utf8_lossy(&bytes)
                )));
            }
            (Some(_), Ok(outcome)) => {
                prop_assert_eq!(&outcome.body, &sent_body);
                prop_assert_eq!(two.is_some(), keep_alive);
                if let Some(two) = two {
                    let two = two.map_err(|e| TestCaseError::fail(format!("next: {e:?}")))?;
                    prop_assert_eq!(&two.body, b"next");
                }
            }
        }
    }
}
