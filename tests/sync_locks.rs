//! The built-in locks (`Lock`, `RLock`), semaphores (`Semaphore`, `BoundedSemaphore`) and
//! `Condition` across real sockets and processes: mutual exclusion, Python's errors, timeouts
//! (asserted by outcome, never by duration), ownership of re-entrant locks by thread or task,
//! guards, and clients killed while they hold or wait.

#[macro_use]
mod common;

use std::sync::mpsc;
use std::time::Duration;

use common::{wait_until, ChildGuard, InProcessServer, INTENTIONAL, TIMEOUT};
use manager::proxy::shape::Fallible;
use manager::sync::{
    BoundedSemaphoreBlockingProxy, ConditionBlockingProxy, ListBlockingProxy, LockBlockingProxy,
    RLockBlockingProxy, SemaphoreBlockingProxy,
};
use manager::{
    BlockingManager, Error, Manager, Process, Proxy as _, Register, Registry, RemoteError,
    RemoteErrorKind, Typeid,
};
use serde::{Deserialize, Serialize};

/// A short timeout, for waits that are expected to time out.
const SHORT: Duration = Duration::from_millis(50);

/// A shared integer whose increment is a read and a write: two unsynchronised clients lose
/// updates, so an exact final count shows that a lock excluded them.
#[derive(Debug)]
pub struct Counter {
    value: i64,
}

#[manager::shared]
impl Counter {
    /// The value.
    pub fn get(&self) -> i64 {
        self.value
    }

    /// Replaces the value.
    pub fn set(&mut self, value: i64) {
        self.value = value;
    }
}

const COUNTER: Typeid<CounterBlockingProxy> = Typeid::new("counter");

/// The built-in types plus `counter`.
fn registry() -> Registry {
    let mut registry = Registry::new();
    registry
        .register(Register::factory("counter", |(): ()| Counter { value: 0 }))
        .unwrap();
    manager::sync::register(&mut registry).unwrap();
    registry
}

fn server() -> InProcessServer {
    InProcessServer::tcp(registry())
}

/// The kind of the remote error inside `result`, which must have failed.
fn kind<T: std::fmt::Debug>(result: manager::Result<T>) -> RemoteErrorKind {
    match result {
        Ok(value) => panic!("expected a remote error, got Ok({value:?})"),
        Err(error) => error
            .remote_kind()
            .unwrap_or_else(|| panic!("expected a remote error, got {error}")),
    }
}

/// The message of the remote error inside `result`, which must have failed with `expected`.
fn failure<T: std::fmt::Debug>(result: manager::Result<T>, expected: RemoteErrorKind) -> String {
    match result {
        Err(Error::Remote(remote)) if remote.kind == expected => remote.message,
        other => panic!("expected a {expected:?} remote error, got {other:?}"),
    }
}

/// Polls `read` until it returns `expected`.
fn wait_for_count(what: &str, expected: u64, read: impl Fn() -> manager::Result<u64>) {
    wait_until(&format!("{what} == {expected}"), || match read() {
        Ok(n) if n == expected => Ok(()),
        other => Err(format!("{other:?}")),
    });
}

/// Waits until the server counts `n` open connections: a killed client's connection has been
/// closed and its cleanups have run.
fn wait_connections(observer: &BlockingManager, n: u64) {
    wait_for_count("open connections", n, || {
        observer.debug_info().map(|info| info.connections)
    });
}

/// Fails the test if `child` has ended (it was meant to be holding or waiting).
fn still_running(child: &mut ChildGuard) {
    if !child.0.is_alive() {
        panic!("the child ended early: {:?}", child.0.join());
    }
}

