//! A small network of Linux network namespaces, for tests and benchmarks that cut real links:
//! a router namespace and up to three hosts (the server's and two clients'), each host joined
//! to the router by a veth pair. Addresses are private (10.213.K.1 for host K, 10.213.K.2 for
//! the router's end) and exist only inside these namespaces; nothing is added to the machine's
//! own namespace. Names carry a suffix unique to this process and call, and everything is
//! removed when the [`Net`] is dropped, also when a test fails.
//!
//! [`Net::cut`] makes a host vanish without a FIN, an RST or an ICMP error: in the router, a
//! blackhole route for the host's address (silently discards what is sent to it), then the
//! router's end of its link set down (nothing it sends arrives). [`Net::heal`] undoes it.
//! (Included with `#[path]` by the binaries that use it; needs root and `ip`.)

#![allow(
    unreachable_pub,
    reason = "test helpers, shared by test and bench binaries"
)]
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc::{self, Receiver};
use std::time::Duration;

/// One host of the network.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Host {
    /// The server's host.
    Server,
    /// A first client host.
    A,
    /// A second client host.
    B,
}

impl Host {
    fn index(self) -> u8 {
        match self {
            Host::Server => 1,
            Host::A => 2,
            Host::B => 3,
        }
    }

    fn tag(self) -> &'static str {
        match self {
            Host::Server => "s",
            Host::A => "a",
            Host::B => "b",
        }
    }

    /// The host's address.
    pub fn ip(self) -> String {
        format!("10.213.{}.1", self.index())
    }
}

/// The namespaces made for one test; removed when dropped.
pub struct Net {
    router: String,
    hosts: Vec<(Host, String)>,
    made: Vec<String>,
}

/// Runs `ip ARGS`; its stderr on failure.
fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run `ip`: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "`ip {}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Why namespaces cannot be made here, if they cannot: not root, or no `ip`.
pub fn unavailable() -> Option<String> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Some("not running as root: network namespaces need it".into());
    }
    match Command::new("ip").arg("-V").output() {
        Ok(out) if out.status.success() => None,
        _ => Some("no working `ip` command (iproute2)".into()),
    }
}

impl Net {
    /// Makes the router and `hosts`, each linked to the router, with forwarding on.
    pub fn make(hosts: &[Host]) -> Result<Net, String> {
        static CALLS: AtomicU32 = AtomicU32::new(0);
        let suffix = format!(
            "{}-{}",
            std::process::id(),
            CALLS.fetch_add(1, Ordering::Relaxed)
        );
        let mut net = Net {
            router: format!("mgr-r-{suffix}"),
            hosts: Vec::new(),
            made: Vec::new(),
        };
        let router = net.router.clone();
        net.add_namespace(&router)?;
        net.run(&router, &["ip", "link", "set", "lo", "up"])?;
        net.run(
            &router,
            &["sh", "-c", "echo 1 > /proc/sys/net/ipv4/ip_forward"],
        )?;
        for &host in hosts {
            let name = format!("mgr-{}-{suffix}", host.tag());
            net.add_namespace(&name)?;
            net.hosts.push((host, name.clone()));
            let (k, link) = (host.index(), format!("r-{}", host.tag()));
            net.run(
                &router,
                &[
                    "ip", "link", "add", "name", &link, "type", "veth", "peer", "name", "e0",
                    "netns", &name,
                ],
            )?;
            net.run(
                &router,
                &[
                    "ip",
                    "addr",
                    "add",
                    &format!("10.213.{k}.2/30"),
                    "dev",
                    &link,
                ],
            )?;
            net.run(&router, &["ip", "link", "set", &link, "up"])?;
            net.run(
                &name,
                &[
                    "ip",
                    "addr",
                    "add",
                    &format!("10.213.{k}.1/30"),
                    "dev",
                    "e0",
                ],
            )?;
            net.run(&name, &["ip", "link", "set", "e0", "up"])?;
            net.run(&name, &["ip", "link", "set", "lo", "up"])?;
            net.run(
                &name,
                &[
                    "ip",
                    "route",
                    "add",
                    "default",
                    "via",
                    &format!("10.213.{k}.2"),
                ],
            )?;
        }
        Ok(net)
    }

