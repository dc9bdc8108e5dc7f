//! Accepting clients: the accept loops (native and CPython), the handshake, and admission
//! (`max_connections`) of a new connection, which then gets a `Connection` and its read loop.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::task::TaskTracker;

use super::connection::{Connection, Ended};
use super::{Server, State};
use crate::error::Error;
use crate::transport::{with_split, write_frames, Accepted, FirstFrame, Outbox, Stream};
use crate::wire;

impl Server {
    /// Accepts and serves clients until a client sends `shutdown` or the [`ShutdownHandle`](super::ShutdownHandle) is
    /// used. A Unix socket file is removed when it returns.
    pub async fn serve_forever(self) -> Result<(), Error> {
        let Server {
            state,
            listener,
            python,
        } = self;
        tracing::info!(address = %state.address, "manager server listening");
        let connections = TaskTracker::new();
        tokio::spawn(watch_slow_calls(state.clone()));
        loop {
            let python_client = async {
                match &python {
                    Some(listener) => listener.accept().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = state.stop.cancelled() => break,
                accepted = python_client => match accepted {
                    #[cfg(feature = "python")]
                    Ok(accepted) => {
                        connections.spawn(super::python::handle_python(state.clone(), accepted.into_plain()));
                    }
                    // Without CPython support no such listener is bound (`Server::bind`).
                    #[cfg(not(feature = "python"))]
                    Ok(accepted) => drop(accepted),
                    Err(e) => {
                        tracing::warn!("accept failed: {e}");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                },
                accepted = listener.accept() => match accepted {
                    Ok(stream) => {
                        connections.spawn(handle_connection(state.clone(), stream));
                    }
                    Err(e) => {
                        // Out of file descriptors and the like: wait a moment, keep serving.
                        tracing::warn!("accept failed: {e}");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                },
            }
        }
        // New clients are refused from here on; open connections cancel their calls, flush
        // what they have to say (the answer to `shutdown` among it) and close.
        drop(listener);
        drop(python);
        connections.close();
        if tokio::time::timeout(Duration::from_secs(5), connections.wait())
            .await
            .is_err()
        {
            tracing::warn!("some connections did not close within 5 s of shutdown");
        }
        #[cfg(feature = "python")]
        state.python.release();
        state.end_sessions();
        // What no connection released (CPython clients' blocks, as CPython's server does).
        state.segments.unlink_all();
        tracing::info!(address = %state.address, "manager server stopped");
        Ok(())
    }
}

async fn handle_connection(state: Arc<State>, accepted: Accepted) {
    let handshake = tokio::select! {
        result = tokio::time::timeout(
            state.config.handshake_timeout,
            accepted.handshake_server(&state.authkey),
        ) => result,
        _ = state.stop.cancelled() => return,
    };
    let (mut stream, handshake) = match handshake {
        Ok(Ok(done)) => done,
        Ok(Err(Error::Auth(message))) => {
            tracing::warn!("refused a client with a wrong authkey: {message}");
            return;
        }
        Ok(Err(Error::Tls(message))) => {
            tracing::warn!("refused a client: {message}");
            return;
        }
        Ok(Err(e)) => {
            tracing::debug!("handshake failed: {e}");
            return;
        }
        Err(_) => {
            tracing::warn!("a client did not complete the handshake in time");
            return;
        }
    };
    let open = state.connections.fetch_add(1, Ordering::Relaxed) + 1;
    let refused = (open > state.config.max_connections as u64).then(|| {
        format!(
            "the server has reached its limit of {} connections",
            state.config.max_connections
        )
    });
    let welcome = wire::Welcome {
        protocol: wire::PROTOCOL_VERSION,
        address: state.address.clone(),
        refused: refused.clone(),
        python_address: state.python_address.clone(),
        liveness: state.config.liveness_timeout,
        session_grace: state.config.session_grace,
    };
    let welcomed = stream.send_welcome(&welcome).await;
    if let Some(reason) = refused {
        tracing::warn!("refused a client: {reason}");
    }
    if welcome.refused.is_none() && welcomed.is_ok() {
        if let Err(e) = start_session(&state, stream, &handshake).await {
            tracing::debug!("closing a connection: {e}");
        }
    }
    state.connections.fetch_sub(1, Ordering::Relaxed);
}

/// The longest first frame read whole to see whether it resumes a session (a resume is far
/// shorter; a longer frame is a request, left to the read loop).
const MAX_RESUME_FRAME: usize = 128;

/// Serves an authenticated connection: a new session, or the one its first frame resumes.
async fn start_session(
    state: &Arc<State>,
    mut stream: Stream,
    handshake: &crate::auth::Handshake,
) -> Result<(), Error> {
    let resumable = !state.config.session_grace.is_zero();
    let offers_memory = state.config.shared_memory && matches!(stream, Stream::Unix(_));
    // The first frame, if short, is read here: it may resume a session, or ask for shared
    // memory. Whatever it is otherwise goes to the read loop ahead of the rest.
    let first = if resumable || offers_memory {
        let liveness = state
            .config
            .liveness_timeout
            .max(Duration::from_millis(100));
        tokio::select! {
            first = stream.read_first(MAX_RESUME_FRAME) => first?,
            () = tokio::time::sleep(liveness) => return Ok(()),
            _ = state.stop.cancelled() => return Ok(()),
        }
    } else {
        FirstFrame::default()
    };
    if first.ended {
        return Ok(());
    }
    if let Some(id) = offers_memory
        .then(|| super::shm::asks_for_it(first.body.as_deref()))
        .flatten()
    {
        match crate::transport::shm::server_side() {
            Ok((side, handover)) => {
                return super::shm::serve(state, stream, id, side, handover).await;
            }
            // The read loop answers the hello without it: the client stays on the socket.
            Err(e) => tracing::warn!("cannot make shared memory for a client: {e}"),
        }
    }
    let resume = first.body.as_deref().and_then(|body| {
        match wire::take::<wire::Request<'_>>(body, "request") {
            Ok((
                wire::Request::Resume {
                    session,
                    proof,
                    received,
                },
                [],
            )) => Some((session, proof, received)),
            _ => None,
        }
    });
    let Some((session, proof, received)) = resume else {
        let (outbox, rx) = if resumable {
            Outbox::resumable(&stream)?
        } else {
            Outbox::new(&stream)?
        };
        let keys = resumable.then(|| handshake.session());
        let conn = Arc::new(Connection::new(state.clone(), outbox, keys));
        state.open_session(&conn);
        let superseded = conn
            .session
            .as_ref()
            .map_or_else(Default::default, |s| s.superseded());
        serve(conn, stream, rx, first.raw, superseded).await;
        return Ok(());
    };
    let resuming = match super::session::resume(state, handshake, session, &proof).await {
        Ok(resuming) => resuming,
        Err(refused) => {
            let answer = wire::ResponseHead {
                id: 0,
                reply: wire::Reply::Error(refused),
            };
            let _ = stream.send_message(&answer, "response").await;
            return Ok(());
        }
    };
    let conn = resuming.conn.clone();
    let read = conn.received.load(Ordering::Relaxed);
    let answer = wire::ResponseHead {
        id: 0,
        reply: wire::Reply::Control(wire::ControlReply::Resumed(read)),
    };
    // The answer before anything the session sends again: the socket is not the outbox's yet.
    stream.send_message(&answer, "response").await?;
    let rx = match conn.outbox.attach(&stream, received) {
        Ok(rx) => rx,
        Err(why) => {
            // The client claims what cannot be: the session cannot go on.
            tracing::warn!("session of connection {} cannot be resumed: {why}", conn.id);
            drop(resuming);
            conn.end_session();
            conn.close();
            return Ok(());
        }
    };
    tracing::info!(
        "connection {} resumed its session (the server had read {read} of its requests, the \
         client {received} of its replies)",
        conn.id
    );
    let superseded = resuming.go_live();
    serve(conn, stream, rx, Vec::new(), superseded).await;
    Ok(())
}

/// Serves one socket of a connection's session until it closes (the session ends) or breaks
/// (the session is parked, for its client to resume). `first` holds the bytes read already.
async fn serve(
    conn: Arc<Connection>,
    stream: Stream,
    rx: tokio::sync::mpsc::UnboundedReceiver<bytes::Bytes>,
    first: Vec<u8>,
    superseded: tokio_util::sync::CancellationToken,
) {
    use tokio::io::AsyncReadExt as _;
    let local = stream.peer_is_local();
    let (ended, write_task) = match super::reader::take(&conn.state, stream) {
        Ok(Ok(taken)) => super::reader::serve(&conn, taken, rx, first, superseded).await,
        Ok(Err(stream)) => with_split!(stream, |reader, writer| {
            let write_task = tokio::spawn(write_frames(writer, rx, conn.outbox.written()));
            let reader = std::io::Cursor::new(first).chain(reader);
            (conn.read_requests(reader, superseded).await, write_task)
        }),
        Err(e) => {
            tracing::debug!("closing a connection whose socket cannot leave the runtime: {e}");
            conn.end_session();
            conn.close();
            return;
        }
    };
    let broken = match &ended {
        Ok(Ended::Broken(why)) => Some(why.clone()),
        // A reset from this host is a process closing its socket, or dying: a close.
        Ok(Ended::Failed(why)) if !local => Some(why.clone()),
        _ => None,
    };
    match (broken, ended) {
        (Some(why), _) if conn.resumable() => {
            // What the session sends from here on is kept for its next socket.
            conn.outbox.detach();
            write_task.abort();
            let _ = write_task.await;
            conn.outbox.writer_stopped();
            tracing::info!(
                "connection {} broke ({why}); its session is kept for {:?} \
                 (ServerConfig::session_grace)",
                conn.id,
                conn.state.config.session_grace
            );
            conn.park();
        }
        (_, ended) => {
            if let Err(e) = ended {
                tracing::debug!("closing a connection: {e}");
            }
            // Calls still running for this client are cancelled: nobody will read their
            // answers, and a call waiting (on a queue, a lock) must stop waiting.
            conn.end_session();
            conn.close();
            drop(conn);
            let _ = write_task.await;
        }
    }
}

/// Logs plain calls that run past `ServerConfig::slow_call_threshold`, until the server stops.
async fn watch_slow_calls(state: Arc<State>) {
    let threshold = state.config.slow_call_threshold;
    let mut tick = tokio::time::interval(
        (threshold / 4).clamp(Duration::from_millis(10), Duration::from_secs(1)),
    );
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = state.stop.cancelled() => return,
            _ = tick.tick() => state.activity.log_slow(threshold),
        }
    }
}
