//! Property test: a connection's memory of the last head changes nothing.
//!
//! `parse_into` takes the lines a head repeats from the last one as they
//! were (see `response_head::Scratch`), and parses the others on their own.
//! Here a connection reads a run of heads, each drawn from the last by
//! keeping, changing, adding and dropping lines, valid and not, and every
//! answer it gives (the head's status, version, fields in order with their
//! values, framing, keep-alive, upgrade; the bytes left in the buffer; or
//! the error) must be the one a parse knowing nothing gives for the same
//! bytes.

use bytes::BytesMut;
use http::HeaderMap;
use proptest::collection::vec;
use proptest::prelude::*;

use crate::forward::h1::response_head::{Parsed, Scratch, parse_into};

/// Status lines: the usual ones, and some a parse must refuse.
const STATUS: &[&str] = &[
    "HTTP/1.1 200 OK\r\n",
    "HTTP/1.1 200 OK\r\n",
    "HTTP/1.1 200 OK\r\n",
    "HTTP/1.1 404 Not Found\r\n",
    "HTTP/1.0 200 OK\r\n",
    "HTTP/1.1 204 No Content\r\n",
    "HTTP/1.1 304 Not Modified\r\n",
    "HTTP/1.1 101 Switching Protocols\r\n",
    "HTTP/1.1 100 Continue\r\n",
    "HTTP/1.1 200 OK\n",
    "HTTP/1.1  200 OK\r\n",
    "HTTP/2.0 200 OK\r\n",
];

/// Field lines a backend sends.
const LINES: &[&str] = &[
    "Server: nginx/1.22.1\r\n",
    "Date: Wed, 02 Dec 2026 08:00:00 GMT\r\n",
    "Date: Wed, 02 Dec 2026 08:00:01 GMT\r\n",
    "Content-Type: text/plain\r\n",
    "Content-Length: 3\r\n",
    "Content-Length: 12\r\n",
    "content-length: 3\r\n",
    "Transfer-Encoding: chunked\r\n",
    "Connection: keep-alive\r\n",
    "Connection: close\r\n",
    "Keep-Alive: timeout=5\r\n",
    "Upgrade: websocket\r\n",
    "X-Trace: abc\r\n",
    "X-Trace: abd\r\n",
    "x-trace: abc\r\n",
    "X-Empty:\r\n",
    "X-Empty: \r\n",
    "X-Spaces:   a b   \r\n",
    "X-Tab:\ta\t\r\n",
    "Set-Cookie: a=1; Path=/\r\n",
];

/// Lines that must not pass, or not as they would in another place.
const BAD: &[&str] = &[
    "Connection: x-trace\r\n",
    "Transfer-Encoding: gzip, chunked\r\n",
    "Content-Length: \r\n",
    "Content-Length: 3, 3\r\n",
    " folded\r\n",
    "\tfolded\r\n",
    "X-Bare: a\nb\r\n",
    "X-Bare-Cr: a\rb\r\n",
    "X-Nul: a\0b\r\n",
    "X-Del: a\x7fb\r\n",
    "X-Space : a\r\n",
    ": no name\r\n",
    "no colon\r\n",
    "X-Lf-End: a\n",
];

/// One line of a head: a known one, or a random field.
fn line() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        12 => (0..LINES.len()).prop_map(|i| LINES[i].as_bytes().to_vec()),
        1 => (0..BAD.len()).prop_map(|i| BAD[i].as_bytes().to_vec()),
        1 => ("[A-Za-z-]{1,12}", vec(any::<u8>(), 0..12)).prop_map(|(name, value)| {
            let mut line = format!("{name}: ").into_bytes();
            line.extend(value);
            line.extend_from_slice(b"\r\n");
            line
        }),
        1 => "[a-zA-Z0-9 :;=,/\t-]{0,24}\r\n".prop_map(String::into_bytes),
    ]
}

/// What a head becomes in the next response.
#[derive(Clone, Debug)]
enum Edit {
    Same,
    Replace(usize, Vec<u8>),
    Insert(usize, Vec<u8>),
    Remove(usize),
    Status(usize),
}

fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        4 => Just(Edit::Same),
        3 => (any::<usize>(), line()).prop_map(|(at, line)| Edit::Replace(at, line)),
        1 => (any::<usize>(), line()).prop_map(|(at, line)| Edit::Insert(at, line)),
        1 => any::<usize>().prop_map(Edit::Remove),
        1 => (0..STATUS.len()).prop_map(Edit::Status),
    ]
}

/// A head: its status line, its field lines, how it ends.
#[derive(Clone, Debug)]
struct Head {
    status: usize,
    lines: Vec<Vec<u8>>,
    end: &'static [u8],
}

impl Head {
    fn apply(&mut self, edit: &Edit) {
        let n = self.lines.len();
        match edit {
            Edit::Same => {}
            Edit::Replace(at, line) if n > 0 => self.lines[at % n] = line.clone(),
            Edit::Insert(at, line) => self.lines.insert(at % (n + 1), line.clone()),
            Edit::Remove(at) if n > 0 => {
                self.lines.remove(at % n);
            }
            Edit::Status(status) => self.status = *status,
            Edit::Replace(..) | Edit::Remove(_) => {}
        }
    }

    fn bytes(&self, cut: Option<usize>, tail: &[u8]) -> Vec<u8> {
        let mut bytes = STATUS[self.status].as_bytes().to_vec();
        for line in &self.lines {
            bytes.extend_from_slice(line);
        }
        bytes.extend_from_slice(self.end);
        if let Some(cut) = cut {
            bytes.truncate(cut % (bytes.len() + 1));
        }
        bytes.extend_from_slice(tail);
        bytes
    }
}

