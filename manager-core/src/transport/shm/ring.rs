//! One direction of a shared-memory connection: a byte ring with one producer and one
//! consumer, in memory both processes map, carrying the same frames a socket would.
//!
//! Each side keeps its own index (the producer's `head`, the consumer's `tail`) in its own
//! memory and only *publishes* it in the shared header; the peer's published index is read,
//! checked (it can only lie between what was read and what was written, at most the capacity
//! apart) and never trusted beyond that. The data bytes are copied out before anything looks
//! at them, so a peer that scribbles on the ring meanwhile only garbles its own frames, which
//! the frame decoder then refuses. A bad index is a [`Fault`]: the connection ends, nobody
//! panics.
//!
//! Waiting: a consumer with nothing to read spins for a few microseconds (when spinning pays,
//! see [`Consumer::wait`]), then says so in
//! `data_wait` (a count of futex waiters, and [`ASYNC`] for a task waiting on an eventfd) and
//! sleeps on the `data_seq` futex; a producer publishes, then (after a full fence) looks at
//! `data_wait` and makes a system call only when someone sleeps. The same, the other way, for a
//! producer waiting for room (`space_seq`, `space_wait`). The futexes are not private: the two
//! parties are different processes.

use std::os::fd::OwnedFd;
use std::ptr::NonNull;
use std::sync::atomic::{fence, AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use parking_lot::Mutex;
use rustix::thread::futex;

/// In a wait word: a task waits on its eventfd, to be written once.
pub(crate) const ASYNC: u32 = 1 << 31;

/// The shared header of one ring: each index and each pair of wait words on a cache line of
/// its own, so that the two sides do not write the same line for different reasons.
#[repr(C, align(64))]
pub(crate) struct Header {
    /// Bytes written in all (published by the producer).
    pub(super) head: AtomicU64,
    _pad0: [u64; 7],
    /// Bytes read in all (published by the consumer).
    pub(super) tail: AtomicU64,
    _pad1: [u64; 7],
    /// Bumped by the producer to wake a consumer asleep on it.
    pub(super) data_seq: AtomicU32,
    /// Consumers asleep on `data_seq` (the count), and [`ASYNC`].
    pub(super) data_wait: AtomicU32,
    _pad2: [u32; 14],
    /// Bumped by the consumer to wake a producer waiting for room.
    space_seq: AtomicU32,
    /// Producers asleep on `space_seq` (the count), and [`ASYNC`].
    pub(super) space_wait: AtomicU32,
    _pad3: [u32; 14],
}

/// The bytes a [`Header`] takes.
pub(crate) const HEADER_SIZE: usize = std::mem::size_of::<Header>();

/// The peer broke the ring: an index it published cannot be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Fault(pub(crate) String);

impl std::fmt::Display for Fault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// A ring's header and data, in memory kept mapped by `_keep`.
pub(super) struct Ring {
    header: NonNull<Header>,
    data: NonNull<u8>,
    /// A power of two.
    pub(super) capacity: u64,
    _keep: Arc<dyn Send + Sync>,
}

// SAFETY: the ring is shared memory used only through atomics (the header) and byte copies
// (the data) whose ranges each side's own index decides; nothing in it is a Rust reference.
unsafe impl Send for Ring {}
// SAFETY: as above.
unsafe impl Sync for Ring {}

impl Ring {
    /// # Safety
    /// `header` must point to [`HEADER_SIZE`] bytes aligned to 64, `data` to `capacity`
    /// bytes, both valid for reads and writes (by this process and maybe another) for as long
    /// as `keep` lives, and nothing else in this process may use them.
    unsafe fn new(
        header: *mut u8,
        data: *mut u8,
        capacity: usize,
        keep: Arc<dyn Send + Sync>,
    ) -> Ring {
        assert!(capacity.is_power_of_two(), "ring capacity {capacity}");
        Ring {
            header: NonNull::new(header.cast()).expect("a mapped header"),
            data: NonNull::new(data).expect("mapped data"),
            capacity: capacity as u64,
            _keep: keep,
        }
    }

    fn header(&self) -> &Header {
        // SAFETY: `new`'s contract; every field is an atomic, valid for any bit pattern.
        unsafe { self.header.as_ref() }
    }

    /// Copies `src` into the ring at stream position `at`, wrapping.
    pub(super) fn copy_in(&self, at: u64, src: &[u8]) {
        let pos = (at & (self.capacity - 1)) as usize;
        let first = src.len().min(self.capacity as usize - pos);
        // SAFETY: `pos + first <= capacity` and `src.len() - first <= pos`: inside the data;
        // the producer alone writes this range until it publishes `head` past it.
        unsafe {
            let data = self.data.as_ptr();
            std::ptr::copy_nonoverlapping(src.as_ptr(), data.add(pos), first);
            std::ptr::copy_nonoverlapping(src.as_ptr().add(first), data, src.len() - first);
        }
    }

    /// Copies `dst.len()` bytes from stream position `at` into `dst`.
    fn copy_to_slice(&self, at: u64, dst: &mut [u8]) {
        let pos = (at & (self.capacity - 1)) as usize;
        let n = dst.len();
        let first = n.min(self.capacity as usize - pos);
        // SAFETY: as in `copy_out`, into a slice of `n` bytes.
        unsafe {
            let data = self.data.as_ptr();
            std::ptr::copy_nonoverlapping(data.add(pos), dst.as_mut_ptr(), first);
            std::ptr::copy_nonoverlapping(data, dst.as_mut_ptr().add(first), n - first);
        }
    }

    /// Appends `n` bytes from stream position `at` to `out` (which has room for them).
    fn copy_out(&self, at: u64, n: usize, out: &mut BytesMut) {
        let pos = (at & (self.capacity - 1)) as usize;
        let first = n.min(self.capacity as usize - pos);
        let start = out.len();
        debug_assert!(out.capacity() - start >= n);
        // SAFETY: the ranges are inside the data (as in `copy_in`) and `out` has `n` bytes of
        // room; the bytes are plain bytes, whatever the peer wrote (or writes meanwhile).
        unsafe {
            let data = self.data.as_ptr();
            let dst = out.as_mut_ptr().add(start);
            std::ptr::copy_nonoverlapping(data.add(pos), dst, first);
            std::ptr::copy_nonoverlapping(data, dst.add(first), n - first);
            out.set_len(start + n);
        }
    }
}

/// Writes the 8 bytes that wake a task waiting on an eventfd; a full counter (a peer that
/// wrote it up) or an error is ignored: the waiter checks the ring anyway.
pub(crate) fn kick(efd: &OwnedFd) {
    let _ = rustix::io::write(efd, &1u64.to_ne_bytes());
}

/// Waits on `seq` (while it still holds `seen`) until `deadline`.
fn futex_wait(seq: &AtomicU32, seen: u32, deadline: Option<Instant>) {
    let timeout = deadline.map(|d| {
        let left = d.saturating_duration_since(Instant::now());
        rustix::event::Timespec {
            tv_sec: left.as_secs().min(i64::MAX as u64) as i64,
            tv_nsec: left.subsec_nanos().into(),
        }
    });
    // Woken, timed out, interrupted, or `seq` moved on: the caller looks again in each case.
    let _ = futex::wait(seq, futex::Flags::empty(), seen, timeout.as_ref());
}

fn futex_wake_all(seq: &AtomicU32) {
    seq.fetch_add(1, Ordering::Release);
    let _ = futex::wake(seq, futex::Flags::empty(), i32::MAX as u32);
}

/// How long a party with nothing to do watches the ring before it sleeps: a few
/// microseconds, so that a reply that is on its way costs no wake-up, and never more.
pub(crate) const SPIN: Duration = Duration::from_micros(4);

/// How often spinning paid lately, per consumer: out of this (spinning pays when what is
/// waited for comes within the spin).
const SCORE_ONE: u32 = 1024;

/// Below this score (a quarter of the waits), a consumer no longer spins: a failed spin is a
/// few microseconds of CPU that others on the machine want, a successful one saves a futex
/// sleep and wake (about as much, on both sides): spinning is worth it while at least about a
/// quarter of the spins end with something to read.
const SCORE_MIN: u32 = SCORE_ONE / 4;

/// A consumer that no longer spins tries once every this many waits, to learn whether it
/// pays again.
const PROBE_EVERY: u32 = 32;

/// The consumers of this process, and how many of them sleep on their futex: the others are
/// awake, running (a server's reader threads, each running its connection's calls).
static CONSUMERS: AtomicUsize = AtomicUsize::new(0);
static SLEEPING: AtomicUsize = AtomicUsize::new(0);

/// How many threads can run at once here.
fn parallelism() -> usize {
    static CPUS: OnceLock<usize> = OnceLock::new();
    *CPUS.get_or_init(|| std::thread::available_parallelism().map_or(1, usize::from))
}

/// The writing end of a ring.
pub(crate) struct Producer {
    pub(super) ring: Ring,
    /// Bytes written in all: this side's own count, never read back from the ring.
    head: Mutex<u64>,
    /// The consumer's eventfd, written when its task waits for data ([`ASYNC`]).
    consumer_task: Option<OwnedFd>,
    closed: AtomicBool,
}

/// The reading end of a ring.
pub(crate) struct Consumer {
    ring: Ring,
    /// Bytes read in all: this side's own count, never read back from the ring.
    tail: Mutex<u64>,
    /// The producer's eventfd, written when its task waits for room ([`ASYNC`]).
    producer_task: Option<OwnedFd>,
    closed: AtomicBool,
    /// How often spinning paid lately (out of [`SCORE_ONE`]), and the waits that did not
    /// spin (for the probes).
    spin_score: AtomicU32,
    unspun: AtomicU32,
}

impl Drop for Consumer {
    fn drop(&mut self) {
        CONSUMERS.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Producer {
    /// # Safety
    /// As [`Ring::new`]; one producer per ring.
    pub(crate) unsafe fn new(
        header: *mut u8,
        data: *mut u8,
        capacity: usize,
        keep: Arc<dyn Send + Sync>,
        consumer_task: Option<OwnedFd>,
    ) -> Producer {
        // SAFETY: the caller's.
        let ring = unsafe { Ring::new(header, data, capacity, keep) };
        let head = ring.header().head.load(Ordering::Relaxed);
        Producer {
            ring,
            head: Mutex::new(head),
            consumer_task,
            closed: AtomicBool::new(false),
        }
    }

    /// The room left, from the tail the consumer published; a fault if that cannot be.
    fn room(&self, head: u64) -> Result<u64, Fault> {
        let tail = self.ring.header().tail.load(Ordering::Acquire);
        let used = head.wrapping_sub(tail);
        if used > self.ring.capacity {
            return Err(Fault(format!(
                "the peer says it has read up to byte {tail} of its ring, but {head} were \
                 written, in a ring of {} bytes",
                self.ring.capacity
            )));
        }
        Ok(self.ring.capacity - used)
    }

    /// Writes what fits of `bytes` now and returns how many that was (0 when the ring is
    /// full), waking the consumer if it sleeps.
    pub(crate) fn write_some(&self, bytes: &[u8]) -> Result<usize, Fault> {
        let mut head = self.head.lock();
        let room = self.room(*head)?;
        let n = bytes.len().min(room as usize);
        if n == 0 {
            return Ok(0);
        }
        self.ring.copy_in(*head, &bytes[..n]);
        *head += n as u64;
        self.ring.header().head.store(*head, Ordering::Release);
        drop(head);
        self.wake_consumer();
        Ok(n)
    }

    /// Writes all of `bytes` now if they fit (true), or nothing (false), waking the consumer
    /// if it sleeps: for what must not be split (a descriptor, see [`super::bulk`]).
    pub(crate) fn write_whole(&self, bytes: &[u8]) -> Result<bool, Fault> {
        let mut head = self.head.lock();
        if self.room(*head)? < bytes.len() as u64 {
            return Ok(false);
        }
        self.ring.copy_in(*head, bytes);
        *head += bytes.len() as u64;
        self.ring.header().head.store(*head, Ordering::Release);
        drop(head);
        self.wake_consumer();
        Ok(true)
    }

    /// The room there is to write now.
    pub(crate) fn room_now(&self) -> Result<u64, Fault> {
        let head = self.head.lock();
        self.room(*head)
    }

    /// Whether there is room to write now.
    pub(crate) fn has_room(&self) -> Result<bool, Fault> {
        let head = self.head.lock();
        Ok(self.room(*head)? > 0)
    }

    fn wake_consumer(&self) {
        let header = self.ring.header();
        // Ordered against the consumer's "I sleep" and its look at `head` after it.
        fence(Ordering::SeqCst);
        let waiting = header.data_wait.load(Ordering::Relaxed);
        if waiting == 0 {
            return;
        }
        if waiting & !ASYNC != 0 {
            futex_wake_all(&header.data_seq);
        }
        if waiting & ASYNC != 0 && header.data_wait.fetch_and(!ASYNC, Ordering::AcqRel) & ASYNC != 0
        {
            if let Some(efd) = &self.consumer_task {
                kick(efd);
            }
        }
    }

    /// Says that this side's task waits for room (its eventfd is to be written), then looks
    /// again: true if there is room after all (the task need not wait).
    pub(crate) fn arm_room(&self) -> Result<bool, Fault> {
        self.ring
            .header()
            .space_wait
            .fetch_or(ASYNC, Ordering::SeqCst);
        self.has_room()
    }

    /// No more is written: a writer waiting for room gives up.
    pub(crate) fn close(&self) {
        self.closed.store(true, Ordering::Release);
    }

    /// Whether [`Producer::close`] was called.
    pub(crate) fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }
}

impl Consumer {
    /// # Safety
    /// As [`Ring::new`]; one consumer per ring.
    pub(crate) unsafe fn new(
        header: *mut u8,
        data: *mut u8,
        capacity: usize,
        keep: Arc<dyn Send + Sync>,
        producer_task: Option<OwnedFd>,
    ) -> Consumer {
        // SAFETY: the caller's.
        let ring = unsafe { Ring::new(header, data, capacity, keep) };
        let tail = ring.header().tail.load(Ordering::Relaxed);
        CONSUMERS.fetch_add(1, Ordering::Relaxed);
        Consumer {
            ring,
            tail: Mutex::new(tail),
            producer_task,
            closed: AtomicBool::new(false),
            spin_score: AtomicU32::new(SCORE_ONE),
            unspun: AtomicU32::new(0),
        }
    }

    /// The bytes there are to read, from the head the producer published; a fault if that
    /// cannot be.
    fn available_from(&self, tail: u64) -> Result<u64, Fault> {
        let head = self.ring.header().head.load(Ordering::Acquire);
        let ready = head.wrapping_sub(tail);
        if ready > self.ring.capacity {
            return Err(Fault(format!(
                "the peer says it has written up to byte {head} of its ring, but {tail} were \
                 read, in a ring of {} bytes",
                self.ring.capacity
            )));
        }
        Ok(ready)
    }

    /// Whether there is something to read, or the ring was closed.
    pub(crate) fn ready(&self) -> Result<bool, Fault> {
        if self.is_closed() {
            return Ok(true);
        }
        let tail = self.tail.lock();
        Ok(self.available_from(*tail)? > 0)
    }

    /// Appends what there is to read to `out`, as much as its spare capacity takes (it has
    /// some), and returns how many bytes that was: 0 when the ring is empty (see
    /// [`Consumer::is_closed`] for whether more may come).
    pub(crate) fn read_some(&self, out: &mut BytesMut) -> Result<usize, Fault> {
        let mut tail = self.tail.lock();
        let ready = self.available_from(*tail)?;
        let n = (ready as usize).min(out.capacity() - out.len());
        if n == 0 {
            return Ok(0);
        }
        self.ring.copy_out(*tail, n, out);
        *tail += n as u64;
        self.ring.header().tail.store(*tail, Ordering::Release);
        drop(tail);
        self.wake_producer();
        Ok(n)
    }

    /// Runs `f` over what there is to read now (see [`Reading`]), then publishes how far it
    /// read, waking the producer if it waits for room.
    pub(crate) fn read_with<R>(&self, f: impl FnOnce(&mut Reading<'_>) -> R) -> Result<R, Fault> {
        let mut tail = self.tail.lock();
        let ready = self.available_from(*tail)?;
        let mut reading = Reading {
            ring: &self.ring,
            at: *tail,
            end: *tail + ready,
        };
        let result = f(&mut reading);
        if reading.at != *tail {
            *tail = reading.at;
            self.ring.header().tail.store(*tail, Ordering::Release);
            drop(tail);
            self.wake_producer();
        }
        Ok(result)
    }

    fn wake_producer(&self) {
        let header = self.ring.header();
        fence(Ordering::SeqCst);
        let waiting = header.space_wait.load(Ordering::Relaxed);
        if waiting == 0 {
            return;
        }
        if waiting & !ASYNC != 0 {
            futex_wake_all(&header.space_seq);
        }
        if waiting & ASYNC != 0
            && header.space_wait.fetch_and(!ASYNC, Ordering::AcqRel) & ASYNC != 0
        {
            if let Some(efd) = &self.producer_task {
                kick(efd);
            }
        }
    }

    /// Whether to spin before sleeping this time: while spinning has been paying (the
    /// score), with a probe now and then when it has not, and never while more of this
    /// process's consumers are awake than it has CPUs (a spin then takes CPU from a thread
    /// that has work).
    fn spins(&self) -> bool {
        let awake = CONSUMERS
            .load(Ordering::Relaxed)
            .saturating_sub(SLEEPING.load(Ordering::Relaxed));
        awake <= parallelism() && self.spin_pays()
    }

    /// Whether spinning has been paying, or it is time to try it again.
    fn spin_pays(&self) -> bool {
        self.spin_score.load(Ordering::Relaxed) >= SCORE_MIN
            || self
                .unspun
                .fetch_add(1, Ordering::Relaxed)
                .is_multiple_of(PROBE_EVERY)
    }

    /// Learns from a spin whether it paid.
    fn spun(&self, paid: bool) {
        let score = self.spin_score.load(Ordering::Relaxed);
        let score = match paid {
            true => score + (SCORE_ONE - score) / 8,
            false => score - score / 8,
        };
        self.spin_score.store(score, Ordering::Relaxed);
    }

    /// Blocks until there is something to read, the ring is closed (true), or `deadline`
    /// passes (false): a spin of at most `spin` first when spinning pays (see
    /// [`Consumer::spins`]), then the futex.
    pub(crate) fn wait(&self, deadline: Option<Instant>, spin: Duration) -> Result<bool, Fault> {
        let header = self.ring.header();
        if !spin.is_zero() && self.spins() {
            let start = Instant::now();
            let mut paid = false;
            while start.elapsed() < spin {
                if self.ready()? {
                    paid = true;
                    break;
                }
                std::hint::spin_loop();
            }
            self.spun(paid);
            if paid {
                return Ok(true);
            }
        }
        loop {
            let seen = header.data_seq.load(Ordering::Acquire);
            header.data_wait.fetch_add(1, Ordering::SeqCst);
            let ready = self.ready();
            if !matches!(ready, Ok(false)) {
                header.data_wait.fetch_sub(1, Ordering::Relaxed);
                return ready;
            }
            SLEEPING.fetch_add(1, Ordering::Relaxed);
            futex_wait(&header.data_seq, seen, deadline);
            SLEEPING.fetch_sub(1, Ordering::Relaxed);
            header.data_wait.fetch_sub(1, Ordering::Relaxed);
            if self.ready()? {
                return Ok(true);
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                return Ok(false);
            }
        }
    }

    /// Says that this side's task waits for data (its eventfd is to be written), then looks
    /// again: true if there is something after all (the task need not wait).
    pub(crate) fn arm_data(&self) -> Result<bool, Fault> {
        self.ring
            .header()
            .data_wait
            .fetch_or(ASYNC, Ordering::SeqCst);
        self.ready()
    }

    /// Takes back what [`Consumer::arm_data`] said (a caller reads instead of the task):
    /// whether it had been said and not yet answered.
    pub(crate) fn disarm_data(&self) -> bool {
        self.ring
            .header()
            .data_wait
            .fetch_and(!ASYNC, Ordering::SeqCst)
            & ASYNC
            != 0
    }

    /// Nothing more will be read: a reader asleep on the ring wakes and finds it closed.
    pub(crate) fn close(&self) {
        self.closed.store(true, Ordering::Release);
        futex_wake_all(&self.ring.header().data_seq);
    }

    /// Whether [`Consumer::close`] was called.
    pub(crate) fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }
}

/// What a consumer may read, from where it has read to where the producer has written, as
/// [`Consumer::read_with`] hands it out: bytes are looked at (copied out) and then taken.
pub(crate) struct Reading<'a> {
    ring: &'a Ring,
    at: u64,
    end: u64,
}

impl Reading<'_> {
    /// The bytes there are to read.
    pub(crate) fn ready(&self) -> usize {
        (self.end - self.at) as usize
    }

    /// Takes the next `dst.len()` bytes (at most [`Reading::ready`]) into `dst`.
    pub(crate) fn take_into(&mut self, dst: &mut [u8]) {
        assert!(dst.len() <= self.ready(), "a read past what is there");
        self.ring.copy_to_slice(self.at, dst);
        self.at += dst.len() as u64;
    }

    /// Takes the next `n` bytes (at most [`Reading::ready`]) onto the end of `out`, which has
    /// room for them.
    pub(crate) fn take_onto(&mut self, n: usize, out: &mut BytesMut) {
        assert!(
            n <= self.ready() && n <= out.capacity() - out.len(),
            "a read past what is there"
        );
        self.ring.copy_out(self.at, n, out);
        self.at += n as u64;
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_ring::TestRing;
    use super::{PROBE_EVERY, SCORE_MIN, SPIN};
    use bytes::BytesMut;
    use std::sync::atomic::Ordering;

    #[test]
    fn bytes_go_round_the_ring_in_order() {
        let ring = TestRing::new(16);
        let mut out = BytesMut::new();
        let mut sent = Vec::new();
        for round in 0u8..20 {
            let chunk: Vec<u8> = (0..7)
                .map(|i| round.wrapping_mul(7).wrapping_add(i))
                .collect();
            assert_eq!(ring.write(&chunk), Ok(7));
            sent.extend_from_slice(&chunk);
            assert_eq!(ring.read(&mut out, 5), Ok(5));
            assert_eq!(ring.read(&mut out, 64), Ok(2));
        }
        assert_eq!(&out[..], &sent[..]);
        // Full: what does not fit is left.
        assert_eq!(ring.write(&[1; 20]), Ok(16));
        assert_eq!(ring.write(&[1; 20]), Ok(0));
    }

    #[test]
    fn a_consumer_spins_while_spinning_pays_and_probes_otherwise() {
        let ring = TestRing::new(16);
        let consumer = &ring.consumer;
        assert!(consumer.spin_pays(), "spinning is tried first");
        let mut failed = 0;
        while consumer.spin_score.load(Ordering::Relaxed) >= SCORE_MIN {
            consumer.spun(false);
            failed += 1;
            assert!(failed < 100, "failed spins never stop it");
        }
        // From 1024, a spin that fails takes an eighth: a quarter is left after 11.
        assert_eq!(failed, 11);
        let probes = (0..64).filter(|_| consumer.spin_pays()).count();
        assert_eq!(
            probes,
            64 / PROBE_EVERY as usize,
            "a probe once in 32 waits"
        );
        for _ in 0..3 {
            consumer.spun(true);
        }
        assert!(consumer.spin_pays(), "spins that pay again bring it back");
        // Something to read: the wait returns at once, however it spins.
        assert_eq!(ring.write(b"x"), Ok(1));
        assert_eq!(consumer.wait(None, SPIN), Ok(true));
    }

    #[test]
    fn indices_a_peer_cannot_have_published_are_faults() {
        let ring = TestRing::new(16);
        ring.set_head(17);
        assert!(ring.read(&mut BytesMut::new(), 64).is_err());
        ring.set_head(u64::MAX);
        assert!(ring.read(&mut BytesMut::new(), 64).is_err());
        let ring = TestRing::new(16);
        ring.set_tail(1);
        assert!(ring.write(b"x").is_err(), "read past what was written");
        // A tail behind by more than the capacity.
        let ring = TestRing::new(16);
        assert_eq!(ring.write(&[0; 16]), Ok(16));
        ring.set_tail(u64::MAX - 3);
        assert!(ring.write(b"x").is_err());
    }
}
