//! Hedging on real sockets: one backend slow (300 ms), two fast, a
//! sequential client. The p99 with and without hedges, the budget's cap,
//! the loser's in-flight count, and what is never hedged.

mod support;

use std::time::Duration;

use http_body_util::Full;
use support::process::{ProxyProcess, free_addr};
use support::{TestBackend, TestClient, TestProxy, client, get, send};
use tokio::time::Instant;
use tower::Layer;
use tower::util::option_layer;
use tower_lb::balance::RoundRobin;
use tower_lb::failover::{FailoverLayer, RetryBudget};
use tower_lb::hedge::HedgeLayer;
use tower_lb::{BackendSet, Forward, LoadBalanceLayer};

const SLOW: Duration = Duration::from_millis(300);

/// The slow backend first, so that round-robin sends it every third request.
async fn backends() -> [TestBackend; 3] {
    [
        TestBackend::start_with_delay("slow", SLOW).await,
        TestBackend::start("a").await,
        TestBackend::start("b").await,
    ]
}

/// Failover, hedging (if any) spending from its budget, round-robin.
async fn proxy(set: &BackendSet, hedge: Option<HedgeLayer>) -> TestProxy {
    let balance = LoadBalanceLayer::new(set, RoundRobin::new());
    let failover = FailoverLayer::new();
    // A layer that is off is left out, as in the example proxy.
    let hedge = hedge.map(|hedge| hedge.with_failover(&failover));
    let record = hedge.as_ref().map(HedgeLayer::recorder);
    let service = failover.layer(
        option_layer(hedge).layer(balance.layer(option_layer(record).layer(Forward::new()))),
    );
    TestProxy::serve(set.clone(), service).await
}

/// Latencies of `n` sequential GETs, sorted; each must answer 200.
async fn latencies(client: &TestClient, url: &str, n: usize) -> Vec<Duration> {
    let mut took = Vec::with_capacity(n);
    for _ in 0..n {
        let started = Instant::now();
        let answer = get(client, url).await;
        took.push(started.elapsed());
        assert_eq!(answer.status, 200, "{}", answer.body);
    }
    took.sort();
    took
}

fn p99(sorted: &[Duration]) -> Duration {
    let rank = (sorted.len() * 99).div_ceil(100).max(1);
    sorted[rank - 1]
}

fn p50(sorted: &[Duration]) -> Duration {
    sorted[sorted.len() / 2]
}

#[tokio::test]
async fn hedging_cuts_the_p99_of_a_slow_backend() {
    let backends = backends().await;
    let set = BackendSet::new(backends.iter().map(TestBackend::backend));
    let client = client();

    let plain = proxy(&set, None).await;
    let without = latencies(&client, &plain.url("/"), 60).await;
    drop(plain);

    let hedge = HedgeLayer::new(Duration::from_millis(50)).unwrap();
    let hedged = proxy(&set, Some(hedge.clone())).await;
    let with = latencies(&client, &hedged.url("/"), 60).await;
    let stats = hedge.stats();
    eprintln!(
        "60 sequential GETs, 1 of 3 backends 300 ms: without hedging p50 {:?} p99 {:?}; \
         with --hedge-after 50ms p50 {:?} p99 {:?} ({} hedges, {} won)",
        p50(&without),
        p99(&without),
        p50(&with),
        p99(&with),
        stats.sent_total,
        stats.won_total
    );
    assert!(p99(&without) >= Duration::from_millis(290), "{without:?}");
    assert!(p99(&with) < Duration::from_millis(150), "{with:?}");
    // Every request whose first try went to the slow backend was hedged,
    // and the hedge won (round-robin's position moves on for the hedges
    // too, so that is every other request).
    let slow_tries = backends[0].hits() as u64;
    assert!(
        slow_tries >= 20 + 20,
        "{slow_tries}: 20 without hedging, 20+ with"
    );
    assert_eq!(stats.sent_total, slow_tries - 20, "{stats:?}");
    assert_eq!(stats.won_total, stats.sent_total, "{stats:?}");
    // The slow backend's tries were cancelled: nothing left in flight.
    let snapshot = set.snapshot();
    assert!(
        snapshot
            .backends()
            .iter()
            .all(|b| b.state().in_flight() == 0)
    );
}

