//! Hostile input: bytes and messages no well-behaved client sends, written over raw sockets to
//! a server running in a child process.
//!
//! Every case sends one kind of bad input and checks the server's answer: a clear error reply
//! (the connection stays usable) or the connection closed (the peer broke the protocol), never
//! a panic. While the whole suite runs, well-behaved clients (blocking and async, over TCP and
//! over a Unix socket) make calls in a loop and check every result; after each case the suite
//! checks that they saw no failure and made progress, that the server process is alive and
//! logged no panic, and that `debug_info()` shows exactly the objects, reference counts and
//! connections it showed before the case (nothing leaked). The last case shuts the server down
//! and checks that it exits with status 0.
//!
//! The server runs in a child process so that a panic that escapes, a stack overflow or an
//! abort shows up as the child dying, and its stderr goes to a log file the suite reads.
//!
//! Two cases use a server of their own: a deeply nested value, and a client that never reads.

#[macro_use]
mod common;

use std::io::Write as _;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use common::{wait_until, within, ChildGuard, TempPath, TIMEOUT};
use manager::value::Value;
use manager::wire::{
    Control, ControlReply, DebugInfo, Reply, Request, ResponseHead, Token, Welcome, STREAM_WINDOW,
};
use manager::{
    Address, AuthKey, BlockingManager, Manager, Process, Register, Registry, RemoteError,
    RemoteErrorKind, Server, ServerConfig, Typeid,
};
use serde::Serialize;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

// ---------------------------------------------------------------------------------------------
// The server under attack.

/// The suite's own shared type: a counter, an echo, a method that is not exposed and an async
/// method that waits.
#[derive(Debug)]
pub struct Probe {
    value: i64,
}

#[manager::shared]
impl Probe {
    /// Adds `n` (wrapping) and returns the new value.
    pub fn add(&mut self, n: i64) -> i64 {
        self.value = self.value.wrapping_add(n);
        self.value
    }

    /// The value.
    pub fn get(&self) -> i64 {
        self.value
    }

    /// Returns `text`.
    pub fn echo(&self, text: String) -> String {
        text
    }

    /// Registered without being exposed: clients may not call it.
    pub fn hidden(&self) -> i64 {
        -1
    }

    /// Waits `ms` milliseconds (at most a minute), then returns `ms`.
    pub async fn nap(&self, ms: u64) -> u64 {
        tokio::time::sleep(Duration::from_millis(ms.min(60_000))).await;
        ms
    }

    /// 0, 1, 2... without end: a stream method.
    pub fn numbers(&self) -> manager::Stream<u64> {
        manager::Stream::iter(0..)
    }
}

const PROBE: Typeid<ProbeBlockingProxy, (i64,)> = Typeid::new("probe");
const PROBE_ASYNC: Typeid<ProbeProxy, (i64,)> = Typeid::new("probe");

/// `probe` (every method but `hidden` exposed), `probe_sealed` (no create method) and the
/// built-in types (`list`, `dict`, `Lock`, ...).
fn registry() -> Registry {
    let mut registry = Registry::new();
    registry
        .register(
            Register::factory("probe", |(value,): (i64,)| Probe { value })
                .exposed(["add", "get", "echo", "nap", "numbers"]),
        )
        .unwrap();
    registry
        .register(
            Register::factory("probe_sealed", |(): ()| Probe { value: 0 }).create_method(false),
        )
        .unwrap();
    manager::sync::register(&mut registry).unwrap();
    registry
}

/// The largest frame the suite's server accepts (small, so that a frame over it is cheap).
const MAX_FRAME: usize = 1 << 20;
/// How many objects one connection may hold on the suite's server.
const MAX_OBJECTS: usize = 1000;

fn suite_config() -> ServerConfig {
    let mut config = ServerConfig::default();
    config.max_frame = MAX_FRAME;
    config.handshake_timeout = Duration::from_secs(1);
    config.max_objects_per_connection = MAX_OBJECTS;
    config.max_in_flight = 64;
    config
}

/// The server child: sends its stderr to `log`, serves `registry()` on 127.0.0.1 (port chosen
/// by the system, written to `ready`) and on the Unix socket `unix` until a client asks either
/// to shut down, and exits if its parent goes away.
#[manager::entry]
fn serve_hostile(
    ready: PathBuf,
    unix: PathBuf,
    log: PathBuf,
    config: ServerConfig,
) -> manager::Result<()> {
    redirect_stderr(&log)?;
    manager::process::init_logging();
    exit_with_parent();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let key = manager::process::authkey();
        let tcp = Server::bind(
            registry(),
            &Address::local_tcp(),
            key.clone(),
            config.clone(),
        )
        .await?;
        let unix = Server::bind(registry(), &Address::unix(&unix), key, config).await?;
        let partial = ready.with_extension("partial");
        std::fs::write(&partial, tcp.address().to_string())?;
        std::fs::rename(&partial, &ready)?;
        let (tcp_stop, unix_stop) = (tcp.shutdown_handle(), unix.shutdown_handle());
        let tcp = tokio::spawn(tcp.serve_forever());
        let unix = tokio::spawn(unix.serve_forever());
        // Either server asked to stop stops both.
        tokio::select! {
            _ = tcp_stop.stopped() => unix_stop.shutdown(),
            _ = unix_stop.stopped() => tcp_stop.shutdown(),
        }
        for served in [tcp, unix] {
            served
                .await
                .map_err(|e| manager::Error::Process(format!("serve_forever panicked: {e}")))??;
        }
        Ok(())
    })
}

