//! The server's execution model: plain (not `async`) methods run on a bounded pool of worker
//! threads, so a slow call holds up neither the other calls of its connection nor the server.
//!
//! Real processes and real sockets: servers are started in a child process
//! (`BaseManager::start`), clients are threads, tasks, spawned processes and CPython. Outcomes
//! and orderings are asserted from what the objects record; durations only as generous
//! ceilings ("did not wait for the slow call"), never as measurements.
//!
//! This binary spawns children by re-running itself, so it has its own `main` (declared with
//! `harness = false`) that calls `manager::init()` first.

#[macro_use]
mod common;

use std::collections::HashSet;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use common::{wait_until, wait_until_async, within, ChildGuard, InProcessServer};
use manager::{
    Address, AuthKey, BaseManager, BlockingManager, DebugInfo, MethodStats, Process, Proxy as _,
    Register, Registry, RunningCall, ServerConfig, Token, Typeid,
};

/// How long a slow call sleeps.
const SLOW_MS: u64 = 3000;
/// The ceiling on a call that must not wait for a slow one: well below [`SLOW_MS`].
const QUICK: Duration = Duration::from_secs(2);
/// How long a call that waits for others to arrive (or for a gate to open) waits at most, so
/// that a server that serialises them fails the test instead of hanging it.
const CAP: Duration = Duration::from_secs(10);
/// The deadline of every call that could deadlock.
const CEILING: Duration = Duration::from_secs(20);

// ---------------------------------------------------------------------------------------------
// The shared type.
// ---------------------------------------------------------------------------------------------

/// What every object of one server records, readable through any of them: an event log and
/// named gates.
#[derive(Default, Debug)]
pub struct Board {
    events: Mutex<Vec<String>>,
    gates: Mutex<HashSet<String>>,
    opened: Condvar,
}

impl Board {
    fn log(&self, event: String) {
        self.events.lock().unwrap().push(event);
    }
}

/// An object whose methods sleep, wait for each other or for a gate, and record what they do.
#[derive(Debug)]
pub struct Probe {
    value: i64,
    /// How many `meet` calls have arrived.
    arrived: AtomicUsize,
    /// How many `slow_mut` calls are inside now, and the most there ever were.
    inside: AtomicUsize,
    max_inside: AtomicUsize,
    board: Arc<Board>,
}

#[manager::shared]
impl Probe {
    /// The value.
    pub fn get(&self) -> i64 {
        self.value
    }

    /// The server's event log (async: it needs no worker thread, so it can observe a server
    /// whose workers are all busy).
    pub async fn events(&self) -> Vec<String> {
        self.board.events.lock().unwrap().clone()
    }

    /// Logs `{tag}+`, sleeps `ms` milliseconds, logs `{tag}-`; returns `tag`.
    pub fn slow(&self, tag: String, ms: u64) -> String {
        self.board.log(format!("{tag}+"));
        std::thread::sleep(Duration::from_millis(ms));
        self.board.log(format!("{tag}-"));
        tag
    }

    /// `slow` under the write lock, counting how many are inside at once.
    pub fn slow_mut(&mut self, tag: String, ms: u64) -> String {
        let now = self.inside.fetch_add(1, Ordering::SeqCst) + 1;
        self.max_inside.fetch_max(now, Ordering::SeqCst);
        self.board.log(format!("{tag}+"));
        std::thread::sleep(Duration::from_millis(ms));
        self.board.log(format!("{tag}-"));
        self.inside.fetch_sub(1, Ordering::SeqCst);
        tag
    }

    /// The most `slow_mut` calls ever inside at once.
    pub fn max_inside(&self) -> usize {
        self.max_inside.load(Ordering::SeqCst)
    }

