//! `multiprocessing.connection` over any tokio stream: framing and the authkey handshakes.
//!
//! # Framing
//!
//! Every message, handshake tokens and pickles alike, is one frame: a 4-byte big-endian
//! signed length then the payload; payloads longer than `i32::MAX` bytes use `-1` followed by
//! an 8-byte big-endian length (CPython 3.8+). [`read_frame`] checks the announced length
//! against a limit before it allocates anything, and grows its buffer only as bytes arrive.
//!
//! # Handshakes
//!
//! The side that accepted the connection (a manager server, a `Listener`) calls
//! [`deliver_challenge`] then [`answer_challenge`]; the side that dialled (a `Client`) does
//! the opposite. [`server_handshake`] and [`client_handshake`] run both in the right order.
//!
//! - We always send `#CHALLENGE#{sha256}` + 40 random bytes, as CPython 3.12+ does. A 3.12+
//!   peer answers `{sha256}` + HMAC-SHA256 (a `{sha384}` answer is accepted too); a peer of
//!   3.11 or older does not know the prefix and answers the raw 16-byte HMAC-MD5 of the whole
//!   message, which we accept, as CPython 3.12+ does.
//! - We answer a 20-byte challenge (CPython 3.11 and older) with the raw HMAC-MD5 they expect,
//!   and a `{sha256}`/`{sha384}` challenge with that digest.
//! - **MD5 is accepted only from a peer that speaks the old form**: the unprefixed 16-byte
//!   answer, or a 20-byte unprefixed challenge. A peer that uses the `{digest}` form and names
//!   `{md5}` is refused either way (CPython would accept it, but only a downgrade would send
//!   it: stock CPython never does). `{sha3_256}`/`{sha3_384}` are refused as unsupported
//!   (stock CPython never sends them either).
//! - Digests are checked in constant time (`Mac::verify_slice`). On a wrong digest the
//!   verifier sends `#FAILURE#` and fails with [`Error::Auth`]; the other side reads
//!   `#FAILURE#` and fails with [`Error::Auth`] too (CPython: `AuthenticationError('digest
//!   received was wrong')` / `('digest sent was rejected')`). Handshake frames are capped at
//!   256 bytes, as in CPython.

use hmac::{Hmac, Mac};
use md5::Md5;
use rand::RngCore;
use sha2::{Sha256, Sha384};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::auth::AuthKey;
use crate::error::Error;
use crate::wire::DEFAULT_MAX_FRAME;

use super::pickle::{self, DecodeOptions, EncodeOptions, PyValue};

/// The prefix of a challenge message.
pub const CHALLENGE: &[u8] = b"#CHALLENGE#";
/// The verifier's answer to a right digest.
pub const WELCOME: &[u8] = b"#WELCOME#";
/// The verifier's answer to a wrong digest.
pub const FAILURE: &[u8] = b"#FAILURE#";
/// The largest handshake frame read, as in CPython (`recv_bytes(256)`).
pub const HANDSHAKE_MAX_FRAME: usize = 256;
/// Random bytes in a challenge we send (CPython 3.12+: 40).
pub const MESSAGE_LENGTH: usize = 40;
/// The length of a challenge from CPython 3.11 and older, answered with raw HMAC-MD5.
pub const LEGACY_MESSAGE_LENGTH: usize = 20;
const MD5_LEN: usize = 16;
/// Payloads up to this size are written together with their header in one write (as CPython
/// does, against Nagle's algorithm).
pub(crate) const SMALL_WRITE: usize = 16 * 1024;

/// The digest one side of a handshake used to prove it holds the authkey.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Digest {
    /// The raw 16-byte HMAC-MD5 of CPython 3.11 and older.
    LegacyMd5,
    /// `{sha256}` + HMAC-SHA256 (CPython 3.12+).
    Sha256,
    /// `{sha384}` + HMAC-SHA384.
    Sha384,
}