fn redirect_stderr(log: &Path) -> std::io::Result<()> {
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)?;
    // SAFETY: dup2 on two valid descriptors; fd 2 is replaced atomically.
    if unsafe { libc::dup2(file.as_raw_fd(), 2) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Exits this (child) process when its parent is gone, so that a test binary that dies
/// without reaping it leaves no server behind.
fn exit_with_parent() {
    // SAFETY: getppid has no preconditions.
    let parent = unsafe { libc::getppid() };
    std::thread::spawn(move || loop {
        std::thread::sleep(Duration::from_millis(200));
        // SAFETY: as above.
        if unsafe { libc::getppid() } != parent {
            std::process::exit(3);
        }
    });
}

/// A server child: killed and reaped when dropped (and at exit, if the runner exits first).
struct ServerChild {
    child: Mutex<ChildGuard>,
    pid: u32,
    tcp: Address,
    unix: Address,
    log: TempPath,
    _files: (TempPath, TempPath),
}

/// The pids of server children, killed by [`kill_servers_at_exit`].
static SERVER_PIDS: Mutex<Vec<u32>> = Mutex::new(Vec::new());

extern "C" fn kill_servers_at_exit() {
    if let Ok(pids) = SERVER_PIDS.try_lock() {
        for &pid in pids.iter() {
            // SAFETY: kill with a pid this process spawned.
            unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
        }
    }
}

impl ServerChild {
    fn start(config: ServerConfig) -> ServerChild {
        static AT_EXIT: std::sync::Once = std::sync::Once::new();
        // SAFETY: registers a plain function with no captured state.
        AT_EXIT.call_once(|| unsafe {
            libc::atexit(kill_servers_at_exit);
        });
        let ready = TempPath::file("hostile-ready");
        let unix = TempPath::socket("hostile");
        let log = TempPath::file("hostile-log");
        let process = Process::spawn(
            serve_hostile,
            (
                ready.path().to_path_buf(),
                unix.path().to_path_buf(),
                log.path().to_path_buf(),
                config,
            ),
        )
        .expect("cannot spawn the server");
        let pid = process.pid();
        SERVER_PIDS.lock().unwrap().push(pid);
        let mut child = ChildGuard(process);
        let tcp: Address = wait_until("the server to listen", || {
            if !child.0.is_alive() {
                panic!(
                    "the server ended early: {:?}\n{}",
                    child.0.join(),
                    std::fs::read_to_string(log.path()).unwrap_or_default()
                );
            }
            let text = std::fs::read_to_string(ready.path()).map_err(|e| e.to_string())?;
            text.parse::<Address>().map_err(|e| e.to_string())
        });
        ServerChild {
            child: Mutex::new(child),
            pid,
            tcp,
            unix: unix.address(),
            log,
            _files: (ready, unix),
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.log.path()).unwrap_or_default()
    }

    /// Panics if the server died or logged a panic or a stack overflow.
    fn assert_alive(&self) {
        let mut child = self.child.lock().unwrap();
        if !child.0.is_alive() {
            let status = child.0.join_timeout(Duration::ZERO);
            panic!(
                "the server died: {status:?}\n--- its log ---\n{}",
                self.log()
            );
        }
        drop(child);
        let log = self.log();
        for bad in ["panicked", "overflow", "ERROR"] {
            assert!(!log.contains(bad), "the server's log shows {bad:?}:\n{log}");
        }
    }

    /// The server's peak resident set size (VmHWM), in KiB.
    fn peak_rss_kib(&self) -> u64 {
        proc_status_kib(self.pid, "VmHWM").unwrap_or(0)
    }
}

impl Drop for ServerChild {
    fn drop(&mut self) {
        if let Ok(mut child) = self.child.lock() {
            let _ = child.0.kill();
        }
        if let Ok(mut pids) = SERVER_PIDS.lock() {
            pids.retain(|&pid| pid != self.pid);
        }
    }
}

/// A field of `/proc/PID/status` given in kB.
fn proc_status_kib(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with(field))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

// ---------------------------------------------------------------------------------------------
// The suite: one server, well-behaved clients running alongside, and the checks after a case.

/// Well-behaved clients calling in a loop on their own threads.
struct Background {
    stop: Arc<AtomicBool>,
    calls: Arc<AtomicU64>,
    failures: Arc<Mutex<Vec<String>>>,
    threads: Mutex<Vec<std::thread::JoinHandle<()>>>,
}

impl Background {
    fn calls(&self) -> u64 {
        self.calls.load(Ordering::SeqCst)
    }

    fn failures(&self) -> Vec<String> {
        self.failures.lock().unwrap().clone()
    }

    fn stop(&self) {
        self.stop.store(true, Ordering::SeqCst);
        for thread in std::mem::take(&mut *self.threads.lock().unwrap()) {
            let _ = thread.join();
        }
    }
}

/// Records a failure of a well-behaved client (the first hundred are kept).
fn fail(failures: &Mutex<Vec<String>>, message: String) {
    let mut failures = failures.lock().unwrap();
    if failures.len() < 100 {
        failures.push(message);
    }
}

/// Starts the well-behaved clients: a blocking one and an async one (8 tasks) over TCP, and a
/// blocking one over the Unix socket. Returns once each holds its objects.
fn start_background(server: &ServerChild, key: &AuthKey) -> Background {
    let stop = Arc::new(AtomicBool::new(false));
    let calls = Arc::new(AtomicU64::new(0));
    let failures = Arc::new(Mutex::new(Vec::new()));
    let (ready_tx, ready) = std::sync::mpsc::channel::<()>();
    let mut threads = Vec::new();

    for address in [server.tcp.clone(), server.unix.clone()] {
        let (stop, calls, failures, key, ready) = (
            stop.clone(),
            calls.clone(),
            failures.clone(),
            key.clone(),
            ready_tx.clone(),
        );
        threads.push(std::thread::spawn(move || {
            let setup = || -> manager::Result<_> {
                let manager = BlockingManager::connect(&address, &key)?;
                let probe = manager.create(&PROBE, (0,))?;
                let list = manager.list::<i64>(&[])?;
                let lock = manager.lock()?;
                Ok((manager, probe, list, lock))
            };
            let (_manager, probe, list, lock) = match setup() {
                Ok(held) => held,
                Err(e) => {
                    fail(
                        &failures,
                        format!("blocking client on {address}: setup: {e}"),
                    );
                    let _ = ready.send(());
                    return;
                }
            };
            let _ = ready.send(());
            let mut expected = 0i64;
            let mut appended = 0u64;
            while !stop.load(Ordering::SeqCst) {
                expected += 1;
                let checks: [(&str, manager::Result<bool>); 4] = [
                    ("add", probe.add(1).map(|v| v == expected)),
                    ("append", list.append(&expected).map(|()| true)),
                    ("try_acquire", lock.try_acquire()),
                    ("release", lock.release().map(|()| true)),
                ];
                for (what, outcome) in checks {
                    match outcome {
                        Ok(true) => {
                            calls.fetch_add(1, Ordering::SeqCst);
                        }
                        Ok(false) => {
                            fail(&failures, format!("{address}: {what} gave a wrong answer"))
                        }
                        Err(e) => {
                            fail(&failures, format!("{address}: {what} failed: {e}"));
                            std::thread::sleep(Duration::from_millis(50));
                        }
                    }
                }
                appended += 1;
                if appended == 64 {
                    match list.len() {
                        Ok(64) => {}
                        other => fail(
                            &failures,
                            format!("{address}: list.len() = {other:?}, not 64"),
                        ),
                    }
                    if let Err(e) = list.clear() {
                        fail(&failures, format!("{address}: clear failed: {e}"));
                    }
                    appended = 0;
                }
            }
            // Leave the list empty, so that the state is the same however often it ran.
            let _ = list.clear();
        }));
    }

    {
        let (stop, calls, failures, key, ready, address) = (
            stop.clone(),
            calls.clone(),
            failures.clone(),
            key.clone(),
            ready_tx.clone(),
            server.tcp.clone(),
        );
        threads.push(std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async move {
                let setup = async {
                    let manager = Manager::connect(&address, &key).await?;
                    let probe = manager.create(&PROBE_ASYNC, (0,)).await?;
                    Ok::<_, manager::Error>((manager, probe))
                };
                let (_manager, probe) = match setup.await {
                    Ok(held) => held,
                    Err(e) => {
                        fail(&failures, format!("async client: setup: {e}"));
                        let _ = ready.send(());
                        return;
                    }
                };
                let _ = ready.send(());
                let mut tasks = tokio::task::JoinSet::new();
                for task in 0..8 {
                    let (probe, stop, calls, failures) =
                        (probe.clone(), stop.clone(), calls.clone(), failures.clone());
                    tasks.spawn(async move {
                        let mut n = 0u64;
                        while !stop.load(Ordering::SeqCst) {
                            n += 1;
                            let text = format!("task {task} call {n}");
                            match probe.echo(text.clone()).await {
                                Ok(back) if back == text => {
                                    calls.fetch_add(1, Ordering::SeqCst);
                                }
                                other => fail(&failures, format!("async echo: {other:?}")),
                            }
                            match probe.nap(1).await {
                                Ok(1) => {
                                    calls.fetch_add(1, Ordering::SeqCst);
                                }
                                other => fail(&failures, format!("async nap: {other:?}")),
                            }
                        }
                    });
                }
                while tasks.join_next().await.is_some() {}
            });
        }));
    }
    drop(ready_tx);
    for _ in 0..3 {
        ready
            .recv_timeout(TIMEOUT)
            .expect("a well-behaved client did not start");
    }
    Background {
        stop,
        calls,
        failures,
        threads: Mutex::new(threads),
    }
}

/// An object as `debug_info()` shows it: id, typeid and reference count.
type Seen = (u64, String, u64);

fn seen(info: &DebugInfo) -> Vec<Seen> {
    info.objects
        .iter()
        .map(|o| (o.id, o.typeid.clone(), o.refcount))
        .collect()
}

struct Suite {
    server: ServerChild,
    key: AuthKey,
    observer: BlockingManager,
    unix_observer: BlockingManager,
    background: Background,
    /// The objects and connections on each server before any case ran.
    tcp_baseline: (Vec<Seen>, u64),
    unix_baseline: (Vec<Seen>, u64),
    finished: AtomicBool,
}

static SUITE: OnceLock<Suite> = OnceLock::new();

fn suite() -> &'static Suite {
    SUITE.get_or_init(|| {
        let server = ServerChild::start(suite_config());
        let key = manager::process::authkey();
        let background = start_background(&server, &key);
        let failures = background.failures();
        assert!(failures.is_empty(), "{failures:?}");
        let observer = BlockingManager::connect(&server.tcp, &key).unwrap();
        let unix_observer = BlockingManager::connect(&server.unix, &key).unwrap();
        let baseline = |manager: &BlockingManager| {
            let info = manager.debug_info().unwrap();
            (seen(&info), info.connections)
        };
        let suite = Suite {
            tcp_baseline: baseline(&observer),
            unix_baseline: baseline(&unix_observer),
            server,
            key,
            observer,
            unix_observer,
            background,
            finished: AtomicBool::new(false),
        };
        // The blocking client's probe, list and lock, the async client's probe; three
        // connections (the two clients and the observer).
        assert_eq!(suite.tcp_baseline.0.len(), 4, "{:?}", suite.tcp_baseline);
        assert_eq!(suite.tcp_baseline.1, 3, "{:?}", suite.tcp_baseline);
        assert_eq!(suite.unix_baseline.0.len(), 3, "{:?}", suite.unix_baseline);
        suite
    })
}

impl Suite {
    /// The id of an object of `typeid` that a well-behaved client holds (not this case's).
    fn foreign(&self, typeid: &str) -> u64 {
        self.tcp_baseline
            .0
            .iter()
            .find(|(_, t, _)| t == typeid)
            .map(|(id, _, _)| *id)
            .unwrap_or_else(|| panic!("no {typeid} in {:?}", self.tcp_baseline))
    }

    /// The checks after every case: the server is alive and logged no panic, both servers are
    /// back to their baseline (no leaked object, reference or connection), the well-behaved
    /// clients saw no failure and kept making calls.
    fn assert_unharmed(&self, calls_before: u64) {
        self.server.assert_alive();
        for (manager, baseline, name) in [
            (&self.observer, &self.tcp_baseline, "tcp"),
            (&self.unix_observer, &self.unix_baseline, "unix"),
        ] {
            wait_until(
                &format!("the {name} server to be back to its baseline"),
                || {
                    let info = manager.debug_info().map_err(|e| e.to_string())?;
                    let now = (seen(&info), info.connections);
                    if &now == baseline {
                        Ok(())
                    } else {
                        Err(format!("now {now:?}, baseline {baseline:?}"))
                    }
                },
            );
        }
        wait_until("the well-behaved clients to make more calls", || {
            let calls = self.background.calls();
            if calls >= calls_before + 40 {
                Ok(())
            } else {
                Err(format!(
                    "{} calls since the case began",
                    calls - calls_before
                ))
            }
        });
        let failures = self.background.failures();
        assert!(
            failures.is_empty(),
            "a well-behaved client failed: {failures:#?}"
        );
        self.server.assert_alive();
    }
}

/// Runs one case against the suite's server, then checks that nothing was harmed.
fn case(body: impl FnOnce(&Suite)) {
    let suite = suite();
    assert!(
        !suite.finished.load(Ordering::SeqCst),
        "the suite's server was already shut down"
    );
    let calls_before = suite.background.calls();
    body(suite);
    suite.assert_unharmed(calls_before);
}

/// Runs `future` on a fresh single-threaded runtime.
fn run<F: std::future::Future>(future: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(future)
}

// ---------------------------------------------------------------------------------------------
// Raw connections.

trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// A raw socket to the server, speaking the wire protocol by hand.
struct Raw {
    stream: Box<dyn Io>,
    next_id: u64,
}

/// A frame: the 4-byte big-endian length, then `body`.
fn frame(body: &[u8]) -> Vec<u8> {
    let mut frame = (body.len() as u32).to_be_bytes().to_vec();
    frame.extend_from_slice(body);
    frame
}

/// The frame of a request: `head` in postcard, then `args` as they are.
fn request(head: &Request<'_>, args: &[u8]) -> Vec<u8> {
    let mut body = postcard::to_stdvec(head).unwrap();
    body.extend_from_slice(args);
    frame(&body)
}

/// `value` in postcard.
fn enc<T: Serialize + ?Sized>(value: &T) -> Vec<u8> {
    postcard::to_stdvec(value).unwrap()
}

/// A postcard varint of `n`.
fn varint(mut n: u64) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let byte = (n & 0x7f) as u8;
        n >>= 7;
        if n == 0 {
            out.push(byte);
            return out;
        }
        out.push(byte | 0x80);
    }
}