/// A proxy for the same object as `proxy`, over `manager`'s connection (another client).
fn other_client<P: manager::Proxy>(manager: &BlockingManager, proxy: &impl manager::Proxy) -> P {
    manager.attach(proxy.base().token()).unwrap()
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

// ---------------------------------------------------------------------------------------------
// Mutual exclusion.
// ---------------------------------------------------------------------------------------------

/// Something that excludes: each kind is used the way a Python program would use it.
#[derive(Debug, Clone, Serialize, Deserialize)]
enum Guarded {
    /// `with lock:` (the guard).
    Lock(LockBlockingProxy),
    /// `with rlock:` and a nested `acquire`/`release`.
    RLock(RLockBlockingProxy),
    /// `with semaphore:` on a `BoundedSemaphore(1)`.
    Semaphore(BoundedSemaphoreBlockingProxy),
    /// `acquire`/`release` of a condition's lock.
    Condition(ConditionBlockingProxy),
}

fn increment(counter: &CounterBlockingProxy) -> manager::Result<()> {
    let value = counter.get()?;
    std::thread::yield_now();
    counter.set(value + 1)
}

/// A child that increments `counter` `rounds` times, each time under `guarded`.
#[manager::entry]
fn count_under(
    guarded: Guarded,
    counter: CounterBlockingProxy,
    rounds: u32,
) -> manager::Result<()> {
    for _ in 0..rounds {
        match &guarded {
            Guarded::Lock(lock) => {
                let _guard = lock.lock()?;
                increment(&counter)?;
            }
            Guarded::RLock(rlock) => {
                let _guard = rlock.lock()?;
                rlock.acquire()?;
                increment(&counter)?;
                rlock.release()?;
            }
            Guarded::Semaphore(semaphore) => {
                let _guard = semaphore.lock()?;
                increment(&counter)?;
            }
            Guarded::Condition(condition) => {
                condition.acquire()?;
                increment(&counter)?;
                condition.release()?;
            }
        }
    }
    Ok(())
}

fn each_lock_excludes_every_other_process() {
    const PROCESSES: u32 = 4;
    const ROUNDS: u32 = 50;
    let server = server();
    let manager = server.connect();
    let kinds = [
        Guarded::Lock(manager.lock().unwrap()),
        Guarded::RLock(manager.rlock().unwrap()),
        Guarded::Semaphore(manager.bounded_semaphore(1).unwrap()),
        Guarded::Condition(manager.condition().unwrap()),
    ];
    for guarded in kinds {
        let counter = manager.create(&COUNTER, ()).unwrap();
        let mut children: Vec<ChildGuard> = (0..PROCESSES)
            .map(|_| {
                ChildGuard(
                    Process::spawn(count_under, (guarded.clone(), counter.clone(), ROUNDS))
                        .unwrap(),
                )
            })
            .collect();
        for child in &mut children {
            assert!(child.join().success(), "a child failed with {guarded:?}");
        }
        assert_eq!(
            counter.get().unwrap(),
            i64::from(PROCESSES * ROUNDS),
            "lost updates under {guarded:?}"
        );
        // Every child released what it took.
        match &guarded {
            Guarded::Lock(lock) => assert!(!lock.locked().unwrap()),
            Guarded::RLock(rlock) => assert!(!rlock.locked().unwrap()),
            Guarded::Semaphore(semaphore) => assert_eq!(semaphore.get_value().unwrap(), 1),
            Guarded::Condition(condition) => assert!(!condition.locked().unwrap()),
        }
    }
}

/// A child whose `tasks` tokio tasks each increment `counter` `rounds` times under `rlock`,
/// re-entering it once per round: tasks are distinct owners.
#[manager::entry]
fn count_in_tasks(
    rlock: RLockBlockingProxy,
    counter: CounterBlockingProxy,
    tasks: u32,
    rounds: u32,
) -> manager::Result<()> {
    let rlock = rlock.into_async();
    let counter = counter.into_async();
    runtime().block_on(async move {
        let mut handles = Vec::new();
        for _ in 0..tasks {
            let (rlock, counter) = (rlock.clone(), counter.clone());
            handles.push(tokio::spawn(async move {
                for _ in 0..rounds {
                    let guard = rlock.lock().await?;
                    rlock.acquire().await?;
                    let value = counter.get().await?;
                    tokio::task::yield_now().await;
                    counter.set(value + 1).await?;
                    rlock.release().await?;
                    drop(guard);
                }
                Ok::<(), Error>(())
            }));
        }
        for handle in handles {
            handle.await.expect("a task panicked")?;
        }
        Ok(())
    })
}

fn rlock_excludes_tasks_of_one_process_and_other_processes() {
    const PROCESSES: u32 = 2;
    const TASKS: u32 = 3;
    const ROUNDS: u32 = 30;
    let server = server();
    let manager = server.connect();
    let rlock = manager.rlock().unwrap();
    let counter = manager.create(&COUNTER, ()).unwrap();
    let mut children: Vec<ChildGuard> = (0..PROCESSES)
        .map(|_| {
            ChildGuard(
                Process::spawn(
                    count_in_tasks,
                    (rlock.clone(), counter.clone(), TASKS, ROUNDS),
                )
                .unwrap(),
            )
        })
        .collect();
    for child in &mut children {
        assert!(child.join().success());
    }
    assert_eq!(
        counter.get().unwrap(),
        i64::from(PROCESSES * TASKS * ROUNDS)
    );
    assert!(!rlock.locked().unwrap());
}

// ---------------------------------------------------------------------------------------------
// Timeouts and errors.
// ---------------------------------------------------------------------------------------------

fn timeouts_and_non_blocking_attempts_answer_false() {
    let server = server();
    let a = server.connect();
    let b = server.connect();

    // Lock.
    let lock = a.lock().unwrap();
    let lock_b: LockBlockingProxy = other_client(&b, &lock);
    lock.acquire().unwrap();
    assert!(!lock_b.acquire_timeout(SHORT).unwrap());
    assert!(!lock_b.try_acquire().unwrap());
    assert!(
        !lock.try_acquire().unwrap(),
        "a Lock is not re-entrant, even for its holder"
    );
    assert_eq!(lock.n_waiting().unwrap(), 0, "a timed-out waiter is gone");
    lock.release().unwrap();
    assert!(lock_b.try_acquire().unwrap());
    lock_b.release().unwrap();

    // RLock: another client and another thread of the same client are other owners.
    let rlock = a.rlock().unwrap();
    let rlock_b: RLockBlockingProxy = other_client(&b, &rlock);
    rlock.acquire().unwrap();
    assert!(!rlock_b.acquire_timeout(SHORT).unwrap());
    assert!(!rlock_b.try_acquire().unwrap());
    std::thread::scope(|scope| {
        scope.spawn(|| {
            assert!(!rlock.acquire_timeout(SHORT).unwrap());
            assert!(!rlock.try_acquire().unwrap());
        });
    });
    rlock.release().unwrap();
    assert!(rlock_b.try_acquire().unwrap());
    rlock_b.release().unwrap();

    // Semaphores.
    let semaphore = a.semaphore(0).unwrap();
    assert!(!semaphore.acquire_timeout(SHORT).unwrap());
    assert!(!semaphore.try_acquire().unwrap());
    assert_eq!(semaphore.get_value().unwrap(), 0);
    assert_eq!(semaphore.n_waiting().unwrap(), 0);
    let bounded = a.bounded_semaphore(1).unwrap();
    assert!(bounded.try_acquire().unwrap());
    assert!(!bounded.acquire_timeout(SHORT).unwrap());
    assert_eq!(bounded.get_value().unwrap(), 0);
    bounded.release().unwrap();
    assert!(bounded.acquire_timeout(SHORT).unwrap());

    // Condition: a wait that times out answers false and still re-acquires the lock.
    let condition = a.condition().unwrap();
    let condition_b: ConditionBlockingProxy = other_client(&b, &condition);
    condition.acquire().unwrap();
    assert!(!condition_b.acquire_timeout(SHORT).unwrap());
    assert!(!condition.wait_timeout(SHORT).unwrap());
    assert!(
        !condition_b.try_acquire().unwrap(),
        "the wait re-acquired the lock"
    );
    assert!(!condition.wait_for(|| Ok(false), Some(SHORT)).unwrap());
    assert!(
        condition.wait_for(|| Ok(true), None).unwrap(),
        "true at once"
    );
    assert_eq!(condition.n_waiting().unwrap(), 0);
    condition.release().unwrap();
    assert!(condition_b.try_acquire().unwrap());
    condition_b.release().unwrap();

    // A wait releases every level of the lock and restores them all.
    condition.acquire().unwrap();
    condition.acquire().unwrap();
    assert!(!condition.wait_timeout(SHORT).unwrap());
    condition.release().unwrap();
    assert!(!condition_b.try_acquire().unwrap(), "one level is left");
    condition.release().unwrap();
    assert_eq!(kind(condition.release()), RemoteErrorKind::Runtime);

    // Python's ValueErrors for timeouts, through the untyped call.
    let call = |args: (bool, Option<f64>)| {
        lock.base()
            .call_blocking::<Fallible<bool, RemoteError>>("acquire", args)
            .unwrap()
            .map_err(Error::Remote)
    };
    let message = failure(call((false, Some(1.0))), RemoteErrorKind::InvalidValue);
    assert!(message.contains("non-blocking"), "{message}");
    assert_eq!(
        kind(call((true, Some(-1.0)))),
        RemoteErrorKind::InvalidValue
    );
    assert_eq!(
        kind(call((true, Some(f64::NAN)))),
        RemoteErrorKind::InvalidValue
    );
    assert!(
        call((true, Some(f64::INFINITY))).unwrap(),
        "an infinite timeout"
    );
    lock.release().unwrap();
}

fn releasing_what_is_not_held_follows_python() {
    let server = server();
    let a = server.connect();
    let b = server.connect();

    // Lock: not owned, so anyone may release it; releasing it unlocked is a RuntimeError.
    let lock = a.lock().unwrap();
    let message = failure(lock.release(), RemoteErrorKind::Runtime);
    assert_eq!(message, "release unlocked lock");
    lock.acquire().unwrap();
    let lock_b: LockBlockingProxy = other_client(&b, &lock);
    lock_b.release().unwrap();
    assert!(!lock.locked().unwrap());
    assert_eq!(kind(lock_b.release()), RemoteErrorKind::Runtime);

    // RLock: only its owner may release it.
    let rlock = a.rlock().unwrap();
    let message = failure(rlock.release(), RemoteErrorKind::Runtime);
    assert_eq!(message, "cannot release un-acquired lock");
    rlock.acquire().unwrap();
    let rlock_b: RLockBlockingProxy = other_client(&b, &rlock);
    assert_eq!(kind(rlock_b.release()), RemoteErrorKind::Runtime);
    assert!(rlock.locked().unwrap(), "a refused release changes nothing");
    rlock.release().unwrap();

    // BoundedSemaphore: ValueError beyond the initial value; Semaphore: allowed.
    let bounded = a.bounded_semaphore(2).unwrap();
    let message = failure(bounded.release(), RemoteErrorKind::InvalidValue);
    assert_eq!(message, "Semaphore released too many times");
    bounded.acquire().unwrap();
    assert_eq!(kind(bounded.release_n(2)), RemoteErrorKind::InvalidValue);
    assert_eq!(
        bounded.get_value().unwrap(),
        1,
        "a refused release changes nothing"
    );
    bounded.release().unwrap();
    assert_eq!(bounded.get_value().unwrap(), 2);
    let semaphore = a.semaphore(1).unwrap();
    semaphore.release().unwrap();
    semaphore.release_n(3).unwrap();
    assert_eq!(semaphore.get_value().unwrap(), 5);
    assert_eq!(kind(semaphore.release_n(0)), RemoteErrorKind::InvalidValue);

    // Condition: its lock is owned; wait and notify need it.
    let condition = a.condition().unwrap();
    assert_eq!(kind(condition.release()), RemoteErrorKind::Runtime);
    let message = failure(condition.wait(), RemoteErrorKind::Runtime);
    assert_eq!(message, "cannot wait on un-acquired lock");
    assert_eq!(
        kind(condition.wait_timeout(SHORT)),
        RemoteErrorKind::Runtime
    );
    assert_eq!(
        kind(condition.wait_for(|| Ok(false), None)),
        RemoteErrorKind::Runtime
    );
    let message = failure(condition.notify(1), RemoteErrorKind::Runtime);
    assert_eq!(message, "cannot notify on un-acquired lock");
    assert_eq!(kind(condition.notify_all()), RemoteErrorKind::Runtime);
    condition.acquire().unwrap();
    let condition_b: ConditionBlockingProxy = other_client(&b, &condition);
    assert_eq!(kind(condition_b.notify(1)), RemoteErrorKind::Runtime);
    assert_eq!(kind(condition_b.wait()), RemoteErrorKind::Runtime);
    assert_eq!(kind(condition_b.release()), RemoteErrorKind::Runtime);
    condition.notify(1).unwrap();
    condition.notify_all().unwrap();
    condition.release().unwrap();
}

fn rlock_is_reentrant_and_owned_by_a_thread_or_task() {
    let server = server();
    let a = server.connect();
    let rlock = a.rlock().unwrap();

    // Blocking: the owner is the thread.
    rlock.acquire().unwrap();
    assert!(rlock.try_acquire().unwrap());
    assert!(rlock.acquire_timeout(SHORT).unwrap());
    std::thread::scope(|scope| {
        scope.spawn(|| {
            assert!(!rlock.try_acquire().unwrap());
            assert_eq!(kind(rlock.release()), RemoteErrorKind::Runtime);
        });
    });
    for _ in 0..3 {
        assert!(rlock.locked().unwrap());
        rlock.release().unwrap();
    }
    assert!(!rlock.locked().unwrap());
    assert_eq!(kind(rlock.release()), RemoteErrorKind::Runtime);

    // Nested guards release one level each.
    let outer = rlock.lock().unwrap();
    let inner = rlock.lock().unwrap();
    drop(inner);
    assert!(rlock.locked().unwrap(), "the outer level is still held");
    drop(outer);
    assert!(!rlock.locked().unwrap());

    // Async: the owner is the task.
    let runtime = runtime();
    runtime.block_on(async {
        let manager = Manager::connect(server.address(), server.authkey())
            .await
            .unwrap();
        let rlock = manager.rlock().await.unwrap();
        rlock.acquire().await.unwrap();
        assert!(
            rlock.try_acquire().await.unwrap(),
            "the same task re-enters"
        );
        let other = rlock.clone();
        tokio::spawn(async move {
            assert!(!other.try_acquire().await.unwrap());
            assert!(!other.acquire_timeout(SHORT).await.unwrap());
            assert_eq!(kind(other.release().await), RemoteErrorKind::Runtime);
        })
        .await
        .unwrap();
        rlock.release().await.unwrap();
        rlock.release().await.unwrap();
        assert!(!rlock.locked().await.unwrap());

        // A guard releases as the task that acquired it, wherever it is dropped.
        let rlock2 = rlock.clone();
        let guard = rlock.lock().await.unwrap();
        tokio::spawn(async move {
            assert!(!rlock2.try_acquire().await.unwrap());
        })
        .await
        .unwrap();
        guard.release().await.unwrap();
        assert!(!rlock.locked().await.unwrap());
    });
}

// ---------------------------------------------------------------------------------------------
// Guards.
// ---------------------------------------------------------------------------------------------

fn guards_release_when_dropped() {
    common::quiet_intentional_panics();
    let server = server();
    let a = server.connect();
    let b = server.connect();

    let lock = a.lock().unwrap();
    let lock_b: LockBlockingProxy = other_client(&b, &lock);
    {
        let _guard = lock.lock().unwrap();
        assert!(lock.locked().unwrap());
        assert!(!lock_b.try_acquire().unwrap());
    }
    // The drop does not wait for the server; the next call through this process does.
    assert!(
        !lock.locked().unwrap(),
        "the dropped guard released the lock"
    );
    assert!(lock_b.try_acquire().unwrap());
    lock_b.release().unwrap();

    // Another connection of this process sees the release at once too: the connections of
    // one process to one server share what they sent without waiting.
    for round in 0..200 {
        drop(lock.lock().unwrap());
        assert!(
            lock_b.try_acquire().unwrap(),
            "round {round}: the other connection found the dropped guard's lock held"
        );
        lock_b.release().unwrap();
    }

    // Unwinding releases too.
    let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let _guard = lock.lock().unwrap();
        panic!("{INTENTIONAL} while holding the lock");
    }));
    assert!(panicked.is_err());
    assert!(!lock.locked().unwrap());

    // An explicit release reports, and the drop does not release a second time.
    let guard = lock.lock().unwrap();
    guard.release().unwrap();
    assert!(lock_b.try_acquire().unwrap());
    assert!(lock.locked().unwrap(), "still held by the other client");
    lock_b.release().unwrap();

    let rlock = a.rlock().unwrap();
    {
        let _guard = rlock.lock().unwrap();
        assert!(rlock.locked().unwrap());
    }
    assert!(!rlock.locked().unwrap());

    let semaphore = a.semaphore(2).unwrap();
    {
        let _first = semaphore.lock().unwrap();
        let _second = semaphore.lock().unwrap();
        assert_eq!(semaphore.get_value().unwrap(), 0);
    }
    assert_eq!(semaphore.get_value().unwrap(), 2);

    let condition = a.condition().unwrap();
    {
        let _guard = condition.lock().unwrap();
        condition.notify_all().unwrap();
        assert!(condition.locked().unwrap());
    }
    assert!(!condition.locked().unwrap());

    // The async guards.
    runtime().block_on(async {
        let manager = Manager::connect(server.address(), server.authkey())
            .await
            .unwrap();
        let lock = manager.lock().await.unwrap();
        let semaphore = manager.bounded_semaphore(1).await.unwrap();
        let condition = manager.condition().await.unwrap();
        for _ in 0..20 {
            let guard = lock.lock().await.unwrap();
            assert!(!lock.try_acquire().await.unwrap());
            drop(guard);
            assert!(!lock.locked().await.unwrap());

            let permit = semaphore.lock().await.unwrap();
            assert!(!semaphore.try_acquire().await.unwrap());
            drop(permit);
            assert!(semaphore.try_acquire().await.unwrap(), "the permit is back");
            semaphore.release().await.unwrap();

            let guard = condition.lock().await.unwrap();
            condition.notify(1).await.unwrap();
            drop(guard);
            assert!(!condition.locked().await.unwrap());
        }
    });
}

