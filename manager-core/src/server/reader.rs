//! A native connection over a plain TCP or Unix socket, read by the server's pool of reader
//! threads.
//!
//! Read by a runtime task, each plain call costs three parties their turns: the client, the
//! task that reads its request, and the worker thread it wakes to run the body, which on a
//! machine with few cores is most of a small call's cost (issue 10: 16 busy clients got 0.7x
//! the calls of a raw server). So a plain TCP or Unix socket (not TLS) leaves the runtime for
//! the server's reader pool (see `pool`): the thread that finds it ready decodes its frames and
//! hands each to `Connection::handle`, as the task did, and the last plain call it read it runs
//! itself, as the reader thread of a shared-memory connection does (see `inline`: the reading
//! waits in the connection's relay while the body runs, and should the body run for longer
//! than a tick while a request waits, the socket is armed again for another pool thread, so
//! that a slow call holds up none of the connection's other callers). Replies go out as
//! before: written by whoever made them, without waiting, or by the writer task, which waits
//! for room through the runtime ([`SocketWriter`]).
//!
//! The task that serves the connection ends its reading when the server closes the connection,
//! when a new connection resumes its session, or when the client has been silent past the
//! liveness bound: it shuts the socket's reading down, and the pool thread that reads the end
//! ends the reading.
//!
//! On a runtime that is not multi-threaded, and for TLS, connections are read by runtime tasks
//! (`Connection::read_requests`).

use std::io::ErrorKind;
use std::os::fd::AsFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::runtime::Handle;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_util::codec::Decoder;
use tokio_util::sync::CancellationToken;

use super::connection::{superseded_by_resume, Connection, Ended};
use super::inline::{self, Input, Reading, Relay, Step};
use super::pool::{Busy, Pool};
use super::shm::READ_CHUNK;
use super::socket::Socket;
use super::State;
use crate::error::Error;
use crate::transport::{write_frames, SocketWriter, Stream};

/// The largest request whose call a pool thread runs itself (see `inline`). Larger than the
/// shared-memory reader's bound: over a socket the echo is bound by wake-ups, not copies, and
/// handing a call that carries 64 KiB to a worker cost a third of its speed (`--only echo`,
/// 64 KiB: 0.64x raw on a worker, 0.91x here; 1 MiB: 0.43-0.44x either way).
const SOCKET_INLINE_MAX_FRAME: usize = 1 << 20;

/// A socket the pool reads for a connection (see `inline::Input`).
pub(super) struct SocketInput {
    socket: Socket,
    pool: Arc<Pool>,
    /// Its key in the pool (set once registered).
    key: AtomicU64,
    /// When something last arrived (nanoseconds since `epoch`).
    heard: AtomicU64,
    epoch: Instant,
    /// Set when the serving task ended the reading for the client's silence.
    silent: AtomicBool,
    /// Cancelled when the reading is to end (the connection closed, its session moved on, or
    /// the client fell silent): a reading that waits for room stops waiting.
    ending: CancellationToken,
    /// Cancelled when a new connection resumes the session: the reading ends as broken.
    superseded: CancellationToken,
}

impl SocketInput {
    pub(super) fn socket(&self) -> &Socket {
        &self.socket
    }

    pub(super) fn pool(&self) -> &Pool {
        &self.pool
    }

    pub(super) fn key(&self) -> u64 {
        self.key.load(Ordering::Relaxed)
    }

    /// How long nothing has arrived.
    fn quiet(&self) -> Duration {
        let heard = Duration::from_nanos(self.heard.load(Ordering::Relaxed));
        self.epoch.elapsed().saturating_sub(heard)
    }

    /// Has a runtime task wait until `conn` has room for another request (or the reading
    /// ends), and then hand `relay` back to the pool.
    pub(super) fn read_when_there_is_room(&self, conn: &Arc<Connection>, relay: Arc<Relay>) {
        let (conn, ending, pool) = (conn.clone(), self.ending.clone(), self.pool.clone());
        let max_queued = conn.state.config.max_queued_reply_bytes as u64;
        let runtime = relay.runtime().clone();
        runtime.spawn(async move {
            tokio::select! {
                _ = ending.cancelled() => {}
                () = async {
                    conn.in_flight.room().await;
                    conn.outbox.queued().below(max_queued).await;
                } => {}
            }
            pool.kick(relay);
        });
    }
}

