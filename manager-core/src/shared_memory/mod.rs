//! Shared memory blocks with a manager's lifetime rule, under CPython's names.
//!
//! A block is a POSIX shared memory object (a file in `/dev/shm` on Linux) named as CPython's
//! `multiprocessing.shared_memory` names its own: `psm_` and 8 hex digits, opened as
//! `/psm_...`. A CPython process opens one with `shared_memory.SharedMemory(name)`, a Rust
//! process with [`SharedBytes::open`] or [`SharedArray::open`].
//!
//! [`Manager::shared_bytes`](crate::Manager::shared_bytes) and
//! [`Manager::shared_array`](crate::Manager::shared_array) (and their blocking forms) ask the
//! server to create a block: the server makes it, and *tracks* it for the asking connection,
//! before the client maps it. A block's name is removed (`shm_unlink`) when the last connection
//! that tracks it closes, for whatever reason (the client dropped its manager, exited, or was
//! killed), or when the server shuts down, or when its last tracker releases it
//! ([`Manager::release_segment`](crate::Manager::release_segment)). A connection's tracked
//! names are released with the connection, like its references. So a Rust client killed at any
//! moment leaves no block behind: the server made the block and tracked it in one step.
//!
//! Dropping a [`SharedBytes`] only unmaps it: the name stays for other processes to open
//! until its connection goes (other processes are usually why a block exists). Memory stays
//! mapped, and valid, in every process that mapped it, after its name is gone.
//!
//! CPython's `SharedMemoryManager` works unchanged against a manager server: its
//! `track_segment`, `release_segment` and `list_segments` requests are served (see the
//! `python` part of [`crate::server`]). CPython clients make a new connection for each
//! `track_segment`, so the names they track belong to the server's CPython clients as a whole,
//! as their references do: kept until `release_segment` or shutdown, which is what CPython's
//! own `SharedMemoryServer` does.
//!
//! Reading and writing: another process may write a block at any time, so this module never
//! hands out a plain `&[u8]` over it (Rust assumes a shared slice does not change under it).
//! Bytes are copied in and out ([`SharedBytes::read`], [`SharedBytes::write`]), elements are
//! read and written one at a time as volatile accesses ([`SharedArray::get`],
//! [`SharedArray::set`]); slices are there for code that knows no one else writes meanwhile
//! ([`SharedBytes::as_slice`], unsafe). A reader racing a writer of another process may see a
//! torn value, never an invalid one: elements are [`bytemuck::Pod`], for which every bit
//! pattern is a value.
//!
//! The crates: `rustix` for `shm_open`, `shm_unlink` and `ftruncate` (already a dependency for
//! sockets; no `libc` call to check by hand), `memmap2` for the mapping (unmapped on drop).
//! The `shared_memory` crate was not used: it names segments its own way and unlinks them when
//! their creating handle drops, where the names must be CPython's and the server alone decides
//! when a name goes.

use std::io;
use std::marker::PhantomData;
use std::sync::atomic::{fence, Ordering};

use memmap2::{MmapOptions, MmapRaw};
use rustix::fs::Mode;
use rustix::shm;

mod manager;

/// The longest name a block may have (Linux's `NAME_MAX`).
const MAX_NAME: usize = 255;

/// Checks that `name` may name a shared memory object: not empty, at most 255 bytes, no `/`
/// and no NUL, not `.` or `..`. (Names come from clients, and the server unlinks them.)
pub(crate) fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > MAX_NAME {
        return Err(format!(
            "a shared memory name has 1 to {MAX_NAME} bytes, not {}",
            name.len()
        ));
    }
    if name.contains(['/', '\0']) || name == "." || name == ".." {
        return Err(format!(
            "{name:?} is not a shared memory name (no '/', no NUL, not . or ..)"
        ));
    }
    Ok(())
}

/// The POSIX name of the object `name` names: CPython's `SharedMemory.name` has no leading
/// slash, `shm_open` wants one.
fn posix(name: &str) -> String {
    format!("/{name}")
}

/// A new name in CPython's form: `psm_` and 8 random hex digits (14 characters at most, the
/// limit CPython keeps to for FreeBSD).
fn new_name() -> String {
    format!("psm_{:08x}", rand::random::<u32>())
}

/// Creates a shared memory object of `size` bytes under a new name, readable and writable by
/// this user only (as CPython creates them), and returns the name.
pub(crate) fn create(size: u64) -> io::Result<String> {
    if size == 0 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "a shared memory block has at least one byte",
        ));
    }
    if size > i64::MAX as u64 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{size} bytes is past the largest file size"),
        ));
    }
    loop {
        let name = new_name();
        let flags = shm::OFlags::CREATE | shm::OFlags::EXCL | shm::OFlags::RDWR;
        let fd = match shm::open(posix(&name), flags, Mode::RUSR | Mode::WUSR) {
            Ok(fd) => fd,
            Err(rustix::io::Errno::EXIST) => continue,
            Err(e) => return Err(e.into()),
        };
        if let Err(e) = rustix::fs::ftruncate(&fd, size) {
            unlink(&name);
            return Err(e.into());
        }
        return Ok(name);
    }
}

