//! A blocked caller's own reading on a plain TCP or Unix connection.
//!
//! A thread that calls a blocking proxy would otherwise sleep until the client's I/O thread
//! hands it its reply: a thread switch per call, which costs more than the round trip itself on
//! a loaded machine. Instead, once its request is out (written by the caller itself through the
//! connection's [`Outbox`](crate::transport::Outbox)), the caller reads the socket itself while
//! no one else is reading, until its reply arrives, handing any other reply it meets to whoever
//! waits for it. The reader task on the I/O thread steps aside while a caller reads, and takes
//! over when it is done: how, and why no reply is left unread, is [`super::handoff`]'s.
//!
//! TLS connections keep the I/O thread for reading: the TLS session lives there.

use std::future::Future;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::Instant;

use bytes::BytesMut;
use rustix::event::epoll::{self, EventFlags};
use rustix::event::{PollFd, PollFlags, Timespec};
use rustix::net::RecvFlags;
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;

use super::handoff::{self, Handoff, Real, Turn};
use super::{deliver_with, Inner};
use crate::transport::shm::{ring, Side};

pub(super) use super::handoff::Waited;

/// The socket of a plain connection as both the reader task and blocked callers use it.
pub(super) struct Direct {
    socket: Source,
    handoff: Handoff<Real>,
    /// How the reader task of a socket learns that it has something ([`Watch`]); `None` for a
    /// ring.
    watch: Option<Arc<Watch>>,
}

/// What replies are read from: the socket, or the reply ring of a connection through shared
/// memory (see `transport::shm`).
enum Source {
    Socket(PlainSocket),
    Ring(RingSource),
}

/// The reply ring: a blocked caller spins briefly, then sleeps on its futex.
struct RingSource(Arc<Side>);

/// A duplicate of the socket's descriptor, open as long as this lives (so that it cannot be
/// closed and reused under a caller that polls it).
struct PlainSocket(OwnedFd);

impl Direct {
    /// The socket `fd`, watched for its reader task through the runtime of the caller (which
    /// must have one: the task runs there).
    pub(super) fn new(fd: OwnedFd, max_frame: usize) -> io::Result<Direct> {
        let watch = Arc::new(Watch::new(fd.as_fd())?);
        Ok(Direct {
            socket: Source::Socket(PlainSocket(fd)),
            handoff: Handoff::new(max_frame, tokio::sync::Notify::new()),
            watch: Some(watch),
        })
    }

    /// Replies read from the reply ring of `side`.
    pub(super) fn ring(side: Arc<Side>, max_frame: usize) -> Direct {
        Direct {
            socket: Source::Ring(RingSource(side)),
            handoff: Handoff::new(max_frame, tokio::sync::Notify::new()),
            watch: None,
        }
    }

    /// What the reader task of a socket waits on (`None` for a ring).
    pub(super) fn watch(&self) -> Option<WatchHalf> {
        self.watch.clone().map(WatchHalf)
    }

    /// Hands one reply frame read from this socket to its waiter (see `client::deliver`), with
    /// the end the ring's reader copied out apart, if it did (`Side::claim`).
    pub(super) fn deliver(&self, inner: &Inner, frame: BytesMut) -> Result<(), String> {
        let tail = match &self.socket {
            Source::Ring(ring) => ring.0.claim(&frame),
            Source::Socket(_) => None,
        };
        deliver_with(inner, frame, tail)
    }

    /// Shuts the socket down both ways: a caller blocked polling it wakes up and finds the
    /// connection ended (used when the server stopped answering pings).
    pub(super) fn shut_down(&self) {
        match &self.socket {
            Source::Socket(socket) => {
                let _ = rustix::net::shutdown(&socket.0, rustix::net::Shutdown::Both);
            }
            Source::Ring(ring) => ring.0.end("the connection was shut down"),
        }
    }

    /// Takes the socket from its readers for good, once nobody reads it (false while someone
    /// does): the socket broke, and nothing more may be delivered from it.
    pub(super) fn retire(&self) -> bool {
        self.handoff.retire()
    }

    /// On a ring: keeps the reader task from being woken by the replies (a caller about to
    /// read its reply itself says so before it sends its request, which a server may answer
    /// at once); whether it had wanted to be, and so must be told again after
    /// ([`Direct::read_until`] with `quieted`, or [`Direct::unquiet_reader`]).
    pub(super) fn quiet_reader(&self) -> bool {
        match &self.socket {
            Source::Ring(ring) => ring.0.disarm_reader_task(),
            Source::Socket(_) => false,
        }
    }

    /// Undoes a [`Direct::quiet_reader`] that returned true: the reader task wants to be woken
    /// again, and is woken now if something it did not read is there.
    pub(super) fn unquiet_reader(&self) {
        if let Source::Ring(ring) = &self.socket {
            if ring.0.rearm_reader_task() {
                self.handoff.wake_reader().notify_one();
            }
        }
    }

