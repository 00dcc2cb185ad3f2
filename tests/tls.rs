//! TLS to backends through the library's own stack: real handshakes on
//! 127.0.0.1 with certificates made in the test.

#![cfg(feature = "tls")]

mod support;

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use support::tls::{FirstBytes, TestCa, TlsBackend, is_client_hello, server_config};
use tower::{Layer, ServiceExt};
use tower_lb::backend::Verdict;
use tower_lb::balance::RoundRobin;
use tower_lb::forward::BackendTls;
use tower_lb::health::{ActiveHealthCheck, OutlierDetection, PassiveHealthLayer, Probe};
use tower_lb::{Backend, BackendSet, Error, Forward, LoadBalanceLayer};

const H1: &[&[u8]] = &[b"http/1.1"];

type Stack = tower_lb::LoadBalance<tower_lb::health::PassiveHealth<Forward>, RoundRobin>;

/// Balancer, passive health and a forwarder with `tls`, as a user stacks
/// them.
fn stack(set: &BackendSet, tls: BackendTls) -> Stack {
    let forward: Forward = Forward::builder()
        .tls(tls)
        .connect_timeout(Duration::from_secs(5))
        .build();
    let passive = PassiveHealthLayer::new(set.clone(), OutlierDetection::new());
    LoadBalanceLayer::new(set.clone(), RoundRobin::new()).layer(passive.layer(forward))
}

/// One GET through `service`: status, body text, and the error the
/// forwarder put in the response, if any.
async fn get(service: &Stack, path: &str) -> (StatusCode, String, Option<Error>) {
    let request = Request::get(format!("http://client.example{path}"))
        .body(Full::<Bytes>::default())
        .unwrap();
    let response = service.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let error = response.extensions().get::<Error>().cloned();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned(), error)
}

fn ca_tls(ca: &TestCa) -> tower_lb::forward::BackendTlsBuilder {
    BackendTls::builder().ca_pem(&ca.pem)
}

/// The whole error chain as text (the reason is in the causes).
fn chain(error: &Error) -> String {
    let mut text = error.to_string();
    let mut cause: Option<&dyn std::error::Error> = std::error::Error::source(error);
    while let Some(next) = cause {
        text.push_str(": ");
        text.push_str(&next.to_string());
        cause = next.source();
    }
    text
}

#[tokio::test]
async fn a_verified_backend_is_spoken_to_over_pooled_tls() {
    let ca = TestCa::new("test CA");
    let backend = TlsBackend::signed_by("a", &ca, &["127.0.0.1"], true).await;
    let set = backend.set();
    let service = stack(&set, ca_tls(&ca).build().unwrap());
    for _ in 0..3 {
        let (status, body, error) = get(&service, "/hello").await;
        assert_eq!(status, StatusCode::OK, "{body} {error:?}");
        assert_eq!(body, "a /hello proto=http version=HTTP/1.1");
    }
    let handshakes = backend.handshakes();
    assert_eq!(handshakes.len(), 1, "one pooled connection: {handshakes:?}");
    assert_eq!(handshakes[0].alpn.as_deref(), Some("http/1.1"));
    // An IP address is checked against the IP SAN and sent as no SNI.
    assert_eq!(handshakes[0].sni, None);
}

#[tokio::test]
async fn a_pool_refill_resumes_the_session() {
    let ca = TestCa::new("test CA");
    // The backend closes every connection after its response, so each
    // request needs a new one.
    let backend = TlsBackend::signed_by("a", &ca, &["127.0.0.1"], false).await;
    let set = backend.set();
    let service = stack(&set, ca_tls(&ca).build().unwrap());
    for _ in 0..3 {
        let (status, body, error) = get(&service, "/").await;
        assert_eq!(status, StatusCode::OK, "{body} {error:?}");
    }
    let handshakes = backend.handshakes();
    assert_eq!(handshakes.len(), 3, "{handshakes:?}");
    assert!(!handshakes[0].resumed, "the first is a full handshake");
    assert!(
        handshakes[1..].iter().all(|h| h.resumed),
        "the refills resume: {handshakes:?}"
    );
}

