//! Certificates for the TLS tests, made with rcgen in a directory of their own: a CA, a server
//! certificate for `localhost`/127.0.0.1 and client certificates signed by the CA, and a
//! rustls client config trusting the CA (optionally presenting a client certificate).

#![allow(dead_code)]

use std::path::PathBuf;
use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

/// A certificate and its key, as PEM files, and the certificate's DER.
#[derive(Debug, Clone)]
pub struct Pair {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub der: Vec<u8>,
}

impl Pair {
    /// SHA-256 of the certificate's DER, hex: what a client sees as its fingerprint.
    pub fn fingerprint(&self) -> String {
        fingerprint(&self.der)
    }
}

/// SHA-256 of a certificate's DER, hex.
pub fn fingerprint(der: &[u8]) -> String {
    use sha2::Digest as _;
    hex::encode(sha2::Sha256::digest(der))
}

/// A test CA and the directory its files live in (removed on drop).
pub struct Pki {
    pub dir: PathBuf,
    /// The CA certificate (PEM file).
    pub ca: PathBuf,
    pub ca_der: Vec<u8>,
    issuer: Issuer<'static, KeyPair>,
}

impl Pki {
    /// A fresh CA named `name`.
    pub fn new(name: &str) -> Pki {
        let dir = std::env::temp_dir().join(format!(
            "screenpop-pki-{name}-{}-{:08x}",
            std::process::id(),
            rand::random::<u32>()
        ));
        std::fs::create_dir_all(&dir).expect("pki dir");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, format!("screenpop test CA {name}"));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let key = KeyPair::generate().expect("ca key");
        let cert = params.self_signed(&key).expect("ca cert");
        let ca = dir.join("ca.pem");
        std::fs::write(&ca, cert.pem()).expect("ca file");
        Pki {
            ca,
            ca_der: cert.der().to_vec(),
            issuer: Issuer::new(params, key),
            dir,
        }
    }

    fn leaf(&self, file: &str, names: &[&str], usage: ExtendedKeyUsagePurpose) -> Pair {
        let mut params =
            CertificateParams::new(names.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>())
                .expect("params");
        params
            .distinguished_name
            .push(DnType::CommonName, names.first().copied().unwrap_or(file));
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![usage];
        params.use_authority_key_identifier_extension = true;
        let key = KeyPair::generate().expect("key");
        let cert = params.signed_by(&key, &self.issuer).expect("sign");
        let pair = Pair {
            cert: self.dir.join(format!("{file}.pem")),
            key: self.dir.join(format!("{file}.key")),
            der: cert.der().to_vec(),
        };
        std::fs::write(&pair.cert, cert.pem()).expect("cert file");
        std::fs::write(&pair.key, key.serialize_pem()).expect("key file");
        pair
    }

    /// A server certificate for `localhost` and 127.0.0.1, signed by the CA.
    pub fn server(&self, file: &str) -> Pair {
        self.leaf(
            file,
            &["localhost", "127.0.0.1"],
            ExtendedKeyUsagePurpose::ServerAuth,
        )
    }

    /// A client certificate for `name`, signed by the CA.
    pub fn client(&self, file: &str, name: &str) -> Pair {
        self.leaf(file, &[name], ExtendedKeyUsagePurpose::ClientAuth)
    }

    /// The SIP-over-TLS identity of a daemon serving `server` (clients need a certificate of
    /// this CA when `mutual`).
    pub fn identity(&self, server: &Pair, mutual: bool) -> screenpop::tls_server::Identity {
        screenpop::tls_server::Identity::Files {
            cert: server.cert.clone(),
            key: server.key.clone(),
            client_ca: mutual.then(|| self.ca.clone()),
        }
    }

    /// A client config trusting this CA only, presenting `identity` if given.
    pub fn client_config(&self, identity: Option<&Pair>) -> Arc<rustls::ClientConfig> {
        client_config(&self.ca_der, identity)
    }
}

impl Drop for Pki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A client config trusting the CA in `ca_der` only, presenting `identity` if given.
pub fn client_config(ca_der: &[u8], identity: Option<&Pair>) -> Arc<rustls::ClientConfig> {
    use rustls_pki_types::pem::PemObject as _;
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(rustls_pki_types::CertificateDer::from(ca_der.to_vec()))
        .expect("root");
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("versions")
    .with_root_certificates(roots);
    let config = match identity {
        None => builder.with_no_client_auth(),
        Some(pair) => builder
            .with_client_auth_cert(
                vec![rustls_pki_types::CertificateDer::from(pair.der.clone())],
                rustls_pki_types::PrivateKeyDer::from_pem_file(&pair.key).expect("key"),
            )
            .expect("client auth"),
    };
    Arc::new(config)
}
