//! etcd discovery against a real etcd (Debian's etcd-server) on loopback
//! ports: keys put and deleted during the run, etcd stopped and started
//! again, two example proxies that agree on hashing, a rolling replacement
//! of every backend under load with no failed request, and the proxy's
//! memory under a churning prefix.
#![cfg(feature = "etcd")]

#[path = "support/etcd.rs"]
mod etcd;
#[path = "support/featured.rs"]
mod featured;
#[path = "support/members.rs"]
mod members;
mod support;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use etcd::Etcd;
use http_body_util::Full;
use members::{members, until};
use support::process::{ProxyProcess, free_addr};
use support::{TestBackend, TestClient, client, get, send};
use tokio::time::Instant;

use tower_lb::BackendSet;
use tower_lb::discover::Etcd as EtcdSource;

/// The example proxy, built with the `etcd` feature if it was not.
async fn start_proxy(args: &[&str]) -> ProxyProcess {
    featured::ensure_proxy_with("etcd:http://127.0.0.1:1/probe", "etcd");
    ProxyProcess::start(args).await
}

#[tokio::test]
async fn a_prefix_is_read_then_watched_and_etcd_going_away_keeps_the_set() {
    let mut etcd = Etcd::start().await;
    etcd.put("/web/a", "http://127.0.0.1:8001,weight=2").await;
    etcd.put("/web/bad", "not a backend").await;
    etcd.put("/other/x", "http://127.0.0.1:9999").await;
    let set = BackendSet::default();
    let discover = EtcdSource::new([etcd.endpoint()], "/web/")
        .keep_alive(Duration::from_millis(500))
        .discover()
        .unwrap();
    let follower = set.clone();
    let _task = tokio::spawn(async move { follower.follow_source("etcd:web", discover).await });
    // The read: the good key, not the bad one nor the other prefix.
    until(&set, &["http://127.0.0.1:8001 2"], Duration::from_secs(5)).await;

    // Each change is timed from before the put to the set showing it.
    let mut took = Vec::new();
    let steps: [(&str, Option<&str>, &[&str]); 4] = [
        (
            "/web/b",
            Some("http://127.0.0.1:8002"),
            &["http://127.0.0.1:8001 2", "http://127.0.0.1:8002 1"],
        ),
        (
            "/web/a",
            Some("http://127.0.0.1:8001,weight=5"),
            &["http://127.0.0.1:8001 5", "http://127.0.0.1:8002 1"],
        ),
        ("/web/a", None, &["http://127.0.0.1:8002 1"]),
        // A key whose value turns bad lists nothing.
        ("/web/b", Some("http://127.0.0.1:8002,weight=zero"), &[]),
    ];
    for (key, value, want) in steps {
        let start = Instant::now();
        match value {
            Some(value) => etcd.put(key, value).await,
            None => etcd.delete(key).await,
        }
        until(&set, want, Duration::from_secs(5)).await;
        took.push(start.elapsed());
    }
    etcd.put("/web/b", "http://127.0.0.1:8002").await;
    until(&set, &["http://127.0.0.1:8002 1"], Duration::from_secs(5)).await;
    println!("etcd change reached the set in {took:?}");

    // etcd goes away: the set stays as it was.
    etcd.stop();
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(members(&set), ["http://127.0.0.1:8002 1"]);
    // It comes back; what changes from then on is seen (after the resync).
    etcd.restart().await;
    let back = Instant::now();
    etcd.put("/web/c", "http://127.0.0.1:8003").await;
    until(
        &set,
        &["http://127.0.0.1:8002 1", "http://127.0.0.1:8003 1"],
        Duration::from_secs(40),
    )
    .await;
    println!("caught up {:?} after etcd came back", back.elapsed());
}

/// A proxy following `/svc/` at `etcd`, with `extra` arguments.
async fn follower(etcd: &Etcd, admin: std::net::SocketAddr, extra: &[&str]) -> ProxyProcess {
    let discover = format!("etcd:{}/svc/", etcd.endpoint());
    let admin = admin.to_string();
    let mut args = vec!["--discover", &discover, "--admin", &admin, "--workers", "1"];
    args.extend_from_slice(extra);
    start_proxy(&args).await
}

