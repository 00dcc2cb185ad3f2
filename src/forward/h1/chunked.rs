//! Decoding a chunked body (RFC 9112 §7.1) from the connection's read
//! buffer.
//!
//! Data is split off the buffer as `Bytes` (no copy). Everything that is
//! not data (size lines, the CRLF after each chunk, the trailer section) is
//! checked exactly and dropped: trailers are not passed on (the proxy's
//! client side would have to announce them) and are read under a bound.
//! `httparse::parse_chunk_size` reads the size line; on top of it, a line
//! must start with a hex digit (it reads an empty size as 0) and may not
//! hold control bytes (it lets any byte through in an extension, a bare LF
//! included).

use bytes::{Buf, Bytes, BytesMut};

use super::error::Error;
use super::response_head::{has_bare_lf, has_empty_line};

/// The longest size line (size and extensions) read.
pub(crate) const MAX_CHUNK_LINE: usize = 4096;
/// The largest trailer section read.
pub(crate) const MAX_TRAILERS: usize = 16 * 1024;
/// The most trailer fields read.
const MAX_TRAILER_FIELDS: usize = 64;

/// Where the decoder is in the body.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Expecting a size line.
    Size,
    /// Inside a chunk, with this many bytes to go.
    Data(u64),
    /// Expecting the CRLF that ends a chunk's data.
    DataEnd,
    /// After the last chunk: trailer fields up to an empty line, looked
    /// for up to `searched` already.
    Trailers { searched: usize },
    /// The body has ended.
    Done,
}

/// What one call to [`ChunkedDecoder::decode`] gives.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Step {
    /// Body bytes (never empty).
    Data(Bytes),
    /// The buffer holds no more of the body: read more.
    NeedMore,
    /// The body ended; the buffer starts after its last byte.
    End,
}

/// A chunked body's decoder.
#[derive(Debug)]
pub(crate) struct ChunkedDecoder {
    state: State,
}

impl ChunkedDecoder {
    pub(crate) fn new() -> Self {
        Self { state: State::Size }
    }

    /// Whether the body has ended.
    pub(crate) fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Decodes what `buf` holds: the next data, the end, or a need for more.
    pub(crate) fn decode(&mut self, buf: &mut BytesMut) -> Result<Step, Error> {
        self.settle(buf)?;
        match self.state {
            State::Done => Ok(Step::End),
            State::Data(remaining) if !buf.is_empty() => {
                let n = usize::try_from(remaining).map_or(buf.len(), |r| r.min(buf.len()));
                let data = buf.split_to(n).freeze();
                let left = remaining - n as u64;
                self.state = if left == 0 {
                    State::DataEnd
                } else {
                    State::Data(left)
                };
                Ok(Step::Data(data))
            }
            _ => Ok(Step::NeedMore),
        }
    }

    /// Goes through whatever is not data (line ends, size lines, trailers)
    /// as far as `buf` allows, so that the end of the body is known as soon
    /// as its bytes are here. Stops at data, at the end, or at a partial
    /// line. On an error the state is left as it was (the next `decode`
    /// reports it again).
    pub(crate) fn settle(&mut self, buf: &mut BytesMut) -> Result<(), Error> {
        loop {
            match self.state {
                State::Size => match size_line(buf)? {
                    Some((len, size)) => {
                        buf.advance(len);
                        self.state = if size == 0 {
                            State::Trailers { searched: 0 }
                        } else {
                            State::Data(size)
                        };
                    }
                    None => return Ok(()),
                },
                State::DataEnd => {
                    if buf.len() < 2 {
                        if buf.first().is_some_and(|&b| b != b'\r') {
                            return Err(Error::malformed("chunk data not followed by CRLF"));
                        }
                        return Ok(());
                    }
                    if &buf[..2] != b"\r\n" {
                        return Err(Error::malformed("chunk data not followed by CRLF"));
                    }
                    buf.advance(2);
                    self.state = State::Size;
                }
                State::Trailers { mut searched } => match trailers(buf, &mut searched)? {
                    Some(len) => {
                        buf.advance(len);
                        self.state = State::Done;
                    }
                    None => {
                        self.state = State::Trailers { searched };
                        return Ok(());
                    }
                },
                State::Data(_) | State::Done => return Ok(()),
            }
        }
    }
}

