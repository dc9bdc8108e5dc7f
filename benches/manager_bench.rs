//! The benchmark suite of `manager`, measured against a raw baseline in the same run.
//!
//! The baseline is the floor that sockets allow: a tokio server reading 4-byte big-endian
//! length-prefixed postcard frames (tokio-util's length-delimited codec) and answering each one,
//! and a tokio client doing request/response on the same kinds of socket (TCP on 127.0.0.1 with
//! `TCP_NODELAY`, and a Unix socket). Every figure of the framework is printed with its ratio to
//! that baseline, measured by the same client process where it can be (the two are interleaved
//! round by round, so that noise from the rest of the machine falls on both alike).
//!
//! Servers and clients run in separate processes: this binary spawns itself, with
//! `#[manager::entry]` functions as the targets (the raw server and every client) and
//! `BaseManager::start` for the framework's servers. Clients report their figures through a
//! JSON file in a private temporary directory.
//!
//! ```sh
//! cargo bench --bench manager_bench                      # the full run (a few minutes)
//! cargo bench --bench manager_bench -- --quick           # a smoke run of about 30 s
//! cargo bench --bench manager_bench -- --json out.json   # write the figures there
//! cargo bench --bench manager_bench -- --python          # also run benches/python_peer.py
//! ```

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures::StreamExt;
use manager::{
    Address, BaseManager, BlockingManager, Process, Register, Registry, ServerConfig, Typeid,
};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_bytes::ByteBuf;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::{tcp, unix};
use tokio::runtime::Runtime;
use tokio_util::codec::{FramedRead, LengthDelimitedCodec};

#[path = "manager_bench/costs.rs"]
mod costs;
#[path = "manager_bench/profile.rs"]
mod profile;
#[path = "manager_bench/shm.rs"]
mod shm;

type BoxError = Box<dyn std::error::Error + Send + Sync>;
type Res<T> = Result<T, BoxError>;

// ---------------------------------------------------------------------------------------------
// The shared type of every measurement of the framework.

/// The referent: one integer. `get_x` is the round trip, `echo` moves bytes both ways, `slow`
/// keeps a server thread busy.
#[derive(Debug)]
pub struct Bench {
    x: i64,
}

#[manager::shared]
impl Bench {
    /// Returns `x`.
    pub fn get_x(&self) -> i64 {
        self.x
    }

    /// Returns its argument.
    pub fn echo(&self, data: Vec<u8>) -> Vec<u8> {
        data
    }

    /// Sleeps `ms` milliseconds on the thread that runs it (a plain method that takes long),
    /// but not past `until_us` microseconds since the Unix epoch (0: no limit), and returns
    /// the microseconds it slept. The limit bounds an isolation phase even where calls queue
    /// up behind each other: once a phase is over, every slow call still queued returns at
    /// once.
    pub fn slow(&self, ms: u64, until_us: u64) -> u64 {
        let mut sleep_us = ms.saturating_mul(1000);
        if until_us != 0 {
            sleep_us = sleep_us.min(until_us.saturating_sub(epoch_micros()));
        }
        let began = Instant::now();
        std::thread::sleep(Duration::from_micros(sleep_us));
        began.elapsed().as_micros() as u64
    }
}

/// `Bench`'s getter again, declared quick: the server runs it where it reads the request, with
/// no hand-off to a worker thread (`#[shared(quick = [...])]`), the opt-in fast path.
#[derive(Debug)]
pub struct QuickBench {
    x: i64,
}

#[manager::shared(quick = [get_x])]
impl QuickBench {
    /// Returns `x`.
    pub fn get_x(&self) -> i64 {
        self.x
    }
}

/// What `get_x` of the shared instance (and of the raw server) answers.
const X: i64 = 42;

/// The framework's server: one shared `Bench`, another one for the slow calls of the isolation
/// figures, and a factory of them.
#[manager::entry]
fn registry() -> manager::Result<Registry> {
    let mut registry = Registry::new();
    registry.register(Register::shared("shared", Bench { x: X }))?;
    registry.register(Register::shared("slow", Bench { x: X }))?;
    registry.register(Register::shared("quick", QuickBench { x: X }))?;
    registry.register(Register::factory("obj", |(x,): (i64,)| Bench { x }))?;
    Ok(registry)
}

const SHARED: Typeid<BenchProxy> = Typeid::new("shared");
const SHARED_BLOCKING: Typeid<BenchBlockingProxy> = Typeid::new("shared");
const OBJ: Typeid<BenchProxy, (i64,)> = Typeid::new("obj");
const OBJ_BLOCKING: Typeid<BenchBlockingProxy, (i64,)> = Typeid::new("obj");
const QUICK: Typeid<QuickBenchProxy> = Typeid::new("quick");
/// Object A of the isolation figures (the slow calls); object B, the getter's, is `SHARED`.
const SLOW: Typeid<BenchProxy> = Typeid::new("slow");

// ---------------------------------------------------------------------------------------------
// The raw baseline: length-prefixed postcard frames over tokio, nothing else.

#[derive(Serialize, Deserialize)]
enum RawRequest {
    GetX,
    Echo(ByteBuf),
}

#[derive(Serialize, Deserialize)]
enum RawReply {
    X(i64),
    Echo(ByteBuf),
}

const MAX_RAW_FRAME: usize = 64 << 20;

fn io_error(e: impl std::fmt::Display) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e.to_string())
}

/// Splits a byte stream into frames: tokio-util's length-delimited codec, as the framework.
fn raw_frames<R: AsyncRead>(reader: R) -> FramedRead<R, LengthDelimitedCodec> {
    let codec = LengthDelimitedCodec::builder()
        .length_field_length(4)
        .big_endian()
        .max_frame_length(MAX_RAW_FRAME)
        .new_codec();
    FramedRead::new(reader, codec)
}

/// Encodes `value` as one frame in `buf` (whose allocation is kept) and writes it.
async fn write_frame<W, T>(writer: &mut W, value: &T, buf: &mut Vec<u8>) -> io::Result<()>
where
    W: AsyncWrite + Unpin,
    T: Serialize,
{
    buf.clear();
    buf.extend_from_slice(&[0; 4]);
    // `to_io` copies each slice (a block of bytes in one piece), as the framework's encoder.
    postcard::to_io(value, &mut *buf).map_err(io_error)?;
    let len = (buf.len() - 4) as u32;
    buf[..4].copy_from_slice(&len.to_be_bytes());
    writer.write_all(buf).await
}

/// One connection of the raw server: decode each request, answer it, in order.
async fn serve_raw<R, W>(reader: R, mut writer: W)
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut frames = raw_frames(reader);
    let mut reply = Vec::new();
    while let Some(Ok(frame)) = frames.next().await {
        let answer = match postcard::from_bytes::<RawRequest>(&frame) {
            Ok(RawRequest::GetX) => RawReply::X(X),
            Ok(RawRequest::Echo(data)) => RawReply::Echo(data),
            Err(_) => return,
        };
        if write_frame(&mut writer, &answer, &mut reply).await.is_err() {
            return;
        }
    }
}

/// Where the raw server listens; it writes this to `raw.ready` in the work directory.
#[derive(Serialize, Deserialize)]
struct RawReady {
    tcp: Address,
    unix: Address,
}

/// The raw server: one process, a TCP listener and a Unix listener, a task per connection, on
/// tokio's default multi-threaded runtime (as the framework's server).
#[manager::entry]
fn raw_server(dir: PathBuf, parent: u32) -> Res<()> {
    die_with_parent(parent);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let path = dir.join("raw.sock");
        let unix = tokio::net::UnixListener::bind(&path)?;
        let ready = RawReady {
            tcp: Address::from(tcp.local_addr()?),
            unix: Address::unix(path),
        };
        write_json(&dir.join("raw.ready"), &ready)?;
        loop {
            tokio::select! {
                accepted = tcp.accept() => {
                    if let Ok((stream, _)) = accepted {
                        stream.set_nodelay(true)?;
                        let (reader, writer) = stream.into_split();
                        tokio::spawn(serve_raw(reader, writer));
                    }
                }
                accepted = unix.accept() => {
                    if let Ok((stream, _)) = accepted {
                        let (reader, writer) = stream.into_split();
                        tokio::spawn(serve_raw(reader, writer));
                    }
                }
            }
        }
    })
}

/// A client of the raw server: frames read from one half of the socket, written to the other.
struct RawStream<R, W> {
    frames: FramedRead<R, LengthDelimitedCodec>,
    writer: W,
    write_buf: Vec<u8>,
}

impl<R: AsyncRead + Unpin, W: AsyncWrite + Unpin> RawStream<R, W> {
    fn new(reader: R, writer: W) -> Self {
        RawStream {
            frames: raw_frames(reader),
            writer,
            write_buf: Vec::new(),
        }
    }

    async fn call(&mut self, request: &RawRequest) -> io::Result<RawReply> {
        write_frame(&mut self.writer, request, &mut self.write_buf).await?;
        match self.frames.next().await {
            Some(frame) => postcard::from_bytes(&frame?).map_err(io_error),
            None => Err(io::ErrorKind::UnexpectedEof.into()),
        }
    }
}

enum RawClient {
    Tcp(RawStream<tcp::OwnedReadHalf, tcp::OwnedWriteHalf>),
    Unix(RawStream<unix::OwnedReadHalf, unix::OwnedWriteHalf>),
}

impl RawClient {
    async fn connect(address: &Address) -> Res<RawClient> {
        Ok(match address {
            Address::Tcp(host_port) => {
                let stream = tokio::net::TcpStream::connect(host_port.as_str()).await?;
                stream.set_nodelay(true)?;
                let (reader, writer) = stream.into_split();
                RawClient::Tcp(RawStream::new(reader, writer))
            }
            Address::Unix(path) => {
                let (reader, writer) = tokio::net::UnixStream::connect(path).await?.into_split();
                RawClient::Unix(RawStream::new(reader, writer))
            }
        })
    }

    async fn call(&mut self, request: &RawRequest) -> io::Result<RawReply> {
        match self {
            RawClient::Tcp(stream) => stream.call(request).await,
            RawClient::Unix(stream) => stream.call(request).await,
        }
    }

    async fn get_x(&mut self) -> Res<i64> {
        match self.call(&RawRequest::GetX).await? {
            RawReply::X(x) => Ok(x),
            RawReply::Echo(_) => Err("the raw server answered get_x with echo".into()),
        }
    }

