//! Helpers shared by the integration tests: an in-process server on its own runtime, unique
//! Unix socket paths, bounded polling, child-process guards, and a small libtest-like runner for
//! the test binaries that spawn processes (they need `manager::init()` in their own `main`).
//!
//! Every test binary compiles this module, and each uses only part of it.
#![allow(dead_code)]
#![allow(unreachable_pub, reason = "#[shared] exposes an impl's `pub` methods")]

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use manager::{Address, AuthKey, Process, Registry, Server, ServerConfig, ShutdownHandle};

pub mod python;
pub mod stress;

/// How long any single wait may last before the test fails instead of hanging. Generous on
/// purpose: it only exists to turn a hang into a failure, never to measure speed.
pub const TIMEOUT: Duration = Duration::from_secs(30);

/// How long one test of a custom-harness binary may run before the runner gives up on it.
pub const TEST_TIMEOUT: Duration = Duration::from_secs(180);

/// Polls `check` every few milliseconds until it returns `Ok`, for at most [`TIMEOUT`]. On
/// timeout, panics with `what` and the last `Err` (the state that was observed).
pub fn wait_until<T>(what: &str, mut check: impl FnMut() -> Result<T, String>) -> T {
    let deadline = Instant::now() + TIMEOUT;
    loop {
        match check() {
            Ok(value) => return value,
            Err(last) if Instant::now() >= deadline => {
                panic!("timed out waiting for {what}; last observed: {last}")
            }
            Err(_) => std::thread::sleep(Duration::from_millis(10)),
        }
    }
}

/// The async form of [`wait_until`].
pub async fn wait_until_async<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, String>>,
{
    let deadline = Instant::now() + TIMEOUT;
    loop {
        match check().await {
            Ok(value) => return value,
            Err(last) if Instant::now() >= deadline => {
                panic!("timed out waiting for {what}; last observed: {last}")
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
        }
    }
}

/// Awaits `future` for at most [`TIMEOUT`], panicking with `what` if it does not finish.
pub async fn within<T>(what: &str, future: impl std::future::Future<Output = T>) -> T {
    match tokio::time::timeout(TIMEOUT, future).await {
        Ok(value) => value,
        Err(_) => panic!("{what} did not finish within {TIMEOUT:?}"),
    }
}

/// A unique path in the temporary directory (for a Unix socket or a scratch file), removed
/// when dropped.
#[derive(Debug)]
pub struct TempPath(PathBuf);

impl TempPath {
    /// A fresh socket path named after `tag`, this process's id and a counter.
    pub fn socket(tag: &str) -> TempPath {
        Self::with_extension(tag, "sock")
    }

    /// A fresh scratch file path, like [`TempPath::socket`].
    pub fn file(tag: &str) -> TempPath {
        Self::with_extension(tag, "txt")
    }

    fn with_extension(tag: &str, extension: &str) -> TempPath {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let path = std::env::temp_dir().join(format!(
            "mgr-test-{tag}-{}-{n}.{extension}",
            std::process::id()
        ));
        let _ = std::fs::remove_file(&path);
        TempPath(path)
    }

    /// The path.
    pub fn path(&self) -> &Path {
        &self.0
    }

    /// The path as a Unix socket address.
    pub fn address(&self) -> Address {
        Address::unix(&self.0)
    }
}

impl Drop for TempPath {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// A manager server running in this process on a runtime of its own, so that blocking clients
/// can be used from ordinary threads. Stopped (and its runtime shut down) when dropped.
pub struct InProcessServer {
    address: Address,
    authkey: AuthKey,
    handle: ShutdownHandle,
    served: Option<tokio::task::JoinHandle<manager::Result<()>>>,
    runtime: Option<tokio::runtime::Runtime>,
}

impl InProcessServer {
    /// Binds `address` with `authkey` and serves `registry` until stopped.
    pub fn start(registry: Registry, address: Address, authkey: AuthKey) -> InProcessServer {
        Self::start_with(registry, address, authkey, ServerConfig::default())
    }

    /// Like [`InProcessServer::start`], with server limits.
    pub fn start_with(
        registry: Registry,
        address: Address,
        authkey: AuthKey,
        config: ServerConfig,
    ) -> InProcessServer {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("cannot build the server's runtime");
        let server = runtime
            .block_on(Server::bind(registry, &address, authkey.clone(), config))
            .expect("cannot bind the test server");
        let address = server.address().clone();
        let handle = server.shutdown_handle();
        let served = runtime.spawn(server.serve_forever());
        InProcessServer {
            address,
            authkey,
            handle,
            served: Some(served),
            runtime: Some(runtime),
        }
    }

    /// A TCP server on 127.0.0.1 with a port the system picks, keyed with this process's
    /// authkey (the one spawned children inherit).
    pub fn tcp(registry: Registry) -> InProcessServer {
        Self::start(registry, Address::local_tcp(), manager::process::authkey())
    }

    /// The address clients reach it at (with the real port).
    pub fn address(&self) -> &Address {
        &self.address
    }

    /// The authkey it was started with.
    pub fn authkey(&self) -> &AuthKey {
        &self.authkey
    }

    /// The runtime the server runs on (usable for `block_on` from a plain thread).
    pub fn runtime(&self) -> &tokio::runtime::Runtime {
        self.runtime.as_ref().expect("the runtime is running")
    }

    /// A blocking client connection.
    pub fn connect(&self) -> manager::BlockingManager {
        manager::BlockingManager::connect(&self.address, &self.authkey)
            .expect("cannot connect to the test server")
    }

    /// Whether `serve_forever` has returned.
    pub fn has_stopped(&self) -> bool {
        self.served.as_ref().is_none_or(|s| s.is_finished())
    }
}

impl Drop for InProcessServer {
    fn drop(&mut self) {
        self.handle.shutdown();
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_timeout(Duration::from_secs(5));
        }
    }
}

/// A spawned process that is killed (SIGKILL) and reaped when the guard drops, so that no test
/// leaves a child behind, even when it fails.
#[derive(Debug)]
pub struct ChildGuard(pub Process);

impl ChildGuard {
    /// Waits for the child to end, for at most [`TIMEOUT`].
    pub fn join(&mut self) -> std::process::ExitStatus {
        self.0
            .join_timeout(TIMEOUT)
            .expect("cannot wait for the child")
            .unwrap_or_else(|| panic!("the child {} did not end in time", self.0.name()))
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
    }
}

/// A process seen at one moment: its pid and its start time, so that a reused pid is not
/// mistaken for the same process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcessIdentity {
    pub pid: u32,
    start: Option<String>,
}