#[tokio::test]
async fn the_verification_name_can_be_set_and_is_sent_as_sni() {
    let ca = TestCa::new("test CA");
    let leaf = ca.issue(&["api.internal"]);
    let backend = TlsBackend::start("a", server_config(&leaf, None, H1), true).await;
    let set = backend.set();

    // Addressed by IP, the certificate names a service: refused...
    let service = stack(&set, ca_tls(&ca).build().unwrap());
    let (status, _, error) = get(&service, "/").await;
    assert_eq!(status, StatusCode::BAD_GATEWAY);
    let error = error.expect("the error rides in the response");
    assert!(error.is_connect(), "{error:?}");
    assert!(
        chain(&error).contains("not valid for name"),
        "{}",
        chain(&error)
    );

    // ...unless the name to verify is given.
    let set = backend.set();
    let service = stack(
        &set,
        ca_tls(&ca).server_name("api.internal").build().unwrap(),
    );
    let (status, body, error) = get(&service, "/").await;
    assert_eq!(status, StatusCode::OK, "{body} {error:?}");
    let last = backend.handshakes().pop().unwrap();
    assert_eq!(last.sni.as_deref(), Some("api.internal"));
}

#[tokio::test]
async fn an_untrusted_certificate_is_a_502_counted_by_passive_health() {
    let trusted = TestCa::new("trusted CA");
    let other = TestCa::new("someone else's CA");
    let backend = TlsBackend::signed_by("a", &other, &["127.0.0.1"], true).await;
    let set = backend.set();
    let service = stack(&set, ca_tls(&trusted).build().unwrap());
    for n in 1..=3 {
        let (status, body, error) = get(&service, "/").await;
        assert_eq!(status, StatusCode::BAD_GATEWAY, "{body}");
        let error = error.unwrap();
        assert!(error.is_connect(), "{error:?}");
        assert!(chain(&error).contains("UnknownIssuer"), "{}", chain(&error));
        let snapshot = set.snapshot();
        assert_eq!(snapshot.backends()[0].state().consecutive_failures(), n);
    }
    assert!(backend.handshakes().is_empty(), "no handshake completed");
}

#[tokio::test]
async fn an_https_backend_never_gets_cleartext() {
    let listener = FirstBytes::start().await;
    let url = format!("https://{}", listener.addr);
    let set = BackendSet::new([url.parse::<Backend>().unwrap()]);
    let ca = TestCa::new("test CA");
    let service = stack(&set, ca_tls(&ca).build().unwrap());
    let (status, _, error) = get(&service, "/secret?token=1").await;
    assert_eq!(status, StatusCode::BAD_GATEWAY);
    assert!(error.unwrap().is_connect());
    let seen = listener.seen();
    assert!(!seen.is_empty(), "the proxy connected");
    for bytes in &seen {
        assert!(is_client_hello(bytes), "not a ClientHello: {bytes:?}");
        let text = String::from_utf8_lossy(bytes);
        assert!(!text.contains("GET") && !text.contains("secret"), "{text}");
    }
}

#[tokio::test]
async fn mutual_tls_shows_the_client_certificate() {
    let server_ca = TestCa::new("server CA");
    let client_ca = TestCa::new("client CA");
    let leaf = server_ca.issue(&["127.0.0.1"]);
    let client = client_ca.issue(&["proxy.internal"]);
    let config = server_config(&leaf, Some(&client_ca), H1);
    let backend = TlsBackend::start("a", config, true).await;

    let set = backend.set();
    let without = stack(&set, ca_tls(&server_ca).build().unwrap());
    let (status, _, _) = get(&without, "/").await;
    assert_eq!(status, StatusCode::BAD_GATEWAY, "no client certificate");

    let set = backend.set();
    let tls = ca_tls(&server_ca)
        .client_cert_pem(&client.cert_pem, &client.key_pem)
        .build()
        .unwrap();
    let with = stack(&set, tls);
    let (status, body, error) = get(&with, "/").await;
    assert_eq!(status, StatusCode::OK, "{body} {error:?}");
    assert!(backend.handshakes().iter().any(|h| h.client_cert));
}

#[tokio::test]
async fn an_h2_backend_gets_alpn_h2() {
    let ca = TestCa::new("test CA");
    let leaf = ca.issue(&["127.0.0.1"]);
    let backend = TlsBackend::start("a", server_config(&leaf, None, &[b"h2"]), true).await;
    let url = format!("{},protocol=h2", backend.url());
    let set = BackendSet::new([url.parse::<Backend>().unwrap()]);
    let service = stack(&set, ca_tls(&ca).build().unwrap());
    let (status, body, error) = get(&service, "/two").await;
    assert_eq!(status, StatusCode::OK, "{body} {error:?}");
    assert_eq!(body, "a /two proto=http version=HTTP/2.0");
    assert_eq!(backend.handshakes()[0].alpn.as_deref(), Some("h2"));
}