    async fn echo(&mut self, data: Vec<u8>) -> Res<Vec<u8>> {
        match self.call(&RawRequest::Echo(ByteBuf::from(data))).await? {
            RawReply::Echo(data) => Ok(data.into_vec()),
            RawReply::X(_) => Err("the raw server answered echo with get_x".into()),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Clients: each job runs in a process of its own and writes its result as JSON.

#[derive(Serialize, Deserialize, Clone, Copy, PartialEq, Eq, Debug)]
enum Target {
    Raw,
    Ours,
    /// Ours, calling the getter declared quick.
    Quick,
}

#[derive(Serialize, Deserialize, Clone, Copy, PartialEq, Eq, Debug)]
enum ProxyKind {
    Async,
    Blocking,
}

/// A measuring window of a throughput job, in microseconds since the Unix epoch (so that every
/// client process of a run starts and stops together).
#[derive(Serialize, Deserialize, Clone, Debug)]
struct Window {
    target: Target,
    start_us: u64,
    end_us: u64,
}

/// A span of time, in microseconds since the Unix epoch.
#[derive(Serialize, Deserialize, Clone, Copy, Debug)]
struct Span {
    start_us: u64,
    end_us: u64,
}

impl Span {
    fn seconds(&self) -> f64 {
        self.end_us.saturating_sub(self.start_us) as f64 / 1e6
    }
}

/// One loaded phase of the isolation figures.
#[derive(Serialize, Deserialize, Clone, Copy, Debug)]
struct SlowPhase {
    /// How many slow calls run at once (each one made again as soon as it returns).
    slow: u32,
    /// The slow calls are made from its start; none sleeps past its end.
    load: Span,
    /// Where the getter is measured: inside `load`, once the slow calls have started, and
    /// ending `ISOLATION_TAIL` before it (a getter call that is still waiting at the end of
    /// `load` waited at least that long: it is counted as cut short).
    measure: Span,
}

/// The isolation figures' schedule, shared by every process of a run: `idle[0]`, `phases[0]`,
/// `idle[1]`, `phases[1]`, ..., `idle[n]`, so that each phase lies between two idle windows.
#[derive(Serialize, Deserialize, Clone, Debug)]
struct IsolationSchedule {
    idle: Vec<Span>,
    phases: Vec<SlowPhase>,
    /// How long each slow call sleeps.
    slow_ms: u64,
}

impl IsolationSchedule {
    fn max_slow(&self) -> u32 {
        self.phases.iter().map(|p| p.slow).max().unwrap_or(0)
    }

    fn end_us(&self) -> u64 {
        self.idle.last().map_or(0, |w| w.end_us)
    }
}

#[derive(Serialize, Deserialize, Clone, Debug)]
enum Job {
    /// Sequential `get_x` round trips, raw and ours alternating round by round.
    Latency {
        raw: Address,
        ours: Address,
        proxy: ProxyKind,
        warmup: u32,
        iters: u32,
        rounds: u32,
        /// Whether the client listens to the manager's spans (a `tracing` subscriber).
        #[serde(default)]
        traced: bool,
    },
    /// `tasks` concurrent loops of `get_x` on one connection, counted within each window.
    Throughput {
        raw: Address,
        ours: Address,
        tasks: u32,
        windows: Vec<Window>,
    },
    /// Sequential echoes of `size` bytes (the answer is the next request), raw and ours
    /// alternating round by round.
    Echo {
        raw: Address,
        ours: Address,
        size: usize,
        warmup_ms: u64,
        round_ms: u64,
        rounds: u32,
    },
    /// `tasks` concurrent loops on one connection, each creating an object and dropping its
    /// proxy; with `raw`, rounds of sequential raw round trips alternate with them (one round
    /// trip per object is the floor of a create that answers with a proxy).
    CreateDrop {
        raw: Option<Address>,
        ours: Address,
        tasks: u32,
        warmup_ms: u64,
        round_ms: u64,
        rounds: u32,
    },
    /// Sequential `get_x` round trips on the shared object through the schedule's idle and
    /// measuring windows, each call with the deadline `call_timeout_ms`; with `local_load`,
    /// tasks of this process make each phase's slow calls on the same connection.
    Isolation {
        ours: Address,
        local_load: bool,
        schedule: IsolationSchedule,
        call_timeout_ms: u64,
    },
    /// Each phase's slow calls, each on a connection of its own.
    SlowLoad {
        ours: Address,
        schedule: IsolationSchedule,
    },
}

/// Latency statistics of one side, over every round.
#[derive(Serialize, Deserialize, Clone, Debug, Default)]
struct Stats {
    samples: usize,
    median_us: f64,
    p99_us: f64,
    mean_us: f64,
    min_us: f64,
    max_us: f64,
    /// The median of each round: how stable the figure was.
    round_medians_us: Vec<f64>,
}

fn percentile(sorted: &[u64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1] as f64 / 1000.0
}

impl Stats {
    fn of(rounds: &[Vec<u64>]) -> Stats {
        let mut all: Vec<u64> = rounds.iter().flatten().copied().collect();
        all.sort_unstable();
        let round_medians_us = rounds
            .iter()
            .map(|round| {
                let mut round = round.clone();
                round.sort_unstable();
                percentile(&round, 0.5)
            })
            .collect();
        let sum: u128 = all.iter().map(|&ns| ns as u128).sum();
        Stats {
            samples: all.len(),
            median_us: percentile(&all, 0.5),
            p99_us: percentile(&all, 0.99),
            mean_us: sum as f64 / all.len().max(1) as f64 / 1000.0,
            min_us: all.first().map_or(f64::NAN, |&ns| ns as f64 / 1000.0),
            max_us: all.last().map_or(f64::NAN, |&ns| ns as f64 / 1000.0),
            round_medians_us,
        }
    }
}

#[derive(Serialize, Deserialize, Clone, Debug)]
struct LatencyResult {
    raw: Stats,
    ours: Stats,
}

#[derive(Serialize, Deserialize, Clone, Debug)]
struct WindowResult {
    target: Target,
    calls: u64,
    elapsed_s: f64,
    /// How late the client was for the window's start (it should be 0).
    late_ms: f64,
}

#[derive(Serialize, Deserialize, Clone, Debug)]
struct ThroughputResult {
    windows: Vec<WindowResult>,
}

#[derive(Serialize, Deserialize, Clone, Debug)]
struct EchoSide {
    /// Calls per second of each round.
    round_rates: Vec<f64>,
    latency: Stats,
}

#[derive(Serialize, Deserialize, Clone, Debug)]
struct EchoResult {
    raw: EchoSide,
    ours: EchoSide,
}

#[derive(Serialize, Deserialize, Clone, Debug)]
struct CreateDropResult {
    /// Objects created (and released) per second, in each round.
    round_rates: Vec<f64>,
    /// Sequential raw round trips per second, in each round (when asked for).
    raw_round_rates: Vec<f64>,
    /// With one task: the same loop from a thread with a blocking connection, per round
    /// (rounds alternate with the async ones).
    blocking_round_rates: Vec<f64>,
    created: u64,
    objects_before: u64,
    objects_after: u64,
    connections_before: u64,
    connections_after: u64,
}

/// The slow calls of one isolation phase.
#[derive(Serialize, Deserialize, Clone, Debug)]
struct SlowCounts {
    slow: u32,
    /// Slow calls that returned (the last ones cut short at the end of the phase).
    calls: u64,
    /// What they slept in the server, together.
    slept_us: u64,
    /// The phase's load span, in seconds: `slept_us` over it is how many slept on average.
    load_s: f64,
    /// How late this process was for the phase's start (it should be 0).
    late_ms: f64,
}

/// The getter's round trips with `slow` slow calls running, and idle just before and after.
#[derive(Serialize, Deserialize, Clone, Debug)]
struct IsolationSide {
    slow: u32,
    /// The idle windows next to this count's phases (each window a round).
    idle: Stats,
    /// The measuring windows of this count's phases.
    loaded: Stats,
    idle_timeouts: u64,
    /// Calls that missed their deadline (each counted as the deadline in `loaded`).
    loaded_timeouts: u64,
    /// Calls still waiting at the end of their phase, when every slow call still running or
    /// queued was cut short: their round trips in `loaded` are lower bounds.
    loaded_cut: u64,
}

#[derive(Serialize, Deserialize, Clone, Debug)]
struct IsolationResult {
    /// By slow-call count, ascending.
    sides: Vec<IsolationSide>,
    /// The slow calls of each phase, when this process made them.
    slow: Vec<SlowCounts>,
    call_timeout_ms: u64,
    /// How late this process was for a window at worst (it should be 0).
    late_ms: f64,
}

#[derive(Serialize, Deserialize, Clone, Debug)]
struct SlowLoadResult {
    connections: u32,
    phases: Vec<SlowCounts>,
}

/// Installs a `tracing` subscriber that listens to the manager's call spans (and keeps them
/// in its registry, as any subscriber does) without writing them anywhere: the cost of the
/// spans and of the trace context, not of a log's I/O.
fn listen_to_calls() {
    use tracing_subscriber::layer::SubscriberExt as _;
    let filter = tracing_subscriber::filter::Targets::new()
        .with_target("manager_core", tracing::Level::DEBUG);
    let _ = tracing::subscriber::set_global_default(tracing_subscriber::registry().with(filter));
}

/// Every client process: run the job, write its result to `out`.
#[manager::entry]
fn client(job: Job, out: PathBuf, parent: u32) -> Res<()> {
    die_with_parent(parent);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    match job {
        Job::Latency {
            raw,
            ours,
            proxy,
            warmup,
            iters,
            rounds,
            traced,
        } => {
            if traced {
                listen_to_calls();
            }
            write_json(
                &out,
                &job_latency(&runtime, &raw, &ours, proxy, warmup, iters, rounds)?,
            )
        }
        Job::Throughput {
            raw,
            ours,
            tasks,
            windows,
        } => write_json(
            &out,
            &runtime.block_on(job_throughput(&raw, &ours, tasks, &windows))?,
        ),
        Job::Echo {
            raw,
            ours,
            size,
            warmup_ms,
            round_ms,
            rounds,
        } => write_json(
            &out,
            &runtime.block_on(job_echo(&raw, &ours, size, warmup_ms, round_ms, rounds))?,
        ),
        Job::CreateDrop {
            raw,
            ours,
            tasks,
            warmup_ms,
            round_ms,
            rounds,
        } => write_json(
            &out,
            &runtime.block_on(job_create_drop(
                raw.as_ref(),
                &ours,
                tasks,
                warmup_ms,
                round_ms,
                rounds,
            ))?,
        ),
        Job::Isolation {
            ours,
            local_load,
            schedule,
            call_timeout_ms,
        } => write_json(
            &out,
            &runtime.block_on(job_isolation(&ours, local_load, &schedule, call_timeout_ms))?,
        ),
        Job::SlowLoad { ours, schedule } => {
            write_json(&out, &runtime.block_on(job_slow_load(&ours, &schedule))?)
        }
    }
}

fn check_x(x: i64) -> Res<()> {
    if x == X {
        Ok(())
    } else {
        Err(format!("get_x returned {x}, expected {X}").into())
    }
}

async fn raw_round(raw: &mut RawClient, iters: u32) -> Res<Vec<u64>> {
    let mut samples = Vec::with_capacity(iters as usize);
    for _ in 0..iters {
        let start = Instant::now();
        let x = raw.get_x().await?;
        samples.push(start.elapsed().as_nanos() as u64);
        check_x(x)?;
    }
    Ok(samples)
}

async fn ours_round(proxy: &BenchProxy, iters: u32) -> Res<Vec<u64>> {
    let mut samples = Vec::with_capacity(iters as usize);
    for _ in 0..iters {
        let start = Instant::now();
        let x = proxy.get_x().await?;
        samples.push(start.elapsed().as_nanos() as u64);
        check_x(x)?;
    }
    Ok(samples)
}

fn ours_round_blocking(proxy: &BenchBlockingProxy, iters: u32) -> Res<Vec<u64>> {
    let mut samples = Vec::with_capacity(iters as usize);
    for _ in 0..iters {
        let start = Instant::now();
        let x = proxy.get_x()?;
        samples.push(start.elapsed().as_nanos() as u64);
        check_x(x)?;
    }
    Ok(samples)
}

fn job_latency(
    runtime: &Runtime,
    raw: &Address,
    ours: &Address,
    proxy: ProxyKind,
    warmup: u32,
    iters: u32,
    rounds: u32,
) -> Res<LatencyResult> {
    let mut raw_client = runtime.block_on(RawClient::connect(raw))?;
    let mut raw_rounds = Vec::new();
    let mut ours_rounds = Vec::new();
    match proxy {
        ProxyKind::Async => {
            let (_manager, proxy) = runtime.block_on(async {
                let manager = BaseManager::new(ours.clone())
                    .shared_memory(false)
                    .connect_async()
                    .await?;
                let proxy = manager.create(&SHARED, ()).await?;
                Ok::<_, BoxError>((manager, proxy))
            })?;
            runtime.block_on(raw_round(&mut raw_client, warmup))?;
            runtime.block_on(ours_round(&proxy, warmup))?;
            for round in 0..rounds {
                // Alternate which goes first, so that neither always follows the other.
                if round % 2 == 0 {
                    raw_rounds.push(runtime.block_on(raw_round(&mut raw_client, iters))?);
                    ours_rounds.push(runtime.block_on(ours_round(&proxy, iters))?);
                } else {
                    ours_rounds.push(runtime.block_on(ours_round(&proxy, iters))?);
                    raw_rounds.push(runtime.block_on(raw_round(&mut raw_client, iters))?);
                }
            }
        }
        ProxyKind::Blocking => {
            let manager = BaseManager::new(ours.clone())
                .shared_memory(false)
                .connect()?;
            let proxy = manager.create(&SHARED_BLOCKING, ())?;
            runtime.block_on(raw_round(&mut raw_client, warmup))?;
            ours_round_blocking(&proxy, warmup)?;
            for round in 0..rounds {
                if round % 2 == 0 {
                    raw_rounds.push(runtime.block_on(raw_round(&mut raw_client, iters))?);
                    ours_rounds.push(ours_round_blocking(&proxy, iters)?);
                } else {
                    ours_rounds.push(ours_round_blocking(&proxy, iters)?);
                    raw_rounds.push(runtime.block_on(raw_round(&mut raw_client, iters))?);
                }
            }
        }
    }
    Ok(LatencyResult {
        raw: Stats::of(&raw_rounds),
        ours: Stats::of(&ours_rounds),
    })
}

/// The `Instant` at `epoch_us` microseconds since the Unix epoch.
fn instant_at(epoch_us: u64) -> Instant {
    let now_us = epoch_micros();
    let now = Instant::now();
    if epoch_us >= now_us {
        now + Duration::from_micros(epoch_us - now_us)
    } else {
        now.checked_sub(Duration::from_micros(now_us - epoch_us))
            .unwrap_or(now)
    }
}

fn epoch_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

async fn job_throughput(
    raw: &Address,
    ours: &Address,
    tasks: u32,
    windows: &[Window],
) -> Res<ThroughputResult> {
    let needs_raw = windows.iter().any(|w| w.target == Target::Raw);
    let mut raw_client = match needs_raw {
        true => Some(RawClient::connect(raw).await?),
        false => None,
    };
    let manager = BaseManager::new(ours.clone())
        .shared_memory(false)
        .connect_async()
        .await?;
    let proxy = manager.create(&SHARED, ()).await?;
    let quick = match windows.iter().any(|w| w.target == Target::Quick) {
        true => Some(manager.create(&QUICK, ()).await?),
        false => None,
    };
    // A short warm-up of both, then wait for the windows.
    if let Some(raw_client) = raw_client.as_mut() {
        raw_round(raw_client, 200).await?;
    }
    ours_round(&proxy, 200).await?;
    let mut results = Vec::new();
    for window in windows {
        let (start, end) = (instant_at(window.start_us), instant_at(window.end_us));
        let late_ms = Instant::now()
            .saturating_duration_since(start)
            .as_secs_f64()
            * 1000.0;
        tokio::time::sleep_until(start.into()).await;
        let began = Instant::now();
        let (calls, finished) = match window.target {
            Target::Raw => {
                let raw_client = raw_client.as_mut().ok_or("no raw connection")?;
                let mut calls = 0u64;
                while Instant::now() < end {
                    check_x(raw_client.get_x().await?)?;
                    calls += 1;
                }
                (calls, Instant::now())
            }
            Target::Ours => ours_windows(&proxy, tasks, began, end).await?,
            Target::Quick => {
                let quick = quick.as_ref().ok_or("no quick proxy")?;
                ours_windows(quick, tasks, began, end).await?
            }
        };
        results.push(WindowResult {
            target: window.target,
            calls,
            elapsed_s: (finished - began).as_secs_f64(),
            late_ms,
        });
    }
    Ok(ThroughputResult { windows: results })
}

/// A proxy whose `get_x` a throughput window calls.
trait Getter: Clone + Send + Sync + 'static {
    fn get(&self) -> impl std::future::Future<Output = manager::Result<i64>> + Send;
}

impl Getter for BenchProxy {
    fn get(&self) -> impl std::future::Future<Output = manager::Result<i64>> + Send {
        self.get_x()
    }
}

impl Getter for QuickBenchProxy {
    fn get(&self) -> impl std::future::Future<Output = manager::Result<i64>> + Send {
        self.get_x()
    }
}

/// `tasks` loops calling `get_x` until `end`; the calls made and when the last loop ended.
async fn ours_windows<P: Getter>(
    proxy: &P,
    tasks: u32,
    began: Instant,
    end: Instant,
) -> Res<(u64, Instant)> {
    let mut loops = tokio::task::JoinSet::new();
    for _ in 0..tasks {
        let proxy = proxy.clone();
        loops.spawn(async move {
            let mut calls = 0u64;
            while Instant::now() < end {
                check_x(proxy.get().await?)?;
                calls += 1;
            }
            Ok::<_, BoxError>((calls, Instant::now()))
        });
    }
    let (mut calls, mut finished) = (0, began);
    while let Some(done) = loops.join_next().await {
        let (n, at) = done??;
        calls += n;
        finished = finished.max(at);
    }
    Ok((calls, finished))
}

/// What an echo round talks to.
enum Echo<'a> {
    Raw(&'a mut RawClient),
    Ours(&'a BenchProxy),
}

impl Echo<'_> {
    async fn echo(&mut self, data: Vec<u8>) -> Res<Vec<u8>> {
        match self {
            Echo::Raw(raw) => raw.echo(data).await,
            Echo::Ours(proxy) => Ok(proxy.echo(data).await?),
        }
    }
}

/// Echoes for `duration` (the answer is sent again), recording each round trip.
async fn echo_round(size: usize, duration: Duration, mut to: Echo<'_>) -> Res<(f64, Vec<u64>)> {
    let mut data: Vec<u8> = (0..size).map(|i| i as u8).collect();
    let mut samples = Vec::new();
    let began = Instant::now();
    let end = began + duration;
    loop {
        let start = Instant::now();
        data = to.echo(data).await?;
        samples.push(start.elapsed().as_nanos() as u64);
        if data.len() != size || data.last() != Some(&((size - 1) as u8)) {
            return Err(format!("echo of {size} bytes came back as {} bytes", data.len()).into());
        }
        if Instant::now() >= end {
            break;
        }
    }
    Ok((
        samples.len() as f64 / began.elapsed().as_secs_f64(),
        samples,
    ))
}

async fn job_echo(
    raw: &Address,
    ours: &Address,
    size: usize,
    warmup_ms: u64,
    round_ms: u64,
    rounds: u32,
) -> Res<EchoResult> {
    let mut raw_client = RawClient::connect(raw).await?;
    let manager = BaseManager::new(ours.clone())
        .shared_memory(false)
        .connect_async()
        .await?;
    let proxy = manager.create(&SHARED, ()).await?;
    let (warmup, round) = (
        Duration::from_millis(warmup_ms),
        Duration::from_millis(round_ms),
    );
    echo_round(size, warmup, Echo::Raw(&mut raw_client)).await?;
    echo_round(size, warmup, Echo::Ours(&proxy)).await?;
    let (mut raw_rates, mut raw_samples) = (Vec::new(), Vec::new());
    let (mut ours_rates, mut ours_samples) = (Vec::new(), Vec::new());
    for n in 0..rounds {
        // Alternate which goes first, so that neither always follows the other.
        let order = match n % 2 {
            0 => [Target::Raw, Target::Ours],
            _ => [Target::Ours, Target::Raw],
        };
        for target in order {
            match target {
                Target::Raw => {
                    let (rate, samples) =
                        echo_round(size, round, Echo::Raw(&mut raw_client)).await?;
                    raw_rates.push(rate);
                    raw_samples.push(samples);
                }
                Target::Ours | Target::Quick => {
                    let (rate, samples) = echo_round(size, round, Echo::Ours(&proxy)).await?;
                    ours_rates.push(rate);
                    ours_samples.push(samples);
                }
            }
        }
    }
    Ok(EchoResult {
        raw: EchoSide {
            round_rates: raw_rates,
            latency: Stats::of(&raw_samples),
        },
        ours: EchoSide {
            round_rates: ours_rates,
            latency: Stats::of(&ours_samples),
        },
    })
}

async fn create_drop_for(manager: &manager::Manager, tasks: u32, run: Duration) -> Res<(u64, f64)> {
    let began = Instant::now();
    let end = began + run;
    let mut loops = tokio::task::JoinSet::new();
    for task in 0..tasks {
        let manager = manager.clone();
        loops.spawn(async move {
            let mut created = 0u64;
            while Instant::now() < end {
                let proxy = manager.create(&OBJ, (task as i64,)).await?;
                drop(proxy);
                created += 1;
            }
            Ok::<_, BoxError>(created)
        });
    }
    let mut created = 0;
    while let Some(done) = loops.join_next().await {
        created += done??;
    }
    Ok((created, began.elapsed().as_secs_f64()))
}

/// One thread creating and dropping objects through a blocking connection for `run`.
fn blocking_create_drop_for(manager: &BlockingManager, run: Duration) -> Res<(u64, f64)> {
    let began = Instant::now();
    let mut created = 0u64;
    while began.elapsed() < run {
        drop(manager.create(&OBJ_BLOCKING, (created as i64,))?);
        created += 1;
    }
    Ok((created, began.elapsed().as_secs_f64()))
}

/// Runs `work` on a thread of its own, outside the runtime (a blocking connection refuses to
/// be used inside one), and waits for it: the job's runtime has nothing else to do meanwhile.
fn off_runtime<T: Send>(work: impl FnOnce() -> Res<T> + Send) -> Res<T> {
    std::thread::scope(|scope| {
        scope
            .spawn(|| work().map_err(|e| e.to_string()))
            .join()
            .map_err(|_| "the blocking thread panicked".to_string())?
    })
    .map_err(Into::into)
}

/// Sequential raw round trips for `duration`; returns how many per second.
async fn raw_rate_for(raw: &mut RawClient, duration: Duration) -> Res<f64> {
    let began = Instant::now();
    let mut calls = 0u64;
    while began.elapsed() < duration {
        check_x(raw.get_x().await?)?;
        calls += 1;
    }
    Ok(calls as f64 / began.elapsed().as_secs_f64())
}

async fn job_create_drop(
    raw: Option<&Address>,
    ours: &Address,
    tasks: u32,
    warmup_ms: u64,
    round_ms: u64,
    rounds: u32,
) -> Res<CreateDropResult> {
    let mut raw_client = match raw {
        Some(raw) => Some(RawClient::connect(raw).await?),
        None => None,
    };
    let manager = BaseManager::new(ours.clone())
        .shared_memory(false)
        .connect_async()
        .await?;
    // Issue 15: a blocking create + drop within 1.2x of the async one, on one task.
    let blocking = match tasks {
        1 => Some(off_runtime(|| {
            Ok(BaseManager::new(ours.clone())
                .shared_memory(false)
                .connect()?)
        })?),
        _ => None,
    };
    let objects_before = manager.number_of_objects().await?;
    let connections_before = manager.debug_info().await?.connections;
    let (warmup, round) = (
        Duration::from_millis(warmup_ms),
        Duration::from_millis(round_ms),
    );
    create_drop_for(&manager, tasks, warmup).await?;
    if let Some(raw_client) = raw_client.as_mut() {
        raw_rate_for(raw_client, warmup).await?;
    }
    if let Some(blocking) = &blocking {
        off_runtime(|| blocking_create_drop_for(blocking, warmup))?;
    }
    let mut round_rates = Vec::new();
    let mut raw_round_rates = Vec::new();
    let mut blocking_round_rates = Vec::new();
    let mut created = 0;
    for _ in 0..rounds {
        let (n, elapsed_s) = create_drop_for(&manager, tasks, round).await?;
        round_rates.push(n as f64 / elapsed_s);
        created += n;
        if let Some(raw_client) = raw_client.as_mut() {
            raw_round_rates.push(raw_rate_for(raw_client, round).await?);
        }
        if let Some(blocking) = &blocking {
            let (n, elapsed_s) = off_runtime(|| blocking_create_drop_for(blocking, round))?;
            blocking_round_rates.push(n as f64 / elapsed_s);
            created += n;
        }
    }
    // Drops are one-way messages sent before this request on the same connection, so the
    // server has handled every one of them when it answers (the blocking connection's too,
    // asked first on that connection, which stays open until the count is read).
    if let Some(blocking) = &blocking {
        off_runtime(|| Ok(blocking.number_of_objects()?))?;
    }
    let objects_after = manager.number_of_objects().await?;
    let connections_after = manager.debug_info().await?.connections;
    off_runtime(move || {
        drop(blocking);
        Ok(())
    })?;
    Ok(CreateDropResult {
        round_rates,
        raw_round_rates,
        blocking_round_rates,
        created,
        objects_before,
        objects_after,
        connections_before,
        connections_after,
    })
}

/// The getter's round trips in one window.
struct GetterWindow {
    /// Nanoseconds; a call that missed its deadline counts as the deadline.
    samples: Vec<u64>,
    /// Calls that missed their deadline.
    timeouts: u64,
    /// Calls that ended at or after the `cut_at` given (see `SlowPhase::measure`).
    cut: u64,
    /// How late the window began, in milliseconds.
    late_ms: f64,
}

/// Sequential `get_x` round trips through `span`, each with the proxy's deadline (`timeout`).
async fn getter_window(
    proxy: &BenchProxy,
    span: Span,
    cut_at: Option<u64>,
    timeout: Duration,
) -> Res<GetterWindow> {
    let (start, end) = (instant_at(span.start_us), instant_at(span.end_us));
    let cut_at = cut_at.map(instant_at);
    let late_ms = Instant::now()
        .saturating_duration_since(start)
        .as_secs_f64()
        * 1000.0;
    tokio::time::sleep_until(start.into()).await;
    let mut window = GetterWindow {
        samples: Vec::new(),
        timeouts: 0,
        cut: 0,
        late_ms,
    };
    while Instant::now() < end {
        let began = Instant::now();
        match proxy.get_x().await {
            Ok(x) => {
                window.samples.push(began.elapsed().as_nanos() as u64);
                check_x(x)?;
            }
            Err(manager::Error::Timeout(_)) => {
                window.samples.push(timeout.as_nanos() as u64);
                window.timeouts += 1;
            }
            Err(e) => return Err(e.into()),
        }
        if cut_at.is_some_and(|at| Instant::now() >= at) {
            window.cut += 1;
        }
    }
    Ok(window)
}

/// One phase's slow calls: a loop on each proxy from the phase's start, each call made again
/// as soon as it returns, until the phase's end (no call sleeps past it). The first calls are
/// staggered (the i-th of n sleeps (i+1)/n of the time) so that calls end, and are made again,
/// spread over the phase rather than all at once.
async fn slow_loops(proxies: Vec<BenchProxy>, phase: SlowPhase, slow_ms: u64) -> Res<SlowCounts> {
    let start = instant_at(phase.load.start_us);
    let late_ms = Instant::now()
        .saturating_duration_since(start)
        .as_secs_f64()
        * 1000.0;
    tokio::time::sleep_until(start.into()).await;
    let until = phase.load.end_us;
    let n = proxies.len().max(1) as u64;
    let mut loops = tokio::task::JoinSet::new();
    for (i, proxy) in proxies.into_iter().enumerate() {
        loops.spawn(async move {
            let mut ms = slow_ms * (i as u64 + 1) / n;
            let (mut calls, mut slept_us) = (0u64, 0u64);
            // Stop a millisecond short: a call made later would sleep (nearly) nothing.
            while epoch_micros() + 1000 < until {
                slept_us += proxy.slow(ms, until).await?;
                calls += 1;
                ms = slow_ms;
            }
            Ok::<_, BoxError>((calls, slept_us))
        });
    }
    let (mut calls, mut slept_us) = (0, 0);
    while let Some(done) = loops.join_next().await {
        let (c, s) = done??;
        calls += c;
        slept_us += s;
    }
    Ok(SlowCounts {
        slow: phase.slow,
        calls,
        slept_us,
        load_s: phase.load.seconds(),
        late_ms,
    })
}

async fn job_isolation(
    ours: &Address,
    local_load: bool,
    schedule: &IsolationSchedule,
    call_timeout_ms: u64,
) -> Res<IsolationResult> {
    let timeout = Duration::from_millis(call_timeout_ms);
    let manager = BaseManager::new(ours.clone())
        .shared_memory(false)
        .connect_async()
        .await?;
    let getter = manager.create(&SHARED, ()).await?.with_timeout(timeout);
    let slow = manager.create(&SLOW, ()).await?;
    ours_round(&getter, 200).await?;
    slow.slow(0, 0).await?;
    // Each window's round trips, in the schedule's order.
    let mut idle = Vec::new();
    let mut loaded = Vec::new();
    let mut slow_counts = Vec::new();
    let mut late_ms: f64 = 0.0;
    for (i, window) in schedule.idle.iter().enumerate() {
        let measured = getter_window(&getter, *window, None, timeout).await?;
        late_ms = late_ms.max(measured.late_ms);
        idle.push(measured);
        let Some(&phase) = schedule.phases.get(i) else {
            break;
        };
        let load = local_load.then(|| {
            let proxies = vec![slow.clone(); phase.slow as usize];
            tokio::spawn(slow_loops(proxies, phase, schedule.slow_ms))
        });
        let measured =
            getter_window(&getter, phase.measure, Some(phase.load.end_us), timeout).await?;
        late_ms = late_ms.max(measured.late_ms);
        loaded.push(measured);
        if let Some(load) = load {
            slow_counts.push(load.await??);
        }
    }
    let mut counts: Vec<u32> = schedule.phases.iter().map(|p| p.slow).collect();
    counts.sort_unstable();
    counts.dedup();
    let sides = counts
        .into_iter()
        .map(|n| {
            // This count's phases, and the idle windows on either side of them.
            let phases: Vec<usize> = (0..schedule.phases.len())
                .filter(|&i| schedule.phases[i].slow == n && i < loaded.len())
                .collect();
            let mut windows: Vec<usize> = phases.iter().flat_map(|&i| [i, i + 1]).collect();
            windows.sort_unstable();
            windows.dedup();
            windows.retain(|&i| i < idle.len());
            let idle_rounds: Vec<Vec<u64>> =
                windows.iter().map(|&i| idle[i].samples.clone()).collect();
            let loaded_rounds: Vec<Vec<u64>> =
                phases.iter().map(|&i| loaded[i].samples.clone()).collect();
            IsolationSide {
                slow: n,
                idle: Stats::of(&idle_rounds),
                loaded: Stats::of(&loaded_rounds),
                idle_timeouts: windows.iter().map(|&i| idle[i].timeouts).sum(),
                loaded_timeouts: phases.iter().map(|&i| loaded[i].timeouts).sum(),
                loaded_cut: phases.iter().map(|&i| loaded[i].cut).sum(),
            }
        })
        .collect();
    Ok(IsolationResult {
        sides,
        slow: slow_counts,
        call_timeout_ms,
        late_ms,
    })
}

async fn job_slow_load(ours: &Address, schedule: &IsolationSchedule) -> Res<SlowLoadResult> {
    let connections = schedule.max_slow();
    let mut managers = Vec::new();
    let mut proxies = Vec::new();
    for _ in 0..connections {
        let manager = BaseManager::new(ours.clone())
            .shared_memory(false)
            .connect_async()
            .await?;
        let proxy = manager.create(&SLOW, ()).await?;
        proxy.slow(0, 0).await?;
        managers.push(manager);
        proxies.push(proxy);
    }
    let mut phases = Vec::new();
    for &phase in &schedule.phases {
        let mine = proxies[..phase.slow as usize].to_vec();
        phases.push(slow_loops(mine, phase, schedule.slow_ms).await?);
    }
    drop(proxies);
    drop(managers);
    Ok(SlowLoadResult {
        connections,
        phases,
    })
}

// ---------------------------------------------------------------------------------------------
// Process plumbing.

/// Ends this process when the bench's main process goes, whatever way it goes.
fn die_with_parent(parent: u32) {
    #[cfg(target_os = "linux")]
    // SAFETY: prctl(PR_SET_PDEATHSIG) only sets a flag of this process.
    unsafe {
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
    }
    if std::os::unix::process::parent_id() != parent {
        std::process::exit(3);
    }
}

/// Writes `value` as JSON to `path`, atomically (a reader never sees half a file).
fn write_json<T: Serialize>(path: &Path, value: &T) -> Res<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, serde_json::to_vec_pretty(value)?)?;
    std::fs::rename(&tmp, path)?;
    Ok(())
}