    /// Arrives, then waits (at most [`CAP`]) until `parties` calls have arrived: whether they
    /// all did, that is, whether this many calls ran at once.
    pub fn meet(&self, parties: usize) -> bool {
        self.arrived.fetch_add(1, Ordering::SeqCst);
        let deadline = Instant::now() + CAP;
        while self.arrived.load(Ordering::SeqCst) < parties {
            if Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        true
    }

    /// Logs `{tag}+`, blocks its thread until `gate` is open (at most [`CAP`]), logs `{tag}-`:
    /// whether the gate opened.
    pub fn hold(&self, tag: String, gate: String) -> bool {
        self.board.log(format!("{tag}+"));
        let gates = self.board.gates.lock().unwrap();
        let (gates, _) = self
            .board
            .opened
            .wait_timeout_while(gates, CAP, |open| !open.contains(&gate))
            .unwrap();
        let opened = gates.contains(&gate);
        drop(gates);
        self.board.log(format!("{tag}-"));
        opened
    }

    /// Opens `gate` (async: it needs no worker thread).
    pub async fn open(&self, gate: String) {
        self.board.gates.lock().unwrap().insert(gate);
        self.board.opened.notify_all();
    }

    /// An `async fn` that only awaits.
    pub async fn nap(&self, ms: u64) -> u64 {
        tokio::time::sleep(Duration::from_millis(ms)).await;
        ms
    }

    /// This value plus `other`'s, read through the blocking proxy received as an argument.
    pub fn ask(&self, other: ProbeBlockingProxy) -> Result<i64, String> {
        let theirs = other
            .with_timeout(CEILING)
            .get()
            .map_err(|e| e.to_string())?;
        Ok(self.value + theirs)
    }

    /// This value plus that of the object `other` names, read through a blocking proxy this
    /// method attaches itself.
    pub fn ask_token(&self, other: Token) -> Result<i64, String> {
        let manager = BaseManager::new(other.address.clone())
            .connect()
            .map_err(|e| e.to_string())?;
        let proxy: ProbeBlockingProxy = manager.attach(&other).map_err(|e| e.to_string())?;
        let theirs = proxy
            .with_timeout(CEILING)
            .get()
            .map_err(|e| e.to_string())?;
        Ok(self.value + theirs)
    }

    /// The async form of `ask_token`, through an async proxy.
    pub async fn ask_async(&self, other: Token) -> Result<i64, String> {
        let manager = BaseManager::new(other.address.clone())
            .connect_async()
            .await
            .map_err(|e| e.to_string())?;
        let proxy: ProbeProxy = manager.attach(&other).await.map_err(|e| e.to_string())?;
        let theirs = proxy
            .with_timeout(CEILING)
            .get()
            .await
            .map_err(|e| e.to_string())?;
        Ok(self.value + theirs)
    }
}

impl Probe {
    /// A probe holding `value`, recording on `board`.
    fn new(value: i64, board: Arc<Board>) -> Probe {
        Probe {
            value,
            arrived: AtomicUsize::new(0),
            inside: AtomicUsize::new(0),
            max_inside: AtomicUsize::new(0),
            board,
        }
    }
}

/// An object whose type declares some methods quick (`#[shared(quick = [...])]`): they run
/// where the server reads the request. `lie` is declared quick but is not.
#[derive(Debug, Default)]
pub struct Quickie {
    value: i64,
}

/// The name of the server thread that runs the current call.
fn thread_name() -> String {
    std::thread::current().name().unwrap_or("").to_string()
}

#[manager::shared(quick = [get, bump, whereabouts, lie])]
impl Quickie {
    /// The value.
    pub fn get(&self) -> i64 {
        self.value
    }

    /// Adds one under the write lock; returns the new value.
    pub fn bump(&mut self) -> i64 {
        self.value += 1;
        self.value
    }

    /// The name of the thread this call ran on.
    pub fn whereabouts(&self) -> String {
        thread_name()
    }

    /// Holds the write lock for `ms` milliseconds (a plain method, not quick); returns the
    /// value it saw.
    pub fn hold_mut(&mut self, ms: u64) -> i64 {
        std::thread::sleep(Duration::from_millis(ms));
        self.value
    }

    /// Declared quick, but sleeps `ms` milliseconds; returns the thread it ran on.
    pub fn lie(&self, ms: u64) -> String {
        std::thread::sleep(Duration::from_millis(ms));
        thread_name()
    }
}

/// The name the server's worker threads have (`server::workers`).
const WORKER_THREAD: &str = "manager-worker";

/// The name of the threads that read a native socket connection and run the last plain call
/// they read (`server::reader`).
const READER_THREAD: &str = "manager-conn";

const QUICKIE: Typeid<QuickieBlockingProxy> = Typeid::new("quickie");

const PROBE: Typeid<ProbeBlockingProxy, (i64,)> = Typeid::new("probe");
const PROBE_ASYNC: Typeid<ProbeProxy, (i64,)> = Typeid::new("probe");
const SHARED_PROBE: Typeid<ProbeBlockingProxy> = Typeid::new("shared_probe");

/// `probe`: a new `Probe(value)` per create, every one recording on one board.
fn probe_registry() -> Registry {
    let board = Arc::new(Board::default());
    let mut registry = Registry::new();
    registry
        .register(Register::shared(
            "shared_probe",
            Probe::new(42, board.clone()),
        ))
        .unwrap();
    registry
        .register(Register::factory("probe", move |(value,): (i64,)| {
            Probe::new(value, board.clone())
        }))
        .unwrap();
    registry
        .register(Register::factory("quickie", |()| Quickie::default()))
        .unwrap();
    registry
}

/// The registry of the servers started in a child process.
#[manager::entry]
fn registry() -> manager::Result<Registry> {
    Ok(probe_registry())
}

// ---------------------------------------------------------------------------------------------
// Helpers.
// ---------------------------------------------------------------------------------------------

/// A server in a child process, with `config`; it stops when the manager is dropped.
fn start(config: ServerConfig) -> BlockingManager {
    BaseManager::new(Address::local_tcp())
        .config(config)
        .start(registry)
        .expect("cannot start the server")
}

/// Another connection to the server `manager` is connected to.
fn connect(manager: &BlockingManager) -> BlockingManager {
    BaseManager::new(manager.address().clone())
        .connect()
        .expect("cannot connect")
}

/// A thread running one client call, joined with a deadline.
struct Background<T> {
    what: String,
    handle: JoinHandle<T>,
}

fn background<T: Send + 'static>(
    what: &str,
    run: impl FnOnce() -> T + Send + 'static,
) -> Background<T> {
    Background {
        what: what.to_string(),
        handle: std::thread::spawn(run),
    }
}

