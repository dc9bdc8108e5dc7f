//! Where a connection's outgoing frames go: straight to the socket from the sender's own
//! thread when nothing is queued before them and the socket takes them at once, else to the
//! connection's writer task.
//!
//! Handing every frame to a writer task costs a queue, a wake-up and a poll of that task per
//! frame, more than the write itself; a round trip pays it on both sides. Writing directly
//! keeps frames whole and in order because a sender writes only while nothing is queued (under
//! one lock), and what the socket does not take goes to the queue, behind which every later
//! frame then waits. TLS sessions are written by their writer task only.

use std::io;
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use parking_lot::Mutex;
use rustix::net::SendFlags;
use tokio::sync::{mpsc, Notify};

use super::Stream;
use crate::wire;

/// A connection's outgoing frames (see the module documentation).
pub(crate) struct Outbox {
    tx: mpsc::UnboundedSender<Bytes>,
    queued: Arc<Queued>,
    /// Held while a frame is queued or written directly, so that frames go out whole and in
    /// the order they were sent.
    order: Mutex<()>,
    /// A duplicate of the socket's descriptor (plain TCP and Unix sockets), for direct writes.
    socket: Option<OwnedFd>,
    /// The buffer of the last frame written directly, for the next frame.
    spare: Mutex<Option<BytesMut>>,
}

/// The largest frame buffer an outbox keeps for the next frame.
const MAX_SPARE: usize = 4 << 20;

impl Outbox {
    /// An outbox for `stream`, and the receiver its writer task takes frames from.
    pub(crate) fn new(stream: &Stream) -> io::Result<(Outbox, mpsc::UnboundedReceiver<Bytes>)> {
        Ok(Outbox::with_socket(stream.plain_socket()?))
    }

    /// An outbox with no socket to write to directly: everything goes through the queue.
    #[cfg_attr(
        not(feature = "python"),
        allow(dead_code, reason = "used by CPython clients' connections")
    )]
    pub(crate) fn queue_only() -> (Outbox, mpsc::UnboundedReceiver<Bytes>) {
        Outbox::with_socket(None)
    }

    fn with_socket(socket: Option<OwnedFd>) -> (Outbox, mpsc::UnboundedReceiver<Bytes>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let outbox = Outbox {
            tx,
            queued: Arc::new(Queued::default()),
            order: Mutex::new(()),
            socket,
            spare: Mutex::new(None),
        };
        (outbox, rx)
    }

    /// What the writer task reports each write to (see [`super::write_frames`]).
    pub(crate) fn written(&self) -> impl Fn(usize) + Send + 'static {
        let queued = self.queued.clone();
        move |n| queued.written(n)
    }

    /// The bytes queued for the writer task and not written yet.
    pub(crate) fn queued(&self) -> &Queued {
        &self.queued
    }

    /// A buffer with a frame started in it (see [`wire::start_frame`]): the buffer of the last
    /// frame written directly when there is one, since a fresh allocation per frame cost more
    /// than the write (and, for large frames, page faults as the allocator gave memory back
    /// and took it again).
    pub(crate) fn frame_buffer(&self) -> BytesMut {
        match self.spare.lock().take() {
            Some(mut buf) => {
                buf.clear();
                wire::restart_frame(&mut buf);
                buf
            }
            None => wire::start_frame(64),
        }
    }

    /// Keeps a written frame's buffer for the next frame, unless it is too large to keep.
    fn keep_spare(&self, frame: Bytes) {
        if let Ok(buf) = frame.try_into_mut() {
            if buf.capacity() <= MAX_SPARE {
                *self.spare.lock() = Some(buf);
            }
        }
    }

    /// Queues `frame` for the writer task; false when the connection is gone.
    pub(crate) fn enqueue(&self, frame: Bytes) -> bool {
        let _order = self.order.lock();
        self.queue(frame)
    }

    fn queue(&self, frame: Bytes) -> bool {
        let len = frame.len();
        self.queued.queue(len);
        if self.tx.send(frame).is_err() {
            self.queued.written(len);
            return false;
        }
        true
    }

    /// Writes `frame` to the socket from this thread when nothing is queued before it and the
    /// socket takes it now; queues what is left for the writer task. False when the
    /// connection is gone.
    pub(crate) fn send(&self, frame: Bytes) -> bool {
        let Some(socket) = &self.socket else {
            return self.enqueue(frame);
        };
        let order = self.order.lock();
        if self.queued.bytes() != 0 {
            return self.queue(frame);
        }
        match try_send(socket, &frame) {
            Ok(n) if n == frame.len() => {
                drop(order);
                self.keep_spare(frame);
                true
            }
            Ok(n) => self.queue(frame.slice(n..)),
            // The writer task meets the same error, and the reader closes the connection.
            Err(_) => self.queue(frame),
        }
    }
}

/// Writes what the socket takes of `frame` now, without waiting, and returns how many bytes
/// that was.
fn try_send(socket: &OwnedFd, frame: &[u8]) -> io::Result<usize> {
    loop {
        match rustix::net::send(socket, frame, SendFlags::DONTWAIT | SendFlags::NOSIGNAL) {
            Ok(n) => return Ok(n),
            Err(rustix::io::Errno::INTR) => continue,
            Err(rustix::io::Errno::AGAIN) => return Ok(0),
            Err(e) => return Err(e.into()),
        }
    }
}

/// Counts the bytes a connection has queued for its writer task, so that a sender writes
/// directly only behind nothing, and a server stops reading from a client that does not read
/// its answers (`ServerConfig::max_queued_reply_bytes`).
#[derive(Default)]
pub(crate) struct Queued {
    bytes: AtomicU64,
    drained: Notify,
}

impl Queued {
    fn queue(&self, n: usize) {
        self.bytes.fetch_add(n as u64, Ordering::AcqRel);
    }

    fn written(&self, n: usize) {
        self.bytes.fetch_sub(n as u64, Ordering::AcqRel);
        self.drained.notify_waiters();
    }

    fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::Acquire)
    }

    /// Whether at most `limit` bytes are queued.
    pub(crate) fn is_below(&self, limit: u64) -> bool {
        self.bytes() <= limit
    }

    /// Waits until at most `limit` bytes are queued.
    pub(crate) async fn below(&self, limit: u64) {
        loop {
            let drained = self.drained.notified();
            if self.bytes() <= limit {
                return;
            }
            drained.await;
        }
    }
}
