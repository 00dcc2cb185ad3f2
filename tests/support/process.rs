//! The example proxy as a separate process, driven as a user would drive it.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// The example proxy's binary, built on first use if `cargo test` did not
/// build it already.
pub fn proxy_binary() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    // target/<profile>/deps/<test> -> target/<profile>/examples/proxy
    let profile_dir = exe.parent().unwrap().parent().unwrap();
    let binary = profile_dir.join("examples").join("proxy");
    if !binary.exists() {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = std::process::Command::new(cargo)
            .args(["build", "--example", "proxy"])
            .status()
            .expect("cargo runs");
        assert!(status.success(), "building the example proxy failed");
    }
    binary
}

/// A free port on 127.0.0.1 (bound then released).
pub fn free_addr() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

/// A running example proxy; killed (by its PID, through the child handle)
/// when dropped.
pub struct ProxyProcess {
    pub addr: SocketAddr,
    child: Child,
    output: Arc<Mutex<Vec<String>>>,
}

impl ProxyProcess {
    /// Starts the proxy with `args` (and `--listen` on a free port unless
    /// given) and waits until it says it listens.
    pub async fn start(args: &[&str]) -> Self {
        Self::start_with_env(args, &[]).await
    }

    /// [`start`](Self::start), with `env` set in the proxy's environment.
    pub async fn start_with_env(args: &[&str], env: &[(&str, &str)]) -> Self {
        let mut args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        let addr = match args.iter().position(|a| a == "--listen") {
            Some(i) => args[i + 1].parse().unwrap(),
            None => {
                let addr = free_addr();
                args.extend(["--listen".into(), addr.to_string()]);
                addr
            }
        };
        let mut child = Command::new(proxy_binary())
            .args(&args)
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("the proxy starts");
        let output = Arc::new(Mutex::new(Vec::new()));
        for stream in [
            Box::new(child.stdout.take().unwrap()) as Box<dyn tokio::io::AsyncRead + Unpin + Send>,
            Box::new(child.stderr.take().unwrap()),
        ] {
            let output = output.clone();
            tokio::spawn(async move {
                let mut lines = BufReader::new(stream).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    output.lock().unwrap().push(line);
                }
            });
        }
        let proxy = Self {
            addr,
            child,
            output,
        };
        proxy
            .wait_for_output("tower-lb proxy on", Duration::from_secs(30))
            .await;
        proxy
    }

    /// Everything the proxy printed so far.
    pub fn output(&self) -> String {
        self.output.lock().unwrap().join("\n")
    }

    /// Waits until the output contains `text`.
    pub async fn wait_for_output(&self, text: &str, limit: Duration) {
        let deadline = tokio::time::Instant::now() + limit;
        while !self.output().contains(text) {
            assert!(
                tokio::time::Instant::now() < deadline,
                "no `{text}` in the proxy's output:\n{}",
                self.output()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn pid(&self) -> u32 {
        self.child.id().expect("running")
    }

    /// Waits for the process to exit; its exit code.
    pub async fn wait(&mut self) -> Option<i32> {
        self.child
            .wait()
            .await
            .ok()
            .and_then(|status| status.code())
    }
}

/// Runs the proxy with `args` to completion: (exit code, stderr + stdout).
pub async fn run_proxy(args: &[&str]) -> (i32, String) {
    let output = tokio::time::timeout(
        Duration::from_secs(30),
        Command::new(proxy_binary()).args(args).output(),
    )
    .await
    .expect("the proxy exits")
    .expect("the proxy runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stderr),
        String::from_utf8_lossy(&output.stdout)
    );
    (output.status.code().unwrap_or(-1), text)
}

/// Sends `kill -NAME` to the proxy (by its PID).
pub fn signal(proxy: &ProxyProcess, name: &str) {
    let status = std::process::Command::new("kill")
        .args([&format!("-{name}"), &proxy.pid().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}