impl<T> Background<T> {
    fn is_finished(&self) -> bool {
        self.handle.is_finished()
    }

    /// Its result, waiting at most `common::TIMEOUT`.
    fn join(self) -> T {
        wait_until(&format!("{} to finish", self.what), || {
            if self.handle.is_finished() {
                Ok(())
            } else {
                Err("still running".to_string())
            }
        });
        self.handle
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    }
}

/// Runs `call`, asserting it took less than [`QUICK`].
fn quick<T>(what: &str, call: impl FnOnce() -> T) -> T {
    let started = Instant::now();
    let value = call();
    let took = started.elapsed();
    assert!(
        took < QUICK,
        "{what} took {took:?}: it waited for the slow calls"
    );
    value
}

/// Polls the board through `observer` until it holds every event of `wanted`; returns it.
fn wait_events(observer: &ProbeBlockingProxy, wanted: &[&str]) -> Vec<String> {
    wait_until(&format!("the events {wanted:?}"), || {
        let events = observer.events().map_err(|e| e.to_string())?;
        if wanted.iter().all(|w| events.iter().any(|e| e == w)) {
            Ok(events)
        } else {
            Err(format!("{events:?}"))
        }
    })
}

/// The events of `events` about the calls tagged `tags` (`tag+`, `tag-`), in order.
fn about(events: &[String], tags: &[&str]) -> Vec<String> {
    events
        .iter()
        .filter(|e| {
            tags.iter()
                .any(|t| **e == format!("{t}+") || **e == format!("{t}-"))
        })
        .cloned()
        .collect()
}

/// The most calls tagged `tags` that were inside at once, by the event log.
fn max_overlap(events: &[String], tags: &[&str]) -> usize {
    let (mut inside, mut most) = (0usize, 0usize);
    for event in about(events, tags) {
        if event.ends_with('+') {
            inside += 1;
            most = most.max(inside);
        } else {
            inside -= 1;
        }
    }
    most
}

