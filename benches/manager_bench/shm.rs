//! The `shm` group: our connection through shared memory against two raw floors measured in
//! the same run, both between two processes with blocking calls: a Unix-socket ping-pong
//! (length-prefixed frames, `read`/`write` on each side), and a futex ping-pong (two words in a
//! shared mapping, each side waking the other with `FUTEX_WAKE` and sleeping in `FUTEX_WAIT`,
//! no spinning). Ours is measured twice, with `ConnectOptions::shared_memory` off (the socket)
//! and on, against one server.
//!
//! Figures: the small-call round trip (p50, p99, max), 16 client processes making sequential
//! blocking calls (calls/s, and p50/p99/max of their calls; the futex floor with a pair and a
//! server thread per client, as ours has a reader thread per connection), and the echo of
//! 1 MiB (MiB/s).

use std::io::{Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use manager::{Address, BaseManager, Process, Typeid};
use serde::{Deserialize, Serialize};

use super::{
    die_with_parent, epoch_micros, instant_at, read_json, write_json, BenchBlockingProxy, Child,
    Figure, Goal, QuickBenchBlockingProxy, Res, Stats, Suite, Unit, WorkDir, X,
};

const BENCH: Typeid<BenchBlockingProxy, (i64,)> = Typeid::new("obj");
const QUICK: Typeid<QuickBenchBlockingProxy> = Typeid::new("quick");

/// The context switches of this process's threads so far (voluntary and not).
fn context_switches() -> u64 {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return 0;
    };
    tasks
        .filter_map(|t| t.ok())
        .filter_map(|t| std::fs::read_to_string(t.path().join("status")).ok())
        .flat_map(|status| {
            status
                .lines()
                .filter(|l| l.contains("ctxt_switches"))
                .filter_map(|l| l.split_whitespace().last()?.parse::<u64>().ok())
                .collect::<Vec<_>>()
        })
        .sum()
}

/// The ways a round trip is made here.
#[derive(Serialize, Deserialize, Clone, Copy, PartialEq, Eq, Debug)]
enum Way {
    RawSocket,
    RawFutex,
    OursSocket,
    OursShm,
    /// A getter declared quick (no hop to a worker thread on the server).
    OursSocketQuick,
    OursShmQuick,
}

const WAYS: [Way; 6] = [
    Way::RawSocket,
    Way::RawFutex,
    Way::OursSocket,
    Way::OursShm,
    Way::OursSocketQuick,
    Way::OursShmQuick,
];

impl Way {
    fn name(self) -> &'static str {
        match self {
            Way::RawSocket => "raw_socket",
            Way::RawFutex => "raw_futex",
            Way::OursSocket => "ours_socket",
            Way::OursShm => "ours_shm",
            Way::OursSocketQuick => "ours_socket_quick",
            Way::OursShmQuick => "ours_shm_quick",
        }
    }
}

/// Where the floors and our server listen.
#[derive(Serialize, Deserialize, Clone, Debug)]
struct Floors {
    socket: PathBuf,
    futex: PathBuf,
    ours: Address,
}

// ---------------------------------------------------------------------------------------------
// The raw floors.

/// A futex word in a shared mapping (not private: the two parties are processes).
fn futex_wait(word: &AtomicU32, seen: u32) {
    // SAFETY: `word` is a valid, aligned u32 for the duration of the call.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAIT,
            seen,
            std::ptr::null::<libc::timespec>(),
        );
    }
}

fn futex_wake(word: &AtomicU32) {
    // SAFETY: as above.
    unsafe {
        libc::syscall(libc::SYS_futex, word.as_ptr(), libc::FUTEX_WAKE, 1);
    }
}

/// How many futex pairs the floor's file holds and its server answers: one for the round
/// trips, one for each client of the load.
const FUTEX_PAIRS: usize = 17;

/// The word of the floor's file that hands out the load's pairs (see [`FutexPair::claim`]).
const NEXT_PAIR: usize = 1023;

/// Two futex words (ping, pong), each on a cache line of its own, in a file both processes
/// map; the file holds [`FUTEX_PAIRS`] of them.
struct FutexPair {
    base: *mut AtomicU32,
    pair: usize,
}

