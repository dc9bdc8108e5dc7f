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
    /// Closed until `open` is called; `wait_open` blocks on it.
    gate: (std::sync::Mutex<bool>, std::sync::Condvar),
    /// Whether `wait_open` has started.
    entered: std::sync::atomic::AtomicBool,
}

#[manager::shared(quick = [get, open, entered])]
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

    /// `bytes` as a string of as many `a`s: a large value that looks, on the wire, like a
    /// byte string (a length, then that many bytes).
    pub fn letters(&self, bytes: Vec<u8>) -> String {
        "a".repeat(bytes.len())
    }

    /// `bytes`, back inside an `Ok`, or the length as an error.
    pub fn checked(&self, bytes: Vec<u8>, fail: bool) -> Result<Vec<u8>, String> {
        match fail {
            false => Ok(bytes),
            true => Err(bytes.len().to_string()),
        }
    }

    /// A number, then `bytes`: a value whose last field is a byte string.
    pub fn tagged(&self, bytes: Vec<u8>) -> (u32, serde_bytes::ByteBuf) {
        (7, serde_bytes::ByteBuf::from(bytes))
    }

    /// Sleeps `ms` milliseconds on a worker; returns `ms`.
    pub fn sleep(&self, ms: u64) -> u64 {
        std::thread::sleep(Duration::from_millis(ms));
        ms
    }

    /// Blocks (a plain method, on the thread that runs it) until `open` is called on this
    /// object, or `ms` milliseconds pass; whether it was opened.
    pub fn wait_open(&self, ms: u64) -> bool {
        self.entered
            .store(true, std::sync::atomic::Ordering::SeqCst);
        let (open, opened) = &self.gate;
        let open = open.lock().unwrap();
        let (open, _) = opened
            .wait_timeout_while(open, Duration::from_millis(ms), |open| !*open)
            .unwrap();
        *open
    }

    /// Whether `wait_open` has started on this object (quick).
    pub fn entered(&self) -> bool {
        self.entered.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Opens the gate `wait_open` waits for (quick: it needs no worker).
    pub fn open(&self) {
        *self.gate.0.lock().unwrap() = true;
        self.gate.1.notify_all();
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

/// Runs `body` in a runtime of its own with a new `bench` object of a new async connection
/// (through shared memory) to `manager`'s server; the connection is gone when it returns.
fn with_async_bench<Fut: std::future::Future<Output = ()>>(
    manager: &BlockingManager,
    body: impl FnOnce(BenchProxy) -> Fut,
) {
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
        body(client.create(&BENCH_ASYNC, ()).await.unwrap()).await;
    });
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

/// How many mappings of process `pid` are the memory of a shared-memory connection (the
/// server keeps the mapping, not the descriptor).
fn connection_memories(pid: u32) -> usize {
    std::fs::read_to_string(format!("/proc/{pid}/maps"))
        .map(|maps| {
            maps.lines()
                .filter(|line| line.contains("memfd:manager-connection"))
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
    with_async_bench(&manager, |bench| async move {
        for i in 1..=200 {
            assert_eq!(bench.add(2).await.unwrap(), 2 * i);
        }
        let big = vec![9u8; 6 << 20];
        assert_eq!(bench.echo(big.clone()).await.unwrap(), big);
        assert_eq!(connection_memories(pid), 2);
    });
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
    // On an object of its own: only an object's lock orders calls.
    let sleeper = manager.create(&BENCH, ()).unwrap();
    let slow = std::thread::spawn(move || sleeper.sleep(6000).unwrap());
    let threads: Vec<_> = (0..8)
        .map(|t| {
            let bench = bench.clone();
            std::thread::spawn(move || {
                for i in 0..100 {
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
        !slow.is_finished(),
        "the threads' calls did not wait for the slow one"
    );
    assert_eq!(bench.get().unwrap(), 8 * 100);
    assert_eq!(slow.join().unwrap(), 6000);

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
        let napper = client.create(&BENCH_ASYNC, ()).await.unwrap();
        let napping = tokio::spawn(async move { napper.nap(6000).await.unwrap() });
        let tasks: Vec<_> = (0..16)
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
        assert_eq!(bench.get().await.unwrap(), 1600);
        assert_eq!(napping.await.unwrap(), 6000);
    });
}

/// Issue 10's isolation through shared memory, where the server's reader thread runs a plain
/// call itself: one thread's call blocks until another thread of the same connection opens
/// its gate. Meanwhile that connection's other calls (on another object, a control request)
/// are answered, then the opening call reaches the server and ends the wait. (Were the
/// connection not read while the call blocks, the gate would never open: the wait would end
/// only at its 30 s bound, and return false.)
fn a_blocked_call_holds_up_no_other_caller_of_its_connection() {
    let socket = TempPath::socket("shm-isolation");
    let manager = start(&socket, ServerConfig::default());
    assert!(manager.connection().uses_shared_memory());
    let gated = manager.create(&BENCH, ()).unwrap();
    let other = manager.create(&BENCH, ()).unwrap();
    let waiter = gated.clone();
    let waiting = std::thread::spawn(move || waiter.wait_open(30_000).unwrap());
    wait_until("the wait runs", || match gated.entered() {
        Ok(true) => Ok(()),
        other => Err(format!("{other:?}")),
    });
    for n in 1..=50 {
        assert_eq!(other.add(1).unwrap(), n);
    }
    assert_eq!(manager.number_of_objects().unwrap(), 2);
    assert!(!waiting.is_finished(), "the gate is still closed");
    gated.open().unwrap();
    assert!(waiting.join().unwrap(), "the wait ended by the open");
    // The method that blocked runs on workers from now on, and still as it should.
    let again = gated.clone();
    let waiting = std::thread::spawn(move || again.wait_open(30_000).unwrap());
    assert!(waiting.join().unwrap(), "the gate stays open");
    assert_eq!(other.add(1).unwrap(), 51);
}

/// Plain calls that block, from connections through shared memory, count against
/// `ServerConfig::max_workers` wherever they run: with a bound of 2, a third waits until one
/// of the first two ends, while a call that needs no worker (a control request) does not.
fn blocked_calls_through_shared_memory_count_against_the_bound() {
    let socket = TempPath::socket("shm-bound");
    let mut config = ServerConfig::default();
    config.max_workers = 2;
    let manager = start(&socket, config);
    let clients: Vec<BlockingManager> = (0..3).map(|_| connect(&manager, true)).collect();
    let gates: Vec<BenchBlockingProxy> = clients
        .iter()
        .map(|client| {
            assert!(client.connection().uses_shared_memory());
            client.create(&BENCH, ()).unwrap()
        })
        .collect();
    let mut waits = Vec::new();
    for gate in &gates[..2] {
        let gate = gate.clone();
        waits.push(std::thread::spawn(move || gate.wait_open(30_000).unwrap()));
    }
    let entered = |n: usize| gates[n].entered().unwrap();
    wait_until("two waits run", || match (entered(0), entered(1)) {
        (true, true) => Ok(()),
        other => Err(format!("{other:?}")),
    });
    let third = gates[2].clone();
    waits.push(std::thread::spawn(move || third.wait_open(30_000).unwrap()));
    // Time for the third call to reach the server.
    std::thread::sleep(Duration::from_millis(300));
    assert!(!entered(2), "a third ran past the bound");
    assert_eq!(manager.number_of_objects().unwrap(), 3);
    gates[0].open().unwrap();
    assert!(waits.remove(0).join().unwrap());
    wait_until("the third runs once the first ended", || match entered(2) {
        true => Ok(()),
        false => Err("not yet".to_string()),
    });
    gates[1].open().unwrap();
    gates[2].open().unwrap();
    for wait in waits {
        assert!(wait.join().unwrap(), "a wait ended by its open");
    }
}

/// A call that misses its deadline fails with a timeout, the server is told to cancel it, and
/// the connection goes on; an async call given up on is cancelled on the server.
fn deadlines_fire_and_cancelled_calls_stop() {
    let socket = TempPath::socket("shm-deadline");
    let manager = start(&socket, ServerConfig::default());
    let bench = manager.create(&BENCH, ()).unwrap();
    let began = Instant::now();
    let timed = bench.clone().with_timeout(Duration::from_millis(200));
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
/// releases its objects and its lock, and lets go of its memory (while the call it was in
/// still runs: a body cannot be interrupted, its reply goes nowhere).
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

/// A client that runs the handshake and takes the memory, then writes what it likes into it.
struct Hostile {
    socket: std::os::unix::net::UnixStream,
    base: *mut u8,
    len: usize,
}

/// Where the server's layout puts things (`transport::shm`): the request ring's header and
/// data, and the reply ring's header.
const REQUESTS: usize = 256;
const REPLIES: usize = 512;
const REQUEST_DATA: usize = 4096;
/// The request arena (`transport::shm::bulk`): the server's count of its blocks taken, its
/// data, its size; and a descriptor's marker.
const REQUESTS_ARENA_TAKEN: usize = 768;
const REQUEST_BLOCKS: usize = 4096 + (8 << 20);
const ARENA: u64 = 16 << 20;
const MARKER: [u8; 4] = [0xff; 4];
/// In a ring's header: the producer's index, the consumer's, the data futex.
const HEAD: usize = 0;
const TAIL: usize = 64;
const DATA_SEQ: usize = 128;

impl Hostile {
    fn connect(address: &Address) -> Hostile {
        use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let Address::Unix(path) = address else {
            panic!("a Unix address")
        };
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let stream = runtime.block_on(async {
            let mut stream = tokio::net::UnixStream::connect(path).await.unwrap();
            manager::auth::client_handshake(&mut stream, &manager::process::authkey())
                .await
                .unwrap();
            let len = stream.read_u32().await.unwrap();
            let mut welcome = vec![0; len as usize];
            stream.read_exact(&mut welcome).await.unwrap();
            let mut frame = vec![0; 4];
            let ping = manager::wire::Request::Control {
                id: 1,
                op: manager::wire::Control::Ping,
            };
            frame.extend(postcard::to_stdvec(&ping).unwrap());
            let hello = manager::wire::Hello {
                features: manager::wire::features::SHARED_MEMORY,
            };
            frame.extend(postcard::to_stdvec(&hello).unwrap());
            let body = (frame.len() - 4) as u32;
            frame[..4].copy_from_slice(&body.to_be_bytes());
            stream.write_all(&frame).await.unwrap();
            let len = stream.read_u32().await.unwrap();
            let mut answer = vec![0; len as usize];
            stream.read_exact(&mut answer).await.unwrap();
            stream.into_std().unwrap()
        });
        stream.set_nonblocking(false).unwrap();
        // The descriptors, with the one byte they come with.
        let mut byte = [0u8; 1];
        let mut iov = libc::iovec {
            iov_base: byte.as_mut_ptr().cast(),
            iov_len: 1,
        };
        let mut control = [0u64; 16];
        // SAFETY: a zeroed msghdr is valid; its pointers are set to live buffers below.
        let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control.as_mut_ptr().cast();
        msg.msg_controllen = std::mem::size_of_val(&control);
        // SAFETY: `msg` points to live buffers of the sizes it says.
        let got = unsafe { libc::recvmsg(stream.as_raw_fd(), &mut msg, 0) };
        assert_eq!(got, 1, "the memory comes with one byte");
        // SAFETY: the kernel filled one SCM_RIGHTS message in `control`.
        let fds: Vec<OwnedFd> = unsafe {
            let header = libc::CMSG_FIRSTHDR(&msg);
            assert!(!header.is_null(), "descriptors came");
            let data = libc::CMSG_DATA(header).cast::<i32>();
            let count = ((*header).cmsg_len as usize - libc::CMSG_LEN(0) as usize) / 4;
            (0..count)
                .map(|i| OwnedFd::from_raw_fd(data.add(i).read_unaligned()))
                .collect()
        };
        assert_eq!(fds.len(), 4, "the memory and three eventfds");
        let memory = std::fs::File::from(fds.into_iter().next().unwrap());
        let len = memory.metadata().unwrap().len() as usize;
        // SAFETY: a shared mapping of the whole memory, unmapped in Drop.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                memory.as_raw_fd(),
                0,
            )
        };
        assert_ne!(base, libc::MAP_FAILED);
        // A sealed size: the client cannot shrink the memory under the server.
        assert!(memory.set_len(4096).is_err(), "the size is sealed");
        Hostile {
            socket: stream,
            base: base.cast(),
            len,
        }
    }

    fn put_u64(&self, at: usize, value: u64) {
        // SAFETY: inside the mapping, aligned.
        unsafe { (self.base.add(at) as *mut u64).write_volatile(value) }
    }

    fn get_u64(&self, at: usize) -> u64 {
        // SAFETY: inside the mapping, aligned.
        unsafe { (self.base.add(at) as *const u64).read_volatile() }
    }

    fn put_bytes(&self, at: usize, bytes: &[u8]) {
        // SAFETY: inside the mapping.
        unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), self.base.add(at), bytes.len()) }
    }

    /// Wakes the server's reader thread, asleep on the request ring's futex.
    fn wake(&self) {
        let word = REQUESTS + DATA_SEQ;
        // SAFETY: inside the mapping, aligned; a futex wake of a shared word.
        unsafe {
            let ptr = self.base.add(word) as *mut u32;
            ptr.write_volatile(ptr.read_volatile().wrapping_add(1));
            libc::syscall(libc::SYS_futex, ptr, libc::FUTEX_WAKE, i32::MAX);
        }
    }

    /// Whether the server closed the socket within the test's bound.
    fn dropped(&mut self) -> bool {
        use std::io::Read;
        self.socket.set_read_timeout(Some(common::TIMEOUT)).unwrap();
        let mut buf = [0u8; 16];
        matches!(self.socket.read(&mut buf), Ok(0))
    }
}

impl Drop for Hostile {
    fn drop(&mut self) {
        // SAFETY: mapped in `connect` with this length.
        unsafe { libc::munmap(self.base.cast(), self.len) };
    }
}

/// What a hostile client writes into its memory.
type Scribble = Box<dyn Fn(&Hostile)>;

/// A frame of the native protocol: length, then `body`.
fn frame(body: &[u8]) -> Vec<u8> {
    let mut frame = (body.len() as u32).to_be_bytes().to_vec();
    frame.extend_from_slice(body);
    frame
}

/// A descriptor of the block at `offset` (`len` bytes) of the arena, as the ring carries it.
fn descriptor(offset: u64, len: u64) -> Vec<u8> {
    let mut bytes = MARKER.to_vec();
    bytes.extend_from_slice(&offset.to_le_bytes());
    bytes.extend_from_slice(&len.to_le_bytes());
    bytes
}

/// Clients that write garbage into their memory (indices that cannot be, a frame longer than
/// the limit, bytes that are no request, a reply ring's read index moved under the server):
/// the server drops each of them, and serves a well-behaved client all along.
fn a_client_writing_garbage_into_its_ring_is_dropped_and_others_are_served() {
    let socket = TempPath::socket("shm-hostile");
    let manager = start(&socket, ServerConfig::default());
    let pid = server_pid(&manager);
    let bench = manager.create(&BENCH, ()).unwrap();
    let mut total = 0;
    let mut calls = |n: i64| {
        for _ in 0..n {
            total += 1;
            assert_eq!(bench.add(1).unwrap(), total, "the good client is served");
        }
    };
    calls(10);
    let cases: Vec<(&str, Scribble)> = vec![
        (
            "a head index past the ring",
            Box::new(|h| h.put_u64(REQUESTS + HEAD, 1 << 40)),
        ),
        (
            "a head index behind the tail",
            Box::new(|h| h.put_u64(REQUESTS + HEAD, u64::MAX - 5)),
        ),
        (
            "a frame longer than the limit",
            Box::new(|h| {
                // (0xffff_ffff would announce a descriptor of a block in the arena.)
                h.put_bytes(REQUEST_DATA, &[0xff, 0xff, 0xff, 0xfe, 0, 0, 0, 0]);
                h.put_u64(REQUESTS + HEAD, 8);
            }),
        ),
        (
            "a frame that is no request",
            Box::new(|h| {
                h.put_bytes(REQUEST_DATA, &frame(&[0xde, 0xad, 0xbe, 0xef, 0x99]));
                h.put_u64(REQUESTS + HEAD, 9);
            }),
        ),
        (
            "a descriptor of a block outside the arena",
            Box::new(|h| {
                h.put_bytes(REQUEST_DATA, &descriptor(1 << 40, 16));
                h.put_u64(REQUESTS + HEAD, 20);
            }),
        ),
        (
            "a descriptor of a block running past the arena's end",
            Box::new(|h| {
                h.put_bytes(REQUEST_DATA, &descriptor(ARENA - 8, 64));
                h.put_u64(REQUESTS + HEAD, 20);
            }),
        ),
        (
            "a descriptor whose end overflows",
            Box::new(|h| {
                h.put_bytes(REQUEST_DATA, &descriptor(8, u64::MAX - 4));
                h.put_u64(REQUESTS + HEAD, 20);
            }),
        ),
        (
            "a block that is no request",
            Box::new(|h| {
                h.put_bytes(REQUEST_BLOCKS, &[0xde, 0xad, 0xbe, 0xef, 0x99]);
                h.put_bytes(REQUEST_DATA, &descriptor(0, 5));
                h.put_u64(REQUESTS + HEAD, 20);
            }),
        ),
        (
            "a reply ring's read index moved past what was written",
            Box::new(|h| {
                h.put_u64(REPLIES + TAIL, 12_345);
                // A ping, whose answer meets the bad index.
                let ping = manager::wire::Request::Control {
                    id: 7,
                    op: manager::wire::Control::Ping,
                };
                let bytes = frame(&postcard::to_stdvec(&ping).unwrap());
                h.put_bytes(REQUEST_DATA, &bytes);
                h.put_u64(REQUESTS + HEAD, bytes.len() as u64);
            }),
        ),
    ];
    for (what, scribble) in cases {
        let mut hostile = Hostile::connect(manager.address());
        assert_eq!(
            connection_memories(pid),
            2,
            "{what}: the hostile client's memory"
        );
        calls(5);
        scribble(&hostile);
        hostile.wake();
        assert!(hostile.dropped(), "{what}: the server drops the connection");
        calls(5);
        wait_until(
            "the server lets go of the hostile client's memory",
            || match connection_memories(pid) {
                1 => Ok(()),
                n => Err(format!("{what}: {n} memories")),
            },
        );
    }
    // A request in a block of the arena, as a large one travels, is read and answered, and
    // the block freed; the same block described again is read again (the client garbles only
    // its own requests that way), and a garbage block after them ends the connection.
    let mut hostile = Hostile::connect(manager.address());
    let ping = |id| {
        postcard::to_stdvec(&manager::wire::Request::Control {
            id,
            op: manager::wire::Control::Ping,
        })
        .unwrap()
    };
    hostile.put_bytes(REQUEST_BLOCKS + 4096, &ping(3));
    let mut ring = descriptor(4096, ping(3).len() as u64);
    ring.extend(descriptor(4096, ping(3).len() as u64));
    hostile.put_bytes(REQUEST_DATA, &ring);
    hostile.put_u64(REQUESTS + HEAD, ring.len() as u64);
    hostile.wake();
    wait_until("both requests in blocks are answered", || {
        match (
            hostile.get_u64(REPLIES + HEAD),
            hostile.get_u64(REQUESTS_ARENA_TAKEN),
        ) {
            (replies, 2) if replies > 0 => Ok(()),
            state => Err(format!("reply bytes, blocks taken: {state:?}")),
        }
    });
    hostile.put_bytes(REQUEST_BLOCKS, &[0xde, 0xad]);
    hostile.put_bytes(REQUEST_DATA + ring.len(), &descriptor(0, 2));
    hostile.put_u64(REQUESTS + HEAD, ring.len() as u64 + 20);
    hostile.wake();
    assert!(hostile.dropped(), "a garbage block ends the connection");
    calls(5);

    // Garbage in the wait words alone only costs the server spurious wake-ups.
    let hostile = Hostile::connect(manager.address());
    for word in [REQUESTS + 128 + 4, REQUESTS + 192, REQUESTS + 192 + 4] {
        // SAFETY: inside the mapping, aligned.
        unsafe { (hostile.base.add(word) as *mut u32).write_volatile(0xdead_beef) };
    }
    hostile.wake();
    calls(20);
    drop(hostile);
    wait_until(
        "the last hostile client's connection ends",
        || match manager.debug_info().map_err(|e| e.to_string())?.connections {
            1 => Ok(()),
            n => Err(format!("{n} connections")),
        },
    );
}

/// A value of `size` bytes that differs from others of the same size by `seed`.
fn pattern(size: usize, seed: u8) -> Vec<u8> {
    (0..size)
        .map(|i| (i % 251) as u8 ^ seed.wrapping_mul(31))
        .collect()
}

/// Values around the size past which frames travel in the arena, up to nearly all of it and
/// past it (through the ring then), as arguments and results of a method and as the bytes of
/// a built-in dict, come back exactly; the server's memory grows by no more than the arenas.
fn large_values_round_trip_exactly_through_the_arena() {
    let socket = TempPath::socket("shm-large");
    let manager = start(&socket, ServerConfig::default());
    let bench = manager.create(&BENCH, ()).unwrap();
    let sizes = [
        (64 << 10) - 40,
        (64 << 10) - 1,
        64 << 10,
        (64 << 10) + 1,
        1 << 20,
        (15 << 20) + 3,
        (16 << 20) - 100,
        17 << 20,
    ];
    for (i, &size) in sizes.iter().enumerate() {
        let value = pattern(size, i as u8);
        assert!(bench.echo(value.clone()).unwrap() == value, "{size} bytes");
    }
    // Many in a row: the arena is reused from its start.
    for i in 0..50u8 {
        let value = pattern((1 << 20) + usize::from(i), i);
        assert!(bench.echo(value.clone()).unwrap() == value, "echo {i}");
    }
    // Values that end in a byte string without being one (the reader copies their end out
    // apart, and they are put back together whole), and one that is, returned as a result.
    for size in [(64 << 10) + 1, 1 << 20, 3 << 20] {
        let value = pattern(size, 9);
        assert_eq!(bench.letters(value.clone()).unwrap().len(), size);
        assert!(bench
            .letters(value.clone())
            .unwrap()
            .bytes()
            .all(|b| b == b'a'));
        assert!(bench.checked(value.clone(), false).unwrap() == Ok(value.clone()));
        assert_eq!(
            bench.checked(value.clone(), true).unwrap(),
            Err(size.to_string())
        );
        let (tag, back) = bench.tagged(value.clone()).unwrap();
        assert!(tag == 7 && back.into_vec() == value, "{size} bytes, tagged");
    }
    let dict = manager.dict::<String, serde_bytes::ByteBuf>(&[]).unwrap();
    for (i, size) in [100_000, 3 << 20].into_iter().enumerate() {
        let value = serde_bytes::ByteBuf::from(pattern(size, i as u8));
        dict.insert(&format!("k{i}"), &value).unwrap();
        assert!(
            dict.get(&format!("k{i}")).unwrap() == Some(value),
            "{size} bytes"
        );
    }
}

/// Large calls from many threads and tasks at once, more than the arenas hold, all come back
/// exactly (those that find an arena full go through the ring), interleaved with small ones.
fn many_concurrent_large_calls_come_back_exactly() {
    let socket = TempPath::socket("shm-many-large");
    let manager = start(&socket, ServerConfig::default());
    let bench = Arc::new(manager.create(&BENCH, ()).unwrap());
    let threads: Vec<_> = (0..8u8)
        .map(|t| {
            let bench = bench.clone();
            std::thread::spawn(move || {
                for round in 0..4u8 {
                    let size = (3 << 20) + usize::from(t) * 4099 + usize::from(round);
                    let value = pattern(size, t ^ round << 4);
                    assert!(
                        bench.echo(value.clone()).unwrap() == value,
                        "thread {t}, round {round}"
                    );
                    assert_eq!(bench.echo(vec![t; 10]).unwrap(), vec![t; 10]);
                }
            })
        })
        .collect();
    with_async_bench(&manager, |bench| async move {
        let calls = (0..12u8).map(|i| {
            let bench = bench.clone();
            async move {
                let value = pattern((2 << 20) + usize::from(i), i);
                assert!(
                    bench.echo(value.clone()).await.unwrap() == value,
                    "task {i}"
                );
            }
        });
        futures::future::join_all(calls).await;
    });
    for thread in threads {
        thread.join().unwrap();
    }
}

/// Makes large calls from four threads, says so in the log after the first, and goes on
/// until it is killed.
#[manager::entry]
fn flooder(address: Address, log: Token) -> manager::Result<()> {
    let manager = BaseManager::new(address).connect()?;
    if !manager.connection().uses_shared_memory() {
        return Err(Error::Process("not through shared memory".into()));
    }
    let log: manager::sync::ListBlockingProxy<String> = manager.attach(&log)?;
    let bench = Arc::new(manager.create(&BENCH, ())?);
    let threads: Vec<_> = (0..4u8)
        .map(|t| {
            let bench = bench.clone();
            std::thread::spawn(move || loop {
                if bench.echo(pattern(4 << 20, t)).is_err() {
                    return;
                }
            })
        })
        .collect();
    bench.echo(pattern(1 << 20, 9))?;
    log.append(&"flooding".to_string())?;
    for thread in threads {
        let _ = thread.join();
    }
    Ok(())
}

/// A client killed while large values of its go both ways through its arenas: the server
/// drops the connection, lets go of its memory and serves others, large values included.
fn a_client_killed_with_blocks_outstanding_frees_everything() {
    let socket = TempPath::socket("shm-kill-large");
    let manager = start(&socket, ServerConfig::default());
    let pid = server_pid(&manager);
    let log = manager.list::<String>(&[]).unwrap();
    let baseline = manager.number_of_objects().unwrap();
    let mut child = ChildGuard(
        Process::spawn(
            flooder,
            (manager.address().clone(), log.base().token().clone()),
        )
        .expect("cannot spawn"),
    );
    wait_until("the client floods", || match log.len() {
        Ok(1) => Ok(()),
        other => Err(format!("{other:?}")),
    });
    assert_eq!(connection_memories(pid), 2);
    // Let large values be in flight both ways.
    std::thread::sleep(Duration::from_millis(200));
    child.0.kill().unwrap();
    child.join();
    wait_until("the server lets go of the client's memory", || {
        let objects = manager.number_of_objects().map_err(|e| e.to_string())?;
        match (objects == baseline, connection_memories(pid)) {
            (true, 1) => Ok(()),
            state => Err(format!("objects {objects}, state {state:?}")),
        }
    });
    let bench = manager.create(&BENCH, ()).unwrap();
    let value = pattern(5 << 20, 1);
    assert!(bench.echo(value.clone()).unwrap() == value);
}

/// With shared memory off on the client, or refused by the server, or over TCP, the
/// connection stays on its socket; the hello it sent first is counted in the session, so
/// acknowledgements (every 64 replies) agree.
fn the_socket_is_the_fallback_when_either_side_turns_shared_memory_off() {
    let socket = TempPath::socket("shm-off");
    let manager = start(&socket, ServerConfig::default());
    let pid = server_pid(&manager);
    let off = connect(&manager, false);
    assert!(!off.connection().uses_shared_memory());
    assert_eq!(connection_memories(pid), 1, "only the first connection's");
    let bench = off.create(&BENCH, ()).unwrap();
    for i in 1..=300 {
        assert_eq!(bench.add(1).unwrap(), i);
    }

    let socket = TempPath::socket("shm-refused");
    let mut config = ServerConfig::default();
    config.shared_memory = false;
    let refusing = start(&socket, config);
    assert!(!refusing.connection().uses_shared_memory());
    assert_eq!(connection_memories(server_pid(&refusing)), 0);
    let bench = refusing.create(&BENCH, ()).unwrap();
    for i in 1..=300 {
        assert_eq!(bench.add(1).unwrap(), i);
    }
    let big = vec![3u8; 5 << 20];
    assert_eq!(bench.echo(big.clone()).unwrap(), big);

    let tcp = BaseManager::new(Address::local_tcp())
        .start(registry)
        .expect("cannot start the server");
    assert!(!tcp.connection().uses_shared_memory());
    assert_eq!(tcp.create(&BENCH, ()).unwrap().add(2).unwrap(), 2);
}

fn main() {
    manager::init();
    common::run_tests(vec![
        case!(a_tour_like_workload_goes_through_shared_memory_and_leaves_nothing),
        case!(calls_from_threads_and_tasks_are_multiplexed_through_the_rings),
        case!(a_blocked_call_holds_up_no_other_caller_of_its_connection),
        case!(blocked_calls_through_shared_memory_count_against_the_bound),
        case!(deadlines_fire_and_cancelled_calls_stop),
        case!(a_client_killed_mid_call_releases_its_objects_and_locks),
        case!(a_client_writing_garbage_into_its_ring_is_dropped_and_others_are_served),
        case!(large_values_round_trip_exactly_through_the_arena),
        case!(many_concurrent_large_calls_come_back_exactly),
        case!(a_client_killed_with_blocks_outstanding_frees_everything),
        case!(the_socket_is_the_fallback_when_either_side_turns_shared_memory_off),
    ]);
}
