//! Large frames outside the rings: a frame of at least [`BULK_AT_LEAST`] bytes is written
//! into a block of the sender's *arena* (a second, larger region of the same memory, one per
//! direction) and the ring carries only a descriptor of it, 20 bytes; the receiver copies the
//! block out in one piece, exactly its size, and frees it.
//!
//! Why this shape:
//!
//! - **One copy each way, no copy loop.** Through the ring a 1 MiB frame is copied in pieces
//!   as room appears, and the reader, which cannot know the frame's size before its prefix,
//!   grows its buffer as bytes arrive (about as many bytes again copied in reallocations).
//!   A block is written whole by the sender and read whole into a buffer of its exact size.
//!   A frame is never split between the ring and the arena, so nothing waits for the ring to
//!   drain in between, and a large frame no longer fills the ring that small replies share.
//! - **The receiver copies the block out rather than decoding in it**: the sender can still
//!   write into its arena, and a frame decoded in place (its head borrows strings from the
//!   frame, checked as UTF-8 and then used) could change between the check and the use. A
//!   private copy makes the arena as untrusted as the ring's bytes are: scribbling on it
//!   garbles only the scribbler's own frames. (A sealed memfd per value would let the server
//!   decode in place, at the price of a `memfd_create`, `mmap` and fresh zeroed pages per value,
//!   which we expect to cost more than the copy at 1 MiB; not measured.)
//! - **Written in place, read out once**: a sender that builds a large frame from a head and
//!   a value serializes both straight into the block ([`BulkOut::write_frame`], through a
//!   [`BlockWriter`] that only ever writes there), so the value is copied once on its way in.
//!   A client's reader copies a reply whose value is a byte string to the frame's end (a
//!   `Vec<u8>` returned) out in two pieces, the frame up to the string onto its read buffer
//!   (shortened, as a frame of its own) and the string into a buffer of exactly its size
//!   ([`BulkIn::detach_with`]), which becomes the caller's `Vec<u8>` as it is: one copy on the
//!   way out. Where the string starts is found from a private copy of the frame's first bytes;
//!   nothing in the arena is read twice, and a frame that only looks so is put back together
//!   (the payload in one piece, copied) by whoever decodes it as another type.
//! - **Frees in order, counted**: each side reads its ring in order and copies each block out
//!   as it meets its descriptor, so blocks are freed in the order they were allocated. The
//!   receiver publishes only a count of the blocks it has taken; the sender keeps the list of
//!   its blocks (offset, length) in its own memory and drops as many from its front as the
//!   count says. Nothing the receiver writes is an address: a count that goes back, or past
//!   the blocks sent, is a [`Fault`] (a double free, a free of what was never sent). The
//!   receiver checks each descriptor against its arena's bounds (a block outside it, or
//!   running past its end, is a fault) and against nothing else: a sender that reuses a
//!   block or describes garbage only garbles its own frames.
//! - **Backpressure without a new wait**: when the arena has no room for a frame (many large
//!   values in flight), or the frame is larger than the whole arena, it goes through the ring
//!   as before, whose writer waits for room; the frame is never refused.
//! - An empty arena starts again at its first byte, so that a sequence of large calls reuses
//!   the same (cached, already faulted-in) pages.
//!
//! Frames keep their place in the byte stream: a descriptor is the frame's 4-byte length
//! prefix set to [`MARKER`] (a length no frame has: frames are at most `u32::MAX - 1` bytes;
//! the native limit is 64 MiB), then the block's offset and length, 8 bytes each, little
//! endian. Both ends walk the frames of their stream to know where a prefix is: the writer over
//! its own bytes, the reader over what it copied out of the ring.

use std::collections::VecDeque;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytes::{BufMut, BytesMut};

use super::ring::{Consumer, Fault, Producer};

/// The smallest frame body sent through the arena: smaller ones cost less through the ring
/// than a descriptor and a block.
pub(crate) const BULK_AT_LEAST: usize = 64 * 1024;

