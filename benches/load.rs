//! Load and soak: many concurrent connections making calls for a fixed time against one server,
//! counting every error and watching the server's memory.
//!
//! The server runs in a child process (`BaseManager::start`); the clients in `--processes`
//! child processes (this binary re-run), each opening its share of `--connections` connections
//! on a tokio runtime and running one task per connection. Every task creates its own counter
//! and loops calls on it, checking each answer: `add` (the value must be exactly one more than
//! the last), `echo` of 64 bytes (must come back equal), and every 16th call an `add` on one
//! counter shared by all connections (its final value must equal the number of those calls
//! reported), every 64th a create and drop of a scratch object. Calls start together, once
//! every connection is open (an `Event` set by the parent), and run for `--seconds`.
//!
//! The parent samples the server's VmRSS and its open connections while the clients run, and
//! reports calls/s, call latency, errors (any failed or wrong call; must be 0) and the server's
//! peak RSS (VmHWM). It exits with status 1 if there was any error.
//!
//! ```sh
//! cargo bench --bench load -- --connections 1000 --seconds 30        # the load test
//! cargo bench --bench load -- --connections 1000 --soak-minutes 60   # a soak, by hand
//! cargo bench --bench load -- --connections 200 --processes 4 --seconds 5   # a smoke run
//! ```
//!
//! Run by `cargo test --benches` (without `--bench` or any option), it does a one-second smoke
//! run with 40 connections instead.
//!
//! A soak prints the server's RSS, connections and objects every minute; memory that keeps
//! growing from one minute to the next, with the same connections and objects, is a leak.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use manager::sync::EventProxy;
use manager::{
    Address, BaseManager, BlockingManager, Manager, Process, Proxy as _, Register, Registry,
    ServerConfig, Token, Typeid,
};
use serde::{Deserialize, Serialize};

/// The referent every connection calls.
#[derive(Debug)]
pub struct Counter {
    n: i64,
}

#[manager::shared]
impl Counter {
    /// Adds `by` and returns the new value.
    pub fn add(&mut self, by: i64) -> i64 {
        self.n += by;
        self.n
    }

    /// The value.
    pub fn get(&self) -> i64 {
        self.n
    }

    /// Returns `data`.
    pub fn echo(&self, data: Vec<u8>) -> Vec<u8> {
        data
    }
}

const COUNTER: Typeid<CounterProxy, (i64,)> = Typeid::new("counter");
const TOTAL: Typeid<CounterProxy> = Typeid::new("total");
const TOTAL_BLOCKING: Typeid<CounterBlockingProxy> = Typeid::new("total");

/// The server: a counter per create, one shared counter (`total`), and the built-in types (for
/// the start `Event`). Runs in the server child, which raises its open-files limit first.
#[manager::entry]
fn registry() -> manager::Result<Registry> {
    raise_open_files();
    let mut registry = Registry::new();
    registry.register(Register::factory("counter", |(n,): (i64,)| Counter { n }))?;
    registry.register(Register::shared("total", Counter { n: 0 }))?;
    manager::sync::register(&mut registry)?;
    Ok(registry)
}

/// Raises the soft limit of open files to the hard limit (connections are files).
fn raise_open_files() -> u64 {
    // SAFETY: getrlimit/setrlimit with a valid, initialised struct.
    unsafe {
        let mut limit = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return 0;
        }
        if limit.rlim_cur < limit.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: limit.rlim_max,
                rlim_max: limit.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                return raised.rlim_cur;
            }
        }
        limit.rlim_cur
    }
}

/// Latency buckets: bucket `i` counts calls that took less than `2^(i/4)` microseconds.
const BUCKETS: usize = 128;

fn bucket(latency: Duration) -> usize {
    let us = latency.as_micros().max(1) as f64;
    ((us.log2() * 4.0).ceil() as usize).min(BUCKETS - 1)
}

fn bucket_upper_us(i: usize) -> f64 {
    2f64.powf(i as f64 / 4.0)
}