    fn add_namespace(&mut self, name: &str) -> Result<(), String> {
        ip(&["netns", "add", name])?;
        self.made.push(name.to_string());
        Ok(())
    }

    /// Runs `command` inside namespace `ns` and waits for it.
    fn run(&self, ns: &str, command: &[&str]) -> Result<(), String> {
        let mut args = vec!["netns", "exec", ns];
        args.extend_from_slice(command);
        ip(&args)
    }

    fn namespace(&self, host: Host) -> &str {
        self.hosts
            .iter()
            .find(|(h, _)| *h == host)
            .map(|(_, name)| name.as_str())
            .expect("a host of this network")
    }

    /// A command that runs `program` inside `host`'s namespace.
    pub fn command(&self, host: Host, program: &Path) -> Command {
        let mut command = Command::new("ip");
        command
            .args(["netns", "exec", self.namespace(host)])
            .arg(program);
        command
    }

    /// The bytes that crossed `host`'s link so far, received and sent.
    pub fn link_bytes(&self, host: Host) -> Result<u64, String> {
        let out = Command::new("ip")
            .args(["netns", "exec", self.namespace(host), "cat"])
            .args([
                "/sys/class/net/e0/statistics/rx_bytes",
                "/sys/class/net/e0/statistics/tx_bytes",
            ])
            .output()
            .map_err(|e| format!("cannot read the link's counters: {e}"))?;
        String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .map(|n| {
                n.parse::<u64>()
                    .map_err(|e| format!("a counter {n:?}: {e}"))
            })
            .sum()
    }

    /// Makes `host` vanish, silently: nothing sent to it or by it crosses the router again, and
    /// no one is told (no FIN, RST or ICMP error).
    pub fn cut(&self, host: Host) -> Result<(), String> {
        let router = &self.router;
        self.run(
            router,
            &[
                "ip",
                "route",
                "add",
                "blackhole",
                &format!("{}/32", host.ip()),
            ],
        )?;
        self.run(
            router,
            &["ip", "link", "set", &format!("r-{}", host.tag()), "down"],
        )
    }

    /// Undoes [`Net::cut`]: `host` is reachable again (its connections, if their ends still
    /// live, go on).
    pub fn heal(&self, host: Host) -> Result<(), String> {
        let router = &self.router;
        self.run(
            router,
            &["ip", "link", "set", &format!("r-{}", host.tag()), "up"],
        )?;
        self.run(
            router,
            &[
                "ip",
                "route",
                "del",
                "blackhole",
                &format!("{}/32", host.ip()),
            ],
        )
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        for name in self.made.iter().rev() {
            if let Err(e) = ip(&["netns", "del", name]) {
                eprintln!("cannot remove network namespace {name}: {e}");
            }
        }
    }
}

/// A process playing a part inside a namespace: this binary again, run by [`Net::command`]
/// with `env` (which tells it its part) and `args`. It talks in lines on stdin and stdout;
/// it is killed and reaped when dropped.
pub struct Part {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Receiver<String>,
    patience: Duration,
}

impl Part {
    /// Starts the part on `host`; [`Part::expect`] waits at most `patience` for a line.
    pub fn start(
        net: &Net,
        host: Host,
        env: &[(&str, &str)],
        args: &[&str],
        patience: Duration,
    ) -> Part {
        let exe = std::env::current_exe().expect("this binary");
        let mut command = net.command(host, &exe);
        command
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped());
        for (name, value) in env {
            command.env(name, value);
        }
        let mut child = command.spawn().expect("start a part in a namespace");
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        Part {
            child,
            stdin,
            lines,
            patience,
        }
    }

    /// The rest of the next line, which must start with `word`.
    pub fn expect(&self, word: &str) -> String {
        let line = self
            .lines
            .recv_timeout(self.patience)
            .unwrap_or_else(|_| panic!("no {word:?} line in time"));
        match line.strip_prefix(word) {
            Some(rest) => rest.trim().to_string(),
            None => panic!("expected {word:?}, got {line:?}"),
        }
    }

    /// Sends the part a line.
    pub fn say(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().expect("stdin is open");
        writeln!(stdin, "{line}").expect("write to a part");
    }

    /// Whether the part's process has not exited.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for Part {
    fn drop(&mut self) {
        drop(self.stdin.take());
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
