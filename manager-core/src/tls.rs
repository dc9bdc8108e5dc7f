//! TLS for managers reached across machines (the `tls` cargo feature, off by default): the
//! server's certificate and key, the client's check of the server's certificate against a CA,
//! and optional client certificates.
//!
//! TLS wraps the TCP connection *before* the authkey handshake, which still runs inside it: a
//! client needs the authkey whether or not it uses TLS, and, when the server asks for one
//! ([`TlsServerConfig::client_ca`]), a certificate signed by the server's client CA too.
//!
//! ```no_run
//! # use manager_core::{Address, BaseManager, ServerConfig, TlsClientConfig, TlsServerConfig};
//! // The server: its certificate chain and key, as PEM files.
//! let mut config = ServerConfig::default();
//! config.tls = Some(TlsServerConfig::new("server.pem", "server.key"));
//! let server = BaseManager::new(Address::tcp("0.0.0.0:50000")).config(config);
//!
//! // A client: the CA that signed the server's certificate, and the name in it.
//! let client = BaseManager::new(Address::tcp("manager.example:50000"))
//!     .tls(TlsClientConfig::new("ca.pem", "manager.example"))
//!     .connect()?;
//! # Ok::<(), manager_core::Error>(())
//! ```
//!
//! The configuration types exist whether or not the feature is on, so that code and
//! configuration need no `cfg`: without the feature, binding a server or connecting a client
//! with a TLS configuration fails with [`Error::Tls`]. TLS is for TCP addresses only: a Unix
//! socket configured with TLS is refused the same way.
//!
//! The certificates and keys are PEM files (the private key in PKCS#8, PKCS#1 or SEC1 form),
//! read when the server binds and each time a client connects. TLS 1.2 and 1.3 are offered,
//! with rustls' default cipher suites and the `ring` crypto provider.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::address::Address;
use crate::error::Error;

/// A server's TLS settings: the field `tls` of [`crate::ServerConfig`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TlsServerConfig {
    /// A PEM file with the server's certificate first, then any intermediate certificates.
    pub cert_chain: PathBuf,
    /// A PEM file with the private key of the server's certificate.
    pub private_key: PathBuf,
    /// A PEM file of CA certificates. When set, every client must present a certificate signed
    /// by one of them (and still prove it holds the authkey).
    pub client_ca: Option<PathBuf>,
}

impl TlsServerConfig {
    /// A server identified by the certificate chain and key in these PEM files, asking clients
    /// for no certificate.
    pub fn new(cert_chain: impl Into<PathBuf>, private_key: impl Into<PathBuf>) -> Self {
        TlsServerConfig {
            cert_chain: cert_chain.into(),
            private_key: private_key.into(),
            client_ca: None,
        }
    }

    /// Requires every client to present a certificate signed by a CA in this PEM file.
    pub fn client_ca(mut self, client_ca: impl Into<PathBuf>) -> Self {
        self.client_ca = Some(client_ca.into());
        self
    }
}

/// A client's TLS settings: how it checks the server, and the certificate it presents when the
/// server asks for one. Set with [`crate::BaseManager::tls`] or [`crate::ConnectOptions::tls`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TlsClientConfig {
    /// A PEM file of the CA certificates the server's certificate must be signed by. Only
    /// these are trusted (not the system's store).
    pub ca: PathBuf,
    /// The name the server's certificate must be issued for: a DNS name (`manager.example`)
    /// or an IP address (`127.0.0.1`), whatever address is dialled.
    pub server_name: String,
    /// The client's certificate chain and private key (PEM files), for a server that requires
    /// client certificates.
    pub client_cert: Option<(PathBuf, PathBuf)>,
}

impl TlsClientConfig {
    /// A client that trusts the CAs in the PEM file `ca` and expects the server's certificate
    /// to name `server_name`.
    pub fn new(ca: impl Into<PathBuf>, server_name: impl Into<String>) -> Self {
        TlsClientConfig {
            ca: ca.into(),
            server_name: server_name.into(),
            client_cert: None,
        }
    }