/// What a client process reports.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Report {
    connections: u64,
    calls: u64,
    total_calls: u64,
    errors: u64,
    first_errors: Vec<String>,
    histogram: Vec<u64>,
    seconds: f64,
}

/// What a client process is told to do.
#[derive(Debug, Serialize, Deserialize)]
struct Orders {
    address: Address,
    connections: u64,
    seconds: f64,
    /// The `Event` that starts the calls.
    start: Token,
    /// Where to write the report (JSON).
    report: PathBuf,
}

/// One client process: opens its connections, waits for the start event, calls for the given
/// time, and writes its report.
#[manager::entry]
fn load_client(orders: Orders) -> manager::Result<()> {
    raise_open_files();
    let Orders {
        address,
        connections,
        seconds,
        start,
        report,
    } = orders;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let result = runtime.block_on(run_client(address, connections, seconds, start));
    let text = serde_json::to_string(&result)
        .map_err(|e| manager::Error::Process(format!("cannot encode the report: {e}")))?;
    std::fs::write(report, text)?;
    Ok(())
}

/// Counts of one connection's calls.
#[derive(Default)]
struct Tally {
    calls: u64,
    total_calls: u64,
    errors: u64,
    first_errors: Vec<String>,
    histogram: Vec<u64>,
}

impl Tally {
    fn error(&mut self, message: String) {
        self.errors += 1;
        if self.first_errors.len() < 5 {
            self.first_errors.push(message);
        }
    }
}