/// Sets SO_LINGER to zero, so that closing the socket resets the connection (RST).
fn reset_on_close(stream: &tokio::net::TcpStream) {
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: setsockopt on a valid socket with a correctly sized option value.
    unsafe {
        libc::setsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            &linger as *const libc::linger as *const libc::c_void,
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        );
    }
}

impl Raw {
    /// Connects without any handshake. `reset` makes closing the socket send a RST.
    async fn dial_with(address: &Address, reset: bool) -> Raw {
        let stream: Box<dyn Io> = match address {
            Address::Tcp(host_port) => {
                let stream = tokio::net::TcpStream::connect(host_port.as_str())
                    .await
                    .expect("cannot connect");
                stream.set_nodelay(true).unwrap();
                if reset {
                    reset_on_close(&stream);
                }
                Box::new(stream)
            }
            Address::Unix(path) => Box::new(
                tokio::net::UnixStream::connect(path)
                    .await
                    .expect("cannot connect"),
            ),
        };
        Raw { stream, next_id: 1 }
    }

    async fn dial(address: &Address) -> Raw {
        Raw::dial_with(address, false).await
    }

    /// Connects, completes the handshake and reads the welcome frame.
    async fn open_with(address: &Address, key: &AuthKey, reset: bool) -> Raw {
        let mut raw = Raw::dial_with(address, reset).await;
        within(
            "the handshake",
            manager::auth::client_handshake(&mut raw.stream, key),
        )
        .await
        .expect("the handshake with the right key");
        let body = raw
            .next_frame()
            .await
            .expect("the welcome frame after the handshake");
        let welcome: Welcome = postcard::from_bytes(&body).expect("a welcome frame");
        assert_eq!(welcome.protocol, manager::wire::PROTOCOL_VERSION);
        assert_eq!(welcome.refused, None);
        raw
    }

    async fn open(suite: &Suite) -> Raw {
        Raw::open_with(&suite.server.tcp, &suite.key, false).await
    }

    fn id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    /// Writes `bytes`; an error (the server closed first) is returned, not a panic.
    async fn send(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.stream.write_all(bytes).await?;
        self.stream.flush().await
    }

    async fn must_send(&mut self, bytes: &[u8]) {
        self.send(bytes).await.expect("cannot write to the server");
    }

    /// The next frame's body, or `None` when the server closed the connection.
    async fn next_frame(&mut self) -> Option<Vec<u8>> {
        within("a frame from the server", async {
            let len = self.stream.read_u32().await.ok()? as usize;
            assert!(len <= MAX_FRAME, "the server sent a frame of {len} bytes");
            let mut body = vec![0u8; len];
            self.stream.read_exact(&mut body).await.ok()?;
            Some(body)
        })
        .await
    }

    /// The next response: its head and payload.
    async fn response(&mut self) -> (ResponseHead, Vec<u8>) {
        let body = self
            .next_frame()
            .await
            .expect("a response, but the server closed the connection");
        let (head, payload) =
            postcard::take_from_bytes::<ResponseHead>(&body).expect("a response head");
        (head, payload.to_vec())
    }

    /// The reply to request `id`, which must be the next response.
    async fn reply(&mut self, id: u64) -> (Reply, Vec<u8>) {
        let (head, payload) = self.response().await;
        assert_eq!(head.id, id, "answers arrive in order here: {head:?}");
        (head.reply, payload)
    }

    /// The error the server answered request `id` with; its kind must be one of `kinds`.
    async fn error(&mut self, id: u64, kinds: &[RemoteErrorKind]) -> RemoteError {
        match self.reply(id).await.0 {
            Reply::Error(error) if kinds.contains(&error.kind) => error,
            other => panic!("expected an error of kind {kinds:?}, got {other:?}"),
        }
    }

    /// Reads until the server closes the connection; returns what it sent meanwhile.
    async fn closed(&mut self) -> Vec<u8> {
        let mut received = Vec::new();
        within("the server to close the connection", async {
            let mut buf = [0u8; 4096];
            loop {
                match self.stream.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => received.extend_from_slice(&buf[..n]),
                }
            }
        })
        .await;
        received
    }

    /// Asserts that the server closes the connection without sending anything.
    async fn closed_silently(&mut self, what: &str) {
        let received = self.closed().await;
        assert!(
            received.is_empty(),
            "{what}: the server answered {} bytes before closing: {:?}",
            received.len(),
            &received[..received.len().min(64)]
        );
    }

    async fn control(&mut self, op: Control) -> Reply {
        let id = self.id();
        self.must_send(&request(&Request::Control { id, op }, &[]))
            .await;
        self.reply(id).await.0
    }

    /// A round trip that proves the connection is open and in step.
    async fn ping(&mut self) {
        match self.control(Control::Ping).await {
            Reply::Control(ControlReply::Pong) => {}
            other => panic!("expected Pong, got {other:?}"),
        }
    }

    async fn debug_info(&mut self) -> DebugInfo {
        match self.control(Control::DebugInfo).await {
            Reply::Control(ControlReply::DebugInfo(info)) => info,
            other => panic!("expected debug info, got {other:?}"),
        }
    }

    /// The reference count of object `id` (`None`: it does not exist).
    async fn refcount(&mut self, id: u64) -> Option<u64> {
        self.debug_info()
            .await
            .objects
            .iter()
            .find(|o| o.id == id)
            .map(|o| o.refcount)
    }

    async fn create(&mut self, typeid: &str, args: &[u8]) -> Token {
        let id = self.id();
        self.must_send(&request(&Request::Create { id, typeid }, args))
            .await;
        match self.reply(id).await.0 {
            Reply::Proxy(token) => token,
            other => panic!("expected a proxy, got {other:?}"),
        }
    }

    async fn probe(&mut self, value: i64) -> u64 {
        self.create("probe", &enc(&(value,))).await.id
    }

    /// Sends a call and returns its request id.
    async fn call(&mut self, object: u64, method: &str, args: &[u8]) -> u64 {
        let id = self.id();
        self.must_send(&request(&Request::Call { id, object, method }, args))
            .await;
        id
    }

    /// Calls and decodes the returned value.
    async fn value<T: serde::de::DeserializeOwned>(
        &mut self,
        object: u64,
        method: &str,
        args: &[u8],
    ) -> T {
        let id = self.call(object, method, args).await;
        match self.reply(id).await {
            (Reply::Value, payload) => postcard::from_bytes(&payload).expect("the value"),
            other => panic!("expected a value, got {other:?}"),
        }
    }
}

/// Sends each of `bodies` as one frame on a fresh authenticated connection, followed by a
/// valid ping, and asserts that the server closes the connection without answering.
async fn each_closes(suite: &Suite, what: &str, bodies: &[Vec<u8>]) {
    for body in bodies {
        let mut raw = Raw::open(suite).await;
        let mut bytes = frame(body);
        bytes.extend(request(
            &Request::Control {
                id: 99,
                op: Control::Ping,
            },
            &[],
        ));
        let _ = raw.send(&bytes).await;
        raw.closed_silently(&format!("{what} {body:?}")).await;
    }
}

// ---------------------------------------------------------------------------------------------
// Before the handshake.

/// 64 bytes of an HTTP request where the handshake answer belongs: the server greets, then
/// answers with the refusal status byte and closes; nothing is counted as a connection.
fn garbage_instead_of_the_handshake_is_refused() {
    case(|suite| {
        run(async {
            let mut raw = Raw::dial(&suite.server.tcp).await;
            let mut hello = [0u8; 40];
            within("the greeting", raw.stream.read_exact(&mut hello))
                .await
                .unwrap();
            assert_eq!(&hello[..8], manager::auth::MAGIC);
            let mut garbage =
                b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: hostile\r\n\r\n".to_vec();
            garbage.resize(64, b'x');
            raw.must_send(&garbage).await;
            let rest = raw.closed().await;
            assert_eq!(rest.len(), 33, "a status byte and a zeroed proof: {rest:?}");
            assert_eq!(rest[0], 1, "the refusal status");
        })
    });
}

/// A client with the wrong authkey: the handshake fails on both sides with an `Auth` error and
/// the server closes the connection.
fn a_wrong_authkey_is_refused() {
    case(|suite| {
        run(async {
            let mut raw = Raw::dial(&suite.server.tcp).await;
            let result = manager::auth::client_handshake(
                &mut raw.stream,
                &AuthKey::from("not the server's key"),
            )
            .await;
            assert!(matches!(result, Err(manager::Error::Auth(_))), "{result:?}");
            raw.closed_silently("after a refused handshake").await;
        })
    });
}

/// Half a handshake answer, then end of stream: the server drops the connection without a
/// status byte.
fn a_handshake_cut_short_is_dropped() {
    case(|suite| {
        run(async {
            let mut raw = Raw::dial(&suite.server.tcp).await;
            let mut hello = [0u8; 40];
            within("the greeting", raw.stream.read_exact(&mut hello))
                .await
                .unwrap();
            raw.must_send(&[7u8; 20]).await;
            raw.stream.shutdown().await.unwrap();
            raw.closed_silently("a handshake cut short").await;
        })
    });
}

/// A TLS ClientHello where the handshake answer belongs (a TLS client dialling a server
/// without TLS): the server greets, then drops the connection without a status byte.
fn a_tls_client_hello_to_a_plain_server_is_dropped() {
    case(|suite| {
        run(async {
            let mut raw = Raw::dial(&suite.server.tcp).await;
            let mut hello = [0u8; 40];
            within("the greeting", raw.stream.read_exact(&mut hello))
                .await
                .unwrap();
            assert_eq!(&hello[..8], manager::auth::MAGIC);
            // A TLS 1.2 record header (handshake, version 3.1) and a ClientHello's start.
            let mut client_hello = vec![0x16, 0x03, 0x01, 0x00, 0xf0, 0x01, 0x00, 0x00, 0xec];
            client_hello.resize(64, 0x42);
            raw.must_send(&client_hello).await;
            raw.closed_silently("a TLS ClientHello").await;
        })
    });
}