/// The references the server counts for object `id`.
fn refcount(manager: &BlockingManager, id: u64) -> Option<u64> {
    let info = manager.debug_info().unwrap();
    info.objects.iter().find(|o| o.id == id).map(|o| o.refcount)
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// The default configuration with at most `workers` plain calls running at once.
fn config_with_workers(workers: usize) -> ServerConfig {
    let mut config = ServerConfig::default();
    config.max_workers = workers;
    config
}

/// `info.running`: the calls of `method` on probes running now.
fn running(info: &DebugInfo, method: &str) -> Vec<RunningCall> {
    running_of(info, "probe", method)
}

/// `info.running`: the calls of `method` on objects of `typeid`.
fn running_of(info: &DebugInfo, typeid: &str, method: &str) -> Vec<RunningCall> {
    info.running
        .iter()
        .filter(|c| c.typeid == typeid && c.method == method)
        .cloned()
        .collect()
}

/// `info.methods`: what the server counted of `method` on probes.
fn stats(info: &DebugInfo, method: &str) -> Option<MethodStats> {
    info.methods
        .iter()
        .find(|s| s.typeid == "probe" && s.method == method)
        .cloned()
}

// ---------------------------------------------------------------------------------------------
// 1. One connection, many callers.
// ---------------------------------------------------------------------------------------------

/// Two threads share one connection: while one thread's plain call sleeps 3 s on object A,
/// the other thread's getter on object B returns at once (the slow call is still running).
fn a_slow_call_does_not_hold_up_other_threads_of_its_connection() {
    let manager = start(ServerConfig::default());
    let a = manager.create(&PROBE, (1,)).unwrap();
    let b = manager.create(&PROBE, (2,)).unwrap();

    let slow = background("the slow call on A", move || {
        a.slow("a".into(), SLOW_MS).unwrap()
    });
    wait_events(&b, &["a+"]);
    let value = quick("the getter on B", || b.get().unwrap());
    assert_eq!(value, 2);
    assert!(
        !slow.is_finished(),
        "the getter on B returned only after the slow call on A"
    );
    assert_eq!(slow.join(), "a");
}

/// The same with the tasks of one async connection (`connect_async`, async proxies).
fn a_slow_call_does_not_hold_up_other_tasks_of_its_async_connection() {
    let server = start(ServerConfig::default());
    let address = server.address().clone();
    runtime().block_on(async move {
        let manager = BaseManager::new(address).connect_async().await.unwrap();
        let a = manager.create(&PROBE_ASYNC, (1,)).await.unwrap();
        let b = manager.create(&PROBE_ASYNC, (2,)).await.unwrap();

        let slow = tokio::spawn(async move { a.slow("a".into(), SLOW_MS).await });
        wait_until_async("the slow call on A to start", || async {
            let events = b.events().await.map_err(|e| e.to_string())?;
            if events.iter().any(|e| e == "a+") {
                Ok(())
            } else {
                Err(format!("{events:?}"))
            }
        })
        .await;
        let started = Instant::now();
        let value = within("the getter on B", b.get()).await.unwrap();
        let took = started.elapsed();
        assert_eq!(value, 2);
        assert!(
            !slow.is_finished(),
            "the getter on B returned only after the slow call on A ({took:?})"
        );
        assert!(took < QUICK, "the getter on B took {took:?}");
        let tag = within("the slow call", slow).await.unwrap().unwrap();
        assert_eq!(tag, "a");
    });
    drop(server);
}

// ---------------------------------------------------------------------------------------------
// 2. Many clients in slow calls.
// ---------------------------------------------------------------------------------------------

/// A client process that makes its own probe and holds it in a plain call until the gate
/// `go` opens; fails if it never does.
#[manager::entry]
fn hold_in_child(address: Address, tag: String) -> Result<(), String> {
    let manager = BaseManager::new(address)
        .connect()
        .map_err(|e| e.to_string())?;
    let probe = manager.create(&PROBE, (0,)).map_err(|e| e.to_string())?;
    match probe.hold(tag.clone(), "go".into()) {
        Ok(true) => Ok(()),
        Ok(false) => Err(format!("{tag}: the gate never opened")),
        Err(e) => Err(e.to_string()),
    }
}

/// A client process that creates a probe and reads it, then opens the gate `go`; fails if
/// the create and the read took [`QUICK`] or more.
#[manager::entry]
fn create_and_get_in_child(address: Address) -> Result<(), String> {
    let started = Instant::now();
    let manager = BaseManager::new(address)
        .connect()
        .map_err(|e| e.to_string())?;
    let probe = manager.create(&PROBE, (5,)).map_err(|e| e.to_string())?;
    let value = probe.get().map_err(|e| e.to_string())?;
    let took = started.elapsed();
    probe.open("go".into()).map_err(|e| e.to_string())?;
    if value != 5 {
        return Err(format!("read {value}, not 5"));
    }
    if took >= QUICK {
        return Err(format!("connect, create and get took {took:?}"));
    }
    Ok(())
}

/// Four client processes are each in a plain call that cannot end before a fifth client has
/// been served: the fifth one's create and getter complete, quickly, while all four run (the
/// four calls return that their gate opened, not that they gave up).
fn four_clients_in_slow_calls_leave_the_server_to_a_fifth() {
    let manager = start(ServerConfig::default());
    let observer = manager.create(&PROBE, (0,)).unwrap();
    let tags = ["p1", "p2", "p3", "p4"];
    let mut holders: Vec<ChildGuard> = tags
        .iter()
        .map(|tag| {
            let args = (manager.address().clone(), tag.to_string());
            ChildGuard(Process::spawn(hold_in_child, args).expect("cannot spawn"))
        })
        .collect();
    wait_events(&observer, &["p1+", "p2+", "p3+", "p4+"]);

    let mut fifth = ChildGuard(
        Process::spawn(create_and_get_in_child, (manager.address().clone(),))
            .expect("cannot spawn"),
    );
    assert!(fifth.join().success(), "the fifth client failed");
    for (tag, holder) in tags.iter().zip(&mut holders) {
        assert!(
            holder.join().success(),
            "client {tag} failed: its call ended without the fifth client having been served"
        );
    }
    let events = observer.events().unwrap();
    assert_eq!(max_overlap(&events, &tags), 4, "{events:?}");
}

// ---------------------------------------------------------------------------------------------
// 3, 4. The object's lock: `&self` calls overlap, `&mut self` calls exclude.
// ---------------------------------------------------------------------------------------------

/// Two `&self` calls on the same object (from two threads of one connection) run at once:
/// each waits until the other has arrived, which serial execution would never allow (both
/// would report that they gave up).
fn shared_calls_on_one_object_overlap() {
    let manager = start(ServerConfig::default());
    let probe = manager.create(&PROBE, (0,)).unwrap();
    let other = {
        let probe = probe.clone();
        background("the other meet", move || probe.meet(2).unwrap())
    };
    let mine = probe.meet(2).unwrap();
    let theirs = other.join();
    assert!(
        mine && theirs,
        "the calls did not overlap: {mine}, {theirs}"
    );
}

/// `&mut self` calls on one object never overlap, whether they come from threads of one
/// connection or from several connections; and a `&self` call issued while a `&mut self` call
/// runs waits for it to end.
fn exclusive_calls_on_one_object_never_overlap_and_shared_ones_wait() {
    let manager = start(ServerConfig::default());
    let second = connect(&manager);
    let probe = manager.create(&PROBE, (0,)).unwrap();
    let probe_there: ProbeBlockingProxy = second.attach(probe.base().token()).unwrap();
    let observer = manager.create(&PROBE, (0,)).unwrap();

    let tags = ["m1", "m2", "m3", "m4"];
    let writers: Vec<Background<String>> = tags
        .iter()
        .enumerate()
        .map(|(i, tag)| {
            let probe = if i % 2 == 0 { &probe } else { &probe_there }.clone();
            let tag = tag.to_string();
            background(&tag.clone(), move || probe.slow_mut(tag, 300).unwrap())
        })
        .collect();
    for (tag, writer) in tags.iter().zip(writers) {
        assert_eq!(writer.join(), *tag);
    }
    assert_eq!(probe.max_inside().unwrap(), 1, "&mut self calls overlapped");
    let events = observer.events().unwrap();
    assert_eq!(max_overlap(&events, &tags), 1, "{events:?}");
    assert_eq!(about(&events, &tags).len(), 8, "{events:?}");

    // A reader issued while a writer runs comes after it.
    let writer = {
        let probe = probe.clone();
        background("the writer", move || {
            probe.slow_mut("w".into(), 1500).unwrap()
        })
    };
    wait_events(&observer, &["w+"]);
    assert_eq!(probe_there.slow("r".into(), 0).unwrap(), "r");
    assert_eq!(writer.join(), "w");
    let events = observer.events().unwrap();
    assert_eq!(about(&events, &["w", "r"]), ["w+", "w-", "r+", "r-"]);
}

// ---------------------------------------------------------------------------------------------
// 5, 6. The bound, and what the server shows of running calls (new API).
// ---------------------------------------------------------------------------------------------

/// Starts three threads, each with a connection of its own, each making a probe and holding
/// it in a plain call until the gate `go` opens; returns them once two hold calls are inside.
fn three_holders(
    manager: &BlockingManager,
    observer: &ProbeBlockingProxy,
) -> Vec<Background<bool>> {
    // All three made before any hold starts: a factory's create needs a worker too.
    let probes: Vec<_> = ["h1", "h2", "h3"]
        .iter()
        .map(|tag| {
            let client = connect(manager);
            let probe = client.create(&PROBE, (0,)).unwrap();
            (tag.to_string(), client, probe)
        })
        .collect();
    let holders = probes
        .into_iter()
        .map(|(tag, client, probe)| {
            background(&tag.clone(), move || {
                let _client = client;
                probe.hold(tag, "go".into()).unwrap()
            })
        })
        .collect();
    wait_until("two hold calls inside, three probes made", || {
        let events = observer.events().map_err(|e| e.to_string())?;
        let objects = manager.number_of_objects().map_err(|e| e.to_string())?;
        let inside = about(&events, &["h1", "h2", "h3"]).len();
        // The shared probe, the observer's probe and the holders' three.
        if inside >= 2 && objects == 5 {
            Ok(())
        } else {
            Err(format!("{objects} objects, {events:?}"))
        }
    });
    // Time for the third call to reach the server.
    std::thread::sleep(Duration::from_millis(300));
    holders
}

/// With `max_workers = 2`, three plain calls that block: the third starts only after one of
/// the first two ended (by the event log), while control requests, increfs and releases, and an
/// `async fn` that only awaits all complete quickly meanwhile.
fn past_the_bound_plain_calls_wait_and_nothing_else_does() {
    let manager = start(config_with_workers(2));
    let observer = manager.create(&PROBE, (7,)).unwrap();
    let holders = three_holders(&manager, &observer);

    let events = quick("events (async)", || observer.events().unwrap());
    assert_eq!(
        about(&events, &["h1", "h2", "h3"]).len(),
        2,
        "a third plain call started past the bound: {events:?}"
    );
    let objects = quick("number_of_objects", || manager.number_of_objects().unwrap());
    assert_eq!(
        objects, 5,
        "the shared probe, the observer's and the holders' three"
    );
    let info = quick("debug_info", || manager.debug_info().unwrap());
    let holding = running(&info, "hold");
    assert!(holding.len() >= 2, "{holding:?}");
    assert_ne!(holding[0].connection, holding[1].connection, "{holding:?}");

    let id = observer.base().token().id;
    let copy = observer.clone();
    quick("an incref", || {
        wait_until("refcount 2", || match refcount(&manager, id) {
            Some(2) => Ok(()),
            other => Err(format!("{other:?}")),
        })
    });
    drop(copy);
    quick("a release", || {
        wait_until("refcount 1", || match refcount(&manager, id) {
            Some(1) => Ok(()),
            other => Err(format!("{other:?}")),
        })
    });
    assert_eq!(quick("an async fn", || observer.nap(10).unwrap()), 10);

    // Still two inside: nothing above freed a worker or took one.
    let events = observer.events().unwrap();
    assert_eq!(about(&events, &["h1", "h2", "h3"]).len(), 2, "{events:?}");

    quick("opening the gate (async)", || {
        observer.open("go".into()).unwrap()
    });
    for holder in holders {
        assert!(holder.join(), "a hold call gave up waiting");
    }
    let events = observer.events().unwrap();
    let holds = about(&events, &["h1", "h2", "h3"]);
    assert_eq!(holds.len(), 6, "{events:?}");
    assert_eq!(
        max_overlap(&events, &["h1", "h2", "h3"]),
        2,
        "at most two at once, and two did run at once: {holds:?}"
    );
    let first_end = holds.iter().position(|e| e.ends_with('-')).unwrap();
    let third_start = holds.iter().filter(|e| e.ends_with('+')).nth(2).unwrap();
    let third_start = holds.iter().position(|e| e == third_start).unwrap();
    assert!(first_end < third_start, "{holds:?}");
}

/// With `max_workers = 2` and both workers held, a create of a shared instance (no user code
/// runs) completes at once; a factory's create is user code, runs on a worker like a plain
/// method, and so completes once a worker is free.
fn past_the_bound_a_shared_create_does_not_wait_and_a_factory_waits_its_turn() {
    let manager = start(config_with_workers(2));
    let observer = manager.create(&PROBE, (0,)).unwrap();
    let holders = three_holders(&manager, &observer);

    let shared = quick("a create of a shared instance", || {
        manager.create(&SHARED_PROBE, ()).unwrap()
    });
    let factory = {
        let manager = manager.clone();
        background("a factory create", move || {
            manager.create(&PROBE, (8,)).unwrap()
        })
    };
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        !factory.is_finished(),
        "a factory ran past the bound of two workers"
    );
    quick("opening the gate (async)", || {
        observer.open("go".into()).unwrap()
    });
    for holder in holders {
        assert!(holder.join(), "a hold call gave up waiting");
    }
    assert_eq!(factory.join().get().unwrap(), 8);
    assert_eq!(shared.get().unwrap(), 42);
}