/// Takes the lock and a permit of the semaphore, and returns: the guards drop as it
/// returns, and their releases are sent without waiting.
#[manager::entry]
fn take_and_return(lock: LockBlockingProxy, slots: SemaphoreBlockingProxy) -> manager::Result<()> {
    let _slot = slots.lock()?;
    let _guard = lock.lock()?;
    Ok(())
}

/// A spawned process flushes its connections when its function returns: its parent, once it
/// has joined it, sees the releases of the guards it dropped last, without waiting for them.
fn a_joined_process_has_released_what_its_guards_held() {
    let server = server();
    let manager = server.connect();
    let lock = manager.lock().unwrap();
    let slots = manager.semaphore(2).unwrap();
    for round in 0..10 {
        let mut child =
            ChildGuard(Process::spawn(take_and_return, (lock.clone(), slots.clone())).unwrap());
        assert!(child.join().success(), "round {round}: the child failed");
        assert!(
            !lock.locked().unwrap(),
            "round {round}: the lock was still held once its holder had been joined"
        );
        assert_eq!(
            slots.get_value().unwrap(),
            2,
            "round {round}: the permit was still taken once its holder had been joined"
        );
    }
}

fn a_cancelled_async_acquire_gives_back_what_it_got() {
    let server = server();
    let a = server.connect();
    let lock = a.lock().unwrap();
    let rlock = a.rlock().unwrap();
    let semaphore = a.semaphore(1).unwrap();
    lock.acquire().unwrap();
    rlock.acquire().unwrap();
    semaphore.acquire().unwrap();

    let runtime = runtime();
    let manager = runtime
        .block_on(Manager::connect(server.address(), server.authkey()))
        .unwrap();
    let lock_b: manager::sync::LockProxy = runtime
        .block_on(manager.attach(lock.base().token()))
        .unwrap();
    let rlock_b: manager::sync::RLockProxy = runtime
        .block_on(manager.attach(rlock.base().token()))
        .unwrap();
    let semaphore_b: manager::sync::SemaphoreProxy = runtime
        .block_on(manager.attach(semaphore.base().token()))
        .unwrap();
    runtime.block_on(async {
        // Each acquire is abandoned by the client while the server keeps it waiting.
        assert!(tokio::time::timeout(SHORT, lock_b.acquire()).await.is_err());
        assert!(tokio::time::timeout(SHORT, rlock_b.acquire())
            .await
            .is_err());
        assert!(tokio::time::timeout(SHORT, semaphore_b.acquire())
            .await
            .is_err());
    });
    // The client cancels what it abandoned: the server stops waiting on its behalf, so the
    // lock never goes to a caller that has given up.
    wait_for_count("lock waiters", 0, || lock.n_waiting());
    wait_for_count("rlock waiters", 0, || rlock.n_waiting());
    wait_for_count("semaphore waiters", 0, || semaphore.n_waiting());

    lock.release().unwrap();
    rlock.release().unwrap();
    semaphore.release().unwrap();
    wait_until("everything free", || {
        let state = (
            lock.locked().map_err(|e| e.to_string())?,
            rlock.locked().map_err(|e| e.to_string())?,
            semaphore.get_value().map_err(|e| e.to_string())?,
        );
        if state == (false, false, 1) {
            Ok(())
        } else {
            Err(format!("{state:?}"))
        }
    });
    assert!(lock.try_acquire().unwrap());
    assert!(rlock.try_acquire().unwrap());
    assert!(semaphore.try_acquire().unwrap());
    drop((lock_b, rlock_b, semaphore_b));
    runtime.block_on(async move { drop(manager) });
}

