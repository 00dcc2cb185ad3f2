//! A calibration floor for the end-to-end bench, NOT a product: the least a
//! tokio proxy can spend per keep-alive GET, so tower-lb's cost is read
//! against it in the same run (issue 10's stretch target is "within 1.2× of
//! the inline floor").
//!
//! It does what the fastest Rust proxies do and nothing else: one
//! current-thread runtime; one task per client connection that drives its
//! upstream exchange inline (no connection task, no channel); `httparse` for
//! the request head and the response head; one read buffer and one write
//! buffer per client connection, reused for every request; a per-process
//! pool of idle backend connections per backend (the process is one thread,
//! so an `Rc<RefCell<Vec<_>>>` is the whole pool); round-robin; `TCP_NODELAY`
//! on both sides.
//!
//! What it leaves out, on purpose, because each is a cost the floor must not
//! carry: request bodies (a request with `Content-Length` other than 0 or any
//! `Transfer-Encoding` closes the connection), methods other than GET,
//! responses without `Content-Length` (chunked, close-delimited, 1xx, 204,
//! 304: all close both connections), header rules (the request head goes to
//! the backend byte for byte as the client sent it, `Host` included),
//! timeouts, retries (but one: a pooled connection the backend had already
//! closed is replaced by a fresh one before any of the response was read,
//! which every pooling client does), health, metrics, tracing, TLS, limits
//! beyond a 16 KiB request head and a 1 MiB response (the whole response is
//! read before it is written back with one `write_all`).
//!
//! ```text
//! cargo run --release --example inline_floor -- 127.0.0.1:18080 127.0.0.1:18081 127.0.0.1:18082
//! curl http://127.0.0.1:18080/
//! ```
#![forbid(unsafe_code)]

use std::cell::{Cell, RefCell};
use std::io::{self, ErrorKind};
use std::net::{SocketAddr, ToSocketAddrs};
use std::rc::Rc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::LocalSet;

/// The largest request head read; the proxy example's default too.
const MAX_REQUEST_HEAD: usize = 16 * 1024;
/// The largest response kept whole in the write buffer; the bench's is 2 bytes of body.
const MAX_RESPONSE: usize = 1024 * 1024;
/// Idle connections kept per backend: above wrk's 64 client connections.
const MAX_IDLE: usize = 256;
/// Header slots for `httparse`, on the stack: a fixed array, no allocation.
const MAX_HEADERS: usize = 64;

/// One backend: its address and its idle connections.
struct Backend {
    addr: SocketAddr,
    idle: RefCell<Vec<TcpStream>>,
}

/// What every connection task shares on this one thread.
struct Upstreams {
    backends: Vec<Backend>,
    next: Cell<usize>,
}

impl Upstreams {
    /// Round-robin: a `Cell`, because the process is one thread.
    fn pick(&self) -> &Backend {
        let i = self.next.get();
        self.next.set(i.wrapping_add(1));
        &self.backends[i % self.backends.len()]
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let usage = "usage: inline_floor LISTEN_ADDR BACKEND_ADDR...";
    let listen = args.next().ok_or(usage)?;
    let mut backends = Vec::new();
    for arg in args {
        // Resolved once here, so a request never waits on a lookup.
        let addr = arg
            .to_socket_addrs()?
            .next()
            .ok_or("backend address resolves to nothing")?;
        backends.push(Backend {
            addr,
            idle: RefCell::new(Vec::new()),
        });
    }
    if backends.is_empty() {
        return Err(usage.into());
    }
    let upstreams = Rc::new(Upstreams {
        backends,
        next: Cell::new(0),
    });
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()?;
    // A LocalSet because the pool is `Rc`: nothing here ever crosses threads.
    LocalSet::new().block_on(&runtime, async move {
        let listener = TcpListener::bind(&listen).await?;
        println!("inline floor on http://{listen}/");
        loop {
            let (client, _) = listener.accept().await?;
            let _ = client.set_nodelay(true);
            let upstreams = Rc::clone(&upstreams);
            tokio::task::spawn_local(async move {
                // Any error ends this client connection, which is all the floor does.
                let _ = serve(client, &upstreams).await;
            });
        }
    })
}

/// Serves one client connection, one keep-alive GET after another.
async fn serve(mut client: TcpStream, upstreams: &Upstreams) -> io::Result<()> {
    let mut read = Vec::with_capacity(MAX_REQUEST_HEAD);
    let mut write = Vec::with_capacity(4096);
    loop {
        let (head_len, keep_alive) = loop {
            if let Some(head) = parse_request(&read)? {
                break head;
            }
            if read.len() >= MAX_REQUEST_HEAD {
                return Err(invalid("request head too large"));
            }
            if client.read_buf(&mut read).await? == 0 {
                return Ok(()); // the client closed between requests (or mid-head)
            }
        };
        let backend = upstreams.pick();
        let (upstream, reusable) = exchange(backend, &read[..head_len], &mut write).await?;
        client.write_all(&write).await?;
        // Pipelined bytes after this head stay for the next round.
        read.drain(..head_len);
        if reusable {
            let mut idle = backend.idle.borrow_mut(); // never held across an await
            if idle.len() < MAX_IDLE {
                idle.push(upstream);
            }
        }
        if !keep_alive {
            return Ok(());
        }
    }
}

/// Parses a request head: `Some((its length, keep-alive))` once complete.
fn parse_request(buf: &[u8]) -> io::Result<Option<(usize, bool)>> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut request = httparse::Request::new(&mut headers);
    let len = match request
        .parse(buf)
        .map_err(|_| invalid("bad request head"))?
    {
        httparse::Status::Complete(len) => len,
        httparse::Status::Partial => return Ok(None),
    };
    if request.method != Some("GET") {
        return Err(invalid("only GET"));
    }
    let mut keep_alive = request.version == Some(1);
    for header in request.headers.iter() {
        if header.name.eq_ignore_ascii_case("transfer-encoding")
            || (header.name.eq_ignore_ascii_case("content-length") && header.value != b"0")
        {
            return Err(invalid("request bodies are left out"));
        }
        if header.name.eq_ignore_ascii_case("connection") && has_token(header.value, b"close") {
            keep_alive = false;
        }
    }
    Ok(Some((len, keep_alive)))
}

