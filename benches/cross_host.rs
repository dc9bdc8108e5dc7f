//! Figures for managers reached across hosts (issue 12, point 7):
//!
//! 1. **Cut to release**: how long after a lock holder's host vanishes (its link cut silently
//!    between network namespaces, `tests/common/netns.rs`) the server releases its lock, seen
//!    by a client on another host waiting for it; with `liveness_timeout` = 2 s (five times)
//!    and with the default, 30 s (once). The server drops a connection silent for the whole
//!    timeout L, and a client pings every L/3, so the release comes between 2L/3 and L after
//!    the cut: 1.3-2 s and 20-30 s. (With `session_grace` = 0: with a grace period the
//!    session, and the lock, are kept that much longer for the client to come back.)
//! 4. **Cut to resume**: a client appending to a list every 5 ms has its link cut for 3 s
//!    (past its liveness bound of 2 s and the server's: both take the socket for broken), then
//!    restored: the time from the link coming back to the first append completing, which is
//!    the reconnect with its backoff, the handshake and the resume (five times).
//! 2. **Idle probes**: the cost of liveness pings on a server with 1,000 idle connections (one
//!    client process on another host): the server's and the client's CPU time, and the bytes
//!    that crossed the server's link (both ways, with TCP/IP headers and ACKs), per minute,
//!    with the default timeout (a 60 s window) and with 2 s (a 20 s window, scaled).
//! 3. **TLS against plain TCP**: the round trip of a call (`len()` of a shared list) on
//!    loopback, through a server started with `BaseManager::start` with and without TLS, in
//!    the same run, rounds alternating.
//!
//! The first two need root and `ip` (namespaces); without them they are skipped, saying why.
//! The third needs the `tls` feature.
//!
//! ```sh
//! cargo bench --bench cross_host --features tls            # all figures, about 4 minutes
//! cargo bench --bench cross_host --features tls -- --quick # without the 30 s default cut
//! ```
//!
//! Every process is this binary: namespace parts are it run again with `ip netns exec` and
//! `MANAGER_XHOST_ROLE`; servers for the round trip come from `BaseManager::start`.

#[path = "../tests/common/netns.rs"]
mod netns;
#[path = "../tests/common/pki.rs"]
mod pki;

use std::time::{Duration, Instant};

use manager::sync::ListBlockingProxy;
use manager::{
    Address, AuthKey, BaseManager, BlockingManager, Proxy, Registry, Server, ServerConfig,
};
use netns::{Host, Net, Part};

const ROLE: &str = "MANAGER_XHOST_ROLE";
const PATIENCE: Duration = Duration::from_secs(120);

#[manager::entry]
fn registry() -> Registry {
    manager::sync::registry()
}

// The parts, inside namespaces.

fn connect(address: &str) -> manager::Result<BlockingManager> {
    BlockingManager::connect(&Address::tcp(address), &manager::process::authkey())
}

fn until_stdin_closes() {
    let mut line = String::new();
    while matches!(std::io::stdin().read_line(&mut line), Ok(n) if n > 0) {
        line.clear();
    }
}

fn serve(address: &str, liveness_ms: &str, grace_ms: &str) -> manager::Result<()> {
    let runtime = tokio::runtime::Runtime::new()?;
    let mut config = ServerConfig::default();
    config.liveness_timeout = Duration::from_millis(liveness_ms.parse().expect("ms"));
    config.session_grace = Duration::from_millis(grace_ms.parse().expect("ms"));
    let server = runtime.block_on(Server::bind(
        manager::sync::registry(),
        &Address::tcp(address),
        manager::process::authkey(),
        config,
    ))?;
    println!("listening {} {}", std::process::id(), server.address());
    let stop = server.shutdown_handle();
    std::thread::spawn(move || {
        until_stdin_closes();
        stop.shutdown();
    });
    runtime.block_on(server.serve_forever())
}

