//! Byte-level test parts: a backend that records exactly what arrives and
//! answers with scripted bytes, and a raw client that sends bytes and reads
//! one response back. For the smuggling and header-abuse battery.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// What a [`RawBackend`] answers to its `n`th request (counted from 0 over
/// all its connections), given the request's head; after the answer it
/// closes the connection when `close` is true.
pub type Script = Arc<dyn Fn(usize, &str) -> (Vec<u8>, bool) + Send + Sync>;

/// A backend on raw sockets: it reads each request head (and the body its
/// head declares, Content-Length or chunked), records the head exactly as
/// it arrived, and writes what the script says.
pub struct RawBackend {
    pub addr: SocketAddr,
    heads: Arc<Mutex<Vec<String>>>,
    pub connections: Arc<AtomicUsize>,
    task: JoinHandle<()>,
}

/// `200 OK` with `body` and an exact Content-Length.
pub fn ok(body: &str) -> Vec<u8> {
    format!(
        "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

impl RawBackend {
    /// Answers every request `200 good`.
    pub async fn good() -> Self {
        Self::start(Arc::new(|_, _| (ok("good"), false))).await
    }

    /// Answers its first request with `first` (then closes when `close`),
    /// every later one `200 good`.
    pub async fn first_answer(first: &'static [u8], close: bool) -> Self {
        Self::start(Arc::new(move |n, _| {
            if n == 0 {
                (first.to_vec(), close)
            } else {
                (ok("good"), false)
            }
        }))
        .await
    }

    pub async fn start(script: Script) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let heads = Arc::new(Mutex::new(Vec::new()));
        let connections = Arc::new(AtomicUsize::new(0));
        let requests = Arc::new(AtomicUsize::new(0));
        let (heads2, connections2) = (heads.clone(), connections.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                connections2.fetch_add(1, Ordering::SeqCst);
                let (heads, script, requests) = (heads2.clone(), script.clone(), requests.clone());
                tokio::spawn(async move {
                    let _ = serve(stream, heads, script, requests).await;
                });
            }
        });
        Self {
            addr,
            heads,
            connections,
            task,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Every request head received so far, exactly as it arrived.
    pub fn heads(&self) -> Vec<String> {
        self.heads.lock().unwrap().clone()
    }
}

impl Drop for RawBackend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve(
    mut stream: TcpStream,
    heads: Arc<Mutex<Vec<String>>>,
    script: Script,
    requests: Arc<AtomicUsize>,
) -> std::io::Result<()> {
    let mut buffer = Vec::new();
    loop {
        let head_end = loop {
            if let Some(end) = find(&buffer, b"\r\n\r\n") {
                break end + 4;
            }
            if read_more(&mut stream, &mut buffer).await? == 0 {
                return Ok(());
            }
        };
        let head = String::from_utf8_lossy(&buffer[..head_end]).into_owned();
        buffer.drain(..head_end);
        heads.lock().unwrap().push(head.clone());
        let lower = head.to_ascii_lowercase();
        if lower.contains("\r\ntransfer-encoding: chunked") {
            // The proxy writes well-formed chunks: the body ends at the
            // last chunk and the empty trailer.
            loop {
                if let Some(end) = find(&buffer, b"0\r\n\r\n") {
                    buffer.drain(..end + 5);
                    break;
                }
                if read_more(&mut stream, &mut buffer).await? == 0 {
                    return Ok(());
                }
            }
        } else if let Some(length) = header(&lower, "content-length") {
            let length: usize = length.parse().unwrap_or(0);
            while buffer.len() < length {
                if read_more(&mut stream, &mut buffer).await? == 0 {
                    return Ok(());
                }
            }
            buffer.drain(..length);
        }
        let n = requests.fetch_add(1, Ordering::SeqCst);
        let (answer, close) = script(n, &head);
        stream.write_all(&answer).await?;
        if close {
            return stream.shutdown().await;
        }
    }
}

async fn read_more(stream: &mut TcpStream, buffer: &mut Vec<u8>) -> std::io::Result<usize> {
    let mut chunk = [0u8; 8192];
    let n = stream.read(&mut chunk).await?;
    buffer.extend_from_slice(&chunk[..n]);
    Ok(n)
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// The value of header `name` (lower case) in a lower-cased head.
pub fn header<'a>(lower_head: &'a str, name: &str) -> Option<&'a str> {
    lower_head.split("\r\n").find_map(|line| {
        let (n, v) = line.split_once(':')?;
        (n == name).then(|| v.trim())
    })
}

/// What came back for one raw request: the status (`None` when the
/// connection closed without an answer) and the whole text read.
#[derive(Debug)]
pub struct RawAnswer {
    pub status: Option<u16>,
    pub text: String,
}

impl RawAnswer {
    /// The body after the head.
    pub fn body(&self) -> &str {
        self.text.split_once("\r\n\r\n").map_or("", |(_, b)| b)
    }
}

/// Sends `bytes` on a new connection to `addr` and reads the response:
/// until the head and its Content-Length body are in, the connection
/// closes, or two seconds pass.
pub async fn exchange(addr: SocketAddr, bytes: &[u8]) -> RawAnswer {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(bytes).await.unwrap();
    read_answer(&mut stream).await
}

/// Reads one response from `stream` (see [`exchange`]).
pub async fn read_answer(stream: &mut TcpStream) -> RawAnswer {
    let mut buffer = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
    loop {
        if let Some(end) = find(&buffer, b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buffer[..end]).to_ascii_lowercase();
            let length =
                header(&(head + "\r\n"), "content-length").and_then(|v| v.parse::<usize>().ok());
            if length.is_some_and(|l| buffer.len() >= end + 4 + l) {
                break;
            }
        }
        let mut chunk = [0u8; 8192];
        match tokio::time::timeout_at(deadline, stream.read(&mut chunk)).await {
            Ok(Ok(n)) if n > 0 => buffer.extend_from_slice(&chunk[..n]),
            _ => break,
        }
    }
    let text = String::from_utf8_lossy(&buffer).into_owned();
    let status = text
        .strip_prefix("HTTP/1.1 ")
        .or_else(|| text.strip_prefix("HTTP/1.0 "))
        .and_then(|rest| rest.get(..3))
        .and_then(|code| code.parse().ok());
    RawAnswer { status, text }
}