/// The length prefix that says "a descriptor follows".
pub(crate) const MARKER: u32 = u32::MAX;

/// The bytes of a descriptor in the ring: the marker, the block's offset and length.
pub(crate) const DESCRIPTOR: usize = 4 + 8 + 8;

/// The bytes of an arena's header: the receiver's count of blocks taken, on a cache line of
/// its own.
pub(crate) const ARENA_HEADER: usize = 64;

/// One arena in memory kept mapped by `keep`.
struct Arena {
    /// The receiver's count of blocks taken (an `AtomicU64`, 64-byte aligned).
    taken: NonNull<AtomicU64>,
    data: NonNull<u8>,
    capacity: usize,
    _keep: Arc<dyn Send + Sync>,
}

// SAFETY: as for the rings: shared memory used through one atomic and byte copies whose
// ranges are checked against the arena's bounds.
unsafe impl Send for Arena {}
// SAFETY: as above.
unsafe impl Sync for Arena {}

impl Arena {
    /// # Safety
    /// `header` must point to [`ARENA_HEADER`] bytes aligned to 64 and `data` to `capacity`
    /// bytes, valid for reads and writes as long as `keep` lives; one sender and one receiver
    /// in this process use them.
    unsafe fn new(
        header: *mut u8,
        data: *mut u8,
        capacity: usize,
        keep: Arc<dyn Send + Sync>,
    ) -> Arena {
        Arena {
            taken: NonNull::new(header.cast()).expect("a mapped arena header"),
            data: NonNull::new(data).expect("a mapped arena"),
            capacity,
            _keep: keep,
        }
    }

    fn taken(&self) -> &AtomicU64 {
        // SAFETY: `new`'s contract; an atomic is valid for any bit pattern.
        unsafe { self.taken.as_ref() }
    }
}

/// The sending end of a direction: the frames written so far (to know where a prefix is) and
/// the arena's blocks.
pub(crate) struct BulkOut {
    arena: Arena,
    /// Frames of at least this many bytes go through the arena.
    at_least: usize,
    /// Bytes of the current frame still to be written (0: the next byte starts a prefix).
    left: u64,
    /// The prefix bytes of the next frame written so far, when a write ended inside one.
    prefix: [u8; 4],
    have: usize,
    /// The blocks the receiver has not taken yet, oldest first: (offset, length).
    blocks: VecDeque<(usize, usize)>,
    /// Blocks sent in all, and the receiver's count of blocks taken as last read.
    sent: u64,
    seen: u64,
}

impl BulkOut {
    /// # Safety
    /// As [`Arena::new`].
    pub(crate) unsafe fn new(
        header: *mut u8,
        data: *mut u8,
        capacity: usize,
        keep: Arc<dyn Send + Sync>,
        at_least: usize,
    ) -> BulkOut {
        BulkOut {
            // SAFETY: the caller's.
            arena: unsafe { Arena::new(header, data, capacity, keep) },
            at_least,
            left: 0,
            prefix: [0; 4],
            have: 0,
            blocks: VecDeque::new(),
            sent: 0,
            seen: 0,
        }
    }

