//! Cuts of real links between network namespaces (`common/netns.rs`): the server runs in one
//! namespace, its clients in others, all joined through a router namespace, and a cut makes a
//! host vanish without a FIN, an RST or an ICMP error. The liveness bound is set to 2 s on both
//! sides. Cases:
//!
//! - a client holding a `Lock` vanishes: a second client, waiting for the lock, gets it within
//!   the bound (the server dropped the silent connection and released what it held);
//! - the server's host vanishes: in every client, a call pending at the cut (a `get` of an
//!   empty queue, without a deadline) and a call made after it fail within the bound (the
//!   liveness bound, then the session's grace period of 5 s, spent trying to resume), with
//!   `SessionExpired`;
//! - a 3 s cut in the middle of 1,000 appends (each with a proxy cloned and dropped): the
//!   session resumes, the list holds each element once, in order, and its references are as
//!   they were;
//! - a lock held across a 3 s cut stays its holder's (another client cannot take it), and the
//!   holder's release works after;
//! - a cut longer than the grace period: the client's pending and later calls fail with
//!   `SessionExpired`, and the server holds none of its objects.
//!
//! Every process is this test binary, run again inside a namespace with `MANAGER_NETNS_ROLE`
//! naming its part; each prints what it did on stdout. Without root or `ip` the tests are
//! skipped, saying why.

#[macro_use]
mod common;
#[path = "common/netns.rs"]
mod netns;

use std::sync::mpsc;
use std::time::{Duration, Instant};

use manager::sync::{ListBlockingProxy, LockBlockingProxy, QueueBlockingProxy};
use manager::{Address, BlockingManager, ConnectOptions, Error, Proxy, Server, ServerConfig};
use netns::{Host, Net, Part};

/// The liveness bound of the server and the clients.
const LIVENESS: Duration = Duration::from_secs(2);
/// The generous ceiling on how long detection may take: the bound is at most twice `LIVENESS`
/// (a silence timer re-armed when it fires), far below the 30 s default.
const CEILING: Duration = Duration::from_secs(20);
/// The longest any process is waited for.
const PATIENCE: Duration = Duration::from_secs(60);
/// How long the server keeps a broken connection's session.
const GRACE: Duration = Duration::from_secs(5);
/// A short cut: past the liveness bound, within the grace period.
const SHORT_CUT: Duration = Duration::from_secs(3);
const ROLE: &str = "MANAGER_NETNS_ROLE";

// The parts the processes play.

fn connect(address: &str) -> manager::Result<BlockingManager> {
    BlockingManager::connect_with(
        &Address::tcp(address),
        &manager::process::authkey(),
        &ConnectOptions::new().liveness_timeout(LIVENESS),
    )
}

/// Blocks until stdin closes (the test ended, or killed this process's parent side).
fn until_stdin_closes() {
    let mut line = String::new();
    while matches!(std::io::stdin().read_line(&mut line), Ok(n) if n > 0) {
        line.clear();
    }
}

/// Serves the built-in types at `address` with the liveness bound until stdin closes.
fn serve(address: &str) -> manager::Result<()> {
    let runtime = tokio::runtime::Runtime::new()?;
    let mut config = ServerConfig::default();
    config.liveness_timeout = LIVENESS;
    config.session_grace = GRACE;
    let server = runtime.block_on(Server::bind(
        manager::sync::registry(),
        &Address::tcp(address),
        manager::process::authkey(),
        config,
    ))?;
    println!("listening {}", server.address());
    let stop = server.shutdown_handle();
    std::thread::spawn(move || {
        until_stdin_closes();
        stop.shutdown();
    });
    runtime.block_on(server.serve_forever())
}

/// Creates a lock, acquires it, prints its token, and holds it until stdin closes.
fn hold(address: &str) -> manager::Result<()> {
    let manager = connect(address)?;
    let lock = manager.lock()?;
    lock.acquire()?;
    let token = serde_json::to_string(lock.base().token()).expect("a token as JSON");
    println!("holding {token}");
    until_stdin_closes();
    Ok(())
}

