//! Bounded memory under churn: the pool forgets the backends that left.

use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Request};
use http_body_util::{BodyExt, Empty};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use super::ResponseBody;
use super::h1::{Answer, DEFAULT_MAX_HEAD};
use super::pool::Pool;
use crate::{Backend, BackendSet, Target};

/// A backend on a fresh port that answers `ok` to each request head.
async fn backend() -> (Backend, tokio::task::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buffer = [0u8; 1024];
                while let Ok(n) = stream.read(&mut buffer).await {
                    if n == 0 {
                        return;
                    }
                    let answer = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
                    if stream.write_all(answer).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    (format!("http://{addr}").parse().unwrap(), task)
}

async fn exchange(pool: &Pool, backend: &Backend) {
    let request = Request::get(format!("{}/", backend.address()))
        .extension(Target::new(backend.clone()))
        .body(Empty::<Bytes>::new())
        .unwrap();
    let (mut parts, mut body) = request.into_parts();
    let proto = HeaderValue::from_static("http");
    let (answer, lease) = pool
        .send(
            &mut parts,
            &proto,
            None,
            None,
            std::pin::Pin::new(&mut body),
            crate::clock::now(),
        )
        .await
        .unwrap();
    let Answer::Response(response) = answer else {
        panic!("not a response");
    };
    let body = ResponseBody::http1(response.into_body(), lease);
    let bytes = body.collect().await.unwrap().to_bytes();
    assert_eq!(&bytes[..], b"ok");
}

fn pool() -> Pool {
    Pool::new(
        super::stream::Connect::default(),
        Duration::from_secs(1),
        Some(Duration::from_secs(30)),
        Duration::from_secs(90),
        usize::MAX,
        DEFAULT_MAX_HEAD,
    )
}

#[tokio::test]
async fn ten_thousand_backends_in_and_out_leave_the_pool_as_it_was() {
    let pool = pool();
    let set = BackendSet::default();
    let (steady, _steady_task) = backend().await;
    set.insert(steady.clone());
    exchange(&pool, &steady).await;
    let start = pool.hosts();
    assert_eq!(start, 1);
    let mut most = 0;
    for _ in 0..10_000 {
        let (passing, task) = backend().await;
        set.insert(passing.clone());
        let member = set.snapshot().get(passing.address()).unwrap().clone();
        exchange(&pool, &member).await;
        exchange(&pool, &steady).await;
        set.remove(passing.address());
        task.abort();
        most = most.max(pool.hosts());
    }
    // At any moment: the steady member and the one passing through; the
    // one removed before it was forgotten by the next request.
    assert!(most <= start + 1, "the pool grew to {most} hosts");
    // A removed backend is forgotten by the next request after it left,
    // whatever backend that request goes to.
    let (last, _task) = backend().await;
    set.insert(last.clone());
    exchange(&pool, &set.snapshot().get(last.address()).unwrap().clone()).await;
    assert_eq!(pool.hosts(), start + 1);
    set.remove(last.address());
    exchange(&pool, &steady).await;
    assert_eq!(pool.hosts(), start, "the pool is as it was");
}

#[tokio::test]
async fn a_connection_to_a_removed_backend_is_not_kept_and_a_returning_address_is_pooled_again() {
    let pool = pool();
    let set = BackendSet::default();
    let (first, _task) = backend().await;
    set.insert(first.clone());
    let member = set.snapshot().backends()[0].clone();
    exchange(&pool, &member).await;
    set.remove(first.address());
    // Back under the same address, as a new backend: the old entry (of a
    // removed backend) must not keep its connections from being pooled.
    let fresh: Backend = first.address().as_str().parse().unwrap();
    set.insert(fresh);
    let again = set.snapshot().backends()[0].clone();
    assert!(!again.same_state(&member) && !again.state().is_removed());
    exchange(&pool, &again).await;
    exchange(&pool, &again).await;
    assert_eq!(pool.hosts(), 1);
    assert_eq!(
        format!("{pool:?}"),
        format!("{{http://{}: 1}}", first.address().authority())
    );
}

#[tokio::test]
async fn a_backend_removed_mid_exchange_is_forgotten_once_that_exchange_ends() {
    let pool = pool();
    let set = BackendSet::default();
    let (steady, _steady_task) = backend().await;
    let (leaving, _task) = backend().await;
    set.insert(steady.clone());
    set.insert(leaving.clone());
    exchange(&pool, &steady).await;
    let member = set.snapshot().get(leaving.address()).unwrap().clone();
    // An exchange whose response body is still unread holds its lease.
    let request = Request::get(format!("{}/", member.address()))
        .extension(Target::new(member.clone()))
        .body(Empty::<Bytes>::new())
        .unwrap();
    let (mut parts, mut body) = request.into_parts();
    let proto = HeaderValue::from_static("http");
    let (answer, lease) = pool
        .send(
            &mut parts,
            &proto,
            None,
            None,
            std::pin::Pin::new(&mut body),
            crate::clock::now(),
        )
        .await
        .unwrap();
    let Answer::Response(response) = answer else {
        panic!("not a response");
    };
    let unread = ResponseBody::http1(response.into_body(), lease);
    set.remove(leaving.address());
    exchange(&pool, &steady).await;
    assert_eq!(pool.hosts(), 2, "still in use: kept");
    assert_eq!(&unread.collect().await.unwrap().to_bytes()[..], b"ok");
    exchange(&pool, &steady).await;
    assert_eq!(pool.hosts(), 1, "its last exchange ended: forgotten");
}