/// While a slow call runs, `debug_info().running` lists it (typeid, method, object); once it
/// has ended, `debug_info().methods` counts it, with at least its duration.
fn debug_info_shows_running_calls_and_counts_finished_ones() {
    let manager = start(ServerConfig::default());
    let probe = manager.create(&PROBE, (0,)).unwrap();
    let id = probe.base().token().id;
    let issued = Instant::now();
    let slow = {
        let probe = probe.clone();
        background("the slow call", move || {
            probe.slow("seen".into(), 1500).unwrap()
        })
    };
    let call = wait_until("the slow call to be listed as running", || {
        let info = manager.debug_info().map_err(|e| e.to_string())?;
        running(&info, "slow")
            .pop()
            .ok_or_else(|| format!("{info:?}"))
    });
    assert_eq!(call.object, id, "{call:?}");
    assert!(call.elapsed <= issued.elapsed(), "{call:?}");
    assert_eq!(slow.join(), "seen");
    assert_eq!(probe.get().unwrap(), 0);

    // The call's reply may reach us a moment before the server has filed it away.
    let info = wait_until("the slow call to be counted", || {
        let info = manager.debug_info().map_err(|e| e.to_string())?;
        match (running(&info, "slow").is_empty(), stats(&info, "slow")) {
            (true, Some(_)) => Ok(info),
            _ => Err(format!("{info:?}")),
        }
    });
    let slow_stats = stats(&info, "slow").unwrap();
    assert!(slow_stats.calls >= 1, "{slow_stats:?}");
    assert_eq!(slow_stats.errors, 0, "{slow_stats:?}");
    assert!(
        slow_stats.total >= Duration::from_millis(1500),
        "{slow_stats:?}"
    );
    let get_stats = stats(&info, "get").unwrap_or_else(|| panic!("no stats: {info:?}"));
    assert!(get_stats.calls >= 1, "{get_stats:?}");
}

