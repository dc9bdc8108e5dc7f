//! Who reads a plain connection's socket: blocked callers, who read it themselves, or the
//! connection's reader task, and how no reply is ever left unread between them.
//!
//! # The protocol
//!
//! One word says who reads: `FREE`, `HELD` (by a caller or by the reader task), and the
//! `MISSED` mark beside `HELD`.
//!
//! - A blocked caller takes the word only when it is `FREE`; otherwise someone else reads, and
//!   the caller waits for its reply to be delivered to it ([`Waited::Busy`]). Holding it, the
//!   caller reads until its own reply has come, delivering every other reply it meets.
//! - The reader task, woken by the socket's readiness or by a caller, takes the word when it
//!   is `FREE`. When a caller holds it, the task marks it `MISSED` and steps aside, forgetting
//!   the readiness it saw before the attempt, and only that (inside [`Readiness::try_io`]):
//!   the caller reads what is there.
//! - A caller giving the word back swaps it to `FREE`: if it was `MISSED` and the socket still
//!   has something, it wakes the reader task, whose forgotten readiness may have been just
//!   that.
//! - The reader task, holding the word, reads with a real `recv` until the socket is drained
//!   (it cannot trust the runtime's readiness, which callers' reads and its own forgetting
//!   have made stale), then delivers and gives the word back.
//! - Whoever holds the word delivers every complete frame before giving it back, so a caller
//!   that takes it next finds its reply either delivered or still to read.
//!
//! One atomic word, rather than a lock beside a flag, so that "the task saw the word held"
//! and "the caller saw the mark" are two views of one location: no reordering between two
//! locations can make both miss each other.
//!
//! The code here runs on abstract primitives ([`Prims`]): the client's are std's atomics and
//! tokio's `Notify` ([`Real`]); the model check in `handoff/model.rs` runs the same code on
//! loom's, with a simulated socket and runtime, exploring every interleaving of two callers,
//! the reader task and the server.

use std::io;
use std::sync::atomic::Ordering;
use std::time::Instant;

use bytes::BytesMut;
use tokio_util::codec::Decoder;

use crate::wire::{self, FrameDecoder};

#[cfg(test)]
mod model;

/// How much a read asks the socket for, at least.
const READ_CHUNK: usize = 16 * 1024;

/// Nobody reads the socket.
const FREE: u8 = 0;
/// A caller or the reader task reads the socket.
const HELD: u8 = 1;
/// Beside `HELD`: the reader task found a caller reading and stepped aside.
const MISSED: u8 = 2;

/// Makes room in `inbox` for the next read: what the reply in progress still needs (its whole
/// size was reserved when its prefix arrived, so it is read into place with no copy as the
/// buffer grows), else at least [`READ_CHUNK`] (see [`FrameDecoder::make_room`]).
fn make_room(decoder: &FrameDecoder, inbox: &mut BytesMut) {
    decoder.make_room(inbox, READ_CHUNK);
}

/// The primitives the hand-off is made of: the client's ([`Real`]), or the model check's.
pub(super) trait Prims: 'static {
    /// The word that says who reads (an `AtomicU8`).
    type Word: Word;
    /// The buffer of bytes read and not yet decoded, owned by whoever holds the word.
    type Inbox: Inbox;
    /// Wakes the reader task.
    type Wake: Wake;
    /// Whether the reader task reads the socket even when the runtime says it has nothing. It
    /// must ([`Real`] does): this exists so that the model check can run the reader task as
    /// it was before it did, and show the wake-up that was lost then.
    const READ_WHEN_NOT_READY: bool = true;
}

/// An atomic byte, as the hand-off uses it.
pub(super) trait Word: Send + Sync {
    fn new(value: u8) -> Self;
    fn compare_exchange(
        &self,
        current: u8,
        new: u8,
        success: Ordering,
        failure: Ordering,
    ) -> Result<u8, u8>;
    fn swap(&self, value: u8, order: Ordering) -> u8;
    fn store(&self, value: u8, order: Ordering);
}

