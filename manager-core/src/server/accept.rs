//! Accepting clients: the accept loops (native and CPython), the handshake, and admission
//! (`max_connections`) of a new connection, which then gets a `Connection` and its read loop.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::task::TaskTracker;

use super::connection::Connection;
use super::{Server, State};
use crate::error::Error;
use crate::transport::{with_split, write_frames, Accepted, Outbox};
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
    let mut stream = match handshake {
        Ok(Ok(stream)) => stream,
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
    };
    let welcomed = stream.send_welcome(&welcome).await;
    if let Some(reason) = refused {
        tracing::warn!("refused a client: {reason}");
    }
    if welcome.refused.is_some() || welcomed.is_err() {
        state.connections.fetch_sub(1, Ordering::Relaxed);
        return;
    }
    let (outbox, rx) = match Outbox::new(&stream) {
        Ok(outbox) => outbox,
        Err(e) => {
            tracing::warn!("closing a connection: {e}");
            state.connections.fetch_sub(1, Ordering::Relaxed);
            return;
        }
    };
    with_split!(stream, |reader, writer| {
        let write_task = tokio::spawn(write_frames(writer, rx, outbox.written()));
        let conn = Arc::new(Connection::new(state.clone(), outbox));
        if let Err(e) = conn.read_requests(reader).await {
            tracing::debug!("closing a connection: {e}");
        }
        // Calls still running for this client are cancelled: nobody will read their answers,
        // and a call waiting (on a queue, a lock) must stop waiting.
        conn.close();
        drop(conn);
        let _ = write_task.await;
    });
    state.connections.fetch_sub(1, Ordering::Relaxed);
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
