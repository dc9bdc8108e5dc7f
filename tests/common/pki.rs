//! Certificates for the TLS tests, made at run time with rcgen: a CA, a server certificate for
//! 127.0.0.1/localhost signed by it, a client certificate, and a second CA that signed nothing
//! the server has. (Included with `#[path]` by the TLS tests and `benches/cross_host.rs`.)

#![allow(
    unreachable_pub,
    reason = "test helpers, shared by test and bench binaries"
)]
#![allow(dead_code)]

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};

use manager::{TlsClientConfig, TlsServerConfig};
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};

/// Certificates and keys as PEM files in a directory of their own, removed when dropped.
pub struct Pki {
    dir: PathBuf,
}

impl Pki {
    /// Makes a CA, a server certificate for localhost and 127.0.0.1 and a client certificate
    /// signed by it, and a second CA with a client certificate of its own.
    pub fn new() -> Pki {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "mgr-test-tls-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create the certificate directory");
        let pki = Pki { dir };
        let ca = pki.ca("ca", "manager test CA");
        pki.leaf(
            "server",
            &ca,
            &["localhost", "127.0.0.1"],
            ExtendedKeyUsagePurpose::ServerAuth,
        );
        pki.leaf(
            "client",
            &ca,
            &["client.test"],
            ExtendedKeyUsagePurpose::ClientAuth,
        );
        let other = pki.ca("other-ca", "another CA");
        pki.leaf(
            "stranger",
            &other,
            &["stranger.test"],
            ExtendedKeyUsagePurpose::ClientAuth,
        );
        pki
    }

    fn ca(&self, name: &str, common_name: &str) -> CertifiedIssuer<'static, KeyPair> {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        let ca = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
        std::fs::write(self.path(&format!("{name}.pem")), ca.pem()).unwrap();
        ca
    }

    fn leaf(
        &self,
        name: &str,
        ca: &CertifiedIssuer<'static, KeyPair>,
        names: &[&str],
        usage: ExtendedKeyUsagePurpose,
    ) {
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let mut params = CertificateParams::new(names.clone()).unwrap();
        params
            .distinguished_name
            .push(DnType::CommonName, &names[0]);
        params.extended_key_usages = vec![usage];
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, ca).unwrap();
        std::fs::write(self.path(&format!("{name}.pem")), cert.pem()).unwrap();
        std::fs::write(self.path(&format!("{name}.key")), key.serialize_pem()).unwrap();
    }

    pub fn path(&self, file: &str) -> PathBuf {
        self.dir.join(file)
    }

    /// The server's TLS settings, without client certificates.
    pub fn server(&self) -> TlsServerConfig {
        TlsServerConfig::new(self.path("server.pem"), self.path("server.key"))
    }

    /// A client that trusts the CA that signed the server's certificate.
    pub fn client(&self) -> TlsClientConfig {
        TlsClientConfig::new(self.path("ca.pem"), "localhost")
    }

    /// [`Pki::client`] with the client certificate signed by the same CA.
    pub fn client_with_cert(&self) -> TlsClientConfig {
        self.client()
            .client_cert(self.path("client.pem"), self.path("client.key"))
    }
}

impl Drop for Pki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
