//! Parsing a response head, and deciding how its body is framed.
//!
//! The head is parsed in place in the connection's read buffer; once it is
//! complete, its bytes are frozen into one `Bytes` and every header value
//! is a slice of it, so no value is copied. Names are `HeaderName`s (the
//! standard ones cost nothing; others are copied, as hyper does).
//!
//! Strict, because a response read two ways by two parties is how a
//! connection gets desynchronised (RFC 9112 §6.3, §11.2): a framing that is
//! not exactly one `Content-Length` of digits or exactly `chunked` is an
//! error, as are both together, and so are bare LF line ends and empty
//! lines before the status line, which `httparse` tolerates.

use std::mem::MaybeUninit;
use std::sync::LazyLock;

use bytes::{Buf, Bytes, BytesMut};
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode, Version};

use super::error::{Error, Kind};
use super::request_head::{list_contains, trim_ows};
use crate::extensions::ReturnHead;

/// At most this many header fields in a head (hyper's default).
pub(crate) const MAX_HEADERS: usize = 100;

/// How a response body is delimited.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Framing {
    /// No body: a response to HEAD, a 1xx, 204, 304, or `Content-Length: 0`.
    Empty,
    /// Exactly this many bytes.
    Length(u64),
    /// `Transfer-Encoding: chunked`.
    Chunked,
    /// Until the backend closes the connection (so it cannot be reused).
    Close,
}

/// A final (or `101`) response head.
#[derive(Debug)]
pub(crate) struct ResponseHead {
    pub(crate) status: StatusCode,
    pub(crate) version: Version,
    /// The end-to-end headers: hop-by-hop ones and those the response's
    /// `Connection` names are left out; `Content-Length` is kept.
    pub(crate) headers: HeaderMap,
    pub(crate) framing: Framing,
    /// Whether the connection may carry another exchange after this one
    /// (HTTP/1.1 without `Connection: close`, or HTTP/1.0 with
    /// `keep-alive`; never when the body ends at the close).
    pub(crate) keep_alive: bool,
    /// The `Upgrade` header, for a `101` (left out of `headers`, being
    /// hop-by-hop): the caller checks it against what it allowed.
    pub(crate) upgrade: Option<HeaderValue>,
}

/// What the read buffer holds.
#[derive(Debug)]
pub(crate) enum Parsed {
    /// Not a complete head yet: read more.
    Partial,
    /// An interim 1xx response (not 101), already removed from the buffer.
    Interim,
    /// A final or `101` head, removed from the buffer; the body follows.
    Head(ResponseHead),
}

/// Parses the head at the start of `buf`, for a request that was a HEAD or
/// not. A complete head is split off the buffer.
#[cfg(test)]
pub(crate) fn parse(
    buf: &mut BytesMut,
    head_request: bool,
    max_head: usize,
) -> Result<Parsed, Error> {
    parse_into(
        buf,
        head_request,
        max_head,
        &mut HeaderMap::new(),
        None,
        &mut Scratch::default(),
    )
}

/// [`parse`], filling the map taken from `spare` (cleared first) rather
/// than a new one: the request's own map, already grown, becomes the
/// response's, and no header map is allocated per exchange. `spare` is
/// left as it was unless a final or `101` head was parsed, and also when
/// `keep` says a response of this status may be retried: the request's
/// head must then survive the exchange, and the response gets a new map.
/// `scratch` is the connection's room for names, reused from exchange to
/// exchange (so a parse neither allocates nor initialises and moves a
/// 100-entry array, and a name the backend sent last time is not parsed
/// again).
pub(crate) fn parse_into(
    buf: &mut BytesMut,
    head_request: bool,
    max_head: usize,
    spare: &mut HeaderMap,
    keep: Option<&ReturnHead>,
    scratch: &mut Scratch,
) -> Result<Parsed, Error> {
    if buf.is_empty() {
        return Ok(Parsed::Partial);
    }
    if buf[0] == b'\r' || buf[0] == b'\n' {
        // httparse skips them; a stray line end after a body is a sign of a
        // backend that miscounted its body, so it is not passed over.
        return Err(Error::malformed("empty line before the status line"));
    }
    let scanned = match scan(buf, head_request, scratch)? {
        Some(scanned) => scanned,
        None if buf.len() >= max_head => return Err(Error::new(Kind::HeadTooLarge)),
        None => return Ok(Parsed::Partial),
    };
    if scanned.len > max_head {
        return Err(Error::new(Kind::HeadTooLarge));
    }
    if (100..200).contains(&scanned.code) && scanned.code != 101 {
        buf.advance(scanned.len);
        return Ok(Parsed::Interim);
    }
    let status =
        StatusCode::from_u16(scanned.code).map_err(|_| Error::malformed("invalid status code"))?;
    // The head's bytes are kept (shared with the values cut from them) only
    // when some value is cut from them: a head whose every value is a copy
    // from the last one (a repeated head nearly always) is passed over, and
    // the buffer's reference count (a locked instruction each way) is
    // neither taken nor given back.
    let kept = if scratch.whole.taken {
        &scratch.whole.kept
    } else {
        &scratch.kept
    };
    let cut = scanned.upgrade.is_some() || kept.iter().any(|(.., copy)| copy.is_none());
    let head = if cut {
        buf.split_to(scanned.len).freeze()
    } else {
        buf.advance(scanned.len);
        Bytes::new()
    };
    let value = |(start, end): (usize, usize)| {
        HeaderValue::from_maybe_shared(head.slice(start..end))
            .map_err(|_| Error::malformed("invalid header value"))
    };
    let fields = if scratch.whole.taken {
        scratch.whole.kept.len()
    } else {
        scratch.kept.len()
    };
    let mut headers = match keep {
        Some(keep) if keep.wants(status) => HeaderMap::with_capacity(fields),
        _ => {
            // Past this point a failure would leave the request without
            // its headers, which a retry needs. None comes: httparse
            // accepts exactly the value bytes `HeaderValue` does (tab,
            // space, visible ASCII, obs-text; the test
            // `httparse_and_header_value_agree_on_every_byte` holds them
            // to it), and the status was checked above.
            let mut headers = std::mem::take(spare);
            headers.clear();
            headers.reserve(fields);
            headers
        }
    };
    if scratch.whole.taken {
        // The head kept whole: its fields are cloned straight from there.
        for (name, start, end, copy) in &scratch.whole.kept {
            let value = match copy {
                Some(copy) => copy.clone(),
                None => value((*start, *end))?,
            };
            headers.append(name.clone(), value);
        }
    } else {
        for (name, start, end, copy) in scratch.kept.drain(..) {
            let value = match copy {
                Some(copy) => copy,
                None => value((start, end))?,
            };
            headers.append(name, value);
        }
    }
    Ok(Parsed::Head(ResponseHead {
        status,
        version: scanned.version,
        headers,
        framing: scanned.framing,
        keep_alive: scanned.keep_alive,
        upgrade: scanned.upgrade.map(value).transpose()?,
    }))
}