macro_rules! word {
    ($atomic:ty) => {
        impl Word for $atomic {
            fn new(value: u8) -> Self {
                <$atomic>::new(value)
            }
            fn compare_exchange(
                &self,
                current: u8,
                new: u8,
                success: Ordering,
                failure: Ordering,
            ) -> Result<u8, u8> {
                <$atomic>::compare_exchange(self, current, new, success, failure)
            }
            fn swap(&self, value: u8, order: Ordering) -> u8 {
                <$atomic>::swap(self, value, order)
            }
            fn store(&self, value: u8, order: Ordering) {
                <$atomic>::store(self, value, order)
            }
        }
    };
}
word!(std::sync::atomic::AtomicU8);
#[cfg(test)]
word!(loom::sync::atomic::AtomicU8);

/// A cell of bytes that only the holder of the word touches.
pub(super) trait Inbox: Send {
    fn new(bytes: BytesMut) -> Self;
    /// Runs `f` on the bytes.
    ///
    /// # Safety
    /// Only the holder of the word may call this, and only while it holds it.
    unsafe fn with_mut<R>(&self, f: impl FnOnce(&mut BytesMut) -> R) -> R;
}

/// Wakes the reader task: the next wait for a wake-up returns at once if nobody waits now.
pub(super) trait Wake: Send + Sync {
    fn wake(&self);
}

/// The socket as the kernel has it: what a caller does on its own thread.
pub(super) trait Socket {
    /// Waits until the socket is readable (true) or `deadline` passes (false).
    fn poll(&self, deadline: Option<Instant>) -> io::Result<bool>;
    /// Reads what the socket has into `inbox`'s spare room, without waiting; `WouldBlock`
    /// when it has nothing.
    fn recv(&self, inbox: &mut BytesMut) -> io::Result<usize>;
    /// Whether the socket has something to read (or an error to report) right now.
    fn readable_now(&self) -> io::Result<bool>;
}

/// The runtime's idea of the socket's readiness, as the reader task sees it.
pub(super) trait Readiness {
    /// Runs `f` if the socket is marked readable (else fails with `WouldBlock` at once); when
    /// `f` fails with `WouldBlock`, clears the readiness seen before calling it, and only
    /// that: readiness that came since stays (tokio's `try_io`).
    fn try_io<R>(&self, f: impl FnOnce() -> io::Result<R>) -> io::Result<R>;
}

/// The client's primitives.
pub(super) struct Real;

impl Prims for Real {
    type Word = std::sync::atomic::AtomicU8;
    type Inbox = StdInbox;
    type Wake = tokio::sync::Notify;
}

/// [`Inbox`] on std's `UnsafeCell`.
pub(super) struct StdInbox(std::cell::UnsafeCell<BytesMut>);

// SAFETY: the bytes are `Send`; who may touch them is said by the word (see `Inbox::with_mut`).
unsafe impl Send for StdInbox {}

impl Inbox for StdInbox {
    fn new(bytes: BytesMut) -> Self {
        StdInbox(std::cell::UnsafeCell::new(bytes))
    }
    unsafe fn with_mut<R>(&self, f: impl FnOnce(&mut BytesMut) -> R) -> R {
        // SAFETY: the caller holds the word, so nobody else touches the bytes.
        f(unsafe { &mut *self.0.get() })
    }
}

impl Wake for tokio::sync::Notify {
    fn wake(&self) {
        self.notify_one();
    }
}

/// How a blocked caller's wait ended.
pub(super) enum Waited<T> {
    /// The reply (or the error the connection failed with) arrived.
    Done(T),
    /// The deadline passed first.
    TimedOut,
    /// Someone else reads the socket: wait for the reply to be delivered.
    Busy,
}

/// What one turn of the reader task came to.
pub(super) enum Turn {
    /// A caller was reading: the task stepped aside, and will be woken when it is done.
    SteppedAside,
    /// The task read the socket until it was drained, and delivered what came whole.
    Read,
    /// The connection ended (its reason), after what came whole was delivered.
    Ended(String),
}

/// What one read of the reader task got.
enum Got {
    /// The server closed the connection.
    Closed,
    /// `more` says whether more may follow at once (false once the socket said it had no
    /// more, or a read left room in the buffer).
    Bytes { more: bool },
}

/// The hand-off state of one plain connection.
pub(super) struct Handoff<P: Prims> {
    /// Who reads the socket: `FREE`, `HELD`, `HELD | MISSED`.
    word: P::Word,
    /// Bytes read and not yet decoded, touched only by the holder of `word`.
    inbox: P::Inbox,
    decoder: FrameDecoder,
    /// Wakes the reader task after it stepped aside.
    wake_reader: P::Wake,
}

