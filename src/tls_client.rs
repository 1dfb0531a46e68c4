//! TLS for the connections screenpop makes (HTTP data sources, Asterisk AMI, `screenpop call
//! --tls`): rustls with ring, the WebPKI roots, plus a PEM file of extra roots (a company CA, a
//! PBX's self-signed certificate), and optionally a client certificate (mutual TLS). The server
//! side (HTTPS/WSS, SIP over TLS) is in `tls_server`.

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
    /// The client certificate or its key is unreadable or unusable.
    #[error("client certificate {}: {reason}", path.display())]
    Identity {
        /// The certificate or key file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
}

/// A client configuration trusting the WebPKI roots and the certificates in `ca_file`.
pub fn client_config(ca_file: Option<&Path>) -> Result<rustls::ClientConfig, ClientTlsError> {
    Ok(builder(ca_file)?.with_no_client_auth())
}

/// How a client checks the server's certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verify {
    /// Against the WebPKI roots and the certificates in this PEM file, if any.
    Roots(Option<PathBuf>),
    /// Not at all: any certificate is taken (a demo's self-signed one). The handshake's
    /// signatures are still checked, so the connection is encrypted, but to whoever answers.
    AcceptAnyCertificate,
}

/// A client configuration: the server checked as `verify` says, and `identity` (certificate
/// chain and key PEM files) presented when the server asks for one (mutual TLS).
pub fn client_config_with(
    verify: &Verify,
    identity: Option<(&Path, &Path)>,
) -> Result<rustls::ClientConfig, ClientTlsError> {
    let builder = match verify {
        Verify::Roots(ca_file) => builder(ca_file.as_deref())?,
        Verify::AcceptAnyCertificate => {
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            rustls::ClientConfig::builder_with_provider(provider.clone())
                .with_safe_default_protocol_versions()
                .map_err(ClientTlsError::Protocol)?
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(danger::AcceptAnyCertificate(provider)))
        }
    };
    let Some((cert, key)) = identity else {
        return Ok(builder.with_no_client_auth());
    };
    let bad = |path: &Path, reason: String| ClientTlsError::Identity {
        path: path.to_owned(),
        reason,
    };
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .map_err(|e| bad(cert, e.to_string()))?
        .collect::<Result<_, _>>()
        .map_err(|e| bad(cert, e.to_string()))?;
    if chain.is_empty() {
        return Err(bad(cert, "no certificate in the file".into()));
    }
    let private =
        rustls_pki_types::PrivateKeyDer::from_pem_file(key).map_err(|e| bad(key, e.to_string()))?;
    builder
        .with_client_auth_cert(chain, private)
        .map_err(|e| bad(cert, e.to_string()))
}

type WantsClientCert = rustls::ConfigBuilder<rustls::ClientConfig, rustls::client::WantsClientCert>;

fn builder(ca_file: Option<&Path>) -> Result<WantsClientCert, ClientTlsError> {
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
        .with_root_certificates(roots))
}

/// Verifiers that do not verify: only for what the user asked for by name
/// (`screenpop call --accept-self-signed`).
pub mod danger {
    use std::sync::Arc;

    use rustls::DigitallySignedStruct;
    use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
    use rustls::crypto::CryptoProvider;
    use rustls_pki_types::{CertificateDer, ServerName, UnixTime};

    /// Takes any server certificate, for any name, expired or not. The handshake signatures
    /// are still verified with the certificate's key.
    #[derive(Debug)]
    pub struct AcceptAnyCertificate(pub Arc<CryptoProvider>);

    impl ServerCertVerifier for AcceptAnyCertificate {
        fn verify_server_cert(
            &self,
            _end_entity: &CertificateDer<'_>,
            _intermediates: &[CertificateDer<'_>],
            _server_name: &ServerName<'_>,
            _ocsp_response: &[u8],
            _now: UnixTime,
        ) -> Result<ServerCertVerified, rustls::Error> {
            Ok(ServerCertVerified::assertion())
        }

        fn verify_tls12_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            rustls::crypto::verify_tls12_signature(
                message,
                cert,
                dss,
                &self.0.signature_verification_algorithms,
            )
        }

        fn verify_tls13_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            rustls::crypto::verify_tls13_signature(
                message,
                cert,
                dss,
                &self.0.signature_verification_algorithms,
            )
        }

        fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
            self.0.signature_verification_algorithms.supported_schemes()
        }
    }
}