    /// Presents the certificate chain and key in these PEM files to the server.
    pub fn client_cert(
        mut self,
        cert_chain: impl Into<PathBuf>,
        private_key: impl Into<PathBuf>,
    ) -> Self {
        self.client_cert = Some((cert_chain.into(), private_key.into()));
        self
    }
}

/// This process's default client TLS configuration: see [`set_default_client_config`].
static DEFAULT_CLIENT: std::sync::RwLock<Option<TlsClientConfig>> = std::sync::RwLock::new(None);

/// Sets this process's default client TLS configuration (`None` for none, the default), the
/// way [`crate::process::authkey`] is its default authkey.
///
/// It is what a proxy that *travelled* to this process reconnects with: a proxy passed to a
/// spawned process as an argument, or one that arrives inside a value (an item of a queue, a
/// value of a dict) and names a server this process has no connection to yet. Processes
/// started by [`crate::Process::spawn`] and [`crate::BaseManager::start`] inherit the
/// configuration their parent has when it spawns them. It applies to TCP addresses only (a
/// proxy for a Unix socket reconnects without TLS), and a `server_name` left empty stands
/// for the host of each address dialled. Connections made by [`crate::BaseManager`] and
/// [`crate::Connection`] take their TLS settings from their own options, not from here.
///
/// Without it, a proxy for a server that requires TLS fails to reconnect with
/// [`Error::Tls`], saying so.
pub fn set_default_client_config(config: Option<TlsClientConfig>) {
    *DEFAULT_CLIENT.write().unwrap_or_else(|e| e.into_inner()) = config;
}

/// This process's default client TLS configuration (see [`set_default_client_config`]).
pub fn default_client_config() -> Option<TlsClientConfig> {
    DEFAULT_CLIENT
        .read()
        .unwrap_or_else(|e| e.into_inner())
        .clone()
}

/// The default client configuration for a connection to `address`: none for a Unix socket,
/// and an empty server name replaced by the address's host.
pub(crate) fn default_client_config_for(address: &Address) -> Option<TlsClientConfig> {
    let Address::Tcp(host_port) = address else {
        return None;
    };
    let mut config = default_client_config()?;
    if config.server_name.is_empty() {
        config.server_name = host_of(host_port).to_string();
    }
    Some(config)
}

/// The host of `host:port` text, without the brackets of an IPv6 address.
pub fn host_of(host_port: &str) -> &str {
    let host = host_port
        .rsplit_once(':')
        .map_or(host_port, |(host, _)| host);
    host.trim_start_matches('[').trim_end_matches(']')
}

/// Refuses TLS on a Unix socket.
fn check_tcp(address: &Address, side: &str) -> Result<(), Error> {
    match address {
        Address::Tcp(_) => Ok(()),
        Address::Unix(_) => Err(Error::Tls(format!(
            "TLS is for TCP addresses, and {address} is a Unix socket: remove the {side}'s TLS \
             configuration (a Unix socket is reachable only on this machine)"
        ))),
    }
}

#[cfg(feature = "tls")]
pub(crate) use imp::{Acceptor, ClientStream, Connector};
#[cfg(not(feature = "tls"))]
pub(crate) use stub::{Acceptor, Connector};

#[cfg(feature = "tls")]
mod imp {
    use std::io;
    use std::path::Path;
    use std::pin::Pin;
    use std::sync::Arc;
    use std::task::{Context, Poll};
    use std::time::Duration;

    use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
    use tokio::net::TcpStream;
    use tokio_rustls::rustls::crypto::CryptoProvider;
    use tokio_rustls::rustls::pki_types::pem::PemObject;
    use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
    use tokio_rustls::rustls::server::WebPkiClientVerifier;
    use tokio_rustls::rustls::{self, AlertDescription, RootCertStore};
    use tokio_rustls::{TlsAcceptor, TlsConnector};

    use super::{check_tcp, TlsClientConfig, TlsServerConfig};
    use crate::address::Address;
    use crate::error::Error;
    use crate::transport::Stream;

    /// The longest a server waits for a new client's first TLS bytes before it takes it for a
    /// client without TLS (which waits for the server to speak first) and tells it so.
    const PLAIN_CLIENT_WAIT: Duration = Duration::from_secs(2);

