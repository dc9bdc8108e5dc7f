//! Shared memory between a client and a server on one host: two rings (requests, replies) in
//! a `memfd` the server makes and hands to the client over their Unix socket (`SCM_RIGHTS`),
//! after the authkey handshake. No name is ever given to it, so no other process can open it
//! and nothing is left behind (in `/dev/shm` or anywhere) when either side dies: the memory
//! goes with the last descriptor and mapping. The socket stays open beside it, carrying
//! nothing: its end (EOF, a reset) is how each side learns that the other has gone.
//!
//! The server seals the memory's size before handing it over, so that a client cannot shrink
//! it under the server's mapping (which would make the server's next access fault); everything
//! else the client can write (indices, wait words, data) is checked by the rings
//! ([`ring`]). Eventfds (also made by the server) wake a party's *tasks*, which cannot sleep
//! on a futex: the client's reader task waiting for replies, and each side's writer task
//! waiting for room; threads (a blocked caller, the server's reader thread) sleep on the
//! rings' futexes.
//!
//! Frames of 64 KiB and more travel outside the rings, in blocks of two arenas (one per
//! direction) in the same memory, the rings carrying a descriptor of each: see [`bulk`].
//!
//! Built on `rustix` (already the crate's system-call layer): `memfd_create`, seals, `mmap`,
//! `sendmsg`/`recvmsg` with ancillary descriptors, `eventfd`, and non-private `futex`
//! wait/wake. `nix` would do as well but would be a second such layer; `memmap2` maps files
//! but has neither the seals nor the futexes.

use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::pin::Pin;
use std::ptr::NonNull;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::BytesMut;
use parking_lot::Mutex;
use rustix::event::EventfdFlags;
use rustix::fs::{MemfdFlags, SealFlags};
use rustix::mm::{MapFlags, ProtFlags};
use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncWrite, Interest};
use tokio::net::UnixStream;

pub(crate) mod bulk;
pub(crate) mod ring;
mod test_ring;
use bulk::{BulkIn, BulkOut, ARENA_HEADER, BULK_AT_LEAST};
use ring::{Consumer, Fault, Producer, HEADER_SIZE};
pub use test_ring::TestRing;

/// The bytes of each ring: what does not fit an arena (see [`bulk`]) goes through it, a 1 MiB
/// value and its frame in one piece.
pub(crate) const RING_CAPACITY: usize = 4 << 20;

/// The bytes of each arena: 16 values of 1 MiB in flight each way. Only the pages used are
/// ever backed by memory, and an empty arena starts again at its first byte.
pub(crate) const ARENA_CAPACITY: usize = 16 << 20;

/// Identifies the memory's layout.
const MAGIC: u64 = u64::from_be_bytes(*b"mgr-shm2");

/// Where the rings' and arenas' headers and the data are in the memory: the header, the
/// request ring's and reply ring's data, then the request arena's and reply arena's.
const REQUESTS_HEADER: usize = 256;
const REPLIES_HEADER: usize = REQUESTS_HEADER + HEADER_SIZE;
const REQUESTS_ARENA_HEADER: usize = REPLIES_HEADER + HEADER_SIZE;
const REPLIES_ARENA_HEADER: usize = REQUESTS_ARENA_HEADER + ARENA_HEADER;
const DATA: usize = 4096;
const _: () = assert!(REPLIES_ARENA_HEADER + ARENA_HEADER <= DATA);

/// The memory's own header, written by the server before it hands the memory over.
#[repr(C)]
struct Layout {
    magic: u64,
    requests: u64,
    replies: u64,
    requests_arena: u64,
    replies_arena: u64,
}

/// One mapping of the memory, unmapped when the last ring using it is dropped.
struct Mapping {
    base: NonNull<u8>,
    len: usize,
}

// SAFETY: a mapping is an address range; the rings decide who touches what in it.
unsafe impl Send for Mapping {}
// SAFETY: as above.
unsafe impl Sync for Mapping {}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: mapped by `map` with this length, and no ring uses it any more.
        let _ = unsafe { rustix::mm::munmap(self.base.as_ptr().cast(), self.len) };
    }
}