/// Whether `buf` can hold a complete head (or trailer section): whether it
/// has an empty line (LF, optional CR, LF), looked for from `searched` on,
/// which is then moved to where the next look starts. Parsing only then
/// keeps a head that trickles in a byte per read from costing a parse of
/// the whole buffer per byte.
///
/// A head nearly always ends in CRLF CRLF, which one vectorised search
/// finds; only without it are the line ends looked at one by one (for a
/// bare LF, which the parse then refuses, rather than waiting for more).
pub(crate) fn has_empty_line(buf: &[u8], searched: &mut usize) -> bool {
    static CRLF_CRLF: LazyLock<memchr::memmem::Finder<'static>> =
        LazyLock::new(|| memchr::memmem::Finder::new(b"\r\n\r\n"));
    let from = (*searched).min(buf.len()).saturating_sub(3);
    *searched = buf.len();
    let rest = &buf[from..];
    CRLF_CRLF.find(rest).is_some()
        || memchr::memchr_iter(b'\n', rest).any(|i| {
            let next = &rest[i + 1..];
            next.first() == Some(&b'\n') || next.starts_with(b"\r\n")
        })
}

/// What one pass of httparse found, as offsets into the buffer so that the
/// buffer can be split and frozen once the parser no longer borrows it.
#[derive(Clone, Copy, Debug)]
struct Scanned {
    len: usize,
    code: u16,
    version: Version,
    framing: Framing,
    keep_alive: bool,
    upgrade: Option<(usize, usize)>,
}

/// A header kept for the response: its name, where its value lies in the
/// head, and the value itself when its line is the one the last head had
/// at its place (a copy made once, shared from response to response).
pub(crate) type Entry = (HeaderName, usize, usize, Option<HeaderValue>);

/// How many bytes a connection keeps of the lines of the last head (and
/// the values copied from them): a line beyond that is not remembered, so
/// a backend's heads cost a connection at most this much.
const REMEMBERED: usize = 8 * 1024;

/// A connection's memory of the last head it read, and its room for the
/// head being read (kept in the connection, which is itself boxed, so the
/// room moves with it for free).
///
/// A backend sends much the same head response after response: the same
/// status line, the same fields in the same order, most with the same
/// values (`Server`, `Content-Type`, `Connection`; `Date` changes once a
/// second). A line byte for byte equal to the one at its place last time
/// is that line again: it was checked then (httparse, and no bare LF), so
/// it is taken as it was, with its role, its name and, once it has come
/// twice, its value, with no parse, no check and no copy. Every other line
/// is parsed by httparse on its own. Anything out of the ordinary (another
/// status line, a line that does not parse on its own, a head not complete
/// yet, a `Connection` line naming a passed-on field, any error) falls back
/// to parsing the whole head as if nothing were known, so what is accepted,
/// and how, is what the whole parse decides (a property test holds the two
/// to the same answers).
#[derive(Debug, Default)]
pub(crate) struct Scratch {
    /// This head's kept headers, as they are found.
    kept: Vec<Entry>,
    /// The last final head's status line as sent (CRLF included), with
    /// what it says; empty before the first.
    status: Vec<u8>,
    code: u16,
    version: Version,
    /// The fields of the last head, in order.
    known: Vec<Known>,
    /// The bytes `known` holds (lines and copied values), against
    /// [`REMEMBERED`].
    remembered: usize,
    /// Room for parsing one line on its own.
    line: Vec<u8>,
    /// The last head read whole from memory in which every kept value was
    /// a copy (see [`Whole`]).
    whole: Whole,
}

/// The last head every line of which was known, when every value it keeps
/// is a shared copy: its bytes (at most [`WHOLE_MAX`]), what they were read
/// as, and the kept fields. A backend sends the very same head again until
/// a value changes (`Date`, once a second): those bytes again are that head
/// again, taken with one comparison of the whole head instead of one per
/// line and the framing worked out anew. What it holds is what reading
/// those bytes line by line gives, so it is right for as long as the same
/// bytes come (the property test of the memory holds it to a fresh parse).
#[derive(Debug, Default)]
struct Whole {
    bytes: Vec<u8>,
    /// Whether it was read for a HEAD request, and as what.
    read: Option<(bool, Scanned)>,
    kept: Vec<Entry>,
    /// Whether the head being read is this one: its kept fields are then
    /// here, not in [`Scratch::kept`].
    taken: bool,
}

/// The longest head kept whole: a connection holds this much beside
/// [`REMEMBERED`].
const WHOLE_MAX: usize = 1024;

