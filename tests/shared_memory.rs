//! Clients on the same host served through shared memory (`ConnectOptions::shared_memory`,
//! `ServerConfig::shared_memory`): the same calls as over the socket, multiplexed from threads
//! and tasks, deadlines and cancellation, a client killed mid-call, a client that writes
//! garbage into its ring, and the fallback to the socket when either side turns it off.
//!
//! Servers run in child processes (`BaseManager::start`) on Unix sockets; clients are this
//! process's threads and tasks, and spawned processes. This binary spawns children by
//! re-running itself, so it has its own `main` (`harness = false`).

#[macro_use]
mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{wait_until, ChildGuard, TempPath};
use manager::{
    Address, BaseManager, BlockingManager, Error, Process, Proxy as _, Register, Registry,
    ServerConfig, Token, Typeid,
};

/// An object with small, large, slow and locking calls.
#[derive(Debug, Default)]
pub struct Bench {
    value: i64,
}

#[manager::shared(quick = [get])]
impl Bench {
    /// The value (a quick method: it runs on the server's reader thread).
    pub fn get(&self) -> i64 {
        self.value
    }

    /// Adds `n` under the write lock; the new value.
    pub fn add(&mut self, n: i64) -> i64 {
        self.value += n;
        self.value
    }

    /// `bytes`, back.
    pub fn echo(&self, bytes: Vec<u8>) -> Vec<u8> {
        bytes
    }

    /// Sleeps `ms` milliseconds on a worker; returns `ms`.
    pub fn sleep(&self, ms: u64) -> u64 {
        std::thread::sleep(Duration::from_millis(ms));
        ms
    }

    /// Sleeps `ms` milliseconds without holding a thread.
    pub async fn nap(&self, ms: u64) -> u64 {
        tokio::time::sleep(Duration::from_millis(ms)).await;
        ms
    }
}

const BENCH: Typeid<BenchBlockingProxy> = Typeid::new("bench");
const BENCH_ASYNC: Typeid<BenchProxy> = Typeid::new("bench");

#[manager::entry]
fn registry() -> manager::Result<Registry> {
    let mut registry = manager::sync::registry();
    registry.register(Register::factory("bench", |()| Bench::default()))?;
    Ok(registry)
}

/// A server in a child process on a fresh Unix socket, with `config`.
fn start(socket: &TempPath, config: ServerConfig) -> BlockingManager {
    BaseManager::new(socket.address())
        .config(config)
        .start(registry)
        .expect("cannot start the server")
}

/// Another connection to `manager`'s server, through shared memory when `memory`.
fn connect(manager: &BlockingManager, memory: bool) -> BlockingManager {
    BaseManager::new(manager.address().clone())
        .shared_memory(memory)
        .connect()
        .expect("cannot connect")
}