fn hold(address: &str) -> manager::Result<()> {
    let manager = connect(address)?;
    let lock = manager.lock()?;
    lock.acquire()?;
    let token = serde_json::to_string(lock.base().token()).expect("a token as JSON");
    println!("holding {token}");
    until_stdin_closes();
    Ok(())
}

fn wait(address: &str, token: &str) -> manager::Result<()> {
    let manager = connect(address)?;
    let token: manager::Token = serde_json::from_str(token).expect("a token as JSON");
    let lock: manager::sync::LockBlockingProxy = manager.attach(&token)?;
    println!("waiting");
    lock.acquire()?;
    println!("acquired");
    until_stdin_closes();
    Ok(())
}

fn idle(address: &str, count: &str) -> manager::Result<()> {
    let count: usize = count.parse().expect("a count");
    let connections = (0..count)
        .map(|_| connect(address))
        .collect::<manager::Result<Vec<_>>>()?;
    println!("connected {} {}", std::process::id(), connections.len());
    until_stdin_closes();
    Ok(())
}

/// Milliseconds since the epoch: the parts and the bench share the machine's clock.
fn wall_ms() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .as_millis()
}

/// Appends to a list every 5 ms until stdin says `report`; then prints the longest wait for
/// one append and when it ended (wall clock).
fn pace(address: &str) -> manager::Result<()> {
    let manager = BlockingManager::connect_with(
        &Address::tcp(address),
        &manager::process::authkey(),
        &manager::ConnectOptions::new().liveness_timeout(Duration::from_secs(2)),
    )?;
    let list: ListBlockingProxy<u64> = manager.list(&[])?;
    let (tx, stop) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = std::io::stdin().read_line(&mut line);
        let _ = tx.send(());
    });
    println!("pacing");
    let (mut longest, mut end, mut i) = (Duration::ZERO, 0, 0u64);
    while stop.try_recv().is_err() {
        let start = Instant::now();
        list.append(&i)?;
        i += 1;
        if start.elapsed() > longest {
            (longest, end) = (start.elapsed(), wall_ms());
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let once = list.to_vec()? == (0..i).collect::<Vec<u64>>();
    println!("gap {} {end} {once}", longest.as_millis());
    until_stdin_closes();
    Ok(())
}

fn play(role: &str) -> ! {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match (role, args.as_slice()) {
        ("server", [address, liveness_ms, grace_ms]) => serve(address, liveness_ms, grace_ms),
        ("pacer", [address]) => pace(address),
        ("holder", [address]) => hold(address),
        ("waiter", [address, token]) => wait(address, token),
        ("idle", [address, count]) => idle(address, count),
        _ => panic!("unknown part {role} {args:?}"),
    };
    if let Err(e) = result {
        println!("failed {e}");
        std::process::exit(1);
    }
    std::process::exit(0)
}

/// Starts `role` on `host` with `args`, this binary's authkey, and [`PATIENCE`] for its lines.
fn part(net: &Net, host: Host, role: &str, args: &[&str]) -> Part {
    let key = format!("xhost-{}", std::process::id());
    Part::start(
        net,
        host,
        &[(ROLE, role), ("MANAGER_AUTHKEY", &key)],
        args,
        PATIENCE,
    )
}

/// The server in its namespace (sessions kept for `grace`): the part, its pid and its
/// address.
fn server(net: &Net, liveness: Duration, grace: Duration) -> (Part, u32, String) {
    let part = part(
        net,
        Host::Server,
        "server",
        &[
            &format!("{}:0", Host::Server.ip()),
            &liveness.as_millis().to_string(),
            &grace.as_millis().to_string(),
        ],
    );
    let line = part.expect("listening");
    let (pid, address) = line.split_once(' ').expect("pid and address");
    (part, pid.parse().expect("a pid"), address.to_string())
}

/// Cut to release: the seconds from cutting the holder's host off to the waiter's acquire.
fn cut_to_release(liveness: Duration) -> Result<f64, String> {
    let net = Net::make(&[Host::Server, Host::A, Host::B])?;
    let (_server, _, address) = server(&net, liveness, Duration::ZERO);
    let holder = part(&net, Host::A, "holder", &[&address]);
    let token = holder.expect("holding");
    let waiter = part(&net, Host::B, "waiter", &[&address, &token]);
    waiter.expect("waiting");
    std::thread::sleep(Duration::from_millis(300));
    let cut = Instant::now();
    net.cut(Host::A)?;
    waiter.expect("acquired");
    Ok(cut.elapsed().as_secs_f64())
}

/// Cut to resume: the milliseconds from a 3 s cut's end to the first append completing.
fn cut_to_resume() -> Result<u128, String> {
    let net = Net::make(&[Host::Server, Host::A])?;
    let (_server, _, address) = server(&net, Duration::from_secs(2), Duration::from_secs(10));
    let mut pacer = part(&net, Host::A, "pacer", &[&address]);
    pacer.expect("pacing");
    std::thread::sleep(Duration::from_millis(500));
    net.cut(Host::A)?;
    std::thread::sleep(Duration::from_secs(3));
    net.heal(Host::A)?;
    let healed = wall_ms();
    std::thread::sleep(Duration::from_secs(3));
    pacer.say("report");
    let line = pacer.expect("gap");
    let fields: Vec<&str> = line.split(' ').collect();
    let [_, end, once] = fields.as_slice() else {
        return Err(format!("a report: {line}"));
    };
    if *once != "true" {
        return Err(format!("the appends were not each once, in order: {line}"));
    }
    let end: u128 = end.parse().map_err(|e| format!("{line}: {e}"))?;
    Ok(end.saturating_sub(healed))
}

/// CPU time (user + system) of process `pid`, in seconds.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // The fields after the command name (which is in parentheses and may hold spaces).
    let rest = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = [11, 12]
        .iter()
        .filter_map(|&i| fields.get(i)?.parse::<f64>().ok())
        .sum();
    // SAFETY: sysconf has no preconditions.
    ticks / unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64
}