impl Digest {
    fn name(self) -> &'static str {
        match self {
            Digest::LegacyMd5 => "md5",
            Digest::Sha256 => "sha256",
            Digest::Sha384 => "sha384",
        }
    }

    fn len(self) -> usize {
        match self {
            Digest::LegacyMd5 => 16,
            Digest::Sha256 => 32,
            Digest::Sha384 => 48,
        }
    }

    fn mac(self, key: &AuthKey, message: &[u8]) -> Vec<u8> {
        fn run<M: Mac + hmac::digest::KeyInit>(key: &[u8], message: &[u8]) -> Vec<u8> {
            let mut mac = <M as Mac>::new_from_slice(key).expect("HMAC accepts keys of any length");
            mac.update(message);
            mac.finalize().into_bytes().to_vec()
        }
        match self {
            Digest::LegacyMd5 => run::<Hmac<Md5>>(key.as_bytes(), message),
            Digest::Sha256 => run::<Hmac<Sha256>>(key.as_bytes(), message),
            Digest::Sha384 => run::<Hmac<Sha384>>(key.as_bytes(), message),
        }
    }

    /// Checks `mac` in constant time.
    fn verify(self, key: &AuthKey, message: &[u8], mac: &[u8]) -> bool {
        fn run<M: Mac + hmac::digest::KeyInit>(key: &[u8], message: &[u8], mac: &[u8]) -> bool {
            let mut m = <M as Mac>::new_from_slice(key).expect("HMAC accepts keys of any length");
            m.update(message);
            m.verify_slice(mac).is_ok()
        }
        match self {
            Digest::LegacyMd5 => run::<Hmac<Md5>>(key.as_bytes(), message, mac),
            Digest::Sha256 => run::<Hmac<Sha256>>(key.as_bytes(), message, mac),
            Digest::Sha384 => run::<Hmac<Sha384>>(key.as_bytes(), message, mac),
        }
    }
}

/// What a completed handshake used in each direction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HandshakeInfo {
    /// The digest the peer answered our challenge with.
    pub peer: Digest,
    /// The digest we answered the peer's challenge with.
    pub ours: Digest,
}

// ---------------------------------------------------------------------------------------------
// Framing
// ---------------------------------------------------------------------------------------------

/// Reads one frame of at most `max` bytes. Returns `None` on a clean end of stream before the
/// frame started; a stream that ends inside a frame, a negative length other than `-1`, or a
/// length above `max` (checked before reading the payload) is an error.
pub async fn read_frame<R>(reader: &mut R, max: usize) -> Result<Option<Vec<u8>>, Error>
where
    R: AsyncRead + Unpin,
{
    read_frame_with(reader, max, |_| {}).await
}

/// [`read_frame`], calling `on_header` with the payload's length once the header is read and
/// the length accepted, before the payload is read.
pub async fn read_frame_with<R>(
    reader: &mut R,
    max: usize,
    on_header: impl FnOnce(usize),
) -> Result<Option<Vec<u8>>, Error>
where
    R: AsyncRead + Unpin,
{
    let mut header = [0u8; 4];
    let mut got = 0;
    while got < header.len() {
        let n = reader.read(&mut header[got..]).await?;
        if n == 0 {
            if got == 0 {
                return Ok(None);
            }
            return Err(Error::ConnectionClosed(
                "the peer closed the connection inside a frame header".into(),
            ));
        }
        got += n;
    }
    let len = match short_length(header)? {
        Some(len) => len,
        None => {
            let mut long = [0u8; 8];
            reader
                .read_exact(&mut long)
                .await
                .map_err(|e| eof(e, "a frame header"))?;
            u64::from_be_bytes(long)
        }
    };
    let len = within_limit(len, max)?;
    on_header(len);
    let mut payload = Vec::with_capacity(len.min(64 * 1024));
    (&mut *reader)
        .take(len as u64)
        .read_to_end(&mut payload)
        .await?;
    if payload.len() < len {
        return Err(Error::ConnectionClosed(format!(
            "the peer closed the connection inside a frame ({} of {len} bytes received)",
            payload.len()
        )));
    }
    Ok(Some(payload))
}

pub(crate) fn eof(e: std::io::Error, what: &str) -> Error {
    if e.kind() == std::io::ErrorKind::UnexpectedEof {
        Error::ConnectionClosed(format!("the peer closed the connection inside {what}"))
    } else {
        Error::Io(e)
    }
}

/// The header CPython writes for a payload of `len` bytes: 4 bytes, or 12 (`-1` then the
/// 8-byte length) above `i32::MAX` or when `long` is set.
pub fn frame_header(len: usize, long: bool) -> Vec<u8> {
    if long || len > i32::MAX as usize {
        let mut header = (-1i32).to_be_bytes().to_vec();
        header.extend_from_slice(&(len as u64).to_be_bytes());
        header
    } else {
        (len as i32).to_be_bytes().to_vec()
    }
}