fn map(fd: &OwnedFd, len: usize) -> io::Result<Arc<Mapping>> {
    // SAFETY: a fresh shared mapping of the whole file; nothing else in this process has it.
    let base = unsafe {
        rustix::mm::mmap(
            std::ptr::null_mut(),
            len,
            ProtFlags::READ | ProtFlags::WRITE,
            MapFlags::SHARED,
            fd,
            0,
        )?
    };
    let base = NonNull::new(base.cast()).ok_or_else(|| io::Error::other("mmap gave null"))?;
    Ok(Arc::new(Mapping { base, len }))
}

/// One party's ends of the two rings, and how its tasks are woken.
pub(crate) struct Side {
    /// Where this party reads (the server: requests; the client: replies).
    pub(crate) inbound: Consumer,
    /// Where this party writes.
    pub(crate) outbound: Producer,
    /// Written by the peer when this party's reader task waits for data (the client's).
    data_task: Option<AsyncFd<OwnedFd>>,
    /// Written by the peer when this party's writer task waits for room.
    room_task: AsyncFd<OwnedFd>,
    /// Large frames from the peer, through its arena.
    bulk_in: Mutex<BulkIn>,
    /// Large frames to the peer, through this party's arena.
    bulk_out: Mutex<BulkOut>,
    /// The frames handed to this party's decoder so far ([`Side::claim`]).
    claimed: std::sync::atomic::AtomicU64,
    /// Why the connection ended, once it has: a fault of the peer's, or its end.
    ended: Mutex<Option<String>>,
    /// Whether it ended because the peer broke the memory.
    faulted: std::sync::atomic::AtomicBool,
}

/// The descriptors a server hands to its client: the memory, and the three eventfds.
pub(crate) struct Handover {
    memory: OwnedFd,
    client_data: OwnedFd,
    client_room: OwnedFd,
    server_room: OwnedFd,
}

fn eventfd() -> io::Result<OwnedFd> {
    Ok(rustix::event::eventfd(
        0,
        EventfdFlags::CLOEXEC | EventfdFlags::NONBLOCK,
    )?)
}

fn dup(fd: &OwnedFd) -> io::Result<OwnedFd> {
    fd.try_clone()
}

/// `efd`, registered with the current runtime for readability.
fn task_waker(efd: OwnedFd) -> io::Result<AsyncFd<OwnedFd>> {
    // SAFETY: the `OwnedFd` owns its descriptor, open and the same until the `AsyncFd`
    // drops it.
    unsafe { AsyncFd::register_with_interest(efd, Interest::READABLE) }.map_err(io::Error::from)
}

/// The server's side: makes the memory and the eventfds, and what to hand to the client.
/// Runs in a runtime (the eventfds are registered with it).
pub(crate) fn server_side() -> io::Result<(Arc<Side>, Handover)> {
    let len = DATA + 2 * RING_CAPACITY + 2 * ARENA_CAPACITY;
    let memory = rustix::fs::memfd_create(
        "manager-connection",
        MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING,
    )?;
    rustix::fs::ftruncate(&memory, len as u64)?;
    rustix::fs::fcntl_add_seals(
        &memory,
        SealFlags::SHRINK | SealFlags::GROW | SealFlags::SEAL,
    )?;
    let mapping = map(&memory, len)?;
    let base = mapping.base.as_ptr();
    // SAFETY: the mapping is `len` bytes, zeroed by ftruncate; the layout is at its start.
    unsafe {
        base.cast::<Layout>().write(Layout {
            magic: MAGIC,
            requests: RING_CAPACITY as u64,
            replies: RING_CAPACITY as u64,
            requests_arena: ARENA_CAPACITY as u64,
            replies_arena: ARENA_CAPACITY as u64,
        })
    };
    let requests_arena = DATA + 2 * RING_CAPACITY;
    let replies_arena = requests_arena + ARENA_CAPACITY;
    let handover = Handover {
        memory,
        client_data: eventfd()?,
        client_room: eventfd()?,
        server_room: eventfd()?,
    };
    // SAFETY: the headers and data lie inside the mapping, each used by one end here.
    let side = unsafe {
        Side {
            inbound: Consumer::new(
                base.add(REQUESTS_HEADER),
                base.add(DATA),
                RING_CAPACITY,
                mapping.clone(),
                Some(dup(&handover.client_room)?),
            ),
            outbound: Producer::new(
                base.add(REPLIES_HEADER),
                base.add(DATA + RING_CAPACITY),
                RING_CAPACITY,
                mapping.clone(),
                Some(dup(&handover.client_data)?),
            ),
            bulk_in: Mutex::new(BulkIn::new(
                base.add(REQUESTS_ARENA_HEADER),
                base.add(requests_arena),
                ARENA_CAPACITY,
                mapping.clone(),
            )),
            bulk_out: Mutex::new(BulkOut::new(
                base.add(REPLIES_ARENA_HEADER),
                base.add(replies_arena),
                ARENA_CAPACITY,
                mapping.clone(),
                BULK_AT_LEAST,
            )),
            data_task: None,
            room_task: task_waker(dup(&handover.server_room)?)?,
            claimed: Default::default(),
            ended: Mutex::new(None),
            faulted: Default::default(),
        }
    };
    Ok((Arc::new(side), handover))
}

