//! The lock of a server-side object: one 32-bit word in the object's allocation, with the tasks
//! that wait for it kept outside, in a table shared by every object, and only while they wait.
//!
//! # Why not a crate
//!
//! A server holds up to millions of idle objects, each with its lock, and almost never waits on
//! one. `tokio::sync::RwLock` is 48 B (its semaphore's mutex, wait list and counts), the
//! `async-lock` crate's about 40 B, `futures`' mutex larger still: each keeps its wait list in
//! the lock. `parking_lot` keeps its waiters outside an 8 B word, as this lock does, but parks
//! threads: a task waiting on it would block a runtime thread, and an `async fn` method holds
//! its object's lock across `.await`s. No well-kept crate has an async read-write lock whose
//! waiters live outside it, so this one is written here, and kept small.
//!
//! # The protocol
//!
//! The word holds the number of readers (the low 30 bits), [`WRITER`], and [`QUEUED`]: someone
//! waits. Taking the lock when it is free of conflict, and giving it back when nobody waits,
//! are one compare-and-swap each. Everything else happens with the object's shard of the wait
//! table ([`PARKING`]) locked:
//!
//! - A task that cannot take the lock sets [`QUEUED`] (only while a holder is in the way, seen
//!   with the shard locked) and joins the object's queue, in order.
//! - `QUEUED` stops every fast path from taking the lock: a waiting writer is not starved by
//!   readers that keep coming, as with tokio's fair lock.
//! - The last holder to leave while `QUEUED` is set does not free the lock: with the shard
//!   locked, it hands it to the head of the queue (a writer, or every reader at the head) and
//!   leaves `QUEUED` set while more wait. So `QUEUED` always means "a queue, and a holder who
//!   will hand over", and an object's queue lives no longer than someone holds its lock (who
//!   keeps the object's allocation, and so its address, alive).
//! - A waiter that gives up (its future dropped) leaves the queue; granted already, it hands
//!   on what it was given.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

use std::ops::DerefMut;
use std::sync::atomic::Ordering;
use std::sync::Arc;

#[cfg(test)]
mod model;

/// The primitives the lock is made of: the server's ([`Real`]), or the model check's.
pub(crate) trait Prims: Sized + 'static {
    /// The lock word (an `AtomicU32`).
    type Word: Word;
    /// A mutex (for a shard of the wait table, and for each waiter's state).
    type Mutex<T: Send>: Lock<T>;
    /// The wait table's shards.
    fn parking() -> &'static [Self::Mutex<Vec<Queue<Self>>>];
}

/// An atomic `u32`, as the lock uses it.
pub(crate) trait Word: Send + Sync {
    fn load(&self, order: Ordering) -> u32;
    fn store(&self, value: u32, order: Ordering);
    fn compare_exchange(&self, old: u32, new: u32, ok: Ordering, err: Ordering)
        -> Result<u32, u32>;
    fn fetch_add(&self, value: u32, order: Ordering) -> u32;
    fn fetch_and(&self, value: u32, order: Ordering) -> u32;
}

/// A mutex, as the lock uses it.
pub(crate) trait Lock<T>: Send + Sync {
    fn new(value: T) -> Self;
    fn lock(&self) -> impl DerefMut<Target = T> + '_;
}

/// The server's primitives: std's atomic, parking_lot's mutex, a static wait table.
#[derive(Debug)]
pub(crate) struct Real;

/// The wait table: per shard, the queues of the objects of that shard that someone waits for.
static PARKING: [parking_lot::Mutex<Vec<Queue<Real>>>; SHARDS] =
    [const { parking_lot::Mutex::new(Vec::new()) }; SHARDS];

impl Prims for Real {
    type Word = std::sync::atomic::AtomicU32;
    type Mutex<T: Send> = parking_lot::Mutex<T>;
    fn parking() -> &'static [parking_lot::Mutex<Vec<Queue<Real>>>] {
        &PARKING
    }
}