/// Attaches to the lock of `token`, waits for it, and says when it has it.
fn wait(address: &str, token: &str) -> manager::Result<()> {
    let manager = connect(address)?;
    let token: manager::Token = serde_json::from_str(token).expect("a token as JSON");
    let lock: LockBlockingProxy = manager.attach(&token)?;
    println!("waiting");
    lock.acquire()?;
    println!("acquired");
    until_stdin_closes();
    Ok(())
}

/// A call pending (a `get` of an empty queue, no deadline) and, after `cut` on stdin, a call
/// more: prints how each ended and when, after the cut.
fn call(address: &str) -> manager::Result<()> {
    let manager = connect(address)?;
    let list: ListBlockingProxy<i64> = manager.list(&[])?;
    let queue: QueueBlockingProxy<i64> = manager.queue(0)?;
    let (done, pending) = mpsc::channel();
    std::thread::spawn(move || {
        let got = queue.get();
        let _ = done.send((got, Instant::now()));
    });
    list.append(&1)?; // the get was sent before this call's reply came
    println!("ready");
    let mut line = String::new();
    std::io::stdin().read_line(&mut line)?;
    let cut = Instant::now();
    let later = list.append(&2);
    let later_after = cut.elapsed();
    let (pending, ended) = pending.recv().expect("the pending call ends");
    let pending_after = ended.saturating_duration_since(cut);
    let word = |result: &manager::Result<()>| outcome_word(result);
    println!(
        "outcome pending={} later={} pending_ms={} later_ms={}",
        word(&pending.map(|_| ())),
        word(&later),
        pending_after.as_millis(),
        later_after.as_millis()
    );
    Ok(())
}

/// One word for how a call ended.
fn outcome_word<T: std::fmt::Debug>(result: &manager::Result<T>) -> String {
    match result {
        Err(Error::ConnectionClosed(_)) => "closed".to_string(),
        Err(Error::SessionExpired(_)) => "expired".to_string(),
        other => format!("{other:?}").replace(' ', "_"),
    }
}

/// Milliseconds since the epoch: the parts and the test share the machine's clock.
fn wall_ms() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .as_millis()
}