/// The names in `/dev/shm` now.
fn dev_shm() -> std::collections::BTreeSet<String> {
    std::fs::read_dir("/dev/shm")
        .map(|dir| {
            dir.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// How many of process `pid`'s descriptors are the memory of a shared-memory connection.
fn connection_memories(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|dir| {
            dir.filter_map(|e| e.ok())
                .filter_map(|e| std::fs::read_link(e.path()).ok())
                .filter(|link| link.to_string_lossy().contains("memfd:manager-connection"))
                .count()
        })
        .unwrap_or(0)
}

fn server_pid(manager: &BlockingManager) -> u32 {
    manager.server_process().expect("a started server").pid()
}

/// The calls of the tour (objects, built-ins, values large and small) through shared memory,
/// from a blocking and an async connection; then both close and the server holds no memory
/// of theirs, and nothing was ever named in `/dev/shm`.
fn a_tour_like_workload_goes_through_shared_memory_and_leaves_nothing() {
    let before = dev_shm();
    let socket = TempPath::socket("shm-tour");
    let manager = start(&socket, ServerConfig::default());
    assert!(manager.connection().uses_shared_memory());
    let pid = server_pid(&manager);
    assert_eq!(connection_memories(pid), 1);

    let bench = manager.create(&BENCH, ()).unwrap();
    for i in 1..=500 {
        assert_eq!(bench.add(1).unwrap(), i);
        assert_eq!(bench.get().unwrap(), i);
    }
    // Values past the ring's size travel in pieces.
    for size in [0, 1, 4095, 4096, 1 << 20, (4 << 20) + 17, 9 << 20] {
        let big: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
        assert_eq!(bench.echo(big.clone()).unwrap(), big, "{size} bytes");
    }
    let list = manager.list::<String>(&[]).unwrap();
    let dict = manager.dict::<String, i64>(&[]).unwrap();
    let queue = manager.queue::<i64>(0).unwrap();
    let lock = manager.lock().unwrap();
    for i in 0..100 {
        list.append(&format!("item {i}")).unwrap();
        dict.insert(&format!("k{i}"), &i).unwrap();
        queue.put(&i).unwrap();
    }
    assert_eq!(list.len().unwrap(), 100);
    assert_eq!(dict.get(&"k42".to_string()).unwrap(), Some(42));
    assert_eq!((0..100).map(|_| queue.get().unwrap()).sum::<i64>(), 4950);
    drop(lock.lock().unwrap());
    let namespace = manager.namespace().unwrap();
    namespace.set("x", &1.5f64).unwrap();
    assert_eq!(namespace.get::<f64>("x").unwrap(), 1.5);

    // An async client of the same server, through its own memory.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let client = BaseManager::new(manager.address().clone())
            .connect_async()
            .await
            .unwrap();
        assert!(client.connection().uses_shared_memory());
        let bench = client.create(&BENCH_ASYNC, ()).await.unwrap();
        for i in 1..=200 {
            assert_eq!(bench.add(2).await.unwrap(), 2 * i);
        }
        let big = vec![9u8; 6 << 20];
        assert_eq!(bench.echo(big.clone()).await.unwrap(), big);
        assert_eq!(connection_memories(pid), 2);
    });
    drop(runtime);
    wait_until(
        "the async client's memory is released",
        || match connection_memories(pid) {
            1 => Ok(()),
            n => Err(format!("{n} memories")),
        },
    );
    let other = connect(&manager, true);
    assert_eq!(connection_memories(pid), 2);
    drop(other);
    wait_until(
        "the third client's memory is released",
        || match connection_memories(pid) {
            1 => Ok(()),
            n => Err(format!("{n} memories")),
        },
    );
    assert_eq!(dev_shm(), before, "nothing is named in /dev/shm");
    manager.shutdown().unwrap();
    assert_eq!(dev_shm(), before, "nothing is left in /dev/shm");
}

/// Calls from many threads of one blocking connection, and from many tasks of one async
/// connection, share its rings, slow ones beside quick ones, and complete out of order.
fn calls_from_threads_and_tasks_are_multiplexed_through_the_rings() {
    let socket = TempPath::socket("shm-mux");
    let manager = start(&socket, ServerConfig::default());
    let bench = Arc::new(manager.create(&BENCH, ()).unwrap());
    let slow = {
        let bench = bench.clone();
        std::thread::spawn(move || bench.sleep(1500).unwrap())
    };
    let began = Instant::now();
    let threads: Vec<_> = (0..8)
        .map(|t| {
            let bench = bench.clone();
            std::thread::spawn(move || {
                for i in 0..300 {
                    bench.add(1).unwrap();
                    if i % 50 == 0 {
                        let data = vec![t as u8; 100_000 + i];
                        assert_eq!(bench.echo(data.clone()).unwrap(), data);
                    }
                }
            })
        })
        .collect();
    for thread in threads {
        thread.join().unwrap();
    }
    assert!(
        began.elapsed() < Duration::from_millis(1400) || !slow.is_finished(),
        "the threads' calls did not wait for the slow one"
    );
    assert_eq!(bench.get().unwrap(), 8 * 300);
    assert_eq!(slow.join().unwrap(), 1500);

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let client = BaseManager::new(manager.address().clone())
            .connect_async()
            .await
            .unwrap();
        assert!(client.connection().uses_shared_memory());
        let bench = Arc::new(client.create(&BENCH_ASYNC, ()).await.unwrap());
        let napping = {
            let bench = bench.clone();
            tokio::spawn(async move { bench.nap(1000).await.unwrap() })
        };
        let tasks: Vec<_> = (0..32)
            .map(|_| {
                let bench = bench.clone();
                tokio::spawn(async move {
                    for _ in 0..100 {
                        bench.add(1).await.unwrap();
                    }
                })
            })
            .collect();
        for task in tasks {
            task.await.unwrap();
        }
        assert!(
            !napping.is_finished(),
            "the tasks' calls did not wait for the nap"
        );
        assert_eq!(bench.get().await.unwrap(), 3200);
        assert_eq!(napping.await.unwrap(), 1000);
    });
}

