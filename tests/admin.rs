//! The admin service's write routes and `/status`, on real sockets.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use prometheus_client::registry::Registry;
use serde_json::Value;
use support::{TestBackend, TestClient, TestProxy, client, get, send};
use tower::ServiceBuilder;
use tower_lb::balance::RoundRobin;
use tower_lb::metrics::{AdminService, AdminTokens, MetricsLayer};
use tower_lb::{BackendSet, Forward, LoadBalanceLayer};

const TOKEN: &str = "5d41402abc4b2a76b9719d911017c592";

/// Metrics → LoadBalance → Forward (no failover: a request the drain broke
/// would fail, not be retried), and the admin service with one token.
async fn served(set: &BackendSet, tokens: Option<&str>) -> (TestProxy, TestProxy) {
    let mut registry = Registry::default();
    let metrics = MetricsLayer::new(set, &mut registry);
    let service = ServiceBuilder::new()
        .layer(metrics.clone())
        .layer(LoadBalanceLayer::new(set.clone(), RoundRobin::new()))
        .service(Forward::new());
    let proxy = TestProxy::serve(set.clone(), service).await;
    let mut admin = AdminService::new(set.clone(), registry).with_metrics(&metrics);
    if let Some(tokens) = tokens {
        admin = admin.with_tokens(AdminTokens::parse(tokens).unwrap());
    }
    let admin = TestProxy::serve(set.clone(), admin).await;
    (proxy, admin)
}

async fn post(client: &TestClient, url: &str, authorization: Option<&str>) -> (u16, Value) {
    let mut request = http::Request::post(url);
    if let Some(value) = authorization {
        request = request.header("authorization", value);
    }
    let answer = send(client, request.body(Full::<Bytes>::default()).unwrap()).await;
    let json = serde_json::from_str(&answer.body).unwrap_or(Value::Null);
    if answer.status == 401 {
        assert_eq!(
            answer.headers["www-authenticate"],
            "Bearer realm=\"tower-lb admin\""
        );
    }
    (answer.status.as_u16(), json)
}

fn bearer() -> String {
    format!("Bearer {TOKEN}")
}