/// After `go` on stdin, 1,000 appends (each with a clone and a drop of the proxy, an incref
/// and a release) paced over about 5 s; then says whether the list holds each once, in
/// order, whether its references are as before, the longest wait for one append, and when
/// that wait ended (wall clock).
///
/// With `arrived`, the appends go through a proxy that arrived inside a value (the item of
/// another list): it reaches the server over this process's connection for the token's
/// address, not the manager's, and that connection must resume as the manager's does.
fn append(address: &str, arrived: bool) -> manager::Result<()> {
    let manager = connect(address)?;
    let made: ListBlockingProxy<u64> = manager.list(&[])?;
    let list = match arrived {
        true => {
            let outer: ListBlockingProxy<ListBlockingProxy<u64>> = manager.list(&[made])?;
            outer.get(0)?
        }
        false => made,
    };
    let id = list.base().token().id;
    let refs = |manager: &BlockingManager| -> manager::Result<Option<u64>> {
        let info = manager.debug_info()?;
        Ok(info.objects.iter().find(|o| o.id == id).map(|o| o.refcount))
    };
    let before = refs(&manager)?;
    println!("ready");
    let mut line = String::new();
    std::io::stdin().read_line(&mut line)?;
    let (mut longest, mut longest_end) = (Duration::ZERO, 0);
    for i in 0..1000u64 {
        let start = Instant::now();
        list.append(&i)?;
        drop(list.clone());
        if start.elapsed() > longest {
            (longest, longest_end) = (start.elapsed(), wall_ms());
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let got = list.to_vec()?;
    println!(
        "outcome in_order={} refs_kept={} longest_ms={} longest_end={longest_end}",
        got == (0..1000).collect::<Vec<u64>>(),
        refs(&manager)? == before,
        longest.as_millis(),
    );
    Ok(())
}

/// Creates a lock, acquires it and prints its token; on `release` releases it and says how
/// that went.
fn hold_then_release(address: &str) -> manager::Result<()> {
    let manager = connect(address)?;
    let lock = manager.lock()?;
    lock.acquire()?;
    let token = serde_json::to_string(lock.base().token()).expect("a token as JSON");
    println!("holding {token}");
    let mut line = String::new();
    std::io::stdin().read_line(&mut line)?;
    println!("released {}", outcome_word(&lock.release()));
    until_stdin_closes();
    Ok(())
}

/// Answers, one line each: `count` with the server's number of objects, `try TOKEN` with
/// whether the lock of TOKEN could be taken at once (given back if it was).
fn watch(address: &str) -> manager::Result<()> {
    let manager = connect(address)?;
    println!("watching");
    let mut line = String::new();
    while std::io::stdin().read_line(&mut line)? > 0 {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["count"] => println!("objects {}", manager.number_of_objects()?),
            ["try", token] => {
                let token: manager::Token = serde_json::from_str(token).expect("a token");
                let lock: LockBlockingProxy = manager.attach(&token)?;
                let took = lock.acquire_timeout(Duration::ZERO)?;
                if took {
                    lock.release()?;
                }
                println!("lock {}", if took { "free" } else { "held" });
            }
            _ => panic!("unknown command {line:?}"),
        }
        line.clear();
    }
    Ok(())
}

/// Holds a queue and an acquired lock, with a `get` pending; after `cut` on stdin, one call
/// more; prints how both ended and when, after the cut.
fn expire(address: &str) -> manager::Result<()> {
    let manager = connect(address)?;
    let queue: QueueBlockingProxy<i64> = manager.queue(0)?;
    let lock = manager.lock()?;
    lock.acquire()?;
    let (done, pending) = mpsc::channel();
    {
        let queue = queue.clone();
        std::thread::spawn(move || {
            let got = queue.get();
            let _ = done.send((got, Instant::now()));
        });
    }
    let _ = manager.number_of_objects()?; // the get was sent before this answer came
    println!("ready");
    let mut line = String::new();
    std::io::stdin().read_line(&mut line)?;
    let cut = Instant::now();
    let later = queue.put(&1);
    let later_after = cut.elapsed();
    let (pending, ended) = pending.recv().expect("the pending call ends");
    println!(
        "outcome pending={} later={} pending_ms={} later_ms={}",
        outcome_word(&pending),
        outcome_word(&later),
        ended.saturating_duration_since(cut).as_millis(),
        later_after.as_millis()
    );
    std::mem::forget((queue, lock, manager));
    Ok(())
}

fn play(role: &str) -> ! {
    // Logs to stderr (the test's) at the level MANAGER_LOG names, for whoever looks.
    manager::process::init_logging();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match (role, args.as_slice()) {
        ("server", [address]) => serve(address),
        ("holder", [address]) => hold(address),
        ("waiter", [address, token]) => wait(address, token),
        ("caller", [address]) => call(address),
        ("appender", [address]) => append(address, false),
        ("arrived_appender", [address]) => append(address, true),
        ("releaser", [address]) => hold_then_release(address),
        ("watcher", [address]) => watch(address),
        ("expirer", [address]) => expire(address),
        _ => panic!("unknown part {role} {args:?}"),
    };
    if let Err(e) = result {
        println!("failed {e}");
        std::process::exit(1);
    }
    std::process::exit(0)
}

// The test side.

/// Starts `role` on `host` with `args`, this binary's authkey, and [`PATIENCE`] for its lines.
fn part(net: &Net, host: Host, role: &str, args: &[&str]) -> Part {
    let key = format!("netns-{}", std::process::id());
    Part::start(
        net,
        host,
        &[(ROLE, role), ("MANAGER_AUTHKEY", &key)],
        args,
        PATIENCE,
    )
}

/// The network, or `None` (printed) where namespaces cannot be made.
fn network(hosts: &[Host]) -> Option<Net> {
    if let Some(why) = netns::unavailable() {
        println!("skipped: {why}");
        return None;
    }
    match Net::make(hosts) {
        Ok(net) => Some(net),
        Err(why) => {
            println!("skipped: cannot make network namespaces here: {why}");
            None
        }
    }
}

/// The server, listening in its namespace: the part and the address it serves on.
fn server(net: &Net) -> (Part, String) {
    let server = part(
        net,
        Host::Server,
        "server",
        &[&format!("{}:0", Host::Server.ip())],
    );
    let address = server.expect("listening");
    (server, address)
}

fn a_vanished_lock_holder_frees_the_lock_within_the_bound() {
    let Some(net) = network(&[Host::Server, Host::A, Host::B]) else {
        return;
    };
    let (_server, address) = server(&net);
    let mut holder = part(&net, Host::A, "holder", &[&address]);
    let token = holder.expect("holding");
    let waiter = part(&net, Host::B, "waiter", &[&address, &token]);
    waiter.expect("waiting");
    // The waiter's acquire reaches the server and waits there behind the holder.
    std::thread::sleep(Duration::from_millis(300));
    let cut = Instant::now();
    net.cut(Host::A).expect("cut the holder's host off");
    waiter.expect("acquired");
    let freed = cut.elapsed();
    println!("the lock was free {freed:?} after the holder's host vanished");
    assert!(
        freed < CEILING,
        "{freed:?}: the liveness bound did not hold"
    );
    assert!(holder.is_running(), "the holder did not exit: it vanished");
}

fn every_call_fails_within_the_bound_when_the_servers_host_vanishes() {
    let Some(net) = network(&[Host::Server, Host::A, Host::B]) else {
        return;
    };
    let (_server, address) = server(&net);
    let mut callers: Vec<Part> = [Host::A, Host::B]
        .into_iter()
        .map(|host| part(&net, host, "caller", &[&address]))
        .collect();
    for caller in &callers {
        caller.expect("ready");
    }
    net.cut(Host::Server).expect("cut the server's host off");
    for caller in &mut callers {
        caller.say("cut");
    }
    for caller in &callers {
        let outcome = caller.expect("outcome");
        println!("a client after the server's host vanished: {outcome}");
        // The clients try to resume until the grace period has passed.
        assert!(
            outcome.starts_with("pending=expired later=expired "),
            "{outcome}"
        );
        for field in outcome.split(' ') {
            if let Some((_, ms)) = field
                .split_once('=')
                .filter(|(key, _)| key.ends_with("_ms"))
            {
                let ms: u64 = ms.parse().expect("milliseconds");
                assert!(Duration::from_millis(ms) < CEILING, "{outcome}");
            }
        }
    }
}

/// A 3 s cut in the middle of 1,000 appends made by `role` (see `append`): each element
/// once, in order, references kept. Prints the time from the end of the cut to the appends
/// going on.
fn short_cut_in_appends(role: &str) {
    let Some(net) = network(&[Host::Server, Host::A]) else {
        return;
    };
    let (_server, address) = server(&net);
    let mut appender = part(&net, Host::A, role, &[&address]);
    appender.expect("ready");
    appender.say("go");
    std::thread::sleep(Duration::from_millis(1500));
    net.cut(Host::A).expect("cut the client's host off");
    std::thread::sleep(SHORT_CUT);
    net.heal(Host::A).expect("bring the client's host back");
    let healed = wall_ms();
    let outcome = appender.expect("outcome");
    println!("{role}: after a {SHORT_CUT:?} cut in 1,000 appends: {outcome}");
    assert!(
        outcome.starts_with("in_order=true refs_kept=true "),
        "{outcome}"
    );
    let end: u128 = outcome
        .rsplit_once("longest_end=")
        .and_then(|(_, ms)| ms.parse().ok())
        .expect("longest_end");
    println!(
        "the first append after the cut completed {} ms after the link came back",
        end.saturating_sub(healed)
    );
}

/// The short cut, through the manager's own proxy.
fn a_short_cut_loses_and_repeats_no_call() {
    short_cut_in_appends("appender");
}

/// The same cut, for a proxy that arrived inside a value: its connection (made from its
/// token) resumes too, and nothing is lost or repeated.
fn a_proxy_that_arrived_in_a_value_resumes_after_a_short_cut() {
    short_cut_in_appends("arrived_appender");
}

/// A lock held across a 3 s cut stays its holder's, and the holder releases it after.
fn a_lock_held_across_a_short_cut_stays_held() {
    let Some(net) = network(&[Host::Server, Host::A, Host::B]) else {
        return;
    };
    let (_server, address) = server(&net);
    let mut holder = part(&net, Host::A, "releaser", &[&address]);
    let token = holder.expect("holding");
    let mut watcher = part(&net, Host::B, "watcher", &[&address]);
    watcher.expect("watching");
    let probe = |watcher: &mut Part| {
        watcher.say(&format!("try {token}"));
        watcher.expect("lock")
    };
    net.cut(Host::A).expect("cut the holder's host off");
    // Past the liveness bounds of both sides: the server may have taken the socket for broken.
    std::thread::sleep(SHORT_CUT);
    assert_eq!(probe(&mut watcher), "held", "the lock left during the cut");
    net.heal(Host::A).expect("bring the holder's host back");
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(probe(&mut watcher), "held", "the lock left at the resume");
    holder.say("release");
    assert_eq!(holder.expect("released"), "Ok(())");
    assert_eq!(probe(&mut watcher), "free");
}

/// A cut longer than the grace period: clear errors on the client, nothing left on the server.
fn a_cut_past_the_grace_period_expires_the_session_and_frees_everything() {
    let Some(net) = network(&[Host::Server, Host::A, Host::B]) else {
        return;
    };
    let (_server, address) = server(&net);
    let mut watcher = part(&net, Host::B, "watcher", &[&address]);
    watcher.expect("watching");
    let count = |watcher: &mut Part| -> u64 {
        watcher.say("count");
        watcher.expect("objects").parse().expect("a number")
    };
    let baseline = count(&mut watcher);
    let mut expirer = part(&net, Host::A, "expirer", &[&address]);
    expirer.expect("ready");
    assert_eq!(count(&mut watcher), baseline + 2);
    net.cut(Host::A).expect("cut the client's host off");
    let cut = Instant::now();
    expirer.say("cut");
    let outcome = expirer.expect("outcome");
    println!("a client cut off past the grace period: {outcome}");
    assert!(
        outcome.starts_with("pending=expired later=expired "),
        "{outcome}"
    );
    loop {
        let left = count(&mut watcher);
        if left == baseline {
            break;
        }
        assert!(
            cut.elapsed() < CEILING,
            "{left} objects left, {baseline} expected, {:?} after the cut",
            cut.elapsed()
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    println!(
        "the server released the session {:?} after the cut",
        cut.elapsed()
    );
}

fn main() {
    manager::init();
    if let Ok(role) = std::env::var(ROLE) {
        play(&role);
    }
    common::run_tests(vec![
        case!(a_vanished_lock_holder_frees_the_lock_within_the_bound),
        case!(every_call_fails_within_the_bound_when_the_servers_host_vanishes),
        case!(a_short_cut_loses_and_repeats_no_call),
        case!(a_proxy_that_arrived_in_a_value_resumes_after_a_short_cut),
        case!(a_lock_held_across_a_short_cut_stays_held),
        case!(a_cut_past_the_grace_period_expires_the_session_and_frees_everything),
    ]);
}
