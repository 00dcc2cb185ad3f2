//! The example proxy's `--admin-token-file`, driven as an operator would.

mod support;

use std::io::Write;

use bytes::Bytes;
use http_body_util::Full;
use support::process::{ProxyProcess, free_addr, run_proxy};
use support::{TestBackend, client, get, send};

const TOKEN: &str = "b6d767d2f8ed5d21a44b0e5886680cb9";

fn token_file(text: &str) -> tempfile::TempPath {
    let mut file = tempfile::NamedTempFile::new().unwrap();
    file.write_all(text.as_bytes()).unwrap();
    file.into_temp_path()
}

#[tokio::test]
async fn the_proxy_takes_admin_writes_with_a_token_and_logs_who() {
    let a = TestBackend::start("a").await;
    let b = TestBackend::start("b").await;
    let tokens = token_file(&format!("# operators\nops:{TOKEN}\n"));
    let admin = free_addr();
    let (admin_arg, tokens_arg) = (admin.to_string(), tokens.to_str().unwrap().to_owned());
    let proxy = ProxyProcess::start(&[
        "--backend",
        &a.url(),
        "--backend",
        &b.url(),
        "--admin",
        &admin_arg,
        "--admin-token-file",
        &tokens_arg,
    ])
    .await;
    proxy
        .wait_for_output("POST /backends/", std::time::Duration::from_secs(5))
        .await;
    assert!(
        !proxy.output().contains("not on loopback"),
        "{}",
        proxy.output()
    );
    let client = client();
    let drain = format!("http://{admin}/backends/drain?backend={}", b.url());
    let post = |authorization: String| {
        let request = http::Request::post(&drain)
            .header("authorization", authorization)
            .body(Full::<Bytes>::default())
            .unwrap();
        send(&client, request)
    };
    let wrong = "Bearer 0123456789abcdef0123456789abcdef".to_owned();
    assert_eq!(post(wrong).await.status, 401);
    proxy
        .wait_for_output(
            "refused a write with an unknown token",
            std::time::Duration::from_secs(5),
        )
        .await;
    let answer = post(format!("Bearer {TOKEN}")).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    proxy
        .wait_for_output("by=\"ops\"", std::time::Duration::from_secs(5))
        .await;
    for _ in 0..6 {
        assert_eq!(
            get(&client, &proxy.url("/")).await.body,
            "a",
            "b is drained"
        );
    }
    let output = proxy.output();
    assert!(output.contains("Drained"), "the event is logged: {output}");
    assert!(!output.contains(TOKEN), "a token in the log: {output}");
    assert!(
        !output.contains("0123456789abcdef"),
        "a guess in the log: {output}"
    );
}

#[tokio::test]
async fn without_a_token_file_the_write_routes_are_off() {
    let a = TestBackend::start("a").await;
    let admin = free_addr();
    let admin_arg = admin.to_string();
    let _proxy = ProxyProcess::start(&["--backend", &a.url(), "--admin", &admin_arg]).await;
    let request = http::Request::post(format!("http://{admin}/backends/drain?backend={}", a.url()))
        .header("authorization", format!("Bearer {TOKEN}"))
        .body(Full::<Bytes>::default())
        .unwrap();
    assert_eq!(send(&client(), request).await.status, 404);
}

#[tokio::test]
async fn a_bad_token_file_exits_2_naming_it_and_never_the_token() {
    let short = token_file("ops:short\n");
    let unnamed = token_file("bad name:0123456789abcdef0123\n");
    let good = token_file(&format!("{TOKEN}\n"));
    let cases = [
        (
            short.to_str().unwrap().to_owned(),
            true,
            "line 1: a token is at least 16",
        ),
        (
            unnamed.to_str().unwrap().to_owned(),
            true,
            "line 1: a name is",
        ),
        (
            "/nonexistent/tokens".to_owned(),
            true,
            "/nonexistent/tokens",
        ),
        (good.to_str().unwrap().to_owned(), false, "needs admin"),
    ];
    for (path, with_admin, expected) in cases {
        let mut args = vec![
            "--backend",
            "http://127.0.0.1:9",
            "--admin-token-file",
            &path,
        ];
        if with_admin {
            args.extend(["--admin", "127.0.0.1:0"]);
        }
        let (code, output) = run_proxy(&args).await;
        assert_eq!(code, 2, "{path}: {output}");
        assert_eq!(output.lines().count(), 1, "one line: {output}");
        assert!(output.contains("admin-token-file"), "{output}");
        assert!(output.contains(expected), "{path}: {output}");
        let leaked = ["0123456789abcdef0123", "ops:short", TOKEN];
        assert!(!leaked.iter().any(|t| output.contains(t)), "{output}");
    }
}
