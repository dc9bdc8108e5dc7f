//! The differential test: every script of `tests/python_diff/` is run by every CPython 3.8+
//! found on the machine, once against CPython's own `SyncManager` server (started by the same
//! interpreter) and once against this server, and their outputs are compared line by line. A
//! line may differ only when `tests/python_diff/allowed.txt` lists it, with the reason; any
//! other difference fails the test, and prints both lines.
//!
//! The interpreters run in parallel threads, each with its own pair of servers, and each
//! interpreter runs all the scripts in one process per server (`_run.py`), so that the test
//! costs a few interpreter starts per version, not one per script.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::python::interpreters;
use common::InProcessServer;
use manager::{Address, AuthKey, ServerConfig};

const KEY: &str = "diff-key";

/// How long one interpreter's run of every script may take before it is a failure (a hang).
const RUN_LIMIT: Duration = Duration::from_secs(240);

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python_diff")
}

/// The scripts: every `*.py` of the directory but the helpers (`_*.py`), in name order.
fn scripts() -> Vec<PathBuf> {
    let mut scripts: Vec<PathBuf> = std::fs::read_dir(dir())
        .expect("tests/python_diff")
        .flatten()
        .map(|entry| entry.path())
        .filter(|path| {
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
            name.ends_with(".py") && !name.starts_with('_')
        })
        .collect();
    scripts.sort();
    scripts
}

/// One allowed difference: a script and the label of one of its lines, and why.
struct Allowed {
    script: String,
    label: String,
    reason: String,
}

/// `allowed.txt`: `script | label | reason` lines; `#` starts a comment.
fn allowed() -> Vec<Allowed> {
    let text = std::fs::read_to_string(dir().join("allowed.txt")).expect("allowed.txt");
    text.lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .map(|line| {
            let parts: Vec<&str> = line.splitn(3, '|').map(str::trim).collect();
            assert!(
                parts.len() == 3 && parts.iter().all(|p| !p.is_empty()),
                "allowed.txt: {line:?} is not `script | label | reason`"
            );
            Allowed {
                script: parts[0].to_string(),
                label: parts[1].to_string(),
                reason: parts[2].to_string(),
            }
        })
        .collect()
}

/// Kills the child when dropped, so that no server outlives a failed test.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// CPython's own SyncManager server, run by `python`; its port.
fn cpython_server(python: &Path) -> (Killed, u16) {
    let mut child = Command::new(python)
        .arg(dir().join("_serve.py"))
        .arg(KEY)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start CPython's server");
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("read the port");
    let port = line
        .trim()
        .parse()
        .unwrap_or_else(|_| panic!("{}: no port from _serve.py: {line:?}", python.display()));
    (Killed(child), port)
}

/// This server, with the built-in types and a CPython address; the CPython port.
fn our_server() -> (InProcessServer, u16) {
    let mut config = ServerConfig::default();
    config.python_address = Some(Address::tcp("127.0.0.1:0"));
    let server = InProcessServer::start_with(
        manager::sync::registry(),
        Address::local_tcp(),
        AuthKey::from(KEY),
        config,
    );
    let Some(Address::Tcp(at)) = server.connect().connection().python_address().cloned() else {
        panic!("the server takes no CPython clients");
    };
    let port = at
        .rsplit_once(':')
        .expect("host:port")
        .1
        .parse()
        .expect("port");
    (server, port)
}

/// Starts `_run.py` with every script against the server at `port`.
fn start_run(python: &Path, port: u16, scripts: &[PathBuf]) -> Killed {
    Killed(
        Command::new(python)
            .arg(dir().join("_run.py"))
            .args(["127.0.0.1", &port.to_string(), KEY])
            .args(scripts)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run the scripts"),
    )
}

