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

use super::replay::{Replay, COPY_AT_MOST};
use super::Stream;
use crate::wire;

/// A connection's outgoing frames (see the module documentation).
pub(crate) struct Outbox {
    queued: Arc<Queued>,
    /// Where frames go now, locked while a frame is queued or written directly, so that
    /// frames go out whole and in the order they were sent.
    link: Mutex<Link>,
    /// The buffer of the last frame written directly, for the next frame.
    spare: Mutex<Option<BytesMut>>,
    /// Whether this outbox writes to a shared-memory ring (and so may take large frames
    /// written straight into its arena, [`Outbox::send_direct`]).
    ring: bool,
}

/// The socket an outbox writes to now, if any, and what it keeps to send again.
struct Link {
    /// The writer task's queue; `None` while the connection is broken (or closed).
    tx: Option<mpsc::UnboundedSender<Bytes>>,
    /// Where a sender writes directly: a duplicate of the socket's descriptor (plain TCP and
    /// Unix sockets), or the shared-memory ring.
    socket: Option<Target>,
    /// The frames the peer has not said it received, for a session that outlives a broken
    /// connection; `None` for a connection that ends with its socket.
    replay: Option<Replay>,
}

/// The most a replay log holds: a peer that acknowledges less than this (it acknowledges every
/// 64 frames, and every 1 MiB of them) has stopped acknowledging, and its session is
/// no longer kept for resumption rather than held in memory without bound.
const MAX_UNACKNOWLEDGED: usize = 64 << 20;

/// Where an outbox's senders write directly.
enum Target {
    Socket(OwnedFd),
    Ring(Arc<super::shm::Side>),
}

/// The largest frame buffer an outbox keeps for the next frame.
const MAX_SPARE: usize = 4 << 20;

impl Outbox {
    /// An outbox for `stream`, and the receiver its writer task takes frames from.
    pub(crate) fn new(stream: &Stream) -> io::Result<(Outbox, mpsc::UnboundedReceiver<Bytes>)> {
        Ok(Outbox::with_socket(
            stream.plain_socket()?.map(Target::Socket),
            false,
        ))
    }

    /// An outbox that writes to a shared-memory ring (see [`super::shm`]); its writer task
    /// writes to a [`super::shm::RingWriter`].
    pub(crate) fn for_ring(
        side: Arc<super::shm::Side>,
    ) -> (Outbox, mpsc::UnboundedReceiver<Bytes>) {
        Outbox::with_socket(Some(Target::Ring(side)), false)
    }

    /// An outbox for `stream` that keeps what it sends until the peer acknowledges it (see
    /// [`Outbox::acked`]), so that a new connection of the same session can send again what a
    /// broken one lost ([`Outbox::attach`]).
    pub(crate) fn resumable(
        stream: &Stream,
    ) -> io::Result<(Outbox, mpsc::UnboundedReceiver<Bytes>)> {
        Ok(Outbox::with_socket(
            stream.plain_socket()?.map(Target::Socket),
            true,
        ))
    }

