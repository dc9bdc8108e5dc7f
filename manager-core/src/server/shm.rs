//! Serving a client through shared memory (see `transport::shm`): the hand-over that follows
//! its hello, and the connection's reader thread.
//!
//! The thread sleeps on the request ring's futex (after watching the ring for
//! `ServerConfig::worker_spin` if no other reader watches, see `spin`, and else a spin of a
//! few microseconds, when spinning has been paying, see `ring`) rather than in the runtime, so that a request wakes
//! exactly the thread that handles it: it decodes each frame and hands it to
//! `Connection::handle`, as the socket's read loop does (quick methods run on it, `async` ones
//! in tasks), and whoever finishes a call writes its reply into the reply ring, waking the
//! client only when it sleeps. A plain call that is the last request read runs on the reader
//! thread too, not on a worker: two parties per call (the client and this thread) where a
//! worker would make three; while its body runs, the reading waits in the connection's relay,
//! and a follower thread takes it over should the body run for longer than a tick, so that a
//! slow call holds up none of the connection's other callers (see `inline`). Pipelined
//! requests before the last go to the workers as over a socket, to run concurrently. The
//! socket stays open, carrying nothing; a task watches it: its end ends the connection, which
//! then releases everything it held, as a socket's does.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use tokio::runtime::Handle;
use tokio_util::codec::Decoder;

use super::connection::{Connection, Ended};
use super::inline::{self, Input, Reading, Step};
use super::State;
use crate::error::Error;
use crate::transport::shm::{self, ring, Handover, RingWriter, Side};
use crate::transport::{write_frames, Outbox, Stream};
use crate::wire::{self, ControlReply, Hello, Reply, Request, ResponseHead};

/// How much the reader thread asks the ring for, at least.
pub(super) const READ_CHUNK: usize = 64 * 1024;

/// The largest request whose call the reader thread runs itself (see `inline`): the hop to
/// a worker is nothing beside the copies of a larger value, and a call that carries one is
/// the likeliest to run past a tick (and have the watcher look at its thread).
pub(super) const INLINE_MAX_FRAME: usize = 64 * 1024;

/// The request id of a hello that asks for shared memory, when `body` (a connection's first
/// frame) is one.
pub(super) fn asks_for_it(body: Option<&[u8]>) -> Option<u64> {
    let (request, args) = wire::take::<Request<'_>>(body?, "request").ok()?;
    let Request::Control {
        id,
        op: wire::Control::Ping,
    } = request
    else {
        return None;
    };
    let (hello, _) = wire::take::<Hello>(args, "hello").ok()?;
    (hello.features & wire::features::SHARED_MEMORY != 0).then_some(id)
}

/// Answers the hello (request `id`) with shared memory, hands the memory over, and serves the
/// connection through it until it ends.
pub(super) async fn serve(
    state: &Arc<State>,
    mut stream: Stream,
    id: u64,
    side: Arc<Side>,
    handover: Handover,
) -> Result<(), Error> {
    let answer = ResponseHead {
        id,
        reply: Reply::Control(ControlReply::Hello(Hello {
            features: wire::features::ALL | wire::features::SHARED_MEMORY,
        })),
    };
    stream.send_message(&answer, "response").await?;
    let Stream::Unix(socket) = stream else {
        return Err(Error::Protocol("shared memory is for Unix sockets".into()));
    };
    shm::hand_over(&socket, &handover).await?;
    // The client has its own descriptors now; the server's side keeps what it needs.
    drop(handover);
    let (outbox, rx) = Outbox::for_ring(side.clone());
    let conn = Arc::new(Connection::new(state.clone(), outbox, None));
    let write_task = tokio::spawn(write_frames(
        RingWriter(side.clone()),
        rx,
        conn.outbox.written(),
    ));
    let (done, mut finished) = tokio::sync::oneshot::channel();
    let relay = inline::Relay::new(
        conn.clone(),
        Input::Ring(side.clone()),
        Vec::new(),
        Handle::current(),
        done,
    );
    if let Err(e) = relay.start() {
        side.end("no reader thread");
        conn.close();
        return Err(Error::Io(e));
    }
    let ended = tokio::select! {
        ended = &mut finished => ended.ok(),
        why = shm::closed(&socket) => {
            side.end(why);
            finished.await.ok()
        }
        _ = conn.closed.cancelled() => {
            side.end("the server is stopping");
            finished.await.ok()
        }
    };
    side.end("the connection ended");
    match ended {
        Some(Err(e)) => tracing::warn!("dropping connection {}: {e}", conn.id),
        // A reply that met a corrupt ring ended it.
        _ if side.faulted() => tracing::warn!(
            "dropping connection {}: {}",
            conn.id,
            side.ended().unwrap_or_default()
        ),
        Some(Ok(Ended::Broken(why) | Ended::Failed(why))) => {
            tracing::debug!("connection {} ended: {why}", conn.id)
        }
        _ => tracing::debug!(
            "connection {} ended: {}",
            conn.id,
            side.ended().unwrap_or_default()
        ),
    }
    conn.close();
    // The memory goes now, even while a body that cannot be interrupted still runs (its
    // reply goes nowhere).
    conn.outbox.close();
    drop(conn);
    // The client learns that the connection has ended from its socket.
    drop(socket);
    let _ = write_task.await;
    Ok(())
}