    /// Writes what can be written now of `bytes` (a stretch of the stream of frames) and
    /// returns how many bytes that was: a whole large frame at its start as a descriptor and a
    /// block, anything else through `ring`.
    pub(crate) fn write(&mut self, ring: &Producer, bytes: &[u8]) -> Result<usize, Fault> {
        if self.left == 0 && self.have == 0 && bytes.len() >= 4 {
            let len = u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]) as usize;
            if len >= self.at_least
                && len != MARKER as usize
                && bytes.len() - 4 >= len
                && self.send_block(ring, &bytes[4..4 + len])?
            {
                return Ok(4 + len);
            }
        }
        let n = ring.write_some(bytes)?;
        self.track(&bytes[..n]);
        Ok(n)
    }

    /// Follows the frames of `written`, to know where the next prefix is.
    fn track(&mut self, mut written: &[u8]) {
        while !written.is_empty() {
            if self.left > 0 {
                let n = written.len().min(self.left.min(usize::MAX as u64) as usize);
                self.left -= n as u64;
                written = &written[n..];
                continue;
            }
            let n = written.len().min(4 - self.have);
            self.prefix[self.have..self.have + n].copy_from_slice(&written[..n]);
            self.have += n;
            written = &written[n..];
            if self.have == 4 {
                self.left = u32::from_be_bytes(self.prefix).into();
                self.have = 0;
            }
        }
    }

    /// Sends `body` as a block and its descriptor, if the ring has room for the descriptor and
    /// the arena for the block; false (nothing sent) if not.
    fn send_block(&mut self, ring: &Producer, body: &[u8]) -> Result<bool, Fault> {
        self.send_written(ring, body.len(), &mut |block| block.put(body))
    }

    /// Sends a frame whose body (`len` bytes, the length prefix not included) `write` writes
    /// straight into a block of the arena, with no copy of it made elsewhere first: true if it
    /// went. False, and nothing sent, when it cannot go this way now: a frame of the stream
    /// is only partly written (it goes on through the ring), the frame is smaller than this
    /// direction sends through the arena, the ring or the arena has no room, or `write` failed
    /// or wrote other than `len` bytes.
    pub(crate) fn write_frame(
        &mut self,
        ring: &Producer,
        len: usize,
        write: &mut dyn FnMut(&mut BlockWriter) -> Result<(), ()>,
    ) -> Result<bool, Fault> {
        if self.left != 0 || self.have != 0 || len < self.at_least || len >= MARKER as usize {
            return Ok(false);
        }
        self.send_written(ring, len, write)
    }

    fn send_written(
        &mut self,
        ring: &Producer,
        len: usize,
        write: &mut dyn FnMut(&mut BlockWriter) -> Result<(), ()>,
    ) -> Result<bool, Fault> {
        if ring.room_now()? < DESCRIPTOR as u64 {
            return Ok(false);
        }
        let Some(offset) = self.allocate(len)? else {
            return Ok(false);
        };
        let mut block = BlockWriter {
            // SAFETY: `allocate` found `offset..offset + len` inside the arena.
            at: unsafe { NonNull::new_unchecked(self.arena.data.as_ptr().add(offset)) },
            len,
            written: 0,
        };
        // Nothing is published before the descriptor: a block written in part, or not as
        // long as said, is forgotten (it was never recorded as sent).
        if write(&mut block).is_err() || block.written != len {
            return Ok(false);
        }
        let mut descriptor = [0u8; DESCRIPTOR];
        descriptor[..4].copy_from_slice(&MARKER.to_be_bytes());
        descriptor[4..12].copy_from_slice(&(offset as u64).to_le_bytes());
        descriptor[12..].copy_from_slice(&(len as u64).to_le_bytes());
        // Room only grows while this side (the one writer) holds it: this cannot fail.
        if !ring.write_whole(&descriptor)? {
            return Ok(false);
        }
        self.blocks.push_back((offset, len));
        self.sent += 1;
        Ok(true)
    }

    /// Where a block of `len` bytes fits now, after the blocks the receiver still holds (or at
    /// the start, when it holds none), if it does.
    fn allocate(&mut self, len: usize) -> Result<Option<usize>, Fault> {
        let taken = self.arena.taken().load(Ordering::Acquire);
        if taken < self.seen || taken > self.sent {
            return Err(Fault(format!(
                "the peer says it has taken {taken} blocks of its arena, but {} were sent and \
                 it had taken {}",
                self.sent, self.seen
            )));
        }
        for _ in self.seen..taken {
            self.blocks.pop_front();
        }
        self.seen = taken;
        let capacity = self.arena.capacity;
        let (Some(&(first, _)), Some(&(last, last_len))) =
            (self.blocks.front(), self.blocks.back())
        else {
            return Ok((len <= capacity).then_some(0));
        };
        let end = last + last_len;
        Ok(if end > first {
            // In use: `first..end`; free: after it, and before it.
            if capacity - end >= len {
                Some(end)
            } else if first >= len {
                Some(0)
            } else {
                None
            }
        } else {
            // Wrapped: in use `first..` and `..end`; free between.
            (first - end >= len).then_some(end)
        })
    }
}

