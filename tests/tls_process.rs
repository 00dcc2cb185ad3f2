//! The example proxy with TLS both ways, run as a user runs it: HTTPS for
//! clients (HTTP/1.1 and h2, reloads under traffic), `https://` backends
//! behind `--backend-ca`, `--backend-tls-name` and a client certificate.

#![cfg(feature = "tls")]

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use support::process::{ProxyProcess, free_addr, run_proxy, signal};
use support::tls::{
    FirstBytes, TestCa, TlsBackend, client_config, https_connect, https_get, is_client_hello,
    server_config,
};
use support::{TestBackend, client, get};
use tokio::io::AsyncReadExt;

const H1: &[&[u8]] = &[b"http/1.1"];
const BOTH: &[&[u8]] = &[b"h2", b"http/1.1"];

#[tokio::test]
async fn https_for_clients_over_http1_and_h2() {
    let backend = TestBackend::start("a").await;
    let ca = TestCa::new("test CA");
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = ca
        .issue(&["localhost", "127.0.0.1"])
        .write(dir.path(), "proxy");
    let proxy = ProxyProcess::start(&[
        "--backend",
        &backend.url(),
        "--tls-cert",
        &cert,
        "--tls-key",
        &key,
        "--workers",
        "2",
    ])
    .await;
    assert!(proxy.output().contains("tower-lb proxy on https://"));
    for (alpn, expected) in [(BOTH, "h2"), (H1, "http/1.1")] {
        let config = client_config(ca.roots(), alpn);
        let answer = https_get(proxy.addr, config, "localhost", "/headers")
            .await
            .unwrap();
        assert_eq!(answer.status, 200, "{answer:?}");
        assert_eq!(answer.alpn.as_deref(), Some(expected));
        let seen = answer.body.to_lowercase();
        assert!(seen.contains("x-forwarded-proto: https\n"), "{seen}");
    }
    // A cleartext request on the TLS port gets no HTTP answer.
    let mut tcp = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    tokio::io::AsyncWriteExt::write_all(&mut tcp, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut reply = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), tcp.read_to_end(&mut reply)).await;
    assert!(!reply.starts_with(b"HTTP/"), "{reply:?}");
}

#[tokio::test]
async fn a_silent_client_is_closed_after_the_handshake_timeout() {
    let backend = TestBackend::start("a").await;
    let ca = TestCa::new("test CA");
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = ca.issue(&["localhost"]).write(dir.path(), "proxy");
    let proxy = ProxyProcess::start(&[
        "--backend",
        &backend.url(),
        "--tls-cert",
        &cert,
        "--tls-key",
        &key,
        "--tls-handshake-timeout",
        "300ms",
    ])
    .await;
    let mut tcp = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    let started = tokio::time::Instant::now();
    let mut byte = [0u8; 1];
    let read = tokio::time::timeout(Duration::from_secs(5), tcp.read(&mut byte)).await;
    assert!(
        matches!(read, Ok(Ok(0)) | Ok(Err(_))),
        "closed, not left open: {read:?}"
    );
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(250) && waited < Duration::from_secs(3),
        "{waited:?}"
    );
}

