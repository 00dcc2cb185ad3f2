//! Whole exchanges over a scripted stream and over `tokio::io::duplex`.

use std::io;
use std::pin::pin;

use bytes::Bytes;
use futures_util::stream;
use http::HeaderValue;
use http_body::Frame;
use http_body_util::{BodyExt, Full, StreamBody};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::mock::Scripted;
use super::{Outcome, exchange, head, read_all, request, run};
use crate::forward::h1::{Answer, BodyFraming, Conn, Error, Kind};

fn ok<S>(result: Result<Outcome<S>, Error>) -> Outcome<S> {
    result.unwrap_or_else(|error| panic!("exchange failed: {error:?}"))
}

#[test]
fn keep_alive_exchanges_follow_each_other_on_one_connection() {
    run(async {
        let io = Scripted::new(vec![
            vec![b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\nx-a: 1\r\n\r\nhello".to_vec()],
            vec![
                b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nlink: </s>\r\n\r\n"
                    .to_vec(),
                b"HTTP/1.1 404 Not Found\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc".to_vec(),
                b"\r\n0\r\nx-trailer: 1\r\n\r\n".to_vec(),
            ],
        ]);
        let first = ok(exchange(Conn::new(io), "GET").await);
        assert_eq!(first.response.status, 200);
        assert_eq!(first.response.headers["x-a"], "1");
        assert_eq!(first.response.headers["content-length"], "5");
        assert_eq!(first.body, b"hello");
        let conn = first.conn.expect("reusable after a complete body");
        let second = ok(exchange(conn, "GET").await);
        assert_eq!(second.response.status, 404);
        assert_eq!(second.body, b"abc");
        assert!(second.response.headers.get("transfer-encoding").is_none());
        let io = second.conn.expect("reusable").into_io();
        let written = String::from_utf8(io.written()).unwrap();
        assert_eq!(
            written
                .matches("GET /path HTTP/1.1\r\nhost: backend.test:8080\r\n")
                .count(),
            2
        );
    });
}

#[test]
fn each_exchange_reads_into_the_start_of_the_buffer_once_the_last_head_is_gone() {
    run(async {
        let response = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nx-a: 1\r\n\r\nok";
        let io = Scripted::new(vec![vec![response.to_vec()]; 3]);
        let first = ok(exchange(Conn::new(io), "GET").await);
        let conn = first.conn.expect("reusable");
        // The buffer's view starts past the first response; its head is
        // still held (by `first.response`) while the second is read.
        let after_first = conn.read_buf.as_ptr();
        let second = ok(exchange(conn, "GET").await);
        let conn = second.conn.expect("reusable");
        let after_second = conn.read_buf.as_ptr();
        assert_eq!(
            after_second,
            after_first.wrapping_add(response.len()),
            "a head still held: the read goes on where the last one ended"
        );
        drop((first.response, second.response));
        let third = ok(exchange(conn, "GET").await);
        let conn = third.conn.expect("reusable");
        assert_eq!(
            conn.read_buf.as_ptr(),
            after_first,
            "no head held: the read starts at the buffer's start again"
        );
    });
}

#[test]
fn a_small_body_leaves_in_the_same_write_as_its_head() {
    run(async {
        let io = Scripted::new(vec![vec![b"HTTP/1.1 204 No Content\r\n\r\n".to_vec()]]);
        let parts = request("POST", &[("content-length", "5")]);
        let mut body = pin!(Full::new(Bytes::from_static(b"hello")));
        let framing = BodyFraming::of(&*body);
        assert_eq!(framing, BodyFraming::Length(5));
        let answer = Conn::new(io)
            .send(&head(&parts, framing), body.as_mut())
            .await;
        let Ok(Answer::Response(response)) = answer else {
            panic!("no response: {answer:?}");
        };
        let outcome = ok(read_all(response).await);
        let io = outcome.conn.expect("reusable").into_io();
        assert_eq!(io.writes.len(), 1, "{:?}", io.writes);
        assert!(io.writes[0].ends_with(b"content-length: 5\r\n\r\nhello"));
    });
}

/// One item of a test body stream.
type Item = Result<&'static [u8], io::Error>;

fn frames(
    items: Vec<Item>,
) -> StreamBody<impl futures_util::Stream<Item = Result<Frame<Bytes>, io::Error>>> {
    StreamBody::new(stream::iter(
        items
            .into_iter()
            .map(|item| item.map(|data| Frame::data(Bytes::from_static(data)))),
    ))
}

#[test]
fn a_streamed_body_is_chunked_and_large_data_is_not_copied_into_the_buffer() {
    run(async {
        let io = Scripted::new(vec![vec![
            b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n".to_vec(),
        ]]);
        let parts = request("PUT", &[]);
        let large: &'static [u8] = Box::leak(vec![b'x'; 40_000].into_boxed_slice());
        let mut body = pin!(frames(vec![Ok(b"abc"), Ok(b""), Ok(large), Ok(b"de")]));
        let framing = BodyFraming::of(&*body);
        assert_eq!(framing, BodyFraming::Chunked);
        let Ok(Answer::Response(response)) = Conn::new(io)
            .send(&head(&parts, framing), body.as_mut())
            .await
        else {
            panic!("no response");
        };
        let io = ok(read_all(response).await)
            .conn
            .expect("reusable")
            .into_io();
        let written = io.written();
        let text = String::from_utf8_lossy(&written);
        assert!(text.contains("transfer-encoding: chunked\r\n\r\n3\r\nabc\r\n9c40\r\nxxx"));
        assert!(
            text.ends_with("x\r\n2\r\nde\r\n0\r\n\r\n"),
            "{}",
            &text[text.len() - 30..]
        );
        assert!(io.writes.iter().any(|write| write.len() == 40_000));
    });
}

#[test]
fn the_clients_body_failing_is_the_clients_fault() {
    run(async {
        let cases: Vec<(BodyFraming, Vec<Item>, bool)> = vec![
            // Fails at once: nothing reached the backend.
            (
                BodyFraming::Length(3),
                vec![Err(io::Error::other("reset"))],
                false,
            ),
            (
                BodyFraming::Chunked,
                vec![Err(io::Error::other("reset"))],
                false,
            ),
            // Longer or shorter than it said.
            (BodyFraming::Length(3), vec![Ok(b"ab"), Ok(b"cd")], false),
            (BodyFraming::Length(5), vec![Ok(b"ab"), Ok(b"cd")], false),
            (BodyFraming::Length(2), vec![Ok(b"ab"), Ok(b"cd")], false),
        ];
        for (framing, items, sent) in cases {
            let io = Scripted::new(vec![vec![b"HTTP/1.1 200 OK\r\n\r\n".to_vec()]]);
            let parts = request("POST", &[]);
            let mut body = pin!(frames(items));
            let error = Conn::new(io)
                .send(&head(&parts, framing), body.as_mut())
                .await
                .expect_err("a client body error");
            assert_eq!(error.kind(), Kind::ClientBody, "{framing:?}: {error:?}");
            assert!(error.is_client() && error.body_started());
            assert_eq!(error.request_sent(), sent, "{framing:?}: {error:?}");
        }
    });
}

#[test]
fn a_body_that_waits_lets_the_head_go_first() {
    run(async {
        let (client, mut server) = tokio::io::duplex(64 * 1024);
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let body = StreamBody::new(stream::once(async move {
            let _ = rx.await;
            Err::<Frame<Bytes>, _>(io::Error::other("client went away"))
        }));
        let parts = request("POST", &[]);
        let backend = async move {
            let mut buf = vec![0; 1024];
            let n = server.read(&mut buf).await.unwrap();
            assert!(buf[..n].ends_with(b"transfer-encoding: chunked\r\n\r\n"));
            let _ = tx.send(());
            server
        };
        let mut body = pin!(body);
        let request_head = head(&parts, BodyFraming::Chunked);
        let exchange = Conn::new(client).send(&request_head, body.as_mut());
        let (result, _server) = tokio::join!(exchange, backend);
        let error = result.expect_err("the body failed");
        assert!(error.is_client() && error.request_sent());
    });
}

#[test]
fn writing_to_the_backend_failing_is_an_upstream_error_not_sent() {
    run(async {
        let mut io = Scripted::new(vec![]);
        io.fail_writes = Some(io::ErrorKind::BrokenPipe);
        let error = exchange(Conn::new(io), "GET")
            .await
            .expect_err("write fails");
        assert_eq!(error.kind(), Kind::Io);
        assert!(!error.request_sent() && !error.body_started() && !error.is_client());
    });
}

#[test]
fn closing_before_a_response_says_whether_any_of_it_came() {
    run(async {
        let error = exchange(Conn::new(Scripted::new(vec![vec![]])), "GET")
            .await
            .expect_err("closed");
        assert_eq!(error.kind(), Kind::ClosedBeforeResponse);
        assert!(error.request_sent() && !error.response_started());
        let io = Scripted::new(vec![vec![b"HTTP/1.1 200".to_vec()]]);
        let error = exchange(Conn::new(io), "GET").await.expect_err("closed");
        assert_eq!(error.kind(), Kind::ClosedBeforeResponse);
        assert!(error.response_started());
        let io = Scripted::new(vec![vec![b"HTTP/1.1 100 Continue\r\n\r\n".to_vec()]]);
        let error = exchange(Conn::new(io), "GET").await.expect_err("closed");
        assert!(error.response_started());
    });
}

#[test]
fn a_body_cut_short_is_an_error_and_the_connection_is_dropped() {
    run(async {
        for answer in [
            &b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nhello"[..],
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n",
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\nx: 1\r\n",
        ] {
            let io = Scripted::new(vec![vec![answer.to_vec()]]);
            let error = exchange(Conn::new(io), "GET").await.expect_err("cut");
            assert_eq!(error.kind(), Kind::BodyCut, "{error:?}");
        }
    });
}

#[test]
fn a_connection_is_handed_back_only_when_in_step() {
    run(async {
        let cases: &[(&[u8], &str, bool)] = &[
            (
                b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nhi",
                "GET",
                true,
            ),
            // More than it declared: out of step.
            (
                b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nhiX",
                "GET",
                false,
            ),
            (
                b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n",
                "HEAD",
                true,
            ),
            (
                b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nhi",
                "HEAD",
                false,
            ),
            (b"HTTP/1.1 204 No Content\r\n\r\n", "GET", true),
            (
                b"HTTP/1.1 304 Not Modified\r\ncontent-length: 9\r\n\r\n",
                "GET",
                true,
            ),
            (
                b"HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 2\r\n\r\nhi",
                "GET",
                false,
            ),
            (
                b"HTTP/1.0 200 OK\r\ncontent-length: 2\r\n\r\nhi",
                "GET",
                false,
            ),
            (
                b"HTTP/1.0 200 OK\r\nconnection: keep-alive\r\ncontent-length: 2\r\n\r\nhi",
                "GET",
                true,
            ),
            (b"HTTP/1.1 200 OK\r\n\r\nuntil the end", "GET", false),
            (
                b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n0\r\n\r\nX",
                "GET",
                false,
            ),
        ];
        for (answer, method, reusable) in cases {
            let io = Scripted::new(vec![vec![answer.to_vec()]]);
            let outcome = ok(exchange(Conn::new(io), method).await);
            assert_eq!(
                outcome.conn.is_some(),
                *reusable,
                "{}",
                String::from_utf8_lossy(answer)
            );
        }
    });
}

#[test]
fn an_empty_body_has_ended_before_any_poll() {
    run(async {
        let mut io = Scripted::new(vec![vec![
            b"HTTP/1.1 204 No Content\r\nx: 1\r\n\r\n".to_vec(),
        ]]);
        io.stays_open = true;
        let parts = request("GET", &[]);
        let mut body = pin!(http_body_util::Empty::<Bytes>::new());
        let Ok(Answer::Response(response)) = Conn::new(io)
            .send(&head(&parts, BodyFraming::Empty), body.as_mut())
            .await
        else {
            panic!("no response");
        };
        let mut reader = response.into_body();
        assert!(http_body::Body::is_end_stream(&reader));
        assert_eq!(http_body::Body::size_hint(&reader).exact(), Some(0));
        let mut conn = reader.take_reusable().expect("reusable without a poll");
        assert!(conn.is_reusable_now());
    });
}

#[test]
fn the_size_hint_counts_down() {
    run(async {
        let io = Scripted::new(vec![vec![
            b"HTTP/1.1 200 OK\r\ncontent-length: 6\r\n\r\nabc".to_vec(),
            b"def".to_vec(),
        ]]);
        let parts = request("GET", &[]);
        let mut body = pin!(http_body_util::Empty::<Bytes>::new());
        let Ok(Answer::Response(response)) = Conn::new(io)
            .send(&head(&parts, BodyFraming::Empty), body.as_mut())
            .await
        else {
            panic!("no response");
        };
        let mut reader = response.into_body();
        assert_eq!(http_body::Body::size_hint(&reader).exact(), Some(6));
        let frame = reader.frame().await.unwrap().unwrap();
        assert_eq!(frame.into_data().unwrap(), "abc");
        assert_eq!(http_body::Body::size_hint(&reader).exact(), Some(3));
        assert!(!http_body::Body::is_end_stream(&reader));
        let frame = reader.frame().await.unwrap().unwrap();
        assert_eq!(frame.into_data().unwrap(), "def");
        assert!(http_body::Body::is_end_stream(&reader));
    });
}

#[test]
fn switching_protocols_hands_over_the_stream_and_what_came_after_the_head() {
    run(async {
        let (client, mut server) = tokio::io::duplex(4096);
        let backend = tokio::spawn(async move {
            let mut buf = vec![0; 1024];
            let n = server.read(&mut buf).await.unwrap();
            let request = String::from_utf8_lossy(&buf[..n]).into_owned();
            server
                .write_all(
                    b"HTTP/1.1 101 Switching Protocols\r\nconnection: upgrade\r\n\
                      upgrade: websocket\r\nsec-websocket-accept: x\r\n\r\nframe1",
                )
                .await
                .unwrap();
            let n = server.read(&mut buf).await.unwrap();
            (request, buf[..n].to_vec())
        });
        let parts = request(
            "GET",
            &[("connection", "upgrade"), ("upgrade", "websocket")],
        );
        let websocket = HeaderValue::from_static("websocket");
        let mut request_head = head(&parts, BodyFraming::Empty);
        request_head.upgrade = Some(&websocket);
        let mut body = pin!(http_body_util::Empty::<Bytes>::new());
        let answer = Conn::new(client).send(&request_head, body.as_mut()).await;
        let Ok(Answer::Upgrade {
            response,
            protocol,
            upgraded,
        }) = answer
        else {
            panic!("no upgrade: {answer:?}");
        };
        assert_eq!(response.status(), 101);
        assert_eq!(protocol.unwrap(), "websocket");
        assert_eq!(response.headers()["sec-websocket-accept"], "x");
        assert!(response.headers().get("upgrade").is_none());
        let (mut io, read_ahead) = upgraded.into_parts();
        // The head may have come alone or with the frame after it.
        let mut after = read_ahead.to_vec();
        while after.len() < 6 {
            let mut buf = [0; 16];
            let n = io.read(&mut buf).await.unwrap();
            after.extend_from_slice(&buf[..n]);
        }
        assert_eq!(after, b"frame1");
        io.write_all(b"frame2").await.unwrap();
        let (request, frame) = backend.await.unwrap();
        assert!(request.contains("\r\nconnection: upgrade\r\nupgrade: websocket\r\n\r\n"));
        assert_eq!(frame, b"frame2");
    });
}

#[test]
fn the_idle_check_sees_a_close_and_stray_bytes() {
    run(async {
        let (client, mut server) = tokio::io::duplex(4096);
        let mut conn = Conn::new(client);
        assert!(conn.is_reusable_now());
        assert!(conn.is_reusable_now(), "checking does not spoil it");
        server.write_all(b"X").await.unwrap();
        assert!(!conn.is_reusable_now());
        assert!(!conn.is_reusable_now(), "and stays spoilt");

        let (client, server) = tokio::io::duplex(4096);
        let mut conn = Conn::new(client);
        drop(server);
        assert!(!conn.is_reusable_now());
    });
}

#[test]
fn a_real_backend_over_duplex() {
    run(async {
        let (client, mut server) = tokio::io::duplex(1024);
        let backend = tokio::spawn(async move {
            let mut seen = Vec::new();
            for answer in [
                &b"HTTP/1.1 200 OK\r\ncontent-length: 3000\r\n\r\n"[..],
                b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n",
            ] {
                let mut buf = vec![0; 4096];
                let n = server.read(&mut buf).await.unwrap();
                seen.push(String::from_utf8_lossy(&buf[..n]).into_owned());
                server.write_all(answer).await.unwrap();
                if answer.ends_with(b"chunked\r\n\r\n") {
                    for _ in 0..100 {
                        server
                            .write_all(b"a;ext=1\r\n0123456789\r\n")
                            .await
                            .unwrap();
                    }
                    server.write_all(b"0\r\n\r\n").await.unwrap();
                } else {
                    server.write_all(&[b'z'; 3000]).await.unwrap();
                }
            }
            seen
        });
        let first = ok(exchange(Conn::new(client), "GET").await);
        assert_eq!(first.body, vec![b'z'; 3000]);
        let second = ok(exchange(first.conn.expect("reusable"), "DELETE").await);
        assert_eq!(second.body, b"0123456789".repeat(100));
        assert!(second.conn.is_some());
        let seen = backend.await.unwrap();
        assert!(seen[1].starts_with("DELETE /path HTTP/1.1\r\n"));
    });
}

#[test]
fn the_idle_check_on_a_real_socket() {
    run(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut conns = Vec::new();
        let mut servers = Vec::new();
        for _ in 0..3 {
            let client = tokio::net::TcpStream::connect(addr).await.unwrap();
            let (server, _) = listener.accept().await.unwrap();
            conns.push(Conn::new(client));
            servers.push(server);
        }
        let mut servers = servers.into_iter();
        let (quiet, mut chatty, closing) = (
            servers.next().unwrap(),
            servers.next().unwrap(),
            servers.next().unwrap(),
        );
        chatty.write_all(b"HTTP/1.1 200 OK\r\n").await.unwrap();
        drop(closing);
        // Let the reactor see the bytes and the FIN.
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        let verdicts: Vec<bool> = conns
            .iter_mut()
            .map(|conn| conn.is_reusable_now())
            .collect();
        assert_eq!(verdicts, [true, false, false]);
        drop(quiet);
    });
}