// SAFETY: the inbox is touched only by the holder of the word, which one thread at a time
// holds (taken with Acquire, given back with Release, so each holder sees the last one's bytes).
unsafe impl<P: Prims> Sync for Handoff<P> {}

/// The word held; giving it back when dropped (also on a panic, so that a panicking delivery
/// does not leave the socket without a reader).
struct Held<'a, P: Prims, S: Socket> {
    handoff: &'a Handoff<P>,
    /// `Some` for a caller, who may have to wake the reader task; `None` for the task.
    caller: Option<&'a S>,
}

impl<P: Prims, S: Socket> Drop for Held<'_, P, S> {
    fn drop(&mut self) {
        match self.caller {
            Some(socket) => self.handoff.caller_gives_back(socket),
            None => self.handoff.word.store(FREE, Ordering::Release),
        }
    }
}

impl<P: Prims> Handoff<P> {
    pub(super) fn new(max_frame: usize, wake_reader: P::Wake) -> Self {
        Handoff {
            word: P::Word::new(FREE),
            inbox: P::Inbox::new(BytesMut::new()),
            decoder: wire::frame_codec(max_frame),
            wake_reader,
        }
    }

    /// What wakes the reader task (for it to wait on).
    pub(super) fn wake_reader(&self) -> &P::Wake {
        &self.wake_reader
    }

    /// A blocked caller reads `socket` on its own thread until `done` says the reply it waits
    /// for has arrived, or `deadline` passes. Each complete frame read is given to `deliver`;
    /// a failure of the connection (end of stream, a bad frame) is given to `fail` and ends
    /// the wait, as the failure is delivered to every waiter. Returns [`Waited::Busy`] at once
    /// when someone else reads the socket.
    pub(super) fn read_until<S: Socket, T>(
        &self,
        socket: &S,
        mut done: impl FnMut() -> Option<T>,
        deadline: Option<Instant>,
        mut deliver: impl FnMut(BytesMut) -> Result<(), String>,
        fail: impl FnOnce(String),
    ) -> Waited<T> {
        if self
            .word
            .compare_exchange(FREE, HELD, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            return Waited::Busy;
        }
        let _held = Held {
            handoff: self,
            caller: Some(socket),
        };
        // SAFETY: this thread holds the word until `_held` drops, after this.
        unsafe {
            self.inbox.with_mut(|inbox| {
                // The reply cannot be there yet right after the request went out: wait first.
                let mut wait_first = true;
                loop {
                    // What an earlier reader left in the buffer first, then the socket.
                    if let Err(reason) = self.decode_all(inbox, &mut deliver) {
                        fail(reason);
                        return done().map_or(Waited::Busy, Waited::Done);
                    }
                    if let Some(result) = done() {
                        return Waited::Done(result);
                    }
                    if wait_first {
                        match socket.poll(deadline) {
                            Ok(true) => {}
                            Ok(false) => return Waited::TimedOut,
                            Err(e) => {
                                fail(format!("waiting for the server failed: {e}"));
                                return done().map_or(Waited::Busy, Waited::Done);
                            }
                        }
                    }
                    make_room(&self.decoder, inbox);
                    match socket.recv(inbox) {
                        Ok(0) => {
                            fail("the server closed the connection".to_string());
                            return done().map_or(Waited::Busy, Waited::Done);
                        }
                        // More of a large reply may follow at once.
                        Ok(_) => wait_first = false,
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => wait_first = true,
                        Err(e) => {
                            fail(format!("reading from the server failed: {e}"));
                            return done().map_or(Waited::Busy, Waited::Done);
                        }
                    }
                }
            })
        }
    }

    /// Takes the word for good if it is free (true): the socket broke, and from here on a
    /// caller finds it busy and waits for its reply to come another way, and the reader task
    /// (stopped first) never reads again.
    pub(super) fn retire(&self) -> bool {
        self.word
            .compare_exchange(FREE, HELD, Ordering::Acquire, Ordering::Relaxed)
            .is_ok()
    }