/// Whether an object named `name` exists (and may be opened by this user), for a name that
/// passes [`check_name`].
pub(crate) fn exists(name: &str) -> io::Result<()> {
    check_name(name).map_err(|m| io::Error::new(io::ErrorKind::InvalidInput, m))?;
    shm::open(posix(name), shm::OFlags::RDONLY, Mode::empty())
        .map(drop)
        .map_err(io::Error::from)
}

/// Removes the name `name`; an object already gone (its creator's CPython resource tracker
/// may have unlinked it) is no error.
pub(crate) fn unlink(name: &str) {
    match shm::unlink(posix(name)) {
        Ok(()) | Err(rustix::io::Errno::NOENT) => {}
        Err(e) => tracing::warn!("cannot unlink the shared memory block {name:?}: {e}"),
    }
}

/// A block of shared memory bytes, mapped in this process: made by a manager
/// ([`Manager::shared_bytes`](crate::Manager::shared_bytes)) or opened by name, as CPython's
/// `shared_memory.SharedMemory` is. See the [module documentation](self) for its lifetime and
/// for how to read and write it.
pub struct SharedBytes {
    name: String,
    map: MmapRaw,
}

impl std::fmt::Debug for SharedBytes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedBytes")
            .field("name", &self.name)
            .field("len", &self.len())
            .finish()
    }
}

// SAFETY: the mapping is plain memory, valid until drop from any thread; shared reads and
// exclusive writes are the same contract as `&[u8]` / `&mut [u8]` within this process.
unsafe impl Send for SharedBytes {}
// SAFETY: see `Send`; `&self` methods only read.
unsafe impl Sync for SharedBytes {}

impl SharedBytes {
    /// Maps the existing block `name` (as CPython's `SharedMemory(name)`: the name without a
    /// leading slash, the whole object). Opening does not track it: it lives as long as the
    /// connections that track it.
    pub fn open(name: &str) -> crate::Result<SharedBytes> {
        check_name(name).map_err(|m| io::Error::new(io::ErrorKind::InvalidInput, m))?;
        let fd = shm::open(posix(name), shm::OFlags::RDWR, Mode::empty()).map_err(|e| {
            io::Error::new(
                io::Error::from(e).kind(),
                format!("cannot open the shared memory block {name:?}: {e}"),
            )
        })?;
        let size = rustix::fs::fstat(&fd).map_err(io::Error::from)?.st_size;
        let len = usize::try_from(size)
            .ok()
            .filter(|&len| len > 0)
            .ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("the shared memory block {name:?} has {size} bytes"),
                )
            })?;
        let map = MmapOptions::new().len(len).map_raw(&fd)?;
        Ok(SharedBytes {
            name: name.to_string(),
            map,
        })
    }

    /// The block's name, as CPython's `SharedMemory.name` gives it (no leading slash).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// How many bytes it has.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether it has no bytes (never, for a block made by a manager).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The range `offset..offset + n`, checked against the block's length.
    fn range(&self, offset: usize, n: usize) -> std::ops::Range<usize> {
        match offset.checked_add(n) {
            Some(end) if end <= self.len() => offset..end,
            _ => panic!(
                "{n} bytes at offset {offset} are past the end of the {}-byte block {:?}",
                self.len(),
                self.name
            ),
        }
    }

    /// Copies `buf.len()` bytes from `offset` into `buf`.
    ///
    /// # Panics
    ///
    /// If the range is past the end of the block.
    pub fn read(&self, offset: usize, buf: &mut [u8]) {
        let range = self.range(offset, buf.len());
        // What other processes wrote before their last release fence is seen.
        fence(Ordering::Acquire);
        // SAFETY: the range is within the mapping, which lives as long as `self`; `buf` is
        // a distinct allocation of this process.
        unsafe {
            std::ptr::copy_nonoverlapping(
                self.map.as_ptr().add(range.start),
                buf.as_mut_ptr(),
                buf.len(),
            )
        }
    }

    /// Copies `data` into the block at `offset`.
    ///
    /// # Panics
    ///
    /// If the range is past the end of the block.
    pub fn write(&mut self, offset: usize, data: &[u8]) {
        let range = self.range(offset, data.len());
        // SAFETY: as in `read`; `&mut self` makes this the only writer in this process.
        unsafe {
            std::ptr::copy_nonoverlapping(
                data.as_ptr(),
                self.map.as_mut_ptr().add(range.start),
                data.len(),
            )
        }
        fence(Ordering::Release);
    }

    /// A copy of the whole block.
    pub fn to_vec(&self) -> Vec<u8> {
        let mut bytes = vec![0; self.len()];
        self.read(0, &mut bytes);
        bytes
    }

    /// The start of the mapping, for code that shares it through its own protocol (atomics in
    /// the block, say).
    pub fn as_ptr(&self) -> *mut u8 {
        self.map.as_mut_ptr()
    }

    /// The block as a slice, with no copy.
    ///
    /// # Safety
    ///
    /// No process may write the block while the slice lives (Rust assumes the bytes behind a
    /// shared slice do not change).
    pub unsafe fn as_slice(&self) -> &[u8] {
        // SAFETY: the mapping is valid for `len` bytes while `self` lives; the caller
        // promises that nothing writes it meanwhile.
        unsafe { std::slice::from_raw_parts(self.map.as_ptr(), self.len()) }
    }

    /// The block as a mutable slice, with no copy.
    ///
    /// # Safety
    ///
    /// No other process may read or write the block while the slice lives.
    pub unsafe fn as_mut_slice(&mut self) -> &mut [u8] {
        // SAFETY: as in `as_slice`; `&mut self` excludes the rest of this process, the caller
        // promises the other processes.
        unsafe { std::slice::from_raw_parts_mut(self.map.as_mut_ptr(), self.len()) }
    }
}