/// [`read_frame_with`] on a blocking reader (a socket served by a thread of its own).
pub fn read_frame_blocking<R>(
    reader: &mut R,
    max: usize,
    on_header: impl FnOnce(usize),
) -> Result<Option<Vec<u8>>, Error>
where
    R: std::io::Read,
{
    let mut header = [0u8; 4];
    let mut got = 0;
    while got < header.len() {
        let n = match reader.read(&mut header[got..]) {
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e.into()),
        };
        if n == 0 {
            if got == 0 {
                return Ok(None);
            }
            return Err(Error::ConnectionClosed(
                "the peer closed the connection inside a frame header".into(),
            ));
        }
        got += n;
    }
    let len = frame_length_blocking(reader, header, max)?;
    on_header(len);
    read_payload_blocking(reader, len).map(Some)
}

/// The payload length a frame's first 4 bytes announce (reading the 8 more of a long header),
/// checked against `max`.
pub(crate) fn frame_length_blocking<R: std::io::Read>(
    reader: &mut R,
    header: [u8; 4],
    max: usize,
) -> Result<usize, Error> {
    let len = match short_length(header)? {
        Some(len) => len,
        None => {
            let mut long = [0u8; 8];
            reader
                .read_exact(&mut long)
                .map_err(|e| eof(e, "a frame header"))?;
            u64::from_be_bytes(long)
        }
    };
    within_limit(len, max)
}

/// A payload of `len` bytes, its vector grown only as bytes arrive (the length is the peer's
/// word until then).
pub(crate) fn read_payload_blocking<R: std::io::Read>(
    reader: &mut R,
    len: usize,
) -> Result<Vec<u8>, Error> {
    use std::io::Read;
    let mut payload = Vec::with_capacity(len.min(64 * 1024));
    Read::take(&mut *reader, len as u64).read_to_end(&mut payload)?;
    if payload.len() < len {
        return Err(Error::ConnectionClosed(format!(
            "the peer closed the connection inside a frame ({} of {len} bytes received)",
            payload.len()
        )));
    }
    Ok(payload)
}

/// [`write_frame`] on a blocking writer: a small frame in one write, as CPython writes it.
pub fn write_frame_blocking<W>(writer: &mut W, payload: &[u8]) -> Result<(), Error>
where
    W: std::io::Write,
{
    let header = frame_header(payload.len(), false);
    if payload.len() <= SMALL_WRITE {
        let mut frame = Vec::with_capacity(header.len() + payload.len());
        frame.extend_from_slice(&header);
        frame.extend_from_slice(payload);
        writer.write_all(&frame)?;
    } else {
        writer.write_all(&header)?;
        writer.write_all(payload)?;
    }
    writer.flush()?;
    Ok(())
}

/// Writes one frame and flushes.
pub async fn write_frame<W>(writer: &mut W, payload: &[u8]) -> Result<(), Error>
where
    W: AsyncWrite + Unpin,
{
    write_frame_with(writer, payload, false).await
}

/// Writes one frame with the 12-byte header whatever its size. CPython 3.8+ reads it; 3.7 and
/// older do not. Meant for tests of peers' readers.
pub async fn write_frame_long<W>(writer: &mut W, payload: &[u8]) -> Result<(), Error>
where
    W: AsyncWrite + Unpin,
{
    write_frame_with(writer, payload, true).await
}