// ---------------------------------------------------------------------------------------------
// Killed clients.
// ---------------------------------------------------------------------------------------------

/// Everything a child takes or waits on.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Primitives {
    lock: LockBlockingProxy,
    rlock: RLockBlockingProxy,
    semaphore: SemaphoreBlockingProxy,
    bounded: BoundedSemaphoreBlockingProxy,
    condition: ConditionBlockingProxy,
}

/// A child that takes the lock, the RLock twice, two permits of the semaphore, one of the
/// bounded semaphore and the condition's lock twice, says so in `ready`, then sits still until
/// it is killed.
#[manager::entry]
fn hold_everything(all: Primitives, ready: ListBlockingProxy<String>) -> manager::Result<()> {
    let _guard = all.lock.lock()?;
    all.rlock.acquire()?;
    all.rlock.acquire()?;
    all.semaphore.acquire()?;
    all.semaphore.acquire()?;
    all.bounded.acquire()?;
    all.condition.acquire()?;
    all.condition.acquire()?;
    ready.append(&"held".to_string())?;
    // Bounded, in case the parent dies without killing us; the parent kills us long before.
    std::thread::sleep(Duration::from_secs(120));
    Ok(())
}

fn a_killed_holder_releases_everything_it_held() {
    let server = server();
    let observer = server.connect();
    let all = Primitives {
        lock: observer.lock().unwrap(),
        rlock: observer.rlock().unwrap(),
        semaphore: observer.semaphore(3).unwrap(),
        bounded: observer.bounded_semaphore(2).unwrap(),
        condition: observer.condition().unwrap(),
    };
    let ready = observer.list::<String>(&[]).unwrap();
    let mut child =
        ChildGuard(Process::spawn(hold_everything, (all.clone(), ready.clone())).unwrap());
    wait_for_count("the child's report", 1, || ready.len());
    still_running(&mut child);
    assert!(!all.lock.try_acquire().unwrap());
    assert!(!all.rlock.try_acquire().unwrap());
    assert!(!all.condition.try_acquire().unwrap());
    assert_eq!(all.semaphore.get_value().unwrap(), 1);
    assert_eq!(all.bounded.get_value().unwrap(), 1);

    // Another client waits for the lock; the holder's death hands it over.
    let waiter = server.connect();
    let lock_w: LockBlockingProxy = other_client(&waiter, &all.lock);
    let (acquired, wait) = mpsc::channel();
    let waiting = std::thread::spawn(move || {
        let result = lock_w.acquire();
        let _ = acquired.send(result.is_ok());
        lock_w
    });
    wait_for_count("lock waiters", 1, || all.lock.n_waiting());

    child.0.kill().expect("SIGKILL the holder");
    assert_eq!(
        wait.recv_timeout(TIMEOUT),
        Ok(true),
        "the waiter got the lock"
    );
    let lock_w = waiting.join().unwrap();
    wait_connections(&observer, 2);
    assert!(all.lock.locked().unwrap(), "held by the waiter now");
    lock_w.release().unwrap();
    assert!(all.lock.try_acquire().unwrap());
    assert!(
        all.rlock.try_acquire().unwrap(),
        "the RLock, held twice, is free"
    );
    assert!(
        all.condition.try_acquire().unwrap(),
        "the condition's lock is free"
    );
    assert_eq!(
        all.semaphore.get_value().unwrap(),
        3,
        "both permits came back"
    );
    assert_eq!(all.bounded.get_value().unwrap(), 2, "the permit came back");
}

