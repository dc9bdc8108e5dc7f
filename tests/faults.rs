//! Faults: clients killed with SIGKILL at random points in the middle of their calls, and a
//! server killed under its clients.
//!
//! - A hundred client processes, in waves of ten, connect to a server child, attach the shared
//!   `Lock`, `RLock` and `Semaphore` the parent made, create lists, dicts and queues of their
//!   own and loop calls on two threads (one takes the three locks in turn, the other creates,
//!   fills and drops objects and waits on a queue). The parent kills each at a random moment
//!   (seeded; the seed is printed, and `FAULTS_SEED=n` replays a run). Afterwards the server's
//!   introspection shows only the parent's objects with their reference counts as before, the
//!   locks are free, the semaphore has all its permits, and one connection is open.
//! - A server child is SIGKILLed while blocking and async clients have calls pending (waiting
//!   for a lock, on an empty queue, under a long deadline) and calls in flight: every one of
//!   them, and every later call, fails with `Error::ConnectionClosed` within a bound, and
//!   nothing hangs or panics.
//!
//! Children are spawned by re-running this binary, so it has its own `main` (`harness = false`).

#[macro_use]
mod common;

use std::os::unix::process::ExitStatusExt as _;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use common::{wait_until, within, ChildGuard, TIMEOUT};
use manager::sync::{
    ListBlockingProxy, LockBlockingProxy, RLockBlockingProxy, SemaphoreBlockingProxy,
};
use manager::{Address, BaseManager, BlockingManager, DebugInfo, Error, Process, Token};
use serde::{Deserialize, Serialize};

/// A small deterministic generator (splitmix64), so that a run can be replayed from its seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// The seed: `FAULTS_SEED` if set, else the clock.
fn seed() -> u64 {
    std::env::var("FAULTS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
        })
}

/// What every doomed client shares with the parent, by token.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct SharedTokens {
    lock: Token,
    rlock: Token,
    semaphore: Token,
    /// A list of `u64` where a client appends its index when it has connected and each time
    /// it holds the lock.
    log: Token,
}

/// When the parent kills a client.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Plan {
    /// At a random moment after the client signalled that it holds every lock.
    Holding = 0,
    /// At a random moment after the client signalled that it connected.
    FromConnect = 1,
    /// At a random moment counted from its start.
    FromStart = 2,
}

/// What a holding client appends to the log (plus its index) once it holds every lock.
const HOLDING: u64 = 1000;

/// An object as `debug_info()` shows it: id, typeid and reference count.
type Seen = (u64, String, u64);

fn seen(info: &DebugInfo) -> Vec<Seen> {
    info.objects
        .iter()
        .map(|o| (o.id, o.typeid.clone(), o.refcount))
        .collect()
}

/// A client that works until it is killed. It returns (with an error, so that its exit status
/// says so) only if a call fails, which must not happen while its server lives.
#[manager::entry]
fn doomed_client(
    address: Address,
    index: u64,
    shared: SharedTokens,
    hold: bool,
) -> manager::Result<()> {
    let manager = BaseManager::new(address).connect()?;
    let lock: LockBlockingProxy = manager.attach(&shared.lock)?;
    let rlock: RLockBlockingProxy = manager.attach(&shared.rlock)?;
    let semaphore: SemaphoreBlockingProxy = manager.attach(&shared.semaphore)?;
    let log: ListBlockingProxy<u64> = manager.attach(&shared.log)?;
    let mine = manager.list::<u64>(&[])?;
    let dict = manager.dict::<String, u64>(&[])?;
    log.append(&index)?;

    // The second thread: objects made and dropped, and waits on an empty queue.
    let churn = {
        let manager = manager.clone();
        std::thread::spawn(move || -> manager::Result<()> {
            let queue = manager.queue::<u64>(0)?;
            for round in 0u64.. {
                let scratch = manager.dict::<u64, String>(&[(round, "x".repeat(64))])?;
                let items = manager.list::<u64>(&[round; 16])?;
                scratch.insert(&(round + 1), &"y".to_string())?;
                items.extend(&[1, 2, 3])?;
                let _ = queue.get_timeout(Duration::from_millis(5))?;
                drop((scratch, items));
            }
            Ok(())
        })
    };

    for round in 0u64.. {
        for k in 0..8 {
            mine.append(&k)?;
            dict.insert(&format!("k{k}"), &round)?;
        }
        mine.clear()?;
        lock.acquire()?;
        log.append(&index)?;
        rlock.acquire()?;
        rlock.acquire()?;
        semaphore.acquire()?;
        mine.append(&round)?;
        if hold {
            // Hold everything until killed, while the other thread goes on calling.
            log.append(&(HOLDING + index))?;
            std::thread::sleep(Duration::from_secs(3600));
        }
        semaphore.release()?;
        rlock.release()?;
        rlock.release()?;
        lock.release()?;
        if churn.is_finished() {
            break;
        }
    }
    match churn.join() {
        Ok(result) => result,
        Err(_) => Err(Error::Process("the churn thread panicked".into())),
    }
}

