//! The server side of TLS for submission listeners: a certificate and key
//! from PEM files, re-read when either file changes (certbot renews them in
//! place through a deploy hook) and on reload, without dropping the
//! connections in progress.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tokio_rustls::TlsAcceptor;

/// How often a handshake may look at the files' metadata.
const CHECK_EVERY: Duration = Duration::from_secs(1);

#[derive(Debug, thiserror::Error)]
pub enum CertError {
    #[error("{path}: {reason}")]
    Unusable { path: String, reason: String },
}

/// What identifies a file's version: a renewal writes a new file.
type Stamp = Option<(u64, i64, i64, u64)>;

fn stamp(path: &Path) -> Stamp {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(path).ok()?;
    Some((m.ino(), m.mtime(), m.mtime_nsec(), m.len()))
}

struct Current {
    key: Arc<CertifiedKey>,
    stamps: (Stamp, Stamp),
    checked: Instant,
}

/// The listener's certificate, kept current.
pub struct CertStore {
    cert: PathBuf,
    key: PathBuf,
    current: Mutex<Current>,
}

impl std::fmt::Debug for CertStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertStore")
            .field("cert", &self.cert)
            .finish()
    }
}

impl CertStore {
    /// Loads the pair now: a listener never starts without a usable one.
    pub fn load(cert: &Path, key: &Path) -> Result<Arc<CertStore>, CertError> {
        let stamps = (stamp(cert), stamp(key));
        let loaded = load_pair(cert, key)?;
        Ok(Arc::new(CertStore {
            cert: cert.to_path_buf(),
            key: key.to_path_buf(),
            current: Mutex::new(Current {
                key: loaded,
                stamps,
                checked: Instant::now(),
            }),
        }))
    }

    /// A TLS 1.2+ acceptor that asks this store for the certificate at
    /// every handshake.
    pub fn acceptor(self: &Arc<Self>) -> TlsAcceptor {
        let config = rustls::ServerConfig::builder()
            .with_no_client_auth()
            .with_cert_resolver(self.clone());
        TlsAcceptor::from(Arc::new(config))
    }

    /// Re-reads the pair if either file changed since the last look (at most
    /// once a second); a pair that does not load keeps the old one in use,
    /// said in the log.
    pub fn refresh(&self) {
        let Ok(mut current) = self.current.lock() else {
            return;
        };
        if current.checked.elapsed() < CHECK_EVERY {
            return;
        }
        current.checked = Instant::now();
        let stamps = (stamp(&self.cert), stamp(&self.key));
        if stamps == current.stamps {
            return;
        }
        match load_pair(&self.cert, &self.key) {
            Ok(key) => {
                current.key = key;
                current.stamps = stamps;
                tracing::info!(
                    "submission certificate reloaded from {}",
                    self.cert.display()
                );
            }
            Err(e) => {
                tracing::error!(
                    "submission certificate not reloaded, the old one stays in use: {e}"
                )
            }
        }
    }

    fn get(&self) -> Option<Arc<CertifiedKey>> {
        self.refresh();
        self.current.lock().ok().map(|c| c.key.clone())
    }
}

impl ResolvesServerCert for CertStore {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.get()
    }
}

fn unusable(path: &Path, reason: impl std::fmt::Display) -> CertError {
    CertError::Unusable {
        path: path.display().to_string(),
        reason: reason.to_string(),
    }
}

/// The chain (leaf first) and its key; the key must match the leaf.
fn load_pair(cert: &Path, key: &Path) -> Result<Arc<CertifiedKey>, CertError> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(|e| unusable(cert, e))?
        .collect::<Result<_, _>>()
        .map_err(|e| unusable(cert, e))?;
    if chain.is_empty() {
        return Err(unusable(cert, "no certificate in the file"));
    }
    // The key's own parse error may quote nothing but its position.
    let der = PrivateKeyDer::from_pem_file(key).map_err(|e| unusable(key, e))?;
    let signing =
        rustls::crypto::ring::sign::any_supported_type(&der).map_err(|e| unusable(key, e))?;
    let certified = CertifiedKey::new(chain, signing);
    certified
        .keys_match()
        .map_err(|e| unusable(key, format!("does not match the certificate: {e}")))?;
    Ok(Arc::new(certified))
}