/// The exchange's future and the body can move across threads (a
/// multi-thread runtime, a spawned tunnel) when the stream and the request
/// body can.
#[allow(dead_code)]
fn futures_and_bodies_are_send() {
    fn send<T: Send>(_: &T) {}
    fn sync<T: Sync>() {}
    let (client, _) = tokio::io::duplex(1);
    let parts = request("GET", &[]);
    let mut body = Box::pin(Full::new(Bytes::new()));
    let head = head(&parts, BodyFraming::Empty);
    let future = Conn::new(client).send(&head, body.as_mut());
    send(&future);
    sync::<Error>();
    sync::<crate::forward::h1::BodyReader<tokio::net::TcpStream>>();
    send(&Error::malformed("x"));
}

#[test]
fn a_101_nobody_asked_for_ends_the_exchange_without_reuse() {
    // Found by the random-bytes property: a bare, valid `101`.
    let outcome = ok(run(async {
        let io = Scripted::split(&[b"HTTP/1.1 101 Switching Protocols\r\n\r\n"], &[vec![]]);
        exchange(Conn::new(io), "GET").await
    }));
    assert_eq!(outcome.response.status, 101);
    assert!(
        outcome.conn.is_none(),
        "a switched connection is never reused"
    );
}

/// A backend on a real socket that reads a request's head, then answers
/// with `answer` (if any) and closes without reading the body, which the
/// kernel turns into a reset under the body's writes.
async fn closing_backend(answer: &'static [u8]) -> tokio::net::TcpStream {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let (mut server, _) = listener.accept().await.unwrap();
        let mut head = Vec::new();
        let mut buf = vec![0; 16 * 1024];
        while !head.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = server.read(&mut buf).await.unwrap();
            head.extend_from_slice(&buf[..n]);
        }
        server.write_all(answer).await.unwrap();
        drop(server);
    });
    tokio::net::TcpStream::connect(addr).await.unwrap()
}

