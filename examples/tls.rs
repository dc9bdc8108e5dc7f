//! `tls`: a manager reached over TLS, as one on another machine would be. Needs the `tls`
//! feature: `cargo run --example tls --features tls`.
//!
//! It makes a small PKI as PEM files in a temporary directory (a CA, a server certificate for
//! localhost and 127.0.0.1 signed by it, and a client certificate), starts a manager server in
//! a child process that requires TLS, client certificates and the authkey, and calls an
//! object through it. A client without TLS is then refused, and told why.

mod common;

use std::path::{Path, PathBuf};

use common::{Pair, PairBlockingProxy};
use manager::{
    Address, BaseManager, BlockingManager, Register, Registry, TlsClientConfig, TlsServerConfig,
    Typeid,
};
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

/// The server's registry: a new pair per create.
#[manager::entry]
pub fn registry() -> manager::Result<Registry> {
    let mut registry = Registry::new();
    registry.register(Register::factory("get_pair", |(x, y): (i64, i64)| {
        Pair::new(x, y)
    }))?;
    Ok(registry)
}

const GET_PAIR: Typeid<PairBlockingProxy, (i64, i64)> = Typeid::new("get_pair");

/// A directory removed (with the keys in it) when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> Result<TempDir> {
        let dir = std::env::temp_dir().join(format!("manager-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        Ok(TempDir(dir))
    }

    fn join(&self, file: &str) -> PathBuf {
        self.0.join(file)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Writes `ca.pem`, `server.pem`/`server.key` and `client.pem`/`client.key` into `dir`.
fn make_certificates(dir: &Path) -> Result<()> {
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    params
        .distinguished_name
        .push(DnType::CommonName, "manager example CA");
    let ca = CertifiedIssuer::self_signed(params, KeyPair::generate()?)?;
    std::fs::write(dir.join("ca.pem"), ca.pem())?;

    let leaves = [
        (
            "server",
            vec!["localhost", "127.0.0.1"],
            ExtendedKeyUsagePurpose::ServerAuth,
        ),
        (
            "client",
            vec!["example-client"],
            ExtendedKeyUsagePurpose::ClientAuth,
        ),
    ];
    for (name, names, usage) in leaves {
        let names: Vec<String> = names.into_iter().map(String::from).collect();
        let mut params = CertificateParams::new(names.clone())?;
        params
            .distinguished_name
            .push(DnType::CommonName, &names[0]);
        params.extended_key_usages = vec![usage];
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &ca)?;
        std::fs::write(dir.join(format!("{name}.pem")), cert.pem())?;
        std::fs::write(dir.join(format!("{name}.key")), key.serialize_pem())?;
    }
    Ok(())
}

fn main() -> Result<()> {
    manager::init();
    let dir = TempDir::new()?;
    make_certificates(&dir.0)?;

    // The server: its certificate and key, and the CA its clients' certificates must be
    // signed by. The client: the CA it checks the server against, the name the server's
    // certificate must carry, and its own certificate. Both still need the authkey.
    let server_tls = TlsServerConfig::new(dir.join("server.pem"), dir.join("server.key"))
        .client_ca(dir.join("ca.pem"));
    let client_tls = TlsClientConfig::new(dir.join("ca.pem"), "localhost")
        .client_cert(dir.join("client.pem"), dir.join("client.key"));
    let manager = BaseManager::new(Address::local_tcp())
        .server_tls(server_tls)
        .tls(client_tls)
        .start(registry)?;

    let pair = manager.create(&GET_PAIR, (1, 3))?;
    pair.set_x(7)?;
    println!("over TLS: get_x() = {}", pair.get_x()?);

    match BlockingManager::connect(manager.address(), &manager::process::authkey()) {
        Err(e) => println!("without TLS: {e}"),
        Ok(_) => return Err("a client without TLS was let in".into()),
    }
    manager.shutdown()?;
    Ok(())
}