/// A proxy following `/svc/` at `etcd`, hashing on the `x-key` header.
async fn proxy(etcd: &Etcd, admin: std::net::SocketAddr) -> ProxyProcess {
    start_proxy(&[
        "--discover",
        &format!("etcd:{}/svc/", etcd.endpoint()),
        "--strategy",
        "hash",
        "--hash-key",
        "header:x-key",
        "--admin",
        &admin.to_string(),
        "--workers",
        "1",
        "--health-interval",
        "500ms",
    ])
    .await
}

async fn keyed(client: &TestClient, url: &str, key: &str) -> String {
    let request = http::Request::get(url)
        .header("x-key", key)
        .body(Full::default())
        .unwrap();
    let answer = send(client, request).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    answer.body
}

/// Waits until the proxy's /status lists exactly `n` backends, none draining.
async fn members_are(client: &TestClient, admin: std::net::SocketAddr, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let body = get(client, &format!("http://{admin}/status")).await.body;
        let status: serde_json::Value = serde_json::from_str(&body).unwrap();
        let backends = status["backends"].as_array().unwrap();
        if backends.len() == n && backends.iter().all(|b| b["draining"] == false) {
            return;
        }
        assert!(Instant::now() < deadline, "{body}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn two_proxies_on_one_prefix_send_every_key_to_the_same_backend() {
    let etcd = Etcd::start().await;
    let backends: Vec<TestBackend> =
        futures_util::future::join_all(["b0", "b1", "b2", "b3"].map(TestBackend::start)).await;
    for backend in &backends[..3] {
        etcd.put(&format!("/svc/{}", backend.name), &backend.url())
            .await;
    }
    let (admin_a, admin_b) = (free_addr(), free_addr());
    let a = proxy(&etcd, admin_a).await;
    let b = proxy(&etcd, admin_b).await;
    let client = client();
    let agree = |round: &'static str| {
        let (client, a, b) = (client.clone(), a.url("/"), b.url("/"));
        async move {
            let mut spread = BTreeMap::new();
            for i in 0..200 {
                let key = format!("key-{i}");
                let (on_a, on_b) = (
                    keyed(&client, &a, &key).await,
                    keyed(&client, &b, &key).await,
                );
                assert_eq!(on_a, on_b, "{round}: {key} went to {on_a} and {on_b}");
                *spread.entry(on_a).or_insert(0) += 1;
            }
            spread
        }
    };
    for admin in [admin_a, admin_b] {
        members_are(&client, admin, 3).await;
    }
    let before = agree("3 backends").await;
    assert_eq!(before.len(), 3, "{before:?}");
    etcd.put("/svc/b3", &backends[3].url()).await;
    for admin in [admin_a, admin_b] {
        members_are(&client, admin, 4).await;
    }
    let added = agree("one added").await;
    assert_eq!(added.len(), 4, "{added:?}");
    etcd.delete("/svc/b0").await;
    for admin in [admin_a, admin_b] {
        members_are(&client, admin, 3).await;
    }
    let removed = agree("one removed").await;
    assert!(!removed.contains_key("b0"), "{removed:?}");
}