impl BulkIn {
    /// Copies the block at `offset` (`len` bytes, checked inside the arena) out in two
    /// pieces, when `detach` finds that the frame ends in one byte string: the frame up to the
    /// string onto `out` as a frame of its own (shortened, with its prefix), the string into a
    /// buffer of its own (see [`BulkIn::take_detached`]). Every byte is copied out of the
    /// shared memory once (the few looked at first are taken from their private copy), and
    /// nothing is read there twice. False, with nothing copied, when the frame has no such
    /// end.
    fn take_split(
        &mut self,
        detach: Detach,
        offset: usize,
        len: usize,
        out: &mut BytesMut,
    ) -> bool {
        let mut head = [0u8; DETACH_HEAD_AT_MOST];
        let looked = len.min(DETACH_HEAD_AT_MOST);
        // SAFETY: `offset..offset + len` is inside the arena (checked by the caller), and
        // `looked <= len`; the bytes are plain bytes whatever the peer writes meanwhile.
        unsafe {
            std::ptr::copy_nonoverlapping(
                self.arena.data.as_ptr().add(offset),
                head.as_mut_ptr(),
                looked,
            )
        };
        // The string starts inside what was looked at (or just after it).
        let Some(split) = detach(&head[..looked], len).filter(|&at| at > 0 && at <= looked) else {
            return false;
        };
        // Its first bytes were copied out already: those come from `head`, the rest from the
        // arena.
        let seen = looked - split;
        let mut bytes = Vec::with_capacity(len - split);
        bytes.extend_from_slice(&head[split..looked]);
        // SAFETY: `offset + looked..offset + len` is inside the arena, and `bytes` has room
        // for `len - looked` more bytes after the `seen` it holds.
        unsafe {
            std::ptr::copy_nonoverlapping(
                self.arena.data.as_ptr().add(offset + looked),
                bytes.as_mut_ptr().add(seen),
                len - looked,
            );
            bytes.set_len(len - split);
        }
        out.reserve(4 + split);
        out.put_u32(split as u32);
        out.extend_from_slice(&head[..split]);
        self.detached.push_back(Detached {
            frame: self.frames,
            len: split,
            bytes,
        });
        true
    }
}

/// Where a frame's body is written in a block of the arena, from its start, never past its
/// end: the block's bytes are only ever written through it (a copy into shared memory), never
/// read back nor borrowed as a slice, since the peer may write there too. A `postcard`
/// flavor, so that a value is serialized straight into the block.
pub(crate) struct BlockWriter {
    at: NonNull<u8>,
    len: usize,
    written: usize,
}

impl BlockWriter {
    /// Appends `bytes`; an error, with nothing written, when they do not fit.
    pub(crate) fn put(&mut self, bytes: &[u8]) -> Result<(), ()> {
        if bytes.len() > self.len - self.written {
            return Err(());
        }
        // SAFETY: `written + bytes.len() <= len`, and the block's `len` bytes are inside the
        // arena and taken by no block the receiver may still read (`BulkOut::allocate`).
        unsafe {
            std::ptr::copy_nonoverlapping(
                bytes.as_ptr(),
                self.at.as_ptr().add(self.written),
                bytes.len(),
            )
        };
        self.written += bytes.len();
        Ok(())
    }

    /// Appends `value` in postcard form.
    pub(crate) fn serialize<T: serde::Serialize + ?Sized>(&mut self, value: &T) -> Result<(), ()> {
        postcard::serialize_with_flavor(value, Flavor(self)).map_err(|_| ())
    }
}

/// A [`BlockWriter`] as postcard writes to it.
struct Flavor<'a>(&'a mut BlockWriter);

