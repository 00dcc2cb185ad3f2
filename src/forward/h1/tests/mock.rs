//! A scripted backend stream: it answers each request (released when the
//! request is flushed) with the chunks given, one chunk per read, and ends
//! with EOF once every answer is out. It records each write, can fail
//! writes, and can return `Pending` (waking itself) before reads so that the
//! codec's resumption paths run. A read polled too often panics: a codec
//! that spins without progress fails the test instead of hanging it.

use std::collections::VecDeque;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Reads allowed before the stream calls it a hang.
const MAX_READS: usize = 100_000;

#[derive(Debug, Default)]
pub(super) struct Scripted {
    /// Answers not yet released, one per request.
    answers: VecDeque<VecDeque<Vec<u8>>>,
    /// Chunks released and not yet read.
    ready: VecDeque<Vec<u8>>,
    /// Every write, as it came.
    pub(super) writes: Vec<Vec<u8>>,
    /// Before which reads (counted from 0) to return `Pending` once.
    pending: Vec<bool>,
    reads: usize,
    /// Writes fail with this kind.
    pub(super) fail_writes: Option<io::ErrorKind>,
    /// Whether the stream ends (EOF) once the answers are out, or stays
    /// open (`Pending`).
    pub(super) stays_open: bool,
    /// Whether a read with nothing released ends the stream (a backend
    /// that closes after its answer) instead of waiting for a request.
    pub(super) eof_when_idle: bool,
}

impl Scripted {
    /// A stream that gives `answers` (each split into its chunks).
    pub(super) fn new(answers: Vec<Vec<Vec<u8>>>) -> Self {
        Self {
            answers: answers.into_iter().map(VecDeque::from).collect(),
            ..Self::default()
        }
    }

    /// A stream answering with `bytes` split at the `cuts` (positions, any
    /// order, taken modulo the length).
    pub(super) fn split(answers: &[&[u8]], cuts: &[Vec<usize>]) -> Self {
        let answers = answers
            .iter()
            .enumerate()
            .map(|(i, bytes)| split_at(bytes, cuts.get(i).map_or(&[][..], Vec::as_slice)))
            .collect();
        Self::new(answers)
    }

    /// Returns `Pending` before the reads where `pattern` (cycled) is true.
    pub(super) fn with_pending(mut self, pattern: Vec<bool>) -> Self {
        self.pending = pattern;
        self
    }

    /// All bytes written.
    pub(super) fn written(&self) -> Vec<u8> {
        self.writes.concat()
    }
}

/// `bytes` cut at `cuts` (modulo its length) into non-empty chunks.
pub(super) fn split_at(bytes: &[u8], cuts: &[usize]) -> Vec<Vec<u8>> {
    if bytes.is_empty() {
        return Vec::new();
    }
    let mut cuts: Vec<usize> = cuts.iter().map(|c| c % bytes.len()).collect();
    cuts.push(0);
    cuts.push(bytes.len());
    cuts.sort_unstable();
    cuts.dedup();
    cuts.windows(2)
        .map(|w| bytes[w[0]..w[1]].to_vec())
        .collect()
}

impl AsyncRead for Scripted {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        this.reads += 1;
        assert!(this.reads < MAX_READS, "the codec keeps reading: a hang");
        let at = this.reads % this.pending.len().max(1);
        if this.pending.get(at).copied().unwrap_or(false) {
            // Ready again at once: only the path through Pending changes.
            this.pending[at] = false;
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        let Some(mut chunk) = this.ready.pop_front() else {
            if (this.answers.is_empty() && !this.stays_open) || this.eof_when_idle {
                return Poll::Ready(Ok(())); // EOF
            }
            // Nothing until the next request (or ever): a real socket
            // would register the waker; none will come here.
            return Poll::Pending;
        };
        let n = chunk.len().min(buf.remaining());
        buf.put_slice(&chunk[..n]);
        if n < chunk.len() {
            this.ready.push_front(chunk.split_off(n));
        }
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for Scripted {
    fn poll_write(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if let Some(kind) = self.fail_writes {
            return Poll::Ready(Err(io::Error::from(kind)));
        }
        self.writes.push(buf.to_vec());
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(mut self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // A request is out: its answer may come.
        if let Some(answer) = self.answers.pop_front() {
            self.ready.extend(answer);
        }
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[test]
fn split_at_keeps_every_byte_once() {
    assert_eq!(
        split_at(b"abcdef", &[4, 2, 8, 0]),
        [&b"ab"[..], b"cd", b"ef"]
    );
    assert_eq!(split_at(b"abc", &[]), [b"abc"]);
    assert!(split_at(b"", &[3]).is_empty());
}