fn first_head() -> impl Strategy<Value = Head> {
    (
        prop_oneof![8 => Just(0usize), 2 => 0..STATUS.len()],
        vec(line(), 0..8),
        prop_oneof![8 => Just(&b"\r\n"[..]), 1 => Just(&b"\n"[..])],
    )
        .prop_map(|(status, lines, end)| Head { status, lines, end })
}

/// What a parse gave, comparable.
fn answer(bytes: &[u8], head_request: bool, max_head: usize, scratch: &mut Scratch) -> String {
    let mut buf = BytesMut::from(bytes);
    let parsed = parse_into(
        &mut buf,
        head_request,
        max_head,
        &mut HeaderMap::new(),
        None,
        scratch,
    );
    let left = String::from_utf8_lossy(&buf);
    match parsed {
        Ok(Parsed::Partial) => format!("partial, {left:?} left"),
        Ok(Parsed::Interim) => format!("interim, {left:?} left"),
        Ok(Parsed::Head(head)) => {
            let fields: Vec<_> = head
                .headers
                .iter()
                .map(|(name, value)| format!("{name}={:?}", value.as_bytes()))
                .collect();
            format!(
                "{} {:?} {fields:?} {:?} keep-alive {} upgrade {:?}, {left:?} left",
                head.status, head.version, head.framing, head.keep_alive, head.upgrade
            )
        }
        Err(error) => format!("error {:?}: {error}", error.kind()),
    }
}

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

proptest! {
    #![proptest_config(config())]

    #[test]
    fn the_memory_of_the_last_head_changes_no_answer(
        first in first_head(),
        edits in vec(
            (
                edit(),
                prop::option::weighted(0.1, any::<usize>()),
                any::<bool>(),
                prop::bool::weighted(0.15),
            ),
            1..10,
        ),
        small_limit in prop::option::weighted(0.15, 40usize..300),
    ) {
        let max_head = small_limit.unwrap_or(64 * 1024);
        let mut remembering = Scratch::default();
        let mut head = first;
        // Each response answers a HEAD request or not, as requests come.
        for (step, (edit, cut, body_after, head_request)) in edits.iter().enumerate() {
            let head_request = *head_request;
            if step > 0 {
                head.apply(edit);
            }
            // Sometimes bytes of a body, or of the next response, follow.
            let tail: &[u8] = if *body_after { b"abc" } else { b"" };
            let bytes = head.bytes(*cut, tail);
            let known = answer(&bytes, head_request, max_head, &mut remembering);
            let fresh = answer(&bytes, head_request, max_head, &mut Scratch::default());
            prop_assert_eq!(
                &known,
                &fresh,
                "step {} on {:?}",
                step,
                String::from_utf8_lossy(&bytes)
            );
        }
    }
}

/// The common case, by hand: the second of two heads alike, one line
/// changed, is read from memory and gives what a fresh parse gives, with
/// the values of the repeated lines no longer in the read buffer.
#[test]
fn a_repeated_head_is_read_as_a_fresh_one_and_its_values_are_shared_copies() {
    let first = b"HTTP/1.1 200 OK\r\nServer: nginx\r\nDate: a\r\nContent-Length: 2\r\n\r\nhi";
    let second = b"HTTP/1.1 200 OK\r\nServer: nginx\r\nDate: b\r\nContent-Length: 2\r\n\r\nhi";
    let mut scratch = Scratch::default();
    for bytes in [&first[..], &first[..], &second[..], &second[..]] {
        assert_eq!(
            answer(bytes, false, 1024, &mut scratch),
            answer(bytes, false, 1024, &mut Scratch::default())
        );
    }
    let mut buf = BytesMut::from(&second[..]);
    let start = buf.as_ptr() as usize;
    let end = start + buf.len();
    let Ok(Parsed::Head(head)) = parse_into(
        &mut buf,
        false,
        1024,
        &mut HeaderMap::new(),
        None,
        &mut scratch,
    ) else {
        panic!("no head");
    };
    let inside = |name: &str| {
        let at = head.headers[name].as_bytes().as_ptr() as usize;
        (start..end).contains(&at)
    };
    assert!(!inside("server"), "a repeated line's value is the copy");
    assert!(!inside("content-length"));
    assert_eq!(head.headers["date"], "b");
}

/// A head that comes a third time the same is taken whole from memory,
/// for what it was read as: the same bytes to a HEAD request are read
/// anew (their framing differs), and a head one byte off is not taken.
#[test]
fn the_same_head_again_is_taken_whole_and_only_for_the_same_request_kind() {
    let head = b"HTTP/1.1 200 OK\r\nServer: nginx\r\nDate: a\r\nContent-Length: 2\r\n\r\nhi";
    let mut scratch = Scratch::default();
    for _ in 0..2 {
        answer(head, false, 1024, &mut scratch);
    }
    assert!(scratch.holds_whole(), "every value a copy: kept whole");
    let fresh =
        |bytes: &[u8], head_request| answer(bytes, head_request, 1024, &mut Scratch::default());
    assert_eq!(answer(head, false, 1024, &mut scratch), fresh(head, false));
    assert_eq!(answer(head, true, 1024, &mut scratch), fresh(head, true));
    let other = b"HTTP/1.1 200 OK\r\nServer: nginx\r\nDate: a\r\nContent-Length: 3\r\n\r\nhi!";
    assert_eq!(
        answer(other, false, 1024, &mut scratch),
        fresh(other, false)
    );
    assert_eq!(answer(head, false, 1024, &mut scratch), fresh(head, false));
}
