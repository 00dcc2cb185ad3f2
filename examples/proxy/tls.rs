//! TLS both ways: HTTPS for clients on `--listen` (the certificate, the
//! handshake, reloads), and the settings for `https://` backends.
//!
//! The certificate is served through a resolver that reads an `ArcSwap`:
//! a reload (SIGHUP, or `--watch` seeing the files change) loads and checks
//! the new pair first and only then swaps it in, so a bad new file leaves
//! the running certificate in place, and connections already open keep the
//! session they have. Every worker shares one server configuration, hence
//! one certificate, one session cache and one ticket key: a client that
//! resumes lands on whichever worker the kernel picks.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::{InconsistentKeys, ServerConfig};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::signal::unix::{SignalKind, signal};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tower_lb::forward::BackendTls;

use crate::server::{Handshake, Tracked};
use crate::settings::{BackendTlsSettings, Named, ServeTls};

/// Terminates TLS for the client connections of every worker.
#[derive(Clone)]
pub struct Terminator {
    acceptor: TlsAcceptor,
    handshake_timeout: Duration,
    certificate: Arc<Certificate>,
}

/// The certificate being served, and where it comes from.
#[derive(Debug)]
struct Certificate {
    current: ArcSwap<CertifiedKey>,
    cert: Named<PathBuf>,
    key: Named<PathBuf>,
    provider: Arc<CryptoProvider>,
}

impl std::fmt::Debug for Terminator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Terminator")
            .field("cert", &self.certificate.cert.value)
            .field("handshake_timeout", &self.handshake_timeout)
            .finish()
    }
}

impl Handshake for Terminator {
    type Stream = TlsStream<Tracked>;
    fn handshake(&self, io: Tracked) -> impl Future<Output = Option<Self::Stream>> + Send {
        self.accept(io)
    }
}

impl ResolvesServerCert for Certificate {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load_full())
    }
}

impl Terminator {
    /// Loads and checks the certificate and key; the error is one line
    /// naming the flag (or file key) at fault.
    pub fn load(settings: &ServeTls) -> Result<Self, String> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let first = load_pair(&settings.cert, &settings.key, &provider)?;
        let certificate = Arc::new(Certificate {
            current: ArcSwap::from_pointee(first),
            cert: settings.cert.clone(),
            key: settings.key.clone(),
            provider: provider.clone(),
        });
        // TLS 1.2 and 1.3 only; h2 first, as browsers and curl expect.
        let mut config = ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .map_err(|e| format!("TLS: {e}"))?
            .with_no_client_auth()
            .with_cert_resolver(certificate.clone());
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        // Stateless session tickets (keys rotated by rustls), so that a
        // returning client resumes on any worker.
        config.ticketer = rustls::crypto::ring::Ticketer::new().map_err(|e| format!("TLS: {e}"))?;
        Ok(Self {
            acceptor: TlsAcceptor::from(Arc::new(config)),
            handshake_timeout: settings.handshake_timeout,
            certificate,
        })
    }

    /// The handshake, within the handshake timeout; `None` (and the
    /// connection closed) when it fails or is too slow.
    pub async fn accept<IO>(&self, io: IO) -> Option<TlsStream<IO>>
    where
        IO: AsyncRead + AsyncWrite + Unpin,
    {
        match tokio::time::timeout(self.handshake_timeout, self.acceptor.accept(io)).await {
            Ok(Ok(stream)) => Some(stream),
            Ok(Err(error)) => {
                tracing::debug!(%error, "client TLS handshake failed");
                None
            }
            Err(_) => {
                tracing::debug!("client TLS handshake timed out");
                None
            }
        }
    }

    /// Reloads the certificate on SIGHUP and, with `watch`, when either
    /// file changes (looked at every second).
    pub fn spawn_reload(&self, watch: bool) -> std::io::Result<()> {
        let mut hangup = signal(SignalKind::hangup())?;
        let certificate = self.certificate.clone();
        tokio::spawn(async move {
            let files = |c: &Certificate| (modified(&c.cert.value), modified(&c.key.value));
            let mut seen = files(&certificate);
            loop {
                tokio::select! {
                    _ = hangup.recv() => certificate.reload("SIGHUP"),
                    () = tokio::time::sleep(Duration::from_secs(1)), if watch => {
                        let now = files(&certificate);
                        if now != seen {
                            seen = now;
                            certificate.reload("file changed");
                        }
                    }
                }
            }
        });
        Ok(())
    }
}

