//! The example proxy run as a user runs it: config files, reloads,
//! signals, connection limits.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use support::process::{ProxyProcess, free_addr, run_proxy, signal};
use support::{TestBackend, client, get, tally};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn config_with(backends: &[(&TestBackend, u32)], extra: &str) -> String {
    let mut text = String::from(extra);
    for (backend, weight) in backends {
        text.push_str(&format!(
            "\n[[backend]]\nurl = \"{}\"\nweight = {weight}\n",
            backend.url()
        ));
    }
    text
}

fn write_config(text: &str) -> tempfile::TempPath {
    let mut file = tempfile::Builder::new().suffix(".toml").tempfile().unwrap();
    std::io::Write::write_all(&mut file, text.as_bytes()).unwrap();
    file.into_temp_path()
}

#[tokio::test]
async fn a_config_file_round_trip_and_flags_override_it() {
    let a = TestBackend::start("a").await;
    let b = TestBackend::start("b").await;
    let admin = free_addr();
    let config = write_config(&config_with(
        &[(&a, 3), (&b, 1)],
        &format!(
            "strategy = \"weighted-round-robin\"\nadmin = \"{admin}\"\n[failover]\nretries = 1\n"
        ),
    ));
    let path = config.to_str().unwrap();
    let proxy = ProxyProcess::start(&["--config", path]).await;
    let client = client();
    let counts = tally(&client, &proxy.url("/"), 40).await;
    assert_eq!(
        (counts.get("a"), counts.get("b")),
        (Some(&30), Some(&10)),
        "{counts:?}"
    );
    let status = get(&client, &format!("http://{admin}/status")).await.body;
    let status: serde_json::Value = serde_json::from_str(&status).unwrap();
    assert_eq!(status["backends"][0]["weight"], 3);
    drop(proxy);

    // A flag wins over the file.
    let proxy = ProxyProcess::start(&[
        "--config",
        path,
        "--strategy",
        "round-robin",
        "--admin",
        "127.0.0.1:0",
    ])
    .await;
    let counts = tally(&client, &proxy.url("/"), 40).await;
    assert_eq!(
        (counts.get("a"), counts.get("b")),
        (Some(&20), Some(&20)),
        "{counts:?}"
    );
}