fn read_json<T: DeserializeOwned>(path: &Path) -> Res<T> {
    let bytes = std::fs::read(path).map_err(|e| format!("reading {}: {e}", path.display()))?;
    Ok(serde_json::from_slice(&bytes)?)
}

/// A child process that is killed if it is still running when this is dropped.
struct Child {
    process: Process,
    what: String,
}

impl Child {
    /// Waits for the child to exit successfully within `timeout`.
    fn finish(mut self, timeout: Duration) -> Res<()> {
        match self.process.join_timeout(timeout)? {
            Some(status) if status.success() => Ok(()),
            Some(status) => Err(format!("{} failed: {status}", self.what).into()),
            None => Err(format!("{} did not finish within {timeout:?}", self.what).into()),
        }
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        if self.process.is_alive() {
            let _ = self.process.kill();
        }
    }
}

/// The run's private directory (sockets, results), removed at the end.
struct WorkDir(PathBuf);

impl WorkDir {
    fn create() -> Res<WorkDir> {
        let base = std::env::temp_dir();
        // Directories of runs that were killed before they could clean up.
        if let Ok(entries) = std::fs::read_dir(&base) {
            for entry in entries.flatten() {
                let name = entry.file_name();
                let Some(pid) = name
                    .to_str()
                    .and_then(|n| n.strip_prefix("manager-bench-"))
                    .and_then(|p| p.parse::<i32>().ok())
                else {
                    continue;
                };
                // SAFETY: kill with signal 0 only checks whether the process exists.
                let gone = unsafe { libc::kill(pid, 0) } != 0
                    && io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH);
                if gone {
                    let _ = std::fs::remove_dir_all(entry.path());
                }
            }
        }
        let dir = base.join(format!("manager-bench-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)?;
        Ok(WorkDir(dir))
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Starts `job` in a client process; it writes its result to the path returned.
fn spawn_client(work: &WorkDir, job: &Job) -> Res<(Child, PathBuf)> {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let out = work.path().join(format!("client-{n}.json"));
    let process = Process::spawn(client, (job.clone(), out.clone(), std::process::id()))?;
    let child = Child {
        process,
        what: format!("client {n}"),
    };
    Ok((child, out))
}

/// Waits for a client started by `spawn_client` and reads its result.
fn client_result<R: DeserializeOwned>(child: Child, out: &Path, timeout: Duration) -> Res<R> {
    child.finish(timeout)?;
    let result = read_json(out)?;
    let _ = std::fs::remove_file(out);
    Ok(result)
}

/// Runs `job` in `count` client processes at once and collects their results.
fn run_clients<R: DeserializeOwned>(
    work: &WorkDir,
    job: &Job,
    count: usize,
    timeout: Duration,
) -> Res<Vec<R>> {
    let mut children = Vec::new();
    for _ in 0..count {
        children.push(spawn_client(work, job)?);
    }
    let mut results = Vec::new();
    let mut outs = Vec::new();
    for (child, out) in children {
        child.finish(timeout)?;
        outs.push(out);
    }
    for out in outs {
        results.push(read_json(&out)?);
        let _ = std::fs::remove_file(&out);
    }
    Ok(results)
}

fn run_client<R: DeserializeOwned>(work: &WorkDir, job: &Job, timeout: Duration) -> Res<R> {
    run_clients(work, job, 1, timeout)?
        .pop()
        .ok_or_else(|| "no result".into())
}

fn start_raw_server(work: &WorkDir) -> Res<(Child, RawReady)> {
    let process = Process::spawn(raw_server, (work.path().to_path_buf(), std::process::id()))?;
    let mut child = Child {
        process,
        what: "the raw server".into(),
    };
    let ready = work.path().join("raw.ready");
    let deadline = Instant::now() + Duration::from_secs(30);
    while !ready.exists() {
        if !child.process.is_alive() {
            return Err("the raw server exited before it was ready".into());
        }
        if Instant::now() > deadline {
            return Err("the raw server was not ready within 30 s".into());
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    Ok((child, read_json(&ready)?))
}

/// VmRSS of process `pid`, in bytes.
fn rss_bytes(pid: u32) -> Res<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let line = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .ok_or("no VmRSS in /proc/PID/status")?;
    let kb: u64 = line
        .split_whitespace()
        .nth(1)
        .ok_or("malformed VmRSS")?
        .parse()?;
    Ok(kb * 1024)
}

// ---------------------------------------------------------------------------------------------
// The plan, the figures and the report.

/// The parts of the suite, for `--only` (in the order they run).
const GROUPS: [&str; 7] = [
    "rtt",
    "throughput",
    "echo",
    "create",
    "isolation",
    "memory",
    "shm",
];

/// The slow-call counts of the isolation figures.
const ISOLATION_SLOW: [u32; 3] = [1, 8, 64];

/// From the end of an isolation phase's measuring window to the end of its slow calls.
const ISOLATION_TAIL: Duration = Duration::from_millis(50);

struct Options {
    quick: bool,
    json: Option<PathBuf>,
    python: bool,
    python_json: Option<PathBuf>,
    only: Option<Vec<String>>,
    memory_objects: Option<u64>,
    profile: Option<profile::Side>,
    calls: u64,
    unix: Option<PathBuf>,
    /// `ServerConfig::worker_spin` of our servers, when not the default.
    worker_spin: Option<Duration>,
    /// `ServerConfig::session_grace` of our servers, when not the default.
    session_grace: Option<Duration>,
    /// `--costs`: what to measure the costs per call of, and how.
    costs: Option<Target>,
    clients: usize,
    tasks: u32,
    seconds: f64,
}

const USAGE: &str = "\
usage: cargo bench --bench manager_bench -- [OPTIONS]

  --quick              a smoke run of about 30 s (fewer iterations, shorter windows,
                       100,000 objects for the memory figure)
  --json PATH          where to write the figures (default: target/manager_bench.json)
  --python             also run benches/python_peer.py (CPython's manager on the same
                       work) and add its figures
  --python-json PATH   add the figures of an earlier run of benches/python_peer.py
  --only GROUPS        comma-separated: rtt, throughput, echo, create, isolation, memory,
                       shm (our connection through shared memory against a blocking
                       Unix-socket and a futex ping-pong; every other group's clients keep
                       their Unix connections on the socket)
  --memory-objects N   objects for the memory figure (default 1,000,000; 100,000 quick)
  --worker-spin-us N   our servers' ServerConfig::worker_spin in microseconds (0: off), to
                       measure the execution model with and without it
  --session-grace-ms N our servers' ServerConfig::session_grace in milliseconds (0: no
                       resumable sessions, so no replay logs or acknowledgements), to
                       measure what resumption costs a round trip

  --profile SIDE       no figures: play one side of get_x round trips in this process, for
                       a profiler (raw, async, blocking: the client; server, raw-server:
                       the server), the other side in a child; see benches/profile.sh
  --calls N            round trips of --profile (default 20,000)
  --unix PATH          --profile over a Unix socket at PATH instead of TCP

  --costs TARGET       no figures: one throughput window on raw, ours or quick, and the
                       CPU time, context switches and (with perf) system calls per call of
                       the server and the clients over its middle
  --clients N          client processes of --costs (default 16)
  --tasks N            loops per client of --costs (default 1)
  --seconds S          the window of --costs (default 5)";

impl Options {
    /// The configuration of our servers.
    fn server_config(&self) -> ServerConfig {
        let mut config = ServerConfig::default();
        if let Some(spin) = self.worker_spin {
            config.worker_spin = spin;
        }
        if let Some(grace) = self.session_grace {
            config.session_grace = grace;
        }
        config
    }

    fn parse() -> Result<Options, String> {
        let mut options = Options {
            quick: false,
            json: None,
            python: false,
            python_json: None,
            only: None,
            memory_objects: None,
            profile: None,
            calls: 20_000,
            unix: None,
            worker_spin: None,
            session_grace: None,
            costs: None,
            clients: 16,
            tasks: 1,
            seconds: 5.0,
        };
        let mut args = std::env::args().skip(1);
        while let Some(arg) = args.next() {
            let mut value = |name: &str| args.next().ok_or(format!("{name} needs a value"));
            match arg.as_str() {
                // `cargo bench` passes --bench to every bench binary.
                "--bench" => {}
                "--quick" => options.quick = true,
                "--python" => options.python = true,
                "--json" => options.json = Some(value("--json")?.into()),
                "--python-json" => options.python_json = Some(value("--python-json")?.into()),
                "--only" => {
                    let groups: Vec<String> = value("--only")?
                        .split(',')
                        .map(|g| g.trim().to_string())
                        .collect();
                    for group in &groups {
                        if !GROUPS.contains(&group.as_str()) {
                            return Err(format!("unknown group {group:?}"));
                        }
                    }
                    options.only = Some(groups);
                }
                "--session-grace-ms" => {
                    options.session_grace = Some(Duration::from_millis(
                        value("--session-grace-ms")?
                            .parse()
                            .map_err(|e| format!("--session-grace-ms: {e}"))?,
                    ));
                }
                "--worker-spin-us" => {
                    options.worker_spin = Some(Duration::from_micros(
                        value("--worker-spin-us")?
                            .parse()
                            .map_err(|e| format!("--worker-spin-us: {e}"))?,
                    ))
                }
                "--memory-objects" => {
                    options.memory_objects = Some(
                        value("--memory-objects")?
                            .replace('_', "")
                            .parse()
                            .map_err(|e| format!("--memory-objects: {e}"))?,
                    )
                }
                "--profile" => options.profile = Some(value("--profile")?.parse()?),
                "--calls" => {
                    options.calls = value("--calls")?
                        .replace('_', "")
                        .parse()
                        .map_err(|e| format!("--calls: {e}"))?
                }
                "--unix" => options.unix = Some(value("--unix")?.into()),
                "--costs" => {
                    options.costs = Some(match value("--costs")?.as_str() {
                        "raw" => Target::Raw,
                        "ours" => Target::Ours,
                        "quick" => Target::Quick,
                        other => {
                            return Err(format!("--costs: {other:?} is none of raw, ours, quick"))
                        }
                    })
                }
                "--clients" => {
                    options.clients = value("--clients")?
                        .parse::<usize>()
                        .map_err(|e| format!("--clients: {e}"))?
                        .max(1)
                }
                "--tasks" => {
                    options.tasks = value("--tasks")?
                        .parse::<u32>()
                        .map_err(|e| format!("--tasks: {e}"))?
                        .max(1)
                }
                "--seconds" => {
                    options.seconds = value("--seconds")?
                        .parse::<f64>()
                        .map_err(|e| format!("--seconds: {e}"))?
                        .max(0.5)
                }
                "-h" | "--help" => return Err(String::new()),
                other => return Err(format!("unknown argument {other:?}")),
            }
        }
        Ok(options)
    }

    fn wants(&self, group: &str) -> bool {
        match &self.only {
            None => true,
            Some(groups) => groups.iter().any(|g| g == group),
        }
    }
}

/// How long each part runs.
struct Plan {
    latency_warmup: u32,
    latency_iters: u32,
    latency_rounds: u32,
    window: Duration,
    throughput_rounds: u32,
    echo_warmup: Duration,
    echo_round: Duration,
    echo_rounds: u32,
    create_warmup: Duration,
    create_round: Duration,
    create_rounds: u32,
    /// How long each slow call of the isolation figures sleeps.
    isolation_slow: Duration,
    /// Each idle window of the isolation figures.
    isolation_idle: Duration,
    /// From the start of a phase's slow calls to the start of its measuring window.
    isolation_ramp: Duration,
    /// Each phase's measuring window (longer than a slow call, so that calls end and are
    /// made again in it).
    isolation_measure: Duration,
    /// From the end of a phase to the next idle window.
    isolation_drain: Duration,
    /// Rounds of phases (each slow-call count once a round, the order reversed every other).
    isolation_rounds: u32,
    memory_objects: u64,
}

impl Plan {
    fn new(options: &Options) -> Plan {
        let mut plan = if options.quick {
            Plan {
                latency_warmup: 500,
                latency_iters: 3_000,
                latency_rounds: 1,
                window: Duration::from_millis(500),
                throughput_rounds: 1,
                echo_warmup: Duration::from_millis(100),
                echo_round: Duration::from_millis(300),
                echo_rounds: 1,
                create_warmup: Duration::from_millis(100),
                create_round: Duration::from_millis(400),
                create_rounds: 2,
                isolation_slow: Duration::from_millis(500),
                isolation_idle: Duration::from_millis(200),
                isolation_ramp: Duration::from_millis(150),
                isolation_measure: Duration::from_millis(700),
                isolation_drain: Duration::from_millis(100),
                isolation_rounds: 1,
                memory_objects: 100_000,
            }
        } else {
            Plan {
                latency_warmup: 3_000,
                latency_iters: 10_000,
                latency_rounds: 8,
                window: Duration::from_secs(1),
                throughput_rounds: 6,
                echo_warmup: Duration::from_millis(300),
                echo_round: Duration::from_millis(500),
                echo_rounds: 8,
                create_warmup: Duration::from_millis(300),
                create_round: Duration::from_millis(500),
                create_rounds: 8,
                isolation_slow: Duration::from_millis(1000),
                isolation_idle: Duration::from_millis(400),
                isolation_ramp: Duration::from_millis(200),
                isolation_measure: Duration::from_millis(1500),
                isolation_drain: Duration::from_millis(100),
                isolation_rounds: 2,
                memory_objects: 1_000_000,
            }
        };
        if let Some(n) = options.memory_objects {
            plan.memory_objects = n.max(1);
        }
        plan
    }
}

/// What a figure must reach.
#[derive(Serialize, Clone, Copy, Debug)]
#[serde(tag = "kind", content = "value", rename_all = "snake_case")]
enum Goal {
    /// ours / raw at most this.
    RatioAtMost(f64),
    /// ours / raw at least this.
    RatioAtLeast(f64),
    /// ours at least this.
    AtLeast(f64),
    /// ours at most this.
    AtMost(f64),
}

/// `r` to two decimals, printed without trailing zeros (`0.8`, `0.83`).
fn round2(r: f64) -> f64 {
    (r * 100.0).round() / 100.0
}

impl Goal {
    fn text(&self, unit: Unit) -> String {
        match *self {
            Goal::RatioAtMost(r) => format!("<= {}x", round2(r)),
            Goal::RatioAtLeast(r) => format!(">= {}x", round2(r)),
            Goal::AtLeast(v) => format!(">= {}", unit.format(v)),
            Goal::AtMost(v) => format!("<= {}", unit.format(v)),
        }
    }

    fn met(&self, ours: f64, ratio: Option<f64>) -> Option<bool> {
        match *self {
            Goal::RatioAtMost(r) => ratio.map(|x| x <= r),
            Goal::RatioAtLeast(r) => ratio.map(|x| x >= r),
            Goal::AtLeast(v) => Some(ours >= v),
            Goal::AtMost(v) => Some(ours <= v),
        }
    }
}

#[derive(Serialize, Clone, Copy, Debug, PartialEq, Eq)]
enum Unit {
    #[serde(rename = "us")]
    Micros,
    #[serde(rename = "calls/s")]
    CallsPerSec,
    #[serde(rename = "MiB/s")]
    MibPerSec,
    #[serde(rename = "objects/s")]
    ObjectsPerSec,
    #[serde(rename = "B/object")]
    BytesPerObject,
}

impl Unit {
    fn lower_is_better(self) -> bool {
        matches!(self, Unit::Micros | Unit::BytesPerObject)
    }

    fn format(self, v: f64) -> String {
        if !v.is_finite() {
            return "-".into();
        }
        match self {
            Unit::Micros if v >= 10_000.0 => format!("{:.1} ms", v / 1000.0),
            Unit::Micros => format!("{v:.1} us"),
            Unit::CallsPerSec | Unit::ObjectsPerSec => {
                let suffix = if self == Unit::CallsPerSec {
                    "/s"
                } else {
                    " obj/s"
                };
                if v >= 1e6 {
                    format!("{:.2}M{suffix}", v / 1e6)
                } else if v >= 1e3 {
                    format!("{:.1}k{suffix}", v / 1e3)
                } else {
                    format!("{v:.0}{suffix}")
                }
            }
            Unit::MibPerSec if v < 10.0 => format!("{v:.2} MiB/s"),
            Unit::MibPerSec => format!("{v:.1} MiB/s"),
            Unit::BytesPerObject => format!("{v:.0} B/obj"),
        }
    }
}

#[derive(Serialize, Debug)]
struct Figure {
    id: String,
    label: String,
    unit: Unit,
    better: &'static str,
    ours: f64,
    raw: Option<f64>,
    /// ours / raw.
    ratio: Option<f64>,
    goal: Option<Goal>,
    pass: Option<bool>,
    /// CPython's manager on the same work, when it was measured.
    python: Option<f64>,
    /// How many times better ours is than CPython's (>1: better).
    vs_python: Option<f64>,
    note: Option<String>,
}

impl Figure {
    fn new(id: &str, label: &str, unit: Unit, ours: f64, raw: Option<f64>) -> Figure {
        let ratio = raw.filter(|r| *r > 0.0).map(|r| ours / r);
        Figure {
            id: id.into(),
            label: label.into(),
            unit,
            better: if unit.lower_is_better() {
                "lower"
            } else {
                "higher"
            },
            ours,
            raw,
            ratio,
            goal: None,
            pass: None,
            python: None,
            vs_python: None,
            note: None,
        }
    }

    fn goal(mut self, goal: Goal) -> Figure {
        self.pass = goal.met(self.ours, self.ratio);
        self.goal = Some(goal);
        self
    }

    fn note(mut self, note: impl Into<String>) -> Figure {
        self.note = Some(note.into());
        self
    }

    /// Marks the figure missed whatever its number, with the reason.
    fn fail(mut self, why: impl Into<String>) -> Figure {
        self.pass = Some(false);
        self.note = Some(why.into());
        self
    }

    fn report(&self) {
        let mut line = format!(
            "  {:<44} ours {:>14}",
            self.label,
            self.unit.format(self.ours)
        );
        if let (Some(raw), Some(ratio)) = (self.raw, self.ratio) {
            line += &format!("   raw {:>14}   {ratio:.2}x", self.unit.format(raw));
        }
        eprintln!("{line}");
    }
}

fn median(values: &[f64]) -> f64 {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

/// A server in this process, listening to its own call spans (see [`listen_to_calls`]).
struct TracedServer {
    address: Address,
    runtime: Option<Runtime>,
    stop: manager::ShutdownHandle,
}

impl TracedServer {
    fn start() -> Res<TracedServer> {
        listen_to_calls();
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()?;
        let server = runtime.block_on(manager::Server::bind(
            registry()?,
            &Address::local_tcp(),
            manager::process::authkey(),
            ServerConfig::default(),
        ))?;
        let address = server.address().clone();
        let stop = server.shutdown_handle();
        runtime.spawn(server.serve_forever());
        Ok(TracedServer {
            address,
            runtime: Some(runtime),
            stop,
        })
    }
}

impl Drop for TracedServer {
    fn drop(&mut self) {
        self.stop.shutdown();
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_timeout(Duration::from_secs(5));
        }
    }
}

struct Suite<'a> {
    options: &'a Options,
    plan: Plan,
    work: WorkDir,
    figures: Vec<Figure>,
    details: BTreeMap<String, serde_json::Value>,
    warnings: Vec<String>,
}

impl Suite<'_> {
    fn push(&mut self, figure: Figure) {
        figure.report();
        self.figures.push(figure);
    }

    fn detail<T: Serialize>(&mut self, key: &str, value: &T) {
        if let Ok(value) = serde_json::to_value(value) {
            self.details.insert(key.to_string(), value);
        }
    }

    fn latency(&mut self, raw: &RawReady, tcp: &Address, unix: &Address) -> Res<()> {
        eprintln!("round trips (sequential get_x, one connection)");
        let p = &self.plan;
        let per_call = Duration::from_micros(500);
        let timeout =
            per_call * (p.latency_warmup + p.latency_iters * p.latency_rounds) * 2 + secs(60);
        for (transport, raw_address, ours) in [("tcp", &raw.tcp, tcp), ("unix", &raw.unix, unix)] {
            for proxy in [ProxyKind::Async, ProxyKind::Blocking] {
                let job = Job::Latency {
                    raw: raw_address.clone(),
                    ours: ours.clone(),
                    proxy,
                    warmup: self.plan.latency_warmup,
                    iters: self.plan.latency_iters,
                    rounds: self.plan.latency_rounds,
                    traced: false,
                };
                let result: LatencyResult = run_client(&self.work, &job, timeout)?;
                let kind = match proxy {
                    ProxyKind::Async => "async",
                    ProxyKind::Blocking => "blocking",
                };
                let socket = if transport == "tcp" { "TCP" } else { "Unix" };
                let id = format!("rtt.{transport}.{kind}");
                self.push(
                    Figure::new(
                        &format!("{id}.median"),
                        &format!("round trip {socket}, {kind} proxy, median"),
                        Unit::Micros,
                        result.ours.median_us,
                        Some(result.raw.median_us),
                    )
                    .goal(Goal::RatioAtMost(1.2)),
                );
                self.push(Figure::new(
                    &format!("{id}.p99"),
                    &format!("round trip {socket}, {kind} proxy, p99"),
                    Unit::Micros,
                    result.ours.p99_us,
                    Some(result.raw.p99_us),
                ));
                self.detail(&id, &result);
            }
        }
        self.latency_traced(raw, tcp)
    }

    /// The round trip with `tracing` subscribers listening, against raw in the same job: on
    /// the client only (the server's spans disabled), then on both sides (a server in this
    /// process, which listens). Without a subscriber the spans cost one relaxed load each.
    fn latency_traced(&mut self, raw: &RawReady, tcp: &Address) -> Res<()> {
        eprintln!("round trips with a tracing subscriber (TCP, blocking proxy)");
        let traced_server = TracedServer::start()?;
        let p = &self.plan;
        let per_call = Duration::from_micros(500);
        let timeout =
            per_call * (p.latency_warmup + p.latency_iters * p.latency_rounds) * 2 + secs(60);
        let cases = [
            ("client", "client side", tcp.clone()),
            ("both", "both sides", traced_server.address.clone()),
        ];
        for (tag, label, ours) in cases {
            let job = Job::Latency {
                raw: raw.tcp.clone(),
                ours,
                proxy: ProxyKind::Blocking,
                warmup: self.plan.latency_warmup,
                iters: self.plan.latency_iters,
                rounds: self.plan.latency_rounds,
                traced: true,
            };
            let result: LatencyResult = run_client(&self.work, &job, timeout)?;
            let id = format!("rtt.tcp.blocking.traced_{tag}");
            self.push(Figure::new(
                &format!("{id}.median"),
                &format!("rtt with tracing, {label}"),
                Unit::Micros,
                result.ours.median_us,
                Some(result.raw.median_us),
            ));
            self.detail(&id, &result);
        }
        Ok(())
    }

    /// A schedule of `rounds` pairs of windows (raw then ours, then ours then raw, ...)
    /// starting after `lead`.
    fn schedule(&self, targets: &[Target], lead: Duration) -> Vec<Window> {
        let gap = Duration::from_millis(150);
        let mut at = epoch_micros() + lead.as_micros() as u64;
        let mut windows = Vec::new();
        for round in 0..self.plan.throughput_rounds {
            let mut order = targets.to_vec();
            if round % 2 == 1 {
                order.reverse();
            }
            for target in order {
                let end = at + self.plan.window.as_micros() as u64;
                windows.push(Window {
                    target,
                    start_us: at,
                    end_us: end,
                });
                at = end + gap.as_micros() as u64;
            }
        }
        windows
    }

    /// Runs a throughput job in `clients` processes; returns the calls/s of each window,
    /// summed over the clients, by target.
    fn throughput_run(
        &mut self,
        raw: &Address,
        ours: &Address,
        clients: usize,
        tasks: u32,
        targets: &[Target],
    ) -> Res<BTreeMap<&'static str, Vec<f64>>> {
        // Time for every client to start, connect and warm up before the first window.
        let lead = Duration::from_millis(600 + 80 * clients as u64);
        let windows = self.schedule(targets, lead);
        let span = Duration::from_micros(windows.last().map_or(0, |w| w.end_us) - epoch_micros());
        let job = Job::Throughput {
            raw: raw.clone(),
            ours: ours.clone(),
            tasks,
            windows: windows.clone(),
        };
        let results: Vec<ThroughputResult> =
            run_clients(&self.work, &job, clients, span + secs(60))?;
        let mut rates: BTreeMap<&'static str, Vec<f64>> = BTreeMap::new();
        for (i, window) in windows.iter().enumerate() {
            let mut rate = 0.0;
            let mut late: f64 = 0.0;
            for result in &results {
                let w = &result.windows[i];
                rate += w.calls as f64 / w.elapsed_s.max(1e-9);
                late = late.max(w.late_ms);
            }
            if late > 0.05 * self.plan.window.as_secs_f64() * 1000.0 {
                self.warnings.push(format!(
                    "throughput, {clients} clients: a client started a window {late:.0} ms late"
                ));
            }
            let key = match window.target {
                Target::Raw => "raw",
                Target::Ours => "ours",
                Target::Quick => "quick",
            };
            rates.entry(key).or_default().push(rate);
        }
        Ok(rates)
    }