/// 200 peers that connect and never answer the greeting: none counts as a connection, a new
/// client is served meanwhile, and each is dropped after the handshake timeout.
fn silent_peers_are_dropped_after_the_handshake_timeout() {
    case(|suite| {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let mut peers = runtime.block_on(async {
            let mut peers = Vec::new();
            for _ in 0..200 {
                peers.push(Raw::dial(&suite.server.tcp).await);
            }
            peers
        });
        // Not counted: only the three well-behaved connections and the observer's are open.
        assert_eq!(
            suite.observer.debug_info().unwrap().connections,
            suite.tcp_baseline.1
        );
        let newcomer = BlockingManager::connect(&suite.server.tcp, &suite.key).unwrap();
        assert_eq!(newcomer.create(&PROBE, (5,)).unwrap().add(1).unwrap(), 6);
        drop(newcomer);
        runtime.block_on(async {
            for (n, peer) in peers.iter_mut().enumerate() {
                let received = peer.closed().await;
                assert!(
                    received.len() == 40 && received.starts_with(manager::auth::MAGIC),
                    "peer {n}: only the greeting: {received:?}"
                );
            }
        });
    });
}

/// A megabyte of garbage over the Unix socket before any handshake: the server reads only the
/// 64 bytes of a handshake answer, refuses them and closes; it buffers nothing more.
fn a_megabyte_of_garbage_over_the_unix_socket_is_refused() {
    case(|suite| {
        run(async {
            let mut raw = Raw::dial(&suite.server.unix).await;
            let garbage: Vec<u8> = (0..1u32 << 20).map(|i| (i * 7 + 3) as u8).collect();
            // The server closes while this is still being written.
            let _ = raw.send(&garbage).await;
            let received = raw.closed().await;
            assert_eq!(received.len(), 40 + 33, "{received:?}");
            assert_eq!(&received[..8], manager::auth::MAGIC);
            assert_eq!(received[40], 1, "the refusal status");
        })
    });
}

// ---------------------------------------------------------------------------------------------
// Framing.

/// A frame of length 0 (no request head): the connection is closed, and the valid requests
/// written after it in the same packet are not run (the create makes no object).
fn an_empty_frame_closes_the_connection_and_nothing_after_it_runs() {
    case(|suite| {
        run(async {
            let mut raw = Raw::open(suite).await;
            let mut bytes = vec![0, 0, 0, 0];
            bytes.extend(request(
                &Request::Create {
                    id: 5,
                    typeid: "probe",
                },
                &enc(&(1i64,)),
            ));
            bytes.extend(request(
                &Request::Control {
                    id: 6,
                    op: Control::Ping,
                },
                &[],
            ));
            raw.must_send(&bytes).await;
            raw.closed_silently("an empty frame").await;
        })
    });
}

/// Credit a client grants beyond the window (`u32::MAX`, again and again), and credit or
/// cancels for streams that do not exist, neither panic the server nor make it send more than
/// a window ahead of what was granted: the stream stays bounded and the connection serves on.
fn stream_credit_past_the_window_and_for_unknown_streams_is_ignored() {
    case(|suite| {
        run(async {
            let mut raw = Raw::open(suite).await;
            let probe = raw.probe(0).await;
            for id in [0, 999_999, u64::MAX] {
                raw.must_send(&request(&Request::StreamCredit { id, n: u32::MAX }, &[]))
                    .await;
                raw.must_send(&request(&Request::StreamCancel { id }, &[]))
                    .await;
            }
            raw.ping().await;
            let stream = raw.call(probe, "numbers", &[]).await;
            match raw.reply(stream).await.0 {
                Reply::StreamOpened { window } => assert_eq!(window, STREAM_WINDOW),
                other => panic!("expected a stream, got {other:?}"),
            }
            const CREDITS: u64 = 3;
            for _ in 0..CREDITS {
                raw.must_send(&request(
                    &Request::StreamCredit {
                        id: stream,
                        n: u32::MAX,
                    },
                    &[],
                ))
                .await;
            }
            // Items are on their way; a ping's answer comes after those sent before it.
            let ping = raw.id();
            raw.must_send(&request(
                &Request::Control {
                    id: ping,
                    op: Control::Ping,
                },
                &[],
            ))
            .await;
            let mut items = 0u64;
            loop {
                let (head, payload) = raw.response().await;
                match head.reply {
                    Reply::StreamItem if head.id == stream => {
                        let item: u64 = postcard::from_bytes(&payload).unwrap();
                        assert_eq!(item, items, "items in order");
                        items += 1;
                    }
                    Reply::Control(ControlReply::Pong) if head.id == ping => break,
                    other => panic!("unexpected {other:?}"),
                }
            }
            // Each grant can add at most a window: the bound holds whatever the timing.
            let bound = u64::from(STREAM_WINDOW) * (1 + CREDITS);
            assert!(items <= bound, "{items} items sent, more than {bound}");
            raw.must_send(&request(&Request::StreamCancel { id: stream }, &[]))
                .await;
            // Items sent before the cancel may still arrive: skip them up to a ping's answer.
            let ping = raw.id();
            raw.must_send(&request(
                &Request::Control {
                    id: ping,
                    op: Control::Ping,
                },
                &[],
            ))
            .await;
            loop {
                let (head, _) = raw.response().await;
                match head.reply {
                    Reply::StreamItem if head.id == stream => {}
                    Reply::Control(ControlReply::Pong) if head.id == ping => break,
                    other => panic!("unexpected {other:?}"),
                }
            }
        })
    });
}

/// A length prefix of 2^32-1: refused before anything is allocated for it; the server's peak
/// memory stays far below 4 GiB.
fn a_length_prefix_of_u32_max_closes_the_connection() {
    case(|suite| {
        run(async {
            for tail in [&[][..], &[0u8; 16][..]] {
                let mut raw = Raw::open(suite).await;
                let mut bytes = u32::MAX.to_be_bytes().to_vec();
                bytes.extend_from_slice(tail);
                let _ = raw.send(&bytes).await;
                raw.closed_silently("a prefix of 2^32-1").await;
            }
        });
        let peak = suite.server.peak_rss_kib();
        assert!(peak < 1 << 20, "the server's peak RSS is {peak} KiB");
    });
}

/// A frame of exactly `max_frame` bytes is accepted and answered (here: the padding is refused
/// as surplus arguments, with a `BadArguments` error), on a connection that stays open.
fn a_frame_of_exactly_the_limit_is_served() {
    case(|suite| {
        run(async {
            let mut raw = Raw::open(suite).await;
            let probe = raw.probe(1).await;
            let id = raw.id();
            let head = enc(&Request::Call {
                id,
                object: probe,
                method: "add",
            });
            let mut args = enc(&(1i64,));
            args.resize(MAX_FRAME - head.len(), 0);
            let bytes = request(
                &Request::Call {
                    id,
                    object: probe,
                    method: "add",
                },
                &args,
            );
            assert_eq!(bytes.len(), 4 + MAX_FRAME);
            raw.must_send(&bytes).await;
            let error = raw.error(id, &[RemoteErrorKind::BadArguments]).await;
            assert!(error.message.contains("left over"), "{error:?}");
            assert_eq!(
                raw.value::<i64>(probe, "get", &[]).await,
                1,
                "the call did not run"
            );
            raw.ping().await;
        })
    });
}

/// A hundred connections that each announce a frame of the largest size (64 MiB, the default
/// limit, on a server of its own) and then send nothing more: each waits for its body; the
/// server's resident memory does not grow by the announced 6 GiB (only address space is
/// reserved), it goes on serving, and it drops them all when they close.
fn stalled_maximal_frames_do_not_make_the_server_resident() {
    let mut config = suite_config();
    config.max_frame = manager::wire::DEFAULT_MAX_FRAME;
    let server = ServerChild::start(config);
    let key = manager::process::authkey();
    let rss = |field| proc_status_kib(server.pid, field).unwrap_or(0);
    let (rss_before, size_before) = (rss("VmRSS"), rss("VmSize"));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let stalled = runtime.block_on(async {
        let mut stalled = Vec::new();
        for _ in 0..100 {
            let mut raw = Raw::open_with(&server.tcp, &key, false).await;
            let mut bytes = (manager::wire::DEFAULT_MAX_FRAME as u32)
                .to_be_bytes()
                .to_vec();
            bytes.extend_from_slice(&[0u8; 100]);
            raw.must_send(&bytes).await;
            stalled.push(raw);
        }
        let mut observer = Raw::open_with(&server.tcp, &key, false).await;
        let info = wait_until_async_connections(&mut observer, 101).await;
        assert!(info.objects.is_empty());
        stalled
    });
    let (rss_during, size_during) = (rss("VmRSS"), rss("VmSize"));
    println!(
        "100 stalled 64 MiB frames: server VmRSS {rss_before} -> {rss_during} KiB, VmSize \
         {size_before} -> {size_during} KiB"
    );
    assert!(
        rss_during < rss_before + 64 * 1024,
        "the server made {} MiB resident for frames that never came",
        (rss_during - rss_before) / 1024
    );
    drop(stalled);
    let manager = BlockingManager::connect(&server.tcp, &key).unwrap();
    wait_until("the stalled connections to be dropped", || {
        match manager.debug_info() {
            Ok(info) if info.connections == 1 => Ok(()),
            other => Err(format!("{other:?}")),
        }
    });
    assert_eq!(manager.create(&PROBE, (1,)).unwrap().add(1).unwrap(), 2);
    server.assert_alive();
}

