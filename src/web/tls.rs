//! HTTPS/WSS for the HTTP listener, with rustls (no OpenSSL).
//!
//! The certificate chain and key are PEM files from the config. `reload` re-reads them (the
//! daemon calls it on SIGHUP): new connections get the new certificate, open ones keep theirs,
//! nothing is dropped; a reload that fails keeps the old certificate and says why.
//!
//! Handshakes run in each connection's own task under a deadline (`web::serve`), so a slow or
//! silent client cannot stall the others; until its first request a connection is among the
//! first evicted when the listener is full.

use std::path::PathBuf;
use std::sync::{Arc, RwLock};

use rustls::ServerConfig;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::TlsAcceptor;

/// Why the certificate or key cannot be used; the operator is at fault.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A PEM file is unreadable or holds nothing usable.
    #[error("{file}: {reason}")]
    File {
        /// The file.
        file: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// rustls refused the pair (e.g. the key does not match the certificate).
    #[error("certificate {cert} and key {key} do not form a usable pair: {reason}")]
    Pair {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
        /// rustls's reason.
        reason: String,
    },
}

/// The certificate and key files, and the server config built from them.
#[derive(Debug)]
pub struct Tls {
    cert: PathBuf,
    key: PathBuf,
    current: RwLock<Arc<ServerConfig>>,
}

impl Tls {
    /// Loads the pair.
    pub fn load(cert: PathBuf, key: PathBuf) -> Result<Arc<Tls>, TlsError> {
        let config = build(&cert, &key)?;
        Ok(Arc::new(Tls {
            cert,
            key,
            current: RwLock::new(config),
        }))
    }

    /// Re-reads the files; on error the current certificate stays.
    pub fn reload(&self) -> Result<(), TlsError> {
        let config = build(&self.cert, &self.key)?;
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = config;
        Ok(())
    }

    /// An acceptor with the current certificate.
    pub(crate) fn acceptor(&self) -> TlsAcceptor {
        TlsAcceptor::from(
            self.current
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .clone(),
        )
    }
}

fn build(cert: &PathBuf, key: &PathBuf) -> Result<Arc<ServerConfig>, TlsError> {
    let file_error = |file: &PathBuf, reason: String| TlsError::File {
        file: file.clone(),
        reason,
    };
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(|e| file_error(cert, e.to_string()))?
        .collect::<Result<_, _>>()
        .map_err(|e| file_error(cert, e.to_string()))?;
    if chain.is_empty() {
        return Err(file_error(cert, "no certificate in the file".into()));
    }
    let private = PrivateKeyDer::from_pem_file(key).map_err(|e| file_error(key, e.to_string()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Pair {
            cert: cert.clone(),
            key: key.clone(),
            reason: e.to_string(),
        })?
        .with_no_client_auth()
        .with_single_cert(chain, private)
        .map_err(|e| TlsError::Pair {
            cert: cert.clone(),
            key: key.clone(),
            reason: e.to_string(),
        })?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}