/// A field of the last head (see [`Scratch`]).
#[derive(Debug)]
struct Known {
    role: Role,
    /// The name, for a field that is passed on (`Kept`, `ContentLength`).
    name: Option<HeaderName>,
    /// The line as sent, CRLF included; empty when not remembered.
    line: Vec<u8>,
    name_len: usize,
    /// Where the value lies in the line.
    value: (usize, usize),
    /// The value, copied once the line came a second time.
    copy: Option<HeaderValue>,
}

/// A field as the framing sees it.
struct Field<'a> {
    role: Role,
    name: Option<HeaderName>,
    value: &'a [u8],
    /// Where the value lies in the buffer.
    at: (usize, usize),
    copy: Option<HeaderValue>,
}

/// The framing fields of a head, as they are found.
#[derive(Default)]
struct Framer {
    content_length: Option<u64>,
    chunked: bool,
    close: bool,
    keep_alive_token: bool,
    upgrade: Option<(usize, usize)>,
    /// Whether a `Connection` line names a field other than the hop-by-hop
    /// ones (which are dropped anyway): only then is each field looked up
    /// in those lines.
    lists_others: bool,
}

impl Framer {
    fn add(&mut self, field: Field<'_>, kept: &mut Vec<Entry>) -> Result<(), Error> {
        let keep = |kept: &mut Vec<Entry>, field: Field<'_>| {
            if let Some(name) = field.name {
                kept.push((name, field.at.0, field.at.1, field.copy));
            }
        };
        match field.role {
            Role::ContentLength => {
                if self.content_length.is_some() {
                    return Err(Error::malformed("content-length repeated"));
                }
                self.content_length = Some(parse_length(field.value)?);
                keep(kept, field);
            }
            Role::TransferEncoding => {
                if self.chunked {
                    return Err(Error::malformed("transfer-encoding repeated"));
                }
                // Exactly `chunked`: another coding before it (`gzip,
                // chunked`) would reach the client undecoded once the
                // hop-by-hop header is dropped, and anything else cannot be
                // framed at all.
                if !trim_ows(field.value).eq_ignore_ascii_case(b"chunked") {
                    return Err(Error::malformed("transfer-encoding other than chunked"));
                }
                self.chunked = true;
            }
            Role::Connection => {
                for token in field.value.split(|&b| b == b',').map(trim_ows) {
                    if token.eq_ignore_ascii_case(b"close") {
                        self.close = true;
                    } else if token.eq_ignore_ascii_case(b"keep-alive") {
                        self.keep_alive_token = true;
                    } else if !token.is_empty()
                        && matches!(role(token), Role::Kept | Role::ContentLength)
                    {
                        self.lists_others = true;
                    }
                }
            }
            Role::Upgrade if self.upgrade.is_none() => self.upgrade = Some(field.at),
            Role::Kept => keep(kept, field),
            Role::Upgrade | Role::HopByHop => {}
        }
        Ok(())
    }

    fn finish(
        self,
        len: usize,
        code: u16,
        version: Version,
        head_request: bool,
    ) -> Result<Scanned, Error> {
        if self.chunked && self.content_length.is_some() {
            return Err(Error::malformed(
                "both transfer-encoding and content-length",
            ));
        }
        let framing = framing(head_request, code, self.content_length, self.chunked);
        let keep_alive = framing != Framing::Close
            && !self.close
            && (version == Version::HTTP_11 || self.keep_alive_token);
        Ok(Scanned {
            len,
            code,
            version,
            framing,
            keep_alive,
            upgrade: self.upgrade,
        })
    }
}

impl Scratch {
    /// The role, name and (when it came before) value of the `index`th
    /// field of the head, `line` its line as sent, with its name's length
    /// and where its value lies in it; the line is remembered for the next
    /// head.
    fn learn(
        &mut self,
        index: usize,
        line: &[u8],
        name_len: usize,
        value: (usize, usize),
    ) -> Result<(Role, Option<HeaderName>, Option<HeaderValue>), Error> {
        if let Some(known) = self.known.get_mut(index) {
            if known.line == line {
                return Ok((known.role, known.name.clone(), known.copy.clone()));
            }
            if known.line.get(..known.name_len) == Some(&line[..name_len]) {
                // The same name, another value (`Date`, a length).
                let (role, name) = (known.role, known.name.clone());
                self.remember(index, line, name_len, value);
                return Ok((role, name, None));
            }
        }
        let raw = &line[..name_len];
        let role = role(raw);
        let name = match role {
            Role::Kept | Role::ContentLength => Some(
                HeaderName::from_bytes(raw).map_err(|_| Error::malformed("invalid header name"))?,
            ),
            _ => None,
        };
        if index == self.known.len() {
            self.known.push(Known {
                role,
                name: None,
                line: Vec::new(),
                name_len: 0,
                value: (0, 0),
                copy: None,
            });
        }
        if let Some(known) = self.known.get_mut(index) {
            known.role = role;
            known.name.clone_from(&name);
            self.remember(index, line, name_len, value);
        }
        Ok((role, name, None))
    }

    /// Puts `line` in the `index`th place (which exists), within
    /// [`REMEMBERED`].
    fn remember(&mut self, index: usize, line: &[u8], name_len: usize, value: (usize, usize)) {
        let known = &mut self.known[index];
        let before = known.line.capacity() + known.copy.as_ref().map_or(0, HeaderValue::len);
        known.copy = None;
        known.line.clear();
        if self.remembered - before + line.len().max(known.line.capacity()) <= REMEMBERED {
            known.line.reserve_exact(line.len());
            known.line.extend_from_slice(line);
            known.name_len = name_len;
            known.value = value;
        } else {
            known.line = Vec::new();
        }
        self.remembered = self.remembered - before + known.line.capacity();
    }

