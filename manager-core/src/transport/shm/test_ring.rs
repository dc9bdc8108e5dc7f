//! A ring (and an arena beside it) in this process's own memory, with both ends of each and
//! ways to play a hostile peer: for the fuzz target and the tests.

use std::ptr::NonNull;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytes::BytesMut;
use parking_lot::Mutex;

use super::bulk::{BulkIn, BulkOut, ARENA_HEADER};
use super::ring::{Consumer, Header, Producer, ASYNC, HEADER_SIZE};

/// A ring in this process's own memory, with both ends, and a way to play a hostile peer:
/// for the fuzz target and the tests. Beside it, an arena as large as the ring, and the ends
/// that send frames of [`TestRing::BULK_AT_LEAST`] bytes and more through it (see
/// `transport::shm::bulk`).
pub struct TestRing {
    memory: Arc<Memory>,
    producer: Producer,
    pub(super) consumer: Consumer,
    pub(super) bulk_out: Mutex<BulkOut>,
    pub(super) bulk_in: Mutex<BulkIn>,
    claimed: AtomicU64,
}

impl std::fmt::Debug for TestRing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestRing")
            .field("capacity", &self.capacity())
            .finish()
    }
}

struct Memory(NonNull<u8>, std::alloc::Layout);

// SAFETY: plain memory, freed once.
unsafe impl Send for Memory {}
// SAFETY: as above.
unsafe impl Sync for Memory {}

impl Drop for Memory {
    fn drop(&mut self) {
        // SAFETY: allocated with this layout in `TestRing::new`.
        unsafe { std::alloc::dealloc(self.0.as_ptr(), self.1) }
    }
}

impl TestRing {
    /// The smallest frame body a test ring sends through its arena.
    pub const BULK_AT_LEAST: usize = 8;

    /// A ring of `capacity` bytes (rounded up to a power of two, at least 16).
    pub fn new(capacity: usize) -> TestRing {
        let capacity = capacity.max(16).next_power_of_two();
        let arena = HEADER_SIZE + capacity;
        let layout = std::alloc::Layout::from_size_align(arena + ARENA_HEADER + capacity, 64)
            .expect("a small layout");
        // SAFETY: the layout is not zero-sized.
        let ptr = unsafe { std::alloc::alloc_zeroed(layout) };
        let ptr = NonNull::new(ptr).unwrap_or_else(|| std::alloc::handle_alloc_error(layout));
        let memory = Arc::new(Memory(ptr, layout));
        let base = ptr.as_ptr();
        // SAFETY: the allocation holds the header then the data, then the arena's header
        // and data, lives as long as `memory`, and has one producer and one consumer of each.
        let (producer, consumer, bulk_out, bulk_in) = unsafe {
            let data = base.add(HEADER_SIZE);
            let (header, arena) = (base.add(arena), base.add(arena + ARENA_HEADER));
            (
                Producer::new(base, data, capacity, memory.clone(), None),
                Consumer::new(base, data, capacity, memory.clone(), None),
                BulkOut::new(header, arena, capacity, memory.clone(), Self::BULK_AT_LEAST),
                BulkIn::new(header, arena, capacity, memory.clone()),
            )
        };
        TestRing {
            memory,
            producer,
            consumer,
            bulk_out: Mutex::new(bulk_out),
            bulk_in: Mutex::new(bulk_in),
            claimed: AtomicU64::new(0),
        }
    }

    /// Writes what can be written now of `bytes`, a stretch of a stream of frames, as a
    /// connection's writer would (a large frame at its start through the arena); the number
    /// of bytes written, or the fault.
    pub fn write_frames(&self, bytes: &[u8]) -> Result<usize, String> {
        self.bulk_out
            .lock()
            .write(&self.producer, bytes)
            .map_err(|f| f.0)
    }

