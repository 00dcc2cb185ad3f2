//! Traffic controls on real sockets: bounded-load hashing, per-backend
//! limits and the queue, overload signals, sticky cookies, priority tiers.

mod support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use http_body_util::Full;
use support::process::{ProxyProcess, free_addr, run_proxy};
use support::{TestBackend, TestProxy, client, get, send};
use tower::Layer;
use tower_lb::balance::{ConsistentHash, QueueLayer, RoundRobin};
use tower_lb::{BackendSet, Forward, LoadBalanceLayer};

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

async fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    for _ in 0..500 {
        if done() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("timed out waiting until {what}");
}

#[tokio::test]
async fn full_backends_queue_requests_in_order_then_refuse_with_retry_after() {
    let backends = [TestBackend::start("a").await, TestBackend::start("b").await];
    let set = BackendSet::new(backends.iter().map(TestBackend::backend));
    let balance = LoadBalanceLayer::new(set.clone(), RoundRobin::new()).max_in_flight(1);
    let queue = QueueLayer::new(&balance, 3, Duration::from_millis(1500));
    let stats = queue.clone();
    let service = queue.layer(balance.layer(Forward::new()));
    let proxy = TestProxy::serve(set, service).await;
    let client = client();

    // Both backends full: one held request each.
    let hold = |client: &support::TestClient| {
        let client = client.clone();
        let url = proxy.url("/hold");
        tokio::spawn(async move { get(&client, &url).await })
    };
    let held = [hold(&client), hold(&client)];
    wait_until("both backends hold one", || {
        backends.iter().all(|b| b.hits() == 1)
    })
    .await;

    // Three wait, in the order they came.
    let done = Arc::new(Mutex::new(Vec::new()));
    let mut queued = Vec::new();
    for n in 0..3 {
        let (client, url, done) = (client.clone(), proxy.url("/"), done.clone());
        queued.push(tokio::spawn(async move {
            let answer = get(&client, &url).await;
            done.lock().unwrap().push(n);
            answer
        }));
        wait_until("the request queues", || stats.stats().pending == n + 1).await;
    }
    // A fourth finds the queue full: 503 at once, told to come back.
    let refused = get(&client, &proxy.url("/")).await;
    assert_eq!(refused.status, 503);
    assert_eq!(refused.headers["retry-after"], "2");
    assert_eq!(
        backends[0].hits() + backends[1].hits(),
        2,
        "none reached a backend"
    );

    // One slot frees: the three go through it, first come first served.
    backends[0].release.notify_one();
    for answer in queued {
        assert_eq!(answer.await.unwrap().status, 200);
    }
    assert_eq!(*done.lock().unwrap(), [0, 1, 2]);
    assert_eq!(
        backends[0].hits(),
        4,
        "every queued request took a's freed slot"
    );

    // Full again; a queued request whose wait runs out gets 503.
    let again = hold(&client);
    wait_until("a holds one again", || backends[0].hits() == 5).await;
    let started = tokio::time::Instant::now();
    let timed_out = get(&client, &proxy.url("/")).await;
    let waited = started.elapsed();
    assert_eq!(timed_out.status, 503);
    assert_eq!(timed_out.headers["retry-after"], "2");
    assert!(
        waited >= Duration::from_millis(1400) && waited < Duration::from_secs(3),
        "{waited:?}"
    );
    let stats = stats.stats();
    assert_eq!(
        (
            stats.queued_total,
            stats.rejected_total,
            stats.timed_out_total,
            stats.pending
        ),
        (4, 1, 1, 0)
    );
    assert!(stats.wait_seconds_total > 0.0);
    backends[1].release.notify_one();
    backends[0].release.notify_one();
    for task in held.into_iter().chain([again]) {
        assert_eq!(task.await.unwrap().status, 200);
    }
}