    /// An outbox with no socket to write to directly: everything goes through the queue.
    #[cfg_attr(
        not(feature = "python"),
        allow(dead_code, reason = "used by CPython clients' connections")
    )]
    pub(crate) fn queue_only() -> (Outbox, mpsc::UnboundedReceiver<Bytes>) {
        Outbox::with_socket(None, false)
    }

    fn with_socket(
        socket: Option<Target>,
        resumable: bool,
    ) -> (Outbox, mpsc::UnboundedReceiver<Bytes>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let ring = matches!(socket, Some(Target::Ring(_)));
        let outbox = Outbox {
            ring,
            queued: Arc::new(Queued::default()),
            link: Mutex::new(Link {
                tx: Some(tx),
                socket,
                replay: resumable.then(Replay::default),
            }),
            spare: Mutex::new(None),
        };
        (outbox, rx)
    }

    /// The connection broke: from here on frames are only kept, to be sent on the next
    /// connection ([`Outbox::attach`]). The caller stops the writer task, then calls
    /// [`Outbox::writer_stopped`].
    pub(crate) fn detach(&self) {
        let mut link = self.link.lock();
        link.tx = None;
        link.socket = None;
    }

    /// The writer task of the broken connection has stopped: what it had queued is dropped
    /// (the replay log keeps it).
    pub(crate) fn writer_stopped(&self) {
        self.queued.reset();
    }

    /// The session ended: nothing more is sent or kept.
    pub(crate) fn close(&self) {
        let mut link = self.link.lock();
        link.tx = None;
        link.socket = None;
        link.replay = None;
    }

    /// Counts `n` frames sent on the socket before this outbox had it (a session's first
    /// hello), so that the session's count of frames sent agrees with the peer's.
    pub(crate) fn count_sent(&self, n: u64) {
        if let Some(replay) = &mut self.link.lock().replay {
            replay.count_sent(n);
        }
    }

    /// The peer has received the first `received` frames: they are forgotten. An error when
    /// the peer claims what cannot be (it broke the protocol).
    ///
    /// The buffer of a large frame forgotten is kept for the next frame if nothing else holds
    /// it any more (it was written): a request or reply of a megabyte would otherwise take a
    /// fresh megabyte from the allocator each time, which glibc's gives back to the system
    /// and takes again, a page fault per page (`--only echo`, 1 MiB: see BENCHMARKS.md).
    pub(crate) fn acked(&self, received: u64) -> Result<(), String> {
        let forgotten = match &mut self.link.lock().replay {
            Some(replay) => replay.forget(received, false)?,
            None => None,
        };
        if let Some(frame) = forgotten {
            self.keep_spare(frame);
        }
        Ok(())
    }

    /// Goes on over a new connection, `stream`, of the same session, whose peer has received
    /// the first `received` frames: the frames after them are queued first, then every frame
    /// sent from here on. Returns the receiver of the new writer task.
    pub(crate) fn attach(
        &self,
        stream: &Stream,
        received: u64,
    ) -> Result<mpsc::UnboundedReceiver<Bytes>, String> {
        let socket = stream.plain_socket().map_err(|e| e.to_string())?;
        let (tx, rx) = mpsc::unbounded_channel();
        let mut link = self.link.lock();
        let Some(replay) = &mut link.replay else {
            return Err("the session has ended".into());
        };
        // Nothing forgotten here is free yet: the old writer task may still hold it.
        drop(replay.forget(received, true)?);
        for frame in replay.frames() {
            self.queued.queue(frame.len());
            let _ = tx.send(frame);
        }
        link.tx = Some(tx);
        link.socket = socket.map(Target::Socket);
        Ok(rx)
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

    /// Keeps a written frame's buffer for the next frame, unless it is too large to keep (or
    /// the replay log still holds it).
    fn keep_spare(&self, frame: Bytes) {
        if let Ok(buf) = frame.try_into_mut() {
            if buf.capacity() <= MAX_SPARE {
                *self.spare.lock() = Some(buf);
            }
        }
    }

    /// Queues `frame` for the writer task, never writing it here; false when the connection is
    /// gone. (Senders write what they can first, `Outbox::send`; the tests queue directly.)
    #[cfg(test)]
    fn enqueue(&self, frame: Bytes) -> bool {
        let mut link = self.link.lock();
        Outbox::keep(&mut link, &frame, || frame.clone());
        self.queue(&link, frame)
    }

    /// Counts `frame` as sent in the session, and keeps it until the peer acknowledges it (a
    /// large one as the `Bytes` that `share` gives).
    fn keep(link: &mut Link, frame: &[u8], share: impl FnOnce() -> Bytes) {
        if let Some(replay) = &mut link.replay {
            replay.keep(frame, share);
            if replay.bytes() > MAX_UNACKNOWLEDGED {
                tracing::warn!(
                    "the peer acknowledged nothing of the last {} bytes sent to it: its session \
                     will not be resumed should the connection break",
                    replay.bytes()
                );
                link.replay = None;
            }
        }
    }

    /// Whether this outbox still keeps what it sends for a resumption of its session.
    pub(crate) fn is_resumable(&self) -> bool {
        self.link.lock().replay.is_some()
    }

    fn queue(&self, link: &Link, frame: Bytes) -> bool {
        let kept = link.replay.is_some();
        let Some(tx) = &link.tx else {
            // Broken: the frame goes out on the next connection of the session, if one comes.
            return kept;
        };
        let len = frame.len();
        self.queued.queue(len);
        if tx.send(frame).is_err() {
            self.queued.written(len);
            return kept;
        }
        true
    }

    /// Writes `frame` to the socket from this thread when nothing is queued before it and the
    /// socket takes it now; queues what is left for the writer task. False when the
    /// connection is gone.
    pub(crate) fn send(&self, frame: Bytes) -> bool {
        let mut link = self.link.lock();
        Outbox::keep(&mut link, &frame, || frame.clone());
        match self.write_now(&link, &frame) {
            Written::All => {
                drop(link);
                self.keep_spare(frame);
                true
            }
            Written::From(n) => self.queue(&link, frame.slice(n..)),
        }
    }

    /// [`Outbox::send`] for a frame still in its buffer (as [`wire::finish_buffer`] leaves it):
    /// a small frame written whole keeps its buffer for the next frame as it is, with no
    /// `Bytes` made of it (which costs an allocation for its shared header).
    pub(crate) fn send_buffer(&self, frame: BytesMut) -> bool {
        if frame.len() > COPY_AT_MOST {
            // Kept by reference in the replay log, so shared anyway.
            return self.send(frame.freeze());
        }
        let mut link = self.link.lock();
        Outbox::keep(&mut link, &frame, || Bytes::copy_from_slice(&frame));
        match self.write_now(&link, &frame) {
            Written::All => {
                drop(link);
                if frame.capacity() <= MAX_SPARE {
                    *self.spare.lock() = Some(frame);
                }
                true
            }
            Written::From(n) => self.queue(&link, frame.freeze().slice(n..)),
        }
    }

    /// Whether this outbox writes to a shared-memory ring, where [`Outbox::send_direct`] may
    /// take a large frame.
    pub(crate) fn is_ring(&self) -> bool {
        self.ring
    }

    /// Sends a frame whose `len` bytes (after its length prefix) `write` writes straight into
    /// shared memory, with no copy of them made first, when this outbox writes to a ring,
    /// nothing is queued before the frame, and it goes through the arena now (see
    /// `shm::bulk`): true if it went. False, with nothing sent, otherwise; the caller then
    /// sends the frame as any other (which also meets any fault of the peer's in the memory).
    pub(crate) fn send_direct(
        &self,
        len: usize,
        write: &mut dyn FnMut(&mut super::shm::bulk::BlockWriter) -> Result<(), ()>,
    ) -> bool {
        if !self.ring {
            return false;
        }
        let link = self.link.lock();
        let Some(Target::Ring(side)) = &link.socket else {
            return false;
        };
        if link.replay.is_some() || self.queued.bytes() != 0 {
            return false;
        }
        side.write_frame(len, write).unwrap_or(false)
    }

    /// Writes what the socket takes of `frame` now, if nothing is queued before it; the rest
    /// is for the writer task's queue.
    fn write_now(&self, link: &Link, frame: &[u8]) -> Written {
        let Some(socket) = &link.socket else {
            return Written::From(0);
        };
        if self.queued.bytes() != 0 {
            return Written::From(0);
        }
        match try_send(socket, frame) {
            Ok(n) if n == frame.len() => Written::All,
            Ok(n) => Written::From(n),
            // The writer task meets the same error, and the reader closes the connection.
            Err(_) => Written::From(0),
        }
    }
}

