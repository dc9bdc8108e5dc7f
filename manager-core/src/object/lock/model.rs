//! The model check of the object lock: [`RawLock`]'s own code, run on loom's atomic and mutex,
//! every interleaving of its threads explored (within a preemption bound).
//!
//! What must hold: a writer is alone with the value and readers see no writer (loom's
//! `UnsafeCell` reports two accesses without ordering between them, one a write), no thread
//! waits for good (loom reports a deadlock when every thread is blocked: a hand-over that was
//! lost), and at the end the word is 0 and no queue is left in the wait table. The checks: a
//! writer and a reader waiting behind a reader (the hand-over from the last reader, readers
//! queueing behind a waiting writer), and a waiting writer that gives up while it may be
//! granted the lock at the same moment, with a reader behind it (held by a writer, or by a
//! reader that the reader behind joins when the writer leaves). Run by `.ci/run` in its own step (`cargo test -p manager-core
//! --lib object::lock::model -- --ignored`); the default `cargo test` skips them.

use std::future::Future;
use std::ops::DerefMut;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::task::Poll;

use loom::cell::UnsafeCell;
use loom::sync::Arc;
use loom::thread;

use super::{Lock, Prims, Queue, RawLock};

/// The model's primitives: loom's atomic and mutex, and a wait table of one shard.
struct Loom;

loom::lazy_static! {
    static ref PARKING: [loom::sync::Mutex<Vec<Queue<Loom>>>; 1] =
        [loom::sync::Mutex::new(Vec::new())];
}

impl Prims for Loom {
    type Word = loom::sync::atomic::AtomicU32;
    type Mutex<T: Send> = loom::sync::Mutex<T>;
    fn parking() -> &'static [loom::sync::Mutex<Vec<Queue<Loom>>>] {
        &*PARKING
    }
}

impl<T: Send> Lock<T> for loom::sync::Mutex<T> {
    fn new(value: T) -> Self {
        loom::sync::Mutex::new(value)
    }
    fn lock(&self) -> impl DerefMut<Target = T> + '_ {
        loom::sync::Mutex::lock(self).expect("no thread panics holding it")
    }
}

/// A value behind the lock.
struct Guarded {
    lock: RawLock<Loom>,
    value: UnsafeCell<u32>,
}

impl Guarded {
    fn new() -> Arc<Self> {
        Arc::new(Guarded {
            lock: RawLock::on(loom::sync::atomic::AtomicU32::new(0)),
            value: UnsafeCell::new(0),
        })
    }

    /// Takes the lock (waiting in loom's executor), touches the value and gives the lock back.
    fn visit(&self, exclusive: bool) {
        loom::future::block_on(self.lock.lock(exclusive));
        self.touch(exclusive);
        self.release(exclusive);
    }

    /// Reads the value, or writes it when holding the lock alone.
    fn touch(&self, exclusive: bool) {
        if exclusive {
            // SAFETY: the caller holds the lock alone; loom checks that nothing races this.
            self.value.with_mut(|v| unsafe { *v += 1 });
        } else {
            // SAFETY: the caller holds a read hold; loom checks that no write races this.
            self.value.with(|v| unsafe { *v });
        }
    }

    fn release(&self, exclusive: bool) {
        if exclusive {
            self.lock.unlock_write();
        } else {
            self.lock.unlock_read();
        }
    }

    /// At the end: the lock is free and nobody waits.
    fn check_free(&self) {
        assert_eq!(self.lock.state.load(Ordering::Relaxed), 0);
        assert!(Lock::lock(&Loom::parking()[0]).is_empty());
    }
}

/// Runs `check` under loom with at most `preemptions` preemptions per interleaving.
fn model(preemptions: usize, check: impl Fn() + Sync + Send + 'static) {
    let mut builder = loom::model::Builder::new();
    // LOOM_MAX_PREEMPTIONS, when set, says how far to go instead.
    builder.preemption_bound = builder.preemption_bound.or(Some(preemptions));
    builder.check(check);
}

/// A reader holds the lock; a writer and a second reader come while it does: the last reader
/// hands the lock over, to each in turn.
#[test]
#[ignore = "a model check: minutes; run by .ci/run with --ignored"]
fn a_writer_and_a_reader_behind_a_reader() {
    model(3, || {
        let guarded = Guarded::new();
        assert!(guarded.lock.try_read());
        let threads: Vec<_> = [true, false]
            .into_iter()
            .map(|exclusive| {
                let guarded = guarded.clone();
                thread::spawn(move || guarded.visit(exclusive))
            })
            .collect();
        guarded.touch(false);
        guarded.release(false);
        for thread in threads {
            thread.join().expect("no thread panics");
        }
        guarded.check_free();
    });
}

/// A writer (or a reader) holds the lock; a writer waiting polls once and gives up while the
/// holder may be handing it the lock, and a reader waits behind it (and joins the reader
/// holding the lock when the writer ahead leaves): whatever the order, nobody is left waiting
/// and the lock ends free.
#[test]
#[ignore = "a model check: minutes; run by .ci/run with --ignored"]
fn a_waiter_that_gives_up_as_it_is_granted() {
    for held_alone in [true, false] {
        model(3, move || {
            let guarded = Guarded::new();
            assert!(match held_alone {
                true => guarded.lock.try_write(),
                false => guarded.lock.try_read(),
            });
            let quitter = {
                let guarded = guarded.clone();
                thread::spawn(move || {
                    let mut wait = guarded.lock.lock(true);
                    let taken = loom::future::block_on(futures::future::poll_fn(|cx| {
                        Poll::Ready(Pin::new(&mut wait).poll(cx).is_ready())
                    }));
                    drop(wait);
                    if taken {
                        guarded.touch(true);
                        guarded.release(true);
                    }
                })
            };
            let reader = {
                let guarded = guarded.clone();
                thread::spawn(move || guarded.visit(false))
            };
            guarded.touch(held_alone);
            guarded.release(held_alone);
            quitter.join().expect("no thread panics");
            reader.join().expect("no thread panics");
            guarded.check_free();
        });
    }
}