impl postcard::ser_flavors::Flavor for Flavor<'_> {
    type Output = ();

    fn try_push(&mut self, data: u8) -> postcard::Result<()> {
        self.try_extend(&[data])
    }

    fn try_extend(&mut self, data: &[u8]) -> postcard::Result<()> {
        self.0
            .put(data)
            .map_err(|()| postcard::Error::SerializeBufferFull)
    }

    fn finalize(self) -> postcard::Result<()> {
        Ok(())
    }
}

/// The receiving end of a direction: where the frames read so far are (to know where a
/// prefix or a descriptor is) and the arena blocks come from.
pub(crate) struct BulkIn {
    arena: Arena,
    /// Bytes of the current frame still to be read (0: a prefix comes next).
    left: u64,
    /// The prefix (or descriptor) read so far of the next frame.
    head: [u8; DESCRIPTOR],
    have: usize,
    /// Blocks taken in all (published for the sender).
    taken: u64,
    /// Where a large frame's trailing byte string starts, if it has one (see [`Detach`]).
    detach: Option<Detach>,
    /// The byte strings detached from blocks taken, oldest first, until their frames claim
    /// them (a reader may take several blocks before it decodes their frames).
    detached: VecDeque<Detached>,
    /// The frames met so far in the stream read, blocks included.
    frames: u64,
}

/// Finds where a frame ends in one byte string (postcard: a varint length, then the bytes),
/// from the frame's first bytes (a private copy) and its whole length: the offset of the
/// string's first byte, if it has one. Only a guess about the bytes, never trusted: a wrong
/// one costs a copy, never a wrong value (see [`BulkIn::take_detached`]).
pub(crate) type Detach = fn(head: &[u8], len: usize) -> Option<usize>;

/// The most bytes of a large frame looked at to find its trailing byte string.
const DETACH_HEAD_AT_MOST: usize = 256;

/// A large frame's trailing byte string, copied out of the arena into a buffer of its own,
/// and which frame of the stream it ends.
struct Detached {
    /// The frame's number in the stream read (the first is 1), and its length once shortened.
    frame: u64,
    len: usize,
    bytes: Vec<u8>,
}

/// Where the byte string that ends a frame of `len` bytes starts, when `head` (its first
/// bytes) holds, from `at` on, a postcard varint whose value is the bytes left after it.
pub(crate) fn byte_string_after(head: &[u8], at: usize, len: usize) -> Option<usize> {
    let (string, rest) = postcard::take_from_bytes::<u64>(head.get(at..)?).ok()?;
    let start = head.len() - rest.len();
    ((start as u64).checked_add(string) == Some(len as u64) && string > 0).then_some(start)
}

impl BulkIn {
    /// # Safety
    /// As [`Arena::new`].
    pub(crate) unsafe fn new(
        header: *mut u8,
        data: *mut u8,
        capacity: usize,
        keep: Arc<dyn Send + Sync>,
    ) -> BulkIn {
        BulkIn {
            // SAFETY: the caller's.
            arena: unsafe { Arena::new(header, data, capacity, keep) },
            left: 0,
            head: [0; DESCRIPTOR],
            have: 0,
            taken: 0,
            detach: None,
            detached: VecDeque::new(),
            frames: 0,
        }
    }

    /// From here on, a large frame that ends in one byte string has that string copied out
    /// into a buffer of its own ([`BulkIn::take_detached`]), which a decoder can then take
    /// whole rather than copy again.
    pub(crate) fn detach_with(&mut self, detach: Detach) {
        self.detach = Some(detach);
    }

    /// The byte string detached from frame number `number` of the stream read (the first is
    /// 1), `frame` its shortened bytes (after its prefix) as decoded from the reader's buffer,
    /// if one was: the frame's bytes are then `frame` followed by these. The decoder asks for
    /// each frame, in order, so a frame without one never takes another's.
    pub(crate) fn take_detached(&mut self, number: u64, frame: &[u8]) -> Option<Vec<u8>> {
        // Any left by frames before this one (not claimed: none is) go.
        while self.detached.front().is_some_and(|d| d.frame < number) {
            self.detached.pop_front();
        }
        let detached = self.detached.front()?;
        if detached.frame != number || detached.len != frame.len() {
            return None;
        }
        self.detached.pop_front().map(|d| d.bytes)
    }