async fn run_client(address: Address, connections: u64, seconds: f64, start: Token) -> Report {
    let key = manager::process::authkey();
    let mut report = Report {
        histogram: vec![0; BUCKETS],
        ..Report::default()
    };
    // Connect, a few dozen at a time.
    let mut managers = Vec::new();
    let mut connecting = tokio::task::JoinSet::new();
    let mut next = 0;
    while managers.len() < connections as usize {
        while next < connections && connecting.len() < 32 {
            let (address, key) = (address.clone(), key.clone());
            connecting.spawn(async move { Manager::connect(&address, &key).await });
            next += 1;
        }
        match connecting.join_next().await {
            Some(Ok(Ok(manager))) => managers.push(manager),
            Some(Ok(Err(e))) => {
                report.errors += 1;
                report.first_errors.push(format!("connect: {e}"));
                return report;
            }
            Some(Err(e)) => {
                report.errors += 1;
                report.first_errors.push(format!("connect task: {e}"));
                return report;
            }
            None => break,
        }
    }
    report.connections = managers.len() as u64;

    // Every connection makes its objects, then all wait for the start event.
    let start_event: EventProxy = match managers[0].attach(&start).await {
        Ok(event) => event,
        Err(e) => {
            report.errors += 1;
            report
                .first_errors
                .push(format!("attach the start event: {e}"));
            return report;
        }
    };
    let ready = Arc::new(AtomicU64::new(0));
    let go = Arc::new(tokio::sync::Notify::new());
    let go_at = Arc::new(std::sync::OnceLock::<Instant>::new());
    let mut tasks = tokio::task::JoinSet::new();
    for manager in managers {
        let (ready, go, go_at) = (ready.clone(), go.clone(), go_at.clone());
        tasks.spawn(async move {
            let mut tally = Tally {
                histogram: vec![0; BUCKETS],
                ..Tally::default()
            };
            let made = async {
                let counter = manager.create(&COUNTER, (0,)).await?;
                let total = manager.create(&TOTAL, ()).await?;
                Ok::<_, manager::Error>((counter, total))
            };
            let (counter, total) = match made.await {
                Ok(made) => made,
                Err(e) => {
                    tally.error(format!("create: {e}"));
                    return tally;
                }
            };
            let notified = go.notified();
            ready.fetch_add(1, Ordering::SeqCst);
            notified.await;
            let deadline = *go_at.get().expect("set before the notification")
                + Duration::from_secs_f64(seconds);
            let payload = vec![7u8; 64];
            let mut expected = 0i64;
            let mut n = 0u64;
            while Instant::now() < deadline {
                n += 1;
                let began = Instant::now();
                let outcome = if n.is_multiple_of(16) {
                    tally.total_calls += 1;
                    total.add(1).await.map(|_| ())
                } else if n % 64 == 1 {
                    match manager.create(&COUNTER, (1,)).await {
                        Ok(scratch) => scratch.get().await.and_then(|v| {
                            if v == 1 {
                                Ok(())
                            } else {
                                Err(manager::Error::Protocol(format!("scratch get = {v}")))
                            }
                        }),
                        Err(e) => Err(e),
                    }
                } else if n.is_multiple_of(4) {
                    match counter.echo(payload.clone()).await {
                        Ok(back) if back == payload => Ok(()),
                        Ok(_) => Err(manager::Error::Protocol("echo changed the bytes".into())),
                        Err(e) => Err(e),
                    }
                } else {
                    expected += 1;
                    match counter.add(1).await {
                        Ok(v) if v == expected => Ok(()),
                        Ok(v) => {
                            expected = v;
                            Err(manager::Error::Protocol(format!("add gave {v}")))
                        }
                        Err(e) => Err(e),
                    }
                };
                tally.histogram[bucket(began.elapsed())] += 1;
                match outcome {
                    Ok(()) => tally.calls += 1,
                    Err(e) => {
                        tally.error(e.to_string());
                        // A failing connection must not spin.
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                }
            }
            tally
        });
    }
    // Every task must be waiting for the go before it is given (a task that failed to make
    // its objects has ended, and counted its error).
    while ready.load(Ordering::SeqCst) < report.connections
        && tasks.len() == report.connections as usize
    {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // One `wait` on the server for the whole process.
    if let Err(e) = start_event.wait().await {
        report.errors += 1;
        report.first_errors.push(format!("wait for the start: {e}"));
    }
    let _ = go_at.set(Instant::now());
    go.notify_waiters();
    let started = Instant::now();
    while let Some(done) = tasks.join_next().await {
        match done {
            Ok(tally) => {
                report.calls += tally.calls;
                report.total_calls += tally.total_calls;
                report.errors += tally.errors;
                for (sum, n) in report.histogram.iter_mut().zip(&tally.histogram) {
                    *sum += n;
                }
                for message in tally.first_errors {
                    if report.first_errors.len() < 20 {
                        report.first_errors.push(message);
                    }
                }
            }
            Err(e) => {
                report.errors += 1;
                report
                    .first_errors
                    .push(format!("a connection's task: {e}"));
            }
        }
    }
    report.seconds = started.elapsed().as_secs_f64();
    report
}

/// Kills and reaps a client process unless it was joined.
struct Client(Option<Process>);

impl Drop for Client {
    fn drop(&mut self) {
        if let Some(process) = &mut self.0 {
            let _ = process.kill();
        }
    }
}

fn proc_status_kib(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with(field))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

struct Options {
    connections: u64,
    processes: u64,
    seconds: f64,
    soak: bool,
}

fn options() -> Options {
    let mut options = Options {
        connections: 1000,
        processes: 10,
        seconds: 30.0,
        soak: false,
    };
    let (mut benching, mut explicit) = (false, false);
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        explicit |= arg.starts_with("--") && arg != "--bench";
        let mut value = |name: &str| -> f64 {
            args.next()
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| panic!("{name} needs a number"))
        };
        match arg.as_str() {
            "--connections" => options.connections = value("--connections") as u64,
            "--processes" => options.processes = value("--processes") as u64,
            "--seconds" => options.seconds = value("--seconds"),
            "--soak-minutes" => {
                options.seconds = value("--soak-minutes") * 60.0;
                options.soak = true;
            }
            // `cargo bench` passes `--bench`; other libtest flags are ignored.
            "--bench" => benching = true,
            _ => {}
        }
    }
    if !benching && !explicit {
        // Run as a test (`cargo test --benches`): a smoke run, not the 30-second load.
        options.connections = 40;
        options.processes = 2;
        options.seconds = 1.0;
    }
    options.processes = options.processes.clamp(1, options.connections.max(1));
    options
}

