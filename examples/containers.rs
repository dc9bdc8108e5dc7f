//! `containers`: the built-in shared list, dict, Namespace, Value and Array, used by several
//! processes at once, and a list kept inside a dict.
//! Run with `cargo run --example containers`.

use manager::sync::{DictBlockingProxy, ListBlockingProxy, NamespaceBlockingProxy};
use manager::{sync, Address, BaseManager, Process};
use serde::{Deserialize, Serialize};

/// What each worker reports.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Report {
    worker: String,
    squares: Vec<u64>,
}

/// A worker process: squares its numbers, records a report in the dict, and logs to the list
/// kept inside the namespace.
#[manager::entry]
pub fn worker(
    numbers: Vec<u64>,
    reports: DictBlockingProxy<String, Report>,
    settings: NamespaceBlockingProxy,
) -> manager::Result<()> {
    let me = manager::current_process_name().to_string();
    let scale: u64 = settings.get("scale")?;
    let squares = numbers.iter().map(|n| n * n * scale).collect();
    reports.insert(
        &me,
        &Report {
            worker: me.clone(),
            squares,
        },
    )?;
    let log: ListBlockingProxy<String> = settings.get("log")?;
    log.append(&format!("{me} squared {} numbers", numbers.len()))?;
    Ok(())
}

/// Starts the built-in server, runs three workers, and prints what they shared.
pub fn run() -> manager::Result<()> {
    let manager = BaseManager::new(Address::local_tcp()).start(sync::registry)?;

    let reports = manager.dict::<String, Report>(&[])?;
    let settings = manager.namespace()?;
    settings.set("scale", &1u64)?;
    // A list stored inside the namespace: the namespace keeps it alive, and every process that
    // reads the attribute gets a working proxy to the same list.
    settings.set("log", &manager.list::<String>(&[])?)?;

    let mut workers = Vec::new();
    for chunk in [vec![1, 2], vec![3, 4], vec![5, 6]] {
        workers.push(Process::spawn(
            worker,
            (chunk, reports.clone(), settings.clone()),
        )?);
    }
    for mut process in workers {
        let status = process.join()?;
        if !status.success() {
            return Err(manager::Error::Process(format!(
                "a worker failed: {status}"
            )));
        }
    }

    let mut all: Vec<Report> = reports.values()?;
    all.sort_by(|a, b| a.worker.cmp(&b.worker));
    for report in &all {
        println!("{}: {:?}", report.worker, report.squares);
    }
    let log: ListBlockingProxy<String> = settings.get("log")?;
    println!("log entries: {}", log.len()?);

    let total = manager.value(&0u64)?;
    total.set(&all.iter().flat_map(|r| r.squares.iter()).sum())?;
    println!("total: {}", total.get()?);

    let array = manager.array(&[0u8; 4])?;
    array.set(-1, &9)?;
    println!("array: {:?}", array.to_vec()?);
    manager.shutdown()
}

#[allow(dead_code)]
fn main() -> manager::Result<()> {
    manager::init();
    run()
}