impl Connection {
    /// The reader thread: reads requests from the ring and handles them until the connection
    /// ends, or until the last request read is a plain call to run here. An error is the
    /// client breaking the protocol (a bad frame, a corrupt ring).
    pub(super) fn read_ring(
        self: &Arc<Self>,
        side: &Side,
        reading: &mut Reading,
    ) -> Result<Step, Error> {
        let max_queued = self.state.config.max_queued_reply_bytes as u64;
        let liveness = self.liveness();
        let Reading {
            decoder,
            inbox,
            last_heard,
            received,
        } = reading;
        loop {
            while let Some(frame) = decoder
                .decode(inbox)
                .map_err(|e| Error::Protocol(format!("bad frame: {e}")))?
            {
                if !self.room_for_one_more(max_queued) {
                    return Ok(Step::Ended(Ended::Closed));
                }
                // The last request there is may run here: nothing waits behind it.
                let last = inbox.is_empty()
                    && frame.len() <= INLINE_MAX_FRAME
                    && matches!(side.inbound.ready(), Ok(false));
                if last {
                    inline::open();
                }
                let handled = self.handle(frame.freeze());
                let taken = inline::take();
                handled?;
                *received += 1;
                self.received.store(*received, Ordering::Relaxed);
                if let Some(taken) = taken {
                    return Ok(Step::Inline(taken));
                }
            }
            if self.closed.is_cancelled() {
                return Ok(Step::Ended(Ended::Closed));
            }
            decoder.make_room(inbox, READ_CHUNK);
            let closed = side.inbound.is_closed();
            match side.read_some(inbox) {
                Ok(0) if closed => return Ok(Step::Ended(Ended::Closed)),
                Ok(0) => {}
                Ok(_) => {
                    *last_heard = Instant::now();
                    continue;
                }
                Err(fault) => return Err(Error::Protocol(side.fault(&fault).to_string())),
            }
            // Before sleeping on the ring, watch it for the next request (one reader at a
            // time, see `spin`): the client's next call then wakes nobody.
            let watched = self.state.spin.watch(|| match side.inbound.ready() {
                Ok(ready) => Ok(ready.then_some(())),
                Err(fault) => Err(Error::Protocol(side.fault(&fault).to_string())),
            });
            if watched?.is_some() {
                continue;
            }
            match side.inbound.wait(Some(*last_heard + liveness), ring::SPIN) {
                Ok(true) => {}
                Ok(false) => {
                    let quiet = last_heard.elapsed();
                    if quiet >= liveness {
                        tracing::warn!(
                            "dropping connection {}: nothing from its client for {quiet:.1?} \
                             (ServerConfig::liveness_timeout)",
                            self.id
                        );
                        return Ok(Step::Ended(Ended::Broken(format!(
                            "nothing from the client for {quiet:.1?}"
                        ))));
                    }
                }
                Err(fault) => return Err(Error::Protocol(side.fault(&fault).to_string())),
            }
        }
    }

    /// Waits, as the socket's read loop does, while `max_in_flight` calls are in flight or
    /// more than `max_queued` bytes of replies wait for the client; false if the connection
    /// closed meanwhile.
    pub(super) fn room_for_one_more(&self, max_queued: u64) -> bool {
        if !self.in_flight.has_room() {
            let closed = futures::executor::block_on(async {
                tokio::select! {
                    _ = self.closed.cancelled() => true,
                    () = self.in_flight.room() => false,
                }
            });
            if closed {
                return false;
            }
        }
        if !self.outbox.queued().is_below(max_queued) {
            return futures::executor::block_on(async {
                tokio::select! {
                    _ = self.closed.cancelled() => false,
                    () = self.outbox.queued().below(max_queued) => true,
                }
            });
        }
        true
    }
}