async fn write_frame_with<W>(writer: &mut W, payload: &[u8], long: bool) -> Result<(), Error>
where
    W: AsyncWrite + Unpin,
{
    let header = frame_header(payload.len(), long);
    if payload.len() <= SMALL_WRITE {
        let mut frame = Vec::with_capacity(header.len() + payload.len());
        frame.extend_from_slice(&header);
        frame.extend_from_slice(payload);
        writer.write_all(&frame).await?;
    } else {
        writer.write_all(&header).await?;
        writer.write_all(payload).await?;
    }
    writer.flush().await?;
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Handshakes
// ---------------------------------------------------------------------------------------------

async fn read_handshake_frame<S>(stream: &mut S, step: &str) -> Result<Vec<u8>, Error>
where
    S: AsyncRead + Unpin,
{
    match read_frame(stream, HANDSHAKE_MAX_FRAME).await {
        Ok(Some(frame)) => Ok(frame),
        Ok(None) | Err(Error::ConnectionClosed(_)) => Err(Error::Auth(format!(
            "the peer closed the connection during the handshake (waiting for {step})"
        ))),
        Err(Error::Protocol(message)) => Err(Error::Auth(format!(
            "bad handshake frame (waiting for {step}): {message}"
        ))),
        Err(e) => Err(e),
    }
}

/// The digest a `{name}`-prefixed message names, and the bytes after the prefix.
fn prefixed(message: &[u8]) -> Result<(Digest, &[u8]), Error> {
    let name_end = if message.first() == Some(&b'{') {
        message
            .iter()
            .take(len_of_longest_name() + 2)
            .position(|&b| b == b'}')
    } else {
        None
    };
    let Some(end) = name_end.filter(|&end| end > 1) else {
        return Err(Error::Auth(
            "unsupported message length or missing {digest} prefix".into(),
        ));
    };
    let digest = match &message[1..end] {
        b"sha256" => Digest::Sha256,
        b"sha384" => Digest::Sha384,
        b"md5" => {
            return Err(Error::Auth(
                "the peer uses the {digest} form but names {md5}: MD5 is accepted only as the \
                 raw answer of a peer that speaks the pre-3.12 form"
                    .into(),
            ))
        }
        other => {
            return Err(Error::Auth(format!(
                "unsupported digest {{{}}}",
                String::from_utf8_lossy(other)
            )))
        }
    };
    Ok((digest, &message[end + 1..]))
}

fn len_of_longest_name() -> usize {
    "sha3_384".len()
}

/// Checks the peer's answer to `message`.
fn check_answer(key: &AuthKey, message: &[u8], answer: &[u8]) -> Result<Digest, Error> {
    let (digest, mac) = if answer.len() == MD5_LEN {
        (Digest::LegacyMd5, answer)
    } else {
        prefixed(answer)?
    };
    let expected = digest.len();
    if mac.len() != expected {
        return Err(Error::Auth(format!(
            "expected a {} digest of {expected} bytes, got {}",
            digest.name(),
            mac.len()
        )));
    }
    if digest.verify(key, message, mac) {
        Ok(digest)
    } else {
        Err(Error::Auth(
            "the peer's digest does not match our authkey (digest received was wrong)".into(),
        ))
    }
}

/// Sends a `{sha256}` challenge and checks the answer (the first half of a server's
/// handshake). Answers `#WELCOME#` and returns the digest the peer used, or answers
/// `#FAILURE#` and fails with [`Error::Auth`].
pub async fn deliver_challenge<S>(stream: &mut S, key: &AuthKey) -> Result<Digest, Error>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut message = b"{sha256}".to_vec();
    let mut random = [0u8; MESSAGE_LENGTH];
    rand::thread_rng().fill_bytes(&mut random);
    message.extend_from_slice(&random);
    let mut frame = CHALLENGE.to_vec();
    frame.extend_from_slice(&message);
    write_frame(stream, &frame).await?;

    let answer = read_handshake_frame(stream, "the answer to our challenge").await?;
    match check_answer(key, &message, &answer) {
        Ok(digest) => {
            write_frame(stream, WELCOME).await?;
            Ok(digest)
        }
        Err(e) => {
            // Tell the peer, as CPython does; it may already be gone.
            let _ = write_frame(stream, FAILURE).await;
            Err(e)
        }
    }
}

/// Answers the peer's challenge (the first half of a client's handshake) and reads its
/// verdict. Returns the digest we answered with; [`Error::Auth`] when the peer answers
/// `#FAILURE#` (a different authkey) or the challenge cannot be answered.
pub async fn answer_challenge<S>(stream: &mut S, key: &AuthKey) -> Result<Digest, Error>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let frame = read_handshake_frame(stream, "a challenge").await?;
    let Some(message) = frame.strip_prefix(CHALLENGE) else {
        return Err(Error::Auth(
            "protocol error: the peer did not send #CHALLENGE#".into(),
        ));
    };
    if message.len() < LEGACY_MESSAGE_LENGTH {
        return Err(Error::Auth(format!(
            "challenge too short: {} bytes",
            message.len()
        )));
    }
    let (digest, answer) = if message.len() == LEGACY_MESSAGE_LENGTH {
        (Digest::LegacyMd5, Digest::LegacyMd5.mac(key, message))
    } else {
        let (digest, _) = prefixed(message)?;
        let mut answer = format!("{{{}}}", digest.name()).into_bytes();
        answer.extend_from_slice(&digest.mac(key, message));
        (digest, answer)
    };
    write_frame(stream, &answer).await?;
    let verdict = read_handshake_frame(stream, "#WELCOME#").await?;
    if verdict == WELCOME {
        Ok(digest)
    } else if verdict == FAILURE {
        Err(Error::Auth(
            "the peer rejected our digest (digest sent was rejected): the authkeys differ".into(),
        ))
    } else {
        Err(Error::Auth(
            "protocol error: the peer answered neither #WELCOME# nor #FAILURE#".into(),
        ))
    }
}