/// How much of a frame [`Outbox::write_now`] wrote.
enum Written {
    All,
    /// The bytes from this offset on are still to be written.
    From(usize),
}

/// Writes what the socket (or ring) takes of `frame` now, without waiting, and returns how
/// many bytes that was.
fn try_send(target: &Target, frame: &[u8]) -> io::Result<usize> {
    let socket = match target {
        Target::Socket(socket) => socket,
        Target::Ring(side) => return side.write_some(frame).map_err(|fault| side.fault(&fault)),
    };
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

    /// Nothing is queued any more (the writer task of a broken connection has stopped).
    fn reset(&self) {
        self.bytes.store(0, Ordering::Release);
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

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(n: u8) -> Bytes {
        Bytes::from(vec![n; 4])
    }

    fn kept(outbox: &Outbox) -> Vec<u8> {
        let link = outbox.link.lock();
        let replay = link.replay.as_ref().expect("resumable");
        replay.frames().map(|f| f[0]).collect()
    }

    /// What a resumable outbox sends is kept until acknowledged, sent on while detached, and
    /// what follows the peer's count is queued first on the next connection.
    #[test]
    fn frames_are_kept_until_acknowledged_and_replayed_after_the_peers_count() {
        let (outbox, _rx) = Outbox::with_socket(None, true);
        for n in 1..=3 {
            assert!(outbox.enqueue(frame(n)));
        }
        outbox.acked(1).unwrap();
        assert_eq!(kept(&outbox), [2, 3]);
        outbox.detach();
        assert!(outbox.send(frame(4)), "kept while broken");
        // An acknowledgement older than the last says nothing; one past what was sent is a
        // broken protocol.
        outbox.acked(0).unwrap();
        assert!(outbox.acked(5).is_err());
        let (tx, mut rx) = mpsc::unbounded_channel();
        {
            let mut link = outbox.link.lock();
            link.replay.as_mut().unwrap().forget(2, true).unwrap();
            for frame in link.replay.as_ref().unwrap().frames() {
                tx.send(frame).unwrap();
            }
            link.tx = Some(tx);
        }
        assert!(outbox.enqueue(frame(5)));
        let sent: Vec<u8> = std::iter::from_fn(|| rx.try_recv().ok())
            .map(|f| f[0])
            .collect();
        assert_eq!(sent, [3, 4, 5], "what the peer missed, then what is new");
        // A peer that asks for what was forgotten cannot be resumed.
        assert!(outbox
            .link
            .lock()
            .replay
            .as_mut()
            .unwrap()
            .forget(1, true)
            .is_err());
    }

    /// An outbox that is not resumable keeps nothing and fails once its connection is gone.
    #[test]
    fn a_plain_outbox_keeps_nothing() {
        let (outbox, rx) = Outbox::with_socket(None, false);
        assert!(outbox.enqueue(frame(1)));
        drop(rx);
        assert!(!outbox.enqueue(frame(2)));
        assert!(!outbox.is_resumable());
    }
}
