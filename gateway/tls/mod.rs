//! TLS configuration: the server side (clients to the gateway), certificate loading
//! and checks, the quickstart's self-signed certificate, and the upstream client side.
//!
//! Server profile: TLS 1.2 and 1.3 only (1.3 only if asked), forward-secret AEAD suites
//! only (ECDHE with AES-GCM or ChaCha20-Poly1305; rustls has no CBC, no RSA key exchange,
//! no compression, no renegotiation), ALPN `h2` and `http/1.1`, stateless session tickets.

use arc_swap::ArcSwap;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert, ServerSessionMemoryCache};
use rustls::sign::CertifiedKey;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use std::path::Path;
use std::sync::Arc;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MinVersion {
    Tls12,
    Tls13,
}

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("{path}: {what}")]
    Pem { path: String, what: String },
    #[error("{0}")]
    Invalid(String),
}

/// What `menshen check` reports about the gateway's certificate.
#[derive(Debug, Clone)]
pub struct CertInfo {
    pub subject: String,
    pub not_after: String,
    pub self_signed: bool,
}

/// The crypto provider with the suites this gateway allows.
pub fn provider() -> Arc<CryptoProvider> {
    let mut p = rustls::crypto::aws_lc_rs::default_provider();
    // DEFAULT_CIPHER_SUITES is exactly the ECDHE + AEAD set; keep it explicit here.
    p.cipher_suites = rustls::crypto::aws_lc_rs::DEFAULT_CIPHER_SUITES.to_vec();
    Arc::new(p)
}

/// Load a PEM chain and key, check they belong together and the leaf is valid now.
pub fn load_certified_key(cert: &Path, key: &Path) -> Result<(CertifiedKey, CertInfo), TlsError> {
    let chain = read_chain(cert)?;
    let key_der = PrivateKeyDer::from_pem_file(key).map_err(|e| pem_error(key, e))?;
    let ck = CertifiedKey::from_der(chain, key_der, &provider()).map_err(|e| {
        TlsError::Invalid(format!("{} and {} do not belong together: {e}", cert.display(), key.display()))
    })?;
    let info = inspect_leaf(cert, &ck.cert[0])?;
    Ok((ck, info))
}

/// Read every certificate of a PEM file; at least one.
pub fn read_chain(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let chain = CertificateDer::pem_file_iter(path)
        .map_err(|e| pem_error(path, e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem_error(path, e))?;
    if chain.is_empty() {
        return Err(TlsError::Pem { path: path.display().to_string(), what: "no certificate in it".into() });
    }
    Ok(chain)
}

fn pem_error(path: &Path, e: rustls::pki_types::pem::Error) -> TlsError {
    match e {
        rustls::pki_types::pem::Error::Io(source) => TlsError::Read { path: path.display().to_string(), source },
        rustls::pki_types::pem::Error::NoItemsFound => {
            TlsError::Pem { path: path.display().to_string(), what: "no PEM item of the expected kind".into() }
        }
        other => TlsError::Pem { path: path.display().to_string(), what: other.to_string() },
    }
}

fn inspect_leaf(path: &Path, der: &CertificateDer<'_>) -> Result<CertInfo, TlsError> {
    let (_, x) = x509_parser::parse_x509_certificate(der.as_ref()).map_err(|e| TlsError::Pem {
        path: path.display().to_string(),
        what: format!("unparsable certificate: {e}"),
    })?;
    let validity = x.validity();
    let now = x509_parser::time::ASN1Time::now();
    if validity.not_after < now {
        return Err(TlsError::Invalid(format!("{}: certificate expired on {}", path.display(), validity.not_after)));
    }
    if validity.not_before > now {
        return Err(TlsError::Invalid(format!(
            "{}: certificate not valid before {}",
            path.display(),
            validity.not_before
        )));
    }
    Ok(CertInfo {
        subject: x.subject().to_string(),
        not_after: validity.not_after.to_string(),
        self_signed: x.subject() == x.issuer(),
    })
}

/// Write a fresh self-signed certificate and key (key file mode 0600).
pub fn generate_self_signed(cert: &Path, key: &Path, names: Vec<String>) -> Result<(), TlsError> {
    let gen = rcgen::generate_simple_self_signed(names)
        .map_err(|e| TlsError::Invalid(format!("cannot generate a certificate: {e}")))?;
    let write = |path: &Path, data: String, private: bool| -> Result<(), TlsError> {
        let err = |source| TlsError::Read { path: path.display().to_string(), source };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(err)?;
        }
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true).create_new(true);
        #[cfg(unix)]
        if private {
            use std::os::unix::fs::OpenOptionsExt;
            opts.mode(0o600);
        }
        #[cfg(not(unix))]
        let _ = private;
        use std::io::Write;
        opts.open(path).and_then(|mut f| f.write_all(data.as_bytes())).map_err(err)
    };
    write(key, gen.key_pair.serialize_pem(), true)?;
    write(cert, gen.cert.pem(), false)
}

/// Serves the current certificate; a reload swaps it without rebuilding listeners.
#[derive(Debug)]
pub struct CertStore {
    current: ArcSwap<CertifiedKey>,
}

impl CertStore {
    pub fn new(key: CertifiedKey) -> Arc<Self> {
        Arc::new(CertStore { current: ArcSwap::from_pointee(key) })
    }

    pub fn replace(&self, key: CertifiedKey) {
        self.current.store(Arc::new(key));
    }
}

impl ResolvesServerCert for CertStore {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load_full())
    }
}

/// The server-side config for client connections.
pub fn server_config(certs: Arc<CertStore>, min: MinVersion) -> Result<Arc<ServerConfig>, TlsError> {
    let versions: &[&rustls::SupportedProtocolVersion] = match min {
        MinVersion::Tls12 => &[&rustls::version::TLS13, &rustls::version::TLS12],
        MinVersion::Tls13 => &[&rustls::version::TLS13],
    };
    let mut cfg = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(versions)
        .map_err(|e| TlsError::Invalid(format!("TLS setup: {e}")))?
        .with_no_client_auth()
        .with_cert_resolver(certs);
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    cfg.session_storage = ServerSessionMemoryCache::new(16 * 1024);
    cfg.ticketer =
        rustls::crypto::aws_lc_rs::Ticketer::new().map_err(|e| TlsError::Invalid(format!("session tickets: {e}")))?;
    Ok(Arc::new(cfg))
}

/// Trust anchors for verifying upstreams: a CA file, or the system's roots.
pub fn upstream_roots(ca: Option<&Path>) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    match ca {
        Some(path) => {
            for cert in read_chain(path)? {
                roots.add(cert).map_err(|e| TlsError::Pem {
                    path: path.display().to_string(),
                    what: format!("not a usable CA certificate: {e}"),
                })?;
            }
        }
        None => {
            // Unreadable individual system certs are skipped, as every TLS client does.
            let found = rustls_native_certs::load_native_certs();
            let _ = roots.add_parsable_certificates(found.certs);
        }
    }
    Ok(roots)
}

/// The client config for `https://` upstreams (TLS 1.2+, verified; the connector sets ALPN).
pub fn upstream_client_config(roots: RootCertStore) -> Result<Arc<ClientConfig>, TlsError> {
    let cfg = ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| TlsError::Invalid(format!("TLS setup: {e}")))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(cfg))
}