macro_rules! word {
    ($atomic:ty) => {
        impl Word for $atomic {
            fn load(&self, order: Ordering) -> u32 {
                <$atomic>::load(self, order)
            }
            fn store(&self, value: u32, order: Ordering) {
                <$atomic>::store(self, value, order)
            }
            fn compare_exchange(
                &self,
                old: u32,
                new: u32,
                ok: Ordering,
                err: Ordering,
            ) -> Result<u32, u32> {
                <$atomic>::compare_exchange(self, old, new, ok, err)
            }
            fn fetch_add(&self, value: u32, order: Ordering) -> u32 {
                <$atomic>::fetch_add(self, value, order)
            }
            fn fetch_and(&self, value: u32, order: Ordering) -> u32 {
                <$atomic>::fetch_and(self, value, order)
            }
        }
    };
}
word!(std::sync::atomic::AtomicU32);
#[cfg(test)]
word!(loom::sync::atomic::AtomicU32);

impl<T: Send> Lock<T> for parking_lot::Mutex<T> {
    fn new(value: T) -> Self {
        parking_lot::Mutex::new(value)
    }
    fn lock(&self) -> impl DerefMut<Target = T> + '_ {
        parking_lot::Mutex::lock(self)
    }
}

/// Beside the readers: a writer holds the lock.
const WRITER: u32 = 1 << 31;
/// Beside the holders: someone waits in the object's queue.
const QUEUED: u32 = 1 << 30;
/// The bits that count readers (and the most readers at once).
const READERS: u32 = QUEUED - 1;

/// The shards of the wait table: enough that unrelated objects rarely share one.
const SHARDS: usize = 64;

/// The tasks waiting for one object's lock, in order.
pub(crate) struct Queue<P: Prims> {
    /// The address of the object's lock word.
    key: usize,
    waiters: VecDeque<Arc<Waiter<P>>>,
}

/// One task waiting for a lock.
pub(crate) struct Waiter<P: Prims> {
    /// Whether it wants the lock alone.
    exclusive: bool,
    state: P::Mutex<WaitState>,
}

/// Whether a waiter was given the lock, and how to wake it.
#[derive(Default)]
struct WaitState {
    granted: bool,
    waker: Option<Waker>,
}

impl<P: Prims> Waiter<P> {
    /// Gives the lock to the waiter (its hold is already counted in the word) and wakes it.
    fn grant(&self) {
        let waker = {
            let mut state = self.state.lock();
            state.granted = true;
            state.waker.take()
        };
        if let Some(waker) = waker {
            waker.wake();
        }
    }
}

/// A read-write lock in one word, without the data it guards (see the module documentation).
pub(crate) struct RawLock<P: Prims = Real> {
    state: P::Word,
}

impl<P: Prims> std::fmt::Debug for RawLock<P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = self.state.load(Ordering::Relaxed);
        f.debug_struct("RawLock")
            .field("readers", &(state & READERS))
            .field("writer", &(state & WRITER != 0))
            .field("queued", &(state & QUEUED != 0))
            .finish()
    }
}

impl RawLock<Real> {
    /// A free lock.
    pub(crate) const fn new() -> Self {
        RawLock {
            state: std::sync::atomic::AtomicU32::new(0),
        }
    }
}

impl<P: Prims> RawLock<P> {
    /// A free lock on `word` (which holds 0).
    #[cfg(test)]
    fn on(state: P::Word) -> Self {
        RawLock { state }
    }