#[tokio::test]
async fn bad_configuration_exits_2_naming_the_field() {
    let cases: &[(&str, &str)] = &[
        ("listen = 5\n", "listen"),
        ("strategy = \"fastest\"\n", "unknown strategy `fastest`"),
        ("colour = \"blue\"\n", "unknown field `colour`"),
        ("[health]\ninterval = \"soon\"\n", "health.interval"),
        ("[health]\nunhealthy-after = 0\n", "health.unhealthy-after"),
        ("[[backend]]\nurl = \"ftp://x\"\n", "backend[0]"),
        (
            "[[backend]]\nurl = \"http://x\"\nweight = 0\n",
            "weight must be 1",
        ),
        ("[server]\nmax-header-size = 10\n", "server.max-header-size"),
        ("[failover]\nretries = -1\n", "failover.retries"),
        ("hash-key = \"cookie:s\"\n", "hash-key needs strategy hash"),
        ("listen = \"127.0.0.1:80\n", "line 1"),
    ];
    for (text, named) in cases {
        let config = write_config(text);
        let (code, output) = run_proxy(&["--config", config.to_str().unwrap()]).await;
        assert_eq!(code, 2, "{text:?}: {output}");
        assert_eq!(output.lines().count(), 1, "one line: {output}");
        assert!(
            output.contains(named),
            "{text:?} should name {named}: {output}"
        );
    }
    let (code, output) = run_proxy(&["--config", "/nonexistent/proxy.toml"]).await;
    assert_eq!(code, 2);
    assert!(output.contains("cannot read"), "{output}");
    for (args, named) in [
        (&["--strategy", "fastest"][..], "fastest"),
        (&["--backend", "127.0.0.1:9000"], "missing scheme"),
        (&["--backend", "http://127.0.0.1:9000,weight=0"], "weight"),
        (&["--timeout", "0s"], "failover.timeout"),
    ] {
        let (code, output) = run_proxy(args).await;
        assert_eq!(code, 2, "{args:?}: {output}");
        assert_eq!(output.lines().count(), 1, "one line: {output}");
        assert!(output.contains(named), "{args:?}: {output}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_backends_under_load_without_errors() {
    let a = TestBackend::start("a").await;
    let b = TestBackend::start("b").await;
    let c = TestBackend::start("c").await;
    let config = write_config(&config_with(&[(&a, 1), (&b, 1)], ""));
    let path = config.to_str().unwrap().to_owned();
    let proxy = ProxyProcess::start(&["--config", &path]).await;
    let client = client();
    let failed = Arc::new(AtomicUsize::new(0));
    let running = Arc::new(AtomicUsize::new(1));
    let mut load = Vec::new();
    for _ in 0..8 {
        let (client, url) = (client.clone(), proxy.url("/slow?ms=5"));
        let (failed, running) = (failed.clone(), running.clone());
        load.push(tokio::spawn(async move {
            while running.load(Ordering::SeqCst) == 1 {
                let answer = support::get(&client, &url).await;
                if answer.status != 200 {
                    failed.fetch_add(1, Ordering::SeqCst);
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    // A bad file is rejected and the running set kept.
    std::fs::write(&path, "[[backend]]\nurl = \"nonsense\"\n").unwrap();
    signal(&proxy, "HUP");
    proxy
        .wait_for_output("rejected", Duration::from_secs(5))
        .await;
    // Swap a for c.
    std::fs::write(&path, config_with(&[(&b, 1), (&c, 1)], "")).unwrap();
    signal(&proxy, "HUP");
    proxy
        .wait_for_output("1 added, 1 removed", Duration::from_secs(5))
        .await;
    let a_before = a.hits();
    tokio::time::sleep(Duration::from_millis(500)).await;
    running.store(0, Ordering::SeqCst);
    for task in load {
        task.await.unwrap();
    }
    assert_eq!(failed.load(Ordering::SeqCst), 0, "no client saw an error");
    assert!(c.hits() > 0, "c joined and got traffic");
    assert!(a.hits() <= a_before + 8, "a got nothing new after draining");
    let counts = tally(&client, &proxy.url("/"), 10).await;
    assert_eq!(counts.get("a"), None, "{counts:?}");
}

#[tokio::test]
async fn sigterm_lets_a_slow_request_finish_then_exits_0() {
    let a = TestBackend::start("a").await;
    let mut proxy = ProxyProcess::start(&["--backend", &a.url(), "--shutdown-grace", "10s"]).await;
    let client = client();
    let slow = tokio::spawn({
        let (client, url) = (client.clone(), proxy.url("/slow?ms=1500"));
        async move { get(&client, &url).await }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    signal(&proxy, "TERM");
    let answer = slow.await.unwrap();
    assert_eq!((answer.status.as_u16(), answer.body.as_str()), (200, "a"));
    let code = tokio::time::timeout(Duration::from_secs(10), proxy.wait())
        .await
        .expect("exits within the grace period");
    assert_eq!(code, Some(0), "{}", proxy.output());
    assert!(
        TcpStream::connect(proxy.addr).await.is_err(),
        "no longer accepting"
    );
}

#[tokio::test]
async fn a_slowloris_client_is_closed_while_others_are_served() {
    let a = TestBackend::start("a").await;
    let proxy = ProxyProcess::start(&["--backend", &a.url(), "--header-timeout", "1s"]).await;
    let mut slow = TcpStream::connect(proxy.addr).await.unwrap();
    slow.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let started = tokio::time::Instant::now();
    let trickle = async {
        for _ in 0..40 {
            if slow.write_all(b"X").await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let mut rest = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(5), slow.read_to_end(&mut rest)).await;
        started.elapsed()
    };
    let others = async {
        let client = client();
        for _ in 0..10 {
            assert_eq!(get(&client, &proxy.url("/")).await.status, 200);
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    let (closed_after, ()) = tokio::join!(trickle, others);
    assert!(
        closed_after >= Duration::from_millis(900) && closed_after < Duration::from_millis(4000),
        "closed after {closed_after:?}"
    );
}

#[tokio::test]
async fn oversized_headers_get_431_and_idle_connections_close() {
    let a = TestBackend::start("a").await;
    let proxy = ProxyProcess::start(&["--backend", &a.url(), "--idle-timeout", "1s"]).await;
    let mut stream = TcpStream::connect(proxy.addr).await.unwrap();
    let big = "x".repeat(20_000);
    let request = format!("GET / HTTP/1.1\r\nHost: x\r\nX-Big: {big}\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut answer = vec![0; 64];
    let n = stream.read(&mut answer).await.unwrap();
    assert!(
        String::from_utf8_lossy(&answer[..n]).starts_with("HTTP/1.1 431"),
        "{:?}",
        String::from_utf8_lossy(&answer[..n])
    );

    let mut idle = TcpStream::connect(proxy.addr).await.unwrap();
    idle.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buffer = vec![0; 4096];
    let n = idle.read(&mut buffer).await.unwrap();
    assert!(String::from_utf8_lossy(&buffer[..n]).starts_with("HTTP/1.1 200"));
    let started = tokio::time::Instant::now();
    let closed = tokio::time::timeout(Duration::from_secs(5), idle.read(&mut buffer)).await;
    assert!(
        matches!(closed, Ok(Ok(0))),
        "closed by the proxy: {closed:?}"
    );
    let after = started.elapsed();
    assert!(
        after >= Duration::from_millis(900) && after < Duration::from_millis(3500),
        "{after:?}"
    );
}

/// Sends a GET on `stream` and reads what comes back within `limit`: the
/// start of the response, or `None` if nothing came.
async fn raw_get(stream: &mut TcpStream, limit: Duration) -> Option<String> {
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    read_some(stream, limit).await
}

async fn read_some(stream: &mut TcpStream, limit: Duration) -> Option<String> {
    let mut buffer = vec![0; 4096];
    match tokio::time::timeout(limit, stream.read(&mut buffer)).await {
        Ok(Ok(n)) if n > 0 => Some(String::from_utf8_lossy(&buffer[..n]).into_owned()),
        _ => None,
    }
}

/// The proxy's worker threads once their count has settled at `expected`
/// (the start line is printed before the threads are named), or what
/// there is after 5 s.
async fn worker_threads_settled(proxy: &ProxyProcess, expected: usize) -> usize {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let count = worker_threads(proxy);
        if count == expected || tokio::time::Instant::now() >= deadline {
            return count;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The proxy's threads named as its workers are, from /proc.
fn worker_threads(proxy: &ProxyProcess) -> usize {
    std::fs::read_dir(format!("/proc/{}/task", proxy.pid()))
        .unwrap()
        .filter_map(|task| std::fs::read_to_string(task.ok()?.path().join("comm")).ok())
        .filter(|name| name.starts_with("proxy-worker-"))
        .count()
}

#[tokio::test]
async fn workers_default_to_one_per_core_available() {
    let a = TestBackend::start("a").await;
    let cores = std::thread::available_parallelism().unwrap().get();
    let proxy = ProxyProcess::start(&["--backend", &a.url()]).await;
    proxy
        .wait_for_output(&format!("  {cores} worker thread"), Duration::from_secs(5))
        .await;
    assert_eq!(
        worker_threads_settled(&proxy, cores).await,
        cores,
        "{}",
        proxy.output()
    );
    drop(proxy);

    let proxy = ProxyProcess::start(&["--backend", &a.url(), "--workers", "3"]).await;
    proxy
        .wait_for_output("  3 worker threads", Duration::from_secs(5))
        .await;
    assert_eq!(worker_threads_settled(&proxy, 3).await, 3);
}

#[tokio::test]
async fn workers_share_one_balancer_and_one_metrics_registry() {
    let a = TestBackend::start("a").await;
    let b = TestBackend::start("b").await;
    let admin = free_addr();
    let proxy = ProxyProcess::start(&[
        "--backend",
        &a.url(),
        "--backend",
        &b.url(),
        "--workers",
        "4",
        "--admin",
        &admin.to_string(),
    ])
    .await;
    // Each request on a connection of its own, so the kernel spreads them
    // over the four listeners; one round-robin position for all of them
    // still alternates exactly.
    for _ in 0..40 {
        let mut stream = TcpStream::connect(proxy.addr).await.unwrap();
        let answer = raw_get(&mut stream, Duration::from_secs(10)).await;
        assert!(
            answer
                .as_deref()
                .is_some_and(|a| a.starts_with("HTTP/1.1 200")),
            "{answer:?}"
        );
    }
    assert_eq!((a.hits(), b.hits()), (20, 20));
    let metrics = get(&client(), &format!("http://{admin}/metrics"))
        .await
        .body;
    let counted: u64 = metrics
        .lines()
        .filter(|line| line.starts_with("lb_backend_requests_total{"))
        .filter_map(|line| line.rsplit(" ").next()?.parse::<u64>().ok())
        .sum();
    assert_eq!(counted, 40, "{metrics}");
}

#[tokio::test]
async fn max_connections_is_one_limit_across_workers() {
    let a = TestBackend::start("a").await;
    let proxy = ProxyProcess::start(&[
        "--backend",
        &a.url(),
        "--workers",
        "4",
        "--max-connections",
        "1",
    ])
    .await;
    // Several rounds, so that the connections land on different workers.
    for round in 0..6 {
        let mut first = TcpStream::connect(proxy.addr).await.unwrap();
        let answer = raw_get(&mut first, Duration::from_secs(5)).await;
        assert!(
            answer
                .as_deref()
                .is_some_and(|a| a.starts_with("HTTP/1.1 200")),
            "round {round}: the first connection is served: {answer:?}"
        );
        let mut second = TcpStream::connect(proxy.addr).await.unwrap();
        let early = raw_get(&mut second, Duration::from_millis(500)).await;
        assert_eq!(early, None, "round {round}: over the limit, not served yet");
        drop(first);
        let late = read_some(&mut second, Duration::from_secs(5)).await;
        assert!(
            late.as_deref()
                .is_some_and(|a| a.starts_with("HTTP/1.1 200")),
            "round {round}: served once the first closed: {late:?}"
        );
    }
}

#[tokio::test]
async fn a_second_proxy_on_the_same_port_is_refused() {
    let a = TestBackend::start("a").await;
    let proxy = ProxyProcess::start(&["--backend", &a.url(), "--workers", "2"]).await;
    let addr = proxy.addr.to_string();
    // Killed if it does not exit: were it to join the first one's
    // SO_REUSEPORT group, it would serve on and on.
    let second = tokio::process::Command::new(support::process::proxy_binary())
        .args(["--backend", &a.url(), "--listen", &addr])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let output = tokio::time::timeout(Duration::from_secs(10), second.wait_with_output())
        .await
        .expect("the second proxy exits")
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("cannot listen on"), "{stderr}");
    assert_eq!(get(&client(), &proxy.url("/")).await.body, "a");
}

/// A failed request is logged with its cause at `error` (by the example
/// itself, not tower-http); tower-http's per-request `debug` tracing is
/// there when the filter records it, and only then.
#[tokio::test]
async fn failures_are_logged_and_request_tracing_follows_the_log_filter() {
    let dead = format!("http://{}", free_addr());
    let quiet = ProxyProcess::start_with_env(
        &["--backend", &dead, "--retries", "0"],
        &[("RUST_LOG", "info")],
    )
    .await;
    let answer = get(&client(), &quiet.url("/")).await;
    assert!(answer.status.is_server_error(), "{}", answer.status);
    quiet
        .wait_for_output("response failed", Duration::from_secs(5))
        .await;
    let output = quiet.output();
    let line = output
        .lines()
        .find(|line| line.contains("response failed"))
        .unwrap();
    assert!(line.contains("ERROR"), "{line}");
    assert!(
        line.contains(&format!("status={}", answer.status)),
        "{line}"
    );
    assert!(
        line.contains("error=no eligible backend") || line.contains("error=could not connect"),
        "the stack's own error is named: {line}"
    );
    assert!(!output.contains("tower_http"), "{output}");

    let a = TestBackend::start("a").await;
    let traced = ProxyProcess::start_with_env(
        &["--backend", &a.url(), "--retries", "0"],
        &[("RUST_LOG", "info,tower_http=debug")],
    )
    .await;
    let answer = get(&client(), &traced.url("/status/500")).await;
    assert_eq!(answer.status, 500);
    traced
        .wait_for_output("response failed", Duration::from_secs(5))
        .await;
    traced
        .wait_for_output("finished processing request", Duration::from_secs(5))
        .await;
    let output = traced.output();
    assert!(output.contains("started processing request"), "{output}");
    assert_eq!(
        output.matches("response failed").count(),
        1,
        "logged once, by the example, not again by tower-http: {output}"
    );
}

#[tokio::test]
async fn sigterm_drains_every_worker_and_logs_once() {
    let a = TestBackend::start("a").await;
    let mut proxy = ProxyProcess::start(&[
        "--backend",
        &a.url(),
        "--workers",
        "3",
        "--shutdown-grace",
        "10s",
    ])
    .await;
    let client = client();
    // Six at once: six connections, spread over the workers.
    let slow: Vec<_> = (0..6)
        .map(|_| {
            let (client, url) = (client.clone(), proxy.url("/slow?ms=1500"));
            tokio::spawn(async move { get(&client, &url).await })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    signal(&proxy, "TERM");
    for answer in slow {
        let answer = answer.await.unwrap();
        assert_eq!((answer.status.as_u16(), answer.body.as_str()), (200, "a"));
    }
    let code = tokio::time::timeout(Duration::from_secs(10), proxy.wait())
        .await
        .expect("exits within the grace period");
    assert_eq!(code, Some(0), "{}", proxy.output());
    // The pipes may still hold the last lines.
    proxy
        .wait_for_output("stopped", Duration::from_secs(5))
        .await;
    let output = proxy.output();
    assert_eq!(
        output.matches("all connections closed").count(),
        1,
        "{output}"
    );
    assert_eq!(output.matches("stopped").count(), 1, "{output}");
}

#[tokio::test]
async fn websockets_and_h2c_clients_work_across_workers() {
    use futures_util::{SinkExt, StreamExt};
    use http_body_util::{BodyExt, Full};
    use tokio_tungstenite::tungstenite::Message;

    let a = TestBackend::start("a").await;
    let proxy = ProxyProcess::start(&["--backend", &a.url(), "--workers", "3"]).await;
    // Open at once, so they are not one connection reused: spread over the
    // workers, each its own tunnel.
    let mut sockets = Vec::new();
    for _ in 0..6 {
        let url = format!("ws://{}/ws", proxy.addr);
        let (socket, response) = tokio_tungstenite::connect_async(&url).await.unwrap();
        assert_eq!(response.status(), 101);
        sockets.push(socket);
    }
    for (n, socket) in sockets.iter_mut().enumerate() {
        socket.send(Message::text(format!("hi {n}"))).await.unwrap();
        let reply = socket.next().await.unwrap().unwrap().into_text().unwrap();
        assert_eq!(reply.as_str(), format!("a: hi {n}"));
    }
    for _ in 0..6 {
        let h2c: hyper_util::client::legacy::Client<_, Full<bytes::Bytes>> =
            hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                .http2_only(true)
                .build_http();
        let request = http::Request::get(proxy.url("/version"))
            .version(http::Version::HTTP_2)
            .body(Full::default())
            .unwrap();
        let response = h2c.request(request).await.unwrap();
        assert_eq!(
            (response.version(), response.status().as_u16()),
            (http::Version::HTTP_2, 200)
        );
        let body = response.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(body, "a HTTP/1.1");
    }
}