/// The handshake of the accepting side (a manager server): [`deliver_challenge`] then
/// [`answer_challenge`].
pub async fn server_handshake<S>(stream: &mut S, key: &AuthKey) -> Result<HandshakeInfo, Error>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let peer = deliver_challenge(stream, key).await?;
    let ours = answer_challenge(stream, key).await?;
    Ok(HandshakeInfo { peer, ours })
}

/// The handshake of the dialling side (a client): [`answer_challenge`] then
/// [`deliver_challenge`].
pub async fn client_handshake<S>(stream: &mut S, key: &AuthKey) -> Result<HandshakeInfo, Error>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let ours = answer_challenge(stream, key).await?;
    let peer = deliver_challenge(stream, key).await?;
    Ok(HandshakeInfo { peer, ours })
}

// ---------------------------------------------------------------------------------------------
// A connection
// ---------------------------------------------------------------------------------------------

/// A `multiprocessing.connection.Connection` over a tokio stream: frames, the handshakes, and
/// pickled messages through [`pickle`].
#[derive(Debug)]
pub struct PyConnection<S> {
    stream: S,
    max_frame: usize,
    decode: DecodeOptions,
    encode: EncodeOptions,
}

impl<S> PyConnection<S>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    /// Wraps a connected stream. Frames are limited to
    /// [`DEFAULT_MAX_FRAME`] bytes.
    pub fn new(stream: S) -> Self {
        PyConnection {
            stream,
            max_frame: DEFAULT_MAX_FRAME,
            decode: DecodeOptions::default(),
            encode: EncodeOptions::default(),
        }
    }

    /// Sets the largest frame accepted.
    pub fn with_max_frame(mut self, max_frame: usize) -> Self {
        self.max_frame = max_frame;
        self
    }

    /// Sets how received pickles are decoded.
    pub fn with_decode_options(mut self, options: DecodeOptions) -> Self {
        self.decode = options;
        self
    }

    /// Sets how sent values are encoded.
    pub fn with_encode_options(mut self, options: EncodeOptions) -> Self {
        self.encode = options;
        self
    }

    /// Runs [`server_handshake`] on the stream.
    pub async fn server_handshake(&mut self, key: &AuthKey) -> Result<HandshakeInfo, Error> {
        server_handshake(&mut self.stream, key).await
    }

    /// Runs [`client_handshake`] on the stream.
    pub async fn client_handshake(&mut self, key: &AuthKey) -> Result<HandshakeInfo, Error> {
        client_handshake(&mut self.stream, key).await
    }

    /// Sends one frame (`Connection.send_bytes`).
    pub async fn send_bytes(&mut self, payload: &[u8]) -> Result<(), Error> {
        write_frame(&mut self.stream, payload).await
    }

    /// Receives one frame (`Connection.recv_bytes`); `None` when the peer closed the
    /// connection between frames.
    pub async fn recv_bytes(&mut self) -> Result<Option<Vec<u8>>, Error> {
        read_frame(&mut self.stream, self.max_frame).await
    }

    /// [`recv_bytes`](Self::recv_bytes), calling `on_header` with the frame's length before
    /// its payload is read.
    pub async fn recv_bytes_with(
        &mut self,
        on_header: impl FnOnce(usize),
    ) -> Result<Option<Vec<u8>>, Error> {
        read_frame_with(&mut self.stream, self.max_frame, on_header).await
    }

    /// Pickles a value and sends it (`Connection.send`).
    pub async fn send(&mut self, value: &PyValue) -> Result<(), Error> {
        let payload = pickle::encode_with(value, &self.encode)
            .map_err(|e| Error::encode("a pickled message", e))?;
        self.send_bytes(&payload).await
    }

    /// Receives and unpickles one value (`Connection.recv`); `None` when the peer closed the
    /// connection between messages.
    pub async fn recv(&mut self) -> Result<Option<PyValue>, Error> {
        match self.recv_bytes().await? {
            Some(frame) => pickle::decode_with(&frame, &self.decode)
                .map(Some)
                .map_err(|e| Error::decode("a pickled message", e)),
            None => Ok(None),
        }
    }

    /// The stream.
    pub fn get_ref(&self) -> &S {
        &self.stream
    }

    /// The stream, mutably (to set socket options, for instance).
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.stream
    }

    /// Unwraps the stream.
    pub fn into_inner(self) -> S {
        self.stream
    }
}