/// A block of shared memory holding `len` values of `T` (plain data: integers, floats, arrays
/// and `#[repr(C)]` structs of them), from the block's first byte on. See the
/// [module documentation](self).
pub struct SharedArray<T: bytemuck::Pod> {
    bytes: SharedBytes,
    len: usize,
    _type: PhantomData<T>,
}

impl<T: bytemuck::Pod> std::fmt::Debug for SharedArray<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedArray")
            .field("name", &self.bytes.name)
            .field("len", &self.len)
            .field("type", &std::any::type_name::<T>())
            .finish()
    }
}

impl<T: bytemuck::Pod> SharedArray<T> {
    /// Views `bytes` as values of `T`: as many as fit (a block's length is a whole number of
    /// them when a manager made it).
    pub(crate) fn over(bytes: SharedBytes) -> crate::Result<SharedArray<T>> {
        let size = std::mem::size_of::<T>();
        if size == 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "a shared array of a zero-sized type holds nothing",
            )
            .into());
        }
        // A mapping starts on a page boundary, so any element's alignment up to a page holds.
        if std::mem::align_of::<T>() > 4096 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "a shared array's element is aligned to a page at most",
            )
            .into());
        }
        let len = bytes.len() / size;
        Ok(SharedArray {
            bytes,
            len,
            _type: PhantomData,
        })
    }

    /// Maps the existing block `name` as values of `T` (as many as fit in it).
    pub fn open(name: &str) -> crate::Result<SharedArray<T>> {
        SharedArray::over(SharedBytes::open(name)?)
    }

    /// The block's name (for CPython's `SharedMemory(name)`, or [`SharedArray::open`]).
    pub fn name(&self) -> &str {
        self.bytes.name()
    }

    /// How many values it holds.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether it holds none.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The block of bytes underneath.
    pub fn bytes(&self) -> &SharedBytes {
        &self.bytes
    }

    /// The byte offset of element `index` (the bytes' range check covers the rest).
    fn offset(index: usize) -> usize {
        index
            .checked_mul(std::mem::size_of::<T>())
            .unwrap_or_else(|| panic!("element {index} is past any shared array's end"))
    }

    fn at(&self, index: usize) -> *mut T {
        // SAFETY (of the callers' use): index < len, so the element lies within the mapping.
        self.bytes.map.as_mut_ptr().cast::<T>().wrapping_add(index)
    }

    /// The value at `index` (a volatile read: each call reads the memory), or `None` past the
    /// end.
    pub fn get(&self, index: usize) -> Option<T> {
        (index < self.len).then(|| {
            // SAFETY: in bounds and aligned (the mapping is page-aligned, `T`'s alignment is at
            // most a page); any bit pattern is a `T` (`Pod`).
            unsafe { self.at(index).read_volatile() }
        })
    }

    /// Writes `value` at `index` (a volatile write).
    ///
    /// # Panics
    ///
    /// If `index` is past the end.
    pub fn set(&mut self, index: usize, value: T) {
        assert!(
            index < self.len,
            "index {index} is past the end of the {}-element shared array {:?}",
            self.len,
            self.bytes.name
        );
        // SAFETY: as in `get`; `&mut self` makes this the only writer in this process.
        unsafe { self.at(index).write_volatile(value) }
    }

    /// Copies values from `start` into `out`.
    ///
    /// # Panics
    ///
    /// If the range is past the end.
    pub fn read(&self, start: usize, out: &mut [T]) {
        self.bytes
            .read(Self::offset(start), bytemuck::cast_slice_mut(out));
    }

    /// Copies `values` into the array from `start`.
    ///
    /// # Panics
    ///
    /// If the range is past the end.
    pub fn write(&mut self, start: usize, values: &[T]) {
        self.bytes
            .write(Self::offset(start), bytemuck::cast_slice(values));
    }

    /// A copy of every value.
    pub fn to_vec(&self) -> Vec<T> {
        let mut values = vec![T::zeroed(); self.len];
        self.read(0, &mut values);
        values
    }
}