/// The client's side, from what the server handed over. Runs in a runtime.
fn client_side(handover: Handover) -> io::Result<Arc<Side>> {
    let len = rustix::fs::fstat(&handover.memory)?.st_size as usize;
    let bad =
        |why: &str| io::Error::new(io::ErrorKind::InvalidData, format!("shared memory: {why}"));
    if len < DATA {
        return Err(bad("too small"));
    }
    let mapping = map(&handover.memory, len)?;
    let base = mapping.base.as_ptr();
    // SAFETY: the mapping is at least `DATA` bytes; the layout is at its start.
    let layout = unsafe { base.cast::<Layout>().read() };
    let (requests, replies) = (layout.requests as usize, layout.replies as usize);
    let (requests_arena, replies_arena) = (
        layout.requests_arena as usize,
        layout.replies_arena as usize,
    );
    if layout.magic != MAGIC
        || !requests.is_power_of_two()
        || !replies.is_power_of_two()
        || Some(len)
            != DATA
                .checked_add(requests)
                .and_then(|n| n.checked_add(replies))
                .and_then(|n| n.checked_add(requests_arena))
                .and_then(|n| n.checked_add(replies_arena))
    {
        return Err(bad("a layout this client does not know"));
    }
    // SAFETY: the headers and data lie inside the mapping (checked above), each used by one
    // end here.
    let side = unsafe {
        Side {
            inbound: Consumer::new(
                base.add(REPLIES_HEADER),
                base.add(DATA + requests),
                replies,
                mapping.clone(),
                Some(handover.server_room),
            ),
            outbound: Producer::new(
                base.add(REQUESTS_HEADER),
                base.add(DATA),
                requests,
                mapping.clone(),
                None,
            ),
            bulk_in: Mutex::new({
                let mut bulk_in = BulkIn::new(
                    base.add(REPLIES_ARENA_HEADER),
                    base.add(DATA + requests + replies + requests_arena),
                    replies_arena,
                    mapping.clone(),
                );
                // A large value returned (`Vec<u8>`) comes out of the arena straight into the
                // buffer the caller gets (`client::Response::take_byte_string`).
                bulk_in.detach_with(crate::wire::value_string_start);
                bulk_in
            }),
            bulk_out: Mutex::new(BulkOut::new(
                base.add(REQUESTS_ARENA_HEADER),
                base.add(DATA + requests + replies),
                requests_arena,
                mapping.clone(),
                BULK_AT_LEAST,
            )),
            data_task: Some(task_waker(handover.client_data)?),
            room_task: task_waker(handover.client_room)?,
            claimed: Default::default(),
            ended: Mutex::new(None),
            faulted: Default::default(),
        }
    };
    Ok(Arc::new(side))
}

