//! A server-side object's allocation: a 16 B header (a count of handles, the lock word, and the
//! table of the value's type's functions) followed by the value, in one `Box`.
//!
//! The server's table names an object by a [`Referent`], a thin pointer (8 B) to the header;
//! code that knows the type holds a [`Handle<T>`]. Both count in the header's one 32-bit count,
//! where `Arc` keeps two of 8 B (strong and weak), and the type's functions are reached
//! through the header, not through a second pointer beside it: for an 8 B value the allocation
//! is 24 B (a 32 B chunk of the allocator), where `Arc<tokio::sync::RwLock<T>>` took 72 B
//! (80 B) and its `dyn` pointer 16 B. Why the lock is written here: see [`lock`](super::lock).

use std::any::TypeId;
use std::cell::UnsafeCell;
use std::marker::PhantomData;
use std::ops::{Deref, DerefMut};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU32, Ordering};

use super::lock::RawLock;
use super::{Call, DispatchError, MethodDesc, Shared};
use crate::context::CallContext;

/// What every object's allocation begins with.
struct Header {
    /// How many [`Referent`]s and [`Handle`]s point here.
    handles: AtomicU32,
    /// The lock of the value.
    lock: RawLock,
    /// The functions of the value's type.
    vtable: &'static VTable,
}

/// The functions of a shared type, reached from the header of each of its objects.
struct VTable {
    methods: &'static [MethodDesc],
    type_name: fn() -> &'static str,
    type_id: fn() -> TypeId,
    dispatch: fn(
        &Referent,
        usize,
        &mut dyn erased_serde::Deserializer<'_>,
        CallContext,
    ) -> Result<Call, DispatchError>,
    /// Frees the allocation (the last handle is gone).
    drop: unsafe fn(NonNull<Header>),
}

/// An object's allocation: the header, then the value.
#[repr(C)]
struct Cell<T> {
    header: Header,
    value: UnsafeCell<T>,
}

impl<T: Shared> Cell<T> {
    const VTABLE: VTable = VTable {
        methods: T::METHODS,
        type_name: std::any::type_name::<T>,
        type_id: TypeId::of::<T>,
        dispatch: |referent, method, args, context| {
            let handle = referent
                .downcast::<T>()
                .ok_or(DispatchError::NoSuchMethod)?;
            T::dispatch(handle, method, args, context)
        },
        drop: Self::free,
    };

    /// Frees the allocation at `header`.
    ///
    /// # Safety
    ///
    /// `header` is the header of a `Cell<T>` made by [`Referent::new`], and no handle to it is
    /// left.
    unsafe fn free(header: NonNull<Header>) {
        // SAFETY: the allocation is a `Box<Cell<T>>` (`Referent::new`), whose `header` is its
        // first field (`repr(C)`), and nothing refers to it any more.
        drop(unsafe { Box::from_raw(header.cast::<Cell<T>>().as_ptr()) });
    }
}

/// A server-side object, its type erased: what the server's table holds (8 B). Cloning takes
/// one more handle; the value is dropped with the last handle.
pub struct Referent {
    header: NonNull<Header>,
}

// SAFETY: a `Referent` is made only from a `T: Shared`, which is `Send + Sync`; the header's
// count is atomic, and the value is reached only through its lock.
unsafe impl Send for Referent {}
// SAFETY: as for `Send`.
unsafe impl Sync for Referent {}

impl std::fmt::Debug for Referent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Referent")
            .field("type", &self.type_name())
            .field("lock", &self.header().lock)
            .finish()
    }
}

impl Referent {
    /// Puts `value` in an allocation of its own, with one handle: this one.
    pub fn new<T: Shared>(value: T) -> Self {
        let cell = Box::new(Cell {
            header: Header {
                handles: AtomicU32::new(1),
                lock: RawLock::new(),
                vtable: &Cell::<T>::VTABLE,
            },
            value: UnsafeCell::new(value),
        });
        Referent {
            header: NonNull::from(Box::leak(cell)).cast(),
        }
    }

    fn header(&self) -> &Header {
        // SAFETY: this handle keeps the allocation alive.
        unsafe { self.header.as_ref() }
    }

    /// The methods of the object's type.
    pub fn methods(&self) -> &'static [MethodDesc] {
        self.header().vtable.methods
    }

    /// The Rust type name of the object.
    pub fn type_name(&self) -> &'static str {
        (self.header().vtable.type_name)()
    }

    /// Decodes the arguments of method number `method` and returns the call, ready to run.
    pub fn dispatch(
        &self,
        method: usize,
        args: &mut dyn erased_serde::Deserializer<'_>,
        context: CallContext,
    ) -> Result<Call, DispatchError> {
        (self.header().vtable.dispatch)(self, method, args, context)
    }

    /// A handle of the object's own type, if it is a `T`.
    pub fn downcast<T: Shared>(&self) -> Option<Handle<T>> {
        ((self.header().vtable.type_id)() == TypeId::of::<T>()).then(|| Handle {
            object: self.clone(),
            value: PhantomData,
        })
    }
}