/// A complete size line at the start of `buf`: its length and the size.
fn size_line(buf: &[u8]) -> Result<Option<(usize, u64)>, Error> {
    let Some(&first) = buf.first() else {
        return Ok(None);
    };
    if !first.is_ascii_hexdigit() {
        return Err(Error::malformed("chunk size missing"));
    }
    let line = &buf[..buf.len().min(MAX_CHUNK_LINE)];
    let end = line.iter().position(|&b| b == b'\r').unwrap_or(line.len());
    if line[..end]
        .iter()
        .any(|&b| (b < 0x20 && b != b'\t') || b == 0x7f)
    {
        return Err(Error::malformed("control byte in a chunk size line"));
    }
    if end == line.len() {
        // No CR yet: not a whole line.
        return if line.len() >= MAX_CHUNK_LINE {
            Err(Error::malformed("chunk size line too long"))
        } else {
            Ok(None)
        };
    }
    match httparse::parse_chunk_size(buf) {
        Ok(httparse::Status::Complete((len, _))) if len > MAX_CHUNK_LINE => {
            Err(Error::malformed("chunk size line too long"))
        }
        Ok(httparse::Status::Complete((len, size))) => Ok(Some((len, size))),
        Ok(httparse::Status::Partial) if buf.len() >= MAX_CHUNK_LINE => {
            Err(Error::malformed("chunk size line too long"))
        }
        Ok(httparse::Status::Partial) => Ok(None),
        Err(_) => Err(Error::malformed("invalid chunk size")),
    }
}