/// A connection's socket taken out of the runtime, with its writer.
pub(super) struct Taken {
    socket: Socket,
    writer: SocketWriter,
    pool: Arc<Pool>,
}

/// Takes `stream` out of the runtime for the reader pool if the server uses one
/// (`ServerConfig::reader_pool`), it is a plain socket and the runtime is multi-threaded (one
/// that is not runs its driver only when its one thread is free, and would not wake the pool's
/// waits in time); gives it back otherwise. An error is a socket that could not be taken out
/// (and is gone).
pub(super) fn take(state: &Arc<State>, stream: Stream) -> Result<Result<Taken, Stream>, Error> {
    let multi_thread = Handle::try_current()
        .is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread);
    if !state.config.reader_pool
        || !multi_thread
        || !matches!(stream, Stream::Tcp(_) | Stream::Unix(_))
    {
        return Ok(Err(stream));
    }
    let pool = Pool::of(state)?;
    // Left non-blocking: a pool thread reads until the socket has nothing more.
    let socket = match stream {
        Stream::Tcp(s) => Socket::Tcp(s.into_std()?),
        Stream::Unix(s) => Socket::Unix(s.into_std()?),
        #[cfg(feature = "tls")]
        other => return Ok(Err(other)),
    };
    let writer = SocketWriter::new(socket.as_fd())?;
    Ok(Ok(Taken {
        socket,
        writer,
        pool,
    }))
}

/// Serves one socket of `conn`'s session through the reader pool until the reading ends;
/// `first` holds the bytes read already, `rx` the frames for the writer task (returned, still
/// running, with how the reading ended).
pub(super) async fn serve(
    conn: &Arc<Connection>,
    taken: Taken,
    rx: mpsc::UnboundedReceiver<Bytes>,
    first: Vec<u8>,
    superseded: CancellationToken,
) -> (Result<Ended, Error>, JoinHandle<()>) {
    let Taken {
        socket,
        writer,
        pool,
    } = taken;
    let write_task = tokio::spawn(write_frames(writer, rx, conn.outbox.written()));
    let input = Arc::new(SocketInput {
        socket,
        pool: pool.clone(),
        key: AtomicU64::new(0),
        heard: AtomicU64::new(0),
        epoch: Instant::now(),
        silent: AtomicBool::new(false),
        ending: CancellationToken::new(),
        superseded: superseded.clone(),
    });
    let (done, mut finished) = oneshot::channel();
    let relay = Relay::new(
        conn.clone(),
        Input::Socket(input.clone()),
        first,
        Handle::current(),
        done,
    );
    match pool.add(&input, relay.clone()) {
        Ok(key) => input.key.store(key, Ordering::Relaxed),
        Err(e) => return (Err(Error::Io(e)), write_task),
    }
    // Its first reading: what arrived with the first frame, then the socket.
    pool.kick(relay);
    let liveness = conn.liveness();
    let mut check = tokio::time::interval((liveness / 4).max(Duration::from_millis(25)));
    check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let ended = loop {
        tokio::select! {
            ended = &mut finished => break ended,
            _ = conn.closed.cancelled() => {}
            _ = superseded.cancelled() => {}
            _ = check.tick() => {
                let quiet = input.quiet();
                if quiet < liveness {
                    continue;
                }
                tracing::warn!(
                    "dropping connection {}: nothing from its client for {quiet:.1?} \
                     (ServerConfig::liveness_timeout), its host may have vanished",
                    conn.id
                );
                input.silent.store(true, Ordering::SeqCst);
            }
        }
        // The reading ends: the pool thread that reads the socket's end says how.
        input.ending.cancel();
        input.socket.shutdown_read();
        break finished.await;
    };
    let ended = ended.unwrap_or_else(|_| {
        Err(Error::Protocol(
            "the connection's reading ended without a word".into(),
        ))
    });
    (ended, write_task)
}