    fn throughput(&mut self, raw: &RawReady, tcp: &Address) -> Res<()> {
        eprintln!("throughput (get_x over TCP, each client its own process and connection)");
        let mut raw16 = None;
        for clients in [1usize, 4, 16] {
            let targets: &[Target] = match clients {
                16 => &[Target::Raw, Target::Ours, Target::Quick],
                _ => &[Target::Raw, Target::Ours],
            };
            let rates = self.throughput_run(&raw.tcp, tcp, clients, 1, targets)?;
            let (ours, raw_rate) = (median(&rates["ours"]), median(&rates["raw"]));
            let mut figure = Figure::new(
                &format!("tput.clients.{clients}"),
                &format!(
                    "throughput, {clients} client{}",
                    if clients == 1 { "" } else { "s" }
                ),
                Unit::CallsPerSec,
                ours,
                Some(raw_rate),
            );
            if clients == 16 {
                figure = figure.goal(Goal::RatioAtLeast(0.8));
                raw16 = Some(raw_rate);
            }
            self.push(figure);
            if clients == 16 {
                self.push(
                    Figure::new(
                        "tput.clients.16.quick",
                        "throughput, 16 clients, quick get_x",
                        Unit::CallsPerSec,
                        median(&rates["quick"]),
                        Some(raw_rate),
                    )
                    .note(
                        "quick get_x: declared #[shared(quick = [get_x])], runs with no hand-off",
                    ),
                );
            }
            self.detail(&format!("tput.clients.{clients}"), &rates);
        }
        let rates = self.throughput_run(&raw.tcp, tcp, 1, 16, &[Target::Ours, Target::Quick])?;
        let ours = median(&rates["ours"]);
        self.push(
            Figure::new(
                "tput.one_conn.16",
                "throughput, 1 connection, 16 tasks",
                Unit::CallsPerSec,
                ours,
                raw16,
            )
            .goal(Goal::RatioAtLeast(0.8))
            .note("raw: the raw baseline with 16 clients"),
        );
        self.push(
            Figure::new(
                "tput.one_conn.16.quick",
                "throughput, 1 connection, 16 tasks, quick get_x",
                Unit::CallsPerSec,
                median(&rates["quick"]),
                raw16,
            )
            .note("raw: the raw baseline with 16 clients"),
        );
        self.detail("tput.one_conn.16", &rates);
        Ok(())
    }

