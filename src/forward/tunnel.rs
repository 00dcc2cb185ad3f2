//! Joining a client and a backend after `101 Switching Protocols`.

use futures_util::future::try_join;
use http::HeaderValue;
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;

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

    /// Once both sides have switched, copies bytes both ways until either
    /// closes. The backend counts the tunnel as a request in flight, so
    /// least-connections sees long-lived WebSockets.
    pub(crate) fn spawn(self, backend_side: OnUpgrade) {
        let in_flight = self.backend.map(InFlight::begin);
        tokio::spawn(async move {
            let _in_flight = in_flight;
            let Ok((client, backend)) = try_join(self.client, backend_side).await else {
                return;
            };
            let mut client = TokioIo::new(client);
            let mut backend = TokioIo::new(backend);
            let _ = tokio::io::copy_bidirectional(&mut client, &mut backend).await;
        });
    }
}