/// A child with one thread waiting on each of the lock, the RLock, the semaphore and the
/// condition (the condition's waiter says so in `ready` once it holds the lock). It waits
/// until it is killed.
#[manager::entry]
fn wait_on_everything(all: Primitives) -> manager::Result<()> {
    let Primitives {
        lock,
        rlock,
        semaphore,
        condition,
        ..
    } = all;
    let threads = vec![
        std::thread::spawn(move || lock.acquire()),
        std::thread::spawn(move || rlock.acquire()),
        std::thread::spawn(move || semaphore.acquire()),
        std::thread::spawn(move || {
            condition.acquire()?;
            condition.wait()
        }),
    ];
    for thread in threads {
        thread.join().expect("a waiting thread panicked")?;
    }
    // Bounded, in case the parent dies without killing us; the parent kills us long before.
    std::thread::sleep(Duration::from_secs(120));
    Ok(())
}

fn a_killed_waiter_takes_nothing() {
    let server = server();
    let observer = server.connect();
    let all = Primitives {
        lock: observer.lock().unwrap(),
        rlock: observer.rlock().unwrap(),
        semaphore: observer.semaphore(0).unwrap(),
        bounded: observer.bounded_semaphore(1).unwrap(),
        condition: observer.condition().unwrap(),
    };
    all.lock.acquire().unwrap();
    all.rlock.acquire().unwrap();
    let mut child = ChildGuard(Process::spawn(wait_on_everything, (all.clone(),)).unwrap());
    wait_for_count("lock waiters", 1, || all.lock.n_waiting());
    wait_for_count("rlock waiters", 1, || all.rlock.n_waiting());
    wait_for_count("semaphore waiters", 1, || all.semaphore.n_waiting());
    wait_for_count("condition waiters", 1, || all.condition.n_waiting());
    still_running(&mut child);

    child.0.kill().expect("SIGKILL the waiter");
    wait_connections(&observer, 1);
    assert_eq!(all.lock.n_waiting().unwrap(), 0);
    assert_eq!(all.rlock.n_waiting().unwrap(), 0);
    assert_eq!(all.semaphore.n_waiting().unwrap(), 0);
    assert_eq!(all.condition.n_waiting().unwrap(), 0);

    // What is released now is not taken by the dead waiters.
    all.lock.release().unwrap();
    all.rlock.release().unwrap();
    all.semaphore.release().unwrap();
    let other = server.connect();
    assert!(other_client::<LockBlockingProxy>(&other, &all.lock)
        .try_acquire()
        .unwrap());
    assert!(other_client::<RLockBlockingProxy>(&other, &all.rlock)
        .try_acquire()
        .unwrap());
    assert_eq!(all.semaphore.get_value().unwrap(), 1);
    assert!(
        !all.condition.locked().unwrap(),
        "the dead waiter did not re-acquire the condition's lock"
    );
}

