//! The settings of a [`BackendTls`]: the roots, the name, the client
//! certificate, read and checked once, when built.

use std::path::Path;
use std::sync::Arc;

use rustls::client::{ClientSessionMemoryCache, Resumption};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, RootCertStore};

use super::BackendTls;
use crate::ConfigError;

/// Sessions kept for resumption: rustls' own default size, shared by all
/// the connections of one [`BackendTls`] (one entry per backend name is
/// what resumption needs; a few tickets each).
const SESSION_CACHE: usize = 256;

/// Settings of a [`BackendTls`]; errors (an unreadable file, a bad PEM, a
/// key that does not match its certificate) are reported by
/// [`build`](Self::build), naming what was wrong.
#[derive(Debug, Default)]
#[must_use]
pub struct BackendTlsBuilder {
    roots: Option<Vec<CertificateDer<'static>>>,
    server_name: Option<String>,
    client_auth: Option<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)>,
    error: Option<ConfigError>,
}

impl BackendTlsBuilder {
    /// Trusts the certificates of this PEM bundle instead of the system's
    /// roots (a private CA). Call again to add more bundles.
    pub fn ca_pem(mut self, pem: impl AsRef<[u8]>) -> Self {
        match certificates(pem.as_ref(), "CA bundle") {
            Ok(certs) => self.roots.get_or_insert_with(Vec::new).extend(certs),
            Err(error) => self.fail(error),
        }
        self
    }

    /// [`ca_pem`](Self::ca_pem), read from a file.
    pub fn ca_file(self, path: impl AsRef<Path>) -> Self {
        match read(path.as_ref(), "CA bundle") {
            Ok(pem) => self.ca_pem(pem),
            Err(error) => self.failed(error),
        }
    }

    /// The name to verify in every backend's certificate and to send as
    /// SNI, instead of the backend's own host: for backends addressed by IP
    /// whose certificates name a service (`api.internal`).
    pub fn server_name(mut self, name: impl Into<String>) -> Self {
        self.server_name = Some(name.into());
        self
    }

    /// Shows this client certificate (a PEM chain, leaf first) with its
    /// PEM private key (PKCS#8, PKCS#1 or SEC1) to backends that ask for
    /// one: mutual TLS.
    pub fn client_cert_pem(mut self, chain: impl AsRef<[u8]>, key: impl AsRef<[u8]>) -> Self {
        let chain = certificates(chain.as_ref(), "client certificate");
        let key = PrivateKeyDer::from_pem_slice(key.as_ref())
            .map_err(|e| ConfigError::new(format!("client key: no usable private key ({e})")));
        match (chain, key) {
            (Ok(chain), Ok(key)) => self.client_auth = Some((chain, key)),
            (Err(error), _) | (_, Err(error)) => self.fail(error),
        }
        self
    }

    /// [`client_cert_pem`](Self::client_cert_pem), read from files.
    pub fn client_cert_files(self, chain: impl AsRef<Path>, key: impl AsRef<Path>) -> Self {
        let chain = read(chain.as_ref(), "client certificate");
        let key = read(key.as_ref(), "client key");
        match (chain, key) {
            (Ok(chain), Ok(key)) => self.client_cert_pem(chain, key),
            (Err(error), _) | (_, Err(error)) => self.failed(error),
        }
    }

    fn fail(&mut self, error: ConfigError) {
        self.error.get_or_insert(error);
    }

    fn failed(mut self, error: ConfigError) -> Self {
        self.fail(error);
        self
    }

    /// Checks everything and builds the rustls configuration.
    ///
    /// # Errors
    ///
    /// A configuration error naming the first thing that was wrong: a file
    /// that cannot be read, a PEM with no certificate or key, a client key
    /// that does not match its certificate, a server name that is not a
    /// DNS name or an IP address, or (with no CA bundle) a system with no
    /// root certificate.
    pub fn build(self) -> Result<BackendTls, ConfigError> {
        if let Some(error) = self.error {
            return Err(error);
        }
        let (roots, mut summary) = match self.roots {
            Some(certs) => {
                let mut roots = RootCertStore::empty();
                let (added, _) = roots.add_parsable_certificates(certs);
                if added == 0 {
                    return Err(ConfigError::new("CA bundle: no usable CA certificate"));
                }
                (roots, format!("CA bundle ({added} certificates)"))
            }
            None => {
                let roots = system_roots()?;
                let summary = format!("system roots ({})", roots.len());
                (roots, summary)
            }
        };
        let server_name = match self.server_name {
            Some(name) => Some(ServerName::try_from(name.clone()).map_err(|_| {
                ConfigError::new(format!(
                    "TLS server name `{name}`: not a DNS name or an IP address"
                ))
            })?),
            None => None,
        };
        let builder = ClientConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .map_err(|e| ConfigError::new(format!("TLS: {e}")))?
            .with_root_certificates(roots);
        let config = match self.client_auth {
            Some((chain, key)) => {
                summary.push_str(", client certificate");
                builder
                    .with_client_auth_cert(chain, key)
                    .map_err(|e| ConfigError::new(format!("client certificate and key: {e}")))?
            }
            None => builder.with_no_client_auth(),
        };
        let mut config = config;
        config.resumption =
            Resumption::store(Arc::new(ClientSessionMemoryCache::new(SESSION_CACHE)));
        if let Some(name) = &server_name {
            summary.push_str(&format!(", name {}", name.to_str()));
        }
        Ok(BackendTls::from_parts(config, server_name, summary))
    }
}

/// The crypto provider the process installed, or ring's.
fn provider() -> Arc<CryptoProvider> {
    CryptoProvider::get_default()
        .cloned()
        .unwrap_or_else(|| Arc::new(rustls::crypto::ring::default_provider()))
}

fn system_roots() -> Result<RootCertStore, ConfigError> {
    let found = rustls_native_certs::load_native_certs();
    let mut roots = RootCertStore::empty();
    roots.add_parsable_certificates(found.certs);
    if roots.is_empty() {
        let why = found
            .errors
            .first()
            .map_or_else(|| "none found".to_owned(), ToString::to_string);
        return Err(ConfigError::new(format!(
            "TLS to backends: no system root certificate ({why}); install the system's CA \
             certificates or give a CA bundle"
        )));
    }
    Ok(roots)
}

fn read(path: &Path, what: &str) -> Result<Vec<u8>, ConfigError> {
    std::fs::read(path)
        .map_err(|e| ConfigError::new(format!("{what} {}: cannot read it: {e}", path.display())))
}

fn certificates(pem: &[u8], what: &str) -> Result<Vec<CertificateDer<'static>>, ConfigError> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| ConfigError::new(format!("{what}: bad PEM ({e})")))?;
    if certs.is_empty() {
        return Err(ConfigError::new(format!(
            "{what}: no certificate in the PEM"
        )));
    }
    Ok(certs)
}