/// A 64 MiB upload in 64 KiB frames: far more than loopback's socket
/// buffers hold, so a backend that stops reading is met by a write.
fn upload() -> impl http_body::Body<Data = Bytes, Error = io::Error> {
    let frame = Bytes::from(vec![b'u'; 64 * 1024]);
    StreamBody::new(stream::iter(
        (0..1024).map(move |_| Ok::<_, io::Error>(Frame::data(frame.clone()))),
    ))
}

/// A 64 MiB chunked upload to a [`closing_backend`] answering `answer`.
async fn upload_to_closing_backend(
    answer: &'static [u8],
) -> Result<Answer<tokio::net::TcpStream>, Error> {
    let io = closing_backend(answer).await;
    let parts = request("POST", &[("transfer-encoding", "chunked")]);
    let mut body = pin!(upload());
    let framing = BodyFraming::of(&*body);
    Conn::new(io)
        .send(&head(&parts, framing), body.as_mut())
        .await
}

#[test]
fn an_answer_sent_before_the_backend_closed_under_the_body_is_the_exchanges() {
    run(async {
        let answer =
            upload_to_closing_backend(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nearly").await;
        let Ok(Answer::Response(response)) = answer else {
            panic!("the early answer is lost: {answer:?}");
        };
        let outcome = ok(read_all(response).await);
        assert_eq!(outcome.response.status, 200);
        assert_eq!(outcome.body, b"early");
        assert!(
            outcome.conn.is_none(),
            "a connection whose request was not sent whole is never reused"
        );
    });
}

#[test]
fn a_backend_that_closed_under_the_body_without_an_answer_is_the_writes_error() {
    run(async {
        let error = upload_to_closing_backend(b"")
            .await
            .expect_err("no answer to read");
        assert_eq!(error.kind(), Kind::Io);
        assert!(error.request_sent() && error.body_started() && !error.is_client());
    });
}