/// A child that waits on `condition` (saying so in `ready` before it waits) and, once woken,
/// appends `index` to `woke`.
#[manager::entry]
fn wait_once(
    condition: ConditionBlockingProxy,
    woke: ListBlockingProxy<u32>,
    index: u32,
) -> manager::Result<()> {
    let _guard = condition.lock()?;
    condition.wait()?;
    woke.append(&index)
}

fn a_killed_notified_waiter_passes_its_notification_on() {
    let server = server();
    let a = server.connect();
    let condition = a.condition().unwrap();
    let woke = a.list::<u32>(&[]).unwrap();

    // The child waits first, so it is the one `notify(1)` picks.
    let mut child =
        ChildGuard(Process::spawn(wait_once, (condition.clone(), woke.clone(), 0u32)).unwrap());
    wait_for_count("condition waiters", 1, || condition.n_waiting());

    // Then a waiter of this process.
    let b = server.connect();
    let condition_b: ConditionBlockingProxy = other_client(&b, &condition);
    let (returned, wait) = mpsc::channel();
    let waiter = std::thread::spawn(move || {
        let result = condition_b.lock().and_then(|_guard| condition_b.wait());
        let _ = returned.send(result.is_ok());
    });
    wait_for_count("condition waiters", 2, || condition.n_waiting());

    // Notify the child while holding the lock, so that it cannot return, and kill it.
    let guard = condition.lock().unwrap();
    condition.notify(1).unwrap();
    assert_eq!(condition.n_waiting().unwrap(), 1, "one waiter was notified");
    still_running(&mut child);
    child.0.kill().expect("SIGKILL the notified waiter");
    wait_connections(&a, 2);
    assert_eq!(
        condition.n_waiting().unwrap(),
        0,
        "the dead waiter's notification passed to the other waiter"
    );
    drop(guard);
    assert_eq!(
        wait.recv_timeout(TIMEOUT),
        Ok(true),
        "the other waiter woke"
    );
    waiter.join().unwrap();
    assert!(woke.is_empty().unwrap(), "the killed child never woke");
}

