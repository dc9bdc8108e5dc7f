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

fn a_unix_connection_uses_shared_memory_and_calls_go_through_it() {
    let socket = TempPath::socket("shm-basic");
    let manager = start(&socket, ServerConfig::default());
    assert!(manager.connection().uses_shared_memory());
    let bench = manager.create(&BENCH, ()).unwrap();
    for i in 1..=1000 {
        assert_eq!(bench.add(1).unwrap(), i);
    }
    assert_eq!(bench.get().unwrap(), 1000);
    let big: Vec<u8> = (0..3 << 20).map(|i| (i % 251) as u8).collect();
    assert_eq!(bench.echo(big.clone()).unwrap(), big);
    let list = manager.list::<String>(&[]).unwrap();
    list.append(&"x".into()).unwrap();
    assert_eq!(list.to_vec().unwrap(), vec!["x".to_string()]);
}

fn main() {
    manager::init();
    common::run_tests(vec![case!(
        a_unix_connection_uses_shared_memory_and_calls_go_through_it
    )]);
}
