//! The byte-level battery: request smuggling and header abuse (RFC 9112) in
//! both directions, against the example proxy on real sockets.
//!
//! A hostile client's bytes go to the proxy on a raw socket; a raw backend
//! records exactly what arrives upstream. A hostile backend's bytes come
//! back through the proxy; what matters then is that no desynchronised
//! connection is reused. After every bad exchange a normal request must
//! still succeed.

mod support;

use std::sync::Arc;
use std::time::Duration;

use support::process::ProxyProcess;
use support::raw::{RawBackend, exchange, header, ok};

const GOOD: &[u8] = b"GET /ok HTTP/1.1\r\nHost: shop.example\r\n\r\n";

async fn proxy(backends: &[&RawBackend], extra: &[&str]) -> ProxyProcess {
    let urls: Vec<String> = backends.iter().map(|b| b.url()).collect();
    let mut args: Vec<&str> = Vec::new();
    for url in &urls {
        args.extend(["--backend", url]);
    }
    // Probes would reach the raw backends as extra connections; keep them
    // rare so that they cannot hide or cause anything here.
    args.extend(["--health-interval", "1h"]);
    args.extend(extra);
    ProxyProcess::start(&args).await
}

/// A normal request after a bad one still gets the backend's answer.
async fn still_serves(proxy: &ProxyProcess, case: &str) {
    let answer = exchange(proxy.addr, GOOD).await;
    assert_eq!(answer.status, Some(200), "{case}: then {answer:?}");
    assert_eq!(answer.body(), "good", "{case}: a desynchronised answer");
}

// ---- defect 1: h2c ----

/// A backend that switches to whatever the request asks for.
async fn switching_backend() -> RawBackend {
    RawBackend::start(Arc::new(|_, head: &str| {
        let lower = head.to_ascii_lowercase();
        match header(&lower, "upgrade") {
            Some(protocol) => (
                format!(
                    "HTTP/1.1 101 Switching Protocols\r\nconnection: upgrade\r\nupgrade: {protocol}\r\n\r\n"
                )
                .into_bytes(),
                false,
            ),
            None => (ok("good"), false),
        }
    }))
    .await
}

#[tokio::test]
async fn h2c_upgrades_never_reach_the_backend() {
    let backend = switching_backend().await;
    let proxy = proxy(&[&backend], &[]).await;
    let answer = exchange(
        proxy.addr,
        b"GET / HTTP/1.1\r\nHost: shop.example\r\nConnection: Upgrade, HTTP2-Settings\r\n\
          Upgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n",
    )
    .await;
    assert_eq!(answer.status, Some(200), "{answer:?}");
    assert_eq!(answer.body(), "good");
    let heads = backend.heads();
    assert_eq!(heads.len(), 1);
    let head = heads[0].to_ascii_lowercase();
    assert!(!head.contains("upgrade"), "upgrade forwarded: {head}");
    assert!(
        !head.contains("http2-settings"),
        "settings forwarded: {head}"
    );
    // WebSocket, the default allowed upgrade, still goes through.
    let answer = exchange(
        proxy.addr,
        b"GET /ws HTTP/1.1\r\nHost: shop.example\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
          Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
    )
    .await;
    assert_eq!(answer.status, Some(101), "{answer:?}");
}

#[tokio::test]
async fn upgrades_are_only_the_allowed_ones() {
    let backend = switching_backend().await;
    let proxy = proxy(&[&backend], &[]).await;
    // Not allowed (only websocket is, by default): forwarded without it.
    let answer = exchange(
        proxy.addr,
        b"GET / HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: foo\r\n\r\n",
    )
    .await;
    assert_eq!(answer.status, Some(200), "{answer:?}");
    assert!(!backend.heads()[0].to_ascii_lowercase().contains("upgrade"));
    // A list leaves the choice to the backend: not forwarded either.
    let answer = exchange(
        proxy.addr,
        b"GET / HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: h2c, websocket\r\n\r\n",
    )
    .await;
    assert_eq!(answer.status, Some(200), "{answer:?}");
    still_serves(&proxy, "after upgrades").await;

    // Allowed by the operator: switched.
    let proxy = self::proxy(&[&backend], &["--upgrade", "foo"]).await;
    let answer = exchange(
        proxy.addr,
        b"GET / HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: foo\r\n\r\n",
    )
    .await;
    assert_eq!(answer.status, Some(101), "{answer:?}");
    // h2c can't be allowed.
    let (code, output) = support::process::run_proxy(&["--upgrade", "h2c"]).await;
    assert_eq!(code, 2, "{output}");
    assert!(
        output.contains("upgrades: h2c is never allowed"),
        "{output}"
    );
}

