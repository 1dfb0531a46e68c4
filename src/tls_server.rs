//! TLS for the listeners screenpop runs (HTTPS/WSS, SIP over TLS), with rustls (no OpenSSL).
//! Owns reading the certificate chain, the key and the optional client-CA bundle, and swapping
//! them on reload; does not own any handshake (each listener runs its own, under its own
//! deadline, in the connection's task). The client side is in `tls_client`.
//!
//! The PEM files come from the config. [`ServerTls::reload`] re-reads them (the daemon calls it
//! on SIGHUP): new connections get the new certificate, open ones keep theirs, nothing is
//! dropped; a reload that fails keeps the old certificate and says why.
//!
//! With a client-CA bundle every client must present a certificate chaining to one of its
//! certificates (mutual TLS, rustls's `WebPkiClientVerifier`): carriers and hosted trunks
//! authenticate their SIP peers this way.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use rustls::ServerConfig;
use rustls::server::WebPkiClientVerifier;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::TlsAcceptor;

/// Why the certificate, key or client-CA bundle cannot be used; the operator is at fault.
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
    /// The client-CA bundle holds no usable trust anchor.
    #[error("client CA {file}: {reason}")]
    ClientCa {
        /// The bundle.
        file: PathBuf,
        /// What is wrong.
        reason: String,
    },
}

/// Where a listener's certificate comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Identity {
    /// PEM files, re-read on reload.
    Files {
        /// The certificate chain, leaf first.
        cert: PathBuf,
        /// The private key.
        key: PathBuf,
        /// Client certificates must chain to one of these (mutual TLS); none: no client
        /// certificate is asked for.
        client_ca: Option<PathBuf>,
    },
    /// PEM text made at start-up (the demo's self-signed certificate); a reload keeps it.
    Generated {
        /// The certificate chain, leaf first.
        cert_pem: String,
        /// The private key.
        key_pem: String,
    },
}

/// A listener's certificate, and the rustls server config built from it.
#[derive(Debug)]
pub struct ServerTls {
    identity: Identity,
    alpn: Vec<Vec<u8>>,
    current: RwLock<Arc<ServerConfig>>,
}

impl ServerTls {
    /// Loads PEM files without client authentication, offering `alpn` protocols.
    pub fn load(cert: PathBuf, key: PathBuf, alpn: &[&[u8]]) -> Result<Arc<ServerTls>, TlsError> {
        ServerTls::new(
            Identity::Files {
                cert,
                key,
                client_ca: None,
            },
            alpn,
        )
    }

    /// Loads `identity`, offering `alpn` protocols (none for SIP).
    pub fn new(identity: Identity, alpn: &[&[u8]]) -> Result<Arc<ServerTls>, TlsError> {
        let alpn: Vec<Vec<u8>> = alpn.iter().map(|p| p.to_vec()).collect();
        let config = build(&identity, &alpn)?;
        Ok(Arc::new(ServerTls {
            identity,
            alpn,
            current: RwLock::new(config),
        }))
    }

    /// Re-reads the files; on error the current certificate stays. A generated certificate
    /// is kept as it is.
    pub fn reload(&self) -> Result<(), TlsError> {
        if matches!(self.identity, Identity::Generated { .. }) {
            return Ok(());
        }
        let config = build(&self.identity, &self.alpn)?;
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = config;
        Ok(())
    }

    /// An acceptor with the current certificate.
    pub fn acceptor(&self) -> TlsAcceptor {
        TlsAcceptor::from(
            self.current
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .clone(),
        )
    }

    /// Whether clients must present a certificate.
    pub fn mutual(&self) -> bool {
        matches!(
            self.identity,
            Identity::Files {
                client_ca: Some(_),
                ..
            }
        )
    }
}

fn file_error(file: &Path, reason: impl ToString) -> TlsError {
    TlsError::File {
        file: file.to_owned(),
        reason: reason.to_string(),
    }
}

fn read(file: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(file).map_err(|e| file_error(file, e))
}