#[tokio::test]
async fn the_loser_s_in_flight_count_is_released_when_it_is_cancelled() {
    let backends = backends().await;
    let set = BackendSet::new(backends.iter().map(TestBackend::backend));
    let hedge = HedgeLayer::new(Duration::from_millis(50)).unwrap();
    let proxy = proxy(&set, Some(hedge.clone())).await;
    let client = client();
    // The first request goes to the slow backend and is hedged.
    let started = Instant::now();
    let answer = get(&client, &proxy.url("/")).await;
    let took = started.elapsed();
    assert_eq!(answer.body, "a");
    assert!(took < Duration::from_millis(200), "{took:?}");
    // Well before the slow backend would have answered, its count is 0.
    let slow = set.snapshot().backends()[0].clone();
    assert_eq!(slow.address().to_string(), backends[0].url());
    assert_eq!(slow.state().in_flight(), 0);
    assert_eq!(backends[0].hits(), 1, "the slow backend got the first try");
    assert_eq!(hedge.stats().won_total, 1);
}

#[tokio::test]
async fn the_budget_caps_hedges() {
    let backends = backends().await;
    let set = BackendSet::new(backends.iter().map(TestBackend::backend));
    // No floor and 5 %: 60 requests allow at most 3 hedges.
    let failover = FailoverLayer::new().budget(RetryBudget::new(Duration::from_secs(10), 0, 0.05));
    let hedge = HedgeLayer::new(Duration::from_millis(50))
        .unwrap()
        .with_failover(&failover);
    let balance = LoadBalanceLayer::new(&set, RoundRobin::new());
    let service =
        failover.layer(hedge.layer(balance.layer(hedge.recorder().layer(Forward::new()))));
    let proxy = TestProxy::serve(set.clone(), service).await;
    let took = latencies(&client(), &proxy.url("/"), 60).await;
    let stats = hedge.stats();
    eprintln!(
        "budget 5 %: {} hedges sent, {} refused; p99 {:?}",
        stats.sent_total,
        stats.budget_exhausted_total,
        p99(&took)
    );
    assert!(
        (1..=3).contains(&stats.sent_total),
        "at most 5 % of 60: {stats:?}"
    );
    // Every slow first try was due for a hedge; the budget refused the rest.
    let slow_tries = backends[0].hits() as u64;
    assert_eq!(stats.sent_total + stats.budget_exhausted_total, slow_tries);
    assert!(
        p99(&took) >= Duration::from_millis(290),
        "most slow tries waited"
    );
}

#[tokio::test]
async fn a_post_with_a_body_is_never_hedged() {
    let backends = backends().await;
    let set = BackendSet::new(backends.iter().map(TestBackend::backend));
    let hedge = HedgeLayer::new(Duration::from_millis(50)).unwrap();
    let proxy = proxy(&set, Some(hedge.clone())).await;
    let client = client();
    // Round-robin: the first POST goes to the slow backend.
    let started = Instant::now();
    let request = http::Request::post(proxy.url("/"))
        .body(Full::from("an order"))
        .unwrap();
    let answer = send(&client, request).await;
    assert_eq!(answer.body, "slow");
    assert!(started.elapsed() >= Duration::from_millis(290));
    assert_eq!(hedge.stats().sent_total, 0);
    assert_eq!(backends[1].hits() + backends[2].hits(), 0, "sent once only");
}

#[tokio::test]
async fn the_example_proxy_hedges_with_hedge_after() {
    let backends = backends().await;
    let admin = free_addr();
    let mut args = vec!["--workers", "1", "--hedge-after", "50ms"];
    let urls: Vec<String> = backends.iter().map(TestBackend::url).collect();
    for url in &urls {
        args.extend(["--backend", url]);
    }
    let admin_arg = admin.to_string();
    args.extend(["--admin", &admin_arg]);
    let proxy = ProxyProcess::start(&args).await;
    let client = client();
    let took = latencies(&client, &proxy.url("/"), 60).await;
    eprintln!(
        "example proxy --hedge-after 50ms: p50 {:?} p99 {:?}",
        p50(&took),
        p99(&took)
    );
    assert!(p99(&took) < Duration::from_millis(150), "{took:?}");
    let metrics = get(&client, &format!("http://{admin}/metrics")).await.body;
    let value = |name: &str| {
        metrics
            .lines()
            .find_map(|line| line.strip_prefix(name)?.trim().parse::<f64>().ok())
            .unwrap_or_else(|| panic!("{name} in {metrics}"))
    };
    let slow_tries = backends[0].hits() as f64;
    assert!(slow_tries >= 20.0);
    assert_eq!(value("lb_hedges_total "), slow_tries);
    assert_eq!(value("lb_hedges_won_total "), slow_tries);
    assert!(
        proxy
            .output()
            .contains("hedging requests without headers after 50ms")
    );
}