impl Certificate {
    /// Swaps in the pair on disk if it loads and matches; otherwise keeps
    /// serving the one there is.
    fn reload(&self, why: &str) {
        match load_pair(&self.cert, &self.key, &self.provider) {
            Ok(pair) => {
                self.current.store(Arc::new(pair));
                tracing::info!("TLS certificate reloaded ({why})");
            }
            Err(error) => tracing::error!(
                "TLS certificate reload ({why}) rejected, keeping the running certificate: {error}"
            ),
        }
    }
}

fn modified(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

/// Reads a PEM certificate chain and its key, and checks that they belong
/// together.
fn load_pair(
    cert: &Named<PathBuf>,
    key: &Named<PathBuf>,
    provider: &CryptoProvider,
) -> Result<CertifiedKey, String> {
    let chain = read(cert)?;
    let chain = CertificateDer::pem_slice_iter(&chain)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{cert}: not a PEM certificate ({e})"))?;
    if chain.is_empty() {
        return Err(format!("{cert}: no certificate in it (expected PEM)"));
    }
    let key_pem = read(key)?;
    let private = PrivateKeyDer::from_pem_slice(&key_pem)
        .map_err(|e| format!("{key}: no usable private key in it ({e})"))?;
    CertifiedKey::from_der(chain, private, provider).map_err(|e| match e {
        rustls::Error::InconsistentKeys(InconsistentKeys::KeyMismatch) => {
            format!("{key}: does not match the certificate of {cert}")
        }
        other => format!("{key}: {other}"),
    })
}

fn read(file: &Named<PathBuf>) -> Result<Vec<u8>, String> {
    std::fs::read(&file.value).map_err(|e| format!("{file}: cannot read it: {e}"))
}

/// The settings for `https://` backends, if any was given; the error is
/// one line naming the flag (or file key) at fault.
pub fn backend_tls(settings: &BackendTlsSettings) -> Result<Option<BackendTls>, String> {
    let BackendTlsSettings {
        ca,
        name,
        cert,
        key,
    } = settings;
    if ca.is_none() && name.is_none() && cert.is_none() && key.is_none() {
        return Ok(None);
    }
    let mut builder = BackendTls::builder();
    if let Some(ca) = ca {
        builder = builder.ca_pem(read(ca)?);
    }
    if let Some(name) = name {
        builder = builder.server_name(name.value.clone());
    }
    match (cert, key) {
        (Some(cert), Some(key)) => {
            let chain = read(cert)?;
            let private = read(key)?;
            builder = builder.client_cert_pem(chain, private);
        }
        (Some(cert), None) => return Err(format!("{cert} needs a client key too")),
        (None, Some(key)) => return Err(format!("{key} needs a client certificate too")),
        (None, None) => {}
    }
    // The library's messages start with what was wrong; the flag that
    // gave it is put in front.
    builder.build().map(Some).map_err(|e| {
        let text = e.to_string();
        let named = if text.starts_with("CA bundle") {
            ca.as_ref().map(ToString::to_string)
        } else if text.starts_with("TLS server name") {
            name.as_ref().map(ToString::to_string)
        } else if text.starts_with("client key") {
            key.as_ref().map(ToString::to_string)
        } else if text.starts_with("client certificate") {
            cert.as_ref().map(ToString::to_string)
        } else {
            None
        };
        match named {
            Some(named) => format!("{named}: {text}"),
            None => format!("backend TLS: {text}"),
        }
    })
}