    fn echo(&mut self, raw: &RawReady, tcp: &Address) -> Res<()> {
        eprintln!("echo (sequential, over TCP; the answer is sent again)");
        for (size, name) in [(64usize, "64B"), (64 << 10, "64KiB"), (1 << 20, "1MiB")] {
            let p = &self.plan;
            let job = Job::Echo {
                raw: raw.tcp.clone(),
                ours: tcp.clone(),
                size,
                warmup_ms: p.echo_warmup.as_millis() as u64,
                round_ms: p.echo_round.as_millis() as u64,
                rounds: p.echo_rounds,
            };
            let timeout = (p.echo_warmup + p.echo_round * p.echo_rounds) * 2 + secs(60);
            let result: EchoResult = run_client(&self.work, &job, timeout)?;
            let mib = size as f64 / (1 << 20) as f64;
            let mut figure = Figure::new(
                &format!("echo.{name}"),
                &format!(
                    "echo {}, payload each way",
                    name.replace("KiB", " KiB")
                        .replace("MiB", " MiB")
                        .replace("64B", "64 B")
                ),
                Unit::MibPerSec,
                median(&result.ours.round_rates) * mib,
                Some(median(&result.raw.round_rates) * mib),
            );
            if size == 1 << 20 {
                // Issue 15: on the socket path, the 1 MiB echo at least as fast as raw.
                figure = figure.goal(Goal::RatioAtLeast(1.0));
            }
            self.push(figure);
            self.detail(&format!("echo.{name}"), &result);
        }
        Ok(())
    }

