//! Where requests go, through the full stack on real sockets.

mod support;

use std::collections::HashMap;
use std::time::Duration;

use http_body_util::Full;
use support::{TestBackend, TestProxy, client, get, send, tally};
use tower_lb::BackendSet;
use tower_lb::balance::{
    ConsistentHash, LeastConnections, PowerOfTwoChoices, Random, RoundRobin, WeightedRoundRobin,
};

async fn three() -> Vec<TestBackend> {
    vec![
        TestBackend::start("a").await,
        TestBackend::start("b").await,
        TestBackend::start("c").await,
    ]
}

#[tokio::test]
async fn round_robin_takes_turns() {
    let backends = three().await;
    let set = BackendSet::new(backends.iter().map(TestBackend::backend));
    let proxy = TestProxy::start(set, RoundRobin::new()).await;
    let client = client();
    let mut order = String::new();
    for _ in 0..9 {
        order.push_str(&get(&client, &proxy.url("/")).await.body);
    }
    assert_eq!(order, "abcabcabc");
}

#[tokio::test]
async fn weighted_round_robin_follows_nginx() {
    let backends = three().await;
    let set = BackendSet::new([
        backends[0].weighted(5),
        backends[1].weighted(1),
        backends[2].weighted(1),
    ]);
    let proxy = TestProxy::start(set, WeightedRoundRobin::new()).await;
    let client = client();
    let mut order = String::new();
    for _ in 0..14 {
        order.push_str(&get(&client, &proxy.url("/")).await.body);
    }
    assert_eq!(order, "aabacaaaabacaa");
}

#[tokio::test]
async fn random_follows_weights() {
    let backends = three().await;
    let set = BackendSet::new([
        backends[0].weighted(3),
        backends[1].weighted(1),
        backends[2].weighted(1),
    ]);
    let proxy = TestProxy::start(set, Random::new()).await;
    let counts = tally(&client(), &proxy.url("/"), 500).await;
    let a = counts.get("a").copied().unwrap_or(0);
    // Expected 300, sd ~11: five sd either way.
    assert!((245..=355).contains(&a), "{counts:?}");
}

#[tokio::test]
async fn least_connections_avoids_the_busy_backend() {
    let backends = three().await;
    let set = BackendSet::new(backends.iter().map(TestBackend::backend));
    let proxy = TestProxy::start(set, LeastConnections::new()).await;
    let client = client();
    // Hold one request on some backend.
    let held = tokio::spawn({
        let client = client.clone();
        let url = proxy.url("/hold");
        async move { get(&client, &url).await.body }
    });
    let busy = wait_for_hit(&backends).await;
    // While it is held, the other two share everything.
    let counts = tally(&client, &proxy.url("/"), 60).await;
    assert_eq!(counts.get(&backends[busy].name), None, "{counts:?}");
    assert_eq!(counts.values().sum::<usize>(), 60);
    backends[busy].release.notify_one();
    assert_eq!(
        held.await.unwrap(),
        format!("{} released", backends[busy].name)
    );
}

async fn wait_for_hit(backends: &[TestBackend]) -> usize {
    for _ in 0..200 {
        if let Some(i) = backends.iter().position(|b| b.hits() > 0) {
            return i;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("no backend got the held request");
}

#[tokio::test]
async fn ip_hash_keeps_each_client_on_one_backend() {
    let backends = three().await;
    let set = BackendSet::new(backends.iter().map(TestBackend::backend));
    // The test clients all come from 127.0.0.1, a trusted proxy here, so the
    // client is the address it names in X-Forwarded-For.
    let strategy = ConsistentHash::client_ip().trust_proxies(["127.0.0.0/8".parse().unwrap()]);
    let proxy = TestProxy::start(set, strategy).await;
    let client = client();
    let mut homes: HashMap<String, String> = HashMap::new();
    for round in 0..5 {
        for c in 0..40 {
            let ip = format!("198.51.100.{c}");
            let request = http::Request::get(proxy.url("/"))
                .header("x-forwarded-for", &ip)
                .body(Full::default())
                .unwrap();
            let body = send(&client, request).await.body;
            let home = homes.entry(ip).or_insert_with(|| body.clone());
            assert_eq!(*home, body, "client moved in round {round}");
        }
    }
    let used: std::collections::HashSet<_> = homes.values().collect();
    assert_eq!(used.len(), 3, "40 clients spread over all backends");
}

#[tokio::test]
async fn p2c_leans_away_from_the_slow_backend() {
    let backends = [
        TestBackend::start("a").await,
        TestBackend::start("b").await,
        TestBackend::start_with_delay("c", Duration::from_millis(200)).await,
    ];
    let set = BackendSet::new(backends.iter().map(TestBackend::backend));
    let proxy = TestProxy::start(set, PowerOfTwoChoices::new()).await;
    let client = client();
    // Until every backend has answered once, unmeasured ones are tried.
    for _ in 0..100 {
        if backends[2].hits() > 0 {
            break;
        }
        let _ = get(&client, &proxy.url("/")).await;
    }
    assert!(backends[2].hits() > 0, "c was tried while unmeasured");
    let counts = tally(&client, &proxy.url("/"), 90).await;
    let count = |name: &str| counts.get(name).copied().unwrap_or(0);
    // The 200 ms backend loses nearly every draw (an even split would give
    // it 30); a few wins are allowed for the fast ones' latency spikes on a
    // busy machine.
    assert!(count("c") <= 15, "{counts:?}");
    // a and b each win at least the draws against c (about 30 each); which
    // of them wins their own draws follows their measured latencies.
    assert!(count("a") > 10 && count("b") > 10, "{counts:?}");
}