/// Idle probes: per minute, the server's CPU seconds, the client's, and the bytes over the
/// server's link, with `count` idle connections and `liveness`, measured over `window`.
fn idle_cost(count: usize, liveness: Duration, window: Duration) -> Result<[f64; 3], String> {
    let net = Net::make(&[Host::Server, Host::A])?;
    let (_server, server_pid, address) = server(&net, liveness, Duration::from_secs(10));
    let clients = part(&net, Host::A, "idle", &[&address, &count.to_string()]);
    let line = clients.expect("connected");
    let client_pid: u32 = line
        .split(' ')
        .next()
        .and_then(|p| p.parse().ok())
        .expect("pid");
    // Settled: every connection made, the first pings sent.
    std::thread::sleep(liveness.min(Duration::from_secs(10)) / 2);
    let bytes = || net.link_bytes(Host::Server);
    let (cpu_s, cpu_c, bytes_before, start) = (
        cpu_seconds(server_pid),
        cpu_seconds(client_pid),
        bytes()?,
        Instant::now(),
    );
    std::thread::sleep(window);
    let minutes = start.elapsed().as_secs_f64() / 60.0;
    Ok([
        (cpu_seconds(server_pid) - cpu_s) / minutes,
        (cpu_seconds(client_pid) - cpu_c) / minutes,
        (bytes()? - bytes_before) as f64 / minutes,
    ])
}

/// The round trips, in microseconds, of `rounds` rounds of `calls` calls on each of `lists`.
fn round_trips(lists: &[&ListBlockingProxy<i64>], rounds: usize, calls: usize) -> Vec<Vec<f64>> {
    let mut times = vec![Vec::new(); lists.len()];
    for _ in 0..rounds {
        for (list, times) in lists.iter().zip(&mut times) {
            for _ in 0..calls {
                let start = Instant::now();
                list.len().expect("a call");
                times.push(start.elapsed().as_secs_f64() * 1e6);
            }
        }
    }
    times
}

fn percentile(times: &mut [f64], p: f64) -> f64 {
    times.sort_by(f64::total_cmp);
    times[((times.len() - 1) as f64 * p) as usize]
}