/// Sends one request head to `backend` and reads its whole response into
/// `response`; returns the connection and whether it may go back to the pool.
async fn exchange(
    backend: &Backend,
    head: &[u8],
    response: &mut Vec<u8>,
) -> io::Result<(TcpStream, bool)> {
    let pooled = backend.idle.borrow_mut().pop();
    let (mut upstream, mut fresh) = match pooled {
        Some(upstream) => (upstream, false),
        None => (connect(backend.addr).await?, true),
    };
    loop {
        response.clear();
        match read_response(&mut upstream, head, response).await {
            Ok(reusable) => return Ok((upstream, reusable)),
            // A pooled connection the backend closed while idle: once, on a fresh one.
            Err(e) if !fresh && response.is_empty() && is_stale(&e) => {
                upstream = connect(backend.addr).await?;
                fresh = true;
            }
            Err(e) => return Err(e),
        }
    }
}

async fn connect(addr: SocketAddr) -> io::Result<TcpStream> {
    let stream = TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

fn is_stale(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        ErrorKind::UnexpectedEof | ErrorKind::ConnectionReset | ErrorKind::BrokenPipe
    )
}

/// Writes `head`, then reads until the response head and its
/// `Content-Length` bytes of body are all in `response`.
async fn read_response(
    upstream: &mut TcpStream,
    head: &[u8],
    response: &mut Vec<u8>,
) -> io::Result<bool> {
    upstream.write_all(head).await?;
    let (total, reusable) = loop {
        if upstream.read_buf(response).await? == 0 {
            return Err(ErrorKind::UnexpectedEof.into());
        }
        if let Some(framing) = parse_response(response)? {
            break framing;
        }
        if response.len() >= MAX_REQUEST_HEAD {
            return Err(invalid("response head too large"));
        }
    };
    if total > MAX_RESPONSE {
        return Err(invalid("response too large for the floor"));
    }
    response.reserve(total.saturating_sub(response.len()));
    while response.len() < total {
        if upstream.read_buf(response).await? == 0 {
            return Err(ErrorKind::UnexpectedEof.into());
        }
    }
    if response.len() > total {
        // Bytes beyond the framing: the connection is out of step; close both.
        return Err(invalid("backend sent more than its Content-Length"));
    }
    Ok(reusable)
}

/// Parses a response head: `Some((head + body length, reusable))` once complete.
fn parse_response(buf: &[u8]) -> io::Result<Option<(usize, bool)>> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut response = httparse::Response::new(&mut headers);
    let len = match response
        .parse(buf)
        .map_err(|_| invalid("bad response head"))?
    {
        httparse::Status::Complete(len) => len,
        httparse::Status::Partial => return Ok(None),
    };
    if matches!(response.code, Some(100..=199 | 204 | 304)) {
        return Err(invalid("only responses framed by Content-Length"));
    }
    let mut length = None;
    let mut reusable = response.version == Some(1);
    for header in response.headers.iter() {
        if header.name.eq_ignore_ascii_case("transfer-encoding") {
            return Err(invalid("only responses framed by Content-Length"));
        }
        if header.name.eq_ignore_ascii_case("content-length") {
            let value = parse_length(header.value)?;
            if length.is_some_and(|seen| seen != value) {
                return Err(invalid("conflicting Content-Length"));
            }
            length = Some(value);
        }
        if header.name.eq_ignore_ascii_case("connection") && has_token(header.value, b"close") {
            reusable = false;
        }
    }
    let length = length.ok_or_else(|| invalid("only responses framed by Content-Length"))?;
    Ok(Some((len.saturating_add(length), reusable)))
}

fn parse_length(value: &[u8]) -> io::Result<usize> {
    if value.is_empty() || value.len() > 18 || !value.iter().all(u8::is_ascii_digit) {
        return Err(invalid("bad Content-Length"));
    }
    Ok(value.iter().fold(0, |n, d| n * 10 + usize::from(d - b'0')))
}

fn has_token(value: &[u8], token: &[u8]) -> bool {
    value
        .split(|&b| b == b',')
        .any(|t| t.trim_ascii().eq_ignore_ascii_case(token))
}

fn invalid(reason: &'static str) -> io::Error {
    io::Error::new(ErrorKind::InvalidData, reason)
}