impl Clone for Referent {
    fn clone(&self) -> Self {
        // As `Arc` does: Relaxed, since taking a handle needs one already held. The count
        // cannot come near its end without as many handles in memory (16 GiB and more).
        let before = self.header().handles.fetch_add(1, Ordering::Relaxed);
        if before > u32::MAX / 2 {
            std::process::abort();
        }
        Referent {
            header: self.header,
        }
    }
}

impl Drop for Referent {
    fn drop(&mut self) {
        if self.header().handles.fetch_sub(1, Ordering::Release) != 1 {
            return;
        }
        // As `Arc` does: every other handle's uses happen before the value is dropped.
        std::sync::atomic::fence(Ordering::Acquire);
        let free = self.header().vtable.drop;
        // SAFETY: this was the last handle to an allocation made by `Referent::new`, whose
        // vtable's `drop` is the one of its type.
        unsafe { free(self.header) }
    }
}

/// A handle to a server-side object of type `T`, behind its lock: `read` and `write` wait
/// for the lock in a task, `blocking_read` and `blocking_write` on a thread that may block
/// (a worker thread, where a plain method runs), `try_read` and `try_write` not at all.
///
/// The lock is fair: once someone waits for it, later comers wait behind. Cloning takes one
/// more handle to the same object.
pub struct Handle<T> {
    object: Referent,
    value: PhantomData<fn() -> T>,
}

impl<T> Clone for Handle<T> {
    fn clone(&self) -> Self {
        Handle {
            object: self.object.clone(),
            value: PhantomData,
        }
    }
}

impl<T> std::fmt::Debug for Handle<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.object.fmt(f)
    }
}

impl<T: Shared> Handle<T> {
    /// A new object holding `value`.
    pub fn new(value: T) -> Self {
        Handle {
            object: Referent::new(value),
            value: PhantomData,
        }
    }

    /// The object, its type erased.
    pub fn referent(&self) -> &Referent {
        &self.object
    }

    fn lock(&self) -> &RawLock {
        &self.object.header().lock
    }

    fn value(&self) -> *mut T {
        // SAFETY: a `Handle<T>` is made only for an allocation of a `Cell<T>` (`downcast`
        // checks the type), whose header is its first field (`repr(C)`).
        let cell = unsafe { self.object.header.cast::<Cell<T>>().as_ref() };
        cell.value.get()
    }

    /// Waits in a task for a read hold, shared with other readers.
    pub async fn read(&self) -> ReadGuard<'_, T> {
        self.lock().lock(false).await;
        ReadGuard { handle: self }
    }

    /// Waits in a task for the lock alone.
    pub async fn write(&self) -> WriteGuard<'_, T> {
        self.lock().lock(true).await;
        WriteGuard { handle: self }
    }

    /// A read hold, if no writer holds the lock and nobody waits for it.
    pub fn try_read(&self) -> Option<ReadGuard<'_, T>> {
        self.lock().try_read().then_some(ReadGuard { handle: self })
    }

    /// The lock alone, if it is free.
    pub fn try_write(&self) -> Option<WriteGuard<'_, T>> {
        self.lock()
            .try_write()
            .then_some(WriteGuard { handle: self })
    }

    /// Blocks the thread for a read hold: for threads that may block, never in a task.
    pub fn blocking_read(&self) -> ReadGuard<'_, T> {
        self.try_read()
            .unwrap_or_else(|| futures::executor::block_on(self.read()))
    }

    /// Blocks the thread for the lock alone: for threads that may block, never in a task.
    pub fn blocking_write(&self) -> WriteGuard<'_, T> {
        self.try_write()
            .unwrap_or_else(|| futures::executor::block_on(self.write()))
    }

    /// A read hold that owns its handle, if one can be taken at once; else the handle back.
    pub fn try_read_owned(self) -> Result<OwnedReadGuard<T>, Self> {
        match self.lock().try_read() {
            true => Ok(OwnedReadGuard { handle: self }),
            false => Err(self),
        }
    }

    /// The lock alone, owning its handle, if it is free; else the handle back.
    pub fn try_write_owned(self) -> Result<OwnedWriteGuard<T>, Self> {
        match self.lock().try_write() {
            true => Ok(OwnedWriteGuard { handle: self }),
            false => Err(self),
        }
    }

    /// Waits in a task for a read hold that owns its handle.
    pub async fn read_owned(self) -> OwnedReadGuard<T> {
        self.lock().lock(false).await;
        OwnedReadGuard { handle: self }
    }

    /// Waits in a task for the lock alone, owning its handle.
    pub async fn write_owned(self) -> OwnedWriteGuard<T> {
        self.lock().lock(true).await;
        OwnedWriteGuard { handle: self }
    }
}