    /// The shard of the wait table that holds this lock's queue.
    fn shard(&self) -> &'static P::Mutex<Vec<Queue<P>>> {
        let shards = P::parking();
        &shards[shard_of(self.key(), shards.len())]
    }

    /// This lock's key in the wait table: its address.
    fn key(&self) -> usize {
        std::ptr::from_ref(self) as usize
    }

    /// Takes a read hold if no writer holds the lock and nobody waits.
    pub(crate) fn try_read(&self) -> bool {
        let mut state = self.state.load(Ordering::Relaxed);
        loop {
            if state & (WRITER | QUEUED) != 0 || state & READERS == READERS {
                return false;
            }
            match self.state.compare_exchange(
                state,
                state + 1,
                Ordering::Acquire,
                Ordering::Relaxed,
            ) {
                Ok(_) => return true,
                Err(now) => state = now,
            }
        }
    }

    /// Takes the lock alone if it is free.
    pub(crate) fn try_write(&self) -> bool {
        self.state
            .compare_exchange(0, WRITER, Ordering::Acquire, Ordering::Relaxed)
            .is_ok()
    }

    /// Waits for a read hold (`exclusive` false) or for the lock alone.
    pub(crate) fn lock(&self, exclusive: bool) -> Acquire<'_, P> {
        Acquire {
            lock: self,
            exclusive,
            waiter: None,
            done: false,
        }
    }

    /// Gives back a read hold.
    pub(crate) fn unlock_read(&self) {
        let mut state = self.state.load(Ordering::Relaxed);
        loop {
            if state == QUEUED | 1 {
                // The last reader, and someone waits: hand over.
                return self.release_locked(&mut self.shard().lock(), false);
            }
            match self.state.compare_exchange(
                state,
                state - 1,
                Ordering::Release,
                Ordering::Relaxed,
            ) {
                Ok(_) => return,
                Err(now) => state = now,
            }
        }
    }

    /// Gives back the lock held alone.
    pub(crate) fn unlock_write(&self) {
        if self
            .state
            .compare_exchange(WRITER, 0, Ordering::Release, Ordering::Relaxed)
            .is_err()
        {
            self.release_locked(&mut self.shard().lock(), true);
        }
    }

    /// Gives back one hold (the writer's, or one reader's) with the shard locked: hands the
    /// lock over to the waiters when it was the last hold and someone waits.
    fn release_locked(&self, shard: &mut Vec<Queue<P>>, exclusive: bool) {
        // Acquire: a reader that hands over must see what the readers who left before it did
        // (their Release decrements), as the waiters it hands to will.
        let mut state = self.state.load(Ordering::Acquire);
        loop {
            let last = exclusive || state & READERS == 1;
            if last && state & QUEUED != 0 {
                // Nobody else holds the lock and `QUEUED` keeps every fast path out: the word
                // is ours until the hand-over rewrites it.
                return self.hand_over(shard);
            }
            let next = if exclusive {
                state & !WRITER
            } else {
                state - 1
            };
            match self
                .state
                .compare_exchange(state, next, Ordering::Release, Ordering::Acquire)
            {
                Ok(_) => return,
                Err(now) => state = now,
            }
        }
    }

    /// Gives the lock, which nobody holds, to the head of its queue: a writer, or every reader
    /// at the head. `QUEUED` stays while more wait.
    fn hand_over(&self, shard: &mut Vec<Queue<P>>) {
        let Some(at) = shard.iter().position(|queue| queue.key == self.key()) else {
            // `QUEUED` without a queue does not happen; should it, the lock is simply free.
            self.state.store(0, Ordering::Release);
            return;
        };
        let waiters = &mut shard[at].waiters;
        let mut granted = Vec::new();
        let mut state = 0;
        while let Some(next) = waiters.front() {
            let fits = if next.exclusive {
                state == 0
            } else {
                state & WRITER == 0 && state < READERS
            };
            if !fits {
                break;
            }
            state += if next.exclusive { WRITER } else { 1 };
            granted.extend(waiters.pop_front());
        }
        if waiters.is_empty() {
            shard.swap_remove(at);
        } else {
            state |= QUEUED;
        }
        self.state.store(state, Ordering::Release);
        for waiter in granted {
            waiter.grant();
        }
    }

    /// With the shard locked: takes the lock if no holder is in the way and nobody waits, or
    /// else joins the queue (`Some`, the waiter to watch).
    fn take_or_wait(&self, shard: &mut Vec<Queue<P>>, exclusive: bool) -> Option<Arc<Waiter<P>>> {
        let mut state = self.state.load(Ordering::Relaxed);
        while state & QUEUED == 0 {
            let free = if exclusive {
                state == 0
            } else {
                state & WRITER == 0 && state & READERS < READERS
            };
            let (next, order) = if free {
                let take = if exclusive { WRITER } else { state + 1 };
                (take, Ordering::Acquire)
            } else {
                // A holder is in the way: it will find `QUEUED` and hand over.
                (state | QUEUED, Ordering::Relaxed)
            };
            match self
                .state
                .compare_exchange(state, next, order, Ordering::Relaxed)
            {
                Ok(_) if free => return None,
                Ok(_) => break,
                Err(now) => state = now,
            }
        }
        let waiter = Arc::new(Waiter {
            exclusive,
            state: Lock::new(WaitState::default()),
        });
        let key = self.key();
        match shard.iter_mut().find(|queue| queue.key == key) {
            Some(queue) => queue.waiters.push_back(waiter.clone()),
            None => shard.push(Queue {
                key,
                waiters: VecDeque::from([waiter.clone()]),
            }),
        }
        Some(waiter)
    }

    /// With the shard locked: `waiter`, not granted, gives up its place. When it was at the
    /// head and no writer holds the lock, the readers now at the head join the holders.
    fn leave(&self, shard: &mut Vec<Queue<P>>, waiter: &Arc<Waiter<P>>) {
        let Some(at) = shard.iter().position(|queue| queue.key == self.key()) else {
            return;
        };
        let waiters = &mut shard[at].waiters;
        let Some(place) = waiters.iter().position(|w| Arc::ptr_eq(w, waiter)) else {
            return;
        };
        waiters.remove(place);
        let mut granted = Vec::new();
        if place == 0 && self.state.load(Ordering::Relaxed) & WRITER == 0 {
            // Readers hold the lock (a queue implies a holder): readers next in line join them.
            // The count only grows here, while other readers may leave alongside.
            while waiters.front().is_some_and(|w| !w.exclusive)
                && self.state.load(Ordering::Relaxed) & READERS < READERS
            {
                // Acquire: the joiner must see what the last writer did, as any reader does.
                self.state.fetch_add(1, Ordering::Acquire);
                granted.extend(waiters.pop_front());
            }
        }
        if waiters.is_empty() {
            shard.swap_remove(at);
            self.state.fetch_and(!QUEUED, Ordering::Relaxed);
        }
        for waiter in granted {
            waiter.grant();
        }
    }
}

