//! The TLS options of the command: the server's certificate chain, key and client CA for
//! `serve`; the CA, server name and client certificate for `info` and `shutdown`. The files are
//! PEM, read when the server binds or the client connects; a build without the `tls` feature
//! takes the options and fails with a message that says so.

use std::path::PathBuf;

use clap::Args;
use manager::{Address, TlsClientConfig, TlsServerConfig};

/// `serve`'s TLS options: with `--tls-cert` and `--tls-key`, every native connection is TLS.
#[derive(Debug, Args)]
pub(crate) struct ServeTls {
    /// Serve TLS with the certificate chain in this PEM file (the server's certificate first,
    /// then any intermediates); needs --tls-key
    #[arg(long, value_name = "PATH", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,

    /// The private key of --tls-cert, a PEM file (PKCS#8, PKCS#1 or SEC1)
    #[arg(long, value_name = "PATH", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,

    /// Require every client to present a certificate signed by a CA in this PEM file (and
    /// still prove it holds the authkey)
    #[arg(long, value_name = "PATH", requires = "tls_cert")]
    pub tls_client_ca: Option<PathBuf>,
}

impl ServeTls {
    /// The server's TLS configuration, if TLS was asked for.
    pub(crate) fn config(&self) -> Option<TlsServerConfig> {
        let (cert, key) = (self.tls_cert.as_ref()?, self.tls_key.as_ref()?);
        let config = TlsServerConfig::new(cert, key);
        Some(match &self.tls_client_ca {
            Some(ca) => config.client_ca(ca),
            None => config,
        })
    }
}

/// The TLS options of `info` and `shutdown`: with `--tls-ca`, the client connects with TLS.
#[derive(Debug, Args)]
pub(crate) struct ClientTls {
    /// Connect with TLS, trusting only the CA certificates in this PEM file to have signed the
    /// server's certificate
    #[arg(long, value_name = "PATH")]
    pub tls_ca: Option<PathBuf>,

    /// The name the server's certificate must be issued for (a DNS name or an IP address);
    /// default: the host of --address
    #[arg(long, value_name = "NAME", requires = "tls_ca")]
    pub tls_server_name: Option<String>,

    /// Present the certificate chain in this PEM file, for a server started with
    /// --tls-client-ca; needs --tls-client-key
    #[arg(long, value_name = "PATH", requires_all = ["tls_ca", "tls_client_key"])]
    pub tls_client_cert: Option<PathBuf>,

    /// The private key of --tls-client-cert, a PEM file
    #[arg(long, value_name = "PATH", requires = "tls_client_cert")]
    pub tls_client_key: Option<PathBuf>,
}

impl ClientTls {
    /// Whether any TLS option was given.
    pub(crate) fn given(&self) -> bool {
        self.tls_ca.is_some()
    }

    /// The client's TLS configuration for a server at `address`, if TLS was asked for.
    pub(crate) fn config(&self, address: &Address) -> Option<TlsClientConfig> {
        let ca = self.tls_ca.as_ref()?;
        let name = match (&self.tls_server_name, address) {
            (Some(name), _) => name.clone(),
            (None, Address::Tcp(host_port)) => manager::tls::host_of(host_port).to_string(),
            // TLS on a Unix socket is refused when connecting, with a message that says so.
            (None, Address::Unix(_)) => "localhost".to_string(),
        };
        let config = TlsClientConfig::new(ca, name);
        Some(match (&self.tls_client_cert, &self.tls_client_key) {
            (Some(cert), Some(key)) => config.client_cert(cert, key),
            _ => config,
        })
    }
}
