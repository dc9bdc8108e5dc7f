//! The authkey and the handshake that proves, in both directions, that each side holds it.
//!
//! Before any request is read, the server sends a magic string and a fresh 32-byte nonce; the
//! client answers with `HMAC-SHA256(key, "manager-client" | server nonce | client nonce)` and its
//! own nonce; the server checks it in constant time and answers with a status byte and
//! `HMAC-SHA256(key, "manager-server" | client nonce | server nonce)`, which the client checks.
//! Every message has a fixed size, so nothing from an unauthenticated peer decides an allocation.

use std::fmt;
use std::sync::Arc;

use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::Sha256;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::error::Error;

/// The first bytes a manager server sends; a client that reads anything else is not talking to
/// a manager server of this protocol.
pub const MAGIC: &[u8; 8] = b"MGRAUTH1";
/// What a server that requires TLS sends, in place of [`MAGIC`], to a client that connected
/// without TLS (padded to the length of a greeting) before it closes the connection.
pub const TLS_REQUIRED: &[u8; 8] = b"MGRTLS!1";
const NONCE: usize = 32;
/// The length of the server's greeting: the magic string and the nonce.
pub(crate) const GREETING_LEN: usize = 8 + NONCE;
const MAC: usize = 32;
const STATUS_OK: u8 = 0;
const STATUS_REFUSED: u8 = 1;

/// A shared secret that clients must prove they hold before a server reads their requests.
///
/// Its `Debug` form never shows the key.
#[derive(Clone, PartialEq, Eq)]
pub struct AuthKey(Arc<[u8]>);

impl AuthKey {
    /// An authkey made of these bytes.
    pub fn new(bytes: impl AsRef<[u8]>) -> Self {
        AuthKey(Arc::from(bytes.as_ref()))
    }

    /// A fresh random 32-byte authkey.
    pub fn random() -> Self {
        let mut bytes = [0u8; 32];
        rand::thread_rng().fill_bytes(&mut bytes);
        AuthKey::new(bytes)
    }

    /// The key's bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    fn mac(&self, label: &[u8], first: &[u8], second: &[u8]) -> Hmac<Sha256> {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.0)
            .expect("HMAC accepts keys of any length");
        mac.update(label);
        mac.update(first);
        mac.update(second);
        mac
    }
}

impl fmt::Debug for AuthKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AuthKey(<redacted>)")
    }
}

impl From<&str> for AuthKey {
    fn from(text: &str) -> Self {
        AuthKey::new(text.as_bytes())
    }
}

impl From<&[u8]> for AuthKey {
    fn from(bytes: &[u8]) -> Self {
        AuthKey::new(bytes)
    }
}

impl From<Vec<u8>> for AuthKey {
    fn from(bytes: Vec<u8>) -> Self {
        AuthKey(Arc::from(bytes))
    }
}

fn nonce() -> [u8; NONCE] {
    let mut bytes = [0u8; NONCE];
    rand::thread_rng().fill_bytes(&mut bytes);
    bytes
}

/// What one handshake leaves both sides with: its two nonces, and the key, from which the
/// session of a connection is made (see [`Handshake::session`]) and a resume is proven.
#[derive(Clone)]
pub(crate) struct Handshake {
    key: AuthKey,
    server_nonce: [u8; NONCE],
    client_nonce: [u8; NONCE],
}

/// The session a connection starts: its id, and the secret that proves a later connection
/// resumes it. Both sides derive them from the authkey and the handshake's nonces, so neither
/// ever crosses the wire.
#[derive(Clone)]
pub(crate) struct SessionKeys {
    pub(crate) id: u64,
    secret: [u8; MAC],
}

impl fmt::Debug for SessionKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SessionKeys")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

impl Handshake {
    /// The session this handshake starts (when the connection does not resume another).
    pub(crate) fn session(&self) -> SessionKeys {
        let id_mac = self
            .key
            .mac(
                b"manager-session-id",
                &self.client_nonce,
                &self.server_nonce,
            )
            .finalize()
            .into_bytes();
        let secret = self
            .key
            .mac(
                b"manager-session-secret",
                &self.client_nonce,
                &self.server_nonce,
            )
            .finalize()
            .into_bytes();
        let mut id = [0u8; 8];
        id.copy_from_slice(&id_mac[..8]);
        SessionKeys {
            id: u64::from_le_bytes(id),
            secret: secret.into(),
        }
    }

    /// The proof that this connection resumes `session`: an HMAC, under the session's secret,
    /// of its id and of this handshake's nonces (so that a proof seen once cannot be replayed
    /// on another connection).
    pub(crate) fn resume_proof(&self, session: &SessionKeys) -> [u8; MAC] {
        self.resume_mac(session).finalize().into_bytes().into()
    }