fn a_hundred_clients_killed_mid_call_leave_nothing_behind() {
    let seed = seed();
    println!("faults seed: {seed} (replay with FAULTS_SEED={seed})");
    let mut rng = Rng(seed);
    let manager = BaseManager::new(Address::local_tcp())
        .start(manager::sync::registry)
        .expect("cannot start the server");
    let lock = manager.lock().unwrap();
    let rlock = manager.rlock().unwrap();
    let semaphore = manager.semaphore(3).unwrap();
    let log = manager.list::<u64>(&[]).unwrap();
    use manager::Proxy as _;
    let shared = SharedTokens {
        lock: lock.base().token().clone(),
        rlock: rlock.base().token().clone(),
        semaphore: semaphore.base().token().clone(),
        log: log.base().token().clone(),
    };
    let address = manager.address().clone();
    let info = manager.debug_info().unwrap();
    let baseline = seen(&info);
    assert_eq!(info.connections, 1);
    assert_eq!(baseline.len(), 4, "{baseline:?}");

    let started = Instant::now();
    let mut counts = [0usize; 3];
    for wave in 0..10u64 {
        // One client per wave holds the lock, the re-entrant lock (twice) and a permit until it
        // is killed, so that the others pile up waiting for it; two are killed at a random
        // moment counted from their start (perhaps before they connect); the rest at a random
        // moment counted from when they connected.
        let holder = rng.below(10);
        let mut plans = Vec::new();
        for i in 0..10 {
            let index = wave * 10 + i;
            let plan = if i == holder {
                Plan::Holding
            } else if rng.below(5) == 0 {
                Plan::FromStart
            } else {
                Plan::FromConnect
            };
            let process = Process::spawn(
                doomed_client,
                (
                    address.clone(),
                    index,
                    shared.clone(),
                    plan == Plan::Holding,
                ),
            )
            .expect("cannot spawn a client");
            let delay = Duration::from_millis(rng.below(200));
            plans.push((
                index,
                ChildGuard(process),
                plan,
                Instant::now() + delay,
                delay,
            ));
        }
        // Those killed counting from their start go first, in the order of their deadlines.
        plans.sort_by_key(|(_, _, plan, deadline, _)| (*plan != Plan::FromStart, *deadline));
        for (index, mut child, plan, deadline, delay) in plans {
            counts[plan as usize] += 1;
            if plan == Plan::FromStart {
                std::thread::sleep(deadline.saturating_duration_since(Instant::now()));
            } else {
                let signal = if plan == Plan::Holding {
                    HOLDING + index
                } else {
                    index
                };
                wait_until(&format!("client {index} to signal {signal}"), || {
                    if !child.0.is_alive() {
                        panic!("client {index} ended on its own: {:?}", child.0.join());
                    }
                    match log.contains(&signal) {
                        Ok(true) => Ok(()),
                        other => Err(format!("{other:?}")),
                    }
                });
                std::thread::sleep(delay);
            }
            // SAFETY: kill with the pid of a child this process spawned and has not reaped.
            unsafe { libc::kill(child.0.pid() as libc::pid_t, libc::SIGKILL) };
            let status = child.join();
            assert_eq!(
                status.signal(),
                Some(libc::SIGKILL),
                "client {index} ended on its own before it was killed (a call failed): {status:?}"
            );
        }
    }
    let entries = log.to_vec().unwrap();
    let connected = (0..100u64).filter(|i| entries.contains(i)).count();
    println!(
        "killed 100 clients in {:?}: {} holding the locks, {} after connecting, {} counting \
         from their start ({} of which before they connected); the clients held the lock {} \
         times in all",
        started.elapsed(),
        counts[Plan::Holding as usize],
        counts[Plan::FromConnect as usize],
        counts[Plan::FromStart as usize],
        100 - connected,
        entries.len() - connected
    );

    wait_until(
        "the killed clients' objects, references and connections to be released",
        || {
            let info = manager.debug_info().map_err(|e| e.to_string())?;
            if seen(&info) == baseline && info.connections == 1 {
                Ok(())
            } else {
                Err(format!(
                    "{} connections, objects {:?} (baseline {baseline:?})",
                    info.connections,
                    seen(&info)
                ))
            }
        },
    );
    // No lock, re-entrant lock or permit is left held by a dead client.
    wait_until("the lock to be free", || match lock.locked() {
        Ok(false) => Ok(()),
        other => Err(format!("{other:?}")),
    });
    assert!(lock.try_acquire().unwrap(), "the lock is acquirable");
    lock.release().unwrap();
    assert!(rlock.try_acquire().unwrap(), "the re-entrant lock is free");
    rlock.release().unwrap();
    assert_eq!(semaphore.get_value().unwrap(), 3, "every permit is back");
    assert_eq!(lock.n_waiting().unwrap(), 0);
    assert_eq!(semaphore.n_waiting().unwrap(), 0);

    let server = manager
        .server_process()
        .expect("the manager started its server");
    drop((lock, rlock, semaphore, log));
    let status = server
        .stop(Duration::from_secs(10))
        .expect("cannot stop the server");
    assert!(status.success(), "the server exited with {status:?}");
}

