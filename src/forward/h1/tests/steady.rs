//! Many exchanges on one connection: the buffers are reused, not grown.
//!
//! The stream is a loop that costs nothing (writes are dropped, each flush
//! makes the canned answer readable again), so this is also the harness for
//! counting allocations per exchange under valgrind's DHAT: run this test
//! with `H1_STEADY_EXCHANGES` set to two counts and take the difference.

use std::io;
use std::pin::{Pin, pin};
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::{head, request, run};
use crate::forward::h1::{Answer, BodyFraming, Conn};

/// A backend that answers every request with `answer`.
struct Loop {
    answer: &'static [u8],
    at: usize,
}

impl AsyncRead for Loop {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let rest = &self.answer[self.at..];
        if rest.is_empty() {
            return Poll::Pending; // no waker: only the idle check reads here
        }
        let n = rest.len().min(buf.remaining());
        buf.put_slice(&rest[..n]);
        self.at += n;
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for Loop {
    fn poll_write(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.at = 0;
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

const ANSWERS: &[&[u8]] = &[
    b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 2\r\n\r\nok",
    b"HTTP/1.1 200 OK\r\nx-custom: 1\r\ntransfer-encoding: chunked\r\n\r\n1\r\no\r\n1\r\nk\r\n0\r\n\r\n",
];

#[test]
fn many_exchanges_reuse_one_connection_and_its_buffers() {
    let exchanges: usize = std::env::var("H1_STEADY_EXCHANGES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(1000);
    for answer in ANSWERS {
        run(async move {
            let parts = request("GET", &[("host", "shop.example"), ("accept", "*/*")]);
            let mut conn = Conn::new(Loop { answer, at: 0 });
            let mut write_capacity = None;
            for _ in 0..exchanges {
                let mut body = pin!(Empty::<Bytes>::new());
                let request_head = head(&parts, BodyFraming::Empty);
                let Ok(Answer::Response(response)) = conn.send(&request_head, body.as_mut()).await
                else {
                    panic!("no response");
                };
                let (head, mut reader) = response.into_parts();
                assert_eq!(head.status, 200);
                let mut body = Vec::new();
                while let Some(frame) = reader.frame().await {
                    let data = frame.map(|f| f.into_data().unwrap_or_default());
                    body.extend_from_slice(&data.unwrap_or_else(|e| panic!("{e:?}")));
                }
                assert_eq!(body, b"ok");
                drop(head);
                conn = reader
                    .take_reusable()
                    .unwrap_or_else(|| panic!("not reusable"));
                assert!(conn.is_reusable_now());
                assert!(conn.read_buf.capacity() <= 64 * 1024);
                let capacity = conn.write_buf.capacity();
                assert_eq!(*write_capacity.get_or_insert(capacity), capacity);
            }
        });
    }
}