    /// Reads the head at the start of `buf` from what the last head was
    /// (see [`Scratch`]); `None` when the whole parse must decide.
    fn scan_known(&mut self, buf: &[u8], head_request: bool) -> Option<Scanned> {
        if let Some((for_head, scanned)) = self.whole.read
            && for_head == head_request
            && buf.starts_with(&self.whole.bytes)
        {
            self.whole.taken = true;
            return Some(scanned);
        }
        self.whole.taken = false;
        if self.status.is_empty() || !buf.starts_with(&self.status) {
            return None;
        }
        self.kept.clear();
        let mut framer = Framer::default();
        let mut pos = self.status.len();
        // Whether every line so far was the one at its place last time.
        let mut all_known = true;
        for index in 0..=MAX_HEADERS {
            let rest = &buf[pos..];
            if rest.starts_with(b"\r\n") {
                if framer.lists_others {
                    return None;
                }
                let scanned = framer
                    .finish(pos + 2, self.code, self.version, head_request)
                    .ok()?;
                if all_known {
                    self.keep_whole(&buf[..pos + 2], head_request, scanned);
                }
                return Some(scanned);
            }
            if index == MAX_HEADERS {
                return None;
            }
            let same = self
                .known
                .get(index)
                .is_some_and(|known| !known.line.is_empty() && rest.starts_with(&known.line));
            let (field, len) = if same {
                let known = &mut self.known[index];
                if known.copy.is_none()
                    && known.name.is_some()
                    && self.remembered + known.value.1 - known.value.0 <= REMEMBERED
                {
                    // Its second time: worth a copy of its own.
                    known.copy =
                        HeaderValue::from_bytes(&known.line[known.value.0..known.value.1]).ok();
                    self.remembered += known.copy.as_ref().map_or(0, HeaderValue::len);
                }
                let at = (pos + known.value.0, pos + known.value.1);
                let field = Field {
                    role: known.role,
                    name: known.name.clone(),
                    value: &buf[at.0..at.1],
                    at,
                    copy: known.copy.clone(),
                };
                (field, known.line.len())
            } else {
                all_known = false;
                let len = memchr::memchr(b'\n', rest)? + 1;
                let line = &rest[..len];
                let (name_len, value) = parse_line(line, &mut self.line)?;
                let (role, name, copy) = self.learn(index, line, name_len, value).ok()?;
                let at = (pos + value.0, pos + value.1);
                let field = Field {
                    role,
                    name,
                    value: &buf[at.0..at.1],
                    at,
                    copy,
                };
                (field, len)
            };
            framer.add(field, &mut self.kept).ok()?;
            pos += len;
        }
        None
    }
}

impl Scratch {
    /// Whether a head is kept whole (for a test).
    #[cfg(test)]
    pub(crate) fn holds_whole(&self) -> bool {
        self.whole.read.is_some()
    }

    /// Keeps `head`, read from memory line by line as `scanned`, whole,
    /// when every value it keeps is a copy (so that none points into the
    /// read buffer) and it is not too long.
    fn keep_whole(&mut self, head: &[u8], head_request: bool, scanned: Scanned) {
        if head.len() > WHOLE_MAX || self.kept.iter().any(|entry| entry.3.is_none()) {
            return;
        }
        self.whole.bytes.clear();
        self.whole.bytes.extend_from_slice(head);
        self.whole.kept.clone_from(&self.kept);
        self.whole.read = Some((head_request, scanned));
    }
}

/// Parses one header line (`line`, its CRLF included) on its own with
/// httparse, in `room`: its name's length and where its value lies in it,
/// or `None` when it is not exactly one well-formed field line.
fn parse_line(line: &[u8], room: &mut Vec<u8>) -> Option<(usize, (usize, usize))> {
    if line.len() < 3 || line[line.len() - 2] != b'\r' {
        return None;
    }
    room.clear();
    room.extend_from_slice(line);
    room.extend_from_slice(b"\r\n");
    let mut one = [httparse::EMPTY_HEADER; 1];
    let Ok(httparse::Status::Complete((used, [field]))) = httparse::parse_headers(room, &mut one)
    else {
        return None;
    };
    let base = room.as_ptr() as usize;
    if used != room.len() || field.name.as_ptr() as usize != base {
        return None;
    }
    let start = (field.value.as_ptr() as usize).checked_sub(base)?;
    let end = start + field.value.len();
    (end <= line.len() - 2).then_some((field.name.len(), (start, end)))
}

fn scan(buf: &[u8], head_request: bool, scratch: &mut Scratch) -> Result<Option<Scanned>, Error> {
    if let Some(scanned) = scratch.scan_known(buf, head_request) {
        return Ok(Some(scanned));
    }
    scratch.kept.clear();
    // Uninitialised slots: a head of a few fields does not pay for
    // writing all of them first.
    let mut fields = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
    let mut response = httparse::Response::new(&mut []);
    let len = match httparse::ParserConfig::default().parse_response_with_uninit_headers(
        &mut response,
        buf,
        &mut fields,
    ) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => {
            return Err(Error::malformed("more than 100 header fields"));
        }
        Err(error) => return Err(Error::malformed("invalid head").with_source(error)),
    };
    if has_bare_lf(&buf[..len]) {
        return Err(Error::malformed("line ended by a bare LF"));
    }
    let code = response.code.unwrap_or(0);
    let version = match response.version {
        Some(0) => Version::HTTP_10,
        _ => Version::HTTP_11,
    };
    let fields: &[httparse::Header<'_>] = response.headers;
    let offset = |slice: &[u8]| {
        let start = slice.as_ptr() as usize - buf.as_ptr() as usize;
        (start, start + slice.len())
    };
    let mut framer = Framer::default();
    for (index, field) in fields.iter().enumerate() {
        let at = offset(field.value);
        let (role, name, copy) = match line_of(buf, &buf[..len], field, at) {
            Some((from, line)) => {
                scratch.learn(index, line, field.name.len(), (at.0 - from, at.1 - from))?
            }
            None => {
                // Not a line that can be remembered: known no more.
                scratch.forget(index);
                let raw = field.name.as_bytes();
                let role = role(raw);
                let name = match role {
                    Role::Kept | Role::ContentLength => Some(
                        HeaderName::from_bytes(raw)
                            .map_err(|_| Error::malformed("invalid header name"))?,
                    ),
                    _ => None,
                };
                (role, name, None)
            }
        };
        let field = Field {
            role,
            name,
            value: field.value,
            at,
            copy,
        };
        framer.add(field, &mut scratch.kept)?;
    }
    let lists_others = framer.lists_others;
    let scanned = framer.finish(len, code, version, head_request)?;
    if lists_others {
        // Rare: a `Connection` line naming an end-to-end field makes it
        // hop-by-hop for this response.
        scratch
            .kept
            .retain(|(name, ..)| !listed_in_connection(fields, name.as_str().as_bytes()));
    }
    if !(100..200).contains(&code) || code == 101 {
        scratch.remember_status(buf, code, version);
    }
    Ok(Some(scanned))
}

