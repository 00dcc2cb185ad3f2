//! Health checking on real sockets: detection, recovery, slow start,
//! ejection, panic routing.

mod support;

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use support::rude::RudeBackend;
use support::{TestBackend, TestProxy, client, get, tally};
use tokio::sync::broadcast;
use tokio::time::Instant;
use tower::ServiceBuilder;
use tower_lb::balance::RoundRobin;
use tower_lb::health::{
    ActiveHealthCheck, HealthEvent, HealthEventKind, OutlierDetection, PassiveHealthLayer, Probe,
    Verdict,
};
use tower_lb::{Backend, BackendSet, Forward, LoadBalanceLayer};

const INTERVAL: Duration = Duration::from_millis(100);

/// Waits for an event about `url` that `want` accepts; returns when it came.
async fn wait_for(
    events: &mut broadcast::Receiver<HealthEvent>,
    url: &str,
    want: impl Fn(&HealthEventKind) -> bool,
) -> Instant {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let event = tokio::time::timeout_at(deadline, events.recv())
            .await
            .expect("the event within 10 s")
            .expect("the event channel open");
        if event.backend().address().as_str() == url && want(event.kind()) {
            return Instant::now();
        }
    }
}

/// Waits (up to 5 s) until `condition` holds.
async fn until(condition: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !condition() {
        assert!(Instant::now() < deadline, "condition not met in 5 s");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Round-robin with passive health over `Forward`, served on a port.
async fn passive_proxy(set: &BackendSet, detection: OutlierDetection) -> TestProxy {
    let service = ServiceBuilder::new()
        .layer(LoadBalanceLayer::new(set.clone(), RoundRobin::new()))
        .layer(PassiveHealthLayer::new(set.clone(), detection))
        .service(Forward::new());
    TestProxy::serve(set.clone(), service).await
}

fn became(verdict: Verdict) -> impl Fn(&HealthEventKind) -> bool {
    move |kind| matches!(kind, HealthEventKind::Verdict { to, .. } if *to == verdict)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_probe_takes_a_backend_out_and_a_passing_one_brings_it_back_slowly() {
    let backends = [
        TestBackend::start("a").await,
        TestBackend::start("b").await,
        TestBackend::start("c").await,
    ];
    let b_url = backends[1].backend().address().as_str().to_owned();
    let set = BackendSet::new(backends.iter().map(TestBackend::backend))
        .with_slow_start(Duration::from_secs(2));
    let mut events = set.events();
    let _checks = ActiveHealthCheck::new(Probe::http("/health").unwrap())
        .interval(INTERVAL)
        .timeout(Duration::from_millis(500))
        .unhealthy_after(3)
        .healthy_after(2)
        .spawn(&set)
        .unwrap();
    let proxy = TestProxy::start(set.clone(), RoundRobin::new()).await;
    let client = client();
    until(|| {
        set.snapshot()
            .backends()
            .iter()
            .all(|b| b.state().verdict() == Verdict::Healthy)
    })
    .await;

    // b's probe fails: out within 3 intervals (plus jitter and slack).
    let flipped = Instant::now();
    backends[1].healthy.store(false, Ordering::SeqCst);
    let out = wait_for(&mut events, &b_url, became(Verdict::Unhealthy)).await;
    let detection = out - flipped;
    println!("detection: {detection:?}");
    assert!(
        detection <= INTERVAL * 3 + Duration::from_millis(600),
        "{detection:?}"
    );
    let counts = tally(&client, &proxy.url("/"), 30).await;
    assert_eq!(counts.get("b"), None, "{counts:?}");
    let error = set.snapshot().backends()[1].state().last_probe_error();
    assert_eq!(error.as_deref(), Some("status 500 Internal Server Error"));

    // It passes again: back within 2 intervals.
    let fixed = Instant::now();
    backends[1].healthy.store(true, Ordering::SeqCst);
    let back = wait_for(&mut events, &b_url, became(Verdict::Healthy)).await;
    let recovery = back - fixed;
    println!("recovery: {recovery:?}");
    assert!(
        recovery <= INTERVAL * 2 + Duration::from_millis(600),
        "{recovery:?}"
    );

    // Slow start over 2 s: b's share over successive windows rises (about
    // 0.10, 0.18, 0.25, 0.31 of all traffic), then is its full third.
    let mut shares = Vec::new();
    for _ in 0..5 {
        let window = Instant::now() + Duration::from_millis(500);
        let mut counts: HashMap<String, usize> = HashMap::new();
        while Instant::now() < window {
            let answer = get(&client, &proxy.url("/")).await;
            *counts.entry(answer.body).or_default() += 1;
        }
        let total: usize = counts.values().sum();
        shares.push(counts.get("b").copied().unwrap_or(0) as f64 / total as f64);
    }
    println!("b's share per window: {shares:?}");
    assert!(shares[0] < 0.2, "starts well under its third: {shares:?}");
    assert!(
        shares[0] < shares[2] && shares[0] < shares[4],
        "rises: {shares:?}"
    );
    assert!(shares[4] > 0.22, "ends at about its third: {shares:?}");
}

#[tokio::test]
async fn members_that_join_are_probed_and_members_that_leave_are_not() {
    let a = TestBackend::start("a").await;
    let b = TestBackend::start("b").await;
    let set = BackendSet::new([a.backend()]);
    let mut events = set.events();
    let _checks = ActiveHealthCheck::new(Probe::http("/health").unwrap())
        .interval(INTERVAL)
        .spawn(&set)
        .unwrap();
    b.healthy.store(false, Ordering::SeqCst);
    set.insert(b.backend());
    let b_url = b.backend().address().as_str().to_owned();
    // The first probe of a new member decides its first verdict.
    wait_for(&mut events, &b_url, became(Verdict::Unhealthy)).await;
    let removed = set.remove(b.backend().address()).unwrap();
    until(|| removed.state().verdict() == Verdict::Unknown).await;
    b.healthy.store(true, Ordering::SeqCst);
    tokio::time::sleep(INTERVAL * 4).await;
    assert_eq!(
        removed.state().verdict(),
        Verdict::Unknown,
        "no probe since"
    );
}

#[tokio::test]
async fn a_tcp_probe_finds_a_dead_backend() {
    let a = TestBackend::start("a").await;
    let set = BackendSet::new([a.backend()]);
    let url = a.backend().address().as_str().to_owned();
    let mut events = set.events();
    let _checks = ActiveHealthCheck::new(Probe::tcp())
        .interval(INTERVAL)
        .unhealthy_after(2)
        .spawn(&set)
        .unwrap();
    wait_for(&mut events, &url, became(Verdict::Healthy)).await;
    a.stop();
    wait_for(&mut events, &url, became(Verdict::Unhealthy)).await;
    let error = set.snapshot().backends()[0]
        .state()
        .last_probe_error()
        .unwrap();
    assert!(error.starts_with("connect:"), "{error}");
}

#[tokio::test]
async fn failing_responses_eject_and_the_backend_returns_after_the_ejection() {
    let a = TestBackend::start("a").await;
    let b = TestBackend::start("b").await;
    let set = BackendSet::new([a.backend(), b.backend()]);
    let b_url = b.backend().address().as_str().to_owned();
    let mut events = set.events();
    let detection = OutlierDetection::new()
        .consecutive_failures(3)
        .base_ejection(Duration::from_millis(500));
    let proxy = passive_proxy(&set, detection).await;
    let client = client();
    // Round-robin alternates: b answers 503 to every other request.
    b.stop();
    for _ in 0..6 {
        let _ = get(&client, &proxy.url("/")).await;
    }
    let ejected = wait_for(&mut events, &b_url, |k| {
        matches!(k, HealthEventKind::Ejected { .. })
    })
    .await;
    let counts = tally(&client, &proxy.url("/"), 10).await;
    assert_eq!(counts.get("a"), Some(&10), "b is ejected: {counts:?}");
    // No timer ends the ejection: the first request that could go to b
    // after the deadline does. So keep a trickle of traffic going.
    let url = proxy.url("/");
    let trickle = tokio::spawn(async move {
        loop {
            let _ = get(&client, &url).await;
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    });
    let returned = wait_for(&mut events, &b_url, |k| *k == HealthEventKind::Returned).await;
    trickle.abort();
    let ejection = returned - ejected;
    assert!(
        ejection >= Duration::from_millis(450) && ejection < Duration::from_millis(1500),
        "{ejection:?}"
    );
}

#[tokio::test]
async fn bodies_cut_short_count_as_failures() {
    let good = TestBackend::start("a").await;
    let cut = RudeBackend::cut_short().await;
    let cut_backend: Backend = cut.url().parse().unwrap();
    let cut_url = cut_backend.address().as_str().to_owned();
    let set = BackendSet::new([good.backend(), cut_backend]);
    let mut events = set.events();
    let detection = OutlierDetection::new().consecutive_failures(3);
    let proxy = passive_proxy(&set, detection).await;
    let client = client();
    // Round-robin alternates: every other response is cut short, which the
    // client sees as a broken body under a 200, or (when the break is
    // already known before the proxy's server has flushed the head) as a
    // connection closed before the response.
    let mut cut_bodies = 0;
    for _ in 0..6 {
        let request = http::Request::get(proxy.url("/"))
            .body(Full::<Bytes>::default().boxed())
            .unwrap();
        match client.request(request).await {
            Ok(response) => {
                assert_eq!(response.status(), 200);
                if response.into_body().collect().await.is_err() {
                    cut_bodies += 1;
                }
            }
            Err(error) => {
                assert!(!error.is_connect(), "{error}");
                cut_bodies += 1;
            }
        }
    }
    assert_eq!(cut_bodies, 3);
    assert_eq!(cut.hits(), 3);
    wait_for(&mut events, &cut_url, |k| {
        matches!(k, HealthEventKind::Ejected { .. })
    })
    .await;
    let counts = tally(&client, &proxy.url("/"), 10).await;
    assert_eq!(
        counts.get("a"),
        Some(&10),
        "the cut backend is ejected: {counts:?}"
    );
}

#[tokio::test]
async fn panic_routing_sends_to_unhealthy_backends_only_when_asked() {
    let a = TestBackend::start("a").await;
    let set = BackendSet::new([a.backend()]);
    set.snapshot().backends()[0]
        .state()
        .set_verdict(Verdict::Unhealthy, None);
    let client = client();
    let strict = TestProxy::start(set.clone(), RoundRobin::new()).await;
    assert_eq!(get(&client, &strict.url("/")).await.status, 503);
    let layer = LoadBalanceLayer::new(set.clone(), RoundRobin::new()).panic_routing(true);
    let service = ServiceBuilder::new().layer(layer).service(Forward::new());
    let panicking = TestProxy::serve(set, service).await;
    let answer = get(&client, &panicking.url("/")).await;
    assert_eq!((answer.status.as_u16(), answer.body.as_str()), (200, "a"));
}

#[tokio::test]
async fn probes_that_see_a_backend_come_back_end_its_ejection() {
    let a = TestBackend::start("a").await;
    let b = TestBackend::start("b").await;
    let b_addr = b.addr;
    let b_url = b.backend().address().as_str().to_owned();
    let set = BackendSet::new([a.backend(), b.backend()]);
    let mut events = set.events();
    let service = ServiceBuilder::new()
        .layer(LoadBalanceLayer::new(set.clone(), RoundRobin::new()))
        .layer(PassiveHealthLayer::new(
            set.clone(),
            OutlierDetection::new().consecutive_failures(1),
        ))
        .service(Forward::new());
    let proxy = TestProxy::serve(set.clone(), service).await;
    let client = client();
    // b dies; a request that meets it ejects it (for 30 s).
    b.stop();
    for _ in 0..2 {
        let _ = get(&client, &proxy.url("/")).await;
    }
    assert!(
        set.snapshot().backends()[1]
            .state()
            .ejection_remaining()
            .is_some()
    );
    // Probes start: they see it down, then back on its port.
    let _checks = ActiveHealthCheck::new(Probe::http("/health").unwrap())
        .interval(INTERVAL)
        .unhealthy_after(1)
        .healthy_after(1)
        .spawn(&set)
        .unwrap();
    wait_for(&mut events, &b_url, became(Verdict::Unhealthy)).await;
    let _b = TestBackend::start_on("b", b_addr).await;
    let returned = Instant::now();
    wait_for(&mut events, &b_url, |k| *k == HealthEventKind::Returned).await;
    assert!(
        returned.elapsed() < Duration::from_secs(2),
        "not the 30 s ejection"
    );
    let counts = tally(&client, &proxy.url("/"), 10).await;
    assert_eq!(counts.get("b"), Some(&5), "{counts:?}");
}
