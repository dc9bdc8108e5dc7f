//! `job_board`: a shared job board whose worker processes subscribe to new jobs (events)
//! instead of polling for them. The first worker to claim a job gets it. Run with
//! `cargo run --example job_board`.

use manager::events::{Event, Events};
use manager::{Address, BaseManager, Process, Register, Registry, Stream, Typeid};
use serde::{Deserialize, Serialize};

/// How many worker processes subscribe.
const WORKERS: usize = 3;
/// How many jobs are posted.
const JOBS: u64 = 30;

/// A job, as the board announces it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Job {
    id: u64,
    /// What to do; `None` tells the workers that no more jobs come.
    task: Option<String>,
}

/// The board: posted jobs, who claimed which, and the event of each new job.
#[derive(Debug, Default)]
pub struct JobBoard {
    posted: u64,
    claimed: std::collections::BTreeMap<u64, String>,
    new_jobs: Events<Job>,
}

#[manager::shared]
impl JobBoard {
    /// Posts a job (`None`: the end of the work); every subscriber hears of it. Returns its id.
    pub fn post(&mut self, task: Option<String>) -> u64 {
        self.posted += 1;
        self.new_jobs.emit(Job {
            id: self.posted,
            task,
        });
        self.posted
    }

    /// The jobs posted from now on, as they are posted (a subscription).
    pub fn jobs(&self) -> Stream<Event<Job>> {
        self.new_jobs.subscribe()
    }

    /// How many subscriptions are open.
    pub fn subscribers(&self) -> usize {
        self.new_jobs.subscribers()
    }

    /// Claims job `id` for `worker`: true for the first claim, false once it is taken.
    pub fn claim(&mut self, id: u64, worker: String) -> bool {
        match self.claimed.entry(id) {
            std::collections::btree_map::Entry::Vacant(free) => {
                free.insert(worker);
                true
            }
            std::collections::btree_map::Entry::Occupied(_) => false,
        }
    }

    /// Who claimed each job.
    pub fn claims(&self) -> Vec<(u64, String)> {
        self.claimed
            .iter()
            .map(|(id, worker)| (*id, worker.clone()))
            .collect()
    }
}

const BOARD: Typeid<JobBoardBlockingProxy> = Typeid::new("board");

/// The server's registry: one shared board.
#[manager::entry]
fn registry() -> manager::Result<Registry> {
    let mut registry = Registry::new();
    registry.register(Register::shared("board", JobBoard::default()))?;
    Ok(registry)
}

/// A worker: subscribes, then claims every job it hears of until the end of the work.
#[manager::entry]
pub fn worker(board: JobBoardBlockingProxy) -> manager::Result<()> {
    let me = manager::current_process_name().to_string();
    for event in board.jobs()? {
        match event? {
            Event::Emitted(Job { task: None, .. }) => return Ok(()),
            Event::Emitted(Job { id, task: Some(_) }) => {
                board.claim(id, me.clone())?;
            }
            Event::Missed(n) => eprintln!("{me} fell behind and missed {n} jobs"),
        }
    }
    Ok(())
}

/// Starts the server and the workers, posts the jobs, and prints who took them.
pub fn run() -> manager::Result<()> {
    let manager = BaseManager::new(Address::local_tcp()).start(registry)?;
    let board = manager.create(&BOARD, ())?;
    let mut workers = (0..WORKERS)
        .map(|_| Process::spawn(worker, (board.clone(),)))
        .collect::<manager::Result<Vec<_>>>()?;
    // Jobs posted before a worker subscribed would pass it by: wait for every subscription.
    while board.subscribers()? < WORKERS {
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    println!("{WORKERS} workers subscribed");
    for n in 0..JOBS {
        board.post(Some(format!("job {n}")))?;
    }
    board.post(None)?;
    for process in &mut workers {
        let status = process.join()?;
        if !status.success() {
            return Err(manager::Error::Process(format!(
                "a worker failed: {status}"
            )));
        }
    }
    let claims = board.claims()?;
    let workers_that_worked: std::collections::BTreeSet<_> =
        claims.iter().map(|(_, worker)| worker.clone()).collect();
    println!("{} of {JOBS} jobs claimed, each once", claims.len());
    println!(
        "claimed by {} of the {WORKERS} workers",
        workers_that_worked.len()
    );
    println!(
        "subscriptions open after the workers left: {}",
        board.subscribers()?
    );
    manager.shutdown()
}

fn main() -> manager::Result<()> {
    manager::init();
    run()
}