#[tokio::test]
async fn the_example_proxy_limits_queues_and_bounds_from_its_flags() {
    let a = TestBackend::start("a").await;
    let admin = free_addr();
    let proxy = ProxyProcess::start(&[
        "--backend",
        &a.url(),
        "--strategy",
        "hash",
        "--hash-key",
        "header:x-user",
        "--hash-balance-factor",
        "1.25",
        "--max-in-flight",
        "1",
        "--max-pending",
        "4",
        "--queue-timeout",
        "300ms",
        "--admin",
        &admin.to_string(),
    ])
    .await;
    let client = client();
    let held = {
        let (client, url) = (client.clone(), proxy.url("/hold"));
        tokio::spawn(async move { get(&client, &url).await })
    };
    wait_until("a holds one", || a.hits() == 1).await;
    let started = tokio::time::Instant::now();
    let refused = get(&client, &proxy.url("/")).await;
    assert_eq!(refused.status, 503, "{}", refused.body);
    assert_eq!(refused.headers["retry-after"], "1");
    assert!(started.elapsed() >= Duration::from_millis(280));
    assert_eq!(a.hits(), 1, "the backend never saw the refused request");
    let metrics = get(&client, &format!("http://{admin}/metrics")).await.body;
    let value = |name: &str| {
        metrics
            .lines()
            .find_map(|line| line.strip_prefix(name)?.trim().parse::<f64>().ok())
            .unwrap_or_else(|| panic!("{name} in {metrics}"))
    };
    assert_eq!(value("lb_queue_pending "), 0.0);
    assert!(value("lb_queue_timeouts_total ") >= 1.0);
    // The example gives its queue to the admin service: /status shows it.
    let status: serde_json::Value =
        serde_json::from_str(&get(&client, &format!("http://{admin}/status")).await.body).unwrap();
    assert_eq!(status["queue"]["max_pending"], 4, "{status}");
    assert!(
        status["queue"]["timeouts_total"].as_u64() >= Some(1),
        "{status}"
    );
    a.release.notify_one();
    assert_eq!(held.await.unwrap().status, 200);
    assert_eq!(get(&client, &proxy.url("/")).await.status, 200);

    let (code, output) = run_proxy(&[
        "--backend",
        &a.url(),
        "--strategy",
        "round-robin",
        "--hash-balance-factor",
        "1.25",
    ])
    .await;
    assert_eq!(code, 2, "{output}");
    assert!(output.contains("hash-balance-factor"), "{output}");
}