/// The shard, of `shards`, of the lock at address `key`.
fn shard_of(key: usize, shards: usize) -> usize {
    // Fibonacci hashing of the address: its top bits pick the shard.
    (key.wrapping_mul(0x9E37_79B9_7F4A_7C15_u64 as usize) >> 32) % shards
}

/// A wait for a lock: `lock(false)` for a read hold, `lock(true)` for the lock alone. Resolves
/// once the hold is taken; dropped before that, it takes nothing (and hands on a hold it was
/// given meanwhile).
pub(crate) struct Acquire<'a, P: Prims = Real> {
    lock: &'a RawLock<P>,
    exclusive: bool,
    /// Its place in the queue, once it joined it.
    waiter: Option<Arc<Waiter<P>>>,
    /// The hold is taken and belongs to the caller.
    done: bool,
}

impl<P: Prims> std::fmt::Debug for Acquire<'_, P> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Acquire")
            .field("exclusive", &self.exclusive)
            .field("waiting", &self.waiter.is_some())
            .finish()
    }
}

impl<P: Prims> Future for Acquire<'_, P> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        if this.done {
            return Poll::Ready(());
        }
        if this.waiter.is_none() {
            let taken = if this.exclusive {
                this.lock.try_write()
            } else {
                this.lock.try_read()
            };
            let waiting = match taken {
                true => None,
                false => this
                    .lock
                    .take_or_wait(&mut this.lock.shard().lock(), this.exclusive),
            };
            if waiting.is_none() {
                this.done = true;
                return Poll::Ready(());
            }
            this.waiter = waiting;
        }
        let Some(waiter) = &this.waiter else {
            return Poll::Pending; // set just above
        };
        let mut state = waiter.state.lock();
        if state.granted {
            drop(state);
            this.waiter = None;
            this.done = true;
            return Poll::Ready(());
        }
        if !state
            .waker
            .as_ref()
            .is_some_and(|w| w.will_wake(cx.waker()))
        {
            state.waker = Some(cx.waker().clone());
        }
        Poll::Pending
    }
}