// ---------------------------------------------------------------------------------------------
// 7. CPython clients.
// ---------------------------------------------------------------------------------------------

/// A CPython 3.8+ interpreter (`python3`), or `None` after printing SKIPPED.
fn python() -> Option<PathBuf> {
    let python = PathBuf::from("python3");
    let recent = Command::new(&python)
        .args([
            "-c",
            "import sys; sys.exit(0 if sys.version_info >= (3, 8) else 1)",
        ])
        .status()
        .is_ok_and(|s| s.success());
    if recent {
        Some(python)
    } else {
        eprintln!("SKIPPED: no CPython 3.8+ interpreter (python3) found");
        None
    }
}

/// Two threads call the slow method (each thread has a connection of its own in CPython);
/// once both are inside, a third thread reads another object. Prints what it saw.
const PY_SLOW_CALLS: &str = r#"
import sys, threading, time
from multiprocessing.managers import BaseManager

host, port, key, slow_ms = sys.argv[1], int(sys.argv[2]), sys.argv[3].encode(), int(sys.argv[4])
BaseManager.register('probe')
m = BaseManager(address=(host, port), authkey=key)
m.connect()
slow, fast = m.probe(1), m.probe(2)

done = {}
def call_slow(tag):
    done[tag] = slow.slow(tag, slow_ms)
slow_threads = [threading.Thread(target=call_slow, args=(tag,)) for tag in ("py1", "py2")]
for t in slow_threads:
    t.start()
deadline = time.monotonic() + 30
while not {"py1+", "py2+"} <= set(fast.events()):
    assert time.monotonic() < deadline, "the slow calls never started"
    time.sleep(0.01)

seen = {}
def call_fast():
    started = time.monotonic()
    seen["value"] = fast.get()
    seen["took"] = time.monotonic() - started
    seen["overlapped"] = all(t.is_alive() for t in slow_threads)
fast_thread = threading.Thread(target=call_fast)
fast_thread.start()
fast_thread.join(30)
for t in slow_threads:
    t.join(30)
assert seen["value"] == 2, seen
assert done == {"py1": "py1", "py2": "py2"}, done
print("fast", seen["value"], "quick", seen["took"] < 2.0, "overlapped", seen["overlapped"])
"#;

