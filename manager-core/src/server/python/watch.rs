//! A connection's thread watching its socket for a little while before it blocks in `read`.
//!
//! A CPython client sends its next request soon after it has the reply (a loop of calls), and
//! a thread that sleeps in `read` in between pays a wake-up on every call: on an idle machine,
//! the wake-up of a CPU from idle, which takes longer than the call. So a thread that has just
//! answered polls its socket (a non-blocking peek, then a short spin-loop pause) for up to
//! `ServerConfig::python_spin` before it sleeps (off by default: the CPU it costs is counted
//! against the server's):
//!
//! - only while watching has been paying on that connection (at least a quarter of recent
//!   watches saw the request come within the spin; otherwise one wait in
//!   [`PROBE_EVERY`] tries again), so a client that pauses between calls, or many clients
//!   sharing the CPUs with the server (their requests come later than the spin), cost it
//!   nothing but the probes;
//! - by fewer threads at once than the machine has CPUs, so that watching never takes the
//!   CPU a client needs to send what is watched for.

use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// A score of one: every recent watch paid.
const SCORE_ONE: u32 = 256;

/// Below this (a quarter of recent watches paid), a connection's thread no longer watches.
const SCORE_MIN: u32 = SCORE_ONE / 4;

/// A thread that no longer watches tries once every this many waits.
const PROBE_EVERY: u32 = 64;

/// Polls of the socket between two readings of the clock.
const POLLS_PER_CLOCK: u32 = 4;

/// Spin-loop hints between two polls (a fraction of a microsecond).
const PAUSES_PER_POLL: u32 = 32;

/// Whether watching has been paying on one connection.
pub(super) struct Watch {
    spin: Duration,
    score: u32,
    unwatched: u32,
}

/// How many threads watch at once, against the bound.
#[derive(Default)]
pub(super) struct Watching(AtomicUsize);

impl Watching {
    #[cfg(test)]
    const fn new() -> Watching {
        Watching(AtomicUsize::new(0))
    }
}

impl Watch {
    pub(super) fn new(spin: Duration) -> Watch {
        Watch {
            spin,
            score: SCORE_ONE,
            unwatched: 0,
        }
    }

    /// Watches `socket` until something can be read (or the peer is gone), within the spin;
    /// returns at once when watching does not pay here or other threads watch already.
    pub(super) fn before_read(&mut self, socket: &impl AsRawFd, watching: &Watching) {
        if self.spin.is_zero() {
            return;
        }
        if self.score < SCORE_MIN {
            self.unwatched += 1;
            if self.unwatched < PROBE_EVERY {
                return;
            }
        }
        self.unwatched = 0;
        let bound = std::thread::available_parallelism()
            .map_or(1, |n| n.get())
            .saturating_sub(1);
        let Ok(_) = watching
            .0
            .fetch_update(Ordering::Acquire, Ordering::Relaxed, |n| {
                (n < bound).then_some(n + 1)
            })
        else {
            return;
        };
        let paid = watch(socket.as_raw_fd(), self.spin);
        watching.0.fetch_sub(1, Ordering::Release);
        self.score = if paid {
            self.score + (SCORE_ONE - self.score) / 4
        } else {
            self.score - self.score / 4
        };
    }
}

/// Polls `fd` for up to `spin`: whether it became readable (or closed) within it.
fn watch(fd: RawFd, spin: Duration) -> bool {
    let until = Instant::now() + spin;
    let mut polls = 0u32;
    loop {
        let mut byte = 0u8;
        // SAFETY: `fd` is the connection's open socket; the buffer is one valid byte.
        let peeked = unsafe {
            libc::recv(
                fd,
                (&mut byte as *mut u8).cast(),
                1,
                libc::MSG_PEEK | libc::MSG_DONTWAIT,
            )
        };
        let ready = peeked >= 0
            || !matches!(
                std::io::Error::last_os_error().kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::Interrupted
            );
        if ready {
            // A request, the end of the stream or an error (the read reports it): the read
            // will not wait. It paid if it came within the spin, not after the CPU went to
            // other threads for longer.
            return Instant::now() <= until;
        }
        polls += 1;
        if polls.is_multiple_of(POLLS_PER_CLOCK) && Instant::now() >= until {
            return false;
        }
        // Not `yield_now`: on a busy machine it hands the CPU to any other process for a
        // whole slice, far past the spin. A thread that keeps its CPU from the client it waits
        // for sees no request within the spin, and stops watching.
        for _ in 0..PAUSES_PER_POLL {
            std::hint::spin_loop();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::os::unix::net::UnixStream;

    #[test]
    fn a_watch_ends_with_data_or_the_spin_and_learns_whether_it_paid() {
        let (mut client, server) = UnixStream::pair().unwrap();
        let watching = Watching::new();
        let mut watch = Watch::new(Duration::from_millis(2));
        client.write_all(b"x").unwrap();
        assert!(super::watch(server.as_raw_fd(), Duration::from_secs(10)));
        // Nothing to read: each watch takes the spin and fails, until watching stops (on a
        // machine of one CPU it never starts).
        let mut server = server;
        std::io::Read::read_exact(&mut server, &mut [0u8]).unwrap();
        for _ in 0..8 {
            watch.before_read(&server, &watching);
        }
        assert!(
            watch.score < SCORE_MIN || std::thread::available_parallelism().unwrap().get() == 1
        );
        let unwatched = watch.unwatched;
        watch.before_read(&server, &watching);
        assert_eq!(watch.unwatched, unwatched + 1, "it no longer watches");
        assert_eq!(watching.0.load(Ordering::Relaxed), 0);
        // The peer gone: the watch ends at once.
        drop(client);
        assert!(super::watch(server.as_raw_fd(), Duration::from_secs(10)));
    }
}
