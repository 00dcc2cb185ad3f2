//! Changing the backend set while traffic flows.

mod support;

use std::time::Duration;

use support::{TestBackend, TestProxy, client, get, tally};
use tower::discover::Change;
use tower_lb::BackendSet;
use tower_lb::balance::RoundRobin;

#[tokio::test]
async fn a_removed_backend_drains_its_in_flight_request() {
    let a = TestBackend::start("a").await;
    let b = TestBackend::start("b").await;
    let set = BackendSet::new([a.backend(), b.backend()]);
    let proxy = TestProxy::start(set.clone(), RoundRobin::new()).await;
    let client = client();

    // Round-robin sends the first request to "a": hold it there.
    let held = tokio::spawn({
        let client = client.clone();
        let url = proxy.url("/hold");
        async move { get(&client, &url).await }
    });
    for _ in 0..1000 {
        if a.hits() > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(a.hits(), 1, "the held request reached a");
    let removed = set
        .remove(&a.backend().address().clone())
        .expect("a was a member");
    assert_eq!(removed.state().in_flight(), 1);
    assert_eq!(set.draining().len(), 1, "a drains");

    // New requests all go to "b" while "a" finishes its request.
    let counts = tally(&client, &proxy.url("/"), 20).await;
    assert_eq!(counts.get("b"), Some(&20), "{counts:?}");
    assert_eq!(a.hits(), 1);

    a.release.notify_one();
    let answer = held.await.unwrap();
    assert_eq!(answer.status, http::StatusCode::OK);
    assert_eq!(answer.body, "a released");
    // The in-flight count ends with the response body.
    for _ in 0..100 {
        if set.draining().is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(set.draining().is_empty());
    assert_eq!(removed.state().in_flight(), 0);
}

#[tokio::test]
async fn a_backend_added_at_run_time_takes_its_turn() {
    let a = TestBackend::start("a").await;
    let b = TestBackend::start("b").await;
    let set = BackendSet::new([a.backend()]);
    let proxy = TestProxy::start(set.clone(), RoundRobin::new()).await;
    let client = client();
    assert_eq!(tally(&client, &proxy.url("/"), 4).await.get("a"), Some(&4));
    set.insert(b.backend());
    let counts = tally(&client, &proxy.url("/"), 10).await;
    assert_eq!(counts.get("a"), Some(&5), "{counts:?}");
    assert_eq!(counts.get("b"), Some(&5), "{counts:?}");
}

#[tokio::test]
async fn a_discover_stream_drives_the_set() {
    let a = TestBackend::start("a").await;
    let b = TestBackend::start("b").await;
    let set = BackendSet::default();
    let proxy = TestProxy::start(set.clone(), RoundRobin::new()).await;
    let client = client();
    let (changes, mut receiver) = tokio::sync::mpsc::unbounded_channel();
    let stream = futures_util::stream::poll_fn(move |cx| {
        receiver
            .poll_recv(cx)
            .map(|change| change.map(Ok::<_, std::convert::Infallible>))
    });
    let follower = tokio::spawn({
        let set = set.clone();
        async move { set.follow(stream).await }
    });
    assert_eq!(get(&client, &proxy.url("/")).await.status, 503);

    changes.send(Change::Insert("a", a.backend())).unwrap();
    changes.send(Change::Insert("b", b.backend())).unwrap();
    wait_until(|| set.snapshot().len() == 2).await;
    let counts = tally(&client, &proxy.url("/"), 4).await;
    assert_eq!((counts.get("a"), counts.get("b")), (Some(&2), Some(&2)));

    changes.send(Change::Remove("a")).unwrap();
    wait_until(|| set.snapshot().len() == 1).await;
    assert_eq!(tally(&client, &proxy.url("/"), 4).await.get("b"), Some(&4));

    drop(changes);
    assert!(follower.await.unwrap().is_ok(), "the stream ended cleanly");
}

async fn wait_until(condition: impl Fn() -> bool) {
    for _ in 0..400 {
        if condition() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    panic!("condition not met in 2 s");
}