    /// Whether a detached byte string waits for its frame.
    pub(crate) fn has_detached(&self) -> bool {
        !self.detached.is_empty()
    }

    /// Appends to `out` the frames there are to read in `ring`, as a socket would deliver them
    /// (the rest as much as `out`'s spare capacity takes, up to and including the next
    /// block's frame, whole, with its prefix), and returns how many bytes that was: 0 when
    /// there is nothing (more) to read.
    pub(crate) fn read(&mut self, ring: &Consumer, out: &mut BytesMut) -> Result<usize, Fault> {
        let start = out.len();
        ring.read_with(|r| {
            loop {
                if self.left > 0 {
                    let room = out.capacity() - out.len();
                    let n = (r.ready().min(room) as u64).min(self.left) as usize;
                    if n == 0 {
                        break;
                    }
                    r.take_onto(n, out);
                    self.left -= n as u64;
                    continue;
                }
                let need = if self.have >= 4 && self.head[..4] == MARKER.to_be_bytes() {
                    DESCRIPTOR
                } else {
                    4
                };
                let n = r.ready().min(need - self.have);
                if n == 0 {
                    break;
                }
                r.take_into(&mut self.head[self.have..self.have + n]);
                self.have += n;
                if self.have < need {
                    continue;
                }
                if need == 4 {
                    let prefix = [self.head[0], self.head[1], self.head[2], self.head[3]];
                    if u32::from_be_bytes(prefix) != MARKER {
                        out.extend_from_slice(&prefix);
                        self.left = u32::from_be_bytes(prefix).into();
                        self.have = 0;
                        self.frames += 1;
                    }
                    continue;
                }
                self.have = 0;
                let word = |at: usize| {
                    let mut bytes = [0u8; 8];
                    bytes.copy_from_slice(&self.head[at..at + 8]);
                    u64::from_le_bytes(bytes)
                };
                let (offset, len) = (word(4), word(12));
                self.take_block(offset, len, out)?;
                // A large frame is enough for one read: the caller decodes it before more.
                break;
            }
            Ok(out.len() - start)
        })?
    }