impl<P: Prims> Drop for Acquire<'_, P> {
    fn drop(&mut self) {
        let Some(waiter) = self.waiter.take() else {
            return;
        };
        let mut shard = self.lock.shard().lock();
        // Grants happen with the shard locked: this reading is final.
        let granted = waiter.state.lock().granted;
        if granted {
            self.lock.release_locked(&mut shard, self.exclusive);
        } else {
            self.lock.leave(&mut shard, &waiter);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::task::Wake;

    /// A waker that counts its wakes.
    #[derive(Default)]
    struct Count(std::sync::atomic::AtomicUsize);

    impl Wake for Count {
        fn wake(self: std::sync::Arc<Self>) {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Polls `future` once with a counting waker.
    fn poll(future: &mut Acquire<'_>, count: &std::sync::Arc<Count>) -> bool {
        let waker = Waker::from(count.clone());
        Pin::new(future)
            .poll(&mut Context::from_waker(&waker))
            .is_ready()
    }

    #[test]
    fn readers_share_and_a_writer_is_alone() {
        let lock = RawLock::new();
        assert!(lock.try_read() && lock.try_read());
        assert!(!lock.try_write());
        lock.unlock_read();
        lock.unlock_read();
        assert!(lock.try_write());
        assert!(!lock.try_read() && !lock.try_write());
        lock.unlock_write();
        assert_eq!(lock.state.load(Ordering::Relaxed), 0);
    }

    /// A waiting writer is handed the lock by the last reader, and readers that come after it
    /// wait behind it (they would starve it otherwise), then all get it together.
    #[test]
    fn waiters_are_served_in_order() {
        let lock = RawLock::new();
        assert!(lock.try_read());
        let count = std::sync::Arc::new(Count::default());
        let mut writer = lock.lock(true);
        assert!(!poll(&mut writer, &count));
        assert!(!lock.try_read(), "a writer waits: new readers queue");
        let mut first = lock.lock(false);
        let mut second = lock.lock(false);
        assert!(!poll(&mut first, &count) && !poll(&mut second, &count));
        lock.unlock_read();
        assert_eq!(count.0.load(Ordering::Relaxed), 1, "the writer was woken");
        assert!(poll(&mut writer, &count));
        drop(writer); // the hold is the caller's now: dropping the future keeps it
        assert!(!poll(&mut first, &count));
        lock.unlock_write();
        assert_eq!(
            count.0.load(Ordering::Relaxed),
            3,
            "both readers were woken"
        );
        assert!(poll(&mut first, &count) && poll(&mut second, &count));
        drop((first, second));
        lock.unlock_read();
        lock.unlock_read();
        assert_eq!(lock.state.load(Ordering::Relaxed), 0);
        assert!(PARKING[shard_of(lock.key(), SHARDS)].lock().is_empty());
    }

    /// A waiter that gives up leaves the queue; one granted meanwhile hands the lock on.
    #[test]
    fn a_waiter_that_gives_up_takes_nothing() {
        let lock = RawLock::new();
        let count = std::sync::Arc::new(Count::default());
        assert!(lock.try_write());
        let mut gone = lock.lock(false);
        assert!(!poll(&mut gone, &count));
        drop(gone);
        assert_eq!(lock.state.load(Ordering::Relaxed), WRITER, "nobody waits");
        let mut granted = lock.lock(true);
        let mut next = lock.lock(false);
        assert!(!poll(&mut granted, &count) && !poll(&mut next, &count));
        lock.unlock_write();
        drop(granted); // granted, never polled again: it hands the lock to the reader
        assert!(poll(&mut next, &count));
        drop(next);
        lock.unlock_read();
        assert_eq!(lock.state.load(Ordering::Relaxed), 0);

        // A writer at the head gives up while readers hold the lock: the readers behind it
        // join them at once.
        assert!(lock.try_read());
        let mut writer = lock.lock(true);
        let mut reader = lock.lock(false);
        assert!(!poll(&mut writer, &count) && !poll(&mut reader, &count));
        drop(writer);
        assert!(poll(&mut reader, &count));
        drop(reader);
        lock.unlock_read();
        lock.unlock_read();
        assert_eq!(lock.state.load(Ordering::Relaxed), 0);
        assert!(PARKING[shard_of(lock.key(), SHARDS)].lock().is_empty());
    }

    /// Threads hammering one lock: writers are alone, readers never see a writer.
    #[test]
    fn threads_contend_without_losing_a_hold() {
        let lock = std::sync::Arc::new((RawLock::new(), std::sync::atomic::AtomicI32::new(0)));
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let lock = lock.clone();
                std::thread::spawn(move || {
                    for i in 0..2000 {
                        let exclusive = (i + t) % 3 == 0;
                        futures::executor::block_on(lock.0.lock(exclusive));
                        let inside = if exclusive {
                            lock.1.swap(-1, Ordering::SeqCst)
                        } else {
                            lock.1.fetch_add(1, Ordering::SeqCst)
                        };
                        assert!(inside >= 0 && !(exclusive && inside != 0));
                        if exclusive {
                            lock.1.store(0, Ordering::SeqCst);
                            lock.0.unlock_write();
                        } else {
                            lock.1.fetch_sub(1, Ordering::SeqCst);
                            lock.0.unlock_read();
                        }
                    }
                })
            })
            .collect();
        for thread in threads {
            thread.join().unwrap();
        }
        assert_eq!(lock.0.state.load(Ordering::Relaxed), 0);
    }
}