#[tokio::test]
async fn a_switch_the_client_did_not_ask_for_is_a_502() {
    // Switches every request, asked or not, and to h2c.
    let backend = RawBackend::start(Arc::new(|n, _: &str| {
        if n < 2 {
            (
                b"HTTP/1.1 101 Switching Protocols\r\nconnection: upgrade\r\nupgrade: h2c\r\n\r\n"
                    .to_vec(),
                false,
            )
        } else {
            (ok("good"), false)
        }
    }))
    .await;
    let proxy = proxy(&[&backend], &["--retries", "0"]).await;
    let answer = exchange(proxy.addr, b"GET / HTTP/1.1\r\nHost: a\r\n\r\n").await;
    assert_eq!(answer.status, Some(502), "{answer:?}");
    let answer = exchange(
        proxy.addr,
        b"GET / HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
          Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
    )
    .await;
    assert_eq!(answer.status, Some(502), "switched to h2c: {answer:?}");
    still_serves(&proxy, "after unasked switches").await;
}

// ---- defect 2: https backends ----

#[cfg(feature = "tls")]
#[tokio::test]
async fn https_backends_are_never_downgraded() {
    // Where an https backend should be, a listener records what arrives:
    // a TLS ClientHello, never the request in cleartext. (Without the
    // `tls` feature an https URL is refused when parsed: see
    // `backend::address`'s tests.)
    let recorder = support::tls::FirstBytes::start().await;
    let url = format!("https://{}", recorder.addr);
    let proxy = support::process::ProxyProcess::start(&[
        "--backend",
        &url,
        "--retries",
        "0",
        "--health-interval",
        "1h",
    ])
    .await;
    let answer = exchange(
        proxy.addr,
        b"GET /secret HTTP/1.1\r\nHost: shop.example\r\nAuthorization: Bearer t0ken\r\n\r\n",
    )
    .await;
    assert_eq!(answer.status, Some(502), "{answer:?}");
    let seen = recorder.seen();
    assert!(!seen.is_empty(), "the proxy connected");
    for bytes in seen {
        assert!(support::tls::is_client_hello(&bytes), "{bytes:?}");
        assert!(!String::from_utf8_lossy(&bytes).contains("t0ken"));
    }
}

// ---- defect 3: Connection naming Host ----

#[tokio::test]
async fn connection_cannot_strip_host_or_forwarding_headers() {
    let backend = RawBackend::good().await;
    let proxy = proxy(&[&backend], &[]).await;
    let answer = exchange(
        proxy.addr,
        b"GET / HTTP/1.1\r\nHost: shop.example\r\n\
          Connection: Host, X-Forwarded-For, X-Forwarded-Host, X-Secret\r\n\
          X-Forwarded-For: 203.0.113.5\r\nX-Secret: 1\r\n\r\n",
    )
    .await;
    assert_eq!(answer.status, Some(200), "{answer:?}");
    let head = backend.heads()[0].to_ascii_lowercase();
    assert_eq!(header(&head, "host"), Some("shop.example"), "{head}");
    assert_eq!(header(&head, "x-forwarded-host"), Some("shop.example"));
    assert_eq!(
        header(&head, "x-forwarded-for"),
        Some("203.0.113.5, 127.0.0.1")
    );
    assert_eq!(header(&head, "x-secret"), None, "{head}");
    assert_eq!(header(&head, "connection"), None, "{head}");
}

// ---- defect 4: the client's framing errors ----

#[tokio::test]
async fn a_clients_broken_body_is_a_400_not_the_backends_failure() {
    let a = RawBackend::good().await;
    let b = RawBackend::good().await;
    let proxy = proxy(&[&a, &b], &[]).await;
    let broken: [&[u8]; 3] = [
        // An invalid chunk size.
        b"PUT /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n",
        // A chunk without its CRLF.
        b"PUT /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhelloXX0\r\n\r\n",
        // A chunk size past any sane length.
        b"PUT /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nfffffffffffffffffff\r\n",
    ];
    // More broken requests than the five failures in a row that eject.
    for round in 0..4 {
        for (i, bytes) in broken.iter().enumerate() {
            let answer = exchange(proxy.addr, bytes).await;
            assert!(
                matches!(answer.status, Some(400) | None),
                "round {round} case {i}: {answer:?}"
            );
        }
    }
    // PUT is idempotent: a retry would have sent each on to the other backend.
    let sent = a.heads().len() + b.heads().len();
    assert!(sent <= 12, "retried: {sent} heads upstream for 12 requests");
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(
        !proxy.output().contains("ejected"),
        "a healthy backend was ejected:\n{}",
        proxy.output()
    );
    for _ in 0..4 {
        still_serves(&proxy, "after broken bodies").await;
    }
}