// ---------------------------------------------------------------------------------------------
// Condition across processes.
// ---------------------------------------------------------------------------------------------

fn notify_wakes_waiters_in_order_and_notify_all_wakes_the_rest() {
    const WAITERS: u32 = 4;
    let server = server();
    let manager = server.connect();
    let condition = manager.condition().unwrap();
    let woke = manager.list::<u32>(&[]).unwrap();
    let mut children = Vec::new();
    for index in 0..WAITERS {
        children.push(ChildGuard(
            Process::spawn(wait_once, (condition.clone(), woke.clone(), index)).unwrap(),
        ));
        // One at a time, so that the order of waiting is known.
        wait_for_count("condition waiters", u64::from(index + 1), || {
            condition.n_waiting()
        });
    }

    // Nobody is woken without a notification.
    {
        let _guard = condition.lock().unwrap();
        condition.notify(0).unwrap();
        assert_eq!(condition.n_waiting().unwrap(), u64::from(WAITERS));
    }

    for woken in 1..=2u32 {
        {
            let _guard = condition.lock().unwrap();
            condition.notify(1).unwrap();
            assert_eq!(
                condition.n_waiting().unwrap(),
                u64::from(WAITERS - woken),
                "notify(1) wakes exactly one"
            );
        }
        wait_for_count("woken children", u64::from(woken), || woke.len());
        assert_eq!(
            woke.get(-1).unwrap(),
            woken - 1,
            "the longest waiter is woken first"
        );
        assert!(children[woken as usize - 1].join().success());
    }

    {
        let _guard = condition.lock().unwrap();
        condition.notify_all().unwrap();
        assert_eq!(condition.n_waiting().unwrap(), 0);
    }
    for child in &mut children[2..] {
        assert!(child.join().success());
    }
    let mut all = woke.to_vec().unwrap();
    all.sort_unstable();
    assert_eq!(all, (0..WAITERS).collect::<Vec<_>>());
    assert!(!condition.locked().unwrap());
}