/// Sends the memory and the client's eventfds over `stream`, with one byte.
pub(crate) async fn hand_over(stream: &UnixStream, handover: &Handover) -> io::Result<()> {
    use rustix::net::{SendAncillaryBuffer, SendAncillaryMessage, SendFlags};
    let fds: [BorrowedFd<'_>; 4] = [
        handover.memory.as_fd(),
        handover.client_data.as_fd(),
        handover.client_room.as_fd(),
        handover.server_room.as_fd(),
    ];
    loop {
        stream.writable().await?;
        let sent = stream.try_io(Interest::WRITABLE, || {
            let mut space = [std::mem::MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(4))];
            let mut control = SendAncillaryBuffer::new(&mut space);
            control.push(SendAncillaryMessage::ScmRights(&fds));
            let byte = [1u8];
            Ok(rustix::net::sendmsg(
                stream,
                &[io::IoSlice::new(&byte)],
                &mut control,
                SendFlags::NOSIGNAL,
            )?)
        });
        match sent {
            Ok(_) => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(e),
        }
    }
}

/// Receives what [`hand_over`] sent, and maps it: the client's side.
pub(crate) async fn take_over(stream: &UnixStream) -> io::Result<Arc<Side>> {
    use rustix::net::{RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags};
    let fds = loop {
        stream.readable().await?;
        let got = stream.try_io(Interest::READABLE, || {
            let mut space = [std::mem::MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(4))];
            let mut control = RecvAncillaryBuffer::new(&mut space);
            let mut byte = [0u8];
            let got = rustix::net::recvmsg(
                stream,
                &mut [io::IoSliceMut::new(&mut byte)],
                &mut control,
                RecvFlags::CMSG_CLOEXEC,
            )?;
            if got.bytes == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the server closed the connection while handing over shared memory",
                ));
            }
            let mut fds = Vec::new();
            for message in control.drain() {
                if let RecvAncillaryMessage::ScmRights(rights) = message {
                    fds.extend(rights);
                }
            }
            Ok(fds)
        });
        match got {
            Ok(fds) => break fds,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(e),
        }
    };
    let Ok([memory, client_data, client_room, server_room]) = <[OwnedFd; 4]>::try_from(fds) else {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "the server handed over the wrong descriptors for shared memory",
        ));
    };
    client_side(Handover {
        memory,
        client_data,
        client_room,
        server_room,
    })
}

fn drain(efd: &OwnedFd) {
    let mut buf = [0u8; 8];
    let _ = rustix::io::read(efd, &mut buf);
}

impl Side {
    /// Ends the connection for this party, for `why` (the first reason stays): whoever waits
    /// on the rings, thread or task, wakes and finds it ended.
    pub(crate) fn end(&self, why: impl Into<String>) {
        self.ended.lock().get_or_insert_with(|| why.into());
        self.inbound.close();
        self.outbound.close();
        if let Some(data) = &self.data_task {
            ring::kick(data.get_ref());
        }
        ring::kick(self.room_task.get_ref());
    }

    /// The peer broke the memory: the connection ends.
    pub(crate) fn fault(&self, fault: &Fault) -> io::Error {
        let why = format!("its shared memory is corrupt: {fault}");
        self.faulted
            .store(true, std::sync::atomic::Ordering::Release);
        self.end(why.clone());
        io::Error::new(io::ErrorKind::InvalidData, why)
    }

    /// Appends what there is to read to `out` (a large frame whole, from the peer's arena;
    /// the rest as much as `out`'s spare capacity takes, and it has some) and returns how many
    /// bytes that was: 0 when there is nothing to read now.
    pub(crate) fn read_some(&self, out: &mut BytesMut) -> Result<usize, Fault> {
        self.bulk_in.lock().read(&self.inbound, out)
    }

    /// Writes what can be written now of `bytes` (a stretch of the stream of frames: a large
    /// frame at its start through this party's arena) and returns how many bytes that was: 0
    /// when there is no room.
    pub(crate) fn write_some(&self, bytes: &[u8]) -> Result<usize, Fault> {
        self.bulk_out.lock().write(&self.outbound, bytes)
    }

