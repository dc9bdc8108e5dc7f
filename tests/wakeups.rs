//! A blocked caller reads its reply itself: the client's I/O thread sleeps through its calls.
//!
//! Counted, not timed: the context switches of the client's I/O thread (`manager-client-io`,
//! from `/proc/self/task/*/status`) over a few hundred sequential blocking calls. Before the
//! reader task watched the socket through a set of its own, each call woke that thread once
//! (twice over a Unix socket: its reply, and the server reading the request). This file holds
//! one test, so that no other test's connections share that thread meanwhile.

mod common;

use common::{InProcessServer, TempPath};
use manager::{Address, AuthKey, ServerConfig};

const CALLS: u64 = 400;

/// The context switches (voluntary and not) of this process's threads named `name`; fails
/// when there is none (the count would say nothing).
fn switches_of(name: &str) -> u64 {
    let (mut total, mut threads) = (0, 0);
    for task in std::fs::read_dir("/proc/self/task").expect("/proc/self/task") {
        let dir = task.expect("a task").path();
        let comm = std::fs::read_to_string(dir.join("comm")).unwrap_or_default();
        if comm.trim_end() != name {
            continue;
        }
        threads += 1;
        let status = std::fs::read_to_string(dir.join("status")).unwrap_or_default();
        total += status
            .lines()
            .filter(|l| l.contains("ctxt_switches"))
            .filter_map(|l| l.split_whitespace().last()?.parse::<u64>().ok())
            .sum::<u64>();
    }
    assert!(threads > 0, "no thread named {name:?} in this process");
    total
}

#[test]
fn blocking_calls_leave_the_client_io_thread_asleep() {
    let socket = TempPath::socket("wakeups");
    // Over a Unix socket the connection would go through shared memory, whose reader task is
    // quieted another way: off here, so that both runs go through the socket.
    let mut config = ServerConfig::default();
    config.shared_memory = false;
    for address in [Address::local_tcp(), socket.address()] {
        let server = InProcessServer::start_with(
            manager::sync::registry(),
            address,
            AuthKey::from("wakeups"),
            config.clone(),
        );
        let manager = server.connect();
        let value = manager.value(&7i64).unwrap();
        for _ in 0..20 {
            assert_eq!(value.get().unwrap(), 7);
        }
        // The I/O thread's name as the kernel keeps it (15 bytes).
        let before = switches_of("manager-client-");
        for _ in 0..CALLS {
            assert_eq!(value.get().unwrap(), 7);
        }
        let woken = switches_of("manager-client-") - before;
        assert!(
            woken < CALLS / 4,
            "{}: the client's I/O thread switched {woken} times in {CALLS} blocking calls",
            server.address()
        );
    }
}
