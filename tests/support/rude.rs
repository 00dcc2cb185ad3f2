//! A backend that reads the whole request, then hangs up without answering
//! (the request reached it, and the exchange still failed), or after the
//! head and the first bytes of a longer body (a response cut short).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

pub struct RudeBackend {
    pub addr: SocketAddr,
    /// Requests read whole.
    pub hits: Arc<AtomicUsize>,
    task: JoinHandle<()>,
}

impl RudeBackend {
    pub async fn start() -> Self {
        Self::answering(b"").await
    }

    /// Answers 200 with `Content-Length: 100`, sends 10 bytes and hangs up.
    #[allow(dead_code)] // (not every test file that has the support uses it)
    pub async fn cut_short() -> Self {
        Self::answering(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\n0123456789").await
    }

    /// Writes `answer` once the request is read, then hangs up.
    async fn answering(answer: &'static [u8]) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let hits = Arc::new(AtomicUsize::new(0));
        let counter = hits.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((mut stream, _)) = listener.accept().await else {
                    continue;
                };
                let counter = counter.clone();
                tokio::spawn(async move {
                    let mut request = Vec::new();
                    let mut buffer = [0u8; 8192];
                    loop {
                        let Ok(n) = stream.read(&mut buffer).await else {
                            return;
                        };
                        if n == 0 {
                            return;
                        }
                        request.extend_from_slice(&buffer[..n]);
                        if let Some(end) = find(&request, b"\r\n\r\n") {
                            let head = String::from_utf8_lossy(&request[..end]).to_lowercase();
                            let length: usize = head
                                .lines()
                                .find_map(|l| l.strip_prefix("content-length:"))
                                .and_then(|v| v.trim().parse().ok())
                                .unwrap_or(0);
                            if request.len() >= end + 4 + length {
                                counter.fetch_add(1, Ordering::SeqCst);
                                let _ = stream.write_all(answer).await;
                                return; // hang up
                            }
                        }
                    }
                });
            }
        });
        Self { addr, hits, task }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

impl Drop for RudeBackend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}