#[tokio::test]
async fn a_rolling_replacement_of_every_backend_under_load_fails_no_request() {
    let etcd = Etcd::start().await;
    let old: Vec<TestBackend> =
        futures_util::future::join_all(["old0", "old1", "old2"].map(TestBackend::start)).await;
    for backend in &old {
        etcd.put(&format!("/svc/{}", backend.name), &backend.url())
            .await;
    }
    let admin = free_addr();
    let proxy = follower(&etcd, admin, &[]).await;
    let client = client();
    members_are(&client, admin, 3).await;
    // A steady load: four clients in a loop until told to stop.
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let answered_by = Arc::new(std::sync::Mutex::new(BTreeMap::<String, usize>::new()));
    let load: Vec<_> = (0..4)
        .map(|_| {
            let (client, url) = (client.clone(), proxy.url("/"));
            let (stop, ok, failed, by) = (
                stop.clone(),
                ok.clone(),
                failed.clone(),
                answered_by.clone(),
            );
            tokio::spawn(async move {
                while !stop.load(Ordering::SeqCst) {
                    let request = http::Request::get(&url).body(Full::default()).unwrap();
                    let answer = send(&client, request).await;
                    if answer.status == 200 {
                        ok.fetch_add(1, Ordering::SeqCst);
                        *by.lock().unwrap().entry(answer.body).or_insert(0) += 1;
                    } else {
                        failed.fetch_add(1, Ordering::SeqCst);
                    }
                }
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    // Replace one backend at a time: the new one joins, the old one
    // leaves, drains, and only then stops.
    let mut new = Vec::new();
    for (i, leaving) in old.iter().enumerate() {
        let joining = TestBackend::start(&format!("new{i}")).await;
        etcd.put(&format!("/svc/{}", joining.name), &joining.url())
            .await;
        members_are(&client, admin, 4).await;
        etcd.delete(&format!("/svc/{}", leaving.name)).await;
        members_are(&client, admin, 3).await;
        tokio::time::sleep(Duration::from_millis(200)).await;
        leaving.stop();
        new.push(joining);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::SeqCst);
    for task in load {
        task.await.unwrap();
    }
    let (ok, failed) = (ok.load(Ordering::SeqCst), failed.load(Ordering::SeqCst));
    let by = answered_by.lock().unwrap().clone();
    println!("rolling replacement: {ok} requests answered, {failed} failed; by backend {by:?}");
    assert_eq!(failed, 0, "{}", proxy.output());
    assert!(ok > 100, "the load ran: {ok}");
    for backend in &new {
        assert!(
            by.contains_key(&backend.name),
            "{} served nothing: {by:?}",
            backend.name
        );
    }
}

/// The proxy's resident memory, from /proc.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

fn backend_series(metrics: &str) -> usize {
    metrics
        .lines()
        .filter(|line| !line.starts_with('#') && line.contains("backend=\""))
        .count()
}

#[tokio::test]
async fn the_proxys_memory_stays_flat_under_a_churning_prefix() {
    let etcd = Etcd::start().await;
    let steady = TestBackend::start("steady").await;
    etcd.put("/svc/steady", &steady.url()).await;
    let admin = free_addr();
    let proxy = follower(&etcd, admin, &["--health-interval", "200ms"]).await;
    let client = client();
    members_are(&client, admin, 1).await;
    let mut kv = etcd.connect().await.unwrap();
    // Backends that come and go, each at an address of its own (nothing
    // listens there: they are probed, found down, and never picked). A
    // few requests go through between changes, so the pool, the metrics
    // and the health checks all see the churn.
    let mut cycle = 0u32;
    let mut churn = |n: u32| {
        let start = cycle;
        cycle += n;
        start..cycle
    };
    let run = |range: std::ops::Range<u32>, kv: &mut etcd_client::Client| {
        let (client, url) = (client.clone(), proxy.url("/"));
        let mut kv = kv.clone();
        async move {
            for i in range {
                let [_, a, b, c] = (i + 1).to_be_bytes();
                let value = format!("http://127.{a}.{b}.{c}:9");
                kv.put(format!("/svc/churn-{i}"), value, None)
                    .await
                    .unwrap();
                kv.delete(format!("/svc/churn-{i}"), None).await.unwrap();
                if i % 10 == 0 {
                    let answer = get(&client, &url).await;
                    assert_eq!(answer.status, 200, "{}", answer.body);
                }
            }
        }
    };
    run(churn(1_000), &mut kv).await;
    members_are(&client, admin, 1).await;
    let warm = rss_kib(proxy.pid());
    let series = backend_series(&get(&client, &format!("http://{admin}/metrics")).await.body);
    let started = Instant::now();
    run(churn(5_000), &mut kv).await;
    let took = started.elapsed();
    members_are(&client, admin, 1).await;
    // One more request, so the metrics see a publication after the last drain.
    get(&client, &proxy.url("/")).await;
    let after = rss_kib(proxy.pid());
    let series_after = backend_series(&get(&client, &format!("http://{admin}/metrics")).await.body);
    println!(
        "churn: 5,000 backends in and out in {took:?}; RSS {warm} KiB -> {after} KiB; \
         backend series {series} -> {series_after}"
    );
    assert!(
        series_after <= series,
        "metric series grew: {series} -> {series_after}"
    );
    assert!(
        after < warm + 4 * 1024,
        "RSS grew by {} KiB over 5,000 backends in and out",
        after.saturating_sub(warm)
    );
}