// SAFETY: the mapping is never unmapped, and is only touched through atomics.
unsafe impl Send for FutexPair {}

impl FutexPair {
    fn map(path: &Path, create: bool) -> Res<FutexPair> {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(create)
            .truncate(create)
            .open(path)?;
        file.set_len(4096)?;
        use std::os::fd::AsRawFd;
        // SAFETY: a shared mapping of a 4 KiB file, kept for the life of the process.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                4096,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                file.as_raw_fd(),
                0,
            )
        };
        if base == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error().into());
        }
        Ok(FutexPair {
            base: base.cast(),
            pair: 0,
        })
    }

    /// This mapping's pair `pair` (at most [`FUTEX_PAIRS`]).
    fn with_pair(self, pair: usize) -> FutexPair {
        assert!(pair < FUTEX_PAIRS);
        FutexPair { pair, ..self }
    }

    /// A pair of the load's that no other client has (the first is the round trips').
    fn claim(self) -> Res<FutexPair> {
        let pair = 1 + self.raw_word(NEXT_PAIR).fetch_add(1, Ordering::SeqCst) as usize;
        if pair >= FUTEX_PAIRS {
            return Err("more load clients than futex pairs".into());
        }
        Ok(self.with_pair(pair))
    }

    fn raw_word(&self, i: usize) -> &AtomicU32 {
        assert!(i < 1024);
        // SAFETY: the mapping holds 1024 words and lives until the process exits.
        unsafe { &*self.base.add(i) }
    }

    /// Word `i` (0: ping, 1: pong) of this pair.
    fn word(&self, i: usize) -> &AtomicU32 {
        self.raw_word((self.pair * 2 + i) * 16)
    }

    /// One round trip, as the client.
    fn ping(&self) {
        let (ping, pong) = (self.word(0), self.word(1));
        let n = ping.fetch_add(1, Ordering::SeqCst) + 1;
        futex_wake(ping);
        loop {
            let seen = pong.load(Ordering::SeqCst);
            if seen == n {
                return;
            }
            futex_wait(pong, seen);
        }
    }
}

/// The futex floor's server: a thread per pair answers each ping, until its parent exits.
#[manager::entry]
fn futex_server(path: PathBuf, parent: u32) -> Res<()> {
    die_with_parent(parent);
    let answer = |pair: FutexPair| {
        let (ping, pong) = (pair.word(0), pair.word(1));
        let mut last = ping.load(Ordering::SeqCst);
        loop {
            let seen = ping.load(Ordering::SeqCst);
            if seen == last {
                futex_wait(ping, seen);
                continue;
            }
            last = seen;
            pong.store(seen, Ordering::SeqCst);
            futex_wake(pong);
        }
    };
    for pair in 1..FUTEX_PAIRS {
        let pair = FutexPair::map(&path, false)?.with_pair(pair);
        std::thread::spawn(move || answer(pair));
    }
    answer(FutexPair::map(&path, false)?);
    Ok(())
}

/// The socket floor's server: echoes each length-prefixed frame, a thread per connection.
#[manager::entry]
fn socket_server(path: PathBuf, parent: u32) -> Res<()> {
    die_with_parent(parent);
    let listener = UnixListener::bind(&path)?;
    for stream in listener.incoming() {
        let mut stream = stream?;
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            loop {
                let mut len = [0u8; 4];
                if stream.read_exact(&mut len).is_err() {
                    return;
                }
                let n = u32::from_be_bytes(len) as usize;
                buf.resize(n + 4, 0);
                buf[..4].copy_from_slice(&len);
                if stream.read_exact(&mut buf[4..]).is_err() || stream.write_all(&buf).is_err() {
                    return;
                }
            }
        });
    }
    Ok(())
}

/// A client of the socket floor.
struct SocketClient {
    stream: UnixStream,
    buf: Vec<u8>,
}

impl SocketClient {
    fn connect(path: &Path) -> Res<SocketClient> {
        Ok(SocketClient {
            stream: UnixStream::connect(path)?,
            buf: Vec::new(),
        })
    }

