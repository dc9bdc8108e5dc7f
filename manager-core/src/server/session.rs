//! Sessions that outlive a broken connection: what the server keeps of one while its client is
//! away, how a new connection resumes it, and how it ends when nobody does in time.
//!
//! A native connection is a session (a `Connection`): its references, cleanups, calls in
//! flight and outbox belong to the session, not to the socket. When the socket breaks (a read
//! error, a reset, silence past `liveness_timeout`) rather than being closed by either side,
//! the session is *parked*: nothing it holds is released, calls in flight go on, and their
//! replies are kept in the outbox's replay log. A new connection whose first frame is
//! `Request::Resume`, with a proof that only the holder of the session's secret can make for
//! that connection's handshake (`auth::Handshake::resume_proof`), takes the session over: the
//! server answers with how many request frames it has read, sends again the replies the
//! client has not received, and the client sends again the requests the server has not read.
//! A session still live when its client resumes it (the client saw the break first) has its
//! old socket dropped first. Past `ServerConfig::session_grace` a parked session is closed as
//! a closed connection is: its cleanups run, its references are released.

use std::sync::Arc;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::connection::Connection;
use super::State;
use crate::auth::{Handshake, SessionKeys};
use crate::error::{RemoteError, RemoteErrorKind};

/// What a connection keeps to be resumed.
pub(super) struct Session {
    keys: SessionKeys,
    /// One resume, or the expiry, at a time.
    turn: Arc<tokio::sync::Mutex<()>>,
    /// Where the session is; resumes wait on it for the old socket to let go.
    phase: watch::Sender<Phase>,
    /// Ends the current socket's read loop as broken (a new connection takes over).
    superseded: parking_lot::Mutex<CancellationToken>,
}

/// Where a session is: served by its `n`th socket, parked after it, or over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Live(u64),
    Parked(u64),
    Ended,
}

impl Session {
    pub(super) fn new(keys: SessionKeys) -> Session {
        Session {
            keys,
            turn: Arc::new(tokio::sync::Mutex::new(())),
            phase: watch::Sender::new(Phase::Live(0)),
            superseded: parking_lot::Mutex::new(CancellationToken::new()),
        }
    }

    /// What ends the read loop of the socket that serves the session now.
    pub(super) fn superseded(&self) -> CancellationToken {
        self.superseded.lock().clone()
    }
}

impl State {
    /// Registers a new session, for its client to resume should its connection break.
    pub(super) fn open_session(&self, conn: &Arc<Connection>) {
        if let Some(session) = &conn.session {
            self.sessions.lock().insert(session.keys.id, conn.clone());
        }
    }

    /// Ends every session left (the server stopped): what they hold is released.
    pub(super) fn end_sessions(&self) {
        let sessions = std::mem::take(&mut *self.sessions.lock());
        for (_, conn) in sessions {
            if let Some(session) = &conn.session {
                session.phase.send_replace(Phase::Ended);
            }
            conn.close();
        }
    }
}

impl Connection {
    /// Whether the session may be resumed should this socket break.
    pub(super) fn resumable(&self) -> bool {
        self.session.is_some() && !self.closed.is_cancelled() && self.outbox.is_resumable()
    }

    /// The socket broke: the session waits for its client for `session_grace`, then ends.
    pub(super) fn park(self: &Arc<Self>) {
        let Some(session) = &self.session else { return };
        let Phase::Live(n) = *session.phase.borrow() else {
            return;
        };
        session.phase.send_replace(Phase::Parked(n));
        let conn = self.clone();
        tokio::spawn(async move {
            let grace = conn.state.config.session_grace;
            tokio::select! {
                () = tokio::time::sleep(grace) => {}
                _ = conn.closed.cancelled() => {}
            }
            let Some(session) = &conn.session else { return };
            let _turn = session.turn.lock().await;
            if *session.phase.borrow() == Phase::Parked(n) {
                tracing::warn!(
                    "the session of connection {} expired: its client did not come back within \
                     {grace:?} (ServerConfig::session_grace); releasing what it held",
                    conn.id
                );
                conn.end_session();
                conn.close();
            }
        });
    }

    /// The session is over (closed, or expired): it can no longer be resumed.
    pub(super) fn end_session(&self) {
        let Some(session) = &self.session else { return };
        session.phase.send_replace(Phase::Ended);
        let mut sessions = self.state.sessions.lock();
        if sessions
            .get(&session.keys.id)
            .is_some_and(|kept| std::ptr::eq(&**kept, self))
        {
            sessions.remove(&session.keys.id);
        }
    }
}

/// A session taken over by a new connection: its connection, and the turn held until the new
/// socket serves it ([`Resuming::go_live`]).
pub(super) struct Resuming {
    pub(super) conn: Arc<Connection>,
    _turn: tokio::sync::OwnedMutexGuard<()>,
}

impl Resuming {
    /// The new socket serves the session from here on; gives what ends its read loop.
    pub(super) fn go_live(self) -> CancellationToken {
        let session = self.conn.session.as_ref().expect("a resumed session");
        let fresh = CancellationToken::new();
        *session.superseded.lock() = fresh.clone();
        let n = match *session.phase.borrow() {
            Phase::Parked(n) | Phase::Live(n) => n + 1,
            Phase::Ended => 0,
        };
        session.phase.send_replace(Phase::Live(n));
        fresh
    }
}

/// Finds session `id` for a new connection (whose handshake is `handshake`) that proves it
/// holds its secret with `proof`, and waits until the socket that served it has let go.
pub(super) async fn resume(
    state: &Arc<State>,
    handshake: &Handshake,
    id: u64,
    proof: &[u8; 32],
) -> Result<Resuming, RemoteError> {
    let refuse =
        |message: String| RemoteError::new(RemoteErrorKind::SessionExpired, "", "resume", message);
    let Some(conn) = state.sessions.lock().get(&id).cloned() else {
        return Err(refuse(format!(
            "this server has no session {id:016x}: its grace period \
             (ServerConfig::session_grace) passed, it was closed, or the server restarted"
        )));
    };
    let session = conn.session.as_ref().expect("only sessions are kept");
    if !handshake.verify_resume(&session.keys, proof) {
        tracing::warn!("refused to resume session {id:016x}: the proof does not match");
        return Err(refuse(format!(
            "the proof for session {id:016x} does not match its secret"
        )));
    }
    let guard = session.turn.clone().lock_owned().await;
    let mut phase = session.phase.subscribe();
    loop {
        let now = *phase.borrow_and_update();
        match now {
            Phase::Parked(_) => break,
            Phase::Ended => {
                return Err(refuse(format!("session {id:016x} has ended")));
            }
            Phase::Live(_) => {
                // The client saw the break first: the old socket goes.
                session.superseded.lock().cancel();
                if phase.changed().await.is_err() {
                    return Err(refuse(format!("session {id:016x} has ended")));
                }
            }
        }
    }
    Ok(Resuming { conn, _turn: guard })
}