#[tokio::test]
async fn write_routes_need_a_known_token_and_change_the_set() {
    let backends = [TestBackend::start("a").await, TestBackend::start("b").await];
    let set = BackendSet::new(backends.iter().map(TestBackend::backend));
    let (_proxy, admin) = served(&set, Some(&format!("ops:{TOKEN}\n"))).await;
    let client = client();
    let mut events = set.events();
    let b = backends[1].url();
    let drain = admin.url(&format!("/backends/drain?backend={b}"));

    // Unauthorised: no header, another scheme, a wrong or truncated token.
    for authorization in [
        None,
        Some(format!("Basic {TOKEN}")),
        Some("Bearer 00000000000000000000000000000000".to_owned()),
        Some(format!("Bearer {}", &TOKEN[..TOKEN.len() - 1])),
    ] {
        let (status, json) = post(&client, &drain, authorization.as_deref()).await;
        assert_eq!(status, 401, "{authorization:?}");
        assert!(json["error"].is_string(), "{json}");
    }
    assert!(set.snapshot().backends()[1].state().is_eligible());
    assert!(events.try_recv().is_err(), "no change, no event");

    // Authorised: the answer is the backend after the change.
    let (status, json) = post(&client, &drain, Some(&bearer())).await;
    assert_eq!(status, 200, "{json}");
    assert_eq!(json["schema"], 1);
    assert_eq!(json["action"], "drain");
    assert_eq!(json["changed"], true);
    assert_eq!(json["by"], "ops");
    assert_eq!(json["backend"]["url"], b);
    assert_eq!(json["backend"]["state"], "draining");
    assert_eq!(json["backend"]["healthy"], false);
    assert!(!set.snapshot().backends()[1].state().is_eligible());
    let event = events.try_recv().unwrap();
    assert_eq!(event.actor(), Some("ops"));
    assert_eq!(event.backend().address().as_str(), b);
    let (_, json) = post(&client, &drain, Some(&bearer())).await;
    assert_eq!(json["changed"], false, "drained already");

    // A read method on a write route is refused, naming the one allowed.
    let answer = get(&client, &drain).await;
    assert_eq!(answer.status, 405);
    assert_eq!(answer.headers["allow"], "POST");

    // Weight, eject, readmit, undrain: each reaches the set.
    let route = |path: &str| admin.url(&format!("/backends/{path}"));
    let (status, json) = post(
        &client,
        &route(&format!("weight?backend={b}&value=5")),
        Some(&bearer()),
    )
    .await;
    assert_eq!(
        (status, &json["backend"]["weight"]),
        (200, &Value::from(5)),
        "{json}"
    );
    assert_eq!(set.snapshot().backends()[1].weight(), 5);
    let a = backends[0].url();
    let (status, json) = post(
        &client,
        &route(&format!("eject?backend={a}&for=30s")),
        Some(&bearer()),
    )
    .await;
    assert_eq!(
        (status, &json["backend"]["state"]),
        (200, &Value::from("ejected")),
        "{json}"
    );
    let left = json["backend"]["ejection_remaining_ms"].as_u64().unwrap();
    assert!((29_000..=30_000).contains(&left), "{left}");
    let (status, json) = post(
        &client,
        &route(&format!("readmit?backend={a}")),
        Some(&bearer()),
    )
    .await;
    assert_eq!(
        (status, &json["changed"]),
        (200, &Value::from(true)),
        "{json}"
    );
    assert!(set.snapshot().backends()[0].state().is_eligible());
    let (status, json) = post(
        &client,
        &route(&format!("undrain?backend={b}")),
        Some(&bearer()),
    )
    .await;
    assert_eq!(
        (status, &json["backend"]["state"]),
        (200, &Value::from("healthy")),
        "{json}"
    );

    // An unknown backend is 404; a bad value 400 with the reason.
    let (status, json) = post(
        &client,
        &route("drain?backend=http://127.0.0.1:1"),
        Some(&bearer()),
    )
    .await;
    assert_eq!(status, 404, "{json}");
    assert!(
        json["error"]
            .as_str()
            .unwrap()
            .contains("no backend http://127.0.0.1:1"),
        "{json}"
    );
    for (query, reason) in [
        (
            format!("weight?backend={b}&value=0"),
            "weight must be 1 to 10000",
        ),
        (
            format!("weight?backend={b}&value=many"),
            "not a whole number",
        ),
        (format!("eject?backend={b}&for=forever"), "not a duration"),
        (format!("eject?backend={b}"), "for= is missing"),
        ("drain".to_owned(), "backend= is missing"),
    ] {
        let (status, json) = post(&client, &route(&query), Some(&bearer())).await;
        assert_eq!(status, 400, "{query}: {json}");
        assert!(
            json["error"].as_str().unwrap().contains(reason),
            "{query}: {json}"
        );
    }
    assert_eq!(
        set.snapshot().backends()[1].weight(),
        5,
        "a refused change changes nothing"
    );
}

#[tokio::test]
async fn without_tokens_the_write_routes_do_not_exist() {
    let backend = TestBackend::start("a").await;
    let set = BackendSet::new([backend.backend()]);
    let (_proxy, admin) = served(&set, None).await;
    let client = client();
    let url = admin.url(&format!("/backends/drain?backend={}", backend.url()));
    let (status, _) = post(&client, &url, Some(&bearer())).await;
    assert_eq!(status, 404);
    assert!(set.snapshot().backends()[0].state().is_eligible());
    let status: Value =
        serde_json::from_str(&get(&client, &admin.url("/status")).await.body).unwrap();
    assert_eq!(status["write_routes"], false);
}