    /// Sends `payload` and reads it back.
    fn echo(&mut self, payload: &[u8]) -> Res<()> {
        self.buf.clear();
        self.buf
            .extend_from_slice(&(payload.len() as u32).to_be_bytes());
        self.buf.extend_from_slice(payload);
        self.stream.write_all(&self.buf)?;
        self.stream.read_exact(&mut self.buf)?;
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// The client jobs, each in a process of its own.

/// What one client process does.
#[derive(Serialize, Deserialize, Clone, Debug)]
enum ShmJob {
    /// Sequential small round trips, the four ways in turn, round by round.
    Latency {
        floors: Floors,
        warmup: u32,
        iters: u32,
        rounds: u32,
    },
    /// Sequential small round trips in each window, the way the window says; latencies kept.
    Load {
        floors: Floors,
        windows: Vec<(Way, u64, u64)>,
    },
    /// Sequential echoes of `size` bytes for `round_ms`, the three socket and shm ways in turn.
    Echo {
        floors: Floors,
        size: usize,
        round_ms: u64,
        rounds: u32,
    },
}

/// A client that can make a small round trip, and an echo, one of the ways.
enum Caller {
    Socket(SocketClient),
    Futex(FutexPair),
    Ours(BenchBlockingProxy),
    Quick(QuickBenchBlockingProxy),
}

impl Caller {
    fn open(way: Way, floors: &Floors) -> Res<Caller> {
        Ok(match way {
            Way::RawSocket => Caller::Socket(SocketClient::connect(&floors.socket)?),
            Way::RawFutex => Caller::Futex(FutexPair::map(&floors.futex, false)?),
            Way::OursSocket | Way::OursShm | Way::OursSocketQuick | Way::OursShmQuick => {
                let memory = matches!(way, Way::OursShm | Way::OursShmQuick);
                let manager = BaseManager::new(floors.ours.clone())
                    .shared_memory(memory)
                    .connect()?;
                if manager.connection().uses_shared_memory() != memory {
                    return Err(format!("{way:?}: shared memory is not as asked").into());
                }
                if matches!(way, Way::OursSocketQuick | Way::OursShmQuick) {
                    return Ok(Caller::Quick(manager.create(&QUICK, ())?));
                }
                let proxy = manager.create(&BENCH, (X,))?;
                Caller::Ours(proxy)
            }
        })
    }

    fn small(&mut self) -> Res<()> {
        match self {
            Caller::Socket(s) => s.echo(&[0; 8]),
            Caller::Futex(f) => {
                f.ping();
                Ok(())
            }
            Caller::Ours(proxy) => {
                let x = proxy.get_x()?;
                if x != X {
                    return Err(format!("get_x gave {x}").into());
                }
                Ok(())
            }
            Caller::Quick(proxy) => {
                let x = proxy.get_x()?;
                if x != X {
                    return Err(format!("get_x gave {x}").into());
                }
                Ok(())
            }
        }
    }

    fn echo(&mut self, data: &mut Vec<u8>) -> Res<()> {
        match self {
            Caller::Socket(s) => s.echo(data),
            Caller::Futex(_) | Caller::Quick(_) => Err("no echo this way".into()),
            Caller::Ours(proxy) => {
                let back = proxy.echo(std::mem::take(data))?;
                *data = back;
                Ok(())
            }
        }
    }
}

#[derive(Serialize, Deserialize, Clone, Debug, Default)]
struct LatencyOut {
    /// Nanoseconds of each call, by way (in `WAYS`' order), by round.
    samples: Vec<Vec<Vec<u64>>>,
    /// The client process's context switches per call, by way.
    switches: Vec<f64>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default)]
struct LoadOut {
    /// Per window: its way, calls, and the nanoseconds of each call.
    windows: Vec<(Way, u64, Vec<u64>)>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default)]
struct EchoOut {
    /// Per way (raw socket, ours socket, ours shm): echoes per second of each round.
    rates: Vec<Vec<f64>>,
}

/// The ways the load is measured, each in windows of its own.
const LOAD_WAYS: [Way; 4] = [Way::RawSocket, Way::RawFutex, Way::OursSocket, Way::OursShm];

const ECHO_WAYS: [Way; 3] = [Way::RawSocket, Way::OursSocket, Way::OursShm];