    fn provider() -> Arc<CryptoProvider> {
        Arc::new(rustls::crypto::ring::default_provider())
    }

    fn load_certs(path: &Path, what: &str) -> Result<Vec<CertificateDer<'static>>, Error> {
        let unreadable = |e: &dyn std::fmt::Display| {
            Error::Tls(format!("cannot read {what} {}: {e}", path.display()))
        };
        let certs = CertificateDer::pem_file_iter(path)
            .map_err(|e| unreadable(&e))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| unreadable(&e))?;
        if certs.is_empty() {
            return Err(Error::Tls(format!(
                "{what} {} holds no PEM certificate",
                path.display()
            )));
        }
        Ok(certs)
    }

    fn load_key(path: &Path, what: &str) -> Result<PrivateKeyDer<'static>, Error> {
        PrivateKeyDer::from_pem_file(path).map_err(|e| {
            Error::Tls(format!(
                "cannot read {what} {} (a PEM private key): {e}",
                path.display()
            ))
        })
    }

    fn load_roots(path: &Path, what: &str) -> Result<Arc<RootCertStore>, Error> {
        let mut roots = RootCertStore::empty();
        for cert in load_certs(path, what)? {
            roots.add(cert).map_err(|e| {
                Error::Tls(format!(
                    "{what} {} holds a certificate that cannot be a CA: {e}",
                    path.display()
                ))
            })?;
        }
        Ok(Arc::new(roots))
    }

    /// The server side: establishes TLS on each accepted TCP connection. Cheap to clone.
    #[derive(Clone)]
    pub(crate) struct Acceptor {
        acceptor: TlsAcceptor,
        plain_client_wait: Duration,
    }

    impl Acceptor {
        /// Loads the server's certificate and key (and the client CA) for a server at
        /// `address` whose clients have `handshake_timeout` to complete their handshakes.
        pub(crate) fn new(
            config: &TlsServerConfig,
            address: &Address,
            handshake_timeout: Duration,
        ) -> Result<Acceptor, Error> {
            check_tcp(address, "server")?;
            let chain = load_certs(&config.cert_chain, "the server's certificate chain")?;
            let key = load_key(&config.private_key, "the server's private key")?;
            let builder = rustls::ServerConfig::builder_with_provider(provider())
                .with_safe_default_protocol_versions()
                .map_err(|e| Error::Tls(e.to_string()))?;
            let builder = match &config.client_ca {
                None => builder.with_no_client_auth(),
                Some(path) => {
                    let roots = load_roots(path, "the client CA file")?;
                    let verifier = WebPkiClientVerifier::builder_with_provider(roots, provider())
                        .build()
                        .map_err(|e| {
                            Error::Tls(format!(
                                "cannot check client certificates against {}: {e}",
                                path.display()
                            ))
                        })?;
                    builder.with_client_cert_verifier(verifier)
                }
            };
            let server = builder.with_single_cert(chain, key).map_err(|e| {
                Error::Tls(format!(
                    "the server's certificate {} and key {} do not make a usable pair: {e}",
                    config.cert_chain.display(),
                    config.private_key.display()
                ))
            })?;
            Ok(Acceptor {
                acceptor: TlsAcceptor::from(Arc::new(server)),
                plain_client_wait: PLAIN_CLIENT_WAIT.min(handshake_timeout / 2),
            })
        }

        /// Runs the server side of the TLS handshake on a new connection.
        pub(crate) async fn accept(&self, mut tcp: TcpStream) -> Result<Stream, Error> {
            // A client without TLS sends nothing until it has the server's greeting: tell it
            // (with a greeting it understands) that this server requires TLS.
            let mut first = [0u8; 1];
            match tokio::time::timeout(self.plain_client_wait, tcp.peek(&mut first)).await {
                Err(_) => {
                    let mut notice = [0u8; crate::auth::GREETING_LEN];
                    notice[..crate::auth::TLS_REQUIRED.len()]
                        .copy_from_slice(crate::auth::TLS_REQUIRED);
                    let _ = tcp.write_all(&notice).await;
                    let _ = tcp.shutdown().await;
                    return Err(Error::Tls(format!(
                        "a client sent no TLS handshake within {:?} (a client without TLS?); \
                         it was told that this server requires TLS",
                        self.plain_client_wait
                    )));
                }
                Ok(Ok(0)) => {
                    return Err(Error::Tls(
                        "a client closed its connection before the TLS handshake".into(),
                    ))
                }
                Ok(Ok(_)) => {}
                Ok(Err(e)) => return Err(Error::Io(e)),
            }
            match self.acceptor.accept(tcp).await {
                Ok(stream) => Ok(Stream::TlsServer(Box::new(stream))),
                Err(e) => Err(Error::Tls(format!(
                    "the TLS handshake with a client failed: {}",
                    describe(&e, "client")
                ))),
            }
        }
    }

    /// The client side: establishes TLS on a dialled TCP connection.
    pub(crate) struct Connector {
        connector: TlsConnector,
        server_name: ServerName<'static>,
    }

    impl Connector {
        /// Loads the CA (and the client's certificate and key) for a connection to `address`.
        pub(crate) fn new(config: &TlsClientConfig, address: &Address) -> Result<Connector, Error> {
            check_tcp(address, "client")?;
            let server_name = ServerName::try_from(config.server_name.clone()).map_err(|e| {
                Error::Tls(format!(
                    "{:?} is neither a DNS name nor an IP address: {e}",
                    config.server_name
                ))
            })?;
            let roots = load_roots(&config.ca, "the CA file")?;
            let builder = rustls::ClientConfig::builder_with_provider(provider())
                .with_safe_default_protocol_versions()
                .map_err(|e| Error::Tls(e.to_string()))?
                .with_root_certificates(roots);
            let client = match &config.client_cert {
                None => builder.with_no_client_auth(),
                Some((chain, key)) => {
                    let certs = load_certs(chain, "the client's certificate chain")?;
                    let private = load_key(key, "the client's private key")?;
                    builder.with_client_auth_cert(certs, private).map_err(|e| {
                        Error::Tls(format!(
                            "the client's certificate {} and key {} do not make a usable pair: {e}",
                            chain.display(),
                            key.display()
                        ))
                    })?
                }
            };
            Ok(Connector {
                connector: TlsConnector::from(Arc::new(client)),
                server_name,
            })
        }

        /// Runs the client side of the TLS handshake on a dialled connection.
        pub(crate) async fn connect(self, tcp: TcpStream) -> Result<Stream, Error> {
            match self.connector.connect(self.server_name.clone(), tcp).await {
                Ok(stream) => Ok(Stream::TlsClient(Box::new(ClientStream {
                    inner: stream,
                    failure: None,
                }))),
                Err(e) => Err(Error::Tls(match rustls_error(&e) {
                    Some(rustls::Error::InvalidMessage(_)) => format!(
                        "the server did not answer in TLS (a manager server without TLS?): {e}"
                    ),
                    Some(rustls::Error::InvalidCertificate(cert)) => format!(
                        "the server's certificate is not trusted for {:?}: {cert:?} (is \
                         TlsClientConfig::ca the CA that signed it, and server_name a name it \
                         is issued for?)",
                        self.server_name.to_str()
                    ),
                    _ => format!(
                        "the TLS handshake with the server failed: {}",
                        describe(&e, "server")
                    ),
                })),
            }
        }
    }

    /// The rustls error inside an I/O error from tokio-rustls, if there is one.
    fn rustls_error(e: &io::Error) -> Option<&rustls::Error> {
        e.get_ref()?.downcast_ref::<rustls::Error>()
    }

    /// Says what a TLS failure means for a person, where it is one of the usual ones; `peer` is
    /// the other side, "client" or "server".
    fn describe(e: &io::Error, peer: &str) -> String {
        match rustls_error(e) {
            Some(rustls::Error::AlertReceived(AlertDescription::CertificateRequired)) => {
                format!("the server requires a client certificate and got none (TlsClientConfig::client_cert) ({e})")
            }
            Some(rustls::Error::AlertReceived(
                alert @ (AlertDescription::BadCertificate
                | AlertDescription::UnknownCA
                | AlertDescription::CertificateUnknown
                | AlertDescription::UnsupportedCertificate
                | AlertDescription::CertificateExpired
                | AlertDescription::CertificateRevoked
                | AlertDescription::AccessDenied),
            )) => format!("the {peer} refused our certificate ({alert:?}) ({e})"),
            Some(rustls::Error::NoCertificatesPresented) => {
                format!("the client presented no certificate, and this server requires one ({e})")
            }
            Some(rustls::Error::InvalidCertificate(cert)) => {
                format!("the {peer}'s certificate is not trusted: {cert:?} ({e})")
            }
            Some(rustls::Error::InvalidMessage(_)) => {
                format!("the {peer} does not speak TLS ({e})")
            }
            _ => e.to_string(),
        }
    }

    /// A client's TLS stream that remembers the TLS failure behind an I/O error, so that the
    /// authkey handshake that runs over it can report that failure instead. (With TLS 1.3 the
    /// server checks the client's certificate after the client's side of the handshake has
    /// completed: a refusal reaches the client on its first read.)
    pub(crate) struct ClientStream {
        inner: tokio_rustls::client::TlsStream<TcpStream>,
        failure: Option<String>,
    }

    impl ClientStream {
        /// Replaces the error of a handshake over this stream by [`Error::Tls`] when TLS failed
        /// underneath it.
        pub(crate) fn explain<T>(&self, result: Result<T, Error>) -> Result<T, Error> {
            match (result, &self.failure) {
                (Err(_), Some(failure)) => Err(Error::Tls(failure.clone())),
                (result, _) => result,
            }
        }

        fn note<T>(&mut self, result: Poll<io::Result<T>>) -> Poll<io::Result<T>> {
            if let Poll::Ready(Err(e)) = &result {
                if self.failure.is_none() && rustls_error(e).is_some() {
                    self.failure = Some(describe(e, "server"));
                }
            }
            result
        }
    }

    impl AsyncRead for ClientStream {
        fn poll_read(
            self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &mut ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            let this = self.get_mut();
            let result = Pin::new(&mut this.inner).poll_read(cx, buf);
            this.note(result)
        }
    }

    impl AsyncWrite for ClientStream {
        fn poll_write(
            self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            let this = self.get_mut();
            let result = Pin::new(&mut this.inner).poll_write(cx, buf);
            this.note(result)
        }

        fn poll_write_vectored(
            self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            bufs: &[io::IoSlice<'_>],
        ) -> Poll<io::Result<usize>> {
            let this = self.get_mut();
            let result = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
            this.note(result)
        }

        fn is_write_vectored(&self) -> bool {
            self.inner.is_write_vectored()
        }

        fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            let this = self.get_mut();
            let result = Pin::new(&mut this.inner).poll_flush(cx);
            this.note(result)
        }

        fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
        }
    }
}