    /// Reads the socket on this thread until `done` says the reply it waits for has arrived,
    /// or `deadline` passes (see [`Handoff::read_until`]); `quieted`: the caller quieted the
    /// reader task already ([`Direct::quiet_reader`]).
    pub(super) fn read_until<T>(
        &self,
        done: impl FnMut() -> Option<T>,
        deadline: Option<Instant>,
        deliver: impl FnMut(BytesMut) -> Result<(), String>,
        fail: impl FnOnce(String),
        quieted: bool,
    ) -> Waited<T> {
        // A caller reading the ring itself keeps the reader task from being woken by the
        // replies meanwhile (one thread switch per call fewer), and wakes it after if
        // something it did not read is there.
        let quieted = quieted || self.quiet_reader();
        // So does a caller reading a socket (see `Watch`); the reply may have come already,
        // and woken the task once.
        let watch = self.watch.as_ref().filter(|watch| watch.quiet());
        let waited = self
            .handoff
            .read_until(&self.socket, done, deadline, deliver, fail);
        if quieted {
            self.unquiet_reader();
        }
        if let Some(watch) = watch {
            watch.unquiet();
        }
        waited
    }
}

impl handoff::Socket for Source {
    fn poll(&self, deadline: Option<Instant>) -> io::Result<bool> {
        match self {
            Source::Socket(s) => s.poll(deadline),
            Source::Ring(r) => r.poll(deadline),
        }
    }

    fn recv(&self, inbox: &mut BytesMut) -> io::Result<usize> {
        match self {
            Source::Socket(s) => s.recv(inbox),
            Source::Ring(r) => r.recv(inbox),
        }
    }

    fn readable_now(&self) -> io::Result<bool> {
        match self {
            Source::Socket(s) => s.readable_now(),
            Source::Ring(r) => r.readable_now(),
        }
    }
}

impl handoff::Socket for RingSource {
    fn poll(&self, deadline: Option<Instant>) -> io::Result<bool> {
        let side = &self.0;
        side.inbound
            .wait(deadline, ring::SPIN)
            .map_err(|fault| side.fault(&fault))
    }

    fn recv(&self, inbox: &mut BytesMut) -> io::Result<usize> {
        let side = &self.0;
        // Looked at first: what was written before the end is read before the end is seen.
        let closed = side.inbound.is_closed();
        match side.read_some(inbox) {
            Ok(0) if closed => Ok(0),
            Ok(0) => Err(io::ErrorKind::WouldBlock.into()),
            Ok(n) => Ok(n),
            Err(fault) => Err(side.fault(&fault)),
        }
    }

    fn readable_now(&self) -> io::Result<bool> {
        let side = &self.0;
        side.inbound.ready().map_err(|fault| side.fault(&fault))
    }
}

/// The reply ring as the reader task waits on it: the eventfd the server writes when the task
/// said it waits.
pub(super) struct RingHalf(pub(super) Arc<Side>);

impl SocketReadHalf for RingHalf {
    fn readable(&self) -> impl Future<Output = io::Result<()>> + Send + '_ {
        self.0.readable()
    }
}

impl handoff::Readiness for RingHalf {
    fn try_io<R>(&self, f: impl FnOnce() -> io::Result<R>) -> io::Result<R> {
        // The ring's readiness is its indices, never stale: nothing to forget.
        f()
    }
}

