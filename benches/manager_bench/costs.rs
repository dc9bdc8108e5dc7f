//! `--costs TARGET`: what one call costs each side under the throughput group's load, in
//! measures that do not move with the machine's load.
//!
//! Starts the raw server and ours (TCP), then `--clients` client processes (`--tasks` loops
//! each, as the throughput group's) that call `get_x` of `TARGET` (`raw`, `ours`, `quick`) for
//! one window of `--seconds`. Over the middle of the window it reads, for the server process
//! and for every client process, the CPU time (`/proc/PID/stat`) and the context switches
//! (`/proc/PID/task/*/status`), and, where `perf` is installed, counts their system calls by
//! kind (`perf stat` on the tracepoints, which costs the traced process far less than
//! `strace`): each figure is printed per call (calls counted over the same interval, from the
//! window's rate). The load average is printed beside it: throughput is the load's, the
//! figures per call much less so.

use std::collections::BTreeMap;
use std::process::Command;
use std::time::Duration;

use manager::{Address, BaseManager};

use super::{
    epoch_micros, read_json, registry, spawn_client, start_raw_server, Job, Options, Res, Target,
    ThroughputResult, Window, WorkDir,
};

/// The system calls counted one by one (the rest are in the total).
const SYSCALLS: [&str; 14] = [
    "sendto",
    "recvfrom",
    "read",
    "write",
    "epoll_wait",
    "epoll_pwait",
    "epoll_ctl",
    "futex",
    "sched_yield",
    "poll",
    "ppoll",
    "writev",
    "recvmsg",
    "sendmsg",
];

/// What `/proc` says of one process at one moment.
#[derive(Default, Clone, Copy)]
struct Sample {
    /// User and system CPU time, in clock ticks.
    user: u64,
    system: u64,
    /// Context switches of all its threads.
    voluntary: u64,
    involuntary: u64,
}

fn sample(pid: u32) -> Sample {
    let mut s = Sample::default();
    if let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // After the command's name (in parentheses, which may hold spaces): fields 3 on.
        if let Some(rest) = stat.rsplit_once(')').map(|(_, rest)| rest) {
            let fields: Vec<&str> = rest.split_whitespace().collect();
            s.user = fields.get(11).and_then(|f| f.parse().ok()).unwrap_or(0);
            s.system = fields.get(12).and_then(|f| f.parse().ok()).unwrap_or(0);
        }
    }
    if let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) {
        for task in tasks.flatten() {
            let Ok(status) = std::fs::read_to_string(task.path().join("status")) else {
                continue;
            };
            for line in status.lines() {
                let number = |l: &str| l.split_whitespace().nth(1)?.parse::<u64>().ok();
                if line.starts_with("voluntary_ctxt_switches") {
                    s.voluntary += number(line).unwrap_or(0);
                } else if line.starts_with("nonvoluntary_ctxt_switches") {
                    s.involuntary += number(line).unwrap_or(0);
                }
            }
        }
    }
    s
}

/// Clock ticks per second (`sysconf(_SC_CLK_TCK)`).
fn ticks_per_second() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if ticks > 0 {
        ticks as f64
    } else {
        100.0
    }
}

/// Starts `perf stat` counting the system calls of `pid` for `seconds`, if perf runs here.
fn start_perf(pid: u32, seconds: f64, out: &std::path::Path) -> Option<std::process::Child> {
    let mut events = vec!["raw_syscalls:sys_enter".to_string()];
    events.extend(SYSCALLS.iter().map(|s| format!("syscalls:sys_enter_{s}")));
    Command::new("perf")
        .args(["stat", "-x", ",", "-o"])
        .arg(out)
        .args(["-e", &events.join(","), "-p", &pid.to_string()])
        .args(["--", "sleep", &format!("{seconds:.3}")])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .ok()
}

