//! TLS client settings for upstream connections: rustls with the `ring` provider
//! (lighter to build than aws-lc-rs, and the only provider in the tree), server
//! certificates verified against the system roots or a route's own CA file.

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use rustls::{ClientConfig, RootCertStore};
use tokio_rustls::TlsConnector;

#[derive(Debug, thiserror::Error)]
pub enum TlsSetupError {
    #[error("CA file {path}: {reason}")]
    CaFile { path: String, reason: String },
    #[error("no trusted root certificates found on this system")]
    NoRoots,
    #[error("TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
}

/// Builds the connector for a route. With a CA file, only that file is trusted:
/// an operator who names a private CA means "this relay, signed by this CA".
pub fn connector(ca_file: Option<&Path>) -> Result<TlsConnector, TlsSetupError> {
    Ok(TlsConnector::from(Arc::new(client_config(ca_file)?)))
}

/// The rustls settings behind [`connector`]; also used for HTTPS to token
/// endpoints, so one set of roots and one provider serve both.
pub fn client_config(ca_file: Option<&Path>) -> Result<ClientConfig, TlsSetupError> {
    let mut roots = RootCertStore::empty();
    match ca_file {
        Some(path) => {
            let certs = CertificateDer::pem_file_iter(path)
                .map_err(|e| TlsSetupError::CaFile {
                    path: path.display().to_string(),
                    reason: e.to_string(),
                })?
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| TlsSetupError::CaFile {
                    path: path.display().to_string(),
                    reason: e.to_string(),
                })?;
            let (added, _) = roots.add_parsable_certificates(certs);
            if added == 0 {
                return Err(TlsSetupError::CaFile {
                    path: path.display().to_string(),
                    reason: "no usable certificate in the file".into(),
                });
            }
        }
        None => {
            let native = rustls_native_certs::load_native_certs();
            roots.add_parsable_certificates(native.certs);
            if roots.is_empty() {
                // A minimal container without ca-certificates still gets the
                // Mozilla roots rather than no TLS at all.
                roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
            }
            if roots.is_empty() {
                return Err(TlsSetupError::NoRoots);
            }
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn system_roots_load() {
        assert!(connector(None).is_ok());
    }

    #[test]
    fn bad_ca_file_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("ca.pem");
        std::fs::write(&p, "not a certificate").unwrap();
        assert!(matches!(
            connector(Some(&p)),
            Err(TlsSetupError::CaFile { .. })
        ));
        assert!(connector(Some(&dir.path().join("missing.pem"))).is_err());
    }
}