impl handoff::Socket for PlainSocket {
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
            let mut fds = [PollFd::new(&self.0, PollFlags::IN)];
            match rustix::event::poll(&mut fds, timeout.as_ref()) {
                Ok(0) => continue,
                Ok(_) => return Ok(true),
                Err(rustix::io::Errno::INTR) => continue,
                Err(e) => return Err(e.into()),
            }
        }
    }

    fn recv(&self, inbox: &mut BytesMut) -> io::Result<usize> {
        loop {
            let start = inbox.len();
            match rustix::net::recv(&self.0, inbox.spare_capacity_mut(), RecvFlags::DONTWAIT) {
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

    fn readable_now(&self) -> io::Result<bool> {
        let mut fds = [PollFd::new(&self.0, PollFlags::IN)];
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
}

/// The read half of a plain socket, as the reader task uses it: it waits for readiness, and
/// its readiness is the runtime's (see [`handoff::Readiness`]).
pub(super) trait SocketReadHalf: handoff::Readiness + Send + 'static {
    /// Waits until the socket may have something to read.
    fn readable(&self) -> impl Future<Output = io::Result<()>> + Send + '_;
}

/// How the reader task of a plain socket learns that the socket has something: an `epoll` set
/// of its own that holds only the socket, registered with the runtime for readability.
///
/// Registered with the runtime directly, the socket woke the client's I/O thread for every
/// reply that arrived, also those a blocked caller reads itself (one wake-up of that thread per
/// blocking call, 2.5 context switches per call on the client against 1.1 for a raw blocking
/// socket). A set of its own lets a blocked caller take the socket's readability out of the
/// set while it reads ([`Watch::quiet`], one `epoll_ctl`), so that its reply wakes nobody
/// else, and put it back after ([`Watch::unquiet`]): putting it back looks at the socket, so
/// that what arrived meanwhile and nobody read wakes the reader task then. As with the ring's
/// wish to be woken (`transport::shm`), only the caller that took the readability out gives it
/// back; a caller that finds it out already reads without touching it (it may be woken with the
/// task, which then steps aside, as before). The writer task watches the socket's writability
/// only while it waits for room (`transport::SocketWriter`).
pub(super) struct Watch {
    /// The set, registered with the runtime.
    set: AsyncFd<OwnedFd>,
    /// The socket as the set holds it (a duplicate, open while the set is).
    socket: OwnedFd,
    /// Whether the set watches the socket's readability (false while a caller took it out).
    armed: AtomicBool,
}

/// What the set watches while armed: readability and the peer's end, edge-triggered (the
/// reader task reads until the socket is drained, see `handoff`).
fn armed_flags() -> EventFlags {
    EventFlags::IN | EventFlags::RDHUP | EventFlags::ET
}

impl Watch {
    fn new(socket: BorrowedFd<'_>) -> io::Result<Watch> {
        let set = epoll::create(epoll::CreateFlags::CLOEXEC)?;
        let socket = socket.try_clone_to_owned()?;
        epoll::add(&set, &socket, epoll::EventData::new_u64(0), armed_flags())?;
        // SAFETY: the `AsyncFd` owns the set's descriptor, which stays open, and is the one
        // `as_raw_fd` returns, for as long as it lives.
        let set = unsafe { AsyncFd::register_with_interest(set, Interest::READABLE) }
            .map_err(io::Error::from)?;
        Ok(Watch {
            set,
            socket,
            armed: AtomicBool::new(true),
        })
    }

    /// Takes the socket's readability out of the set for a caller about to read the socket
    /// itself; whether this caller did (and so must [`Watch::unquiet`] after).
    fn quiet(&self) -> bool {
        if !self.armed.swap(false, Ordering::SeqCst) {
            return false;
        }
        self.modify(EventFlags::empty());
        true
    }

    /// Puts the socket's readability back, after a [`Watch::quiet`] that returned true: if the
    /// socket has something, the set is ready at once and the reader task woken.
    fn unquiet(&self) {
        self.armed.store(true, Ordering::SeqCst);
        self.modify(armed_flags());
    }

    fn modify(&self, flags: EventFlags) {
        let set = self.set.get_ref();
        if let Err(e) = epoll::modify(set, &self.socket, epoll::EventData::new_u64(0), flags) {
            // Only a closed set or socket fails here; the reading fails the same way.
            tracing::debug!("cannot change what the reader task of a socket watches: {e}");
        }
    }
}

/// A [`Watch`] as its reader task holds it.
pub(super) struct WatchHalf(Arc<Watch>);

impl SocketReadHalf for WatchHalf {
    async fn readable(&self) -> io::Result<()> {
        // Left marked ready: the reading clears it, through `try_io`, once the socket is drained.
        let mut ready = self.0.set.readable().await?;
        crate::transport::take_events(self.0.set.get_ref());
        ready.retain_ready();
        Ok(())
    }
}

impl handoff::Readiness for WatchHalf {
    fn try_io<R>(&self, f: impl FnOnce() -> io::Result<R>) -> io::Result<R> {
        self.0.set.try_io(Interest::READABLE, |_| f())
    }
}

/// The reader task of a plain connection: reads and delivers replies while no blocked caller
/// reads them itself, until the stream ends or nobody holds the connection any more. Returns
/// why the connection ended, if it did.
pub(super) async fn read_replies<H: SocketReadHalf>(
    inner: Weak<Inner>,
    direct: Arc<Direct>,
    half: H,
) -> Option<String> {
    loop {
        // Biased, as the model check has it: readiness first, and a wake-up stays for later.
        tokio::select! {
            biased;
            ready = half.readable() => if let Err(e) = ready {
                return Some(format!("reading from the server failed: {e}"));
            },
            () = direct.handoff.wake_reader().notified() => {}
        }
        let inner = inner.upgrade()?;
        let turn = direct
            .handoff
            .reader_turn(&direct.socket, &half, |frame| direct.deliver(&inner, frame));
        match turn {
            Turn::SteppedAside | Turn::Read => {}
            Turn::Ended(reason) => return Some(reason),
        }
    }
}