/// Waits for a run to end (at most [`RUN_LIMIT`]); its output, script by script.
fn finish_run(mut run: Killed, what: &str) -> BTreeMap<String, Vec<String>> {
    let deadline = Instant::now() + RUN_LIMIT;
    let mut stdout = run.0.stdout.take().expect("stdout");
    let reader = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stdout.read_to_string(&mut text);
        text
    });
    loop {
        match run.0.try_wait().expect("wait") {
            Some(_) => break,
            None if Instant::now() > deadline => {
                panic!("{what}: the scripts did not finish in {RUN_LIMIT:?}")
            }
            None => std::thread::sleep(Duration::from_millis(20)),
        }
    }
    let text = reader.join().expect("reader");
    let mut stderr = String::new();
    if let Some(mut err) = run.0.stderr.take() {
        let _ = err.read_to_string(&mut stderr);
    }
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut current = None;
    for line in text.lines() {
        if let Some(name) = line.strip_prefix("=== ") {
            current = Some(name.to_string());
            out.entry(name.to_string()).or_default();
        } else if let Some(name) = &current {
            out.entry(name.clone()).or_default().push(line.to_string());
        }
    }
    assert!(
        !out.is_empty(),
        "{what}: _run.py printed nothing:\n{text}\n{stderr}"
    );
    out
}

fn version(python: &Path) -> String {
    let out = Command::new(python)
        .args(["-c", "import platform; print(platform.python_version())"])
        .output()
        .expect("python version");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// The label of a line: what comes before its first `": "`.
fn label(line: &str) -> &str {
    line.split_once(": ").map_or(line, |(label, _)| label)
}

#[test]
fn python_scripts_print_the_same_against_cpython_and_this_server() {
    let scripts = scripts();
    assert!(scripts.len() >= 5, "the scripts are missing: {scripts:?}");
    let allowed = allowed();
    let runs: Vec<_> = interpreters()
        .into_iter()
        .map(|python| {
            let scripts = scripts.clone();
            std::thread::spawn(move || {
                let version = version(&python);
                let (_cpython, cpython_port) = cpython_server(&python);
                let (_ours, our_port) = our_server();
                let theirs = start_run(&python, cpython_port, &scripts);
                let ours = start_run(&python, our_port, &scripts);
                let theirs = finish_run(theirs, &format!("{version}, CPython's server"));
                let ours = finish_run(ours, &format!("{version}, this server"));
                (version, theirs, ours)
            })
        })
        .collect();
    let mut failures = Vec::new();
    let mut used = BTreeSet::new();
    let mut compared = 0;
    let mut versions = Vec::new();
    for run in runs {
        let (version, theirs, ours) = run.join().expect("a run panicked");
        versions.push(version.clone());
        for script in &scripts {
            let name = script.file_name().unwrap().to_string_lossy().to_string();
            let (a, b) = (
                theirs.get(&name).cloned().unwrap_or_default(),
                ours.get(&name).cloned().unwrap_or_default(),
            );
            assert!(
                !a.is_empty(),
                "{version} {name}: no output from CPython's server"
            );
            for i in 0..a.len().max(b.len()) {
                let (x, y) = (a.get(i), b.get(i));
                compared += 1;
                if x == y {
                    continue;
                }
                let (x, y) = (x.map_or("(no line)", |s| s), y.map_or("(no line)", |s| s));
                let permitted = allowed.iter().position(|entry| {
                    entry.script == name && entry.label == label(x) && entry.label == label(y)
                });
                match permitted {
                    Some(entry) => {
                        used.insert(entry);
                    }
                    None => failures.push(format!(
                        "{version} {name} line {}:\n  CPython's server: {x}\n  this server:      {y}",
                        i + 1
                    )),
                }
            }
        }
    }
    eprintln!(
        "compared {compared} lines of {} scripts under CPython {}",
        scripts.len(),
        versions.join(", ")
    );
    for (i, entry) in allowed.iter().enumerate() {
        if !used.contains(&i) {
            eprintln!(
                "allowed.txt: {} | {} did not differ ({})",
                entry.script, entry.label, entry.reason
            );
        }
    }
    assert!(
        failures.is_empty(),
        "{} lines differ between CPython's own server and this one (compared {compared}); \
         fix them, or list them with their reason in tests/python_diff/allowed.txt:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
