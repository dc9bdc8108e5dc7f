//! Sockets: dialling and listening on TCP and Unix addresses, and the task that writes frames.

use std::io;
use std::path::{Path, PathBuf};

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UnixListener, UnixStream};
use tokio::sync::mpsc;

use crate::address::Address;
use crate::error::Error;
use crate::tls::{Acceptor, Connector, TlsClientConfig};

mod outbox;
mod replay;
pub(crate) mod shm;
mod socket_writer;
pub(crate) use outbox::Outbox;
#[cfg(feature = "python")]
pub(crate) use socket_writer::send_now;
pub(crate) use socket_writer::{take_events, SocketWriter};

/// A connected socket of either kind, or a TLS session over TCP (`tls` feature).
pub(crate) enum Stream {
    Tcp(TcpStream),
    Unix(UnixStream),
    #[cfg(feature = "tls")]
    TlsServer(Box<tokio_rustls::server::TlsStream<TcpStream>>),
    #[cfg(feature = "tls")]
    TlsClient(Box<crate::tls::ClientStream>),
}

/// Dials `address`, with `TCP_NODELAY` on TCP sockets, and establishes TLS over it when `tls`
/// is given.
pub(crate) async fn connect(
    address: &Address,
    tls: Option<&TlsClientConfig>,
) -> Result<Stream, Error> {
    // Built before dialling: a TLS configuration that cannot work fails without a connection.
    let connector = tls
        .map(|config| Connector::new(config, address))
        .transpose()?;
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
            match connector {
                Some(connector) => connector.connect(stream).await,
                None => Ok(Stream::Tcp(stream)),
            }
        }
        Address::Unix(path) => Ok(Stream::Unix(
            UnixStream::connect(path).await.map_err(connect_error)?,
        )),
    }
}

/// A listening socket of either kind, a TCP one with TLS when it has an acceptor. A Unix
/// listener removes its socket file when dropped.
pub(crate) enum Listener {
    Tcp(TcpListener, Option<Acceptor>),
    Unix(UnixListener, PathBuf),
}

/// A client just accepted, before any handshake.
pub(crate) struct Accepted {
    stream: Stream,
    tls: Option<Acceptor>,
}

impl Accepted {
    /// Establishes TLS when the listener has it, then runs the server side of the authkey
    /// handshake, and gives back the stream the connection goes on with.
    pub(crate) async fn handshake_server(
        self,
        key: &crate::auth::AuthKey,
    ) -> Result<(Stream, crate::auth::Handshake), Error> {
        let mut stream = match (self.stream, self.tls) {
            (Stream::Tcp(tcp), Some(tls)) => tls.accept(tcp).await?,
            (stream, _) => stream,
        };
        let handshake = stream.handshake_server(key).await?;
        Ok((stream, handshake))
    }
}

