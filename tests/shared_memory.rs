//! Shared memory blocks: CPython's `SharedMemoryManager` unchanged against a Rust server (every
//! CPython 3.8+ found), blocks made by Rust clients and read by CPython under the same names,
//! and the lifetime rule: a block's name is unlinked when the last connection that tracks it
//! closes, even when its client is killed, and at shutdown.
//!
//! Children are spawned by re-running this binary, so it has its own `main` (`harness = false`).

#[macro_use]
mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::python::{interpreters, run_python, server};
use common::{wait_until, ChildGuard};
use manager::shared_memory::{SharedArray, SharedBytes};
use manager::{Address, BaseManager, BlockingManager, Error, Process, Registry};

/// Where Linux keeps POSIX shared memory objects.
fn shm_path(name: &str) -> PathBuf {
    Path::new("/dev/shm").join(name)
}

fn exists(name: &str) -> bool {
    shm_path(name).exists()
}

/// Waits until the block `name` is gone from `/dev/shm`.
fn wait_gone(name: &str, why: &str) {
    wait_until(&format!("{name} to be unlinked ({why})"), || {
        if exists(name) {
            Err(format!("{} still exists", shm_path(name).display()))
        } else {
            Ok(())
        }
    });
}

/// Waits until the server counts `n` open connections.
fn wait_connections(observer: &BlockingManager, n: u64) {
    wait_until(&format!("{n} open connections"), || {
        match observer.debug_info().map(|info| info.connections) {
            Ok(open) if open == n => Ok(()),
            other => Err(format!("{other:?}")),
        }
    });
}

/// Unmodified `SharedMemoryManager` use, then a check of each request it and its server
/// have. The blocks it keeps are taken off this process's resource tracker at the end, so
/// that only the manager server decides when they go (CPython's tracker would unlink them when
/// this interpreter exits). Prints the names the server is left tracking.
const SMM_SCRIPT: &str = r#"
import os, sys
from multiprocessing import resource_tracker, shared_memory
from multiprocessing.managers import SharedMemoryManager, RemoteError, dispatch

host, port, key = sys.argv[1], int(sys.argv[2]), sys.argv[3].encode()
smm = SharedMemoryManager(address=(host, port), authkey=key)
smm.connect()

def request(method, *args):
    with smm._Client(smm._address, authkey=smm._authkey) as conn:
        return dispatch(conn, None, method, args)

sm = smm.SharedMemory(64)
sm.buf[:5] = b"hello"
sl = smm.ShareableList([1, 2.5, "three", b"four", None, True])
assert sl[2] == "three" and sl[3] == b"four" and sl[4] is None and len(sl) == 6
names = request("list_segments")
assert sm.name in names and sl.shm.name in names, names

# Another view by name sees the same bytes.
view = shared_memory.SharedMemory(sm.name)
assert bytes(view.buf[:5]) == b"hello"
view.close()

# release_segment unlinks at once (no other connection tracks it).
temp = smm.SharedMemory(16)
request("release_segment", temp.name)
assert not os.path.exists("/dev/shm/" + temp.name)
assert temp.name not in request("list_segments")
try:
    request("release_segment", temp.name)
    raise SystemExit("releasing an untracked block succeeded")
except RemoteError as e:
    assert "ValueError" in str(e), e
try:
    request("track_segment", "no_such_block_here")
    raise SystemExit("tracking a missing block succeeded")
except RemoteError as e:
    assert "FileNotFoundError" in str(e), e
temp.close()

for shm in (sm, sl.shm, temp):
    resource_tracker.unregister(shm._name, "shared_memory")
sm.close()
sl.shm.close()
print(sm.name, sl.shm.name)
"#;

