//! DNS discovery against a real dnsmasq on a loopback port: records that
//! change during the run, a server that stops and comes back, SRV weights
//! and priorities, and the example proxy following a name.
#![cfg(feature = "dns")]

#[path = "support/dnsmasq.rs"]
mod dnsmasq;
#[path = "support/featured.rs"]
mod featured;
#[path = "support/members.rs"]
mod members;
mod support;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use dnsmasq::Dnsmasq;
use members::{members, until};
use support::process::ProxyProcess;
use support::{TestBackend, client, get};
use tokio::time::Instant;

use tower_lb::BackendSet;
use tower_lb::discover::Dns;

/// The example proxy, built with the `dns` feature if it was not.
async fn start_proxy(args: &[&str]) -> ProxyProcess {
    featured::ensure_proxy_with("dns:probe.test:1", "dns");
    ProxyProcess::start(args).await
}

fn follow(set: &BackendSet, dns: Dns) -> tokio::task::JoinHandle<()> {
    let discover = dns
        .ttl_bounds(Duration::from_secs(1), Duration::from_secs(5))
        .timeout(Duration::from_millis(500))
        .discover()
        .unwrap();
    let set = set.clone();
    tokio::spawn(async move {
        let label = discover.label().to_owned();
        let _ = set.follow_source(&label, discover).await;
    })
}

#[tokio::test]
async fn a_records_changes_reach_the_set_within_the_ttl_and_a_stopped_server_changes_nothing() {
    let mut dns = Dnsmasq::start("127.0.0.1 web.test\n", &[]);
    let set = BackendSet::default();
    let _task = follow(&set, Dns::a("web.test", 8000).server(dns.addr));
    until(&set, &["http://127.0.0.1:8000 1"], Duration::from_secs(5)).await;
    assert_eq!(
        &*set.sources(&"http://127.0.0.1:8000".parse().unwrap())[0],
        "dns:web.test:8000"
    );

    // A new record appears within the TTL (1 s) and a lookup.
    dns.set_hosts("127.0.0.1 web.test\n127.0.0.2 web.test\n");
    let added = until(
        &set,
        &["http://127.0.0.1:8000 1", "http://127.0.0.2:8000 1"],
        Duration::from_secs(5),
    )
    .await;
    // A removed one leaves (and drains).
    let first = set
        .snapshot()
        .get(&"http://127.0.0.1:8000".parse().unwrap())
        .unwrap()
        .clone();
    dns.set_hosts("127.0.0.2 web.test\n");
    let removed = until(&set, &["http://127.0.0.2:8000 1"], Duration::from_secs(5)).await;
    assert!(first.state().is_removed(), "the removed backend drains");
    println!("DNS change reached the set in {added:?} (added), {removed:?} (removed); TTL 1 s");

    // The server stops: lookups fail, the set stays as it was.
    dns.stop();
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(members(&set), ["http://127.0.0.2:8000 1"]);

    // It comes back with other records: the set catches up (within the
    // back-off of the failed lookups).
    dns.set_hosts_while_stopped("127.0.0.3 web.test\n");
    dns.restart();
    until(&set, &["http://127.0.0.3:8000 1"], Duration::from_secs(10)).await;

    // The name disappears (NXDOMAIN): the source lists nothing.
    dns.set_hosts("127.0.0.9 other.test\n");
    until(&set, &[], Duration::from_secs(5)).await;
}

#[tokio::test]
async fn srv_weights_become_backend_weights_and_priorities_become_tiers() {
    let hosts = "127.0.0.1 a.test\n127.0.0.2 b.test\n127.0.0.3 backup.test\n";
    let mut dns = Dnsmasq::start(
        hosts,
        &[
            "_http._tcp.web.test,a.test,8001,10,5",
            "_http._tcp.web.test,b.test,8002,10,0",
            "_http._tcp.web.test,backup.test,8003,20,1",
        ],
    );
    let set = BackendSet::default();
    let _task = follow(&set, Dns::srv("_http._tcp.web.test").server(dns.addr));
    until(
        &set,
        &[
            "http://127.0.0.1:8001 5",
            "http://127.0.0.2:8002 1",
            "http://127.0.0.3:8003 1",
        ],
        Duration::from_secs(5),
    )
    .await;
    let tiers = |set: &BackendSet| {
        let mut tiers: Vec<(u16, u8)> = set
            .snapshot()
            .backends()
            .iter()
            .map(|b| (b.address().authority().port_u16().unwrap(), b.priority()))
            .collect();
        tiers.sort_unstable();
        tiers
    };
    assert_eq!(tiers(&set), [(8001, 0), (8002, 0), (8003, 1)]);
    // The primary tier goes: the backup is what is left, as tier 0.
    dns.set_srv(&["_http._tcp.web.test,backup.test,8003,20,7"]);
    until(&set, &["http://127.0.0.3:8003 7"], Duration::from_secs(10)).await;
    assert_eq!(tiers(&set), [(8003, 0)]);
}