/// The line of `field` in the head `head` of `buf` (from the start of its
/// name to its LF), with where it starts; `None` if the value does not lie
/// in it.
fn line_of<'a>(
    buf: &[u8],
    head: &'a [u8],
    field: &httparse::Header<'_>,
    value: (usize, usize),
) -> Option<(usize, &'a [u8])> {
    let from = (field.name.as_ptr() as usize).checked_sub(buf.as_ptr() as usize)?;
    let to = from + memchr::memchr(b'\n', head.get(from..)?)? + 1;
    (from + field.name.len() <= value.0 && value.1 <= to - 2).then(|| (from, &head[from..to]))
}

impl Scratch {
    /// The `index`th place holds no line.
    fn forget(&mut self, index: usize) {
        if let Some(known) = self.known.get_mut(index) {
            self.remembered -=
                known.line.capacity() + known.copy.as_ref().map_or(0, HeaderValue::len);
            known.line = Vec::new();
            known.copy = None;
        }
    }

    /// Remembers the status line at the start of `buf`, which says `code`
    /// and `version`.
    fn remember_status(&mut self, buf: &[u8], code: u16, version: Version) {
        let Some(end) = memchr::memchr(b'\n', buf) else {
            return;
        };
        let line = &buf[..=end];
        if self.status != line {
            self.status.clear();
            // A status line of unusual length is not worth the room.
            if line.len() <= 256 {
                self.status.extend_from_slice(line);
            }
        }
        (self.code, self.version) = (code, version);
    }
}

/// The body framing of a response (RFC 9112 §6.3), once its headers are
/// known to be unambiguous.
pub(crate) fn framing(
    head_request: bool,
    code: u16,
    content_length: Option<u64>,
    chunked: bool,
) -> Framing {
    if head_request || code < 200 || code == 204 || code == 304 {
        return Framing::Empty;
    }
    match (chunked, content_length) {
        (true, _) => Framing::Chunked,
        (false, Some(0)) => Framing::Empty,
        (false, Some(length)) => Framing::Length(length),
        (false, None) => Framing::Close,
    }
}

/// A `Content-Length` value: digits only (no sign, no list, no spaces
/// inside), and no more than a `u64` holds.
fn parse_length(value: &[u8]) -> Result<u64, Error> {
    if value.is_empty() {
        return Err(Error::malformed("empty content-length"));
    }
    value.iter().try_fold(0u64, |length, &b| {
        if !b.is_ascii_digit() {
            return Err(Error::malformed("content-length not all digits"));
        }
        length
            .checked_mul(10)
            .and_then(|length| length.checked_add(u64::from(b - b'0')))
            .ok_or_else(|| Error::malformed("content-length too large"))
    })
}

/// Whether a line in `head` ends with LF alone.
///
/// One pass over every byte pair with no early exit, which the compiler
/// vectorises: cheaper over a head of a few hundred bytes than stopping
/// at each LF.
pub(super) fn has_bare_lf(head: &[u8]) -> bool {
    let Some((&first, rest)) = head.split_first() else {
        return false;
    };
    let bare = rest.iter().zip(head).fold(false, |bare, (&b, &before)| {
        bare | ((b == b'\n') & (before != b'\r'))
    });
    bare || first == b'\n'
}

/// What a response field means to the proxy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Role {
    ContentLength,
    TransferEncoding,
    Connection,
    Upgrade,
    /// Describes one connection (as in `forward::headers`): never passed on
    /// to the client.
    HopByHop,
    /// Passed on.
    Kept,
}

/// The role of the field `name`, any case. Dispatches on the length first,
/// so that most names are told apart by one comparison.
fn role(name: &[u8]) -> Role {
    let is = |known: &[u8]| name.eq_ignore_ascii_case(known);
    match name.len() {
        14 if is(b"content-length") => Role::ContentLength,
        17 if is(b"transfer-encoding") => Role::TransferEncoding,
        10 if is(b"connection") => Role::Connection,
        7 if is(b"upgrade") => Role::Upgrade,
        2 if is(b"te") => Role::HopByHop,
        7 if is(b"trailer") => Role::HopByHop,
        10 if is(b"keep-alive") => Role::HopByHop,
        16 if is(b"proxy-connection") => Role::HopByHop,
        18 if is(b"proxy-authenticate") => Role::HopByHop,
        19 if is(b"proxy-authorization") => Role::HopByHop,
        _ => Role::Kept,
    }
}