    /// Writes a frame whose body (`len` bytes) `write` writes straight into a block of this
    /// party's arena, if it can go that way now (see [`BulkOut::write_frame`]): whether it
    /// went.
    pub(crate) fn write_frame(
        &self,
        len: usize,
        write: &mut dyn FnMut(&mut bulk::BlockWriter) -> Result<(), ()>,
    ) -> Result<bool, Fault> {
        self.bulk_out.lock().write_frame(&self.outbound, len, write)
    }

    /// Hands the next frame this party decodes (`frame`, split off its read buffer, without
    /// its prefix) the byte string detached from it, if one was (see
    /// [`BulkIn::take_detached`]): its bytes are then `frame` followed by those. Every frame
    /// decoded from what [`Side::read_some`] gave must be claimed, in order.
    pub(crate) fn claim(&self, frame: &[u8]) -> Option<Vec<u8>> {
        use std::sync::atomic::Ordering;
        let number = self.claimed.fetch_add(1, Ordering::Relaxed) + 1;
        let mut bulk_in = self.bulk_in.lock();
        if !bulk_in.has_detached() {
            return None;
        }
        bulk_in.take_detached(number, frame)
    }

    /// Why the connection ended, if it has.
    pub(crate) fn ended(&self) -> Option<String> {
        self.ended.lock().clone()
    }

    /// Whether the connection ended because the peer broke the memory.
    pub(crate) fn faulted(&self) -> bool {
        self.faulted.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Waits until the inbound ring has something to read or has closed (for the client's
    /// reader task).
    pub(crate) async fn readable(&self) -> io::Result<()> {
        let Some(efd) = &self.data_task else {
            return Err(io::Error::other("this side reads on a thread"));
        };
        loop {
            match self.inbound.arm_data() {
                Ok(true) => {
                    // No wake-up is wanted for what is already there.
                    self.inbound.disarm_data();
                    return Ok(());
                }
                Ok(false) => {}
                Err(fault) => return Err(self.fault(&fault)),
            }
            let mut guard = efd.readable().await?;
            drain(efd.get_ref());
            guard.clear_ready();
        }
    }

    /// Takes back the reader task's wish to be woken for data, for a blocked caller that
    /// reads the ring itself (so that no reply wakes the task meanwhile); whether it had one.
    pub(crate) fn disarm_reader_task(&self) -> bool {
        self.data_task.is_some() && self.inbound.disarm_data()
    }

    /// Gives the reader task its wish back after a caller read: true if there is something
    /// to read already (the task must be woken, the peer will not).
    pub(crate) fn rearm_reader_task(&self) -> bool {
        !matches!(self.inbound.arm_data(), Ok(false))
    }
}

/// The writing end of a side, as the writer task writes to it.
pub(crate) struct RingWriter(pub(crate) Arc<Side>);

impl AsyncWrite for RingWriter {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let side = &self.0;
        loop {
            if side.outbound.is_closed() {
                return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()));
            }
            match side.write_some(buf) {
                Ok(0) if !buf.is_empty() => {}
                Ok(n) => return Poll::Ready(Ok(n)),
                Err(fault) => return Poll::Ready(Err(side.fault(&fault))),
            }
            match side.outbound.arm_room() {
                Ok(true) => continue,
                Ok(false) => {}
                Err(fault) => return Poll::Ready(Err(side.fault(&fault))),
            }
            match side.room_task.poll_read_ready(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Ready(Ok(mut guard)) => {
                    drain(side.room_task.get_ref());
                    guard.clear_ready();
                }
            }
        }
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

/// Waits until the peer closes `stream` (or it fails): how either side learns that the
/// other has gone. Nothing is expected on it; anything that comes is read and ignored.
pub(crate) async fn closed(stream: &UnixStream) -> String {
    let mut buf = [0u8; 64];
    loop {
        if let Err(e) = stream.readable().await {
            return format!("the socket failed: {e}");
        }
        match stream.try_read(&mut buf) {
            Ok(0) => return "the peer closed the connection".into(),
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => return format!("the socket failed: {e}"),
        }
    }
}