#[tokio::test]
async fn a_body_cut_short_by_the_client_is_not_retried_nor_blamed() {
    let a = RawBackend::good().await;
    let b = RawBackend::good().await;
    let proxy = proxy(&[&a, &b], &[]).await;
    for _ in 0..6 {
        let mut stream = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
        tokio::io::AsyncWriteExt::write_all(
            &mut stream,
            b"PUT /x HTTP/1.1\r\nHost: a\r\nContent-Length: 100\r\n\r\nonly ten..",
        )
        .await
        .unwrap();
        tokio::io::AsyncWriteExt::shutdown(&mut stream)
            .await
            .unwrap();
        let answer = support::raw::read_answer(&mut stream).await;
        assert!(matches!(answer.status, Some(400) | None), "{answer:?}");
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let sent = a.heads().len() + b.heads().len();
    assert!(sent <= 6, "retried: {sent} heads upstream for 6 requests");
    assert!(!proxy.output().contains("ejected"), "{}", proxy.output());
    still_serves(&proxy, "after bodies cut short").await;
}

// ---- the battery: a hostile client ----

/// Requests that must not smuggle a second request past the proxy, nor
/// reach the backend with ambiguous framing.
const HOSTILE_REQUESTS: &[(&str, &[u8])] = &[
    (
        "CL.TE",
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n\
          0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n",
    ),
    (
        "TE.CL",
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n\
          5c\r\nGET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n0\r\n\r\n",
    ),
    (
        "TE obfuscated: xchunked",
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: xchunked\r\nContent-Length: 4\r\n\r\n\
          0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n",
    ),
    (
        "TE obfuscated: space before colon",
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding : chunked\r\nContent-Length: 4\r\n\r\n\
          0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n",
    ),
    (
        "TE obfuscated: vertical tab",
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding:\x0bchunked\r\nContent-Length: 4\r\n\r\n\
          0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n",
    ),
    (
        "TE obfuscated: chunked, identity",
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, identity\r\nContent-Length: 4\r\n\r\n\
          0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n",
    ),
    (
        "TE twice",
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: x\r\n\r\n\
          0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n",
    ),
    (
        "CL twice, differing",
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\nContent-Length: 40\r\n\r\n\
          GET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n",
    ),
    (
        "CL as a list",
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0, 40\r\n\r\n\
          GET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n",
    ),
    (
        "CL with a sign",
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +40\r\n\r\n\
          GET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n",
    ),
    (
        "chunk size negative",
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n-5\r\nhello\r\n0\r\n\r\n",
    ),
    (
        "chunk size in 0x form",
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0x5\r\nhello\r\n0\r\n\r\n",
    ),
    (
        "chunk extension with a bare LF",
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n\
          5;a\nGET /smuggled HTTP/1.1\r\n0\r\n\r\n",
    ),
    (
        "chunk size overflowing",
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n\
          10000000000000001\r\nx\r\n0\r\n\r\n",
    ),
    (
        "obsolete line folding",
        b"GET / HTTP/1.1\r\nHost: a\r\nX-A: b\r\n Transfer-Encoding: chunked\r\n\r\n",
    ),
    (
        "bare CR in a field",
        b"GET / HTTP/1.1\r\nHost: a\r\nX-A: b\rTransfer-Encoding: chunked\r\n\r\n",
    ),
    (
        "bare LF ending a field",
        b"GET / HTTP/1.1\r\nHost: a\nX-A: b\r\n\r\n",
    ),
    ("NUL in a field", b"GET / HTTP/1.1\r\nHost: a\r\nX-A: b\0c\r\n\r\n"),
    (
        "space in the request line target",
        b"GET /a HTTP/1.1 /smuggled HTTP/1.1\r\nHost: a\r\n\r\n",
    ),
];

#[tokio::test]
async fn hostile_requests_smuggle_nothing() {
    let backend = RawBackend::good().await;
    let proxy = proxy(&[&backend], &[]).await;
    for (case, bytes) in HOSTILE_REQUESTS {
        let before = backend.heads().len();
        let answer = exchange(proxy.addr, bytes).await;
        // Refused (4xx or closed), or served as exactly one request.
        assert!(
            matches!(answer.status, Some(400..=499) | Some(200) | None),
            "{case}: {answer:?}"
        );
        let heads = backend.heads();
        let new = &heads[before..];
        assert!(
            new.len() <= 1,
            "{case}: {} requests upstream: {new:?}",
            new.len()
        );
        for head in new {
            let lower = head.to_ascii_lowercase();
            assert!(!lower.contains("/smuggled"), "{case}: smuggled: {head}");
            assert!(
                !(lower.contains("\r\ncontent-length:")
                    && lower.contains("\r\ntransfer-encoding:")),
                "{case}: both framings upstream: {head}"
            );
            assert!(
                !lower.contains('\0') && !lower.contains("\n "),
                "{case}: {head}"
            );
        }
        still_serves(&proxy, case).await;
    }
}

#[tokio::test]
async fn an_absolute_form_target_is_the_host() {
    let backend = RawBackend::good().await;
    let proxy = proxy(&[&backend], &[]).await;
    let answer = exchange(
        proxy.addr,
        b"GET http://other.example/x?y=1 HTTP/1.1\r\nHost: shop.example\r\n\r\n",
    )
    .await;
    assert_eq!(answer.status, Some(200), "{answer:?}");
    let head = backend.heads()[0].to_ascii_lowercase();
    assert!(head.starts_with("get /x?y=1 http/1.1\r\n"), "{head}");
    // RFC 9112 §3.2.2: the target's authority wins over Host.
    assert_eq!(header(&head, "host"), Some("other.example"), "{head}");
    assert_eq!(header(&head, "x-forwarded-host"), Some("other.example"));
}

// ---- the battery: a hostile backend ----

/// First answers that must never leave a desynchronised connection in the
/// pool: each hides a second response (`evil`) that a proxy reusing the
/// connection would hand to the next client.
const HOSTILE_RESPONSES: &[(&str, &[u8])] = &[
    (
        "CL and TE",
        b"HTTP/1.1 200 OK\r\ncontent-length: 4\r\ntransfer-encoding: chunked\r\n\r\n\
          0\r\n\r\nHTTP/1.1 200 OK\r\ncontent-length: 4\r\n\r\nevil",
    ),
    (
        "CL twice, differing",
        b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\ncontent-length: 44\r\n\r\n\
          okHTTP/1.1 200 OK\r\ncontent-length: 4\r\n\r\nevil",
    ),
    (
        "more bytes than declared",
        b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n\
          okHTTP/1.1 200 OK\r\ncontent-length: 4\r\n\r\nevil",
    ),
    (
        "TE obfuscated",
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: xchunked\r\ncontent-length: 2\r\n\r\n\
          okHTTP/1.1 200 OK\r\ncontent-length: 4\r\n\r\nevil",
    ),
    (
        "bad chunk size",
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n\
          zz\r\nHTTP/1.1 200 OK\r\ncontent-length: 4\r\n\r\nevil",
    ),
    (
        "chunk without CRLF",
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n\
          2\r\nokXX0\r\n\r\nHTTP/1.1 200 OK\r\ncontent-length: 4\r\n\r\nevil",
    ),
    (
        "obsolete line folding",
        b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nx-a: b\r\n content-length: 44\r\n\r\n\
          okHTTP/1.1 200 OK\r\ncontent-length: 4\r\n\r\nevil",
    ),
    (
        "bare CR in a field",
        b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nx-a: b\rc\r\n\r\n\
          okHTTP/1.1 200 OK\r\ncontent-length: 4\r\n\r\nevil",
    ),
    (
        "negative CL",
        b"HTTP/1.1 200 OK\r\ncontent-length: -1\r\n\r\n\
          okHTTP/1.1 200 OK\r\ncontent-length: 4\r\n\r\nevil",
    ),
    (
        "a body on a 204",
        b"HTTP/1.1 204 No Content\r\ncontent-length: 4\r\n\r\n\
          evil",
    ),
];

#[tokio::test]
async fn hostile_responses_never_desynchronise_the_pool() {
    for (case, first) in HOSTILE_RESPONSES {
        let backend = RawBackend::first_answer(first, false).await;
        let proxy = proxy(&[&backend], &["--retries", "0"]).await;
        let answer = exchange(proxy.addr, GOOD).await;
        assert!(
            matches!(answer.status, Some(502) | Some(200) | Some(204) | None),
            "{case}: {answer:?}"
        );
        assert!(!answer.body().contains("evil"), "{case}: {answer:?}");
        for _ in 0..3 {
            still_serves(&proxy, case).await;
        }
    }
}

#[tokio::test]
async fn a_response_head_over_the_limit_is_a_502() {
    let mut huge = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n".to_vec();
    for i in 0..4000 {
        huge.extend_from_slice(format!("x-filler-{i}: {}\r\n", "a".repeat(40)).as_bytes());
    }
    huge.extend_from_slice(b"\r\nok");
    let huge: &'static [u8] = huge.leak();
    let backend = RawBackend::first_answer(huge, false).await;
    let proxy = proxy(&[&backend], &["--retries", "0"]).await;
    let answer = exchange(proxy.addr, GOOD).await;
    assert!(matches!(answer.status, Some(502) | None), "{answer:?}");
    still_serves(&proxy, "after a huge head").await;
}
