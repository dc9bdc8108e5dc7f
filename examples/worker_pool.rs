//! `worker_pool`: a producer fills a shared `JoinableQueue`, worker processes consume it and
//! write their results into a shared dict, and the main process waits with `join()`.
//! Run with `cargo run --example worker_pool`.

use manager::sync::{DictBlockingProxy, JoinableQueueBlockingProxy};
use manager::{sync, Address, BaseManager, Process};
use serde::{Deserialize, Serialize};

/// How many worker processes consume the queue.
const WORKERS: usize = 4;
/// How many jobs the producer puts.
const JOBS: u64 = 40;

/// One unit of work.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Job {
    id: u64,
    n: u64,
}

/// What a worker made of a job.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Done {
    worker: String,
    collatz_steps: u64,
}

fn collatz_steps(mut n: u64) -> u64 {
    let mut steps = 0;
    while n > 1 {
        n = if n.is_multiple_of(2) {
            n / 2
        } else {
            3 * n + 1
        };
        steps += 1;
    }
    steps
}

/// A worker process: takes jobs until it gets `None`, marking each one done.
#[manager::entry]
pub fn worker(
    jobs: JoinableQueueBlockingProxy<Option<Job>>,
    results: DictBlockingProxy<u64, Done>,
) -> manager::Result<()> {
    let me = manager::current_process_name().to_string();
    loop {
        let job = jobs.get()?;
        let Some(job) = job else {
            jobs.task_done()?;
            return Ok(());
        };
        let done = Done {
            worker: me.clone(),
            collatz_steps: collatz_steps(job.n),
        };
        results.insert(&job.id, &done)?;
        jobs.task_done()?;
    }
}

/// Starts the server, the workers and the producer, and prints a summary.
pub fn run() -> manager::Result<()> {
    let manager = BaseManager::new(Address::local_tcp()).start(sync::registry)?;
    let jobs = manager.joinable_queue::<Option<Job>>(8)?;
    let results = manager.dict::<u64, Done>(&[])?;

    let mut workers = (0..WORKERS)
        .map(|_| Process::spawn(worker, (jobs.clone(), results.clone())))
        .collect::<manager::Result<Vec<_>>>()?;

    // The producer: the queue holds at most 8 jobs, so `put` waits while the workers catch up.
    for id in 0..JOBS {
        jobs.put(&Some(Job { id, n: 27 + id }))?;
    }
    for _ in 0..WORKERS {
        jobs.put(&None)?;
    }
    jobs.join()?;
    println!("all {JOBS} jobs done (the queue's join() returned)");

    for process in &mut workers {
        let status = process.join()?;
        if !status.success() {
            return Err(manager::Error::Process(format!(
                "a worker failed: {status}"
            )));
        }
    }

    let done = results.items()?;
    let mut per_worker = std::collections::BTreeMap::<String, usize>::new();
    for (_, result) in &done {
        *per_worker.entry(result.worker.clone()).or_default() += 1;
    }
    let steps: u64 = done.iter().map(|(_, d)| d.collatz_steps).sum();
    println!(
        "results: {} entries, {} Collatz steps in all",
        done.len(),
        steps
    );
    println!("workers that took part: {}", per_worker.len());
    manager.shutdown()
}

#[allow(dead_code)]
fn main() -> manager::Result<()> {
    manager::init();
    run()
}