/// Expects `result` to be the error of a connection whose server is gone.
fn closed<T: std::fmt::Debug>(what: &str, result: manager::Result<T>) {
    match result {
        Err(Error::ConnectionClosed(reason)) => assert!(!reason.is_empty(), "{what}"),
        other => panic!("{what}: expected ConnectionClosed, got {other:?}"),
    }
}

fn a_client_whose_server_is_killed_gets_connection_closed_on_every_call() {
    let manager: BlockingManager = BaseManager::new(Address::local_tcp())
        .start(manager::sync::registry)
        .expect("cannot start the server");
    let pid = manager.server_process().unwrap().pid();
    let address = manager.address().clone();
    let lock = manager.lock().unwrap();
    let queue = manager.queue::<u64>(0).unwrap();
    let list = manager.list::<u64>(&[]).unwrap();
    let token = {
        use manager::Proxy as _;
        list.base().token().clone()
    };
    lock.acquire().unwrap();

    // Blocking calls pending on other threads: two wait for the lock, two on the empty queue,
    // one on the queue under a deadline far in the future.
    let (done, pending) = mpsc::channel::<(String, manager::Result<()>)>();
    let mut threads = Vec::new();
    for n in 0..5 {
        let (lock, queue, done) = (lock.clone(), queue.clone(), done.clone());
        threads.push(std::thread::spawn(move || {
            let (what, result) = match n {
                0 | 1 => ("a blocking acquire", lock.acquire()),
                2 | 3 => ("a blocking get", queue.get().map(drop)),
                _ => (
                    "a blocking get under a 10-minute deadline",
                    queue.get_timeout(Duration::from_secs(600)).map(drop),
                ),
            };
            let _ = done.send((what.to_string(), result));
        }));
    }

    // Async calls on a second connection: twenty pending (lock and queue), and eight tasks
    // calling in a loop, in flight when the server dies.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let async_manager = runtime
        .block_on(BaseManager::new(address.clone()).connect_async())
        .unwrap();
    let (async_lock, async_queue, async_list) = runtime.block_on(async {
        let lock: manager::sync::LockProxy = async_manager
            .attach(&{
                use manager::Proxy as _;
                lock.base().token().clone()
            })
            .await
            .unwrap();
        let queue: manager::sync::QueueProxy<u64> = async_manager
            .attach(&{
                use manager::Proxy as _;
                queue.base().token().clone()
            })
            .await
            .unwrap();
        let list = async_manager.list::<u64>(&[]).await.unwrap();
        (lock, queue, list)
    });
    let mut waiting = Vec::new();
    for n in 0..20 {
        let (lock, queue) = (async_lock.clone(), async_queue.clone());
        waiting.push(runtime.spawn(async move {
            if n % 2 == 0 {
                ("an async acquire", lock.acquire().await)
            } else {
                ("an async get", queue.get().await.map(drop))
            }
        }));
    }
    let stop = Arc::new(AtomicBool::new(false));
    let ok_calls = Arc::new(AtomicU64::new(0));
    let mut loopers = Vec::new();
    for n in 0..8u64 {
        let (list, stop, ok_calls) = (async_list.clone(), stop.clone(), ok_calls.clone());
        loopers.push(runtime.spawn(async move {
            while !stop.load(Ordering::SeqCst) {
                match list.append(&n).await {
                    Ok(()) => {
                        ok_calls.fetch_add(1, Ordering::SeqCst);
                    }
                    Err(e) => return Err(e),
                }
                if n == 0 {
                    // Keep the list short.
                    let _ = list.clear().await;
                }
            }
            Ok(())
        }));
    }

    wait_until("every waiting call to be pending in the server", || match (
        lock.n_waiting(),
        queue.n_waiting_get(),
    ) {
        (Ok(12), Ok(13)) => Ok(()),
        other => Err(format!("{other:?}")),
    });
    wait_until("the looping calls to be under way", || {
        match ok_calls.load(Ordering::SeqCst) {
            n if n >= 100 => Ok(()),
            n => Err(format!("{n} calls")),
        }
    });

    // SAFETY: kill with the pid of the server child this process started.
    unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };

    for _ in 0..5 {
        let (what, result) = pending
            .recv_timeout(TIMEOUT)
            .expect("a pending blocking call hung after the server died");
        closed(&what, result);
    }
    for thread in threads {
        thread.join().unwrap();
    }
    runtime.block_on(async {
        for task in waiting {
            let (what, result) = within("a pending async call", task).await.unwrap();
            closed(what, result);
        }
        for looper in loopers {
            let result = within("a looping async task", looper).await.unwrap();
            closed("a call in flight", result);
        }
    });
    stop.store(true, Ordering::SeqCst);

    // Later calls fail at once with the same error, blocking and async alike.
    assert!(manager.connection().is_closed());
    closed("a later call", list.len());
    closed("a later release", lock.release());
    closed("a later get", queue.get_nowait());
    closed("a later debug_info", manager.debug_info());
    closed("a later create", manager.list::<u64>(&[1]));
    closed(
        "a later attach",
        manager.attach::<ListBlockingProxy<u64>>(&token),
    );
    drop(list.clone());
    runtime.block_on(async {
        closed(
            "a later async call",
            within("a later async call", async_list.len()).await,
        );
        closed(
            "a later async acquire",
            within("a later async acquire", async_lock.try_acquire()).await,
        );
        closed(
            "a later async create",
            within("a later async create", async_manager.lock()).await,
        );
    });
    // A new connection fails at once: nothing listens there any more (or, on a busy machine,
    // another process has since been given the port, and the handshake with it fails).
    match BaseManager::new(address).connect() {
        Err(Error::Connect { .. } | Error::Auth(_) | Error::Protocol(_)) => {}
        other => panic!("expected a connect error, got {other:?}"),
    }
    drop((async_lock, async_queue, async_list, async_manager));
    runtime.shutdown_timeout(Duration::from_secs(5));
    drop((lock, queue));
    // Reaps the killed server.
    let status = manager
        .server_process()
        .unwrap()
        .stop(Duration::from_secs(5))
        .unwrap();
    assert_eq!(status.signal(), Some(libc::SIGKILL));
}

fn main() {
    manager::init();
    common::run_tests(vec![
        case!(a_hundred_clients_killed_mid_call_leave_nothing_behind),
        case!(a_client_whose_server_is_killed_gets_connection_closed_on_every_call),
    ]);
}