#[manager::entry]
fn shm_client(job: ShmJob, out: PathBuf, parent: u32) -> Res<()> {
    die_with_parent(parent);
    match job {
        ShmJob::Latency {
            floors,
            warmup,
            iters,
            rounds,
        } => {
            let mut callers = WAYS
                .iter()
                .map(|&way| Caller::open(way, &floors))
                .collect::<Res<Vec<_>>>()?;
            for caller in &mut callers {
                for _ in 0..warmup {
                    caller.small()?;
                }
            }
            let mut samples = vec![Vec::new(); WAYS.len()];
            let mut switches = vec![0u64; WAYS.len()];
            for round in 0..rounds {
                // Every other round in the other order.
                let order: Vec<usize> = match round % 2 {
                    0 => (0..WAYS.len()).collect(),
                    _ => (0..WAYS.len()).rev().collect(),
                };
                for i in order {
                    let mut round_samples = Vec::with_capacity(iters as usize);
                    let before = context_switches();
                    for _ in 0..iters {
                        let began = Instant::now();
                        callers[i].small()?;
                        round_samples.push(began.elapsed().as_nanos() as u64);
                    }
                    switches[i] += context_switches() - before;
                    samples[i].push(round_samples);
                }
            }
            let calls = f64::from(iters) * f64::from(rounds);
            let switches = switches.iter().map(|&n| n as f64 / calls).collect();
            write_json(&out, &LatencyOut { samples, switches })
        }
        ShmJob::Load { floors, windows } => {
            let mut callers: Vec<(Way, Caller)> = Vec::new();
            for way in LOAD_WAYS {
                let caller = match way {
                    // A pair of its own: each client is one of the server's threads.
                    Way::RawFutex => Caller::Futex(FutexPair::map(&floors.futex, false)?.claim()?),
                    way => Caller::open(way, &floors)?,
                };
                callers.push((way, caller));
            }
            let mut result = LoadOut::default();
            for (way, start_us, end_us) in windows {
                let caller = &mut callers
                    .iter_mut()
                    .find(|(w, _)| *w == way)
                    .ok_or("no caller for the window")?
                    .1;
                // Warm up until the window opens.
                let (start, end) = (instant_at(start_us), instant_at(end_us));
                while Instant::now() < start {
                    caller.small()?;
                }
                let mut calls = 0;
                let mut samples = Vec::new();
                loop {
                    let began = Instant::now();
                    if began >= end {
                        break;
                    }
                    caller.small()?;
                    samples.push(began.elapsed().as_nanos() as u64);
                    calls += 1;
                }
                result.windows.push((way, calls, samples));
            }
            write_json(&out, &result)
        }
        ShmJob::Echo {
            floors,
            size,
            round_ms,
            rounds,
        } => {
            let mut callers = ECHO_WAYS
                .iter()
                .map(|&way| Caller::open(way, &floors))
                .collect::<Res<Vec<_>>>()?;
            let mut data = vec![7u8; size];
            for caller in &mut callers {
                for _ in 0..3 {
                    caller.echo(&mut data)?;
                }
            }
            let mut rates = vec![Vec::new(); ECHO_WAYS.len()];
            for round in 0..rounds {
                let order: Vec<usize> = match round % 2 {
                    0 => (0..ECHO_WAYS.len()).collect(),
                    _ => (0..ECHO_WAYS.len()).rev().collect(),
                };
                for i in order {
                    let began = Instant::now();
                    let mut n = 0u64;
                    while began.elapsed() < Duration::from_millis(round_ms) {
                        callers[i].echo(&mut data)?;
                        n += 1;
                    }
                    if data.len() != size {
                        return Err("the echo came back another size".into());
                    }
                    rates[i].push(n as f64 / began.elapsed().as_secs_f64());
                }
            }
            write_json(&out, &EchoOut { rates })
        }
    }
}

fn spawn(work: &WorkDir, job: &ShmJob, n: usize) -> Res<(Child, PathBuf)> {
    let out = work.path().join(format!("shm-client-{n}.json"));
    let process = Process::spawn(shm_client, (job.clone(), out.clone(), std::process::id()))?;
    Ok((
        Child {
            process,
            what: format!("shm client {n}"),
        },
        out,
    ))
}

