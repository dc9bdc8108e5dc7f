//! `events`: an `Event` that starts every worker process at once, and a `Barrier` that holds
//! them until all have arrived. Run with `cargo run --example events`.

use std::time::Duration;

use manager::sync::{BarrierBlockingProxy, EventBlockingProxy, ListBlockingProxy};
use manager::{sync, Address, BaseManager, Process};

/// How many worker processes take part.
const WORKERS: u64 = 3;

/// A worker: waits for the start signal, does its part, then meets the others at the barrier.
#[manager::entry]
pub fn worker(
    start: EventBlockingProxy,
    finish: BarrierBlockingProxy,
    log: ListBlockingProxy<String>,
) -> manager::Result<()> {
    start.wait()?;
    log.append(&format!("{} started", manager::current_process_name()))?;
    // Every party gets a distinct index; the last to arrive releases them all.
    let index = finish.wait()?;
    log.append(&format!("index {index}"))?;
    Ok(())
}

/// Starts the server and the workers, signals the start, and waits for them.
pub fn run() -> manager::Result<()> {
    let manager = BaseManager::new(Address::local_tcp()).start(sync::registry)?;
    let start = manager.event()?;
    let finish = manager.barrier(WORKERS + 1, Some(Duration::from_secs(60)))?;
    let log = manager.list::<String>(&[])?;

    let mut workers = (0..WORKERS)
        .map(|_| Process::spawn(worker, (start.clone(), finish.clone(), log.clone())))
        .collect::<manager::Result<Vec<_>>>()?;

    // Nobody has started before the signal.
    println!("before the signal: {} log entries", log.len()?);
    start.set()?;
    // The main process is a party too: the barrier opens once every worker has arrived.
    let mine = finish.wait()?;
    for process in &mut workers {
        let status = process.join()?;
        if !status.success() {
            return Err(manager::Error::Process(format!(
                "a worker failed: {status}"
            )));
        }
    }
    let entries = log.to_vec()?;
    let started = entries.iter().filter(|e| e.ends_with("started")).count();
    println!("workers started: {started}");
    let mut indices: Vec<u64> = entries
        .iter()
        .filter_map(|e| e.strip_prefix("index ")?.parse().ok())
        .chain([mine])
        .collect();
    indices.sort_unstable();
    println!("barrier indices: {indices:?}");
    println!("barrier broken: {}", finish.broken()?);
    manager.shutdown()
}

#[allow(dead_code)]
fn main() -> manager::Result<()> {
    manager::init();
    run()
}
