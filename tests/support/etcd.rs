//! A real etcd (Debian's etcd-server) on free loopback ports with a
//! temporary data directory, that a test stops and starts again.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

pub struct Etcd {
    pub client: SocketAddr,
    peer: SocketAddr,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

fn free_addr() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

impl Etcd {
    pub async fn start() -> Self {
        let mut etcd = Self {
            client: free_addr(),
            peer: free_addr(),
            dir: tempfile::tempdir().unwrap(),
            child: None,
        };
        etcd.run().await;
        etcd
    }

    /// `http://127.0.0.1:PORT`.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.client)
    }

    async fn run(&mut self) {
        let (client, peer) = (
            format!("http://{}", self.client),
            format!("http://{}", self.peer),
        );
        let child = Command::new(binary())
            .arg("--name=test")
            .arg(format!(
                "--data-dir={}",
                self.dir.path().join("data").display()
            ))
            .arg(format!("--listen-client-urls={client}"))
            .arg(format!("--advertise-client-urls={client}"))
            .arg(format!("--listen-peer-urls={peer}"))
            .arg(format!("--initial-advertise-peer-urls={peer}"))
            .arg(format!("--initial-cluster=test={peer}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("etcd starts");
        self.child = Some(child);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(mut c) = self.connect().await
                && c.get("ready-check", None).await.is_ok()
            {
                return;
            }
            assert!(tokio::time::Instant::now() < deadline, "etcd did not start");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub async fn connect(&self) -> Result<etcd_client::Client, etcd_client::Error> {
        let options = etcd_client::ConnectOptions::new()
            .with_connect_timeout(Duration::from_secs(1))
            .with_timeout(Duration::from_secs(5));
        etcd_client::Client::connect([self.endpoint()], Some(options)).await
    }

    pub async fn put(&self, key: &str, value: &str) {
        self.connect()
            .await
            .unwrap()
            .put(key, value, None)
            .await
            .unwrap();
    }

    pub async fn delete(&self, key: &str) {
        self.connect()
            .await
            .unwrap()
            .delete(key, None)
            .await
            .unwrap();
    }

    /// Kills it (by its PID, through the child handle); the data stays.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same ports and data.
    pub async fn restart(&mut self) {
        self.stop();
        self.run().await;
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        self.stop();
    }
}

/// etcd's binary: `.ci/run` installs it (Debian's etcd-server).
fn binary() -> PathBuf {
    let path = PathBuf::from("/usr/bin/etcd");
    assert!(
        path.exists(),
        "etcd is not installed: apt-get install -y --no-install-recommends etcd-server"
    );
    path
}