/// A child that waits until `counter` reaches `threshold`, then appends `threshold` to `done`.
#[manager::entry]
fn wait_for_threshold(
    condition: ConditionBlockingProxy,
    counter: CounterBlockingProxy,
    threshold: i64,
    done: ListBlockingProxy<i64>,
) -> manager::Result<()> {
    let _guard = condition.lock()?;
    let reached = condition.wait_for(|| Ok(counter.get()? >= threshold), None)?;
    assert!(reached);
    done.append(&threshold)
}

fn wait_for_rechecks_its_predicate_across_processes() {
    let server = server();
    let manager = server.connect();
    let condition = manager.condition().unwrap();
    let counter = manager.create(&COUNTER, ()).unwrap();
    let done = manager.list::<i64>(&[]).unwrap();
    let mut children: Vec<ChildGuard> = (1..=3i64)
        .map(|threshold| {
            ChildGuard(
                Process::spawn(
                    wait_for_threshold,
                    (condition.clone(), counter.clone(), threshold, done.clone()),
                )
                .unwrap(),
            )
        })
        .collect();
    wait_for_count("condition waiters", 3, || condition.n_waiting());

    for value in 1..=3i64 {
        {
            let _guard = condition.lock().unwrap();
            counter.set(value).unwrap();
            condition.notify_all().unwrap();
        }
        wait_for_count("satisfied children", value as u64, || done.len());
        // The others re-checked their predicate and waited again.
        wait_for_count("condition waiters", 3 - value as u64, || {
            condition.n_waiting()
        });
        let mut finished = done.to_vec().unwrap();
        finished.sort_unstable();
        assert_eq!(finished, (1..=value).collect::<Vec<_>>());
    }
    for child in &mut children {
        assert!(child.join().success());
    }

    // The async form, between two tasks of this process.
    runtime().block_on(async {
        let manager = Manager::connect(server.address(), server.authkey())
            .await
            .unwrap();
        let condition = manager.condition().await.unwrap();
        let flag = manager.list::<bool>(&[false]).await.unwrap();
        let waiter = tokio::spawn({
            let (condition, flag) = (condition.clone(), flag.clone());
            async move {
                let _guard = condition.lock().await?;
                condition
                    .wait_for(|| flag.get(0), Some(Duration::from_secs(60)))
                    .await
            }
        });
        while condition.n_waiting().await.unwrap() == 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        {
            let _guard = condition.lock().await.unwrap();
            flag.set(0, &true).await.unwrap();
            condition.notify(1).await.unwrap();
        }
        assert!(waiter.await.unwrap().unwrap());
        let _guard = condition.lock().await.unwrap();
        assert!(!condition
            .wait_for(|| async { Ok(false) }, Some(SHORT))
            .await
            .unwrap());
    });
}

fn the_python_typeids_are_served() {
    let server = server();
    let manager = server.connect();
    for typeid in ["Lock", "RLock", "Condition"] {
        let proxy = manager.create_dynamic(typeid, ()).unwrap();
        assert_eq!(proxy.token().typeid, typeid);
    }
    for typeid in ["Semaphore", "BoundedSemaphore"] {
        let proxy = manager.create_dynamic(typeid, (2u64,)).unwrap();
        assert_eq!(proxy.token().typeid, typeid);
    }
}

fn main() {
    manager::init();
    common::run_tests(vec![
        case!(each_lock_excludes_every_other_process),
        case!(rlock_excludes_tasks_of_one_process_and_other_processes),
        case!(timeouts_and_non_blocking_attempts_answer_false),
        case!(releasing_what_is_not_held_follows_python),
        case!(rlock_is_reentrant_and_owned_by_a_thread_or_task),
        case!(guards_release_when_dropped),
        case!(a_joined_process_has_released_what_its_guards_held),
        case!(a_cancelled_async_acquire_gives_back_what_it_got),
        case!(a_killed_holder_releases_everything_it_held),
        case!(a_killed_waiter_takes_nothing),
        case!(a_killed_notified_waiter_passes_its_notification_on),
        case!(notify_wakes_waiters_in_order_and_notify_all_wakes_the_rest),
        case!(wait_for_rechecks_its_predicate_across_processes),
        case!(the_python_typeids_are_served),
    ]);
}