    /// From here on, the reader copies the byte string that ends a large frame out apart
    /// (a postcard varint at the frame's start, then that many bytes to its end), as a
    /// client reads its replies; [`TestRing::claim`] gives it back.
    pub fn detach_trailing_strings(&self) {
        self.bulk_in
            .lock()
            .detach_with(|head, len| super::bulk::byte_string_after(head, 0, len));
    }

    /// The byte string copied out apart from the next frame decoded (`frame`, without its
    /// prefix), if one was: the frame is then `frame` followed by it. Every frame decoded must
    /// be claimed, in order.
    pub fn claim(&self, frame: &[u8]) -> Option<Vec<u8>> {
        let number = self.claimed.fetch_add(1, Ordering::Relaxed) + 1;
        self.bulk_in.lock().take_detached(number, frame)
    }

    /// Reads frames as a connection's reader would, appending them to `out`: at most `max`
    /// bytes from the ring, and whole frames from the arena.
    pub fn read_frames(&self, out: &mut BytesMut, max: usize) -> Result<usize, String> {
        let mut room = BytesMut::with_capacity(max.max(1));
        let n = self
            .bulk_in
            .lock()
            .read(&self.consumer, &mut room)
            .map_err(|f| f.0);
        out.extend_from_slice(&room);
        n
    }

    /// A hostile receiver publishes its count of arena blocks taken.
    pub fn set_taken(&self, taken: u64) {
        // SAFETY: the arena's header is an atomic, 64-byte aligned, inside the allocation.
        let word = unsafe {
            &*self
                .memory
                .0
                .as_ptr()
                .add(self.arena_at())
                .cast::<AtomicU64>()
        };
        word.store(taken, Ordering::Release);
    }

    /// A hostile sender writes `bytes` into the arena at `offset` (wrapping).
    pub fn scribble_arena(&self, offset: usize, bytes: &[u8]) {
        let capacity = self.capacity();
        let data = self.arena_at() + ARENA_HEADER;
        for (i, byte) in bytes.iter().enumerate() {
            // SAFETY: inside the arena's data, by the modulo.
            unsafe {
                *self
                    .memory
                    .0
                    .as_ptr()
                    .add(data + (offset % capacity + i) % capacity) = *byte
            };
        }
    }

    fn arena_at(&self) -> usize {
        HEADER_SIZE + self.capacity()
    }

    fn header(&self) -> &Header {
        // SAFETY: the allocation starts with a header (atomics, valid for any bits).
        unsafe { &*self.memory.0.as_ptr().cast::<Header>() }
    }

    /// The ring's capacity.
    pub fn capacity(&self) -> usize {
        self.producer.ring.capacity as usize
    }

    /// Writes what fits of `bytes` as the producer would; the number written, or the fault.
    pub fn write(&self, bytes: &[u8]) -> Result<usize, String> {
        self.producer.write_some(bytes).map_err(|f| f.0)
    }

    /// Reads at most `max` bytes as the consumer would, appending them to `out`.
    pub fn read(&self, out: &mut BytesMut, max: usize) -> Result<usize, String> {
        let mut room = BytesMut::with_capacity(max.max(1));
        let n = self.consumer.read_some(&mut room).map_err(|f| f.0);
        out.extend_from_slice(&room);
        n
    }

    /// A hostile producer publishes `head`.
    pub fn set_head(&self, head: u64) {
        self.header().head.store(head, Ordering::Release);
    }

    /// A hostile consumer publishes `tail`.
    pub fn set_tail(&self, tail: u64) {
        self.header().tail.store(tail, Ordering::Release);
    }

    /// A hostile peer writes `bytes` into the data at `offset` (wrapping), and garbage into
    /// the wait words.
    pub fn scribble(&self, offset: u64, bytes: &[u8], wait_words: u32) {
        self.producer.ring.copy_in(offset, bytes);
        let header = self.header();
        header
            .data_wait
            .store(wait_words & !ASYNC, Ordering::Relaxed);
        header
            .space_wait
            .store(wait_words >> 16 & !ASYNC, Ordering::Relaxed);
        header.data_seq.store(wait_words, Ordering::Relaxed);
    }
}