fn main() {
    manager::init();
    let options = options();
    let open_files = raise_open_files();
    let Options {
        connections,
        processes,
        seconds,
        soak,
    } = options;
    println!(
        "load: {connections} connections ({processes} processes), {seconds} s{}; open-files limit {open_files}",
        if soak { " (soak)" } else { "" }
    );

    let mut config = ServerConfig::default();
    config.max_connections = (connections as usize + 64).max(4096);
    let manager: BlockingManager = BaseManager::new(Address::local_tcp())
        .config(config)
        .start(registry)
        .expect("cannot start the server");
    let server_pid = manager.server_process().expect("a started server").pid();
    let address = manager.address().clone();
    let start = manager.event().expect("cannot make the start event");
    let total = manager.create(&TOTAL_BLOCKING, ()).unwrap();
    let rss_start = proc_status_kib(server_pid, "VmRSS").unwrap_or(0);

    let dir = std::env::temp_dir().join(format!("mgr-load-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut clients = Vec::new();
    for i in 0..processes {
        let share = connections / processes + u64::from(i < connections % processes);
        let report = dir.join(format!("client-{i}.json"));
        let orders = Orders {
            address: address.clone(),
            connections: share,
            seconds,
            start: start.base().token().clone(),
            report: report.clone(),
        };
        let process = Process::spawn(load_client, (orders,)).expect("cannot spawn a client");
        clients.push((Client(Some(process)), report));
    }

    // Wait until every connection is open and has made its objects, then start the calls.
    let opening = Instant::now();
    loop {
        let info = manager.debug_info().expect("debug_info");
        let counters = info
            .objects
            .iter()
            .filter(|o| o.typeid == "counter")
            .count() as u64;
        if info.connections == connections + 1 && counters >= connections {
            println!(
                "{} connections open, {} objects, after {:.1?}; server RSS {:.1} MiB",
                info.connections,
                info.objects.len(),
                opening.elapsed(),
                mib(proc_status_kib(server_pid, "VmRSS").unwrap_or(0))
            );
            break;
        }
        for (client, _) in &mut clients {
            if let Some(process) = &mut client.0 {
                if !process.is_alive() {
                    panic!(
                        "a client process ended before the start: {:?}",
                        process.join()
                    );
                }
            }
        }
        if opening.elapsed() > Duration::from_secs(120) {
            panic!(
                "the connections did not all open within 120 s: {} connections, {counters} counters",
                info.connections
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    start.set().expect("cannot set the start event");
    let started = Instant::now();

    // Sample the server while the clients run.
    // Every connection was open when the calls started.
    let mut peak_connections = connections + 1;
    let mut rss_samples = Vec::new();
    let mut next_minute = 60.0;
    let mut last_print = Instant::now();
    loop {
        let running = clients
            .iter_mut()
            .any(|(c, _)| c.0.as_mut().is_some_and(|p| p.is_alive()));
        if !running {
            break;
        }
        if let Some(rss) = proc_status_kib(server_pid, "VmRSS") {
            rss_samples.push((started.elapsed().as_secs_f64(), rss));
        }
        if last_print.elapsed() >= Duration::from_secs(1) {
            last_print = Instant::now();
            if let Ok(info) = manager.debug_info() {
                peak_connections = peak_connections.max(info.connections);
                let elapsed = started.elapsed().as_secs_f64();
                if soak && elapsed >= next_minute {
                    next_minute += 60.0;
                    println!(
                        "  minute {:>3}: server RSS {:.1} MiB, {} connections, {} objects",
                        (elapsed / 60.0).round(),
                        mib(rss_samples.last().map_or(0, |s| s.1)),
                        info.connections,
                        info.objects.len()
                    );
                }
            }
        }
        if started.elapsed().as_secs_f64() > seconds + 120.0 {
            panic!("the clients did not finish within 120 s of the end");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    // VmHWM is the kernel's high-water mark; the samples may see a moment it has not caught.
    let peak_rss = proc_status_kib(server_pid, "VmHWM")
        .unwrap_or(0)
        .max(rss_samples.iter().map(|s| s.1).max().unwrap_or(0));

    let mut total_report = Report {
        histogram: vec![0; BUCKETS],
        ..Report::default()
    };
    let mut failed = Vec::new();
    for (i, (mut client, path)) in clients.into_iter().enumerate() {
        let mut process = client.0.take().expect("not joined yet");
        let status = process.join().expect("cannot reap a client");
        if !status.success() {
            failed.push(format!("client process {i} exited with {status}"));
        }
        match std::fs::read_to_string(&path)
            .ok()
            .and_then(|text| serde_json::from_str::<Report>(&text).ok())
        {
            Some(report) => {
                total_report.connections += report.connections;
                total_report.calls += report.calls;
                total_report.total_calls += report.total_calls;
                total_report.errors += report.errors;
                total_report.seconds = total_report.seconds.max(report.seconds);
                for (sum, n) in total_report.histogram.iter_mut().zip(&report.histogram) {
                    *sum += n;
                }
                total_report.first_errors.extend(report.first_errors);
            }
            None => failed.push(format!("client process {i} wrote no report")),
        }
    }
    let _ = std::fs::remove_dir_all(&dir);

    let shared_total = total.get().expect("total.get");
    if shared_total != total_report.total_calls as i64 {
        failed.push(format!(
            "the shared counter is {shared_total}, but {} adds to it were reported",
            total_report.total_calls
        ));
    }
    // Every connection's objects are released once the clients are gone: left are the start
    // event and the shared counter.
    let mut left = None;
    for _ in 0..200 {
        match manager.debug_info() {
            Ok(info) if info.connections == 1 && info.objects.len() == 2 => {
                left = None;
                break;
            }
            other => left = Some(other.map(|i| (i.connections, i.objects.len()))),
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    if let Some(left) = left {
        failed.push(format!(
            "the clients' connections and objects were not all released: {left:?}"
        ));
    }
    let rss_end = proc_status_kib(server_pid, "VmRSS").unwrap_or(0);

    let calls = total_report.calls;
    let window = total_report.seconds.max(seconds);
    let percentile = |p: f64| -> f64 {
        let count: u64 = total_report.histogram.iter().sum();
        let target = (count as f64 * p).ceil() as u64;
        let mut seen = 0;
        for (i, n) in total_report.histogram.iter().enumerate() {
            seen += n;
            if seen >= target.max(1) {
                return bucket_upper_us(i);
            }
        }
        f64::NAN
    };
    // The first second (or half of a shorter run) is the warm-up.
    let warm = (seconds / 2.0).min(1.0);
    let steady_peak = rss_samples
        .iter()
        .filter(|(t, _)| *t >= warm && *t <= seconds)
        .map(|s| s.1)
        .max()
        .unwrap_or(0);
    let first_rss = rss_samples
        .iter()
        .find(|(t, _)| *t >= warm)
        .map_or(0, |s| s.1);
    println!(
        "connections: {} opened by {processes} processes; peak open on the server {peak_connections} (with the parent's)",
        total_report.connections
    );
    println!(
        "calls: {calls} in {window:.1} s = {:.0} calls/s; errors: {}",
        calls as f64 / window,
        total_report.errors
    );
    println!(
        "latency (upper bucket bounds): p50 <= {:.0} us, p99 <= {:.0} us, p99.9 <= {:.0} us",
        percentile(0.50),
        percentile(0.99),
        percentile(0.999)
    );
    println!(
        "server RSS: {:.1} MiB before the clients, {:.1} MiB after the warm-up, {:.1} MiB \
         peak while calling, {:.1} MiB peak overall (VmHWM), {:.1} MiB after the clients left",
        mib(rss_start),
        mib(first_rss),
        mib(steady_peak),
        mib(peak_rss),
        mib(rss_end)
    );
    for message in total_report.first_errors.iter().take(20) {
        println!("  error: {message}");
    }
    for message in &failed {
        println!("  failure: {message}");
    }
    drop(total);
    drop(start);
    let _ = manager.shutdown();
    if total_report.errors > 0 || !failed.is_empty() || total_report.connections != connections {
        println!("load: FAILED");
        std::process::exit(1);
    }
    println!("load: ok");
}
