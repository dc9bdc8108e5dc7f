//! `shared_memory`: a block of `f64`s made through the manager, filled by worker processes,
//! read by CPython under the same name.
//!
//! The server makes the block and tracks it for this process's connection: its name goes when
//! that connection closes (here, at the end of `main`), even if this process is killed. Run
//! with `cargo run --example shared_memory` (the CPython step runs when `python3` is found).

use std::process::Command;

use manager::shared_memory::SharedArray;
use manager::{Address, BaseManager, Process, Registry};

#[manager::entry]
fn registry() -> manager::Result<Registry> {
    Ok(Registry::new())
}

/// A worker: opens the block by name and writes the squares of its half.
#[manager::entry]
fn fill(name: String, start: usize, end: usize) -> manager::Result<()> {
    let mut squares = SharedArray::<f64>::open(&name)?;
    for i in start..end {
        squares.set(i, (i * i) as f64);
    }
    Ok(())
}

const READ: &str = r#"
import struct, sys
from multiprocessing import resource_tracker, shared_memory
block = shared_memory.SharedMemory(sys.argv[1])
resource_tracker.unregister(block._name, "shared_memory")  # the manager's to unlink
values = struct.unpack("10d", bytes(block.buf[:80]))
print("CPython read", block.name, "sum", sum(values))
block.close()
"#;

fn main() -> manager::Result<()> {
    manager::init();
    let manager = BaseManager::new(Address::local_tcp()).start(registry)?;
    let squares: SharedArray<f64> = manager.shared_array(10)?;
    let name = squares.name().to_string();
    let mut workers = vec![
        Process::spawn(fill, (name.clone(), 0, 5))?,
        Process::spawn(fill, (name.clone(), 5, 10))?,
    ];
    for worker in &mut workers {
        worker.join()?;
    }
    println!("squares: {:?}", squares.to_vec());
    println!(
        "tracked by the server: {}",
        manager.segments()? == [name.clone()]
    );
    let python = std::env::var("MANAGER_PYTHON").unwrap_or_else(|_| "python3".into());
    match Command::new(python).args(["-c", READ, &name]).output() {
        Ok(out) if out.status.success() => print!("{}", String::from_utf8_lossy(&out.stdout)),
        _ => println!("(no python3: the CPython step is skipped)"),
    }
    manager.shutdown()?;
    println!(
        "after shutdown, /dev/shm/{name} exists: {}",
        std::path::Path::new("/dev/shm").join(&name).exists()
    );
    Ok(())
}