/// Writes the guard types: each holds a read hold or the lock alone on its handle's object, and
/// gives it back when dropped. `[...]` are the impl's generics and the type's arguments.
macro_rules! guard {
    ($(#[$doc:meta])* $name:ident [$($gen:tt)*] [$($args:tt)*], $handle:ty, $unlock:ident) => {
        $(#[$doc])*
        pub struct $name<$($gen)*> {
            handle: $handle,
        }

        impl<$($gen)*> Deref for $name<$($args)*> {
            type Target = T;

            fn deref(&self) -> &T {
                // SAFETY: the guard holds the lock (shared or alone), so no one writes the
                // value while this borrow lives.
                unsafe { &*self.handle.value() }
            }
        }

        impl<$($gen)*> Drop for $name<$($args)*> {
            fn drop(&mut self) {
                self.handle.lock().$unlock();
            }
        }

        impl<$($gen)*> std::fmt::Debug for $name<$($args)*>
        where
            T: std::fmt::Debug,
        {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                (**self).fmt(f)
            }
        }
    };
    (mut $(#[$doc:meta])* $name:ident [$($gen:tt)*] [$($args:tt)*], $handle:ty, $unlock:ident) => {
        guard!($(#[$doc])* $name [$($gen)*] [$($args)*], $handle, $unlock);

        impl<$($gen)*> DerefMut for $name<$($args)*> {
            fn deref_mut(&mut self) -> &mut T {
                // SAFETY: the guard holds the lock alone, and the borrow of the guard keeps
                // this borrow unique.
                unsafe { &mut *self.handle.value() }
            }
        }
    };
}

guard!(
    /// A read hold on an object, borrowed from its [`Handle`].
    ReadGuard ['a, T: Shared] ['a, T], &'a Handle<T>, unlock_read
);
guard!(
    mut
    /// The lock of an object held alone, borrowed from its [`Handle`].
    WriteGuard ['a, T: Shared] ['a, T], &'a Handle<T>, unlock_write
);
guard!(
    /// A read hold on an object, owning a [`Handle`] to it.
    OwnedReadGuard [T: Shared] [T], Handle<T>, unlock_read
);
guard!(
    mut
    /// The lock of an object held alone, owning a [`Handle`] to it.
    OwnedWriteGuard [T: Shared] [T], Handle<T>, unlock_write
);

#[cfg(test)]
#[allow(unreachable_pub, reason = "#[shared] exposes an impl's `pub` methods")]
mod tests {
    use super::*;

    /// A type to make objects of, that says when it is dropped.
    struct Probe(std::sync::Arc<AtomicU32>);

    #[crate::shared(crate = "crate", proxies = false)]
    impl Probe {
        /// Does nothing.
        pub fn ping(&self) {}
    }

    /// Another type.
    struct Other;

    #[crate::shared(crate = "crate", proxies = false)]
    impl Other {
        /// Does nothing.
        pub fn pong(&self) {}
    }

    impl Drop for Probe {
        fn drop(&mut self) {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The sizes the server's memory per object is made of.
    #[test]
    fn a_referent_is_a_thin_pointer_and_its_header_16_bytes() {
        assert_eq!(std::mem::size_of::<Referent>(), 8);
        assert_eq!(std::mem::size_of::<Option<Referent>>(), 8);
        assert_eq!(std::mem::size_of::<Header>(), 16);
        assert_eq!(std::mem::size_of::<Cell<u64>>(), 24);
    }

    /// The value lives while a handle does, and is dropped once with the last.
    #[test]
    fn the_last_handle_drops_the_value() {
        let drops = std::sync::Arc::new(AtomicU32::new(0));
        let referent = Referent::new(Probe(drops.clone()));
        assert!(referent.type_name().ends_with("Probe"));
        assert_eq!(referent.methods()[0].name, "ping");
        let handle = referent.downcast::<Probe>().unwrap();
        assert!(referent.downcast::<Other>().is_none());
        drop(referent);
        let guard = handle.clone().try_read_owned().unwrap();
        drop(handle);
        assert_eq!(drops.load(Ordering::Relaxed), 0);
        drop(guard);
        assert_eq!(drops.load(Ordering::Relaxed), 1);
    }

    /// Guards hold the lock: readers together, a writer alone.
    #[test]
    fn guards_hold_the_lock() {
        let handle = Handle::new(Probe(Default::default()));
        let first = handle.try_read().unwrap();
        let second = handle.try_read().unwrap();
        assert!(handle.try_write().is_none());
        drop((first, second));
        let mut writer = handle.try_write().unwrap();
        writer.0 = std::sync::Arc::new(AtomicU32::new(7));
        assert!(handle.try_read().is_none());
        let other = match handle.clone().try_read_owned() {
            Ok(_) => panic!("a writer holds the lock"),
            Err(other) => other,
        };
        drop(writer);
        assert!(other.try_read_owned().is_ok());
        assert_eq!(handle.blocking_read().0.load(Ordering::Relaxed), 7);
    }
}
