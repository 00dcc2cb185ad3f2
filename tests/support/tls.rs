//! TLS for the tests: a CA and certificates made on the fly (rcgen), a TLS
//! backend on 127.0.0.1 that records its handshakes, a listener that
//! records the first bytes a client sends, and an HTTPS client (tokio-rustls
//! beneath hyper's client connection, HTTP/1.1 or h2).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use rustls::RootCertStore;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::WebPkiClientVerifier;
use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// rustls with ring, as the crate uses it.
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A certificate authority made for one test.
pub struct TestCa {
    issuer: Issuer<'static, KeyPair>,
    pub pem: String,
}

/// A certificate and its key, in PEM.
#[derive(Clone)]
pub struct Leaf {
    pub cert_pem: String,
    pub key_pem: String,
}

impl TestCa {
    pub fn new(name: &str) -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        let key = KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        Self {
            pem: cert.pem(),
            issuer: Issuer::new(params, key),
        }
    }

    /// A certificate for `names` (DNS names, or IP addresses as IP SANs).
    pub fn issue(&self, names: &[&str]) -> Leaf {
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let mut params = CertificateParams::new(names.clone()).unwrap();
        params.distinguished_name.push(
            DnType::CommonName,
            names.first().cloned().unwrap_or_default(),
        );
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        Leaf {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        }
    }

    /// Writes the CA certificate to `dir`; its path.
    pub fn write(&self, dir: &std::path::Path) -> String {
        let path = dir.join("ca.pem");
        std::fs::write(&path, &self.pem).unwrap();
        path.to_str().unwrap().to_owned()
    }

    pub fn roots(&self) -> RootCertStore {
        let mut roots = RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(self.pem.as_bytes()) {
            roots.add(cert.unwrap()).unwrap();
        }
        roots
    }
}

impl Leaf {
    pub fn chain(&self) -> Vec<CertificateDer<'static>> {
        CertificateDer::pem_slice_iter(self.cert_pem.as_bytes())
            .map(Result::unwrap)
            .collect()
    }

    pub fn key(&self) -> PrivateKeyDer<'static> {
        PrivateKeyDer::from_pem_slice(self.key_pem.as_bytes()).unwrap()
    }

    /// Writes the certificate and the key to files in `dir`.
    pub fn write(&self, dir: &std::path::Path, stem: &str) -> (String, String) {
        let cert = dir.join(format!("{stem}.crt"));
        let key = dir.join(format!("{stem}.key"));
        std::fs::write(&cert, &self.cert_pem).unwrap();
        std::fs::write(&key, &self.key_pem).unwrap();
        (
            cert.to_str().unwrap().to_owned(),
            key.to_str().unwrap().to_owned(),
        )
    }
}

