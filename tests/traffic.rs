//! Traffic controls on real sockets: bounded-load hashing (more to come:
//! limits and the queue, overload signals, stickiness, tiers, hedging).

mod support;

use std::time::Duration;

use http_body_util::Full;
use support::{TestBackend, TestProxy, client, send};
use tower_lb::BackendSet;
use tower_lb::balance::ConsistentHash;

/// Sends `n` concurrent slow requests with one hash key; returns the hits
/// per backend once all have answered.
async fn hot_key(strategy: ConsistentHash, n: usize) -> Vec<usize> {
    let backends = [
        TestBackend::start("a").await,
        TestBackend::start("b").await,
        TestBackend::start("c").await,
        TestBackend::start("d").await,
    ];
    let set = BackendSet::new(backends.iter().map(TestBackend::backend));
    let proxy = TestProxy::start(set, strategy).await;
    let client = client();
    let mut answers = Vec::new();
    for _ in 0..n {
        let request = http::Request::get(proxy.url("/slow?ms=600"))
            .header("x-user", "hot")
            .body(Full::default())
            .unwrap();
        let client = client.clone();
        answers.push(tokio::spawn(async move { send(&client, request).await }));
        // One at a time into the proxy, so each pick sees the ones before.
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    for answer in answers {
        assert_eq!(answer.await.unwrap().status, 200);
    }
    backends.iter().map(TestBackend::hits).collect()
}

#[tokio::test]
async fn a_hot_key_stays_within_the_bound() {
    let key: tower_lb::balance::HashKey = "header:x-user".parse().unwrap();
    let plain = hot_key(ConsistentHash::new(key.clone()), 12).await;
    assert_eq!(plain.iter().filter(|&&h| h > 0).count(), 1, "{plain:?}");
    let bounded = hot_key(
        ConsistentHash::new(key).with_balance_factor(1.25).unwrap(),
        12,
    )
    .await;
    // ⌈1.25 × 12 / 4⌉ = 4 at most each, the key's own backend filled first.
    assert_eq!(bounded.iter().sum::<usize>(), 12, "{bounded:?}");
    assert!(bounded.iter().all(|&h| h <= 4), "{bounded:?}");
    assert!(bounded.iter().any(|&h| h >= 3), "{bounded:?}");
}