impl ProcessIdentity {
    /// The process `pid` as it is now.
    pub fn of(pid: u32) -> ProcessIdentity {
        ProcessIdentity {
            pid,
            start: start_time(pid),
        }
    }

    /// Whether that same process still exists (running or not yet reaped).
    pub fn exists(&self) -> bool {
        if Path::new("/proc/self").exists() {
            self.start.is_some() && start_time(self.pid) == self.start
        } else {
            // No procfs: ask the kernel whether the pid exists.
            std::process::Command::new("kill")
                .args(["-0", &self.pid.to_string()])
                .stderr(std::process::Stdio::null())
                .status()
                .map(|status| status.success())
                .unwrap_or(false)
        }
    }
}

/// Field 22 of `/proc/PID/stat`: the process's start time in clock ticks since boot.
fn start_time(pid: u32) -> Option<String> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after_name = &stat[stat.rfind(')')? + 1..];
    // Fields after the name start at field 3 (state); the start time is field 22.
    after_name.split_whitespace().nth(19).map(str::to_string)
}

/// Marks the message of a panic a test causes on purpose (in a server method, say); the hook
/// installed by [`quiet_intentional_panics`] does not print such panics.
pub const INTENTIONAL: &str = "(intentional panic)";

/// Installs a panic hook that stays silent for panics whose message contains [`INTENTIONAL`]
/// and reports every other panic as the default hook does.
pub fn quiet_intentional_panics() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let payload = info.payload();
        let message = payload
            .downcast_ref::<&str>()
            .copied()
            .or_else(|| payload.downcast_ref::<String>().map(String::as_str));
        if !message.is_some_and(|m| m.contains(INTENTIONAL)) {
            default(info);
        }
    }));
}

/// One test of a custom-harness binary.
pub struct Test {
    pub name: &'static str,
    pub run: fn(),
    pub ignore: Option<&'static str>,
}