/// The counts `perf stat -x ,` wrote: event -> count.
fn read_perf(out: &std::path::Path) -> BTreeMap<String, u64> {
    let mut counts = BTreeMap::new();
    let Ok(text) = std::fs::read_to_string(out) else {
        return counts;
    };
    for line in text.lines() {
        let fields: Vec<&str> = line.split(',').collect();
        if fields.len() < 3 {
            continue;
        }
        let Ok(count) = fields[0].parse::<u64>() else {
            continue;
        };
        let name = fields[2]
            .trim_start_matches("syscalls:sys_enter_")
            .trim_start_matches("raw_syscalls:sys_enter");
        let name = if name.is_empty() { "all" } else { name };
        counts.insert(name.to_string(), count);
    }
    counts
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

/// Runs the measurement (see the module documentation).
pub(crate) fn run(options: &Options, target: Target) -> Res<()> {
    let (clients, tasks, seconds) = (options.clients, options.tasks, options.seconds);
    let work = WorkDir::create()?;
    let (raw_child, raw) = start_raw_server(&work)?;
    let ours = BaseManager::new(Address::local_tcp())
        .config(options.server_config())
        .start(registry)?;
    let server_pid = match target {
        Target::Raw => raw_child.process.pid(),
        Target::Ours | Target::Quick => ours.server_process().ok_or("no server process")?.pid(),
    };
    eprintln!("server pid {server_pid}");
    let lead = Duration::from_millis(600 + 80 * clients as u64);
    let start_us = epoch_micros() + lead.as_micros() as u64;
    let window = Window {
        target,
        start_us,
        end_us: start_us + (seconds * 1e6) as u64,
    };
    let job = Job::Throughput {
        raw: raw.tcp.clone(),
        ours: ours.address().clone(),
        tasks,
        windows: vec![window],
    };
    let mut children = Vec::new();
    for _ in 0..clients {
        children.push(spawn_client(&work, &job)?);
    }
    // The middle three fifths of the window.
    let from_us = start_us + (seconds * 0.2e6) as u64;
    let span = seconds * 0.6;
    std::thread::sleep(Duration::from_micros(
        from_us.saturating_sub(epoch_micros()),
    ));
    let client_pid = children[0].0.process.pid();
    let perf_server = work.path().join("perf-server.txt");
    let perf_client = work.path().join("perf-client.txt");
    let perf = [
        start_perf(server_pid, span, &perf_server),
        start_perf(client_pid, span, &perf_client),
    ];
    let pids: Vec<u32> = children.iter().map(|(c, _)| c.process.pid()).collect();
    let before: Vec<Sample> = pids.iter().map(|&p| sample(p)).collect();
    let server_before = sample(server_pid);
    std::thread::sleep(Duration::from_secs_f64(span));
    let server_after = sample(server_pid);
    let after: Vec<Sample> = pids.iter().map(|&p| sample(p)).collect();
    let load = load_average();
    for mut child in perf.into_iter().flatten() {
        let _ = child.wait();
    }
    let mut rate = 0.0;
    for (child, out) in children {
        child.finish(Duration::from_secs_f64(seconds + 60.0))?;
        let result: ThroughputResult = read_json(&out)?;
        let w = &result.windows[0];
        rate += w.calls as f64 / w.elapsed_s.max(1e-9);
    }
    let calls = rate * span;
    let tick_us = 1e6 / ticks_per_second();
    let per_call = |n: u64| n as f64 / calls;
    let line = |who: &str, b: Sample, a: Sample, processes: usize| {
        println!(
            "{who:<8} cpu/call {:6.2} us (user {:5.2}, sys {:5.2})  ctx/call vol {:5.2} invol {:5.2}{}",
            per_call(a.user + a.system - b.user - b.system) * tick_us,
            per_call(a.user - b.user) * tick_us,
            per_call(a.system - b.system) * tick_us,
            per_call(a.voluntary - b.voluntary),
            per_call(a.involuntary - b.involuntary),
            if processes > 1 { format!("  ({processes} processes)") } else { String::new() },
        );
    };
    println!(
        "{target:?}, {clients} clients x {tasks} tasks: {rate:.0} calls/s (load average {load})"
    );
    line("server", server_before, server_after, 1);
    let sum = |samples: &[Sample]| {
        samples.iter().fold(Sample::default(), |t, s| Sample {
            user: t.user + s.user,
            system: t.system + s.system,
            voluntary: t.voluntary + s.voluntary,
            involuntary: t.involuntary + s.involuntary,
        })
    };
    line("clients", sum(&before), sum(&after), pids.len());
    // One client's share of the calls: the rate split evenly among the clients.
    let one_client_calls = calls / clients as f64;
    for (who, out, n) in [
        ("server", &perf_server, calls),
        ("client 0", &perf_client, one_client_calls),
    ] {
        let counts = read_perf(out);
        if counts.is_empty() {
            continue;
        }
        let listed: Vec<String> = counts
            .iter()
            .filter(|(_, &c)| c as f64 / n >= 0.01)
            .map(|(name, &c)| format!("{name} {:.2}", c as f64 / n))
            .collect();
        println!("{who:<8} syscalls/call: {}", listed.join(", "));
    }
    drop(raw_child);
    ours.shutdown()?;
    Ok(())
}