    /// Appends the frame in the block at `offset` (`len` bytes) to `out`, with its prefix, and
    /// frees the block.
    fn take_block(&mut self, offset: u64, len: u64, out: &mut BytesMut) -> Result<(), Fault> {
        let capacity = self.arena.capacity as u64;
        let inside = offset
            .checked_add(len)
            .is_some_and(|end| end <= capacity && len < u64::from(MARKER));
        if !inside {
            return Err(Fault(format!(
                "the peer describes a block of {len} bytes at offset {offset} of its arena, \
                 which has {capacity}"
            )));
        }
        let (offset, len) = (offset as usize, len as usize);
        self.frames += 1;
        if let Some(detach) = self.detach {
            if self.take_split(detach, offset, len, out) {
                self.taken += 1;
                self.arena.taken().store(self.taken, Ordering::Release);
                return Ok(());
            }
        }
        out.reserve(4 + len);
        out.put_u32(len as u32);
        let at = out.len();
        // SAFETY: `offset..offset + len` is inside the arena (checked above) and `out` has room
        // for `len` more bytes; the bytes are plain bytes whatever the peer wrote (or writes
        // meanwhile).
        unsafe {
            std::ptr::copy_nonoverlapping(
                self.arena.data.as_ptr().add(offset),
                out.as_mut_ptr().add(at),
                len,
            );
            out.set_len(at + len);
        }
        self.taken += 1;
        self.arena.taken().store(self.taken, Ordering::Release);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_ring::TestRing;
    use super::*;

    fn frame(body: &[u8]) -> Vec<u8> {
        let mut frame = (body.len() as u32).to_be_bytes().to_vec();
        frame.extend_from_slice(body);
        frame
    }

    fn descriptor(offset: u64, len: u64) -> Vec<u8> {
        let mut bytes = MARKER.to_be_bytes().to_vec();
        bytes.extend_from_slice(&offset.to_le_bytes());
        bytes.extend_from_slice(&len.to_le_bytes());
        bytes
    }

    /// Writes all of `stream` and reads it back `max` bytes (or a block) at a time.
    fn round_trip(ring: &TestRing, stream: &[u8], max: usize) -> Vec<u8> {
        let mut out = BytesMut::new();
        let mut rest = stream;
        while !rest.is_empty() {
            let n = ring.write_frames(rest).unwrap();
            rest = &rest[n..];
            while ring.read_frames(&mut out, max).unwrap() > 0 {}
        }
        out.to_vec()
    }

    /// Large frames (through the arena) and small ones (through the ring), one after the
    /// other, read in pieces as small as a byte: the same stream of frames comes out.
    #[test]
    fn large_and_small_frames_come_out_as_they_went_in() {
        let ring = TestRing::new(64);
        let mut stream = Vec::new();
        for i in 0..50u8 {
            let len = [0, 3, 8, 9, 40, 64, 100][i as usize % 7];
            stream.extend(frame(&vec![i; len]));
        }
        for max in [1, 2, 5, 64, 4096] {
            assert_eq!(
                round_trip(&ring, &stream, max),
                stream,
                "reading {max} at a time"
            );
        }
        // The 100-byte frames are larger than the arena: through the ring, in pieces.
        let taken = ring.bulk_in.lock().taken;
        assert!(taken > 0, "blocks went through the arena");
    }

    /// A sender reuses its arena from the start once the receiver took every block, wraps
    /// around it when the start is free, and sends through the ring when it is full.
    #[test]
    fn blocks_are_allocated_after_the_ones_in_use_and_freed_in_order() {
        let ring = TestRing::new(128);
        let mut out = BytesMut::new();
        let send = |len: usize| ring.write_frames(&frame(&vec![len as u8; len])).unwrap();
        let offsets = || -> Vec<usize> {
            let out = ring.bulk_out.lock();
            out.blocks.iter().map(|&(offset, _)| offset).collect()
        };
        assert_eq!(send(60), 64);
        assert_eq!(send(60), 64);
        assert_eq!(offsets(), [0, 60]);
        // 8 bytes are left at the end, none at the start: a frame of 30 goes through the ring.
        assert_eq!(send(30), 34);
        assert_eq!(offsets(), [0, 60]);
        while ring.read_frames(&mut out, 4096).unwrap() > 0 {}
        assert_eq!(out.len(), 64 + 64 + 34);
        // All taken: the next block starts again at 0.
        assert_eq!(send(80), 84);
        assert_eq!(offsets(), [0]);
        while ring.read_frames(&mut out, 4096).unwrap() > 0 {}
        assert_eq!(send(80), 84);
        assert_eq!(send(40), 44);
        assert_eq!(offsets(), [0, 80]);
        // Take the first only: the next wraps to the start, before the one still held.
        let mut partial = BytesMut::new();
        ring.read_frames(&mut partial, DESCRIPTOR).unwrap();
        assert_eq!(partial.len(), 84);
        assert_eq!(send(50), 54);
        assert_eq!(offsets(), [80, 0]);
        // Too little room between them now.
        assert_eq!(send(40), 44);
        assert_eq!(offsets(), [80, 0], "through the ring");
        let mut rest = BytesMut::new();
        while ring.read_frames(&mut rest, 4096).unwrap() > 0 {}
        let lens: Vec<u8> = [40u8, 50, 40]
            .iter()
            .flat_map(|&n| frame(&vec![n; n as usize]))
            .collect();
        assert_eq!(&rest[..], &lens[..]);
    }

    /// With detaching on, a large frame that ends in a byte string comes out shortened, its
    /// string apart, claimed by its own frame only; other frames (small ones, large ones that
    /// do not end so) come out whole, and a string that starts past the bytes looked at stays
    /// in its frame.
    #[test]
    fn trailing_byte_strings_are_copied_out_apart_and_claimed_by_their_frame() {
        let ring = TestRing::new(4096);
        ring.detach_trailing_strings();
        let string = |len: usize| {
            let mut body = Vec::new();
            let bytes: Vec<u8> = (0..len).map(|i| i as u8).collect();
            postcard::to_io(&serde_bytes::Bytes::new(&bytes), &mut body).unwrap();
            (body, bytes)
        };
        let (large, large_bytes) = string(1000);
        let (small, _) = string(3);
        let not_a_string = vec![9u8; 500];
        let mut out = BytesMut::new();
        // One frame at a time, as a writer that finds nothing queued writes them; all read
        // before any is decoded.
        for body in [&small, &large, &not_a_string, &large] {
            let framed = frame(body);
            assert_eq!(ring.write_frames(&framed), Ok(framed.len()));
            while ring.read_frames(&mut out, 4096).unwrap() > 0 {}
        }
        let mut decoder = crate::wire::frame_codec(1 << 20);
        let mut frames = Vec::new();
        while let Some(frame) = tokio_util::codec::Decoder::decode(&mut decoder, &mut out).unwrap()
        {
            let tail = ring.claim(&frame);
            frames.push((frame.to_vec(), tail));
        }
        assert_eq!(frames.len(), 4);
        assert_eq!(frames[0], (small.clone(), None), "small: through the ring");
        for i in [1, 3] {
            assert_eq!(frames[i].0, large[..2], "the varint of 1000");
            assert_eq!(frames[i].1.as_deref(), Some(&large_bytes[..]));
        }
        assert_eq!(frames[2], (not_a_string, None));
        // A frame that is not the one it came from does not take it.
        assert_eq!(ring.claim(&large[..2]), None);
    }

    /// Descriptors that point outside the arena, or run past its end, are faults.
    #[test]
    fn descriptors_outside_the_arena_are_faults() {
        for (offset, len) in [
            (64, 1),
            (0, 65),
            (60, 5),
            (u64::MAX, 2),
            (1, u64::MAX),
            (0, u64::from(MARKER)),
        ] {
            let ring = TestRing::new(64);
            assert_eq!(ring.write(&descriptor(offset, len)), Ok(DESCRIPTOR));
            let fault = ring.read_frames(&mut BytesMut::new(), 4096).unwrap_err();
            assert!(
                fault.contains("describes a block"),
                "{offset}, {len}: {fault}"
            );
        }
        // One that lies inside it is read, whatever it holds (garbage for the decoder).
        let ring = TestRing::new(64);
        ring.scribble_arena(10, b"hello");
        assert_eq!(ring.write(&descriptor(10, 5)), Ok(DESCRIPTOR));
        let mut out = BytesMut::new();
        assert_eq!(ring.read_frames(&mut out, 4096), Ok(9));
        assert_eq!(&out[..], &frame(b"hello")[..]);
    }

    /// A receiver's count of blocks taken that goes back, or past the blocks sent, is a fault
    /// at the sender's next block.
    #[test]
    fn counts_of_blocks_taken_that_cannot_be_are_faults() {
        let ring = TestRing::new(64);
        assert_eq!(ring.write_frames(&frame(&[1; 10])), Ok(14));
        ring.set_taken(2);
        assert!(
            ring.write_frames(&frame(&[1; 10])).is_err(),
            "past what was sent"
        );
        let ring = TestRing::new(64);
        assert_eq!(ring.write_frames(&frame(&[1; 10])), Ok(14));
        while ring.read_frames(&mut BytesMut::new(), 4096).unwrap() > 0 {}
        assert_eq!(ring.write_frames(&frame(&[1; 10])), Ok(14));
        ring.set_taken(0);
        assert!(ring.write_frames(&frame(&[1; 10])).is_err(), "went back");
    }
}