/// Two CPython client threads in slow calls; a third thread's getter on another object returns
/// while both are still running.
fn cpython_clients_in_slow_calls_do_not_hold_up_another_cpython_thread() {
    let Some(python) = python() else { return };
    let mut config = ServerConfig::default();
    config.python_address = Some(Address::tcp("127.0.0.1:0"));
    let server = InProcessServer::start_with(
        probe_registry(),
        Address::local_tcp(),
        AuthKey::from("py-key"),
        config,
    );
    let Some(Address::Tcp(at)) = server.connect().connection().python_address().cloned() else {
        panic!("the server takes no CPython clients");
    };
    let (host, port) = at.rsplit_once(':').expect("host:port");

    let mut child = Command::new(&python)
        .args([
            "-c",
            PY_SLOW_CALLS,
            host,
            port,
            "py-key",
            &SLOW_MS.to_string(),
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("cannot run python");
    let deadline = Instant::now() + Duration::from_secs(60);
    while child.try_wait().unwrap().is_none() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let output = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "python failed ({}):\nstdout:\n{stdout}\nstderr:\n{stderr}",
        output.status
    );
    assert_eq!(stdout, "fast 2 quick True overlapped True\n", "{stderr}");
}

// ---------------------------------------------------------------------------------------------
// 8. Nested calls.
// ---------------------------------------------------------------------------------------------

/// Objects A (1) and B (2) on `manager`'s server, and another client's 1.5 s call on A, under
/// way (it records `other+` on the board B shares).
fn a_and_b_with_another_client_in_a(
    manager: &BlockingManager,
) -> (ProbeBlockingProxy, ProbeBlockingProxy, Background<String>) {
    let a = manager.create(&PROBE, (1,)).unwrap().with_timeout(CEILING);
    let b = manager.create(&PROBE, (2,)).unwrap();
    let other = connect(manager);
    let a_there: ProbeBlockingProxy = other.attach(a.base().token()).unwrap();
    let concurrent = background("the other client's call on A", move || {
        let _other = other;
        a_there
            .with_timeout(CEILING)
            .slow("other".into(), 1500)
            .unwrap()
    });
    wait_events(&b, &["other+"]);
    (a, b, concurrent)
}

/// A plain method on A calls B (same server) through the blocking proxy it receives as an
/// argument, while another client is in a call on A: both return the right values.
fn a_plain_method_calls_another_object_through_a_proxy_argument() {
    let manager = start(ServerConfig::default());
    let (a, b, concurrent) = a_and_b_with_another_client_in_a(&manager);
    let asked = a.ask(b.clone());
    assert_eq!(
        asked.unwrap_or_else(|e| panic!("A.ask(B) failed: {e}")),
        Ok(3)
    );
    assert_eq!(concurrent.join(), "other");
    assert_eq!(a.ask(b).unwrap(), Ok(3), "again, with nobody else calling");
}

/// The same through a blocking proxy the method attaches itself from a token (a method body
/// may make blocking calls), next to a concurrent call on A.
fn a_plain_method_calls_another_object_through_a_proxy_it_attaches() {
    let manager = start(ServerConfig::default());
    let (a, b, concurrent) = a_and_b_with_another_client_in_a(&manager);
    assert_eq!(a.ask_token(b.base().token().clone()).unwrap(), Ok(3));
    assert_eq!(concurrent.join(), "other");
}

/// An `async fn` on A calls B through an async proxy, while another client is in a plain call
/// on A: both return the right values.
fn an_async_method_calls_another_object_through_an_async_proxy() {
    let manager = start(ServerConfig::default());
    let a = manager.create(&PROBE, (1,)).unwrap().with_timeout(CEILING);
    let b = manager.create(&PROBE, (2,)).unwrap();
    let other = connect(&manager);
    let a_there: ProbeBlockingProxy = other.attach(a.base().token()).unwrap();
    let concurrent = background("the other client's call on A", move || {
        a_there
            .with_timeout(CEILING)
            .slow("other".into(), 1500)
            .unwrap()
    });
    wait_events(&b, &["other+"]);

    let token = b.base().token().clone();
    assert_eq!(a.ask_async(token.clone()).unwrap(), Ok(3));
    assert_eq!(concurrent.join(), "other");
    let address = manager.address().clone();
    let through_async = runtime().block_on(async move {
        let client = BaseManager::new(address).connect_async().await.unwrap();
        let a: ProbeProxy = client.attach(a.base().token()).await.unwrap();
        a.with_timeout(CEILING).ask_async(token).await
    });
    assert_eq!(through_async.unwrap(), Ok(3), "from an async client");
}

// ---------------------------------------------------------------------------------------------
// Quick methods.
// ---------------------------------------------------------------------------------------------

/// Waits until the server `manager` is connected to shows a call of `method` on a quickie
/// running (`what` names it in a timeout).
fn wait_running(manager: &BlockingManager, method: &str, what: &str) {
    wait_until(what, || {
        let info = manager.debug_info().map_err(|e| e.to_string())?;
        match running_of(&info, "quickie", method).is_empty() {
            true => Err("not yet".into()),
            false => Ok(()),
        }
    });
}

/// Whether the server's runtime has a thread to spare for quick calls (it keeps one free).
fn quick_calls_possible() -> bool {
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    if cores < 2 {
        eprintln!("    (one CPU: the server's runtime has one thread, so no call runs quick)");
    }
    cores >= 2
}

/// Quick methods run where the server reads the request, not on a worker thread, and keep
/// the object's lock rules: a quick `&mut self` call waits for a plain one that holds the
/// write lock (and then runs on a worker, as any call that waited for its lock).
fn quick_methods_run_where_they_are_read_and_keep_the_lock_rules() {
    let manager = start(ServerConfig::default());
    let object = manager.create(&QUICKIE, ()).unwrap();
    assert_eq!(object.bump().unwrap(), 1);
    assert_eq!(object.get().unwrap(), 1);
    let thread = object.whereabouts().unwrap();
    if quick_calls_possible() {
        assert_ne!(
            thread, WORKER_THREAD,
            "a quick method ran on a worker thread"
        );
    }

    // With quick calls turned off, every plain method runs on a worker thread.
    let mut config = ServerConfig::default();
    config.quick_calls = false;
    let off = start(config);
    let plain = off.create(&QUICKIE, ()).unwrap();
    assert_eq!(plain.whereabouts().unwrap(), WORKER_THREAD);

    // A quick `&mut self` call waits for the write lock another call holds.
    let holder = object.clone();
    let held = background("the plain call holding the write lock", move || {
        holder.hold_mut(1000).unwrap()
    });
    wait_running(&manager, "hold_mut", "the write lock to be held");
    assert_eq!(object.bump().unwrap(), 2);
    // The holder reads the value at the end of its second under the write lock: had the bump
    // not waited for the lock, it would have seen 2. (Its reply may still be on its way when
    // the bump's arrives: the lock is released before the reply is sent.)
    assert_eq!(
        held.join(),
        1,
        "the quick bump ran while another call held the write lock"
    );
}

/// A method declared quick that blocks (`lie`, 3 s) holds only its own connection and one
/// of the server's threads, never the server: another client creates and calls meanwhile.
/// Caught taking too long, it runs as a plain call from then on, so the next slow `lie`
/// holds up not even the other threads of its connection, and once found asleep where it was
/// read, on worker threads.
fn a_quick_method_that_blocks_stalls_no_other_client_and_is_demoted() {
    if !quick_calls_possible() {
        return;
    }
    let manager = start(ServerConfig::default());
    let object = manager.create(&QUICKIE, ()).unwrap();
    // Watched from another connection: the lie holds up its own connection's reading.
    let other = connect(&manager);
    let liar = object.clone();
    let first = background("the first lie", move || liar.lie(SLOW_MS).unwrap());
    wait_running(&other, "lie", "the lie to run");
    let fresh = quick("a create and a call from another client", || {
        let fresh = other.create(&QUICKIE, ()).unwrap();
        assert_eq!(fresh.bump().unwrap(), 1);
        fresh
    });
    assert!(
        !first.is_finished(),
        "the other client's calls returned only after the lie"
    );
    assert_ne!(first.join(), WORKER_THREAD, "the first lie ran quick");

    // Demoted: the next lie runs as a plain call (where it was read, the reading handed to a
    // follower, or on a worker), and the connection's other threads go on.
    let liar = object.clone();
    let second = background("the second lie", move || liar.lie(SLOW_MS).unwrap());
    wait_running(&manager, "lie", "the second lie to run");
    assert_eq!(
        quick("a call on the same connection", || object.get().unwrap()),
        0
    );
    assert!(!second.is_finished());
    let second = second.join();
    assert!(
        second == WORKER_THREAD || second == READER_THREAD,
        "the demoted lie ran on {second}"
    );
    // Found asleep where it was read, it runs on the workers from then on. (A lie that ran on
    // a worker, because another request of the connection was read with it, was not seen
    // where it was read: the next one may run there.)
    let mut last = second;
    for round in 0.. {
        let liar = object.clone();
        let next = background("another lie", move || liar.lie(SLOW_MS).unwrap());
        wait_running(&manager, "lie", "another lie to run");
        assert_eq!(
            quick("a call on the same connection", || object.get().unwrap()),
            0
        );
        let ran_on = next.join();
        if last == READER_THREAD {
            assert_eq!(
                ran_on, WORKER_THREAD,
                "a lie ran inline after one was found asleep there"
            );
            break;
        }
        assert!(round < 3, "no lie ran where it was read in {round} rounds");
        last = ran_on;
    }
    drop(fresh);
}

fn main() {
    manager::init();
    common::run_tests(vec![
        case!(a_slow_call_does_not_hold_up_other_threads_of_its_connection),
        case!(a_slow_call_does_not_hold_up_other_tasks_of_its_async_connection),
        case!(four_clients_in_slow_calls_leave_the_server_to_a_fifth),
        case!(shared_calls_on_one_object_overlap),
        case!(exclusive_calls_on_one_object_never_overlap_and_shared_ones_wait),
        case!(past_the_bound_plain_calls_wait_and_nothing_else_does),
        case!(past_the_bound_a_shared_create_does_not_wait_and_a_factory_waits_its_turn),
        case!(debug_info_shows_running_calls_and_counts_finished_ones),
        case!(cpython_clients_in_slow_calls_do_not_hold_up_another_cpython_thread),
        case!(a_plain_method_calls_another_object_through_a_proxy_argument),
        case!(a_plain_method_calls_another_object_through_a_proxy_it_attaches),
        case!(an_async_method_calls_another_object_through_an_async_proxy),
        case!(quick_methods_run_where_they_are_read_and_keep_the_lock_rules),
        case!(a_quick_method_that_blocks_stalls_no_other_client_and_is_demoted),
    ]);
}
