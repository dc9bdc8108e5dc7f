//! Sockets: dialling and listening on TCP and Unix addresses, and the task that writes frames.

use std::io;
use std::path::{Path, PathBuf};

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UnixListener, UnixStream};
use tokio::sync::mpsc;

use crate::address::Address;
use crate::error::Error;

/// A connected socket of either kind.
pub(crate) enum Stream {
    Tcp(TcpStream),
    Unix(UnixStream),
}

/// Dials `address`, with `TCP_NODELAY` on TCP sockets.
pub(crate) async fn connect(address: &Address) -> Result<Stream, Error> {
    let connect_error = |source| Error::Connect {
        address: address.to_string(),
        source,
    };
    match address {
        Address::Tcp(host_port) => {
            let stream = TcpStream::connect(host_port.as_str())
                .await
                .map_err(connect_error)?;
            stream.set_nodelay(true).map_err(connect_error)?;
            Ok(Stream::Tcp(stream))
        }
        Address::Unix(path) => Ok(Stream::Unix(
            UnixStream::connect(path).await.map_err(connect_error)?,
        )),
    }
}

/// A listening socket of either kind. A Unix listener removes its socket file when dropped.
pub(crate) enum Listener {
    Tcp(TcpListener),
    Unix(UnixListener, PathBuf),
}

impl Listener {
    /// Binds `address`. A Unix socket file left behind by a server that is gone is replaced;
    /// one that a live server answers on is an "address in use" error.
    pub(crate) async fn bind(address: &Address) -> Result<(Listener, Address), Error> {
        match address {
            Address::Tcp(host_port) => {
                let listener = TcpListener::bind(host_port.as_str()).await.map_err(|e| {
                    Error::Io(io::Error::new(
                        e.kind(),
                        format!("cannot listen on {address}: {e}"),
                    ))
                })?;
                let bound = Address::from(listener.local_addr()?);
                Ok((Listener::Tcp(listener), bound))
            }
            Address::Unix(path) => {
                remove_stale_socket(path).await?;
                let listener = UnixListener::bind(path).map_err(|e| {
                    Error::Io(io::Error::new(
                        e.kind(),
                        format!("cannot listen on {address}: {e}"),
                    ))
                })?;
                Ok((Listener::Unix(listener, path.clone()), address.clone()))
            }
        }
    }

    /// Waits for the next client.
    pub(crate) async fn accept(&self) -> io::Result<Stream> {
        match self {
            Listener::Tcp(listener) => {
                let (stream, _) = listener.accept().await?;
                stream.set_nodelay(true)?;
                Ok(Stream::Tcp(stream))
            }
            Listener::Unix(listener, _) => Ok(Stream::Unix(listener.accept().await?.0)),
        }
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        if let Listener::Unix(_, path) = self {
            let _ = std::fs::remove_file(path);
        }
    }
}

async fn remove_stale_socket(path: &Path) -> Result<(), Error> {
    use std::os::unix::fs::FileTypeExt;
    let Ok(meta) = std::fs::symlink_metadata(path) else {
        return Ok(());
    };
    if !meta.file_type().is_socket() {
        return Err(Error::Io(io::Error::new(
            io::ErrorKind::AlreadyExists,
            format!(
                "{} exists and is not a socket; refusing to replace it",
                path.display()
            ),
        )));
    }
    if UnixStream::connect(path).await.is_ok() {
        return Err(Error::Io(io::Error::new(
            io::ErrorKind::AddrInUse,
            format!("a server is already listening on unix:{}", path.display()),
        )));
    }
    std::fs::remove_file(path)?;
    Ok(())
}

