//! `locks`: a `Lock` that makes a read-modify-write across processes safe, a `Semaphore` that
//! caps how many workers run at once, and a lock released by the server when its holder is
//! killed. Run with `cargo run --example locks`.

use manager::sync::{LockBlockingProxy, SemaphoreBlockingProxy, ValueBlockingProxy};
use manager::{sync, Address, BaseManager, Process};

/// How many worker processes take part.
const WORKERS: usize = 4;
/// How many increments each worker makes.
const ROUNDS: u64 = 25;

/// A worker: increments the shared counter under the lock, holding a semaphore permit.
#[manager::entry]
pub fn worker(
    lock: LockBlockingProxy,
    slots: SemaphoreBlockingProxy,
    counter: ValueBlockingProxy<u64>,
) -> manager::Result<()> {
    let _slot = slots.lock()?; // at most two workers inside at once
    for _ in 0..ROUNDS {
        let _guard = lock.lock()?; // released when the guard drops
        let n = counter.get()?;
        counter.set(&(n + 1))?;
    }
    // The permit's release, sent without waiting when the guard drops, is applied before this
    // process exits: a spawned process flushes its connections when its function returns.
    Ok(())
}

/// Takes the lock and then waits to be killed.
#[manager::entry]
pub fn holder(lock: LockBlockingProxy, ready: ValueBlockingProxy<bool>) -> manager::Result<()> {
    lock.acquire()?;
    ready.set(&true)?;
    std::thread::sleep(std::time::Duration::from_secs(600));
    Ok(())
}

/// Starts the server, runs the workers, and shows a killed holder's lock come back.
pub fn run() -> manager::Result<()> {
    let manager = BaseManager::new(Address::local_tcp()).start(sync::registry)?;
    let lock = manager.lock()?;
    let slots = manager.semaphore(2)?;
    let counter = manager.value(&0u64)?;

    let mut workers = (0..WORKERS)
        .map(|_| Process::spawn(worker, (lock.clone(), slots.clone(), counter.clone())))
        .collect::<manager::Result<Vec<_>>>()?;
    for process in &mut workers {
        let status = process.join()?;
        if !status.success() {
            return Err(manager::Error::Process(format!(
                "a worker failed: {status}"
            )));
        }
    }
    println!(
        "counter: {} (expected {})",
        counter.get()?,
        WORKERS as u64 * ROUNDS
    );
    println!("semaphore value back to: {}", slots.get_value()?);

    // A process that dies holding the lock (Python's stays locked forever).
    let ready = manager.value(&false)?;
    let mut victim = Process::spawn(holder, (lock.clone(), ready.clone()))?;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !ready.get()? {
        if !victim.is_alive() || std::time::Instant::now() > deadline {
            return Err(manager::Error::Process(
                "the holder never took the lock".into(),
            ));
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    println!("locked while the holder lives: {}", lock.locked()?);
    victim.kill()?;
    // The server releases it when the holder's connection closes.
    lock.acquire()?;
    println!("acquired after the holder was killed: true");
    lock.release()?;
    manager.shutdown()
}

#[allow(dead_code)]
fn main() -> manager::Result<()> {
    manager::init();
    run()
}