/// A server configuration showing `leaf`, asking for a client certificate
/// from `client_ca` when given, offering `alpn`.
pub fn server_config(
    leaf: &Leaf,
    client_ca: Option<&TestCa>,
    alpn: &[&[u8]],
) -> Arc<rustls::ServerConfig> {
    let builder = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap();
    let builder = match client_ca {
        Some(ca) => {
            let verifier =
                WebPkiClientVerifier::builder_with_provider(Arc::new(ca.roots()), provider())
                    .build()
                    .unwrap();
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let mut config = builder.with_single_cert(leaf.chain(), leaf.key()).unwrap();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Arc::new(config)
}

/// What a TLS backend saw of one handshake.
#[derive(Clone, Debug)]
pub struct Handshake {
    pub resumed: bool,
    pub alpn: Option<String>,
    pub sni: Option<String>,
    pub client_cert: bool,
}

/// An HTTPS backend: answers every request with `<name> <path>
/// proto=<x-forwarded-proto>` over HTTP/1.1 or h2, and records handshakes.
pub struct TlsBackend {
    pub addr: SocketAddr,
    pub handshakes: Arc<Mutex<Vec<Handshake>>>,
    /// Handshakes that failed, with the reason.
    pub failures: Arc<Mutex<Vec<String>>>,
    task: JoinHandle<()>,
}

impl TlsBackend {
    /// Serves with `config`; with `keep_alive` false every response closes
    /// its connection (so each request needs a new one).
    pub async fn start(name: &str, config: Arc<rustls::ServerConfig>, keep_alive: bool) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(config);
        let handshakes = Arc::new(Mutex::new(Vec::new()));
        let failures = Arc::new(Mutex::new(Vec::new()));
        let (seen, failed) = (handshakes.clone(), failures.clone());
        let name = name.to_owned();
        let task = tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    return;
                };
                let (acceptor, seen, failed, name) =
                    (acceptor.clone(), seen.clone(), failed.clone(), name.clone());
                tokio::spawn(async move {
                    let tls = match acceptor.accept(tcp).await {
                        Ok(tls) => tls,
                        Err(error) => {
                            failed.lock().unwrap().push(error.to_string());
                            return;
                        }
                    };
                    let (_, conn) = tls.get_ref();
                    seen.lock().unwrap().push(Handshake {
                        resumed: conn.handshake_kind() == Some(rustls::HandshakeKind::Resumed),
                        alpn: conn
                            .alpn_protocol()
                            .map(|p| String::from_utf8_lossy(p).into_owned()),
                        sni: conn.server_name().map(str::to_owned),
                        client_cert: conn.peer_certificates().is_some_and(|c| !c.is_empty()),
                    });
                    let service = service_fn(move |request: http::Request<Incoming>| {
                        let proto = request
                            .headers()
                            .get("x-forwarded-proto")
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or("-")
                            .to_owned();
                        let text = format!(
                            "{name} {} proto={proto} version={:?}",
                            request.uri().path(),
                            request.version()
                        );
                        async move {
                            Ok::<_, Infallible>(http::Response::new(Full::new(Bytes::from(text))))
                        }
                    });
                    let mut builder = auto::Builder::new(TokioExecutor::new());
                    builder.http1().keep_alive(keep_alive);
                    let _ = builder.serve_connection(TokioIo::new(tls), service).await;
                });
            }
        });
        Self {
            addr,
            handshakes,
            failures,
            task,
        }
    }

    /// A backend showing a certificate for `names` issued by `ca`, over
    /// HTTP/1.1.
    pub async fn signed_by(name: &str, ca: &TestCa, names: &[&str], keep_alive: bool) -> Self {
        let config = server_config(&ca.issue(names), None, &[b"http/1.1"]);
        Self::start(name, config, keep_alive).await
    }

    pub fn url(&self) -> String {
        format!("https://{}", self.addr)
    }

    /// A set of this one backend.
    pub fn set(&self) -> tower_lb::BackendSet {
        tower_lb::BackendSet::new([self.url().parse::<tower_lb::Backend>().unwrap()])
    }

    pub fn handshakes(&self) -> Vec<Handshake> {
        self.handshakes.lock().unwrap().clone()
    }
}

impl Drop for TlsBackend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A listener that records the first bytes of every connection (up to 64,
/// or what arrives within 2 s) and then closes it: it stands where a TLS
/// backend should be, to show what a client sends there.
pub struct FirstBytes {
    pub addr: SocketAddr,
    seen: Arc<Mutex<Vec<Vec<u8>>>>,
    task: JoinHandle<()>,
}

impl FirstBytes {
    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let record = seen.clone();
        let task = tokio::spawn(async move {
            while let Ok((mut tcp, _)) = listener.accept().await {
                let record = record.clone();
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 64];
                    let mut got = 0;
                    let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
                    while got < buf.len() {
                        match tokio::time::timeout_at(deadline, tcp.read(&mut buf[got..])).await {
                            Ok(Ok(n)) if n > 0 => got += n,
                            _ => break,
                        }
                    }
                    buf.truncate(got);
                    record.lock().unwrap().push(buf);
                });
            }
        });
        Self { addr, seen, task }
    }

    pub fn seen(&self) -> Vec<Vec<u8>> {
        self.seen.lock().unwrap().clone()
    }
}