/// Polls `debug_info` on `raw` until the server counts `connections` open connections.
async fn wait_until_async_connections(raw: &mut Raw, connections: u64) -> DebugInfo {
    let deadline = std::time::Instant::now() + TIMEOUT;
    loop {
        let info = raw.debug_info().await;
        if info.connections == connections {
            return info;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{} connections, not {connections}",
            info.connections
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A frame one byte over `max_frame`, sent in full: the connection is closed at the prefix,
/// without an answer.
fn a_frame_one_byte_over_the_limit_closes_the_connection() {
    case(|suite| {
        run(async {
            let mut raw = Raw::open(suite).await;
            raw.probe(1).await;
            let body = vec![0u8; MAX_FRAME + 1];
            let _ = raw.send(&frame(&body)).await;
            raw.closed_silently("a frame over the limit").await;
        })
    });
}

/// A frame whose body ends early (end of stream after 50 of 100 bytes): the connection is
/// dropped and the object it created is released.
fn a_frame_cut_short_by_end_of_stream_is_dropped() {
    case(|suite| {
        run(async {
            let mut raw = Raw::open(suite).await;
            raw.probe(1).await;
            let mut bytes = 100u32.to_be_bytes().to_vec();
            bytes.extend_from_slice(&[0u8; 50]);
            raw.must_send(&bytes).await;
            raw.stream.shutdown().await.unwrap();
            raw.closed_silently("a truncated frame").await;
        })
    });
}

/// Requests written one byte at a time, with pauses: the server reassembles the frames and
/// answers each correctly (a slow or fragmenting peer is not mistaken for a broken one).
fn requests_trickled_one_byte_at_a_time_are_served() {
    case(|suite| {
        run(async {
            let mut raw = Raw::open(suite).await;
            async fn trickle(raw: &mut Raw, bytes: &[u8]) {
                for byte in bytes {
                    raw.must_send(std::slice::from_ref(byte)).await;
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
            }
            trickle(
                &mut raw,
                &request(
                    &Request::Create {
                        id: 1,
                        typeid: "probe",
                    },
                    &enc(&(7i64,)),
                ),
            )
            .await;
            let token = match raw.reply(1).await.0 {
                Reply::Proxy(token) => token,
                other => panic!("{other:?}"),
            };
            trickle(
                &mut raw,
                &request(
                    &Request::Call {
                        id: 2,
                        object: token.id,
                        method: "add",
                    },
                    &enc(&(3i64,)),
                ),
            )
            .await;
            match raw.reply(2).await {
                (Reply::Value, payload) => {
                    assert_eq!(postcard::from_bytes::<i64>(&payload).unwrap(), 10)
                }
                other => panic!("{other:?}"),
            }
            trickle(
                &mut raw,
                &request(
                    &Request::Control {
                        id: 3,
                        op: Control::Ping,
                    },
                    &[],
                ),
            )
            .await;
            assert_eq!(raw.reply(3).await.0, Reply::Control(ControlReply::Pong));
        })
    });
}

// ---------------------------------------------------------------------------------------------
// Well-framed bodies that do not decode.

/// Request kinds that do not exist (one well past the last kind, a large one, u32::MAX and a varint
/// overflowing u32): each closes its connection without an answer.
fn unknown_request_kinds_close_the_connection() {
    case(|suite| {
        run(each_closes(
            suite,
            "request kind",
            &[
                // Well past the last kind (8, `StreamCancel`).
                vec![30],
                vec![30, 1, 2, 3],
                varint(200),
                varint(u32::MAX as u64),
                vec![0x80, 0x80, 0x80, 0x80, 0x80, 0x01],
            ],
        ))
    });
}

/// Control requests with an operation that does not exist, or a `Methods` without its object:
/// each closes its connection.
fn unknown_control_ops_close_the_connection() {
    case(|suite| {
        run(each_closes(
            suite,
            "control op",
            &[vec![6, 1, 6], vec![6, 1, 99], vec![6, 1, 4], vec![6, 1]],
        ))
    });
}

/// A method name or typeid that is not UTF-8: the head does not decode; the connection closes.
fn names_that_are_not_utf8_close_the_connection() {
    case(|suite| {
        run(each_closes(
            suite,
            "not UTF-8",
            &[
                vec![0, 1, 1, 2, 0xff, 0xfe],
                vec![1, 1, 2, 0xc3, 0x28],
                vec![0, 1, 1, 3, 0xed, 0xa0, 0x80],
            ],
        ))
    });
}

/// A string length inside the head that runs past the end of the frame (a million bytes
/// announced, three present; u64::MAX announced): the connection closes, nothing is allocated.
fn lengths_past_the_end_of_the_frame_close_the_connection() {
    case(|suite| {
        let mut create = vec![1, 1];
        create.extend(varint(1_000_000));
        create.extend_from_slice(b"abc");
        let mut call = vec![0, 1, 1];
        call.extend(varint(u64::MAX));
        call.extend_from_slice(b"add");
        run(each_closes(suite, "length past the end", &[create, call]))
    });
}

/// A request id or object id whose varint overflows u64, or a head cut off in the middle of a
/// field: the connection closes.
fn ids_overflowing_u64_and_cut_heads_close_the_connection() {
    case(|suite| {
        let mut overflowing = vec![0];
        overflowing.extend([0xff; 10]);
        overflowing.push(0x7f);
        let mut decref = vec![3];
        decref.extend([0xff; 11]);
        run(each_closes(
            suite,
            "overflow or cut",
            &[overflowing, decref, vec![0, 0x80], vec![5], vec![0, 1]],
        ))
    });
}

/// Bytes after a head that takes no arguments (a ping, an incref) are ignored: the request is
/// served and the connection stays in step.
fn trailing_bytes_after_a_head_without_arguments_are_ignored() {
    case(|suite| {
        run(async {
            let mut raw = Raw::open(suite).await;
            let probe = raw.probe(0).await;
            let mut bytes = request(
                &Request::Control {
                    id: 50,
                    op: Control::Ping,
                },
                &[0xff; 32],
            );
            bytes.extend(request(&Request::IncRef { object: probe }, &[1, 2, 3]));
            raw.must_send(&bytes).await;
            assert_eq!(raw.reply(50).await.0, Reply::Control(ControlReply::Pong));
            assert_eq!(raw.refcount(probe).await, Some(2));
        })
    });
}

/// A ping followed by a `Hello` (what this crate's clients send on connecting) is answered
/// with the server's hello, whatever features the client claims; a traced call, with any trace
/// context, runs as a call.
fn a_hello_is_answered_and_a_traced_call_runs() {
    case(|suite| {
        run(async {
            let mut raw = Raw::open(suite).await;
            let hello = manager::wire::Hello { features: u64::MAX };
            let ping = Request::Control {
                id: 60,
                op: Control::Ping,
            };
            raw.must_send(&request(&ping, &enc(&hello))).await;
            let answer = manager::wire::Hello {
                features: manager::wire::features::ALL,
            };
            assert_eq!(
                raw.reply(60).await.0,
                Reply::Control(ControlReply::Hello(answer))
            );
            let probe = raw.probe(3).await;
            for trace in [0u128, u128::MAX] {
                let id = raw.id();
                let call = Request::TracedCall {
                    id,
                    object: probe,
                    method: "add",
                    trace: manager::trace::TraceContext {
                        trace_id: trace,
                        span_id: trace as u64,
                        flags: 0xff,
                    },
                };
                raw.must_send(&request(&call, &enc(&(1i64,)))).await;
                let (reply, payload) = raw.reply(id).await;
                assert_eq!(reply, Reply::Value);
                assert!(postcard::from_bytes::<i64>(&payload).is_ok());
            }
            raw.ping().await;
        })
    });
}

// ---------------------------------------------------------------------------------------------
// Well-framed requests that are wrong.

/// Calls on object ids that do not exist (0, a large id, u64::MAX), with real and unreal
/// method names: an `UnknownObject` error each; the connection stays usable.
fn calls_on_unknown_object_ids_are_unknown_object_errors() {
    case(|suite| {
        run(async {
            let mut raw = Raw::open(suite).await;
            for object in [0, 1 << 40, u64::MAX] {
                for method in ["add", "get", "no_such"] {
                    let id = raw.call(object, method, &enc(&(1i64,))).await;
                    let error = raw.error(id, &[RemoteErrorKind::UnknownObject]).await;
                    assert!(error.message.contains(&object.to_string()), "{error:?}");
                }
            }
            raw.ping().await;
        })
    });
}

/// Objects another connection holds (the well-behaved client's probe and lock): calling them,
/// asking for their methods, releasing them and adding references to them are all refused or
/// ignored; their reference counts do not move while the hostile connection is open, and the
/// owner's calls keep returning the right values.
fn objects_of_other_connections_cannot_be_called_or_released() {
    case(|suite| {
        let probe = suite.foreign("probe");
        let lock = suite.foreign("Lock");
        run(async {
            let mut raw = Raw::open(suite).await;
            let before: Vec<_> = [probe, lock]
                .iter()
                .map(|id| suite.tcp_baseline.0.iter().find(|o| o.0 == *id).unwrap().2)
                .collect();
            let id = raw.call(probe, "add", &enc(&(1_000_000i64,))).await;
            raw.error(id, &[RemoteErrorKind::UnknownObject]).await;
            let id = raw.call(lock, "release", &[]).await;
            raw.error(id, &[RemoteErrorKind::UnknownObject]).await;
            match raw.control(Control::Methods { object: probe }).await {
                Reply::Error(e) if e.kind == RemoteErrorKind::UnknownObject => {}
                other => panic!("{other:?}"),
            }
            let mut bytes = Vec::new();
            for _ in 0..10 {
                for object in [probe, lock] {
                    bytes.extend(request(&Request::DecRef { object }, &[]));
                    bytes.extend(request(&Request::IncRef { object }, &[]));
                    bytes.extend(request(&Request::DecRef { object }, &[]));
                }
            }
            raw.must_send(&bytes).await;
            raw.ping().await;
            assert_eq!(raw.refcount(probe).await, Some(before[0]));
            assert_eq!(raw.refcount(lock).await, Some(before[1]));
        })
    });
}

/// An `Attach` of `object` as a `typeid`, from a token whose server run is not known (as a
/// CPython client's token).
fn attach(id: u64, object: u64, typeid: &str) -> Request<'_> {
    Request::Attach {
        id,
        object,
        typeid,
        instance: 0,
    }
}

/// `Attach` of ids that do not exist (0, u64::MAX, an object already released) is an
/// `UnknownObject` error. `Attach` of an object another connection holds succeeds (that is how
/// a proxy travels to another process) and is counted: each attach adds a reference, and all
/// are released when the connection closes without releasing them.
fn attach_of_missing_ids_fails_and_attach_of_a_foreign_id_is_counted() {
    case(|suite| {
        let foreign = suite.foreign("probe");
        let baseline = suite
            .tcp_baseline
            .0
            .iter()
            .find(|o| o.0 == foreign)
            .unwrap()
            .2;
        run(async {
            let mut raw = Raw::open(suite).await;
            let released = raw.probe(0).await;
            raw.must_send(&request(&Request::DecRef { object: released }, &[]))
                .await;
            for object in [0, u64::MAX, released] {
                let id = raw.id();
                raw.must_send(&request(&attach(id, object, "probe"), &[]))
                    .await;
                raw.error(id, &[RemoteErrorKind::UnknownObject]).await;
            }
            for n in 1..=3 {
                let id = raw.id();
                raw.must_send(&request(&attach(id, foreign, "probe"), &[]))
                    .await;
                match raw.reply(id).await.0 {
                    Reply::Proxy(token) => assert_eq!(token.id, foreign),
                    other => panic!("{other:?}"),
                }
                assert_eq!(raw.refcount(foreign).await, Some(baseline + n));
            }
        })
    });
}

/// Releasing a reference below zero: after the one reference is released the object is gone,
/// and four more releases, an incref (no resurrection) and a call on it change nothing; ids
/// are not reused.
fn releasing_a_reference_below_zero_is_ignored() {
    case(|suite| {
        run(async {
            let mut raw = Raw::open(suite).await;
            let probe = raw.probe(3).await;
            assert_eq!(raw.refcount(probe).await, Some(1));
            let mut bytes = Vec::new();
            for _ in 0..5 {
                bytes.extend(request(&Request::DecRef { object: probe }, &[]));
            }
            bytes.extend(request(&Request::IncRef { object: probe }, &[]));
            raw.must_send(&bytes).await;
            raw.ping().await;
            assert_eq!(raw.refcount(probe).await, None);
            let id = raw.call(probe, "get", &[]).await;
            raw.error(id, &[RemoteErrorKind::UnknownObject]).await;
            let again = raw.probe(3).await;
            assert!(again > probe, "ids are not reused: {again} after {probe}");
            assert_eq!(raw.refcount(again).await, Some(1));
        })
    });
}

/// Stale ids that share the index of a slot this connection holds: an object's id is its slot's
/// version above its slot's index, a connection's references name slots by index alone, and a
/// freed slot is reused. The id of a released object (and forged versions of the same index:
/// the free slot's even version, a version not reached yet) must be refused wherever it
/// arrives (call, methods, attach, incref, decref), never reaching the object that holds the
/// slot now, whose reference count and value do not move.
fn stale_ids_sharing_a_held_slot_are_refused() {
    case(|suite| {
        run(async {
            let mut raw = Raw::open(suite).await;
            let index = |id: u64| id & u64::from(u32::MAX);
            // A slot that held an object and now holds another, of this connection. Other
            // clients may take the freed slot first: try a few times.
            let (stale, now) = 'found: {
                for _ in 0..50 {
                    let first = raw.probe(1).await;
                    raw.must_send(&request(&Request::DecRef { object: first }, &[]))
                        .await;
                    raw.ping().await;
                    let second = raw.probe(2).await;
                    if index(second) == index(first) {
                        break 'found (first, second);
                    }
                    // `second` stays held (released with the connection); try again.
                }
                panic!("no freed slot was reused in 50 tries");
            };
            assert_ne!(stale, now, "the reused slot has a new version");
            let version = now >> 32;
            let forged = [
                stale,
                // The version the slot has while free (even), and one it has not reached.
                ((version + 1) << 32) | index(now),
                ((version + 2) << 32) | index(now),
            ];
            for object in forged {
                let id = raw.call(object, "add", &enc(&(1_000i64,))).await;
                raw.error(id, &[RemoteErrorKind::UnknownObject]).await;
                match raw.control(Control::Methods { object }).await {
                    Reply::Error(e) if e.kind == RemoteErrorKind::UnknownObject => {}
                    other => panic!("methods of stale id {object}: {other:?}"),
                }
                let id = raw.id();
                raw.must_send(&request(&attach(id, object, "probe"), &[]))
                    .await;
                raw.error(id, &[RemoteErrorKind::UnknownObject]).await;
                let mut bytes = Vec::new();
                for _ in 0..3 {
                    bytes.extend(request(&Request::IncRef { object }, &[]));
                    bytes.extend(request(&Request::DecRef { object }, &[]));
                    bytes.extend(request(&Request::DecRef { object }, &[]));
                }
                raw.must_send(&bytes).await;
                raw.ping().await;
                assert_eq!(raw.refcount(object).await, None, "stale id {object}");
            }
            assert_eq!(
                raw.refcount(now).await,
                Some(1),
                "the slot's object is untouched"
            );
            assert_eq!(raw.value::<i64>(now, "get", &[]).await, 2);
        })
    });
}

/// IncRef of ids this connection does not hold (unknown ids, another connection's list) is
/// ignored: no reference is created, nothing needs releasing.
fn increfs_of_objects_not_held_are_ignored() {
    case(|suite| {
        let list = suite.foreign("list");
        run(async {
            let mut raw = Raw::open(suite).await;
            let mut bytes = Vec::new();
            for object in [0, 77_777, u64::MAX, list] {
                for _ in 0..100 {
                    bytes.extend(request(&Request::IncRef { object }, &[]));
                }
            }
            raw.must_send(&bytes).await;
            raw.ping().await;
            let info = raw.debug_info().await;
            let now: Vec<Seen> = seen(&info);
            assert_eq!(now, suite.tcp_baseline.0, "no reference was added");
        })
    });
}

/// A hundred thousand increfs on one object, then the connection drops without a single
/// decref: every one of those references is released with the connection.
fn a_hundred_thousand_increfs_are_released_when_the_connection_drops() {
    case(|suite| {
        run(async {
            let mut raw = Raw::open(suite).await;
            let probe = raw.probe(0).await;
            let one = request(&Request::IncRef { object: probe }, &[]);
            let bytes: Vec<u8> = one
                .iter()
                .copied()
                .cycle()
                .take(one.len() * 100_000)
                .collect();
            raw.must_send(&bytes).await;
            raw.ping().await;
            assert_eq!(raw.refcount(probe).await, Some(100_001));
        })
    });
}

/// Cancels of request ids that are not running (never used, already answered, 0, u64::MAX)
/// are ignored without an answer; a cancelled `nap` of this connection is dropped; the
/// connection stays in step.
fn cancels_of_ids_that_are_not_running_are_ignored() {
    case(|suite| {
        run(async {
            let mut raw = Raw::open(suite).await;
            let probe = raw.probe(0).await;
            let answered = raw.call(probe, "get", &[]).await;
            raw.reply(answered).await;
            let mut bytes = Vec::new();
            for id in [0, answered, 1 << 50, u64::MAX] {
                bytes.extend(request(&Request::Cancel { id }, &[]));
            }
            raw.must_send(&bytes).await;
            raw.ping().await;
            let napping = raw.call(probe, "nap", &enc(&(60_000u64,))).await;
            raw.must_send(&request(&Request::Cancel { id: napping }, &[]))
                .await;
            // The nap is stopped where it waits and answered `Cancelled` (a caller that gave
            // up on an acquisition learns whether it got it), and nothing else is.
            raw.error(napping, &[RemoteErrorKind::Cancelled]).await;
            raw.ping().await;
            assert_eq!(raw.value::<i64>(probe, "add", &enc(&(2i64,))).await, 2);
        })
    });
}

/// `Methods` (get_methods) of an unknown object or of another connection's object is an
/// `UnknownObject` error; of its own object, the exposed names only (not `hidden`).
fn methods_of_unknown_or_foreign_objects_are_refused() {
    case(|suite| {
        let foreign = suite.foreign("probe");
        run(async {
            let mut raw = Raw::open(suite).await;
            for object in [0, u64::MAX, foreign] {
                match raw.control(Control::Methods { object }).await {
                    Reply::Error(e) if e.kind == RemoteErrorKind::UnknownObject => {}
                    other => panic!("{other:?}"),
                }
            }
            let own = raw.probe(0).await;
            match raw.control(Control::Methods { object: own }).await {
                Reply::Control(ControlReply::Methods(mut names)) => {
                    names.sort();
                    assert_eq!(names, ["add", "echo", "get", "nap", "numbers"]);
                }
                other => panic!("{other:?}"),
            }
        })
    });
}

/// A method that exists but is not exposed is `NotExposed`; empty, NUL-suffixed and unknown
/// names are `NoSuchMethod`; a 900 KB method name gets an error whose reply still fits the
/// frame limit; the connection stays usable and no refused method ran.
fn non_exposed_missing_and_giant_method_names_are_refused() {
    case(|suite| {
        run(async {
            let mut raw = Raw::open(suite).await;
            let probe = raw.probe(4).await;
            let id = raw.call(probe, "hidden", &[]).await;
            let error = raw.error(id, &[RemoteErrorKind::NotExposed]).await;
            assert_eq!(
                (error.typeid.as_str(), error.method.as_str()),
                ("probe", "hidden")
            );
            for method in ["", "add\0", "ADD", "__del__"] {
                let id = raw.call(probe, method, &enc(&(1i64,))).await;
                raw.error(id, &[RemoteErrorKind::NoSuchMethod]).await;
            }
            let giant = "m".repeat(900 * 1024);
            let id = raw.call(probe, &giant, &[]).await;
            raw.error(
                id,
                &[RemoteErrorKind::NoSuchMethod, RemoteErrorKind::Encode],
            )
            .await;
            assert_eq!(raw.value::<i64>(probe, "get", &[]).await, 4);
        })
    });
}

/// Argument bytes of the wrong shape, for plain, async and built-in methods and for
/// factories: none, an overflowing varint, too many, a string for a number, invalid UTF-8, a
/// string longer than the frame, an unknown value kind, a bool that is 2. Each is answered with
/// `BadArguments`, in order, on a connection that stays usable; nothing ran.
fn argument_bytes_of_the_wrong_shape_are_bad_arguments() {
    case(|suite| {
        run(async {
            let mut raw = Raw::open(suite).await;
            let probe = raw.probe(9).await;
            let list = raw.create("list", &enc(&(Vec::<u8>::new(),))).await.id;
            let lock = raw.create("Lock", &[]).await.id;
            let mut long_string = varint(1 << 30);
            long_string.extend_from_slice(b"abc");
            let calls: Vec<(u64, &str, Vec<u8>)> = vec![
                (probe, "add", vec![]),
                (probe, "add", vec![0xff; 12]),
                (probe, "add", enc(&(1i64, 2i64))),
                (probe, "add", enc(&("text",))),
                (probe, "echo", vec![5, 0xff, 0xfe, 0xfd, 0xfc, 0xfb]),
                (probe, "echo", long_string),
                (probe, "echo", enc(&(1u8,))),
                (probe, "get", vec![0]),
                (probe, "nap", vec![]),
                (probe, "nap", vec![0x80]),
                (list, "append", vec![]),
                (list, "append", vec![99]),
                (list, "append", vec![6, 3, 0]),
                (list, "getitem", enc(&("zero",))),
                (lock, "acquire", vec![2, 0]),
                (lock, "acquire", vec![1]),
            ];
            let mut ids = Vec::new();
            for (object, method, args) in &calls {
                ids.push(raw.call(*object, method, args).await);
            }
            // Calls run in tasks of their own, so their answers may come in any order.
            let mut answered = std::collections::HashMap::new();
            for _ in &ids {
                let (head, _) = raw.response().await;
                answered.insert(head.id, head.reply);
            }
            for (id, (_, method, args)) in ids.iter().zip(&calls) {
                match &answered[id] {
                    Reply::Error(e) if e.kind == RemoteErrorKind::BadArguments => {}
                    other => panic!("{method}({args:?}): expected BadArguments, got {other:?}"),
                }
            }
            for (typeid, args) in [
                ("probe", vec![]),
                ("probe", vec![0xff; 11]),
                ("list", vec![1, 99]),
            ] {
                let id = raw.id();
                raw.must_send(&request(&Request::Create { id, typeid }, &args))
                    .await;
                raw.error(id, &[RemoteErrorKind::BadArguments]).await;
            }
            assert_eq!(raw.value::<i64>(probe, "get", &[]).await, 9);
            assert_eq!(raw.value::<u64>(list, "len", &[]).await, 0);
            assert!(!raw.value::<bool>(lock, "locked", &[]).await);
        })
    });
}

/// Creates of typeids that are not registered (unknown, empty, 500 KB long) are
/// `UnknownTypeid`; of a typeid registered without a create method, `NoCreateMethod`.
fn creates_of_unknown_or_sealed_typeids_are_refused() {
    case(|suite| {
        run(async {
            let mut raw = Raw::open(suite).await;
            let giant = "t".repeat(500 * 1024);
            for (typeid, kinds) in [
                ("nope", &[RemoteErrorKind::UnknownTypeid][..]),
                ("", &[RemoteErrorKind::UnknownTypeid][..]),
                ("Probe", &[RemoteErrorKind::UnknownTypeid][..]),
                (
                    giant.as_str(),
                    &[RemoteErrorKind::UnknownTypeid, RemoteErrorKind::Encode][..],
                ),
                ("probe_sealed", &[RemoteErrorKind::NoCreateMethod][..]),
            ] {
                let id = raw.id();
                raw.must_send(&request(&Request::Create { id, typeid }, &[]))
                    .await;
                raw.error(id, kinds).await;
            }
            raw.ping().await;
        })
    });
}

/// A create that names the type its proxy stands for (`CreateAs`): a foreign, empty, giant or
/// not-a-type name is a `WrongType` error (an unknown typeid stays `UnknownTypeid`), nothing
/// is made, and the right name (with or without module path) makes the object.
fn creates_naming_another_type_are_refused_and_make_nothing() {
    case(|suite| {
        run(async {
            let mut raw = Raw::open(suite).await;
            let giant = "T::".repeat(200 * 1024);
            let before = raw.debug_info().await.objects.len();
            let wrong = &[RemoteErrorKind::WrongType][..];
            for (typeid, object_type, kinds) in [
                ("probe", "hostile::Other", wrong),
                ("probe", "", wrong),
                ("probe", "::::<<>>", wrong),
                // Its message is too big to send back: an `Encode` error instead.
                (
                    "probe",
                    giant.as_str(),
                    &[RemoteErrorKind::WrongType, RemoteErrorKind::Encode][..],
                ),
                (
                    "nope",
                    "hostile::Probe",
                    &[RemoteErrorKind::UnknownTypeid][..],
                ),
            ] {
                let id = raw.id();
                let head = Request::CreateAs {
                    id,
                    typeid,
                    object_type,
                };
                raw.must_send(&request(&head, &enc(&(1i64,)))).await;
                raw.error(id, kinds).await;
            }
            assert_eq!(raw.debug_info().await.objects.len(), before);
            for object_type in ["hostile::Probe", "Probe", "elsewhere::Probe"] {
                let id = raw.id();
                let head = Request::CreateAs {
                    id,
                    typeid: "probe",
                    object_type,
                };
                raw.must_send(&request(&head, &enc(&(1i64,)))).await;
                match raw.reply(id).await.0 {
                    Reply::Proxy(_) => {}
                    other => panic!("expected a proxy, got {other:?}"),
                }
            }
            raw.ping().await;
        })
    });
}

/// Ten thousand creates written at once: exactly `max_objects_per_connection` (1000) succeed,
/// the other 9000 are `Limit` errors; releasing ten makes room for exactly ten more; another
/// connection has its own allowance; the thousand are released when the connection drops.
fn a_flood_of_creates_stops_at_the_per_connection_limit() {
    case(|suite| {
        run(async {
            let mut raw = Raw::open(suite).await;
            let args = enc(&(0i64,));
            let mut bytes = Vec::new();
            let first = raw.next_id + 1;
            for _ in 0..10_000 {
                let id = raw.id();
                bytes.extend(request(
                    &Request::Create {
                        id,
                        typeid: "probe",
                    },
                    &args,
                ));
            }
            raw.must_send(&bytes).await;
            let mut made = Vec::new();
            let mut refused = 0;
            // Factories run on worker threads, so pipelined creates may be answered in any
            // order; each is answered once.
            let mut answered = std::collections::HashSet::new();
            for _ in 0..10_000 {
                let (head, _) = raw.response().await;
                assert!(
                    (first..first + 10_000).contains(&head.id) && answered.insert(head.id),
                    "create {} answered twice or never asked",
                    head.id
                );
                match head.reply {
                    Reply::Proxy(token) => made.push(token.id),
                    Reply::Error(e) if e.kind == RemoteErrorKind::Limit => {
                        assert!(e.message.contains(&MAX_OBJECTS.to_string()), "{e:?}");
                        refused += 1;
                    }
                    other => panic!("{other:?}"),
                }
            }
            assert_eq!((made.len(), refused), (MAX_OBJECTS, 10_000 - MAX_OBJECTS));
            let info = raw.debug_info().await;
            assert_eq!(info.objects.len(), suite.tcp_baseline.0.len() + MAX_OBJECTS);

            let mut bytes = Vec::new();
            for object in &made[..10] {
                bytes.extend(request(&Request::DecRef { object: *object }, &[]));
            }
            raw.must_send(&bytes).await;
            for _ in 0..10 {
                raw.probe(0).await;
            }
            let id = raw.id();
            raw.must_send(&request(
                &Request::Create {
                    id,
                    typeid: "probe",
                },
                &args,
            ))
            .await;
            raw.error(id, &[RemoteErrorKind::Limit]).await;

            let mut other = Raw::open(suite).await;
            other.probe(0).await;
        })
    });
}

/// Twenty thousand `add` calls and two hundred async `nap`s written at once (far over
/// `max_in_flight`): every one is answered once, the adds with a permutation of 1..=20000.
/// Then a second flood on another connection holding the lock is abandoned unread (the socket
/// reset): its objects, its waiting calls and its lock are all released.
fn a_flood_of_pipelined_calls_is_answered_in_full_and_an_abandoned_one_is_cleaned_up() {
    case(|suite| {
        run(async {
            let mut raw = Raw::open(suite).await;
            let probe = raw.probe(0).await;
            let add = enc(&(1i64,));
            let nap = enc(&(2u64,));
            let mut bytes = Vec::new();
            for n in 0..20_200u64 {
                let id = raw.id();
                let (method, args) = if n % 101 == 100 {
                    ("nap", &nap)
                } else {
                    ("add", &add)
                };
                bytes.extend(request(
                    &Request::Call {
                        id,
                        object: probe,
                        method,
                    },
                    args,
                ));
            }
            // Written while the answers are read: neither side may wait for the other.
            let (mut reader, mut writer) = tokio::io::split(raw.stream);
            let write = async move {
                writer.write_all(&bytes).await.unwrap();
                writer
            };
            let read = async {
                let mut values = Vec::new();
                for _ in 0..20_200 {
                    let len = reader.read_u32().await.unwrap() as usize;
                    let mut body = vec![0u8; len];
                    reader.read_exact(&mut body).await.unwrap();
                    let (head, payload) = postcard::take_from_bytes::<ResponseHead>(&body).unwrap();
                    assert_eq!(head.reply, Reply::Value, "{head:?}");
                    values.push((head.id, postcard::from_bytes::<i64>(payload).unwrap()));
                }
                values
            };
            let (writer, values) = within("the flood", async { tokio::join!(write, read) }).await;
            let mut adds: Vec<i64> = Vec::new();
            for (id, value) in values {
                // Request ids start at 2 with the create; call n has id n + 3.
                if (id - 3) % 101 == 100 {
                    // 2u64 reads as the i64 1 (postcard zigzags signed integers).
                    assert_eq!(value, 1, "nap answers its argument");
                } else {
                    adds.push(value);
                }
            }
            adds.sort_unstable();
            assert_eq!(adds, (1..=20_000).collect::<Vec<i64>>());
            drop(writer);
            drop(reader);

            let mut lock_keeper = Raw::open(suite).await;
            let lock = lock_keeper.create("Lock", &[]).await.id;
            let mut doomed = Raw::open_with(&suite.server.tcp, &suite.key, true).await;
            let id = doomed.id();
            doomed
                .must_send(&request(&attach(id, lock, "Lock"), &[]))
                .await;
            doomed.reply(id).await;
            assert!(
                doomed
                    .value::<bool>(lock, "acquire", &enc(&(true, None::<f64>)))
                    .await
            );
            let probe = doomed.probe(0).await;
            let mut bytes = Vec::new();
            for n in 0..20_000u64 {
                let (method, args) = if n % 2 == 0 {
                    ("add", &add)
                } else {
                    ("nap", &nap)
                };
                bytes.extend(request(
                    &Request::Call {
                        id: 1000 + n,
                        object: probe,
                        method,
                    },
                    args,
                ));
            }
            let _ = doomed.send(&bytes).await;
            drop(doomed);
            // The lock is released with the connection that held it.
            assert!(
                lock_keeper
                    .value::<bool>(lock, "acquire", &enc(&(true, Some(20.0f64))))
                    .await,
                "the lock was not released with the connections that held it"
            );
        })
    });
}

/// Two hundred connections dropped at every stage (right after connecting, mid-handshake,
/// after the welcome, holding objects, mid-frame, waiting for a lock, with a queue of calls
/// and a reset): the server releases everything each held, the lock they fought over is free
/// and the open-connection count is back to where it was.
fn connections_dropped_at_every_stage_leave_nothing_behind() {
    case(|suite| {
        run(async {
            let mut keeper = Raw::open(suite).await;
            let lock = keeper.create("Lock", &[]).await.id;
            let mut doomed = Vec::new();
            for n in 0..200u64 {
                let stage = n % 8;
                let reset = n % 3 == 0;
                let raw = match stage {
                    0 => Raw::dial_with(&suite.server.tcp, reset).await,
                    1 => {
                        let mut raw = Raw::dial_with(&suite.server.tcp, reset).await;
                        let mut hello = [0u8; 40];
                        raw.stream.read_exact(&mut hello).await.unwrap();
                        raw.must_send(&[1u8; 30]).await;
                        raw
                    }
                    2 => Raw::open_with(&suite.server.tcp, &suite.key, reset).await,
                    _ => {
                        let mut raw = Raw::open_with(&suite.server.tcp, &suite.key, reset).await;
                        let probe = raw.probe(n as i64).await;
                        raw.create("list", &enc(&(vec![Value::Int(n.into()), Value::None],)))
                            .await;
                        let id = raw.id();
                        raw.must_send(&request(&attach(id, lock, "Lock"), &[]))
                            .await;
                        raw.reply(id).await;
                        match stage {
                            3 => {}
                            4 => raw.must_send(&[0, 0, 1, 0, 0, 1, 2]).await,
                            5 | 6 => {
                                // Acquire the lock (the first one gets it, the others wait).
                                raw.call(lock, "acquire", &enc(&(true, None::<f64>))).await;
                            }
                            _ => {
                                let mut bytes = Vec::new();
                                for k in 0..500u64 {
                                    bytes.extend(request(
                                        &Request::Call {
                                            id: 10_000 + k,
                                            object: probe,
                                            method: "nap",
                                        },
                                        &enc(&(5u64,)),
                                    ));
                                }
                                raw.must_send(&bytes).await;
                            }
                        }
                        raw
                    }
                };
                doomed.push(raw);
                // Drop them in batches, oldest first, while others are still being made.
                if doomed.len() == 25 {
                    doomed.clear();
                }
            }
            drop(doomed);
            assert!(
                keeper
                    .value::<bool>(lock, "acquire", &enc(&(true, Some(20.0f64))))
                    .await,
                "the lock was not released with the connections that held it"
            );
        })
    });
}

// ---------------------------------------------------------------------------------------------
// Cases that once crashed or bloated the server, each against a server of its own.

/// A `list.append` whose argument is a list nested 100,000 deep (200 KB, well under the frame
/// limit): the server should refuse it with `BadArguments` (a depth limit) and go on serving.
fn a_deeply_nested_value_is_refused_without_overflowing_the_stack() {
    let server = ServerChild::start(suite_config());
    let key = manager::process::authkey();
    run(async {
        let mut raw = Raw::open_with(&server.tcp, &key, false).await;
        let list = raw.create("list", &enc(&(Vec::<u8>::new(),))).await.id;
        // Value::List is variant 6: [6, 1] opens a one-element list; Value::None is [0].
        let depth = 100_000;
        let mut args = Vec::with_capacity(depth * 2 + 1);
        for _ in 0..depth {
            args.extend_from_slice(&[6, 1]);
        }
        args.push(0);
        let id = raw.call(list, "append", &args).await;
        let Some(body) = raw.next_frame().await else {
            // The connection closed: see whether the server died.
            for _ in 0..300 {
                if !server.child.lock().unwrap().0.is_alive() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            server.assert_alive();
            panic!("the server closed the connection instead of answering");
        };
        let (head, _) = postcard::take_from_bytes::<ResponseHead>(&body).unwrap();
        assert_eq!(head.id, id);
        assert!(
            matches!(&head.reply, Reply::Error(e)
                if matches!(e.kind, RemoteErrorKind::BadArguments | RemoteErrorKind::InvalidValue)),
            "{head:?}"
        );
        raw.ping().await;
    });
    server.assert_alive();
}

/// A client that writes three million `debug_info` requests (9 bytes each) and never reads the
/// answers: the server should stop reading from it (backpressure) once a bounded amount of
/// answers is queued, not buffer them all (it once queued every answer on an unbounded channel:
/// about 340 MiB here, without bound with more requests).
fn a_client_that_never_reads_cannot_grow_the_servers_memory_without_bound() {
    let server = ServerChild::start(suite_config());
    let key = manager::process::authkey();
    let before = proc_status_kib(server.pid, "VmRSS").unwrap_or(0);
    run(async {
        let mut raw = Raw::open_with(&server.tcp, &key, false).await;
        let one = request(
            &Request::Control {
                id: 1,
                op: Control::DebugInfo,
            },
            &[],
        );
        let chunk: Vec<u8> = one
            .iter()
            .copied()
            .cycle()
            .take(one.len() * 10_000)
            .collect();
        // 3 million requests (27 MB), unless the server stops reading first (as it should).
        let sent = tokio::time::timeout(Duration::from_secs(60), async {
            let mut sent = 0usize;
            for _ in 0..300 {
                if raw.send(&chunk).await.is_err() {
                    break;
                }
                sent += 10_000;
            }
            sent
        })
        .await;
        eprintln!("sent {sent:?} unread requests");
        std::thread::sleep(Duration::from_secs(1));
        let now = proc_status_kib(server.pid, "VmRSS").unwrap_or(0);
        eprintln!("server RSS: {before} KiB before, {now} KiB with the answers unread");
        assert!(
            now < before + 64 * 1024,
            "the server buffered {} MiB of unread answers",
            (now - before) / 1024
        );
    });
    server.assert_alive();
}

// ---------------------------------------------------------------------------------------------
// The end.

/// The last case: the well-behaved clients stop with zero failures after the whole suite, the
/// server shuts down when asked and exits with status 0, and its log shows no panic.
fn the_server_survived_every_case_and_exits_cleanly() {
    let suite = suite();
    let calls_before = suite.background.calls();
    suite.assert_unharmed(calls_before);
    suite.background.stop();
    let failures = suite.background.failures();
    assert!(failures.is_empty(), "{failures:#?}");
    println!(
        "the well-behaved clients made {} calls alongside the suite, with no failure; server peak RSS {} KiB",
        suite.background.calls(),
        suite.server.peak_rss_kib()
    );
    suite.finished.store(true, Ordering::SeqCst);
    suite.observer.shutdown().unwrap();
    let status = suite
        .server
        .child
        .lock()
        .unwrap()
        .0
        .join_timeout(TIMEOUT)
        .unwrap()
        .expect("the server did not exit after shutdown");
    let log = suite.server.log();
    assert!(status.success(), "the server exited with {status:?}\n{log}");
    assert!(!log.contains("panicked"), "{log}");
    let _ = std::io::stdout().flush();
}

fn main() {
    manager::init();
    common::run_tests(vec![
        case!(garbage_instead_of_the_handshake_is_refused),
        case!(a_wrong_authkey_is_refused),
        case!(a_handshake_cut_short_is_dropped),
        case!(a_tls_client_hello_to_a_plain_server_is_dropped),
        case!(silent_peers_are_dropped_after_the_handshake_timeout),
        case!(a_megabyte_of_garbage_over_the_unix_socket_is_refused),
        case!(an_empty_frame_closes_the_connection_and_nothing_after_it_runs),
        case!(a_length_prefix_of_u32_max_closes_the_connection),
        case!(a_frame_of_exactly_the_limit_is_served),
        case!(a_frame_one_byte_over_the_limit_closes_the_connection),
        case!(stalled_maximal_frames_do_not_make_the_server_resident),
        case!(a_frame_cut_short_by_end_of_stream_is_dropped),
        case!(requests_trickled_one_byte_at_a_time_are_served),
        case!(unknown_request_kinds_close_the_connection),
        case!(unknown_control_ops_close_the_connection),
        case!(names_that_are_not_utf8_close_the_connection),
        case!(lengths_past_the_end_of_the_frame_close_the_connection),
        case!(ids_overflowing_u64_and_cut_heads_close_the_connection),
        case!(trailing_bytes_after_a_head_without_arguments_are_ignored),
        case!(a_hello_is_answered_and_a_traced_call_runs),
        case!(calls_on_unknown_object_ids_are_unknown_object_errors),
        case!(objects_of_other_connections_cannot_be_called_or_released),
        case!(attach_of_missing_ids_fails_and_attach_of_a_foreign_id_is_counted),
        case!(releasing_a_reference_below_zero_is_ignored),
        case!(stale_ids_sharing_a_held_slot_are_refused),
        case!(increfs_of_objects_not_held_are_ignored),
        case!(a_hundred_thousand_increfs_are_released_when_the_connection_drops),
        case!(cancels_of_ids_that_are_not_running_are_ignored),
        case!(methods_of_unknown_or_foreign_objects_are_refused),
        case!(non_exposed_missing_and_giant_method_names_are_refused),
        case!(argument_bytes_of_the_wrong_shape_are_bad_arguments),
        case!(creates_of_unknown_or_sealed_typeids_are_refused),
        case!(creates_naming_another_type_are_refused_and_make_nothing),
        case!(a_flood_of_creates_stops_at_the_per_connection_limit),
        case!(a_flood_of_pipelined_calls_is_answered_in_full_and_an_abandoned_one_is_cleaned_up),
        case!(connections_dropped_at_every_stage_leave_nothing_behind),
        case!(a_deeply_nested_value_is_refused_without_overflowing_the_stack),
        case!(a_client_that_never_reads_cannot_grow_the_servers_memory_without_bound),
        case!(stream_credit_past_the_window_and_for_unknown_streams_is_ignored),
        case!(the_server_survived_every_case_and_exits_cleanly),
    ]);
}