/// The length a frame's 4-byte header gives; `None` when it is -1, for an 8-byte length that
/// follows (frames of 2 GiB and more).
fn short_length(header: [u8; 4]) -> Result<Option<u64>, Error> {
    match i32::from_be_bytes(header) {
        -1 => Ok(None),
        n if n < 0 => Err(Error::Protocol(format!("negative frame length {n}"))),
        n => Ok(Some(n as u64)),
    }
}

/// `len` as a frame length, if it is within `max`.
fn within_limit(len: u64, max: usize) -> Result<usize, Error> {
    if len > max as u64 {
        return Err(Error::Protocol(format!(
            "frame of {len} bytes exceeds the limit of {max} bytes"
        )));
    }
    Ok(len as usize)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::python::pickle::{PyException, PyValue};
    use std::time::Duration;
    use tokio::io::{duplex, DuplexStream};

    /// The authkey of the research captures.
    fn capture_key() -> AuthKey {
        AuthKey::from("capture-secret")
    }

    fn h(text: &str) -> Vec<u8> {
        hex::decode(text).unwrap()
    }

    /// Runs `f` with a bound on its time, so that a bug shows as a failure, not a hang.
    async fn bounded<T>(f: impl std::future::Future<Output = T>) -> T {
        tokio::time::timeout(Duration::from_secs(30), f)
            .await
            .expect("the test did not finish")
    }

    #[tokio::test]
    async fn frames_of_every_size_and_both_headers() {
        let (mut a, mut b) = duplex(1 << 16);
        let writer = tokio::spawn(async move {
            write_frame(&mut a, b"").await.unwrap();
            write_frame(&mut a, b"hello").await.unwrap();
            write_frame(&mut a, &vec![7u8; SMALL_WRITE + 1])
                .await
                .unwrap();
            write_frame_long(&mut a, b"long header").await.unwrap();
            a
        });
        bounded(async {
            assert_eq!(read_frame(&mut b, 1 << 20).await.unwrap().unwrap(), b"");
            assert_eq!(
                read_frame(&mut b, 1 << 20).await.unwrap().unwrap(),
                b"hello"
            );
            assert_eq!(
                read_frame(&mut b, 1 << 20).await.unwrap().unwrap(),
                vec![7u8; SMALL_WRITE + 1]
            );
            assert_eq!(
                read_frame(&mut b, 1 << 20).await.unwrap().unwrap(),
                b"long header"
            );
            drop(writer.await.unwrap());
            // The peer closed between frames.
            assert!(read_frame(&mut b, 1 << 20).await.unwrap().is_none());
        })
        .await;
        assert_eq!(frame_header(5, false), [0, 0, 0, 5]);
        assert_eq!(
            frame_header(5, true),
            [0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0, 0, 0, 0, 5]
        );
        assert_eq!(frame_header(1 << 31, false).len(), 12);
    }

    /// Reads one frame from a stream whose peer wrote `bytes` and keeps the stream open.
    async fn read_from(bytes: &[u8], max: usize) -> (Result<Option<Vec<u8>>, Error>, DuplexStream) {
        let (mut a, mut b) = duplex(1 << 16);
        a.write_all(bytes).await.unwrap();
        (bounded(read_frame(&mut b, max)).await, a)
    }

    #[tokio::test]
    async fn bad_frames_are_refused_before_reading_their_payload() {
        // Longer than the limit: refused from the header alone (the payload never comes).
        let (result, _keep) = read_from(&[0, 0, 1, 0], 255).await;
        assert!(matches!(result, Err(Error::Protocol(_))), "{result:?}");
        // A 12-byte header announcing 2**60 bytes.
        let mut huge = vec![0xff; 4];
        huge.extend_from_slice(&(1u64 << 60).to_be_bytes());
        let (result, _keep) = read_from(&huge, DEFAULT_MAX_FRAME).await;
        let message = result.unwrap_err().to_string();
        assert!(message.contains("exceeds the limit"), "{message}");
        // Negative lengths other than -1.
        let (result, _keep) = read_from(&(-2i32).to_be_bytes(), 255).await;
        assert!(matches!(result, Err(Error::Protocol(_))), "{result:?}");

        // The stream ends inside a header, or inside a payload.
        for bytes in [&[0u8, 0][..], &[0, 0, 0, 9, 1, 2, 3][..], &[0xff; 6][..]] {
            let (mut a, mut b) = duplex(64);
            a.write_all(bytes).await.unwrap();
            drop(a);
            let result = bounded(read_frame(&mut b, 255)).await;
            assert!(
                matches!(result, Err(Error::ConnectionClosed(_))),
                "{bytes:?}: {result:?}"
            );
        }
    }

    /// Plays the peer's side of a handshake from captured bytes: sends `send` frames in turn and
    /// checks that what we answer equals `expect`.
    async fn scripted_peer(mut stream: DuplexStream, script: Vec<(bool, Vec<u8>)>) {
        for (ours, bytes) in script {
            if ours {
                write_frame(&mut stream, &bytes).await.unwrap();
            } else {
                let got = read_frame(&mut stream, 256).await.unwrap().unwrap();
                assert_eq!(hex::encode(got), hex::encode(bytes));
            }
        }
    }

    #[tokio::test]
    async fn answers_captured_challenges_like_cpython() {
        let cases = [
            // 3.11 server (20-byte challenge) -> raw HMAC-MD5, as the 3.11 client answered.
            (
                "234348414c4c454e47452373e08f93f4bb50f06005d7b04dbb2360f6f21b73",
                "3d4eddae10c4eb3d3921f7758de5e950",
                Digest::LegacyMd5,
            ),
            // 3.13 server ({sha256} challenge) -> {sha256} digest, as the 3.13 client answered.
            (
                "234348414c4c454e4745237b7368613235367df4212e6862e24a61c1eda5761b6192c715ad4ff6e2b950cd060bf7ce071f536080c2ab1255124727",
                "7b7368613235367dfa7e752275ed97faf0902e1f97530bcbd631f2e3a2a23b3b2ddecc46f1824e21",
                Digest::Sha256,
            ),
            // The 3.11 client's challenge to a 3.13 server, and that server's answer.
            (
                "234348414c4c454e47452395488c1c9c3273d758478f5ce0b08c1a4d7379fd",
                "f36821846160a83b8f53b8f00057ba27",
                Digest::LegacyMd5,
            ),
        ];
        for (challenge, answer, digest) in cases {
            let (mut ours, theirs) = duplex(1024);
            let peer = tokio::spawn(scripted_peer(
                theirs,
                vec![
                    (true, h(challenge)),
                    (false, h(answer)),
                    (true, WELCOME.to_vec()),
                ],
            ));
            let used = bounded(answer_challenge(&mut ours, &capture_key()))
                .await
                .unwrap();
            assert_eq!(used, digest);
            peer.await.unwrap();
        }
    }

    #[test]
    fn checks_captured_answers_like_cpython() {
        let strip = |frame: &str| h(frame)[CHALLENGE.len()..].to_vec();
        // A 3.11 client's raw MD5 answer to a 3.13 server's {sha256} challenge: accepted.
        let message = strip("234348414c4c454e4745237b7368613235367d2935c8d66f48a3a49b597dbde6d6a207362eede7cd5bc49de71f452405073612895929709c34c6df");
        let md5 = h("59e371b10e9516fd67c86a31965e2839");
        assert_eq!(
            check_answer(&capture_key(), &message, &md5).unwrap(),
            Digest::LegacyMd5
        );
        // A 3.13 server's {sha256} answer to a 3.13 client.
        let message = strip("234348414c4c454e4745237b7368613235367d2b2a9872429b6e698636965f3d2408d4359cef7d24dbf2ce924c90aba2a7987dff4f7e3fa6023bf8");
        let sha =
            h("7b7368613235367da9970d4a024a710182502f8a1c602eb2f798ea3f5bcc8a5da23493f42124afe9");
        assert_eq!(
            check_answer(&capture_key(), &message, &sha).unwrap(),
            Digest::Sha256
        );
        // Wrong key, wrong lengths, a flipped bit.
        let wrong = AuthKey::from("wrong");
        assert!(matches!(
            check_answer(&wrong, &message, &sha),
            Err(Error::Auth(_))
        ));
        assert!(check_answer(&wrong, &message, &md5).is_err());
        let mut flipped = sha.clone();
        flipped[20] ^= 1;
        assert!(check_answer(&capture_key(), &message, &flipped).is_err());
        assert!(check_answer(&capture_key(), &message, &sha[..30]).is_err());
        assert!(check_answer(&capture_key(), &message, &[0; 20]).is_err());
        // {md5} from a peer that speaks the {digest} form is a downgrade: refused even when
        // the MAC is right.
        let mut md5_prefixed = b"{md5}".to_vec();
        md5_prefixed.extend_from_slice(&Digest::LegacyMd5.mac(&capture_key(), &message));
        let e = check_answer(&capture_key(), &message, &md5_prefixed).unwrap_err();
        assert!(e.to_string().contains("MD5 is accepted only"), "{e}");
        // {sha384} is accepted; {sha3_256} and made-up names are not.
        let mut sha384 = b"{sha384}".to_vec();
        sha384.extend_from_slice(&Digest::Sha384.mac(&capture_key(), &message));
        assert_eq!(
            check_answer(&capture_key(), &message, &sha384).unwrap(),
            Digest::Sha384
        );
        for bad in [
            &b"{sha3_256}0123456789012345678901234567890123"[..],
            b"{nope}01234567890123456789",
            b"{sha256",
        ] {
            assert!(check_answer(&capture_key(), &message, bad).is_err());
        }
    }

    #[tokio::test]
    async fn refuses_bad_challenges() {
        let mut md5_challenge = CHALLENGE.to_vec();
        md5_challenge.extend_from_slice(b"{md5}");
        md5_challenge.extend_from_slice(&[1; 40]);
        let mut short = CHALLENGE.to_vec();
        short.extend_from_slice(&[1; 19]);
        for frame in [md5_challenge, short, b"#HELLO#".to_vec(), vec![0; 300]] {
            let (mut ours, mut theirs) = duplex(1024);
            write_frame(&mut theirs, &frame).await.unwrap();
            let result = bounded(answer_challenge(&mut ours, &capture_key())).await;
            assert!(matches!(result, Err(Error::Auth(_))), "{result:?}");
        }
        // The peer hangs up instead of challenging us.
        let (mut ours, theirs) = duplex(1024);
        drop(theirs);
        let result = bounded(client_handshake(&mut ours, &capture_key())).await;
        assert!(matches!(result, Err(Error::Auth(_))), "{result:?}");
    }

    #[tokio::test]
    async fn rust_to_rust_handshakes() {
        let (a, b) = duplex(1024);
        let key = AuthKey::from("k");
        let server = tokio::spawn({
            let key = key.clone();
            async move { PyConnection::new(a).server_handshake(&key).await }
        });
        let client = bounded(PyConnection::new(b).client_handshake(&key))
            .await
            .unwrap();
        let server = server.await.unwrap().unwrap();
        assert_eq!(
            client,
            HandshakeInfo {
                peer: Digest::Sha256,
                ours: Digest::Sha256
            }
        );
        assert_eq!(server, client);

        // A wrong key fails on both sides, with #FAILURE# sent to the client.
        let (a, b) = duplex(1024);
        let server = tokio::spawn(async move {
            PyConnection::new(a)
                .server_handshake(&AuthKey::from("right"))
                .await
        });
        let client = bounded(PyConnection::new(b).client_handshake(&AuthKey::from("wrong"))).await;
        let client = client.unwrap_err().to_string();
        assert!(client.contains("digest sent was rejected"), "{client}");
        let server = server.await.unwrap().unwrap_err().to_string();
        assert!(server.contains("digest received was wrong"), "{server}");
    }

    #[tokio::test]
    async fn pickled_messages_both_ways() {
        let (a, b) = duplex(1 << 16);
        let mut a = PyConnection::new(a);
        let mut b = PyConnection::new(b).with_max_frame(1024);
        let request = PyValue::Tuple(vec![
            PyValue::None,
            PyValue::str("create"),
            PyValue::Tuple(vec![PyValue::str("dict")]),
            PyValue::Dict(vec![(PyValue::str("a"), PyValue::Int(1))]),
        ]);
        let error = PyValue::Tuple(vec![
            PyValue::str("#ERROR"),
            PyException::builtin("KeyError", vec![PyValue::str("zz")]).into(),
        ]);
        bounded(async {
            a.send(&request).await.unwrap();
            a.send(&error).await.unwrap();
            assert_eq!(b.recv().await.unwrap().unwrap(), request);
            assert_eq!(b.recv().await.unwrap().unwrap(), error);
            // Not a pickle; then a message above the limit.
            a.send_bytes(b"not a pickle").await.unwrap();
            let e = b.recv().await.unwrap_err();
            assert!(matches!(e, Error::Decode { .. }), "{e}");
            a.send(&PyValue::Bytes(vec![0; 2048])).await.unwrap();
            assert!(matches!(b.recv().await, Err(Error::Protocol(_))));
        })
        .await;
        // After a refused frame the stream is out of step: callers close it. On a fresh one,
        // a peer that is gone means no more messages.
        let (a, b) = duplex(64);
        drop(a);
        let mut b = PyConnection::new(b);
        assert!(bounded(b.recv()).await.unwrap().is_none());
    }
}