    /// Whether `proof` proves, on this connection, the holding of `session`'s secret.
    pub(crate) fn verify_resume(&self, session: &SessionKeys, proof: &[u8; MAC]) -> bool {
        self.resume_mac(session).verify_slice(proof).is_ok()
    }

    fn resume_mac(&self, session: &SessionKeys) -> Hmac<Sha256> {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&session.secret)
            .expect("HMAC accepts keys of any length");
        mac.update(b"manager-resume");
        mac.update(&session.id.to_le_bytes());
        mac.update(&self.client_nonce);
        mac.update(&self.server_nonce);
        mac
    }
}

/// Runs the server side of the handshake. On a wrong key the client is told so, and
/// [`Error::Auth`] is returned.
pub async fn server_handshake<S>(stream: &mut S, key: &AuthKey) -> Result<(), Error>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    server_handshake_keys(stream, key).await.map(drop)
}

/// [`server_handshake`], giving back the handshake's nonces.
pub(crate) async fn server_handshake_keys<S>(
    stream: &mut S,
    key: &AuthKey,
) -> Result<Handshake, Error>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let server_nonce = nonce();
    let mut hello = [0u8; GREETING_LEN];
    hello[..8].copy_from_slice(MAGIC);
    hello[8..].copy_from_slice(&server_nonce);
    stream.write_all(&hello).await?;

    let mut answer = [0u8; MAC + NONCE];
    stream.read_exact(&mut answer).await?;
    let (client_mac, client_nonce) = answer.split_at(MAC);
    let verified = key
        .mac(b"manager-client", &server_nonce, client_nonce)
        .verify_slice(client_mac)
        .is_ok();
    // A TLS handshake record (a ClientHello) instead of a digest. Checked only once the digest
    // failed: one valid digest in 65,536 starts with these two bytes too.
    if !verified && answer.starts_with(&[0x16, 0x03]) {
        return Err(Error::Tls(
            "a client began a TLS handshake, and this server has no TLS configured".into(),
        ));
    }

    let mut reply = [0u8; 1 + MAC];
    if !verified {
        reply[0] = STATUS_REFUSED;
        stream.write_all(&reply).await?;
        return Err(Error::Auth(
            "the client's digest does not match this server's authkey".into(),
        ));
    }
    reply[0] = STATUS_OK;
    let proof = key
        .mac(b"manager-server", client_nonce, &server_nonce)
        .finalize()
        .into_bytes();
    reply[1..].copy_from_slice(&proof);
    stream.write_all(&reply).await?;
    let mut client = [0u8; NONCE];
    client.copy_from_slice(client_nonce);
    Ok(Handshake {
        key: key.clone(),
        server_nonce,
        client_nonce: client,
    })
}

/// Runs the client side of the handshake: proves the key to the server and checks the server's
/// proof in turn.
pub async fn client_handshake<S>(stream: &mut S, key: &AuthKey) -> Result<(), Error>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    client_handshake_keys(stream, key).await.map(drop)
}

