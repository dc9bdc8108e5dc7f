//! A blocked caller's own reading on a plain TCP or Unix connection.
//!
//! A thread that calls a blocking proxy would otherwise sleep until the client's I/O thread
//! hands it its reply: a thread switch per call, which costs more than the round trip itself on
//! a loaded machine. Instead, once its request is out (written by the caller itself through the
//! connection's [`Outbox`](crate::transport::Outbox)), the caller reads the socket itself while
//! no one else is reading, until its reply arrives, handing any other reply it meets to whoever
//! waits for it. The reader task on the I/O thread steps aside while a caller reads, and takes
//! over when it is done.
//!
//! TLS connections keep the I/O thread for reading: the TLS session lives there.

use std::future::Future;
use std::io;
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::Instant;

use bytes::BytesMut;
use parking_lot::{Mutex, MutexGuard};
use rustix::event::{PollFd, PollFlags, Timespec};
use rustix::net::RecvFlags;
use tokio::io::Interest;
use tokio::sync::Notify;
use tokio_util::codec::Decoder;

use super::{deliver, Inner};
use crate::wire::{self, FrameDecoder};

/// How much a read asks the socket for, at least.
const READ_CHUNK: usize = 16 * 1024;

/// Makes room in `inbox` for the next read: at least [`READ_CHUNK`], and as much as it holds
/// already, so that a large reply arriving in pieces is copied O(1) times per byte (the
/// buffer is shared with the replies split off it, and then grows only by what is asked).
fn make_room(inbox: &mut BytesMut) {
    inbox.reserve(READ_CHUNK.max(inbox.len()));
}

/// The socket of a plain connection as both the reader task and blocked callers use it.
pub(super) struct Direct {
    /// A duplicate of the socket's descriptor, open as long as this lives (so that it cannot
    /// be closed and reused under a caller that polls it).
    fd: OwnedFd,
    /// Bytes read and not yet decoded. Whoever holds the lock is the connection's reader.
    inbox: Mutex<BytesMut>,
    decoder: FrameDecoder,
    /// Set by the reader task when it found a caller reading and stepped aside; the caller then
    /// wakes it when done, so that no data is left unread.
    missed: AtomicBool,
    wake_reader: Notify,
}

/// How a blocked caller's wait ended.
pub(super) enum Waited<T> {
    /// The reply (or the error the connection failed with) arrived.
    Done(T),
    /// The deadline passed first.
    TimedOut,
    /// The reader task is reading: wait for it to deliver the reply.
    Busy,
}

impl Direct {
    pub(super) fn new(fd: OwnedFd, max_frame: usize) -> Direct {
        Direct {
            fd,
            inbox: Mutex::new(BytesMut::new()),
            decoder: wire::frame_codec(max_frame),
            missed: AtomicBool::new(false),
            wake_reader: Notify::new(),
        }
    }

    /// Shuts the socket down both ways: a caller blocked polling it wakes up and finds the
    /// connection ended (used when the server stopped answering pings).
    pub(super) fn shut_down(&self) {
        let _ = rustix::net::shutdown(&self.fd, rustix::net::Shutdown::Both);
    }

    /// Reads the socket on this thread until `done` says the reply it waits for has arrived,
    /// or `deadline` passes. Each complete frame read is given to `deliver`; a failure of the
    /// connection (end of stream, a bad frame) is given to `fail` and ends the wait, as the
    /// failure is delivered to every waiter. Returns [`Waited::Busy`] at once when another
    /// reader holds the socket.
    pub(super) fn read_until<T>(
        &self,
        mut done: impl FnMut() -> Option<T>,
        deadline: Option<Instant>,
        mut deliver: impl FnMut(BytesMut) -> Result<(), String>,
        fail: impl FnOnce(String),
    ) -> Waited<T> {
        let Some(mut inbox) = self.inbox.try_lock() else {
            return Waited::Busy;
        };
        // The reply cannot be there yet right after the request went out: wait before reading.
        let mut wait_first = true;
        let waited = loop {
            // What an earlier reader left in the buffer first, then the socket.
            if let Err(reason) = self.decode_all(&mut inbox, &mut deliver) {
                fail(reason);
                break done().map_or(Waited::Busy, Waited::Done);
            }
            if let Some(result) = done() {
                break Waited::Done(result);
            }
            if wait_first {
                match self.poll(deadline) {
                    Ok(true) => {}
                    Ok(false) => break Waited::TimedOut,
                    Err(e) => {
                        fail(format!("waiting for the server failed: {e}"));
                        break done().map_or(Waited::Busy, Waited::Done);
                    }
                }
            }
            match self.recv(&mut inbox) {
                Ok(0) => {
                    fail("the server closed the connection".to_string());
                    break done().map_or(Waited::Busy, Waited::Done);
                }
                // More of a large reply may follow at once.
                Ok(_) => wait_first = false,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => wait_first = true,
                Err(e) => {
                    fail(format!("reading from the server failed: {e}"));
                    break done().map_or(Waited::Busy, Waited::Done);
                }
            }
        };
        self.step_down(inbox);
        waited
    }