impl Connection {
    /// A pool thread reads a socket: reads requests and handles them until the socket has
    /// nothing more for now, the connection ends, or the last request read is a plain call to
    /// run here. An error is the client breaking the protocol (a bad frame).
    pub(super) fn read_socket(
        self: &Arc<Self>,
        input: &SocketInput,
        reading: &mut Reading,
        busy: &Busy<'_>,
    ) -> Result<Step, Error> {
        let max_queued = self.state.config.max_queued_reply_bytes as u64;
        let Reading {
            decoder,
            inbox,
            received,
            ..
        } = reading;
        // Whether the last read took less than it could: the socket has likely nothing more,
        // and arming it again (which looks at it) costs less than a read that finds nothing.
        // (Not kept past a request handled here, a quick body run included, nor past a body
        // run here: by then the client has often had its reply and sent its next request. On
        // a busy machine the reply's wake-up of the client preempts this thread, which finds
        // the next request when it runs again: 16 clients calling a quick getter lost a
        // fifth of their calls to arming and waiting instead.)
        let mut short = false;
        loop {
            loop {
                // With `max_in_flight` calls running, or replies the client does not read,
                // the socket is left unread and TCP pushes back on the client.
                if !self.in_flight.has_room() || !self.outbox.queued().is_below(max_queued) {
                    return Ok(Step::Full);
                }
                let Some(frame) = decoder
                    .decode(inbox)
                    .map_err(|e| Error::Protocol(format!("bad frame: {e}")))?
                else {
                    break;
                };
                // A request read from a socket whose session has moved on is the new
                // connection's to run (it is sent again there), and one read after a close
                // is not run at all.
                if let Some(ended) = self.reading_ended(input) {
                    return Ok(Step::Ended(ended));
                }
                // The last request read may run here: nothing read waits behind it (and
                // should something arrive meanwhile and the body take long, another pool
                // thread reads it).
                if inbox.is_empty() && frame.len() <= SOCKET_INLINE_MAX_FRAME {
                    inline::open();
                }
                busy.enter();
                let handled = self.handle(frame.freeze());
                busy.leave();
                short = false;
                let taken = inline::take();
                handled?;
                *received += 1;
                self.received.store(*received, Ordering::Relaxed);
                if let Some(taken) = taken {
                    return Ok(Step::Inline(taken));
                }
            }
            if let Some(ended) = self.reading_ended(input) {
                return Ok(Step::Ended(ended));
            }
            if std::mem::take(&mut short) {
                return Ok(Step::Drained);
            }
            decoder.make_room(inbox, READ_CHUNK);
            let room = inbox.capacity() - inbox.len();
            match input.socket.read_into(inbox) {
                Ok(0) => {
                    let ended = self.reading_ended(input).unwrap_or(Ended::Closed);
                    return Ok(Step::Ended(ended));
                }
                Ok(n) => {
                    short = n < room;
                    let now = input.epoch.elapsed().as_nanos() as u64;
                    input.heard.store(now, Ordering::Relaxed);
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(Step::Drained),
                Err(e) => {
                    let ended = self
                        .reading_ended(input)
                        .unwrap_or_else(|| Ended::Failed(format!("reading failed: {e}")));
                    return Ok(Step::Ended(ended));
                }
            }
        }
    }

    /// How the reading ends when the connection closed, its session moved on or its client
    /// fell silent, if one of them happened.
    fn reading_ended(&self, input: &SocketInput) -> Option<Ended> {
        if input.superseded.is_cancelled() {
            Some(superseded_by_resume())
        } else if input.silent.load(Ordering::SeqCst) {
            Some(Ended::Broken(format!(
                "nothing from the client for {:.1?}",
                input.quiet()
            )))
        } else if self.closed.is_cancelled() {
            Some(Ended::Closed)
        } else {
            None
        }
    }
}