fn run_jobs<R: serde::de::DeserializeOwned>(
    work: &WorkDir,
    job: &ShmJob,
    count: usize,
    timeout: Duration,
) -> Res<Vec<R>> {
    let children = (0..count)
        .map(|n| spawn(work, job, n))
        .collect::<Res<Vec<_>>>()?;
    let mut results = Vec::new();
    for (child, out) in children {
        child.finish(timeout)?;
        results.push(read_json(&out)?);
        let _ = std::fs::remove_file(&out);
    }
    Ok(results)
}

fn stats_of(samples: Vec<Vec<u64>>) -> Stats {
    Stats::of(&samples)
}

impl Suite<'_> {
    /// The `shm` group (see the module's documentation).
    pub(super) fn shared_memory(&mut self) -> Res<()> {
        eprintln!("shared memory (blocking calls, Unix socket vs shared memory, raw floors)");
        let dir = self.work.path().to_path_buf();
        let floors = Floors {
            socket: dir.join("floor.sock"),
            futex: dir.join("floor.futex"),
            ours: Address::unix(dir.join("ours-shm.sock")),
        };
        // Made (zeroed) here, mapped by both ends.
        let _made = FutexPair::map(&floors.futex, true)?;
        let parent = std::process::id();
        let _socket_server = Child {
            process: Process::spawn(socket_server, (floors.socket.clone(), parent))?,
            what: "the socket floor".into(),
        };
        let _futex_server = Child {
            process: Process::spawn(futex_server, (floors.futex.clone(), parent))?,
            what: "the futex floor".into(),
        };
        let ours = BaseManager::new(floors.ours.clone())
            .config(self.options.server_config())
            .start(super::registry)?;
        let deadline = Instant::now() + Duration::from_secs(30);
        while UnixStream::connect(&floors.socket).is_err() {
            if Instant::now() > deadline {
                return Err("the socket floor did not listen".into());
            }
            std::thread::sleep(Duration::from_millis(5));
        }

        // Round trips.
        let (warmup, iters, rounds) = match self.options.quick {
            true => (500, 3_000, 2),
            false => (3_000, 10_000, 6),
        };
        let job = ShmJob::Latency {
            floors: floors.clone(),
            warmup,
            iters,
            rounds,
        };
        let out: LatencyOut = run_jobs(&self.work, &job, 1, Duration::from_secs(300))?
            .pop()
            .ok_or("no result")?;
        let switches = out.switches.clone();
        let stats: Vec<Stats> = out.samples.into_iter().map(stats_of).collect();
        let socket = stats[0].clone();
        let futex = stats[1].clone();
        for (i, way) in WAYS.iter().enumerate() {
            let s = &stats[i];
            let raw = (i >= 1).then_some(socket.median_us);
            let mut figure = Figure::new(
                &format!("shm.rtt.{}.median", way.name()),
                &format!("round trip, blocking, {}, p50", way.name()),
                Unit::Micros,
                s.median_us,
                raw,
            )
            .note(format!(
                "p99 {:.1} us, max {:.1} us; vs the futex floor {:.2}x; client context \
                 switches per call {:.2}",
                s.p99_us,
                s.max_us,
                s.median_us / futex.median_us,
                switches[i]
            ));
            if *way == Way::OursShm {
                figure = figure.goal(Goal::RatioAtMost(0.6));
            }
            self.push(figure);
            for (tag, v, r) in [
                ("p99", s.p99_us, socket.p99_us),
                ("max", s.max_us, socket.max_us),
            ] {
                self.push(Figure::new(
                    &format!("shm.rtt.{}.{tag}", way.name()),
                    &format!("round trip, blocking, {}, {tag}", way.name()),
                    Unit::Micros,
                    v,
                    (i >= 1).then_some(r),
                ));
            }
        }
        self.detail("shm.rtt", &stats);

        // 16 clients, each a process making sequential calls.
        let clients = 16;
        let window = match self.options.quick {
            true => Duration::from_millis(500),
            false => Duration::from_secs(1),
        };
        let load_rounds = if self.options.quick { 1 } else { 3 };
        let lead = Duration::from_millis(600 + 80 * clients as u64);
        let mut at = epoch_micros() + lead.as_micros() as u64;
        let mut windows = Vec::new();
        for round in 0..load_rounds {
            let mut order = LOAD_WAYS.to_vec();
            if round % 2 == 1 {
                order.reverse();
            }
            for way in order {
                let end = at + window.as_micros() as u64;
                windows.push((way, at, end));
                at = end + 150_000;
            }
        }
        let job = ShmJob::Load {
            floors: floors.clone(),
            windows,
        };
        let outs: Vec<LoadOut> = run_jobs(&self.work, &job, clients, Duration::from_secs(300))?;
        let rate = |way: Way| -> (f64, Stats) {
            let mut per_window: Vec<f64> = Vec::new();
            let mut samples = Vec::new();
            let windows = outs[0].windows.len();
            for w in 0..windows {
                if outs[0].windows[w].0 != way {
                    continue;
                }
                let calls: u64 = outs.iter().map(|o| o.windows[w].1).sum();
                per_window.push(calls as f64 / window.as_secs_f64());
                for o in &outs {
                    samples.push(o.windows[w].2.clone());
                }
            }
            (super::median(&per_window), Stats::of(&samples))
        };
        let (raw_rate, raw_stats) = rate(Way::RawSocket);
        let (futex_rate, futex_stats) = rate(Way::RawFutex);
        let (socket_rate, socket_stats) = rate(Way::OursSocket);
        let (shm_rate, shm_stats) = rate(Way::OursShm);
        for (name, r, s, goal) in [
            ("raw_socket", raw_rate, &raw_stats, None),
            ("raw_futex", futex_rate, &futex_stats, None),
            ("ours_socket", socket_rate, &socket_stats, None),
            (
                "ours_shm",
                shm_rate,
                &shm_stats,
                Some(Goal::RatioAtLeast(1.5)),
            ),
        ] {
            let mut figure = Figure::new(
                &format!("shm.load16.{name}"),
                &format!("16 clients, blocking, {name}"),
                Unit::CallsPerSec,
                r,
                (name != "raw_socket").then_some(raw_rate),
            )
            .note(format!(
                "per call p50 {:.1} us, p99 {:.1} us, max {:.1} us; vs the futex floor {:.2}x",
                s.median_us,
                s.p99_us,
                s.max_us,
                r / futex_rate
            ));
            if let Some(goal) = goal {
                figure = figure.goal(goal);
            }
            self.push(figure);
            for (tag, v, raw) in [
                ("p50", s.median_us, raw_stats.median_us),
                ("p99", s.p99_us, raw_stats.p99_us),
                ("max", s.max_us, raw_stats.max_us),
            ] {
                self.push(Figure::new(
                    &format!("shm.load16.{name}.{tag}"),
                    &format!("16 clients, blocking, {name}, per call {tag}"),
                    Unit::Micros,
                    v,
                    (name != "raw_socket").then_some(raw),
                ));
            }
        }

        // Echo of 1 MiB.
        let size = 1 << 20;
        let job = ShmJob::Echo {
            floors: floors.clone(),
            size,
            round_ms: if self.options.quick { 300 } else { 500 },
            rounds: if self.options.quick { 2 } else { 6 },
        };
        let out: EchoOut = run_jobs(&self.work, &job, 1, Duration::from_secs(300))?
            .pop()
            .ok_or("no result")?;
        let mib = |rates: &[f64]| super::median(rates) * size as f64 / (1 << 20) as f64 * 2.0;
        let raw = mib(&out.rates[0]);
        for (i, name) in ["raw_socket", "ours_socket", "ours_shm"].iter().enumerate() {
            let mut figure = Figure::new(
                &format!("shm.echo_1mib.{name}"),
                &format!("echo of 1 MiB, blocking, {name}"),
                Unit::MibPerSec,
                mib(&out.rates[i]),
                (i > 0).then_some(raw),
            );
            if i == 2 {
                figure = figure.goal(Goal::RatioAtLeast(5.0));
            }
            self.push(figure);
        }
        ours.shutdown()?;
        Ok(())
    }
}