fn build(identity: &Identity, alpn: &[Vec<u8>]) -> Result<Arc<ServerConfig>, TlsError> {
    let (cert_pem, key_pem, cert_file, key_file, client_ca) = match identity {
        Identity::Files {
            cert,
            key,
            client_ca,
        } => (
            read(cert)?,
            read(key)?,
            cert.clone(),
            key.clone(),
            client_ca.as_deref(),
        ),
        Identity::Generated { cert_pem, key_pem } => (
            cert_pem.clone().into_bytes(),
            key_pem.clone().into_bytes(),
            PathBuf::from("<generated certificate>"),
            PathBuf::from("<generated key>"),
            None,
        ),
    };
    let chain = certificates(&cert_pem).map_err(|reason| file_error(&cert_file, reason))?;
    if chain.is_empty() {
        return Err(file_error(&cert_file, "no certificate in the file"));
    }
    let private = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| file_error(&key_file, e))?;
    let pair = |e: &dyn ToString| TlsError::Pair {
        cert: cert_file.clone(),
        key: key_file.clone(),
        reason: e.to_string(),
    };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| pair(&e))?;
    let builder = match client_ca {
        None => builder.with_no_client_auth(),
        Some(file) => {
            let ca_error = |reason: String| TlsError::ClientCa {
                file: file.to_owned(),
                reason,
            };
            let mut roots = rustls::RootCertStore::empty();
            for cert in certificates(&read(file)?).map_err(ca_error)? {
                roots.add(cert).map_err(|e| ca_error(e.to_string()))?;
            }
            if roots.is_empty() {
                return Err(ca_error("no certificate in the file".into()));
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|e| ca_error(e.to_string()))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder
        .with_single_cert(chain, private)
        .map_err(|e| pair(&e))?;
    config.alpn_protocols = alpn.to_vec();
    Ok(Arc::new(config))
}

fn certificates(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, String> {
    CertificateDer::pem_slice_iter(pem)
        .collect::<Result<_, _>>()
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair() -> (String, String) {
        let c = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).expect("rcgen");
        (c.cert.pem(), c.signing_key.serialize_pem())
    }

    #[test]
    fn a_failed_reload_keeps_the_certificate_and_names_the_file() {
        let dir = std::env::temp_dir().join(format!(
            "screenpop-tls-server-{}-{:08x}",
            std::process::id(),
            rand::random::<u32>()
        ));
        std::fs::create_dir_all(&dir).expect("dir");
        let (cert, key) = pair();
        std::fs::write(dir.join("c.pem"), cert).expect("cert");
        std::fs::write(dir.join("k.pem"), key).expect("key");
        let tls = ServerTls::load(dir.join("c.pem"), dir.join("k.pem"), &[]).expect("loads");
        let before = Arc::as_ptr(&tls.current.read().expect("lock").clone());
        std::fs::write(dir.join("c.pem"), "not a certificate").expect("cert");
        let error = tls.reload().expect_err("refused").to_string();
        assert!(error.contains("c.pem"), "{error}");
        let after = Arc::as_ptr(&tls.current.read().expect("lock").clone());
        assert_eq!(before, after, "the old certificate stays");
        // A key from another pair: refused as a pair.
        let (cert, _) = pair();
        std::fs::write(dir.join("c.pem"), cert).expect("cert");
        let error = tls.reload().expect_err("mismatch").to_string();
        assert!(error.contains("usable pair"), "{error}");
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn a_client_ca_without_certificates_is_refused() {
        let dir = std::env::temp_dir().join(format!(
            "screenpop-tls-ca-{}-{:08x}",
            std::process::id(),
            rand::random::<u32>()
        ));
        std::fs::create_dir_all(&dir).expect("dir");
        let (cert, key) = pair();
        std::fs::write(dir.join("c.pem"), &cert).expect("cert");
        std::fs::write(dir.join("k.pem"), key).expect("key");
        std::fs::write(dir.join("ca.pem"), "").expect("ca");
        let identity = |ca: &str| Identity::Files {
            cert: dir.join("c.pem"),
            key: dir.join("k.pem"),
            client_ca: Some(dir.join(ca)),
        };
        let error = ServerTls::new(identity("ca.pem"), &[])
            .expect_err("empty bundle")
            .to_string();
        assert!(
            error.contains("client CA") && error.contains("ca.pem"),
            "{error}"
        );
        std::fs::write(dir.join("ca.pem"), &cert).expect("ca");
        let tls = ServerTls::new(identity("ca.pem"), &[]).expect("a bundle of one");
        assert!(tls.mutual());
        let _ = std::fs::remove_dir_all(dir);
    }
}