/// CPython's `SharedMemoryManager` client works unchanged against our server; the blocks it
/// made outlive it (as with CPython's server), are listed to Rust clients, readable from Rust
/// by name, and unlinked at shutdown.
fn cpython_shared_memory_manager_works_unchanged() {
    for python in interpreters() {
        let (server, host, port) = server(Registry::new());
        let out = run_python(&python, SMM_SCRIPT, &host, &port);
        let names: Vec<&str> = out.split_whitespace().collect();
        let [block, list] = names[..] else {
            panic!("{}: unexpected output {out:?}", python.display());
        };
        // CPython's clients are gone; the server still tracks their blocks.
        assert!(exists(block) && exists(list), "{}", python.display());
        let manager = server.connect();
        assert_eq!(manager.segments().unwrap(), [block, list]);
        let bytes = SharedBytes::open(block).unwrap();
        assert_eq!(bytes.len(), 64);
        let mut hello = [0; 5];
        bytes.read(0, &mut hello);
        assert_eq!(&hello, b"hello");
        // Shutdown unlinks what CPython's clients tracked.
        manager.shutdown().unwrap();
        wait_until("the server to stop", || {
            server
                .has_stopped()
                .then_some(())
                .ok_or_else(|| "running".to_string())
        });
        assert!(!exists(block) && !exists(list), "{}", python.display());
    }
}

/// Reads the Rust blocks named on the command line and writes an answer into the first.
const READ_SCRIPT: &str = r#"
import struct, sys
from multiprocessing import resource_tracker, shared_memory

bytes_name, array_name = sys.argv[1], sys.argv[2]
b = shared_memory.SharedMemory(bytes_name)
a = shared_memory.SharedMemory(array_name)
# Opening registers with this process's resource tracker (before 3.13, even without create):
# the blocks are the Rust side's to keep.
resource_tracker.unregister(b._name, "shared_memory")
resource_tracker.unregister(a._name, "shared_memory")
text = bytes(b.buf[:12]).decode()
values = struct.unpack("4d", bytes(a.buf[:32]))
b.buf[100:106] = b"python"
print(text, *values, b.size, a.size)
b.close()
a.close()
"#;

/// A `SharedBytes` and a `SharedArray<f64>` written by Rust are read by CPython under their
/// names, and what CPython writes is read back by Rust.
fn rust_blocks_are_read_by_cpython_by_name() {
    let server = common::InProcessServer::tcp(Registry::new());
    let manager = server.connect();
    let mut bytes = manager.shared_bytes(1024).unwrap();
    assert!(bytes.name().starts_with("psm_") && bytes.name().len() <= 14);
    bytes.write(0, b"hello, world");
    let mut array: SharedArray<f64> = manager.shared_array(4).unwrap();
    array.write(0, &[1.5, -2.0, 3.25, 1e9]);
    assert_eq!(array.get(3), Some(1e9));
    assert_eq!(array.get(4), None);
    for python in interpreters() {
        let output = Command::new(&python)
            .args(["-c", READ_SCRIPT, bytes.name(), array.name()])
            .output()
            .expect("run python");
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(
            output.status.success(),
            "{}: {}",
            python.display(),
            String::from_utf8_lossy(&output.stderr)
        );
        assert_eq!(
            stdout.trim(),
            "hello, world 1.5 -2.0 3.25 1000000000.0 1024 32",
            "{}",
            python.display()
        );
        let mut answer = [0; 6];
        bytes.read(100, &mut answer);
        assert_eq!(&answer, b"python");
        bytes.write(100, b"      ");
        // The interpreter left the names alone.
        assert!(exists(bytes.name()) && exists(array.name()));
    }
    let names = [bytes.name().to_string(), array.name().to_string()];
    drop(manager);
    for name in &names {
        wait_gone(name, "its connection closed");
    }
    // Still mapped here, and still the same memory.
    assert_eq!(&bytes.to_vec()[..12], b"hello, world");
    assert_eq!(array.to_vec(), [1.5, -2.0, 3.25, 1e9]);
}

