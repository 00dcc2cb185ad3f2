//! One listening address, one socket per worker: a `SO_REUSEPORT` group.
//!
//! Why `SO_REUSEPORT` rather than one listener whose accepted connections
//! are handed to workers: the kernel spreads new connections over the
//! group's sockets (by a hash of the connection's addresses), so each
//! worker accepts on its own socket with no hand-off between threads, and a
//! connection lives its whole life on the thread that accepted it. The cost
//! is that the spread is by hash, not by load; for many short and
//! keep-alive connections that evens out.

use std::io;
use std::net::SocketAddr;

use tokio::net::TcpSocket;

/// The backlog each socket listens with: what `TcpListener::bind` uses.
const BACKLOG: u32 = 1024;

/// Binds `count` listeners on `addr`, all in one `SO_REUSEPORT` group. With
/// port 0 the first gets a port from the kernel and the others join it.
/// Returned as std listeners (non-blocking) so that each can be moved to
/// its worker's runtime; call it inside a runtime.
///
/// The address is first bound once without `SO_REUSEPORT`, and that must
/// succeed: otherwise a second proxy started by the same user on the same
/// port would join the first one's group and silently take a share of its
/// connections, where a single listener failed with "address in use".
pub fn bind(addr: SocketAddr, count: usize) -> io::Result<Vec<std::net::TcpListener>> {
    if addr.port() != 0 {
        socket(addr)?.bind(addr)?;
    }
    let first = listen(addr)?;
    let addr = first.local_addr()?;
    let mut listeners = Vec::with_capacity(count);
    listeners.push(first);
    for _ in 1..count {
        listeners.push(listen(addr)?);
    }
    Ok(listeners)
}

fn listen(addr: SocketAddr) -> io::Result<std::net::TcpListener> {
    let socket = socket(addr)?;
    socket.set_reuseport(true)?;
    socket.bind(addr)?;
    // `into_std` takes it off this runtime's reactor, ready for another's.
    socket.listen(BACKLOG)?.into_std()
}

/// A socket with `SO_REUSEADDR`, as `TcpListener::bind` makes them, so a
/// restart is not refused while old connections sit in TIME_WAIT.
fn socket(addr: SocketAddr) -> io::Result<TcpSocket> {
    let socket = match addr {
        SocketAddr::V4(_) => TcpSocket::new_v4()?,
        SocketAddr::V6(_) => TcpSocket::new_v6()?,
    };
    socket.set_reuseaddr(true)?;
    Ok(socket)
}