/// [`client_handshake`], giving back the handshake's nonces.
pub(crate) async fn client_handshake_keys<S>(
    stream: &mut S,
    key: &AuthKey,
) -> Result<Handshake, Error>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut hello = [0u8; GREETING_LEN];
    stream.read_exact(&mut hello).await.map_err(|e| {
        Error::Auth(format!(
            "the server closed the connection during the handshake: {e}"
        ))
    })?;
    if &hello[..8] == TLS_REQUIRED {
        return Err(Error::Tls(
            "the server requires TLS, and this client connected without it: give the client a \
             TlsClientConfig (BaseManager::tls, or ConnectOptions::tls)"
                .into(),
        ));
    }
    if &hello[..8] != MAGIC {
        return Err(Error::Protocol(
            "the peer is not a manager server (unexpected greeting)".into(),
        ));
    }
    let server_nonce = &hello[8..];
    let client_nonce = nonce();
    let digest = key
        .mac(b"manager-client", server_nonce, &client_nonce)
        .finalize()
        .into_bytes();
    let mut answer = [0u8; MAC + NONCE];
    answer[..MAC].copy_from_slice(&digest);
    answer[MAC..].copy_from_slice(&client_nonce);
    stream.write_all(&answer).await?;

    let mut reply = [0u8; 1 + MAC];
    stream.read_exact(&mut reply).await.map_err(|e| {
        Error::Auth(format!(
            "the server closed the connection during the handshake: {e}"
        ))
    })?;
    if reply[0] == STATUS_REFUSED {
        return Err(Error::Auth(
            "the server refused our authkey (digest mismatch)".into(),
        ));
    }
    if reply[0] != STATUS_OK {
        return Err(Error::Protocol(format!(
            "unexpected handshake status byte {}",
            reply[0]
        )));
    }
    key.mac(b"manager-server", &client_nonce, server_nonce)
        .verify_slice(&reply[1..])
        .map_err(|_| Error::Auth("the server could not prove it holds the authkey".into()))?;
    let mut server = [0u8; NONCE];
    server.copy_from_slice(server_nonce);
    Ok(Handshake {
        key: key.clone(),
        server_nonce: server,
        client_nonce,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn same_key_passes_both_ways() {
        let (mut a, mut b) = tokio::io::duplex(256);
        let key = AuthKey::from("secret");
        let server = tokio::spawn({
            let key = key.clone();
            async move { server_handshake(&mut a, &key).await }
        });
        client_handshake(&mut b, &key).await.unwrap();
        server.await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn wrong_key_fails_on_both_sides() {
        let (mut a, mut b) = tokio::io::duplex(256);
        let server =
            tokio::spawn(async move { server_handshake(&mut a, &AuthKey::from("right")).await });
        let client = client_handshake(&mut b, &AuthKey::from("wrong")).await;
        assert!(matches!(client, Err(Error::Auth(_))), "{client:?}");
        assert!(matches!(server.await.unwrap(), Err(Error::Auth(_))));
    }

    /// A client whose digest happens to start like a TLS record (`16 03`, one digest in
    /// 65,536) is a valid client all the same.
    #[tokio::test]
    async fn a_digest_that_starts_like_a_tls_record_is_accepted() {
        let (mut a, mut b) = tokio::io::duplex(256);
        let key = AuthKey::from("secret");
        let server = tokio::spawn({
            let key = key.clone();
            async move { server_handshake(&mut a, &key).await }
        });
        let mut hello = [0u8; GREETING_LEN];
        b.read_exact(&mut hello).await.unwrap();
        // Try client nonces until the digest starts with 16 03.
        let mut client_nonce = [0u8; NONCE];
        let answer = (0u64..)
            .find_map(|n| {
                client_nonce[..8].copy_from_slice(&n.to_le_bytes());
                let digest = key
                    .mac(b"manager-client", &hello[8..], &client_nonce)
                    .finalize()
                    .into_bytes();
                digest.starts_with(&[0x16, 0x03]).then(|| {
                    let mut answer = [0u8; MAC + NONCE];
                    answer[..MAC].copy_from_slice(&digest);
                    answer[MAC..].copy_from_slice(&client_nonce);
                    answer
                })
            })
            .unwrap();
        b.write_all(&answer).await.unwrap();
        let mut reply = [0u8; 1 + MAC];
        b.read_exact(&mut reply).await.unwrap();
        assert_eq!(reply[0], STATUS_OK);
        server.await.unwrap().unwrap();
    }

    /// Both sides derive the same session; a resume proof holds only for the session and the
    /// connection it was made for.
    #[tokio::test]
    async fn a_resume_proof_is_bound_to_its_session_and_connection() {
        async fn pair(key: &AuthKey) -> (Handshake, Handshake) {
            let (mut a, mut b) = tokio::io::duplex(256);
            let server = tokio::spawn({
                let key = key.clone();
                async move { server_handshake_keys(&mut a, &key).await }
            });
            let client = client_handshake_keys(&mut b, key).await.unwrap();
            (server.await.unwrap().unwrap(), client)
        }
        let key = AuthKey::from("secret");
        let (first_server, first_client) = pair(&key).await;
        let session = first_client.session();
        assert_eq!(session.id, first_server.session().id);
        let (server, client) = pair(&key).await;
        let proof = client.resume_proof(&session);
        assert!(server.verify_resume(&first_server.session(), &proof));
        // Replayed on a third connection, or made for another session: refused.
        let (other_server, _) = pair(&key).await;
        assert!(!other_server.verify_resume(&session, &proof));
        assert!(!server.verify_resume(&server.session(), &proof));
        // The id alone, without the secret: refused.
        let forged = SessionKeys {
            id: session.id,
            secret: [0; MAC],
        };
        assert!(!server.verify_resume(&session, &client.resume_proof(&forged)));
    }

    #[test]
    fn debug_hides_the_key() {
        assert_eq!(
            format!("{:?}", AuthKey::from("hunter2")),
            "AuthKey(<redacted>)"
        );
    }
}
