//! Where a manager server listens: a TCP socket address or a Unix socket path.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::error::Error;

/// The address of a manager server.
///
/// Written as text, a TCP address is `host:port` (`127.0.0.1:50000`, `localhost:0`, `[::1]:7000`)
/// and a Unix socket is `unix:/path/to/socket`. Port 0 asks the operating system for a free
/// port; the server reports the port it got through [`crate::Server::address`].
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Address {
    /// A TCP address, `host:port`.
    Tcp(String),
    /// A Unix domain socket at this path.
    Unix(PathBuf),
}

impl Address {
    /// A TCP address from `host:port` text.
    pub fn tcp(host_port: impl Into<String>) -> Self {
        Address::Tcp(host_port.into())
    }

    /// A Unix socket address at `path`.
    pub fn unix(path: impl Into<PathBuf>) -> Self {
        Address::Unix(path.into())
    }

    /// `127.0.0.1:0`: a TCP address on the loopback interface with a port the system picks.
    pub fn local_tcp() -> Self {
        Address::Tcp("127.0.0.1:0".to_string())
    }
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Address::Tcp(host_port) => f.write_str(host_port),
            Address::Unix(path) => write!(f, "unix:{}", path.display()),
        }
    }
}

impl FromStr for Address {
    type Err = Error;

    fn from_str(text: &str) -> Result<Self, Error> {
        if let Some(path) = text.strip_prefix("unix:") {
            if path.is_empty() {
                return Err(Error::Protocol(format!(
                    "address {text:?} names no socket path"
                )));
            }
            return Ok(Address::Unix(PathBuf::from(path)));
        }
        match text.rsplit_once(':') {
            Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok() => {
                Ok(Address::Tcp(text.to_string()))
            }
            _ => Err(Error::Protocol(format!(
                "address {text:?} is neither host:port nor unix:/path"
            ))),
        }
    }
}

impl From<std::net::SocketAddr> for Address {
    fn from(addr: std::net::SocketAddr) -> Self {
        Address::Tcp(addr.to_string())
    }
}

impl From<(&str, u16)> for Address {
    fn from((host, port): (&str, u16)) -> Self {
        if host.contains(':') && !host.starts_with('[') {
            Address::Tcp(format!("[{host}]:{port}"))
        } else {
            Address::Tcp(format!("{host}:{port}"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints() {
        let tcp: Address = "127.0.0.1:5000".parse().unwrap();
        assert_eq!(tcp, Address::tcp("127.0.0.1:5000"));
        assert_eq!(tcp.to_string(), "127.0.0.1:5000");
        let unix: Address = "unix:/tmp/m.sock".parse().unwrap();
        assert_eq!(unix, Address::unix("/tmp/m.sock"));
        assert_eq!(unix.to_string(), "unix:/tmp/m.sock");
        assert!("nonsense".parse::<Address>().is_err());
        assert!("unix:".parse::<Address>().is_err());
        assert!("host:99999".parse::<Address>().is_err());
        assert_eq!(Address::from(("::1", 7)), Address::tcp("[::1]:7"));
    }
}