/// Without the `tls` feature: the same names, which cannot be built.
#[cfg(not(feature = "tls"))]
mod stub {
    use std::time::Duration;

    use tokio::net::TcpStream;

    use super::{check_tcp, TlsClientConfig, TlsServerConfig};
    use crate::address::Address;
    use crate::error::Error;
    use crate::transport::Stream;

    fn no_tls() -> Error {
        Error::Tls(
            "this build has no TLS support: enable the `tls` cargo feature of manager \
             (or manager-core)"
                .into(),
        )
    }

    /// Never built: there is no TLS in this build.
    #[derive(Clone)]
    pub(crate) enum Acceptor {}

    impl Acceptor {
        pub(crate) fn new(
            _: &TlsServerConfig,
            address: &Address,
            _: Duration,
        ) -> Result<Acceptor, Error> {
            check_tcp(address, "server")?;
            Err(no_tls())
        }

        pub(crate) async fn accept(&self, _: TcpStream) -> Result<Stream, Error> {
            match *self {}
        }
    }

    /// Never built: there is no TLS in this build.
    pub(crate) enum Connector {}

    impl Connector {
        pub(crate) fn new(_: &TlsClientConfig, address: &Address) -> Result<Connector, Error> {
            check_tcp(address, "client")?;
            Err(no_tls())
        }

        pub(crate) async fn connect(self, _: TcpStream) -> Result<Stream, Error> {
            match self {}
        }
    }
}