fn tls_against_plain(rounds: usize, calls: usize) -> Result<(), manager::Error> {
    let pki = pki::Pki::new();
    let key = AuthKey::random();
    let plain = BaseManager::new(Address::local_tcp())
        .authkey(key.clone())
        .start(registry)?;
    let tls = BaseManager::new(Address::local_tcp())
        .authkey(key.clone())
        .server_tls(pki.server())
        .tls(pki.client())
        .start(registry)?;
    let (a, b): (ListBlockingProxy<i64>, ListBlockingProxy<i64>) =
        (plain.list(&[1])?, tls.list(&[1])?);
    let mut times = round_trips(&[&a, &b], rounds, calls);
    let (plain_us, tls_us) = (
        percentile(&mut times[0], 0.5),
        percentile(&mut times[1], 0.5),
    );
    let (plain_99, tls_99) = (
        percentile(&mut times[0], 0.99),
        percentile(&mut times[1], 0.99),
    );
    println!(
        "round trip, loopback, blocking proxy ({rounds} alternating rounds of {calls} calls):\n  \
         plain TCP  median {plain_us:7.1} us   p99 {plain_99:7.1} us\n  \
         TLS        median {tls_us:7.1} us   p99 {tls_99:7.1} us   ({:.2}x plain)",
        tls_us / plain_us
    );
    drop((a, b));
    tls.shutdown()?;
    plain.shutdown()
}

fn main() {
    manager::init();
    if let Ok(role) = std::env::var(ROLE) {
        play(&role);
    }
    let args: Vec<String> = std::env::args().collect();
    // `cargo test --benches` runs this without `--bench`: a smoke run only.
    let smoke = !args.iter().any(|a| a == "--bench");
    let quick = smoke || args.iter().any(|a| a == "--quick");

    match tls_against_plain(if smoke { 2 } else { 20 }, if smoke { 50 } else { 1000 }) {
        Ok(()) => {}
        Err(manager::Error::Tls(why)) => println!("TLS against plain TCP: skipped: {why}"),
        Err(e) => panic!("the round trip failed: {e}"),
    }
    if smoke {
        return;
    }
    if let Some(why) = netns::unavailable() {
        println!("cut to release, idle probes: skipped: {why}");
        return;
    }
    let mut fast = Vec::new();
    for _ in 0..5 {
        fast.push(cut_to_release(Duration::from_secs(2)).expect("a cut"));
    }
    let show = |v: &[f64]| {
        v.iter()
            .map(|s| format!("{s:.2} s"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    println!(
        "cut to release, liveness_timeout 2 s, session_grace 0: {} (bound: 1.33-2 s)",
        show(&fast)
    );
    let mut resumes = Vec::new();
    for _ in 0..5 {
        resumes.push(format!("{} ms", cut_to_resume().expect("a cut")));
    }
    println!(
        "cut to resume, 3 s cut, liveness_timeout 2 s: the first call completed {} after the \
         link came back",
        resumes.join(", ")
    );
    if quick {
        println!("cut to release, default 30 s: not measured (--quick); 20-30 s by the schedule");
    } else {
        let default = cut_to_release(Duration::from_secs(30)).expect("a cut");
        println!(
            "cut to release, default liveness_timeout 30 s, session_grace 0: {default:.1} s \
             (bound: 20-30 s)"
        );
    }
    for (liveness, window) in [
        (
            Duration::from_secs(30),
            Duration::from_secs(if quick { 20 } else { 60 }),
        ),
        (Duration::from_secs(2), Duration::from_secs(20)),
    ] {
        let [server, client, bytes] = idle_cost(1000, liveness, window).expect("idle probes");
        println!(
            "idle probes, 1,000 connections, liveness_timeout {liveness:?} ({window:?} window), \
             per minute: server CPU {:.3} s ({:.2}% of a core), client CPU {:.3} s, \
             {:.0} KiB over the server's link",
            server,
            server / 60.0 * 100.0,
            client,
            bytes / 1024.0
        );
    }
}
