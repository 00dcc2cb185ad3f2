//! Joining a client and a backend after `101 Switching Protocols`.

use http::HeaderValue;
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio::io::AsyncWriteExt;

use super::h1::Upgraded;
use super::stream::Stream;

use crate::backend::{Backend, InFlight};

/// The client's side of an upgrade, waiting for the backend's.
#[derive(Debug)]
pub(crate) struct Tunnel {
    client: OnUpgrade,
    backend: Option<Backend>,
    /// The protocol the client asked for (and the forwarder allowed).
    protocol: HeaderValue,
}

impl Tunnel {
    pub(crate) fn new(client: OnUpgrade, backend: Option<Backend>, protocol: HeaderValue) -> Self {
        Self {
            client,
            backend,
            protocol,
        }
    }

    /// The protocol the client asked to switch to.
    pub(crate) fn protocol(&self) -> &HeaderValue {
        &self.protocol
    }

    /// Once the client's side has switched too, copies bytes both ways
    /// until either closes; what the backend had sent past its `101` head
    /// goes to the client first. The backend counts the tunnel as a
    /// request in flight, so least-connections sees long-lived WebSockets.
    pub(crate) fn spawn(self, backend_side: Upgraded<Stream>) {
        let in_flight = self.backend.map(InFlight::begin);
        tokio::spawn(async move {
            let _in_flight = in_flight;
            let Ok(client) = self.client.await else {
                return;
            };
            let mut client = TokioIo::new(client);
            let (mut backend, read_ahead) = backend_side.into_parts();
            if !read_ahead.is_empty() && client.write_all(&read_ahead).await.is_err() {
                return;
            }
            let _ = tokio::io::copy_bidirectional(&mut client, &mut backend).await;
        });
    }
}