    /// Gives up the reader's place. If the reader task stepped aside meanwhile and something
    /// came that this caller did not read, the task is woken to read it (it forgot the
    /// socket's readiness when it stepped aside).
    fn step_down(&self, inbox: MutexGuard<'_, BytesMut>) {
        drop(inbox);
        if self.missed.swap(false, Ordering::SeqCst) && !matches!(self.readable_now(), Ok(false)) {
            self.wake_reader.notify_one();
        }
    }

    /// Whether the socket has something to read (or an error to report) right now.
    fn readable_now(&self) -> io::Result<bool> {
        let mut fds = [PollFd::new(&self.fd, PollFlags::IN)];
        let now = Timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        loop {
            match rustix::event::poll(&mut fds, Some(&now)) {
                Ok(n) => return Ok(n > 0),
                Err(rustix::io::Errno::INTR) => continue,
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Decodes every complete frame in `inbox` and hands each to `deliver`.
    fn decode_all(
        &self,
        inbox: &mut BytesMut,
        deliver: &mut impl FnMut(BytesMut) -> Result<(), String>,
    ) -> Result<(), String> {
        let mut decoder = self.decoder;
        while let Some(frame) = decoder
            .decode(inbox)
            .map_err(|e| format!("bad frame from the server: {e}"))?
        {
            deliver(frame)?;
        }
        Ok(())
    }

    /// Reads what the socket has into `inbox`, without waiting; `WouldBlock` when nothing.
    fn recv(&self, inbox: &mut BytesMut) -> io::Result<usize> {
        make_room(inbox);
        loop {
            let start = inbox.len();
            match rustix::net::recv(&self.fd, inbox.spare_capacity_mut(), RecvFlags::DONTWAIT) {
                Ok(((filled, _), _)) => {
                    let n = filled.len();
                    // SAFETY: `recv` initialised the first `n` bytes of the spare capacity.
                    unsafe { inbox.set_len(start + n) };
                    return Ok(n);
                }
                Err(rustix::io::Errno::INTR) => continue,
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Waits until the socket is readable (true) or `deadline` passes (false).
    fn poll(&self, deadline: Option<Instant>) -> io::Result<bool> {
        loop {
            let timeout = match deadline {
                None => None,
                Some(deadline) => {
                    let left = deadline.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return Ok(false);
                    }
                    Some(Timespec::try_from(left).unwrap_or(Timespec {
                        tv_sec: i64::MAX,
                        tv_nsec: 0,
                    }))
                }
            };
            let mut fds = [PollFd::new(&self.fd, PollFlags::IN)];
            match rustix::event::poll(&mut fds, timeout.as_ref()) {
                Ok(0) => continue,
                Ok(_) => return Ok(true),
                Err(rustix::io::Errno::INTR) => continue,
                Err(e) => return Err(e.into()),
            }
        }
    }
}

/// What one read of the reader task got.
pub(super) enum Got {
    /// The server closed the connection.
    Closed,
    /// `more` says whether more may follow at once (false once the socket said it had no
    /// more, or a read left room in the buffer).
    Bytes { more: bool },
}

/// The read half of a plain socket, as the reader task uses it.
pub(super) trait SocketReadHalf: Send + 'static {
    /// Waits until the socket may have something to read.
    fn readable(&self) -> impl Future<Output = io::Result<()>> + Send + '_;
    /// Reads what the socket has into `inbox`, without waiting, and always with a real read:
    /// the runtime's idea of the socket's readiness may be out of date, since callers read
    /// the socket behind its back (and the readiness it forgot in `lock_or_forget` may have
    /// been data that no caller then read). A read shorter than the room in `inbox` tells the
    /// runtime that the socket is drained, so that the next read waits for it without a read
    /// that fails first (one system call per reply fewer than reading until it would block).
    fn read_now(&self, direct: &Direct, inbox: &mut BytesMut) -> io::Result<Got>;
    /// Takes `inbox` if no caller holds it. If one does, forgets the readiness seen before the
    /// attempt, and only that (readiness that came later wakes the task again): the caller
    /// reads what is there. The flag says whether the socket was marked readable at all (if
    /// not, nothing was attempted).
    fn lock_or_forget<'a>(
        &self,
        inbox: &'a Mutex<BytesMut>,
    ) -> (Option<MutexGuard<'a, BytesMut>>, bool);
}

macro_rules! socket_read_half {
    ($half:ty) => {
        impl SocketReadHalf for $half {
            fn readable(&self) -> impl Future<Output = io::Result<()>> + Send + '_ {
                <$half>::readable(self)
            }
            fn read_now(&self, direct: &Direct, inbox: &mut BytesMut) -> io::Result<Got> {
                let mut tried = false;
                // Through `try_io`, so that a read that drains the socket clears exactly the
                // readiness seen before it.
                let read = self.as_ref().try_io(Interest::READABLE, || {
                    tried = true;
                    let room = inbox.capacity() - inbox.len();
                    match direct.recv(inbox) {
                        // Drained: the bytes are in `inbox`, the readiness is to be cleared.
                        Ok(n) if n > 0 && n < room => {
                            Err(io::Error::from(io::ErrorKind::WouldBlock))
                        }
                        other => other,
                    }
                });
                match read {
                    Ok(0) => Ok(Got::Closed),
                    Ok(_) => Ok(Got::Bytes { more: true }),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        if tried {
                            return Ok(Got::Bytes { more: false });
                        }
                        // The runtime thinks there is nothing, which may be stale: read anyway.
                        match direct.recv(inbox) {
                            Ok(0) => Ok(Got::Closed),
                            Ok(_) => Ok(Got::Bytes { more: true }),
                            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                                Ok(Got::Bytes { more: false })
                            }
                            Err(e) => Err(e),
                        }
                    }
                    Err(e) => Err(e),
                }
            }
            fn lock_or_forget<'a>(
                &self,
                inbox: &'a Mutex<BytesMut>,
            ) -> (Option<MutexGuard<'a, BytesMut>>, bool) {
                let mut tried = false;
                // `try_io` clears, on `WouldBlock`, the readiness it saw before calling.
                let locked = self.as_ref().try_io(Interest::READABLE, || {
                    tried = true;
                    inbox
                        .try_lock()
                        .ok_or_else(|| io::Error::from(io::ErrorKind::WouldBlock))
                });
                (locked.ok(), tried)
            }
        }
    };
}
socket_read_half!(tokio::net::tcp::OwnedReadHalf);
socket_read_half!(tokio::net::unix::OwnedReadHalf);