/// A backend that answers its first `busy` requests 429 with
/// `Retry-After: 2`, then 200; counts what it got.
async fn busy_backend(busy: usize) -> (String, Arc<std::sync::atomic::AtomicUsize>) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let hits = Arc::new(AtomicUsize::new(0));
    let counted = hits.clone();
    let app = axum::Router::new().fallback(move || {
        let hits = counted.clone();
        async move {
            let n = hits.fetch_add(1, Ordering::SeqCst);
            if n < busy {
                (
                    http::StatusCode::TOO_MANY_REQUESTS,
                    [("retry-after", "2")],
                    "busy",
                )
            } else {
                (http::StatusCode::OK, [("retry-after", "0")], "z")
            }
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, hits)
}

#[tokio::test]
async fn a_backend_answering_429_with_retry_after_gets_nothing_for_that_long() {
    use std::sync::atomic::Ordering;
    use tower_lb::health::{OutlierDetection, PassiveHealthLayer};
    let a = TestBackend::start("a").await;
    let (busy_url, busy_hits) = busy_backend(1).await;
    let set = BackendSet::new([a.backend(), busy_url.parse().unwrap()]);
    let service = tower::ServiceBuilder::new()
        .layer(LoadBalanceLayer::new(set.clone(), RoundRobin::new()))
        .layer(PassiveHealthLayer::new(
            set.clone(),
            OutlierDetection::new(),
        ))
        .service(Forward::new());
    let proxy = TestProxy::serve(set, service).await;
    let client = client();
    // Round-robin: a, then the busy one, whose 429 reaches the client.
    assert_eq!(get(&client, &proxy.url("/")).await.body, "a");
    let answer = get(&client, &proxy.url("/")).await;
    assert_eq!(answer.status, 429);
    assert_eq!(answer.headers["retry-after"], "2");
    let paused_at = tokio::time::Instant::now();
    let mut to_a = 0;
    while paused_at.elapsed() < Duration::from_millis(1800) {
        assert_eq!(get(&client, &proxy.url("/")).await.body, "a");
        to_a += 1;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(busy_hits.load(Ordering::SeqCst), 1, "paused for 2 s");
    assert!(to_a > 10);
    tokio::time::sleep(Duration::from_millis(400)).await;
    let bodies: Vec<String> = bodies_of(&client, &proxy.url("/"), 4).await;
    assert!(
        bodies.iter().any(|b| b == "z"),
        "back after 2 s: {bodies:?}"
    );
}

#[tokio::test]
async fn an_overload_answer_is_retried_elsewhere_when_retry_on_lists_it() {
    use tower_lb::failover::FailoverLayer;
    use tower_lb::health::{OutlierDetection, PassiveHealthLayer};
    let a = TestBackend::start("a").await;
    let (busy_url, busy_hits) = busy_backend(usize::MAX).await;
    let set = BackendSet::new([busy_url.parse().unwrap(), a.backend()]);
    let service = tower::ServiceBuilder::new()
        .layer(FailoverLayer::new().retry_statuses([429, 502, 503, 504]))
        .layer(LoadBalanceLayer::new(set.clone(), RoundRobin::new()))
        .layer(PassiveHealthLayer::new(
            set.clone(),
            OutlierDetection::new(),
        ))
        .service(Forward::new());
    let proxy = TestProxy::serve(set, service).await;
    let client = client();
    for _ in 0..6 {
        let answer = get(&client, &proxy.url("/")).await;
        assert_eq!((answer.status.as_u16(), answer.body.as_str()), (200, "a"));
    }
    assert_eq!(
        busy_hits.load(std::sync::atomic::Ordering::SeqCst),
        1,
        "tried once, then paused"
    );
}

async fn bodies_of(client: &support::TestClient, url: &str, n: usize) -> Vec<String> {
    let mut bodies = Vec::new();
    for _ in 0..n {
        bodies.push(get(client, url).await.body);
    }
    bodies
}

/// A proxy with sticky round-robin over `set`, its cookie keyed by `key`.
async fn sticky_proxy(
    set: &BackendSet,
    key: &[u8],
) -> (TestProxy, tower_lb::balance::StickyCookieLayer) {
    use tower_lb::balance::{Sticky, StickyCookie, StickyCookieLayer};
    let cookie = StickyCookie::new("srv").unwrap().with_key(key).unwrap();
    let layer = StickyCookieLayer::new(set, cookie.clone());
    let service = tower::ServiceBuilder::new()
        .layer(layer.clone())
        .layer(LoadBalanceLayer::new(
            set,
            Sticky::new(cookie, RoundRobin::new()),
        ))
        .service(Forward::new());
    (TestProxy::serve(set.clone(), service).await, layer)
}

async fn with_cookie(client: &support::TestClient, url: &str, cookie: &str) -> support::Answer {
    let request = http::Request::get(url)
        .header("cookie", cookie)
        .body(Full::default())
        .unwrap();
    send(client, request).await
}

/// The `name=value` part of the answer's `Set-Cookie`, if it has one.
fn set_cookie(answer: &support::Answer) -> Option<String> {
    let value = answer.headers.get("set-cookie")?.to_str().unwrap();
    assert!(
        value.ends_with("; Path=/; HttpOnly; SameSite=Lax"),
        "{value}"
    );
    Some(value.split(';').next().unwrap().to_owned())
}

#[tokio::test]
async fn sticky_cookies_pin_move_with_the_backend_and_ignore_forgeries() {
    let backends = [
        TestBackend::start("a").await,
        TestBackend::start("b").await,
        TestBackend::start("c").await,
    ];
    let set = BackendSet::new(backends.iter().map(TestBackend::backend));
    let (proxy, layer) = sticky_proxy(&set, b"0123456789abcdef-shared").await;
    let client = client();
    let first = get(&client, &proxy.url("/")).await;
    let cookie = set_cookie(&first).expect("the first response sets the cookie");
    assert!(!cookie.contains("127.0.0.1"), "{cookie}");
    for _ in 0..10 {
        let again = with_cookie(&client, &proxy.url("/"), &cookie).await;
        assert_eq!(again.body, first.body, "pinned");
        assert_eq!(set_cookie(&again), None, "not set again while it holds");
    }
    // A second proxy with the same key accepts the cookie.
    let (other, _) = sticky_proxy(&set, b"0123456789abcdef-shared").await;
    for _ in 0..3 {
        assert_eq!(
            with_cookie(&client, &other.url("/"), &cookie).await.body,
            first.body
        );
    }
    // Altered by one digit, or forged: balanced as new, cookie re-issued.
    let mut altered = cookie.clone().into_bytes();
    let last = altered.len() - 1;
    altered[last] = if altered[last] == b'0' { b'1' } else { b'0' };
    let altered = String::from_utf8(altered).unwrap();
    let forged = "srv=00112233445566778899aabbccddeeff";
    let mut homes = std::collections::HashSet::new();
    for bad in [altered.as_str(), forged, forged] {
        let answer = with_cookie(&client, &proxy.url("/"), bad).await;
        homes.insert(answer.body.clone());
        let fresh = set_cookie(&answer).expect("re-issued");
        assert_ne!(fresh, bad);
    }
    assert!(homes.len() >= 2, "round-robin, not pinned: {homes:?}");
    // Drained: the client moves, gets a new cookie, and sticks there.
    let home = backends.iter().find(|b| b.name == first.body).unwrap();
    assert!(set.drain(home.backend().address()));
    let moved = with_cookie(&client, &proxy.url("/"), &cookie).await;
    assert_ne!(moved.body, first.body);
    let new_cookie = set_cookie(&moved).expect("re-issued for the new backend");
    for _ in 0..5 {
        assert_eq!(
            with_cookie(&client, &proxy.url("/"), &new_cookie)
                .await
                .body,
            moved.body
        );
    }
    // Removed from the set: the same.
    let second_home = backends.iter().find(|b| b.name == moved.body).unwrap();
    set.remove(second_home.backend().address());
    let moved_again = with_cookie(&client, &proxy.url("/"), &new_cookie).await;
    assert!(moved_again.body != moved.body && moved_again.body != first.body);
    assert!(set_cookie(&moved_again).is_some());
    let stats = layer.stats();
    assert_eq!(stats.issued_total, 1);
    assert_eq!(stats.reissued_total, 5);
}

#[tokio::test]
async fn two_proxy_processes_sharing_a_secret_accept_each_others_cookies() {
    let a = TestBackend::start("a").await;
    let b = TestBackend::start("b").await;
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("sticky.key");
    std::fs::write(&key, "a shared secret of more than sixteen bytes\n").unwrap();
    let args = |key: &str| {
        vec![
            "--backend".to_owned(),
            a.url(),
            "--backend".to_owned(),
            b.url(),
            "--sticky-cookie".to_owned(),
            "srv".to_owned(),
            "--sticky-secret-file".to_owned(),
            key.to_owned(),
        ]
    };
    let key = key.to_str().unwrap();
    let start = |args: Vec<String>| async move {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        ProxyProcess::start(&args).await
    };
    let admin = free_addr();
    let mut with_admin = args(key);
    with_admin.extend(["--admin".to_owned(), admin.to_string()]);
    let one = start(with_admin).await;
    let two = start(args(key)).await;
    let client = client();
    let first = get(&client, &one.url("/")).await;
    let cookie = set_cookie(&first).expect("set by the first proxy");
    for _ in 0..4 {
        for proxy in [&one, &two] {
            let answer = with_cookie(&client, &proxy.url("/"), &cookie).await;
            assert_eq!(answer.body, first.body);
            assert_eq!(set_cookie(&answer), None);
        }
    }
    let metrics = get(&client, &format!("http://{admin}/metrics")).await.body;
    assert!(metrics.contains("lb_sticky_issued_total 1"), "{metrics}");
    assert!(metrics.contains("lb_sticky_reissued_total 0"), "{metrics}");
    // Without the shared key, a proxy does not know the cookie.
    let mut lone = args(key);
    lone.truncate(6);
    let three = start(lone).await;
    let mut answers = Vec::new();
    for _ in 0..2 {
        answers.push(with_cookie(&client, &three.url("/"), &cookie).await);
    }
    assert!(answers.iter().all(|a| set_cookie(a).is_some()), "re-issued");
    let bodies: std::collections::HashSet<&str> = answers.iter().map(|a| a.body.as_str()).collect();
    assert_eq!(bodies.len(), 2, "balanced, not pinned");
}

#[tokio::test]
async fn primaries_killed_one_by_one_spill_to_the_backup_as_envoy_does() {
    use tower_lb::balance::Tiered;
    use tower_lb::failover::FailoverLayer;
    use tower_lb::health::{OutlierDetection, PassiveHealthLayer};
    let primaries = [
        TestBackend::start("p0").await,
        TestBackend::start("p1").await,
        TestBackend::start("p2").await,
    ];
    let backup = TestBackend::start("backup").await;
    let backup_member: tower_lb::Backend = format!("{},backup", backup.url()).parse().unwrap();
    let set = BackendSet::new(
        primaries
            .iter()
            .map(TestBackend::backend)
            .chain([backup_member]),
    );
    // A dead primary is ejected at its first refused connection (the cap
    // lifted so that all three may go), and the request retried.
    let detection = OutlierDetection::new()
        .consecutive_failures(1)
        .max_ejected_share(1.0);
    let service = tower::ServiceBuilder::new()
        .layer(FailoverLayer::new())
        .layer(LoadBalanceLayer::new(&set, Tiered::new(RoundRobin::new())))
        .layer(PassiveHealthLayer::new(set.clone(), detection))
        .service(Forward::new());
    let proxy = TestProxy::serve(set.clone(), service).await;
    let client = client();
    let share_to_backup = |n: usize| {
        let (client, url) = (client.clone(), proxy.url("/"));
        async move {
            let mut to_backup = 0;
            for _ in 0..n {
                let answer = get(&client, &url).await;
                assert_eq!(answer.status, 200);
                to_backup += usize::from(answer.body == "backup");
            }
            to_backup
        }
    };
    assert_eq!(share_to_backup(300).await, 0, "all primaries up");
    // Expected 1 − 1.4 × 2/3 = 6.7 %, then 1 − 1.4 / 3 = 53.3 %, then all;
    // 600 requests each, about five standard deviations either way.
    let expected = [(10, 75), (260, 380), (600, 600)];
    let mut shares = Vec::new();
    for (primary, (low, high)) in primaries.iter().zip(expected) {
        primary.stop();
        // The first requests find it dead and eject it.
        share_to_backup(10).await;
        let got = share_to_backup(600).await;
        shares.push(got);
        assert!(
            (low..=high).contains(&got),
            "{got} of 600 to the backup: {shares:?}"
        );
    }
    eprintln!("to the backup with 1, 2, 3 primaries down: {shares:?} of 600");
    // All back (on their ports, let back at once): none to the backup.
    let back: Vec<TestBackend> = futures_util::future::join_all(
        primaries
            .iter()
            .map(|p| TestBackend::start_on(&p.name, p.addr)),
    )
    .await;
    for primary in &back {
        set.readmit(primary.backend().address());
    }
    assert_eq!(share_to_backup(300).await, 0, "all back");
}
