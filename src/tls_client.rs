//! TLS for the connections screenpop makes (HTTP data sources, Asterisk AMI): rustls with ring,
//! the WebPKI roots, plus a PEM file of extra roots (a company CA, a PBX's self-signed
//! certificate). The server side (HTTPS/WSS) is in `web::tls`.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;

/// Why a client configuration could not be built.
#[derive(Debug, thiserror::Error)]
pub enum ClientTlsError {
    /// The CA file is unreadable or not PEM certificates.
    #[error("{}: {source}", path.display())]
    CaFile {
        /// The file.
        path: PathBuf,
        /// Why.
        source: rustls_pki_types::pem::Error,
    },
    /// A certificate in the CA file is not a usable root.
    #[error("{}: {source}", path.display())]
    Root {
        /// The file.
        path: PathBuf,
        /// Why.
        source: rustls::Error,
    },
    /// rustls refused the protocol versions.
    #[error("tls: {0}")]
    Protocol(rustls::Error),
}

/// A client configuration trusting the WebPKI roots and the certificates in `ca_file`.
pub fn client_config(ca_file: Option<&Path>) -> Result<rustls::ClientConfig, ClientTlsError> {
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    if let Some(file) = ca_file {
        let pem = |source| ClientTlsError::CaFile {
            path: file.to_owned(),
            source,
        };
        for cert in CertificateDer::pem_file_iter(file).map_err(pem)? {
            roots
                .add(cert.map_err(pem)?)
                .map_err(|source| ClientTlsError::Root {
                    path: file.to_owned(),
                    source,
                })?;
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(ClientTlsError::Protocol)?
        .with_root_certificates(roots)
        .with_no_client_auth())
}