/// Reloads under traffic: every request on new connections and on one
/// kept-alive connection succeeds while the certificate is swapped (by
/// `trigger`), new handshakes get the new certificate, and a bad file is
/// rejected with the running certificate kept.
async fn reload_under_traffic(watch: bool) {
    let backend = TestBackend::start("a").await;
    let old_ca = TestCa::new("old CA");
    let new_ca = TestCa::new("new CA");
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = old_ca.issue(&["localhost"]).write(dir.path(), "proxy");
    let url = backend.url();
    let mut args = vec![
        "--backend",
        &url,
        "--tls-cert",
        &cert,
        "--tls-key",
        &key,
        "--workers",
        "2",
    ];
    if watch {
        args.push("--watch");
    }
    let proxy = ProxyProcess::start(&args).await;
    let mut roots = old_ca.roots();
    roots.roots.extend(new_ca.roots().roots);
    let config = client_config(roots.clone(), BOTH);

    let (mut kept, _, first_cert) = https_connect(proxy.addr, config.clone(), "localhost")
        .await
        .unwrap();
    assert_eq!(kept.get("localhost", "/").await.unwrap().0, 200);

    let failures = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(AtomicUsize::new(0));
    let running = Arc::new(AtomicBool::new(true));
    let mut load = Vec::new();
    for task in 0..4 {
        let (failures, done, running, config) = (
            failures.clone(),
            done.clone(),
            running.clone(),
            config.clone(),
        );
        let (addr, roots) = (proxy.addr, roots.clone());
        load.push(tokio::spawn(async move {
            while running.load(Ordering::Relaxed) {
                // Half the clients resume their sessions, half make full
                // handshakes every time.
                let config = if task % 2 == 0 {
                    config.clone()
                } else {
                    client_config(roots.clone(), BOTH)
                };
                match https_get(addr, config, "localhost", "/").await {
                    Ok(answer) if answer.status == 200 => {}
                    other => {
                        eprintln!("failed: {other:?}");
                        failures.fetch_add(1, Ordering::Relaxed);
                    }
                }
                done.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;

    let fresh = new_ca.issue(&["localhost"]);
    // Written key first, then the certificate: in between, the pair on
    // disk does not match, which a watcher may see and must reject.
    std::fs::write(&key, &fresh.key_pem).unwrap();
    std::fs::write(&cert, &fresh.cert_pem).unwrap();
    if !watch {
        signal(&proxy, "HUP");
    }
    proxy
        .wait_for_output("TLS certificate reloaded", Duration::from_secs(10))
        .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    // A client of its own: one that resumed a session would be shown no
    // certificate and remember the old one.
    let fresh_client = || client_config(roots.clone(), BOTH);
    let new_cert = https_get(proxy.addr, fresh_client(), "localhost", "/")
        .await
        .unwrap()
        .server_cert;
    assert_ne!(
        new_cert, first_cert,
        "new handshakes get the new certificate"
    );
    assert_eq!(new_cert, fresh.chain()[0].to_vec());
    assert_eq!(
        kept.get("localhost", "/").await.unwrap().0,
        200,
        "a connection opened before the reload still serves"
    );

    // A bad new certificate is rejected; the running one stays.
    std::fs::write(&cert, "not a certificate").unwrap();
    if !watch {
        signal(&proxy, "HUP");
    }
    proxy
        .wait_for_output(
            "rejected, keeping the running certificate",
            Duration::from_secs(10),
        )
        .await;
    let still = https_get(proxy.addr, fresh_client(), "localhost", "/")
        .await
        .unwrap();
    assert_eq!((still.status, still.server_cert), (200, new_cert));

    running.store(false, Ordering::Relaxed);
    for task in load {
        task.await.unwrap();
    }
    assert!(done.load(Ordering::Relaxed) > 20, "traffic ran");
    assert_eq!(failures.load(Ordering::Relaxed), 0, "{}", proxy.output());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_the_certificate_under_traffic() {
    reload_under_traffic(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_reloads_the_certificate_under_traffic() {
    reload_under_traffic(true).await;
}

#[tokio::test]
async fn bad_certificates_and_keys_exit_2_naming_the_flag() {
    let ca = TestCa::new("test CA");
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = ca.issue(&["localhost"]).write(dir.path(), "a");
    let (_, other_key) = ca.issue(&["localhost"]).write(dir.path(), "b");
    let junk = dir.path().join("junk.pem");
    std::fs::write(&junk, "junk").unwrap();
    let junk = junk.to_str().unwrap();
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec!["--tls-cert", "/nonexistent/c.pem", "--tls-key", &key],
            "--tls-cert /nonexistent/c.pem: cannot read it",
        ),
        (
            vec!["--tls-cert", &cert, "--tls-key", "/nonexistent/k.pem"],
            "--tls-key /nonexistent/k.pem: cannot read it",
        ),
        (vec!["--tls-cert", junk, "--tls-key", &key], "--tls-cert"),
        (vec!["--tls-cert", &cert, "--tls-key", junk], "--tls-key"),
        (
            vec!["--tls-cert", &cert, "--tls-key", &other_key],
            "does not match the certificate",
        ),
        (vec!["--tls-cert", &cert], "needs --tls-key"),
        (
            vec!["--backend-ca", "/nonexistent/ca.pem"],
            "--backend-ca /nonexistent/ca.pem: cannot read it",
        ),
        (vec!["--backend-ca", junk], "--backend-ca"),
        (vec!["--backend-cert", &cert], "needs a client key"),
        (
            vec!["--backend-cert", &cert, "--backend-key", &other_key],
            "--backend-cert",
        ),
        (
            vec!["--backend-tls-name", "not a name!"],
            "--backend-tls-name not a name!",
        ),
    ];
    for (args, named) in cases {
        let (code, output) = run_proxy(&args).await;
        assert_eq!(code, 2, "{args:?}: {output}");
        assert_eq!(output.lines().count(), 1, "one line: {output}");
        assert!(
            output.contains(named),
            "{args:?} should say {named}: {output}"
        );
    }
    // The same from the file, named by its key.
    let config = dir.path().join("proxy.toml");
    std::fs::write(
        &config,
        format!("[tls]\ncert = \"/nonexistent/c.pem\"\nkey = \"{key}\"\n"),
    )
    .unwrap();
    let (code, output) = run_proxy(&["--config", config.to_str().unwrap()]).await;
    assert_eq!(code, 2, "{output}");
    assert!(output.contains("tls.cert /nonexistent/c.pem"), "{output}");
}

#[tokio::test]
async fn https_backends_verified_by_the_flags_with_mutual_tls() {
    let server_ca = TestCa::new("backend CA");
    let client_ca = TestCa::new("proxy client CA");
    let dir = tempfile::tempdir().unwrap();
    let leaf = server_ca.issue(&["api.internal"]);
    let config = server_config(&leaf, Some(&client_ca), H1);
    let backend = TlsBackend::start("tls-a", config, true).await;
    let ca_file = server_ca.write(dir.path());
    let (client_cert, client_key) = client_ca.issue(&["proxy"]).write(dir.path(), "client");
    let admin = free_addr();
    let proxy = ProxyProcess::start(&[
        "--backend",
        &backend.url(),
        "--backend-ca",
        &ca_file,
        "--backend-tls-name",
        "api.internal",
        "--backend-cert",
        &client_cert,
        "--backend-key",
        &client_key,
        "--admin",
        &admin.to_string(),
        "--retries",
        "0",
    ])
    .await;
    let client = client();
    for _ in 0..3 {
        let answer = get(&client, &proxy.url("/x")).await;
        assert_eq!(answer.status, 200, "{answer:?}\n{}", proxy.output());
        assert!(answer.body.starts_with("tls-a /x proto=http"), "{answer:?}");
    }
    let handshakes = backend.handshakes();
    assert!(handshakes.iter().all(|h| h.client_cert), "{handshakes:?}");
    assert!(
        handshakes
            .iter()
            .all(|h| h.sni.as_deref() == Some("api.internal")),
        "{handshakes:?}"
    );
    let status = get(&client, &format!("http://{admin}/status")).await.body;
    let status: serde_json::Value = serde_json::from_str(&status).unwrap();
    assert_eq!(status["backends"][0]["tls"], true, "{status}");
    let page = get(&client, &format!("http://{admin}/")).await.body;
    assert!(page.contains(">TLS</span>"), "{page}");
}

#[tokio::test]
async fn a_backend_that_fails_verification_gets_502_a_logged_reason_and_no_cleartext() {
    let trusted = TestCa::new("trusted CA");
    let stranger = TestCa::new("stranger CA");
    let dir = tempfile::tempdir().unwrap();
    let ca_file = trusted.write(dir.path());
    let untrusted = TlsBackend::start(
        "untrusted",
        server_config(&stranger.issue(&["127.0.0.1"]), None, H1),
        true,
    )
    .await;
    let wrong_name = TlsBackend::start(
        "wrong-name",
        server_config(&trusted.issue(&["elsewhere.example"]), None, H1),
        true,
    )
    .await;
    let recorder = FirstBytes::start().await;
    let cases = [
        (untrusted.url(), "UnknownIssuer"),
        (wrong_name.url(), "not valid for name"),
        (format!("https://{}", recorder.addr), "TLS handshake"),
    ];
    for (url, reason) in cases {
        let proxy = ProxyProcess::start(&[
            "--backend",
            &url,
            "--backend-ca",
            &ca_file,
            "--retries",
            "0",
            // Probes (over TLS too) would mark it down first: this is
            // about the request path.
            "--health-interval",
            "1h",
        ])
        .await;
        let answer = get(&client(), &proxy.url("/secret")).await;
        assert_eq!(answer.status, 502, "{url}: {answer:?}");
        proxy
            .wait_for_output("TLS handshake with backend failed", Duration::from_secs(5))
            .await;
        assert!(proxy.output().contains(reason), "{url}: {}", proxy.output());
    }
    let seen = recorder.seen();
    assert!(!seen.is_empty());
    for bytes in seen {
        assert!(is_client_hello(&bytes), "cleartext went out: {bytes:?}");
    }
}

#[tokio::test]
async fn without_a_certificate_the_listener_stays_cleartext() {
    // No TLS flag: plain HTTP as before (nothing changed for them).
    let backend = TestBackend::start("a").await;
    let proxy = ProxyProcess::start(&["--backend", &backend.url()]).await;
    assert!(proxy.output().contains("tower-lb proxy on http://"));
    assert_eq!(get(&client(), &proxy.url("/")).await.status, 200);
}

#[tokio::test]
async fn the_config_file_sets_both_directions() {
    let ca = TestCa::new("test CA");
    let dir = tempfile::tempdir().unwrap();
    let backend = TlsBackend::start(
        "file-tls",
        server_config(&ca.issue(&["api.internal"]), None, H1),
        true,
    )
    .await;
    let ca_file = ca.write(dir.path());
    let (cert, key) = ca.issue(&["localhost"]).write(dir.path(), "proxy");
    let config = dir.path().join("proxy.toml");
    std::fs::write(
        &config,
        format!(
            "[tls]\ncert = \"{cert}\"\nkey = \"{key}\"\nhandshake-timeout = \"5s\"\n\
             [backend-tls]\nca = \"{}\"\nname = \"api.internal\"\n\
             [[backend]]\nurl = \"{}\"\n",
            ca_file,
            backend.url()
        ),
    )
    .unwrap();
    let proxy = ProxyProcess::start(&["--config", config.to_str().unwrap()]).await;
    let answer = https_get(
        proxy.addr,
        client_config(ca.roots(), BOTH),
        "localhost",
        "/f",
    )
    .await
    .unwrap();
    assert_eq!(answer.status, 200, "{answer:?}\n{}", proxy.output());
    assert_eq!(answer.body, "file-tls /f proto=https version=HTTP/1.1");
    assert_eq!(backend.handshakes()[0].sni.as_deref(), Some("api.internal"));
}