#[test]
fn bad_settings_are_refused_when_built_naming_what() {
    let ca = TestCa::new("test CA");
    let a = ca.issue(&["a"]);
    let b = ca.issue(&["b"]);
    let cases = [
        (
            BackendTls::builder().ca_pem("not a pem"),
            "CA bundle: no certificate",
        ),
        (
            BackendTls::builder().ca_file("/nonexistent/ca.pem"),
            "/nonexistent/ca.pem",
        ),
        (
            ca_tls(&ca).client_cert_pem(&a.cert_pem, &b.key_pem),
            "client certificate and key",
        ),
        (
            ca_tls(&ca).client_cert_pem(&a.cert_pem, "junk"),
            "client key",
        ),
        (ca_tls(&ca).server_name("not a name!"), "not a DNS name"),
    ];
    for (builder, why) in cases {
        let error: tower_lb::ConfigError = builder.build().unwrap_err();
        assert!(error.to_string().contains(why), "{why}: {error}");
    }
}

#[tokio::test]
async fn health_probes_of_https_backends_go_over_tls() {
    let ca = TestCa::new("test CA");
    let good = TlsBackend::start(
        "good",
        server_config(&ca.issue(&["127.0.0.1"]), None, H1),
        true,
    )
    .await;
    let stranger = TestCa::new("other CA");
    let bad = TlsBackend::start(
        "bad",
        server_config(&stranger.issue(&["127.0.0.1"]), None, H1),
        true,
    )
    .await;
    for probe in [Probe::http("/health").unwrap(), Probe::tcp()] {
        let set = BackendSet::new([
            good.url().parse::<Backend>().unwrap(),
            bad.url().parse::<Backend>().unwrap(),
        ]);
        let _checks = ActiveHealthCheck::new(probe.clone())
            .interval(Duration::from_millis(50))
            .timeout(Duration::from_secs(2))
            .tls(ca_tls(&ca).build().unwrap())
            .spawn(&set)
            .unwrap();
        let verdicts = async {
            loop {
                let snapshot = set.snapshot();
                let v: Vec<Verdict> = snapshot
                    .backends()
                    .iter()
                    .map(|b| b.state().verdict())
                    .collect();
                if v.iter().all(|v| *v != Verdict::Unknown) {
                    return snapshot;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        };
        let snapshot = tokio::time::timeout(Duration::from_secs(10), verdicts)
            .await
            .expect("both probed");
        let by_url = |url: &str| {
            snapshot
                .backends()
                .iter()
                .find(|b| b.address().to_string() == url)
                .unwrap()
                .clone()
        };
        let (g, b) = (by_url(&good.url()), by_url(&bad.url()));
        assert_eq!(g.state().verdict(), Verdict::Healthy, "{probe:?}");
        assert_eq!(b.state().verdict(), Verdict::Unhealthy, "{probe:?}");
        let why = b.state().last_probe_error().map(|e| e.to_string());
        assert!(
            why.as_deref().is_some_and(|w| w.contains("UnknownIssuer")),
            "{probe:?}: {why:?}"
        );
    }
}

/// Collects what `tracing` writes while the test runs (this thread only).
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn a_failing_handshake_is_logged_once_per_backend_until_it_recovers() {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let ca = TestCa::new("test CA");
    let stranger = TestCa::new("other CA");
    let bad = TlsBackend::start(
        "bad",
        server_config(&stranger.issue(&["127.0.0.1"]), None, H1),
        true,
    )
    .await;
    let set = BackendSet::new([bad.url().parse::<Backend>().unwrap()]);
    let service = stack(&set, ca_tls(&ca).build().unwrap());
    for _ in 0..5 {
        assert_eq!(get(&service, "/").await.0, StatusCode::BAD_GATEWAY);
    }
    let text = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    let warnings: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("TLS handshake with backend failed"))
        .collect();
    assert_eq!(warnings.len(), 1, "{text}");
    assert!(warnings[0].contains("UnknownIssuer"), "{text}");
    assert!(warnings[0].contains(&bad.addr.to_string()), "{text}");
}