    /// A caller gives the word back. If the reader task stepped aside meanwhile and something
    /// came that this caller did not read, the task is woken to read it (it forgot the
    /// socket's readiness when it stepped aside).
    fn caller_gives_back<S: Socket>(&self, socket: &S) {
        let was = self.word.swap(FREE, Ordering::AcqRel);
        if was & MISSED != 0 && !matches!(socket.readable_now(), Ok(false)) {
            self.wake_reader.wake();
        }
    }

    /// The reader task takes the word if it is free (true), or marks it `MISSED` (false): the
    /// caller holding it then wakes the task when it gives it back.
    fn reader_takes_or_marks(&self) -> bool {
        let mut seen = FREE;
        loop {
            let next = if seen == FREE { HELD } else { seen | MISSED };
            match self
                .word
                .compare_exchange(seen, next, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => return seen == FREE,
                Err(now) => seen = now,
            }
        }
    }

    /// One turn of the reader task, woken by the socket's readiness (as `readiness` has it)
    /// or by a caller: it takes the word, or steps aside; holding it, it reads `socket` until
    /// it is drained and gives every complete frame to `deliver`.
    pub(super) fn reader_turn<S: Socket, R: Readiness>(
        &self,
        socket: &S,
        readiness: &R,
        mut deliver: impl FnMut(BytesMut) -> Result<(), String>,
    ) -> Turn {
        let mut tried = false;
        // Inside `try_io`, so that stepping aside forgets exactly the readiness seen before.
        let took = readiness.try_io(|| {
            tried = true;
            if self.reader_takes_or_marks() {
                Ok(())
            } else {
                Err(io::Error::from(io::ErrorKind::WouldBlock))
            }
        });
        // Woken by a caller with the socket not marked readable: nothing to forget.
        let took = took.is_ok() || (!tried && self.reader_takes_or_marks());
        if !took {
            return Turn::SteppedAside;
        }
        let _held = Held::<P, S> {
            handoff: self,
            caller: None,
        };
        // SAFETY: this task holds the word until `_held` drops, after this.
        unsafe {
            self.inbox.with_mut(|inbox| {
                let ended = loop {
                    make_room(&self.decoder, inbox);
                    match self.read_now(socket, readiness, inbox) {
                        Ok(Got::Closed) => break Some("the server closed the connection".into()),
                        Ok(Got::Bytes { more: true }) => {}
                        Ok(Got::Bytes { more: false }) => break None,
                        Err(e) => break Some(format!("reading from the server failed: {e}")),
                    }
                };
                // Replies that arrived whole are delivered even when the stream ended after.
                if let Err(reason) = self.decode_all(inbox, &mut deliver) {
                    return Turn::Ended(reason);
                }
                ended.map_or(Turn::Read, Turn::Ended)
            })
        }
    }

    /// The reader task reads what the socket has into `inbox`, without waiting, and always
    /// with a real read: the runtime's idea of the socket's readiness may be out of date,
    /// since callers read the socket behind its back (and the readiness the task forgot when
    /// it stepped aside may have been data that no caller then read). A read shorter than the
    /// room in `inbox` tells the runtime that the socket is drained, so that the next read
    /// waits for it without a read that fails first (one system call per reply fewer than
    /// reading until it would block).
    fn read_now<S: Socket, R: Readiness>(
        &self,
        socket: &S,
        readiness: &R,
        inbox: &mut BytesMut,
    ) -> io::Result<Got> {
        let mut tried = false;
        // Through `try_io`, so that a read that drains the socket clears exactly the
        // readiness seen before it.
        let read = readiness.try_io(|| {
            tried = true;
            let room = inbox.capacity() - inbox.len();
            match socket.recv(inbox) {
                // Drained: the bytes are in `inbox`, the readiness is to be cleared.
                Ok(n) if n > 0 && n < room => Err(io::Error::from(io::ErrorKind::WouldBlock)),
                other => other,
            }
        });
        match read {
            Ok(0) => Ok(Got::Closed),
            Ok(_) => Ok(Got::Bytes { more: true }),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                if tried || !P::READ_WHEN_NOT_READY {
                    return Ok(Got::Bytes { more: false });
                }
                // The runtime thinks there is nothing, which may be stale: read anyway.
                match socket.recv(inbox) {
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
}
