//! A socket taken out of the runtime for threads to read.
//!
//! A CPython connection read by a thread of its own (`python::thread`) has its socket in
//! blocking mode, so that the kernel wakes the reading thread with the request itself: one
//! system call per read, no readiness wait, no wake-up through the runtime; a native one is
//! read by the reader pool (`reader`, `pool`) and stays non-blocking. Whoever writes to either
//! does so without waiting (`MSG_DONTWAIT`): the reply's sender directly (see
//! `transport::outbox`), else the connection's writer task, which waits for room through the
//! runtime (`transport::SocketWriter`).

use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd, RawFd};

use bytes::{BufMut, BytesMut};

#[cfg(feature = "python")]
use crate::transport::send_now;

/// A socket taken out of the runtime, in blocking mode.
pub(super) enum Socket {
    Tcp(std::net::TcpStream),
    Unix(std::os::unix::net::UnixStream),
}

impl Socket {
    #[cfg(feature = "python")]
    pub(super) fn try_clone(&self) -> std::io::Result<Socket> {
        Ok(match self {
            Socket::Tcp(s) => Socket::Tcp(s.try_clone()?),
            Socket::Unix(s) => Socket::Unix(s.try_clone()?),
        })
    }

    /// Writes what the socket takes of `buf` without waiting (none of it: `Ok(0)`).
    #[cfg(feature = "python")]
    pub(super) fn send_nonblocking(&self, buf: &[u8]) -> std::io::Result<usize> {
        match send_now(self.as_fd(), buf) {
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => Ok(0),
            sent => sent,
        }
    }

    /// Ends both directions, which wakes a thread blocked reading it.
    #[cfg(feature = "python")]
    pub(super) fn shutdown(&self) {
        let _ = match self {
            Socket::Tcp(s) => s.shutdown(std::net::Shutdown::Both),
            Socket::Unix(s) => s.shutdown(std::net::Shutdown::Both),
        };
    }

    /// Ends the reading direction: a thread blocked reading it reads the end, while replies
    /// still go out.
    pub(super) fn shutdown_read(&self) {
        let _ = match self {
            Socket::Tcp(s) => s.shutdown(std::net::Shutdown::Read),
            Socket::Unix(s) => s.shutdown(std::net::Shutdown::Read),
        };
    }

    /// Reads what has arrived into the free room of `inbox` (which has some); `Ok(0)` at the
    /// end of the stream (a `WouldBlock` error when nothing has arrived, the socket being
    /// non-blocking).
    pub(super) fn read_into(&self, inbox: &mut BytesMut) -> std::io::Result<usize> {
        let room = inbox.chunk_mut();
        // SAFETY: `room` is writable for `room.len()` bytes; the descriptor is this socket's,
        // open while `self` is.
        let n = unsafe { libc::recv(self.as_raw_fd(), room.as_mut_ptr().cast(), room.len(), 0) };
        if n < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: the kernel wrote `n` bytes of the room.
        unsafe { inbox.advance_mut(n as usize) };
        Ok(n as usize)
    }
}

impl AsFd for Socket {
    fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        match self {
            Socket::Tcp(s) => s.as_fd(),
            Socket::Unix(s) => s.as_fd(),
        }
    }
}

impl AsRawFd for Socket {
    fn as_raw_fd(&self) -> RawFd {
        match self {
            Socket::Tcp(s) => s.as_raw_fd(),
            Socket::Unix(s) => s.as_raw_fd(),
        }
    }
}

impl Read for &Socket {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match *self {
            Socket::Tcp(s) => (&*s).read(buf),
            Socket::Unix(s) => (&*s).read(buf),
        }
    }
}

impl Write for &Socket {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match *self {
            Socket::Tcp(s) => (&*s).write(buf),
            Socket::Unix(s) => (&*s).write(buf),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