/// The reader task of a plain connection: reads and delivers replies while no blocked caller
/// reads them itself, until the stream ends or nobody holds the connection any more. Returns
/// why the connection ended, if it did.
pub(super) async fn read_replies<H: SocketReadHalf>(
    inner: Weak<Inner>,
    direct: Arc<Direct>,
    half: H,
) -> Option<String> {
    loop {
        tokio::select! {
            ready = half.readable() => if let Err(e) = ready {
                return Some(format!("reading from the server failed: {e}"));
            },
            () = direct.wake_reader.notified() => {}
        }
        let inner = inner.upgrade()?;
        // Say so before trying, so that if a caller is reading, either this task gets the
        // lock or the caller, stepping down, wakes it when something it did not read is left.
        direct.missed.store(true, Ordering::SeqCst);
        let mut inbox = match half.lock_or_forget(&direct.inbox) {
            (Some(inbox), _) => inbox,
            // Woken by a caller with the socket not marked readable: nothing to forget.
            (None, false) => match direct.inbox.try_lock() {
                Some(inbox) => inbox,
                None => continue,
            },
            (None, true) => continue,
        };
        direct.missed.store(false, Ordering::Relaxed);
        let ended = loop {
            make_room(&mut inbox);
            match half.read_now(&direct, &mut inbox) {
                Ok(Got::Closed) => break Some("the server closed the connection".to_string()),
                Ok(Got::Bytes { more: true }) => {}
                Ok(Got::Bytes { more: false }) => break None,
                Err(e) => break Some(format!("reading from the server failed: {e}")),
            }
        };
        // Replies that arrived whole are delivered even when the stream ended after them.
        if let Err(reason) = direct.decode_all(&mut inbox, &mut |frame| deliver(&inner, frame)) {
            return Some(reason);
        }
        if ended.is_some() {
            return ended;
        }
    }
}
