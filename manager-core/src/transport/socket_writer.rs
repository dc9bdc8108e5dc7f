//! Writing a plain socket from outside the runtime's own stream types: without waiting, and,
//! for a writer task, waiting for room through the runtime.
//!
//! Both sides use it: the server for the sockets its reader pool and CPython threads read, the
//! client for a plain connection's writer task (its reader task watches the socket through an
//! `epoll` set of its own, see `client::direct`, so the runtime must not be told of data
//! arriving on it: a stream registered with the runtime is watched for both directions).
//!
//! A writer waits for room through an `epoll` set of its own too, which watches the socket's
//! writability only while a write waits for it. Registered with the runtime for writability
//! all the time, a Unix socket woke the runtime's thread each time its peer read what was
//! written (the kernel signals room on every read of a Unix socket's peer, where TCP signals it
//! only after a write found no room): one wake-up of the client's I/O thread per blocking call,
//! and of a server's runtime per reply.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use rustix::event::epoll::{self, EventData, EventFlags};
use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncWrite, Interest};

/// Sends what the socket takes of `buf` now, without a SIGPIPE for a peer gone (where the
/// system has the flag): a `WouldBlock` error when it takes nothing.
pub(crate) fn send_now(fd: std::os::fd::BorrowedFd<'_>, buf: &[u8]) -> std::io::Result<usize> {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    let flags = libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL;
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    let flags = libc::MSG_DONTWAIT;
    loop {
        // SAFETY: the descriptor is borrowed, so open for the call; `buf` is valid for
        // `buf.len()` bytes.
        let sent = unsafe { libc::send(fd.as_raw_fd(), buf.as_ptr().cast(), buf.len(), flags) };
        if sent >= 0 {
            return Ok(sent as usize);
        }
        let e = std::io::Error::last_os_error();
        if e.kind() != std::io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// The writing half of a socket taken out of the runtime, for a writer task: it writes without
/// waiting and waits for room through the runtime (see the module documentation).
pub(crate) struct SocketWriter {
    /// A set of its own that holds the socket, watching its writability only while a write
    /// waits; registered with the runtime for readability (the set is ready).
    set: AsyncFd<OwnedFd>,
    /// A duplicate of the socket's descriptor, the one in the set.
    socket: OwnedFd,
    /// Whether the set watches the socket now.
    armed: bool,
    /// Whether dropping the writer ends the socket's writing direction.
    shut_on_drop: bool,
}

impl SocketWriter {
    /// A writer of a duplicate of `socket`'s descriptor: data arriving on the socket, or its
    /// peer reading, wakes nobody through it.
    pub(crate) fn new(socket: BorrowedFd<'_>) -> std::io::Result<SocketWriter> {
        let socket = socket.try_clone_to_owned()?;
        let set = epoll::create(epoll::CreateFlags::CLOEXEC)?;
        epoll::add(&set, &socket, EventData::new_u64(0), EventFlags::empty())?;
        // SAFETY: the `AsyncFd` owns the set's descriptor, which stays open, and is the one
        // `as_raw_fd` returns, for as long as it lives.
        let set = unsafe { AsyncFd::register_with_interest(set, Interest::READABLE) }
            .map_err(std::io::Error::from)?;
        Ok(SocketWriter {
            set,
            socket,
            armed: false,
            shut_on_drop: false,
        })
    }

    /// [`SocketWriter::new`], ending the socket's writing direction when dropped, as the
    /// runtime's own write half does: the peer sees the end even while other duplicates of
    /// the descriptor stay open (a client whose runtime shut down, its writer task dropped
    /// with it, while its proxies still hold the connection).
    pub(crate) fn shutting_down_on_drop(socket: BorrowedFd<'_>) -> std::io::Result<SocketWriter> {
        let mut writer = SocketWriter::new(socket)?;
        writer.shut_on_drop = true;
        Ok(writer)
    }

    /// Has the set watch the socket's writability (`true`), or stop.
    fn watch(&mut self, writable: bool) -> std::io::Result<()> {
        let flags = match writable {
            true => EventFlags::OUT | EventFlags::ET,
            false => EventFlags::empty(),
        };
        epoll::modify(
            self.set.get_ref(),
            &self.socket,
            EventData::new_u64(0),
            flags,
        )?;
        self.armed = writable;
        Ok(())
    }
}

impl Drop for SocketWriter {
    fn drop(&mut self) {
        if self.shut_on_drop {
            let _ = rustix::net::shutdown(&self.socket, rustix::net::Shutdown::Write);
        }
    }
}

impl AsyncWrite for SocketWriter {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.get_mut();
        loop {
            match send_now(this.socket.as_fd(), buf) {
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                sent => {
                    if this.armed {
                        this.watch(false)?;
                    }
                    return Poll::Ready(sent);
                }
            }
            // No room: watch for it (arming looks at the socket: room that came since the
            // write makes the set ready at once), then wait for the set.
            if !this.armed {
                this.watch(true)?;
            }
            let mut ready = ready!(this.set.poll_read_ready(cx))?;
            take_events(this.set.get_ref());
            ready.clear_ready();
        }
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(
            rustix::net::shutdown(&self.socket, rustix::net::Shutdown::Write)
                .map_err(std::io::Error::from),
        )
    }
}

/// Takes the events an `epoll` set holds, without waiting. A set of one socket that nobody
/// waits on keeps its socket on its ready list once an event came, and a change of what it
/// watches (`epoll_ctl`) wakes the set's watchers only for a socket not on that list: taken
/// off it here whenever the set woke its task, the socket is seen again by the next change
/// that finds it ready.
pub(crate) fn take_events(set: &OwnedFd) {
    const NOW: rustix::event::Timespec = rustix::event::Timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    let mut events = [std::mem::MaybeUninit::<epoll::Event>::uninit(); 4];
    let _ = epoll::wait(set, &mut events[..], Some(&NOW));
}