/// A call that misses its deadline fails with a timeout, the server is told to cancel it, and
/// the connection goes on; an async call given up on is cancelled on the server.
fn deadlines_fire_and_cancelled_calls_stop() {
    let socket = TempPath::socket("shm-deadline");
    let manager = start(&socket, ServerConfig::default());
    let bench = manager.create(&BENCH, ()).unwrap();
    let began = Instant::now();
    let timed = bench.with_timeout(Duration::from_millis(200));
    match timed.sleep(3000) {
        Err(Error::Timeout(_)) => {}
        other => panic!("expected a timeout, got {other:?}"),
    }
    assert!(
        began.elapsed() < Duration::from_millis(2500),
        "the call did not wait for the 3 s body"
    );
    assert_eq!(bench.add(5).unwrap(), 5, "the connection goes on");

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let client = BaseManager::new(manager.address().clone())
            .connect_async()
            .await
            .unwrap();
        let bench = client.create(&BENCH_ASYNC, ()).await.unwrap();
        let gave_up = tokio::time::timeout(Duration::from_millis(200), bench.nap(30_000)).await;
        assert!(gave_up.is_err(), "the nap did not end by itself");
        common::wait_until_async("the server cancels the abandoned nap", || async {
            let info = client.debug_info().await.map_err(|e| e.to_string())?;
            match info.running.iter().any(|c| c.method == "nap") {
                false => Ok(()),
                true => Err("still running".to_string()),
            }
        })
        .await;
        assert_eq!(bench.add(1).await.unwrap(), 1);
    });
}

/// What the doomed client shares with the parent.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct Shared {
    lock: Token,
    log: Token,
}

/// Connects through shared memory, takes the lock, makes objects of its own, says so in the
/// log, then waits in a call until it is killed.
#[manager::entry]
fn doomed(address: Address, shared: Shared) -> manager::Result<()> {
    let manager = BaseManager::new(address).connect()?;
    if !manager.connection().uses_shared_memory() {
        return Err(Error::Process("not through shared memory".into()));
    }
    let lock: manager::sync::LockBlockingProxy = manager.attach(&shared.lock)?;
    let log: manager::sync::ListBlockingProxy<String> = manager.attach(&shared.log)?;
    let mine: Vec<_> = (0..10)
        .map(|_| manager.create(&BENCH, ()))
        .collect::<Result<_, _>>()?;
    lock.acquire()?;
    log.append(&"holding".to_string())?;
    mine[0].sleep(3_600_000)?;
    Ok(())
}

/// A client killed with SIGKILL in the middle of a call: the server sees its socket end,
/// releases its objects and its lock, and lets go of its memory.
fn a_client_killed_mid_call_releases_its_objects_and_locks() {
    let socket = TempPath::socket("shm-kill");
    let manager = start(&socket, ServerConfig::default());
    let pid = server_pid(&manager);
    let lock = manager.lock().unwrap();
    let log = manager.list::<String>(&[]).unwrap();
    let shared = Shared {
        lock: lock.base().token().clone(),
        log: log.base().token().clone(),
    };
    let baseline = manager.number_of_objects().unwrap();
    let mut child = ChildGuard(
        Process::spawn(doomed, (manager.address().clone(), shared)).expect("cannot spawn"),
    );
    wait_until("the client holds the lock", || match log.len() {
        Ok(1) => Ok(()),
        other => Err(format!("{other:?}")),
    });
    assert!(lock.locked().unwrap());
    assert_eq!(manager.number_of_objects().unwrap(), baseline + 10);
    assert_eq!(connection_memories(pid), 2);
    child.0.kill().unwrap();
    child.join();
    wait_until("the server releases what the client held", || {
        let objects = manager.number_of_objects().map_err(|e| e.to_string())?;
        let locked = lock.locked().map_err(|e| e.to_string())?;
        match (objects == baseline, locked, connection_memories(pid)) {
            (true, false, 1) => Ok(()),
            state => Err(format!("objects {objects}, state {state:?}")),
        }
    });
    assert!(lock.try_acquire().unwrap(), "the lock is free again");
    lock.release().unwrap();
}

fn main() {
    manager::init();
    common::run_tests(vec![
        case!(a_tour_like_workload_goes_through_shared_memory_and_leaves_nothing),
        case!(calls_from_threads_and_tasks_are_multiplexed_through_the_rings),
        case!(deadlines_fire_and_cancelled_calls_stop),
        case!(a_client_killed_mid_call_releases_its_objects_and_locks),
    ]);
}