/// A block lives while any connection that tracks it is open, goes with the last one (or
/// with its last release), and what is left at shutdown goes then. Bad requests get errors and
/// the connection goes on.
fn a_block_goes_with_the_last_connection_that_tracks_it() {
    let server = common::InProcessServer::tcp(Registry::new());
    let observer = server.connect();
    let first = server.connect();
    let second = server.connect();
    let block = first.shared_bytes(4096).unwrap();
    let name = block.name().to_string();
    assert!(exists(&name));
    second.track_segment(&name).unwrap();
    // Tracking twice on one connection is one tracker.
    second.track_segment(&name).unwrap();
    assert_eq!(observer.segments().unwrap(), [name.as_str()]);
    drop(first);
    wait_connections(&observer, 2);
    assert!(exists(&name), "the second connection still tracks it");
    assert_eq!(observer.segments().unwrap(), [name.as_str()]);
    assert!(
        second.release_segment(&name).unwrap(),
        "the last tracker released it"
    );
    assert!(!exists(&name));
    assert!(observer.segments().unwrap().is_empty());

    // Errors, and the connection goes on.
    let refused = |result: Result<(), Error>, what: &str| {
        let error = result.expect_err(what).to_string();
        assert!(!error.is_empty());
    };
    refused(
        second.release_segment(&name).map(drop),
        "release an untracked block",
    );
    for bad in [
        "",
        "../etc",
        "a/b",
        ".",
        "..",
        &"x".repeat(300),
        "no_such_block_here",
    ] {
        refused(second.track_segment(bad), bad);
    }
    refused(second.shared_bytes(0).map(drop), "a block of no bytes");
    refused(
        second.shared_bytes(usize::MAX).map(drop),
        "a block past the largest file",
    );
    refused(
        second.shared_array::<()>(4).map(drop),
        "an array of a zero-sized type",
    );

    // At shutdown, what open connections track goes.
    let kept = second.shared_bytes(10).unwrap();
    let kept_name = kept.name().to_string();
    assert!(exists(&kept_name));
    observer.shutdown().unwrap();
    wait_until("the server to stop", || {
        server
            .has_stopped()
            .then_some(())
            .ok_or_else(|| "running".to_string())
    });
    assert!(!exists(&kept_name));
}

#[manager::entry]
fn registry() -> manager::Result<Registry> {
    Ok(Registry::new())
}

/// A client that makes two blocks, then waits to be killed.
#[manager::entry]
fn hold_blocks(address: Address) -> manager::Result<()> {
    let manager = BaseManager::new(address).connect()?;
    let mut bytes = manager.shared_bytes(1 << 20)?;
    bytes.write(0, b"doomed");
    let mut array: SharedArray<u32> = manager.shared_array(16)?;
    array.set(0, 7);
    std::thread::sleep(Duration::from_secs(600));
    Ok(())
}

/// A Rust client killed with SIGKILL leaves no block behind: the server (a child process, as
/// `start()` runs it) unlinks its blocks when its connection goes.
fn a_killed_rust_client_leaves_no_block_behind() {
    let manager = BaseManager::new(Address::local_tcp())
        .start(registry)
        .expect("cannot start the server");
    let mut child = ChildGuard(Process::spawn(hold_blocks, (manager.address().clone(),)).unwrap());
    let names = wait_until("the child's two blocks", || match manager.segments() {
        Ok(names) if names.len() == 2 => Ok(names),
        other => Err(format!("{other:?}")),
    });
    for name in &names {
        assert!(exists(name), "{name}");
    }
    let seen = SharedBytes::open(&names[0]).unwrap();
    let mut word = [0; 6];
    seen.read(0, &mut word);
    assert_eq!(&word, b"doomed");
    child.0.kill().unwrap();
    for name in &names {
        wait_gone(name, "its client was killed");
    }
    assert!(manager.segments().unwrap().is_empty());
    manager.shutdown().unwrap();
}

fn main() {
    manager::init();
    common::run_tests(vec![
        case!(cpython_shared_memory_manager_works_unchanged),
        case!(rust_blocks_are_read_by_cpython_by_name),
        case!(a_block_goes_with_the_last_connection_that_tracks_it),
        case!(a_killed_rust_client_leaves_no_block_behind),
    ]);
}