    fn create_drop(&mut self, raw: &RawReady, tcp: &Address) -> Res<()> {
        eprintln!("create + drop (a factory object created, its proxy dropped, over TCP)");
        for tasks in [1u32, 16] {
            let p = &self.plan;
            let job = Job::CreateDrop {
                raw: (tasks == 1).then(|| raw.tcp.clone()),
                ours: tcp.clone(),
                tasks,
                warmup_ms: p.create_warmup.as_millis() as u64,
                round_ms: p.create_round.as_millis() as u64,
                rounds: p.create_rounds,
            };
            let timeout = (p.create_warmup + p.create_round * p.create_rounds) * 3 + secs(60);
            let result: CreateDropResult = run_client(&self.work, &job, timeout)?;
            let rate = median(&result.round_rates);
            let label = if tasks == 1 {
                "create + drop, 1 task".to_string()
            } else {
                format!("create + drop, {tasks} tasks on 1 connection")
            };
            let raw_rate =
                (!result.raw_round_rates.is_empty()).then(|| median(&result.raw_round_rates));
            // The issue's 20,000 objects/s is for creates in flight together on one
            // connection. One task creating one object at a time is bound by the round trip:
            // its goal is that a create + drop costs no more than a round trip (the drop adds
            // none), whatever the machine's round trip is.
            let goal = if tasks == 1 {
                Goal::RatioAtLeast(0.8)
            } else {
                Goal::AtLeast(20_000.0)
            };
            let mut figure = Figure::new(
                &format!("create_drop.{tasks}"),
                &label,
                Unit::ObjectsPerSec,
                rate,
                raw_rate,
            )
            .goal(goal);
            if result.objects_after != result.objects_before {
                figure = figure.fail(format!(
                    "{} objects were not released",
                    result.objects_after as i64 - result.objects_before as i64
                ));
            } else if result.connections_after != result.connections_before {
                figure = figure.fail(format!(
                    "the server's connections went from {} to {}",
                    result.connections_before, result.connections_after
                ));
            } else {
                let raw = if tasks == 1 {
                    "raw: sequential raw round trips/s; "
                } else {
                    ""
                };
                figure = figure.note(format!(
                    "{raw}all {} objects released; {} connections before and after",
                    result.created, result.connections_after
                ));
            }
            self.push(figure);
            if !result.blocking_round_rates.is_empty() {
                // Issue 15: a blocking create + drop within 1.2x of the async one's time, so
                // at least 1 / 1.2 of its rate, in the same rounds.
                self.push(
                    Figure::new(
                        "create_drop.blocking",
                        "create + drop, 1 thread, blocking",
                        Unit::ObjectsPerSec,
                        median(&result.blocking_round_rates),
                        Some(rate),
                    )
                    .goal(Goal::RatioAtLeast(1.0 / 1.2))
                    .note("raw: the async create + drop of 1 task, rounds alternating"),
                );
            }
            self.detail(&format!("create_drop.{tasks}"), &result);
        }
        Ok(())
    }