#[tokio::test]
async fn the_example_proxy_follows_a_name_combined_with_a_static_backend() {
    // Two backends on one port, at 127.0.0.1 and 127.0.0.2, as a DNS name
    // with two A records would give; a third listed with --backend.
    let (one, two) = loop {
        let one = TestBackend::start("one").await;
        let other = SocketAddr::from(([127, 0, 0, 2], one.addr.port()));
        if std::net::TcpListener::bind(other).is_ok() {
            break (one, TestBackend::start_on("two", other).await);
        }
    };
    let fixed = TestBackend::start("fixed").await;
    let dns = Dnsmasq::start("127.0.0.1 web.test\n", &[]);
    let admin = support::process::free_addr();
    let discover = format!("dns:web.test:{}", one.addr.port());
    let proxy = start_proxy(&[
        "--discover",
        &discover,
        "--resolver",
        &dns.addr.to_string(),
        "--backend",
        &fixed.url(),
        "--admin",
        &admin.to_string(),
        "--workers",
        "1",
    ])
    .await;
    let client = client();
    let seen = |n: usize| {
        let (client, url) = (client.clone(), proxy.url("/"));
        async move {
            let mut names = BTreeMap::new();
            for _ in 0..n {
                let answer = get(&client, &url).await;
                assert_eq!(answer.status, 200, "{}", answer.body);
                *names.entry(answer.body).or_insert(0) += 1;
            }
            names
        }
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while seen(4).await.len() < 2 {
        assert!(Instant::now() < deadline, "{}", proxy.output());
    }
    dns.set_hosts("127.0.0.1 web.test\n127.0.0.2 web.test\n");
    let deadline = Instant::now() + Duration::from_secs(10);
    while seen(6).await.len() < 3 {
        assert!(Instant::now() < deadline, "{}", proxy.output());
    }
    let status = get(&client, &format!("http://{admin}/status")).await.body;
    let status: serde_json::Value = serde_json::from_str(&status).unwrap();
    let mut sources: Vec<String> = status["backends"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| {
            format!(
                "{} {}",
                b["url"].as_str().unwrap(),
                b["sources"][0].as_str().unwrap()
            )
        })
        .collect();
    sources.sort();
    let mut want = vec![
        format!("http://127.0.0.1:{} {discover}", one.addr.port()),
        format!("http://127.0.0.1:{} static", fixed.addr.port()),
        format!("http://127.0.0.2:{} {discover}", one.addr.port()),
    ];
    want.sort();
    assert_eq!(sources, want);
    drop(two);
}

#[tokio::test]
async fn the_proxys_file_takes_discover_and_resolver() {
    let backend = TestBackend::start("filed").await;
    let dns = Dnsmasq::start("127.0.0.1 web.test\n", &[]);
    let mut file = tempfile::Builder::new().suffix(".toml").tempfile().unwrap();
    let text = format!(
        "discover = [\"dns:web.test:{}\"]\nresolver = \"{}\"\nworkers = 1\n",
        backend.addr.port(),
        dns.addr
    );
    std::io::Write::write_all(&mut file, text.as_bytes()).unwrap();
    let path = file.into_temp_path();
    let proxy = start_proxy(&["--config", path.to_str().unwrap()]).await;
    assert!(
        proxy
            .output()
            .contains(&format!("discover dns:web.test:{}", backend.addr.port()))
    );
    let client = client();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let answer = get(&client, &proxy.url("/")).await;
        if answer.status == 200 {
            assert_eq!(answer.body, "filed");
            break;
        }
        assert!(Instant::now() < deadline, "{}", proxy.output());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