/// Eight clients without pause through the proxy; halfway, `b` is drained
/// through the admin API. No request may fail, and `b` must get none that
/// started after the drain answered.
#[tokio::test]
async fn a_drain_under_load_fails_no_request() {
    let backends = [TestBackend::start("a").await, TestBackend::start("b").await];
    let set = BackendSet::new(backends.iter().map(TestBackend::backend));
    let (proxy, admin) = served(&set, Some(TOKEN)).await;
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let mut clients = Vec::new();
    for _ in 0..8 {
        let (url, stop, ok, failed) = (
            proxy.url("/slow?ms=5"),
            stop.clone(),
            ok.clone(),
            failed.clone(),
        );
        clients.push(tokio::spawn(async move {
            let client = client();
            while !stop.load(Ordering::SeqCst) {
                let answer = get(&client, &url).await;
                let counter = if answer.status == 200 { &ok } else { &failed };
                counter.fetch_add(1, Ordering::SeqCst);
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(400)).await;
    let before = backends[1].hits();
    assert!(before > 10, "b served before the drain: {before}");
    let client = client();
    let url = admin.url(&format!("/backends/drain?backend={}", backends[1].url()));
    let (status, json) = post(&client, &url, Some(&bearer())).await;
    assert_eq!(status, 200, "{json}");
    // What was in flight at the drain may still arrive; nothing after.
    let at_drain = backends[1].hits() + 8;
    tokio::time::sleep(Duration::from_millis(600)).await;
    stop.store(true, Ordering::SeqCst);
    for task in clients {
        task.await.unwrap();
    }
    let after = backends[1].hits();
    assert!(
        after <= at_drain,
        "b got new requests after its drain: {after} > {at_drain}"
    );
    assert_eq!(failed.load(Ordering::SeqCst), 0, "failed requests");
    let sent = ok.load(Ordering::SeqCst);
    assert!(sent > 100, "the load ran: {sent}");
    let status: Value =
        serde_json::from_str(&get(&client, &admin.url("/status")).await.body).unwrap();
    assert_eq!(status["backends"][1]["state"], "draining");
    assert_eq!(status["backends"][1]["in_flight"], 0);
}

/// A drained backend's requests in flight finish, and `/status` counts
/// them down.
#[tokio::test]
async fn a_drained_backend_finishes_its_requests_and_status_counts_them_down() {
    let backend = TestBackend::start("a").await;
    let set = BackendSet::new([backend.backend()]);
    let (proxy, admin) = served(&set, Some(TOKEN)).await;
    let held: Vec<_> = (0..2)
        .map(|_| {
            let url = proxy.url("/hold");
            tokio::spawn(async move { get(&client(), &url).await })
        })
        .collect();
    let member = set.snapshot().backends()[0].clone();
    while member.state().in_flight() < 2 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let client = client();
    let url = admin.url(&format!("/backends/drain?backend={}", backend.url()));
    let (_, json) = post(&client, &url, Some(&bearer())).await;
    assert_eq!(json["backend"]["state"], "draining");
    assert_eq!(json["backend"]["in_flight"], 2);
    let in_flight = || async {
        let body = get(&client, &admin.url("/status")).await.body;
        serde_json::from_str::<Value>(&body).unwrap()["backends"][0]["in_flight"].clone()
    };
    // The drained backend gets no new request: 503, no backend eligible.
    assert_eq!(get(&client, &proxy.url("/")).await.status, 503);
    backend.release.notify_one();
    let mut seen = Vec::new();
    for expected in [1, 0] {
        for _ in 0..200 {
            if in_flight().await == expected {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        seen.push(in_flight().await);
        backend.release.notify_one();
    }
    assert_eq!(seen, [1, 0]);
    for request in held {
        assert_eq!(request.await.unwrap().status, 200, "finished, not cut off");
    }
}

/// `/status` carries its schema, the recent figures from the history and
/// the events with who made them.
#[tokio::test]
async fn status_has_a_schema_history_and_events() {
    let backends = [TestBackend::start("a").await, TestBackend::start("b").await];
    let set = BackendSet::new(backends.iter().map(TestBackend::backend));
    let (proxy, admin) = served(&set, Some(&format!("alice:{TOKEN}"))).await;
    let client = client();
    for _ in 0..20 {
        assert_eq!(get(&client, &proxy.url("/")).await.status, 200);
    }
    for _ in 0..4 {
        get(&client, &proxy.url("/status/503")).await;
    }
    let url = admin.url(&format!(
        "/backends/weight?backend={}&value=3",
        backends[0].url()
    ));
    assert_eq!(post(&client, &url, Some(&bearer())).await.0, 200);
    // One slot of the history (2 s) passes.
    tokio::time::sleep(Duration::from_millis(2300)).await;
    let status: Value =
        serde_json::from_str(&get(&client, &admin.url("/status")).await.body).unwrap();
    assert_eq!(status["schema"], 1);
    assert_eq!(status["slot_ms"], 2000);
    assert_eq!(status["write_routes"], true);
    for backend in status["backends"].as_array().unwrap() {
        let rate = backend["requests_per_s"].as_f64().unwrap();
        // 12 requests each in the first 2 s slot (a second slot, on a slow
        // machine, halves the mean).
        assert!((2.9..=6.1).contains(&rate), "{backend}");
        let errors = backend["error_rate"].as_f64().unwrap();
        assert!((errors - 2.0 / 12.0).abs() < 1e-3, "{backend}");
        let p50 = backend["p50_ms"].as_f64().unwrap();
        assert!(p50 > 0.0 && p50 < 100.0, "{backend}");
        assert!(backend["p99_ms"].as_f64().unwrap() >= p50, "{backend}");
        assert_eq!(backend["recent_traffic"], 0.5, "{backend}");
    }
    let event = &status["events"][0];
    assert_eq!(event["event"], "reweighted", "{status}");
    assert_eq!(event["by"], "alice");
    assert_eq!(event["text"], "weight 1 \u{2192} 3");
    assert!(event["at_ms"].as_u64().unwrap() > 1_700_000_000_000);
}

/// A backup's tier is in `/status` and on the page.
#[tokio::test]
async fn status_and_page_show_a_backups_tier() {
    let primary = TestBackend::start("a").await;
    let backup = TestBackend::start("b").await;
    let set = BackendSet::new([primary.backend(), backup.backend().with_priority(1)]);
    let (_proxy, admin) = served(&set, None).await;
    let client = client();
    let status: Value =
        serde_json::from_str(&get(&client, &admin.url("/status")).await.body).unwrap();
    let tiers: Vec<(String, u64)> = status["backends"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| {
            (
                b["url"].as_str().unwrap().to_owned(),
                b["priority"].as_u64().unwrap(),
            )
        })
        .collect();
    assert!(tiers.contains(&(primary.url(), 0)), "{tiers:?}");
    assert!(tiers.contains(&(backup.url(), 1)), "{tiers:?}");
    let page = get(&client, &admin.url("/")).await.body;
    assert_eq!(page.matches(">tier 1</span>").count(), 1, "{page}");
}

async fn status_of(client: &TestClient, admin: &TestProxy) -> Value {
    serde_json::from_str(&get(client, &admin.url("/status")).await.body).unwrap()
}

/// The queue's length now, its limit and its waits, in `/status` and on the
/// page; `null` without a queue.
#[tokio::test]
async fn status_and_page_show_the_queue() {
    use tower_lb::balance::QueueLayer;
    let backend = TestBackend::start("a").await;
    let set = BackendSet::new([backend.backend()]);
    let balance = LoadBalanceLayer::new(set.clone(), RoundRobin::new()).max_in_flight(1);
    let queue = QueueLayer::new(&balance, 3, Duration::from_secs(5));
    let service = ServiceBuilder::new()
        .layer(queue.clone())
        .layer(balance)
        .service(Forward::new());
    let proxy = TestProxy::serve(set.clone(), service).await;
    let admin = AdminService::new(set.clone(), Registry::default()).with_queue(&queue);
    let admin = TestProxy::serve(set.clone(), admin).await;
    let client = client();

    let status = status_of(&client, &admin).await;
    assert_eq!(status["queue"]["pending"], 0, "{status}");
    assert_eq!(status["queue"]["max_pending"], 3);
    // The one slot held, a second request waits.
    let spawn = |path: &str| {
        let (client, url) = (client.clone(), proxy.url(path));
        tokio::spawn(async move { get(&client, &url).await })
    };
    let held = spawn("/hold");
    while backend.hits() == 0 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let waiting = spawn("/");
    while queue.stats().pending == 0 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let status = status_of(&client, &admin).await;
    assert_eq!(status["queue"]["pending"], 1, "{status}");
    assert_eq!(status["queue"]["waited_total"], 1);
    assert_eq!(status["queue"]["timeouts_total"], 0);
    let page = get(&client, &admin.url("/")).await.body;
    assert!(page.contains("queue: 1 of 3 waiting"), "{page}");
    backend.release.notify_one();
    assert_eq!(held.await.unwrap().status, 200);
    assert_eq!(waiting.await.unwrap().status, 200);
    let status = status_of(&client, &admin).await;
    assert_eq!(status["queue"]["pending"], 0, "{status}");
    assert!(status["queue"]["longest_wait_ms"].as_f64().unwrap() > 0.0);

    // Without a queue given: null.
    let (_proxy, plain) = served(&set, None).await;
    assert!(status_of(&client, &plain).await["queue"].is_null());
}

/// A backend that answered 429 shows its pause's time left, and the page
/// says it is overloaded (not failing).
#[tokio::test]
async fn status_and_page_show_an_overload_penalty() {
    use tower_lb::health::{OutlierDetection, PassiveHealthLayer};
    let backends = [TestBackend::start("a").await, TestBackend::start("b").await];
    let set = BackendSet::new(backends.iter().map(TestBackend::backend));
    let service = ServiceBuilder::new()
        .layer(LoadBalanceLayer::new(set.clone(), RoundRobin::new()))
        .layer(PassiveHealthLayer::new(
            set.clone(),
            OutlierDetection::new(),
        ))
        .service(Forward::new());
    let proxy = TestProxy::serve(set.clone(), service).await;
    let admin = AdminService::new(set.clone(), Registry::default());
    let admin = TestProxy::serve(set.clone(), admin).await;
    let client = client();
    // Round-robin: the first request reaches a, which answers 429 (no
    // Retry-After: a pause of one second).
    assert_eq!(get(&client, &proxy.url("/status/429")).await.status, 429);
    let status = status_of(&client, &admin).await;
    let penalty = |i: usize| status["backends"][i]["overload_remaining_ms"].clone();
    let left = penalty(0).as_u64().unwrap_or_else(|| panic!("{status}"));
    assert!(left > 0 && left <= 1000, "{status}");
    assert!(penalty(1).is_null(), "{status}");
    assert_eq!(status["backends"][0]["state"], "ejected");
    let page = get(&client, &admin.url("/")).await.body;
    assert!(page.contains("overloaded, 1 s left"), "{page}");
    assert_eq!(page.matches("overload penalty").count(), 1, "{page}");
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let status = status_of(&client, &admin).await;
    assert!(
        status["backends"][0]["overload_remaining_ms"].is_null(),
        "{status}"
    );
}

/// Per backend: cookies issued on a first visit, requests kept by a valid
/// cookie, cookies re-issued to a client that moved.
#[tokio::test]
async fn status_counts_sticky_cookies_per_backend() {
    use tower_lb::balance::{Sticky, StickyCookie, StickyCookieLayer};
    let backends = [TestBackend::start("a").await, TestBackend::start("b").await];
    let set = BackendSet::new(backends.iter().map(TestBackend::backend));
    let cookie = StickyCookie::new("srv").unwrap();
    let service = ServiceBuilder::new()
        .layer(StickyCookieLayer::new(&set, cookie.clone()))
        .layer(LoadBalanceLayer::new(
            &set,
            Sticky::new(cookie, RoundRobin::new()),
        ))
        .service(Forward::new());
    let proxy = TestProxy::serve(set.clone(), service).await;
    let admin = TestProxy::serve(
        set.clone(),
        AdminService::new(set.clone(), Registry::default()),
    )
    .await;
    let client = client();
    let first = get(&client, &proxy.url("/")).await;
    let set_cookie = first.headers["set-cookie"].to_str().unwrap();
    let pair = set_cookie.split(';').next().unwrap().to_owned();
    let with_cookie = |value: &str| {
        http::Request::get(proxy.url("/"))
            .header("cookie", value)
            .body(Full::<Bytes>::default())
            .unwrap()
    };
    for _ in 0..3 {
        assert_eq!(send(&client, with_cookie(&pair)).await.body, first.body);
    }
    // A forged value: balanced anew (round-robin's next is b) and re-issued.
    let forged = send(&client, with_cookie("srv=00000000000000000000000000000000")).await;
    assert_ne!(forged.body, first.body);
    let status = status_of(&client, &admin).await;
    let counts = |backend: &TestBackend| -> Vec<(u64, u64, u64)> {
        status["backends"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|b| b["url"] == backend.url())
            .map(|b| {
                let n = |key: &str| b[key].as_u64().unwrap();
                (n("sticky_kept"), n("sticky_issued"), n("sticky_reissued"))
            })
            .collect()
    };
    let (pinned, other) = if first.body == "a" { (0, 1) } else { (1, 0) };
    let (a, b) = (counts(&backends[pinned]), counts(&backends[other]));
    assert_eq!(a, [(3, 1, 0)], "{status}");
    assert_eq!(b, [(0, 0, 1)], "{status}");
    let page = get(&client, &admin.url("/")).await.body;
    assert!(
        page.contains("3 kept \u{b7} 1 new \u{b7} 0 moved here"),
        "{page}"
    );
}