    /// The isolation schedule: after `lead`, an idle window, then each phase and an idle window
    /// after it, round by round.
    fn isolation_schedule(&self, lead: Duration) -> IsolationSchedule {
        let p = &self.plan;
        let us = |d: Duration| d.as_micros() as u64;
        // Between an idle window and the phase after it.
        let gap = 20_000;
        let mut at = epoch_micros() + us(lead);
        let mut idle = vec![Span {
            start_us: at,
            end_us: at + us(p.isolation_idle),
        }];
        at += us(p.isolation_idle) + gap;
        let mut phases = Vec::new();
        for round in 0..p.isolation_rounds {
            let mut counts = ISOLATION_SLOW.to_vec();
            if round % 2 == 1 {
                counts.reverse();
            }
            for slow in counts {
                let measure_start = at + us(p.isolation_ramp);
                let measure_end = measure_start + us(p.isolation_measure);
                let end = measure_end + us(ISOLATION_TAIL);
                phases.push(SlowPhase {
                    slow,
                    load: Span {
                        start_us: at,
                        end_us: end,
                    },
                    measure: Span {
                        start_us: measure_start,
                        end_us: measure_end,
                    },
                });
                at = end + us(p.isolation_drain);
                idle.push(Span {
                    start_us: at,
                    end_us: at + us(p.isolation_idle),
                });
                at += us(p.isolation_idle) + gap;
            }
        }
        IsolationSchedule {
            idle,
            phases,
            slow_ms: p.isolation_slow.as_millis() as u64,
        }
    }

    /// The getter's round trip on one object while slow plain calls run on another, of the same
    /// server: on the getter's own connection (tasks of the measuring process) and on other
    /// connections (another process, a connection per slow call); each against the idle round
    /// trip of the same connection, measured in idle windows just before and after each phase.
    fn isolation(&mut self) -> Res<()> {
        let p = &self.plan;
        eprintln!(
            "isolation (get_x on one object while {} slow calls of {} ms run on another, over TCP)",
            ISOLATION_SLOW.map(|n| n.to_string()).join("/"),
            p.isolation_slow.as_millis()
        );
        let call_timeout = p.isolation_slow * 2;
        let server: BlockingManager = BaseManager::new(Address::local_tcp()).start(registry)?;
        let address = server.address().clone();
        for local_load in [true, false] {
            // Time for the clients to start and connect (64 connections for the slow calls).
            let lead = Duration::from_millis(800);
            let schedule = self.isolation_schedule(lead);
            let span = Duration::from_micros(schedule.end_us().saturating_sub(epoch_micros()));
            let timeout = span + call_timeout + secs(60);
            let measuring = spawn_client(
                &self.work,
                &Job::Isolation {
                    ours: address.clone(),
                    local_load,
                    schedule: schedule.clone(),
                    call_timeout_ms: call_timeout.as_millis() as u64,
                },
            )?;
            let loading = match local_load {
                true => None,
                false => Some(spawn_client(
                    &self.work,
                    &Job::SlowLoad {
                        ours: address.clone(),
                        schedule: schedule.clone(),
                    },
                )?),
            };
            let result: IsolationResult = client_result(measuring.0, &measuring.1, timeout)?;
            let slow_counts = match loading {
                Some((child, out)) => client_result::<SlowLoadResult>(child, &out, timeout)?.phases,
                None => result.slow.clone(),
            };
            let (mode, label) = match local_load {
                true => ("same_conn", "on same conn"),
                false => ("other_conn", "on other conns"),
            };
            let late_ms = slow_counts
                .iter()
                .map(|c| c.late_ms)
                .fold(result.late_ms, f64::max);
            if late_ms > 50.0 {
                self.warnings.push(format!(
                    "isolation, {label}: a client started a window {late_ms:.0} ms late"
                ));
            }
            for side in &result.sides {
                let n = side.slow;
                let phases: Vec<&SlowCounts> = slow_counts.iter().filter(|c| c.slow == n).collect();
                let slept_s = phases.iter().map(|c| c.slept_us as f64 / 1e6).sum::<f64>();
                let load_s = phases.iter().map(|c| c.load_s).sum::<f64>();
                let running = slept_s / load_s.max(1e-9);
                let slow_calls: u64 = phases.iter().map(|c| c.calls).sum();
                let id = format!("isolation.{mode}.{n}");
                let what = format!("isolation, {n} slow {label}");
                let loaded = &side.loaded;
                let mut note = format!(
                    "raw: idle, just before and after; {running:.1} of {n} slow calls running on \
                     average; {} get_x",
                    loaded.samples
                );
                if side.loaded_timeouts > 0 {
                    note += &format!(
                        ", {} timed out (counted as {} ms)",
                        side.loaded_timeouts, result.call_timeout_ms
                    );
                }
                if side.loaded_cut > 0 {
                    note += &format!(
                        ", {} still waiting when the phase ended and cut the slow calls short \
                         (lower bounds)",
                        side.loaded_cut
                    );
                }
                // When most calls missed their deadline or waited for the phase's end, the
                // median is only a lower bound.
                let stalled = (side.loaded_timeouts + side.loaded_cut) * 2 >= loaded.samples as u64;
                let mut median = Figure::new(
                    &format!("{id}.median"),
                    &format!("{what}, median"),
                    Unit::Micros,
                    side.loaded.median_us,
                    Some(side.idle.median_us),
                );
                if n == 64 {
                    median = median.goal(Goal::RatioAtMost(2.0));
                }
                median = if stalled {
                    median.fail(format!("stalled: {note}"))
                } else {
                    median.note(note)
                };
                self.push(median);
                let mut p99 = Figure::new(
                    &format!("{id}.p99"),
                    &format!("{what}, p99"),
                    Unit::Micros,
                    side.loaded.p99_us,
                    Some(side.idle.p99_us),
                );
                if (side.loaded_timeouts + side.loaded_cut) * 100 >= loaded.samples as u64 {
                    p99 = p99.note("a lower bound: get_x timed out or waited for the phase's end");
                }
                self.push(p99);
                self.detail(
                    &id,
                    &serde_json::json!({
                        "slow": n,
                        "slow_ms": schedule.slow_ms,
                        "idle": side.idle,
                        "loaded": side.loaded,
                        "idle_timeouts": side.idle_timeouts,
                        "loaded_timeouts": side.loaded_timeouts,
                        "loaded_cut": side.loaded_cut,
                        "call_timeout_ms": result.call_timeout_ms,
                        "median_ratio": side.loaded.median_us / side.idle.median_us,
                        "p99_ratio": side.loaded.p99_us / side.idle.p99_us,
                        "slow_calls": slow_calls,
                        "slow_running_mean": running,
                        "phases": phases,
                    }),
                );
            }
        }
        server.shutdown()?;
        Ok(())
    }