fn listed_in_connection(fields: &[httparse::Header<'_>], name: &[u8]) -> bool {
    fields.iter().any(|field| {
        field.name.eq_ignore_ascii_case("connection") && list_contains(field.value, name)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_all(bytes: &[u8], head_request: bool) -> Result<Parsed, Error> {
        let mut buf = BytesMut::from(bytes);
        parse(&mut buf, head_request, 64 * 1024)
    }

    fn head(bytes: &[u8], head_request: bool) -> Result<ResponseHead, Error> {
        match parse_all(bytes, head_request)? {
            Parsed::Head(head) => Ok(head),
            other => panic!("not a head: {other:?}"),
        }
    }

    /// `parse_into` takes the request's header map before it builds the
    /// values, counting on a value httparse accepted never being refused by
    /// `HeaderValue` (a refusal would leave a retry without the request's
    /// headers). Every byte, inside a value and at its ends, with and
    /// without httparse's SIMD paths (values long enough for them).
    #[test]
    fn httparse_and_header_value_agree_on_every_byte() {
        for byte in 0..=255u8 {
            for value in [
                vec![b'a', byte, b'a'],
                [b'a'; 40]
                    .into_iter()
                    .chain([byte])
                    .chain([b'a'; 40])
                    .collect(),
            ] {
                let mut bytes = b"HTTP/1.1 200 OK\r\nx-v: ".to_vec();
                bytes.extend_from_slice(&value);
                bytes.extend_from_slice(b"\r\ncontent-length: 0\r\n\r\n");
                let mut fields = [httparse::EMPTY_HEADER; 4];
                let mut response = httparse::Response::new(&mut fields);
                let httparse_accepts =
                    matches!(response.parse(&bytes), Ok(httparse::Status::Complete(_)));
                let header_value_accepts = HeaderValue::from_bytes(&value).is_ok();
                if httparse_accepts {
                    assert!(
                        header_value_accepts,
                        "byte {byte:#04x}: httparse accepts, HeaderValue refuses"
                    );
                }
            }
        }
    }

    fn framing_of(fields: &str, head_request: bool, status: u16) -> Result<Framing, String> {
        let bytes = format!("HTTP/1.1 {status} X\r\n{fields}\r\n");
        head(bytes.as_bytes(), head_request)
            .map(|head| head.framing)
            .map_err(|error| error.to_string())
    }

    #[test]
    fn framing_decisions() {
        use Framing::*;
        let table: &[(&str, bool, u16, Option<Framing>)] = &[
            ("content-length: 5\r\n", false, 200, Some(Length(5))),
            ("Content-Length: 0\r\n", false, 200, Some(Empty)),
            ("content-length: 5\r\n", true, 200, Some(Empty)),
            ("content-length: 5\r\n", false, 204, Some(Empty)),
            ("content-length: 5\r\n", false, 304, Some(Empty)),
            ("transfer-encoding: chunked\r\n", false, 200, Some(Chunked)),
            ("Transfer-Encoding: CHUNKED \r\n", false, 500, Some(Chunked)),
            ("transfer-encoding: chunked\r\n", true, 200, Some(Empty)),
            ("", false, 200, Some(Close)),
            ("", false, 404, Some(Close)),
            ("", false, 204, Some(Empty)),
            ("", true, 200, Some(Empty)),
            (
                "content-length: 18446744073709551615\r\n",
                false,
                200,
                Some(Length(u64::MAX)),
            ),
            // Ambiguous or unreadable: refused, whatever the status.
            ("content-length: 18446744073709551616\r\n", false, 200, None),
            (
                "transfer-encoding: chunked\r\ncontent-length: 5\r\n",
                false,
                200,
                None,
            ),
            (
                "content-length: 5\r\ntransfer-encoding: chunked\r\n",
                true,
                200,
                None,
            ),
            (
                "content-length: 5\r\ncontent-length: 5\r\n",
                false,
                200,
                None,
            ),
            (
                "content-length: 5\r\ncontent-length: 6\r\n",
                false,
                200,
                None,
            ),
            ("content-length: 5, 5\r\n", false, 200, None),
            ("content-length: +5\r\n", false, 200, None),
            ("content-length: -1\r\n", false, 200, None),
            ("content-length: 0x5\r\n", false, 200, None),
            ("content-length: 5 5\r\n", false, 200, None),
            ("content-length:\r\n", false, 200, None),
            ("transfer-encoding: \"chunked\"\r\n", false, 200, None),
            ("transfer-encoding: xchunked\r\n", false, 200, None),
            ("transfer-encoding: chunked, gzip\r\n", false, 200, None),
            ("transfer-encoding: gzip, chunked\r\n", false, 200, None),
            ("transfer-encoding: chunked, chunked\r\n", false, 200, None),
            (
                "transfer-encoding: chunked\r\ntransfer-encoding: chunked\r\n",
                false,
                200,
                None,
            ),
            ("transfer-encoding: identity\r\n", false, 200, None),
            ("transfer-encoding: chunked;q=1\r\n", false, 200, None),
        ];
        for (fields, head_request, status, expected) in table {
            let got = framing_of(fields, *head_request, *status);
            match expected {
                Some(framing) => assert_eq!(got.as_ref(), Ok(framing), "{fields:?} {status}"),
                None => assert!(got.is_err(), "{fields:?} {status} accepted as {got:?}"),
            }
        }
    }

    #[test]
    fn keep_alive_follows_the_version_and_connection() {
        let cases: &[(&str, bool)] = &[
            ("HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n", true),
            (
                "HTTP/1.1 200 OK\r\nconnection: Close\r\ncontent-length: 0\r\n\r\n",
                false,
            ),
            (
                "HTTP/1.1 200 OK\r\nconnection: x, close\r\ncontent-length: 0\r\n\r\n",
                false,
            ),
            ("HTTP/1.0 200 OK\r\ncontent-length: 0\r\n\r\n", false),
            (
                "HTTP/1.0 200 OK\r\nconnection: keep-alive\r\ncontent-length: 0\r\n\r\n",
                true,
            ),
            ("HTTP/1.1 200 OK\r\n\r\n", false),
        ];
        for (bytes, keep_alive) in cases {
            let head = head(bytes.as_bytes(), false).unwrap();
            assert_eq!(head.keep_alive, *keep_alive, "{bytes:?}");
        }
        let head = head(b"HTTP/1.0 200 OK\r\ncontent-length: 0\r\n\r\n", false).unwrap();
        assert_eq!(head.version, Version::HTTP_10);
    }

    #[test]
    fn hop_by_hop_and_connection_listed_headers_are_left_out() {
        let head = head(
            b"HTTP/1.1 101 Switching Protocols\r\n\
              Connection: upgrade, X-Internal\r\n\
              Upgrade: websocket\r\n\
              Keep-Alive: timeout=5\r\n\
              Proxy-Connection: keep-alive\r\n\
              X-Internal: secret\r\n\
              Trailer: x-sum\r\n\
              Proxy-Authenticate: Basic\r\n\
              Sec-WebSocket-Accept: abc\r\n\
              X-Kept: 1\r\n\
              x-kept: 2\r\n\r\n",
            false,
        )
        .unwrap();
        assert_eq!(head.status, StatusCode::SWITCHING_PROTOCOLS);
        assert_eq!(head.upgrade.as_ref().unwrap(), "websocket");
        let names: Vec<&str> = head.headers.keys().map(|n| n.as_str()).collect();
        assert_eq!(names, ["sec-websocket-accept", "x-kept"]);
        let kept: Vec<_> = head.headers.get_all("x-kept").iter().collect();
        assert_eq!(kept, ["1", "2"]);
        let head = super::tests::head(
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\ncontent-type: text/plain\r\n\r\n",
            false,
        )
        .unwrap();
        assert!(head.headers.get("transfer-encoding").is_none());
        let head =
            super::tests::head(b"HTTP/1.1 200 OK\r\nContent-Length: 12\r\n\r\n", false).unwrap();
        assert_eq!(head.headers["content-length"], "12");
    }

    #[test]
    fn values_share_the_read_buffer() {
        let mut buf =
            BytesMut::from(&b"HTTP/1.1 200 OK\r\nx-a: hello\r\ncontent-length: 2\r\n\r\nhi"[..]);
        let start = buf.as_ptr() as usize;
        let Parsed::Head(head) = parse(&mut buf, false, 1024).unwrap() else {
            panic!("no head");
        };
        let value = head.headers["x-a"].as_bytes().as_ptr() as usize;
        assert_eq!(value - start, b"HTTP/1.1 200 OK\r\nx-a: ".len());
        assert_eq!(&buf[..], b"hi");
    }

    #[test]
    fn interim_responses_are_removed_and_partial_heads_wait() {
        let mut buf =
            BytesMut::from(&b"HTTP/1.1 103 Early Hints\r\nlink: </a>\r\n\r\nHTTP/1.1 2"[..]);
        assert!(matches!(parse(&mut buf, false, 1024), Ok(Parsed::Interim)));
        assert_eq!(&buf[..], b"HTTP/1.1 2");
        assert!(matches!(parse(&mut buf, false, 1024), Ok(Parsed::Partial)));
        let mut empty = BytesMut::new();
        assert!(matches!(
            parse(&mut empty, false, 1024),
            Ok(Parsed::Partial)
        ));
    }

    #[test]
    fn the_head_limit_holds_for_partial_and_complete_heads() {
        let long = format!("HTTP/1.1 200 OK\r\nx-long: {}\r\n", "a".repeat(200));
        let mut buf = BytesMut::from(long.as_bytes());
        let error = parse(&mut buf, false, 100).unwrap_err();
        assert_eq!(error.kind(), Kind::HeadTooLarge);
        let complete = format!("{long}\r\n");
        let mut buf = BytesMut::from(complete.as_bytes());
        assert_eq!(
            parse(&mut buf, false, 150).unwrap_err().kind(),
            Kind::HeadTooLarge
        );
        let mut buf = BytesMut::from(complete.as_bytes());
        assert!(matches!(parse(&mut buf, false, 1024), Ok(Parsed::Head(_))));
        let many: String = (0..101).map(|i| format!("x-{i}: 1\r\n")).collect();
        let bytes = format!("HTTP/1.1 200 OK\r\n{many}\r\n");
        assert_eq!(
            parse_all(bytes.as_bytes(), false).unwrap_err().kind(),
            Kind::Malformed
        );
    }

    #[test]
    fn httparse_and_our_checks_refuse_what_could_be_read_two_ways() {
        let bad: &[&[u8]] = &[
            // Obsolete line folding.
            b"HTTP/1.1 200 OK\r\nx-a: 1\r\n folded\r\ncontent-length: 0\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nx-a: 1\r\n\tfolded\r\ncontent-length: 0\r\n\r\n",
            // Bare CR, bare LF, NUL, DEL.
            b"HTTP/1.1 200 OK\r\nx-a: 1\rcontent-length: 0\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nx-a: 1\ncontent-length: 0\r\n\r\n",
            b"HTTP/1.1 200 OK\ncontent-length: 0\r\n\r\n",
            b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\n",
            b"HTTP/1.1 200 OK\r\nx-a: 1\x002\r\ncontent-length: 0\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nx-a: 1\x7f\r\ncontent-length: 0\r\n\r\n",
            // A space before the colon, an empty name, a bad version.
            b"HTTP/1.1 200 OK\r\ncontent-length : 0\r\n\r\n",
            b"HTTP/1.1 200 OK\r\n: 0\r\n\r\n",
            b"HTTP/2.0 200 OK\r\ncontent-length: 0\r\n\r\n",
            b"HTTP/1.1 2000 OK\r\n\r\n",
            b"HTTP/1.1  200 OK\r\n\r\n",
            // Empty lines before the status line.
            b"\r\nHTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n",
            b"\nHTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n",
            b"hello",
        ];
        for bytes in bad {
            let result = parse_all(bytes, false);
            assert!(
                matches!(&result, Err(e) if e.kind() == Kind::Malformed),
                "{:?} gave {result:?}",
                String::from_utf8_lossy(bytes)
            );
        }
    }

    #[test]
    fn an_empty_line_is_found_across_reads() {
        let mut searched = 0;
        let mut buf = b"HTTP/1.1 200 OK\r\nx: 1\r".to_vec();
        assert!(!has_empty_line(&buf, &mut searched));
        buf.extend_from_slice(b"\n\r");
        assert!(!has_empty_line(&buf, &mut searched));
        buf.extend_from_slice(b"\n");
        assert!(has_empty_line(&buf, &mut searched));
        assert!(has_empty_line(b"a\n\n", &mut 0));
        assert!(!has_empty_line(b"a\r\n\r", &mut 0));
        assert!(!has_empty_line(b"", &mut 0));
    }

    fn head_with(scratch: &mut Scratch, bytes: &[u8]) -> ResponseHead {
        let mut buf = BytesMut::from(bytes);
        match parse_into(
            &mut buf,
            false,
            64 * 1024,
            &mut HeaderMap::new(),
            None,
            scratch,
        ) {
            Ok(Parsed::Head(head)) => head,
            other => panic!("not a head: {other:?}"),
        }
    }

    fn names_and_values(head: &ResponseHead) -> Vec<(String, String)> {
        head.headers
            .iter()
            .map(|(name, value)| (name.to_string(), value.to_str().unwrap_or("?").to_owned()))
            .collect()
    }

    #[test]
    fn names_known_from_the_last_head_are_taken_only_where_they_match() {
        let mut scratch = Scratch::default();
        let first = head_with(
            &mut scratch,
            b"HTTP/1.1 200 OK\r\nX-One: a\r\nContent-Length: 0\r\nX-Three: 3\r\n\r\n",
        );
        assert_eq!(
            names_and_values(&first),
            [("x-one", "a"), ("content-length", "0"), ("x-three", "3")]
                .map(|(n, v)| (n.to_owned(), v.to_owned()))
        );
        // Same first name in another case, then a different one in the
        // second place, and the third again where the cache lost it.
        let second = head_with(
            &mut scratch,
            b"HTTP/1.1 200 OK\r\nx-ONE: b\r\nX-Two: c\r\nx-three: 4\r\n\r\n",
        );
        assert_eq!(
            names_and_values(&second),
            [("x-one", "b"), ("x-two", "c"), ("x-three", "4")]
                .map(|(n, v)| (n.to_owned(), v.to_owned()))
        );
        // A longer name that starts like a known one is not taken for it.
        let third = head_with(&mut scratch, b"HTTP/1.1 200 OK\r\nX-One-More: d\r\n\r\n");
        assert_eq!(
            names_and_values(&third),
            [("x-one-more".to_owned(), "d".to_owned())]
        );
    }

    /// The fields a head repeats from the last one keep their roles: the
    /// hop-by-hop ones stay out, the framing is read from them as from a
    /// first head, and a framing field that repeats is still refused.
    #[test]
    fn fields_known_from_the_last_head_keep_their_roles() {
        let mut scratch = Scratch::default();
        let chunked = b"HTTP/1.1 200 OK\r\nConnection: close\r\nKeep-Alive: 5\r\n\
            Transfer-Encoding: chunked\r\nX-Kept: 1\r\n\r\n";
        for _ in 0..3 {
            let head = head_with(&mut scratch, chunked);
            assert_eq!(head.framing, Framing::Chunked);
            assert!(!head.keep_alive, "connection: close, read again");
            assert_eq!(
                names_and_values(&head),
                [("x-kept".to_owned(), "1".to_owned())]
            );
        }
        // The same names at the same places, now with a length.
        let length = b"HTTP/1.1 200 OK\r\nConnection: keep-alive\r\nKeep-Alive: 5\r\n\
            Content-Length: 2\r\nX-Kept: 1\r\n\r\n";
        let head = head_with(&mut scratch, length);
        assert_eq!(head.framing, Framing::Length(2));
        assert!(head.keep_alive);
        assert_eq!(
            names_and_values(&head),
            [("content-length", "2"), ("x-kept", "1")].map(|(n, v)| (n.to_owned(), v.to_owned()))
        );
        let twice = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\n";
        for _ in 0..2 {
            let mut buf = BytesMut::from(&twice[..]);
            let parsed = parse_into(
                &mut buf,
                false,
                64 * 1024,
                &mut HeaderMap::new(),
                None,
                &mut scratch,
            );
            assert!(parsed.is_err(), "a repeated length, known or not");
        }
    }

    #[test]
    fn a_bare_lf_is_found_wherever_it_is() {
        assert!(!has_bare_lf(b""));
        assert!(!has_bare_lf(b"\r\n"));
        assert!(!has_bare_lf(b"a\r\nb\r\n\r\n"));
        assert!(has_bare_lf(b"\n"));
        assert!(has_bare_lf(b"a\n"));
        assert!(has_bare_lf(b"a\r\nb\n\r\n"));
        let mut long = b"x: y\r\n".repeat(100);
        assert!(!has_bare_lf(&long));
        long[333] = b'\n';
        assert!(has_bare_lf(&long));
    }

    #[test]
    fn the_framing_function_alone() {
        assert_eq!(framing(false, 101, None, false), Framing::Empty);
        assert_eq!(framing(false, 200, Some(3), false), Framing::Length(3));
        assert_eq!(framing(false, 200, None, true), Framing::Chunked);
        assert_eq!(framing(false, 205, None, false), Framing::Close);
    }
}