/// `case!(name)` is the test function `name`; `case!(name, ignore = "reason")` is an ignored
/// one. (Reach it with `#[macro_use] mod common;`.)
#[allow(unused_macros)]
macro_rules! case {
    ($name:ident) => {
        $crate::common::Test {
            name: stringify!($name),
            run: $name,
            ignore: None,
        }
    };
    ($name:ident, ignore = $reason:literal) => {
        $crate::common::Test {
            name: stringify!($name),
            run: $name,
            ignore: Some($reason),
        }
    };
}

/// Runs `tests` one after the other, each on its own thread with a panic caught as a failure,
/// and prints the results the way libtest does. Understands a name filter, `--exact`,
/// `--skip NAME`, `--ignored`, `--include-ignored` and `--list`; other libtest flags are
/// accepted and ignored. Exits with status 101 when a test fails.
pub fn run_tests(tests: Vec<Test>) -> ! {
    let mut filters = Vec::new();
    let mut skips = Vec::new();
    let (mut exact, mut list, mut only_ignored, mut include_ignored) = (false, false, false, false);
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--exact" => exact = true,
            "--list" => list = true,
            "--ignored" => only_ignored = true,
            "--include-ignored" => include_ignored = true,
            "--skip" => skips.extend(args.next()),
            "--test-threads" | "--color" | "--format" | "--logfile" | "-Z" | "--shuffle-seed" => {
                let _ = args.next();
            }
            flag if flag.starts_with('-') => {}
            filter => filters.push(filter.to_string()),
        }
    }
    let matches = |name: &str, pattern: &str| {
        if exact {
            name == pattern
        } else {
            name.contains(pattern)
        }
    };
    let selected: Vec<&Test> = tests
        .iter()
        .filter(|t| filters.is_empty() || filters.iter().any(|f| matches(t.name, f)))
        .filter(|t| !skips.iter().any(|s| matches(t.name, s)))
        // As libtest: `--ignored` runs only the ignored tests; the others are filtered out.
        .filter(|t| !only_ignored || include_ignored || t.ignore.is_some())
        .collect();
    let filtered_out = tests.len() - selected.len();

    if list {
        for test in &selected {
            println!("{}: test", test.name);
        }
        println!();
        println!("{} tests, 0 benchmarks", selected.len());
        std::process::exit(0);
    }

    println!();
    println!(
        "running {} test{}",
        selected.len(),
        if selected.len() == 1 { "" } else { "s" }
    );
    let (mut passed, mut failed, mut ignored) = (0usize, Vec::new(), 0usize);
    for test in selected {
        if let (Some(reason), false, false) = (test.ignore, only_ignored, include_ignored) {
            println!("test {} ... ignored, {reason}", test.name);
            ignored += 1;
            continue;
        }
        // The whole line is printed once the test is over, so that what the test (or a child
        // process) writes to stderr meanwhile never splits it.
        let (done, wait) = mpsc::channel();
        let run = test.run;
        let spawned = std::thread::Builder::new()
            .name(test.name.to_string())
            .spawn(move || {
                let outcome = std::panic::catch_unwind(run);
                let _ = done.send(outcome.is_ok());
            });
        let ok = match spawned {
            Ok(_) => match wait.recv_timeout(TEST_TIMEOUT) {
                Ok(ok) => ok,
                Err(_) => {
                    eprintln!("test {} did not finish within {TEST_TIMEOUT:?}", test.name);
                    false
                }
            },
            Err(e) => {
                eprintln!("cannot start a thread for {}: {e}", test.name);
                false
            }
        };
        if ok {
            println!("test {} ... ok", test.name);
            passed += 1;
        } else {
            println!("test {} ... FAILED", test.name);
            failed.push(test.name);
        }
    }
    if !failed.is_empty() {
        println!();
        println!("failures:");
        for name in &failed {
            println!("    {name}");
        }
    }
    println!();
    println!(
        "test result: {}. {passed} passed; {} failed; {ignored} ignored; 0 measured; {filtered_out} filtered out",
        if failed.is_empty() { "ok" } else { "FAILED" },
        failed.len()
    );
    println!();
    let _ = std::io::stdout().flush();
    std::process::exit(if failed.is_empty() { 0 } else { 101 });
}