    /// Server memory per idle object: VmRSS of a fresh server before and after this process
    /// creates `memory_objects` objects and holds their proxies.
    fn memory(&mut self) -> Res<()> {
        let n = self.plan.memory_objects;
        eprintln!("memory (server VmRSS with {n} idle objects held by one client)");
        let manager = BaseManager::new(Address::local_tcp()).start(registry)?;
        let pid = manager
            .server_process()
            .ok_or("the manager did not start a server")?
            .pid();
        let address = manager.address().clone();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let referent = std::mem::size_of::<Bench>() as f64;
        let measured = runtime.block_on(async move {
            let client = BaseManager::new(address).connect_async().await?;
            // Warm the server up (allocator, buffers) with objects that are then released.
            create_drop_for(&client, 16, Duration::from_millis(200)).await?;
            let before = client.number_of_objects().await?;
            tokio::time::sleep(Duration::from_millis(200)).await;
            let rss_before = rss_bytes(pid)?;
            let began = Instant::now();
            let tasks = 16u64;
            let mut creators = tokio::task::JoinSet::new();
            for t in 0..tasks {
                let client = client.clone();
                let count = n / tasks + u64::from(t < n % tasks);
                creators.spawn(async move {
                    let mut held = Vec::with_capacity(count as usize);
                    for i in 0..count {
                        held.push(client.create(&OBJ, (i as i64,)).await?);
                    }
                    Ok::<_, BoxError>(held)
                });
            }
            let mut held = Vec::new();
            while let Some(done) = creators.join_next().await {
                held.push(done??);
            }
            let create_s = began.elapsed().as_secs_f64();
            let holding = client.number_of_objects().await?;
            if holding != before + n {
                return Err(format!(
                    "the server holds {holding} objects, expected {}",
                    before + n
                )
                .into());
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
            let rss_held = rss_bytes(pid)?;
            let began = Instant::now();
            drop(held);
            let after = client.number_of_objects().await?;
            let release_s = began.elapsed().as_secs_f64();
            tokio::time::sleep(Duration::from_millis(300)).await;
            let rss_after = rss_bytes(pid)?;
            Ok::<_, BoxError>(serde_json::json!({
                "objects": n,
                "referent_bytes": referent,
                "rss_before": rss_before,
                "rss_held": rss_held,
                "rss_after_release": rss_after,
                "objects_before": before,
                "objects_after_release": after,
                "create_s": create_s,
                "release_s": release_s,
                "released": after == before,
            }))
        });
        let measured = measured?;
        drop(runtime);
        manager.shutdown()?;
        let rss_before = measured["rss_before"].as_f64().unwrap_or(f64::NAN);
        let rss_held = measured["rss_held"].as_f64().unwrap_or(f64::NAN);
        let per_object = (rss_held - rss_before) / n as f64 - referent;
        let mut figure = Figure::new(
            "memory.per_object",
            "server memory per idle object",
            Unit::BytesPerObject,
            per_object,
            None,
        )
        .goal(Goal::AtMost(200.0));
        figure = if measured["released"].as_bool() == Some(true) {
            figure.note(format!(
                "{n} objects; VmRSS {:.1} MiB -> {:.1} MiB, {:.1} MiB after release; minus the {referent} B referent",
                rss_before / 1048576.0,
                rss_held / 1048576.0,
                measured["rss_after_release"].as_f64().unwrap_or(f64::NAN) / 1048576.0,
            ))
        } else {
            figure.fail("the objects were not all released")
        };
        self.push(figure);
        self.detail("memory", &measured);
        Ok(())
    }

    fn python(&mut self) -> Res<()> {
        let path = match &self.options.python_json {
            Some(path) => path.clone(),
            None => {
                let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/python_peer.py");
                let out = self.work.path().join("python.json");
                eprintln!("CPython's manager on the same work ({})", script.display());
                let mut command = std::process::Command::new("python3");
                command.arg(&script).arg("--json").arg(&out);
                if self.options.quick {
                    command.arg("--quick");
                }
                if let Some(only) = &self.options.only {
                    command.arg("--only").arg(only.join(","));
                }
                let status = command
                    .status()
                    .map_err(|e| format!("cannot run python3: {e}"))?;
                if !status.success() {
                    return Err(format!("{} failed: {status}", script.display()).into());
                }
                out
            }
        };
        let python: serde_json::Value = read_json(&path)?;
        let values: BTreeMap<String, f64> = python["figures"]
            .as_array()
            .map(|figures| {
                figures
                    .iter()
                    .filter_map(|f| Some((f["id"].as_str()?.to_string(), f["value"].as_f64()?)))
                    .collect()
            })
            .unwrap_or_default();
        for figure in &mut self.figures {
            if let Some(&value) = values.get(&figure.id) {
                figure.python = Some(value);
                figure.vs_python = Some(if figure.unit.lower_is_better() {
                    value / figure.ours
                } else {
                    figure.ours / value
                });
            }
        }
        self.details.insert("python".into(), python);
        Ok(())
    }

    fn table(&self) -> String {
        let with_python = self.figures.iter().any(|f| f.python.is_some());
        let mut header = format!(
            "{:<44} {:>14} {:>14} {:>7} {:>14} {:>6}",
            "measurement", "ours", "raw", "ratio", "target", "result"
        );
        if with_python {
            header += &format!(" {:>14} {:>9}", "python", "vs python");
        }
        let mut out = format!("{header}\n{}\n", "-".repeat(header.len()));
        for f in &self.figures {
            let raw = f.raw.map_or("-".into(), |r| f.unit.format(r));
            let ratio = f.ratio.map_or("-".into(), |r| format!("{r:.2}x"));
            let target = f.goal.map_or("-".into(), |g| g.text(f.unit));
            let result = match f.pass {
                Some(true) => "pass",
                Some(false) => "MISS",
                None => "-",
            };
            let mut line = format!(
                "{:<44} {:>14} {:>14} {:>7} {:>14} {:>6}",
                f.label,
                f.unit.format(f.ours),
                raw,
                ratio,
                target,
                result
            );
            if with_python {
                let python = f.python.map_or("-".into(), |v| f.unit.format(v));
                let vs = f.vs_python.map_or("-".into(), |v| match v {
                    v if v >= 0.095 => format!("{v:.1}x"),
                    v => format!("1/{:.0}x", 1.0 / v),
                });
                line += &format!(" {python:>14} {vs:>9}");
            }
            out += &line;
            out.push('\n');
        }
        let notes: Vec<String> = self
            .figures
            .iter()
            .filter_map(|f| f.note.as_ref().map(|n| format!("  {}: {n}", f.label)))
            .collect();
        if !notes.is_empty() {
            out += "\nnotes:\n";
            out += &notes.join("\n");
            out.push('\n');
        }
        out
    }
}

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

fn run(options: &Options) -> Res<()> {
    let began = Instant::now();
    let work = WorkDir::create()?;
    let plan = Plan::new(options);
    let mut bench = Suite {
        options,
        plan,
        work,
        figures: Vec::new(),
        details: BTreeMap::new(),
        warnings: Vec::new(),
    };
    let needs_servers = ["rtt", "throughput", "echo", "create"]
        .iter()
        .any(|g| options.wants(g));
    if needs_servers {
        let (raw_child, raw) = start_raw_server(&bench.work)?;
        let ours_tcp: BlockingManager = BaseManager::new(Address::local_tcp())
            .config(options.server_config())
            .start(registry)?;
        let ours_unix: BlockingManager =
            BaseManager::new(Address::unix(bench.work.path().join("ours.sock")))
                .config(options.server_config())
                .start(registry)?;
        let (tcp, unix) = (ours_tcp.address().clone(), ours_unix.address().clone());
        if options.wants("rtt") {
            bench.latency(&raw, &tcp, &unix)?;
        }
        if options.wants("throughput") {
            bench.throughput(&raw, &tcp)?;
        }
        if options.wants("echo") {
            bench.echo(&raw, &tcp)?;
        }
        if options.wants("create") {
            bench.create_drop(&raw, &tcp)?;
        }
        ours_tcp.shutdown()?;
        ours_unix.shutdown()?;
        drop(raw_child);
    }
    if options.wants("isolation") {
        bench.isolation()?;
    }
    if options.wants("shm") {
        bench.shared_memory()?;
    }
    if options.wants("memory") {
        if cfg!(target_os = "linux") {
            bench.memory()?;
        } else {
            bench
                .warnings
                .push("the memory figure needs /proc (Linux); skipped".into());
        }
    }
    let measured_s = began.elapsed().as_secs_f64();
    if options.python || options.python_json.is_some() {
        if let Err(e) = bench.python() {
            bench.warnings.push(format!("no CPython figures: {e}"));
        }
    }

    let table = bench.table();
    println!();
    println!(
        "manager_bench ({} run, {} cores, {:.0} s measuring)",
        if options.quick { "quick" } else { "full" },
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        measured_s
    );
    println!();
    print!("{table}");
    for warning in &bench.warnings {
        println!("warning: {warning}");
    }

    let json_path = options
        .json
        .clone()
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target/manager_bench.json"));
    if let Some(parent) = json_path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    let report = serde_json::json!({
        "suite": "manager_bench",
        "mode": if options.quick { "quick" } else { "full" },
        "cores": std::thread::available_parallelism().map_or(0, |n| n.get()),
        "unix_time": epoch_micros() / 1_000_000,
        "measuring_s": measured_s,
        "elapsed_s": began.elapsed().as_secs_f64(),
        "figures": bench.figures,
        "warnings": bench.warnings,
        "details": bench.details,
    });
    std::fs::write(&json_path, serde_json::to_vec_pretty(&report)?)?;
    println!("\nfigures written to {}", json_path.display());
    Ok(())
}

fn main() {
    manager::init();
    let options = match Options::parse() {
        Ok(options) => options,
        Err(message) => {
            if !message.is_empty() {
                eprintln!("manager_bench: {message}");
            }
            eprintln!("{USAGE}");
            std::process::exit(if message.is_empty() { 0 } else { 2 });
        }
    };
    let result = match (options.profile, options.costs) {
        (Some(side), _) => profile::run(side, options.calls, options.unix.clone()),
        (None, Some(target)) => costs::run(&options, target),
        (None, None) => run(&options),
    };
    if let Err(e) = result {
        eprintln!("manager_bench: {e}");
        std::process::exit(1);
    }
}