impl Drop for FirstBytes {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Whether `bytes` open a TLS ClientHello: a handshake record (22), TLS
/// major version 3, then a ClientHello message (1).
pub fn is_client_hello(bytes: &[u8]) -> bool {
    bytes.len() >= 6 && bytes[0] == 0x16 && bytes[1] == 0x03 && bytes[5] == 0x01
}

/// What an HTTPS request through a real TLS client got.
#[derive(Debug)]
pub struct HttpsAnswer {
    pub status: u16,
    pub body: String,
    pub alpn: Option<String>,
    /// The leaf certificate the server showed.
    pub server_cert: Vec<u8>,
}

/// A TLS client trusting `roots`, offering `alpn`.
pub fn client_config(roots: RootCertStore, alpn: &[&[u8]]) -> Arc<rustls::ClientConfig> {
    let mut config = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Arc::new(config)
}

/// An open HTTPS connection (HTTP/1.1 or h2, as ALPN chose).
pub enum HttpsConn {
    H1(hyper::client::conn::http1::SendRequest<Empty<Bytes>>),
    H2(hyper::client::conn::http2::SendRequest<Empty<Bytes>>),
}

/// Connects to `addr` over TLS with `config`, verifying `name`, and
/// speaks what ALPN chose (h2, or HTTP/1.1).
pub async fn https_connect(
    addr: SocketAddr,
    config: Arc<rustls::ClientConfig>,
    name: &str,
) -> Result<(HttpsConn, Option<String>, Vec<u8>), String> {
    let tcp = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    let name = ServerName::try_from(name.to_owned()).unwrap();
    let tls = tokio_rustls::TlsConnector::from(config)
        .connect(name, tcp)
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    let (_, conn) = tls.get_ref();
    let alpn = conn
        .alpn_protocol()
        .map(|p| String::from_utf8_lossy(p).into_owned());
    let server_cert = conn
        .peer_certificates()
        .and_then(|c| c.first())
        .map(|c| c.to_vec())
        .unwrap_or_default();
    let io = TokioIo::new(tls);
    let conn = if alpn.as_deref() == Some("h2") {
        let (send, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
            .await
            .map_err(|e| e.to_string())?;
        tokio::spawn(conn);
        HttpsConn::H2(send)
    } else {
        let (send, conn) = hyper::client::conn::http1::handshake(io)
            .await
            .map_err(|e| e.to_string())?;
        tokio::spawn(conn);
        HttpsConn::H1(send)
    };
    Ok((conn, alpn, server_cert))
}

impl HttpsConn {
    /// `GET path` with `Host: host` on this connection.
    pub async fn get(&mut self, host: &str, path: &str) -> Result<(u16, String), String> {
        let request = |version| {
            http::Request::builder()
                .uri(if version == http::Version::HTTP_2 {
                    format!("https://{host}{path}")
                } else {
                    path.to_owned()
                })
                .version(version)
                .header("host", host)
                .body(Empty::<Bytes>::new())
                .unwrap()
        };
        let response = match self {
            HttpsConn::H1(send) => {
                send.ready().await.map_err(|e| e.to_string())?;
                send.send_request(request(http::Version::HTTP_11)).await
            }
            HttpsConn::H2(send) => {
                send.ready().await.map_err(|e| e.to_string())?;
                send.send_request(request(http::Version::HTTP_2)).await
            }
        }
        .map_err(|e| e.to_string())?;
        let status = response.status().as_u16();
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|e| e.to_string())?
            .to_bytes();
        Ok((status, String::from_utf8_lossy(&body).into_owned()))
    }
}

/// One request on a new HTTPS connection.
pub async fn https_get(
    addr: SocketAddr,
    config: Arc<rustls::ClientConfig>,
    name: &str,
    path: &str,
) -> Result<HttpsAnswer, String> {
    let (mut conn, alpn, server_cert) = https_connect(addr, config, name).await?;
    let (status, body) = conn.get(name, path).await?;
    Ok(HttpsAnswer {
        status,
        body,
        alpn,
        server_cert,
    })
}