/// Writes the frames that arrive on `frames` to `writer`, gathering those that queue up into
/// one write, until every sender is gone.
pub(crate) async fn write_frames<W>(mut writer: W, mut frames: mpsc::UnboundedReceiver<Bytes>)
where
    W: AsyncWrite + Unpin,
{
    const GATHER: usize = 64 * 1024;
    let mut batch = BytesMut::new();
    while let Some(first) = frames.recv().await {
        let result = if first.len() >= GATHER {
            writer.write_all(&first).await
        } else {
            batch.extend_from_slice(&first);
            while batch.len() < GATHER {
                match frames.try_recv() {
                    Ok(next) if next.len() >= GATHER => {
                        if let Err(e) = writer.write_all(&batch).await {
                            tracing::debug!("write failed: {e}");
                            return;
                        }
                        batch.clear();
                        batch.extend_from_slice(&next);
                    }
                    Ok(next) => batch.extend_from_slice(&next),
                    Err(_) => break,
                }
            }
            let result = writer.write_all(&batch).await;
            batch.clear();
            result
        };
        if let Err(e) = result {
            tracing::debug!("write failed: {e}");
            return;
        }
    }
    let _ = writer.shutdown().await;
}

/// Splits a stream into owned halves and hands them to `f`, so each kind keeps its own
/// lock-free split.
macro_rules! with_split {
    ($stream:expr, |$r:ident, $w:ident| $body:expr) => {
        match $stream {
            $crate::transport::Stream::Tcp(s) => {
                let ($r, $w) = s.into_split();
                $body
            }
            $crate::transport::Stream::Unix(s) => {
                let ($r, $w) = s.into_split();
                $body
            }
        }
    };
}
pub(crate) use with_split;

/// Runs a handshake function on whichever kind of stream this is.
impl Stream {
    pub(crate) async fn handshake_server(
        &mut self,
        key: &crate::auth::AuthKey,
    ) -> Result<(), Error> {
        match self {
            Stream::Tcp(s) => crate::auth::server_handshake(s, key).await,
            Stream::Unix(s) => crate::auth::server_handshake(s, key).await,
        }
    }

    /// Sends the welcome frame that follows a successful handshake.
    pub(crate) async fn send_welcome(
        &mut self,
        welcome: &crate::wire::Welcome,
    ) -> Result<(), Error> {
        let mut buf = crate::wire::start_frame(64);
        crate::wire::put(&mut buf, welcome, "welcome")?;
        let frame = crate::wire::finish(buf, crate::wire::DEFAULT_MAX_FRAME)?;
        match self {
            Stream::Tcp(s) => s.write_all(&frame).await?,
            Stream::Unix(s) => s.write_all(&frame).await?,
        }
        Ok(())
    }

    pub(crate) async fn handshake_client(
        &mut self,
        key: &crate::auth::AuthKey,
    ) -> Result<crate::wire::Welcome, Error> {
        match self {
            Stream::Tcp(s) => {
                crate::auth::client_handshake(s, key).await?;
                read_welcome(s).await
            }
            Stream::Unix(s) => {
                crate::auth::client_handshake(s, key).await?;
                read_welcome(s).await
            }
        }
    }
}

/// Satisfied by both halves of both stream kinds.
pub(crate) trait ReadHalf: AsyncRead + Unpin + Send + 'static {}
impl<T: AsyncRead + Unpin + Send + 'static> ReadHalf for T {}

/// Reads the server's welcome frame, which follows a successful handshake.
async fn read_welcome<S: AsyncRead + Unpin>(stream: &mut S) -> Result<crate::wire::Welcome, Error> {
    use tokio::io::AsyncReadExt;
    const MAX_WELCOME: usize = 64 * 1024;
    let len = stream.read_u32().await? as usize;
    if len > MAX_WELCOME {
        return Err(Error::Protocol(format!(
            "welcome frame of {len} bytes is too large"
        )));
    }
    let mut body = vec![0u8; len];
    stream.read_exact(&mut body).await?;
    let welcome: crate::wire::Welcome = crate::wire::decode_payload(&body, "welcome")?;
    if let Some(reason) = welcome.refused {
        return Err(Error::Remote(crate::error::RemoteError::new(
            crate::error::RemoteErrorKind::Limit,
            "",
            "connect",
            reason,
        )));
    }
    if welcome.protocol != crate::wire::PROTOCOL_VERSION {
        return Err(Error::Protocol(format!(
            "the server speaks protocol version {}, this client {}",
            welcome.protocol,
            crate::wire::PROTOCOL_VERSION
        )));
    }
    Ok(welcome)
}