/// A complete trailer section (fields and the empty line) at the start of
/// `buf`: its length.
fn trailers(buf: &[u8], searched: &mut usize) -> Result<Option<usize>, Error> {
    if buf.starts_with(b"\r\n") {
        return Ok(Some(2));
    }
    if buf.len() < 2 && buf.first().is_none_or(|&b| b == b'\r') {
        return Ok(None);
    }
    // A section of fields ends with an empty line; until one is here, only
    // the bound is checked (a bare `\n` alone is left for httparse).
    if buf.first() != Some(&b'\n') && !has_empty_line(buf, searched) {
        return if buf.len() >= MAX_TRAILERS {
            Err(Error::malformed("trailers over the limit"))
        } else {
            Ok(None)
        };
    }
    let mut fields = [httparse::EMPTY_HEADER; MAX_TRAILER_FIELDS];
    match httparse::parse_headers(buf, &mut fields) {
        Ok(httparse::Status::Complete((len, _))) => {
            let section = &buf[..len];
            if has_bare_lf(section) {
                return Err(Error::malformed("trailer line ended by a bare LF"));
            }
            if len > MAX_TRAILERS {
                return Err(Error::malformed("trailers over the limit"));
            }
            Ok(Some(len))
        }
        Ok(httparse::Status::Partial) if buf.len() >= MAX_TRAILERS => {
            Err(Error::malformed("trailers over the limit"))
        }
        Ok(httparse::Status::Partial) => Ok(None),
        Err(error) => Err(Error::malformed("invalid trailers").with_source(error)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Decodes `bytes` fed `step` bytes at a time: the body and what is
    /// left after it.
    fn decode_in_steps(bytes: &[u8], step: usize) -> Result<(Vec<u8>, Vec<u8>), Error> {
        let mut decoder = ChunkedDecoder::new();
        let mut buf = BytesMut::new();
        let mut body = Vec::new();
        let mut fed = 0;
        loop {
            match decoder.decode(&mut buf)? {
                Step::Data(data) => {
                    assert!(!data.is_empty());
                    body.extend_from_slice(&data);
                }
                Step::End => {
                    let mut rest = buf.to_vec();
                    rest.extend_from_slice(&bytes[fed..]);
                    return Ok((body, rest));
                }
                Step::NeedMore if fed >= bytes.len() => {
                    return Err(Error::malformed("test: ran out of bytes"));
                }
                Step::NeedMore => {
                    let next = (fed + step).min(bytes.len());
                    buf.extend_from_slice(&bytes[fed..next]);
                    fed = next;
                }
            }
        }
    }

    fn decode(bytes: &[u8]) -> Result<(Vec<u8>, Vec<u8>), String> {
        let whole = decode_in_steps(bytes, bytes.len().max(1)).map_err(|e| e.to_string());
        for step in [1, 2, 3, 7] {
            let split = decode_in_steps(bytes, step).map_err(|e| e.to_string());
            assert_eq!(
                split,
                whole,
                "fed {step} at a time: {:?}",
                String::from_utf8_lossy(bytes)
            );
        }
        whole
    }

    #[test]
    fn chunks_extensions_and_trailers() {
        let ok: &[(&[u8], &[u8])] = &[
            (b"0\r\n\r\n", b""),
            (b"4\r\nRust\r\n0\r\n\r\n", b"Rust"),
            (
                b"4;name=value\r\nRust\r\n3 ; a=\"q;\"\r\n ab\r\n0\r\n\r\n",
                b"Rust ab",
            ),
            (b"A\r\n0123456789\r\n000\r\n\r\n", b"0123456789"),
            (
                b"a\r\n0123456789\r\n0\r\nx-sum: 1\r\nx-other: 2\r\n\r\n",
                b"0123456789",
            ),
            (b"1\r\na\r\n0;last\r\n\r\n", b"a"),
        ];
        for (bytes, body) in ok {
            let (decoded, rest) = decode(bytes).unwrap();
            assert_eq!(decoded, *body, "{:?}", String::from_utf8_lossy(bytes));
            assert!(rest.is_empty());
        }
    }

    #[test]
    fn the_end_is_exact_and_the_rest_is_left() {
        let (body, rest) = decode(b"2\r\nhi\r\n0\r\n\r\nHTTP/1.1 200 OK\r\n").unwrap();
        assert_eq!(body, b"hi");
        assert_eq!(rest, b"HTTP/1.1 200 OK\r\n");
    }

    #[test]
    fn bad_sizes_missing_line_ends_and_overflow_are_refused() {
        let bad: &[&[u8]] = &[
            b"\r\n\r\n",
            b";ext\r\n\r\n",
            b"g\r\n",
            b"-1\r\n",
            b"+1\r\nx\r\n0\r\n\r\n",
            b"0x1\r\nx\r\n0\r\n\r\n",
            b"1 1\r\nx\r\n0\r\n\r\n",
            b" 1\r\nx\r\n0\r\n\r\n",
            b"1\nx\r\n0\r\n\r\n",
            b"1\rx\r\n0\r\n\r\n",
            b"1;a\nb\r\nx\r\n0\r\n\r\n",
            b"1;a\x00\r\nx\r\n0\r\n\r\n",
            // 17 hex digits: more than a u64.
            b"10000000000000000\r\n",
            // Data not followed by CRLF, or by a bare LF.
            b"1\r\nxy\r\n0\r\n\r\n",
            b"1\r\nx\n0\r\n\r\n",
            b"1\r\nx0\r\n\r\n",
            // Trailers with a bare LF, folding, or no colon.
            b"0\r\nx-sum: 1\n\r\n",
            b"0\r\nx-sum: 1\r\n folded\r\n\r\n",
            b"0\r\nnot a field\r\n\r\n",
            b"0\r\n\n",
        ];
        for bytes in bad {
            let result = decode(bytes);
            assert!(
                result.as_ref().is_err_and(|e| !e.contains("ran out")),
                "{:?} gave {result:?}",
                String::from_utf8_lossy(bytes)
            );
        }
    }

    #[test]
    fn lines_and_trailers_are_bounded() {
        let long = format!("1;{}\r\nx\r\n0\r\n\r\n", "a".repeat(MAX_CHUNK_LINE));
        assert!(decode(long.as_bytes()).unwrap_err().contains("too long"));
        let mut endless = BytesMut::from(format!("1;{}", "a".repeat(MAX_CHUNK_LINE)).as_bytes());
        assert!(ChunkedDecoder::new().decode(&mut endless).is_err());
        let trailers = format!("0\r\nx-a: {}\r\n\r\n", "a".repeat(MAX_TRAILERS));
        assert!(
            decode(trailers.as_bytes())
                .unwrap_err()
                .contains("over the limit")
        );
        // The largest size is read (its data would never all come).
        let mut buf = BytesMut::from(&b"ffffffffffffffff\r\nab"[..]);
        let mut decoder = ChunkedDecoder::new();
        assert_eq!(
            decoder.decode(&mut buf).unwrap(),
            Step::Data(Bytes::from_static(b"ab"))
        );
        assert_eq!(decoder.decode(&mut buf).unwrap(), Step::NeedMore);
    }

    #[test]
    fn settle_finds_the_end_without_a_read() {
        let mut buf = BytesMut::from(&b"2\r\nhi\r\n0\r\n\r\n"[..]);
        let mut decoder = ChunkedDecoder::new();
        assert_eq!(
            decoder.decode(&mut buf).unwrap(),
            Step::Data(Bytes::from_static(b"hi"))
        );
        assert!(!decoder.is_done());
        decoder.settle(&mut buf).unwrap();
        assert!(decoder.is_done() && buf.is_empty());
    }

    #[test]
    fn a_failed_settle_leaves_the_error_for_decode() {
        let mut buf = BytesMut::from(&b"2\r\nhiXX"[..]);
        let mut decoder = ChunkedDecoder::new();
        assert!(matches!(decoder.decode(&mut buf), Ok(Step::Data(_))));
        assert!(decoder.settle(&mut buf).is_err());
        assert!(decoder.decode(&mut buf).is_err());
    }
}