impl Listener {
    /// Binds `address`, with TLS on its connections when `tls` is given. A Unix socket file
    /// left behind by a server that is gone is replaced; one that a live server answers on is
    /// an "address in use" error.
    pub(crate) async fn bind(
        address: &Address,
        tls: Option<Acceptor>,
    ) -> Result<(Listener, Address), Error> {
        match address {
            Address::Tcp(host_port) => {
                let listener = TcpListener::bind(host_port.as_str()).await.map_err(|e| {
                    Error::Io(io::Error::new(
                        e.kind(),
                        format!("cannot listen on {address}: {e}"),
                    ))
                })?;
                let bound = Address::from(listener.local_addr()?);
                Ok((Listener::Tcp(listener, tls), bound))
            }
            Address::Unix(_) if tls.is_some() => Err(Error::Tls(format!(
                "TLS is for TCP addresses, and {address} is a Unix socket"
            ))),
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

    /// Waits for the next client. Its TLS handshake, if any, runs later, in its own task.
    pub(crate) async fn accept(&self) -> io::Result<Accepted> {
        match self {
            Listener::Tcp(listener, tls) => {
                let (stream, _) = listener.accept().await?;
                stream.set_nodelay(true)?;
                Ok(Accepted {
                    stream: Stream::Tcp(stream),
                    tls: tls.clone(),
                })
            }
            Listener::Unix(listener, _) => Ok(Accepted {
                stream: Stream::Unix(listener.accept().await?.0),
                tls: None,
            }),
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
/// one write, until every sender is gone. `written` is told how many bytes each write took.
pub(crate) async fn write_frames<W>(
    mut writer: W,
    mut frames: mpsc::UnboundedReceiver<Bytes>,
    written: impl Fn(usize),
) where
    W: AsyncWrite + Unpin,
{
    const GATHER: usize = 64 * 1024;
    let mut batch = BytesMut::new();
    while let Some(first) = frames.recv().await {
        let result = if first.len() >= GATHER {
            let result = writer.write_all(&first).await;
            written(first.len());
            result
        } else {
            batch.extend_from_slice(&first);
            while batch.len() < GATHER {
                match frames.try_recv() {
                    Ok(next) if next.len() >= GATHER => {
                        if let Err(e) = writer.write_all(&batch).await {
                            tracing::debug!("write failed: {e}");
                            return;
                        }
                        written(batch.len());
                        batch.clear();
                        batch.extend_from_slice(&next);
                    }
                    Ok(next) => batch.extend_from_slice(&next),
                    Err(_) => break,
                }
            }
            let result = writer.write_all(&batch).await;
            written(batch.len());
            batch.clear();
            result
        };
        if let Err(e) = result {
            tracing::debug!("write failed: {e}");
            return;
        }
        // A TLS stream may keep back what the socket did not take yet: send it before waiting.
        if let Err(e) = writer.flush().await {
            tracing::debug!("flush failed: {e}");
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
            #[cfg(feature = "tls")]
            $crate::transport::Stream::TlsServer(s) => {
                let ($r, $w) = tokio::io::split(s);
                $body
            }
            #[cfg(feature = "tls")]
            $crate::transport::Stream::TlsClient(s) => {
                let ($r, $w) = tokio::io::split(s);
                $body
            }
        }
    };
}
pub(crate) use with_split;

impl Stream {
    /// A duplicate of the socket's descriptor when this is a plain TCP or Unix stream (not
    /// TLS), for writing and reading it directly; open as long as the duplicate lives, so that
    /// it cannot be closed and reused under its user.
    pub(crate) fn plain_socket(&self) -> io::Result<Option<std::os::fd::OwnedFd>> {
        use std::os::fd::AsFd;
        match self {
            Stream::Tcp(s) => s.as_fd().try_clone_to_owned().map(Some),
            Stream::Unix(s) => s.as_fd().try_clone_to_owned().map(Some),
            #[cfg(feature = "tls")]
            _ => Ok(None),
        }
    }
}

impl Stream {
    /// Whether the peer runs on this host (loopback TCP, or a Unix socket): a reset from it is
    /// its process closing its socket (or dying), never a network cutting a link.
    pub(crate) fn peer_is_local(&self) -> bool {
        let loopback = |s: &TcpStream| s.peer_addr().is_ok_and(|a| a.ip().is_loopback());
        match self {
            Stream::Tcp(s) => loopback(s),
            Stream::Unix(_) => true,
            #[cfg(feature = "tls")]
            Stream::TlsServer(s) => loopback(s.get_ref().0),
            #[cfg(feature = "tls")]
            Stream::TlsClient(_) => false,
        }
    }
}

/// Runs a handshake function on whichever kind of stream this is.
impl Stream {
    pub(crate) async fn handshake_server(
        &mut self,
        key: &crate::auth::AuthKey,
    ) -> Result<crate::auth::Handshake, Error> {
        match self {
            Stream::Tcp(s) => crate::auth::server_handshake_keys(s, key).await,
            Stream::Unix(s) => crate::auth::server_handshake_keys(s, key).await,
            #[cfg(feature = "tls")]
            Stream::TlsServer(s) => crate::auth::server_handshake_keys(s, key).await,
            #[cfg(feature = "tls")]
            Stream::TlsClient(s) => crate::auth::server_handshake_keys(s, key).await,
        }
    }

    /// Sends the welcome frame that follows a successful handshake.
    pub(crate) async fn send_welcome(
        &mut self,
        welcome: &crate::wire::Welcome,
    ) -> Result<(), Error> {
        self.send_message(welcome, "welcome").await
    }

    /// Sends one frame holding `message`, before the stream is split (a welcome, a resume and
    /// its answer).
    pub(crate) async fn send_message<T: serde::Serialize>(
        &mut self,
        message: &T,
        what: &str,
    ) -> Result<(), Error> {
        let mut buf = crate::wire::start_frame(64);
        crate::wire::put(&mut buf, message, what)?;
        let frame = crate::wire::finish(buf, crate::wire::DEFAULT_MAX_FRAME)?;
        match self {
            Stream::Tcp(s) => s.write_all(&frame).await?,
            Stream::Unix(s) => s.write_all(&frame).await?,
            #[cfg(feature = "tls")]
            Stream::TlsServer(s) => {
                s.write_all(&frame).await?;
                s.flush().await?
            }
            #[cfg(feature = "tls")]
            Stream::TlsClient(s) => {
                s.write_all(&frame).await?;
                s.flush().await?
            }
        }
        Ok(())
    }

    pub(crate) async fn handshake_client(
        &mut self,
        key: &crate::auth::AuthKey,
    ) -> Result<(crate::wire::Welcome, crate::auth::Handshake), Error> {
        async fn both<S: AsyncRead + AsyncWrite + Unpin>(
            s: &mut S,
            key: &crate::auth::AuthKey,
        ) -> Result<(crate::wire::Welcome, crate::auth::Handshake), Error> {
            let handshake = crate::auth::client_handshake_keys(s, key).await?;
            Ok((read_welcome(s).await?, handshake))
        }
        match self {
            Stream::Tcp(s) => both(s, key).await,
            Stream::Unix(s) => both(s, key).await,
            #[cfg(feature = "tls")]
            Stream::TlsServer(s) => both(s, key).await,
            #[cfg(feature = "tls")]
            Stream::TlsClient(s) => {
                let result = both(s, key).await;
                // A refusal at the TLS level (of our certificate, say) reads as a closed
                // connection to the authkey handshake: report the TLS failure.
                s.explain(result)
            }
        }
    }
}

/// Satisfied by both halves of both stream kinds.
pub(crate) trait ReadHalf: AsyncRead + Unpin + Send + 'static {}
impl<T: AsyncRead + Unpin + Send + 'static> ReadHalf for T {}

/// Reads one frame of at most `max` bytes, before the stream is split.
async fn read_message<S: AsyncRead + Unpin>(
    stream: &mut S,
    max: usize,
    what: &str,
) -> Result<Vec<u8>, Error> {
    use tokio::io::AsyncReadExt;
    let len = stream.read_u32().await? as usize;
    if len > max {
        return Err(Error::Protocol(format!(
            "{what} frame of {len} bytes is too large"
        )));
    }
    let mut body = vec![0u8; len];
    stream.read_exact(&mut body).await?;
    Ok(body)
}

/// The first frame of a connection as the server reads it before its read loop: the bytes
/// read (the read loop reads them first), and the frame when it is short enough to be read
/// whole.
#[derive(Debug, Default)]
pub(crate) struct FirstFrame {
    /// Every byte read, from the length prefix on.
    pub(crate) raw: Vec<u8>,
    /// The frame, when it was at most as long as asked.
    pub(crate) body: Option<Vec<u8>>,
    /// The client closed the connection before sending anything.
    pub(crate) ended: bool,
}

async fn read_first<S: AsyncRead + Unpin>(stream: &mut S, max: usize) -> io::Result<FirstFrame> {
    use tokio::io::AsyncReadExt;
    let mut prefix = [0u8; 4];
    if stream.read(&mut prefix[..1]).await? == 0 {
        return Ok(FirstFrame {
            ended: true,
            ..FirstFrame::default()
        });
    }
    stream.read_exact(&mut prefix[1..]).await?;
    let len = u32::from_be_bytes(prefix) as usize;
    let mut raw = prefix.to_vec();
    if len > max {
        return Ok(FirstFrame {
            raw,
            ..FirstFrame::default()
        });
    }
    let mut body = vec![0u8; len];
    stream.read_exact(&mut body).await?;
    raw.extend_from_slice(&body);
    Ok(FirstFrame {
        raw,
        body: Some(body),
        ended: false,
    })
}

impl Stream {
    /// Reads the length prefix of the first frame, and the frame when it is at most `max`
    /// bytes long (see [`FirstFrame`]).
    pub(crate) async fn read_first(&mut self, max: usize) -> io::Result<FirstFrame> {
        match self {
            Stream::Tcp(s) => read_first(s, max).await,
            Stream::Unix(s) => read_first(s, max).await,
            #[cfg(feature = "tls")]
            Stream::TlsServer(s) => read_first(s, max).await,
            #[cfg(feature = "tls")]
            Stream::TlsClient(s) => read_first(s, max).await,
        }
    }

    /// Reads one frame of at most `max` bytes, before the stream is split (the first frame of
    /// a connection, which may resume a session; the answer to it).
    pub(crate) async fn read_message(&mut self, max: usize, what: &str) -> Result<Vec<u8>, Error> {
        match self {
            Stream::Tcp(s) => read_message(s, max, what).await,
            Stream::Unix(s) => read_message(s, max, what).await,
            #[cfg(feature = "tls")]
            Stream::TlsServer(s) => read_message(s, max, what).await,
            #[cfg(feature = "tls")]
            Stream::TlsClient(s) => read_message(s, max, what).await,
        }
    }
}

/// Reads the server's welcome frame, which follows a successful handshake.
async fn read_welcome<S: AsyncRead + Unpin>(stream: &mut S) -> Result<crate::wire::Welcome, Error> {
    const MAX_WELCOME: usize = 64 * 1024;
    let body = read_message(stream, MAX_WELCOME, "welcome").await?;
    // The version first, so that a server of another version is told apart from a broken one
    // (the rest of its welcome may not decode).
    let (protocol, _) = crate::wire::take::<u32>(&body, "the welcome's protocol version")?;
    if protocol != crate::wire::PROTOCOL_VERSION {
        return Err(Error::Protocol(format!(
            "the server speaks protocol version {protocol}, this client {}",
            crate::wire::PROTOCOL_VERSION
        )));
    }
    let welcome: crate::wire::Welcome = crate::wire::decode_payload(&body, "welcome")?;
    if let Some(reason) = welcome.refused {
        return Err(Error::Remote(crate::error::RemoteError::new(
            crate::error::RemoteErrorKind::Limit,
            "",
            "connect",
            reason,
        )));
    }
    Ok(welcome)
}

impl Accepted {
    /// The stream as accepted, for a protocol that runs no TLS (CPython clients).
    #[cfg_attr(
        not(feature = "python"),
        allow(dead_code, reason = "used by CPython clients' connections")
    )]
    pub(crate) fn into_plain(self) -> Stream {
        self.stream
    }
}
