//! The `manager` command as a user runs it: `manager serve` in a child process, `manager info`
//! and `manager shutdown` against it, signals, Unix sockets, authkey sources and errors.
//!
//! Every child process is owned by a guard that kills and reaps it if a test fails; waits are
//! bounded polls, and no test asserts how long anything took.

use std::io::{BufRead, BufReader, Read};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc::{self, Receiver};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use manager::{Address, BaseManager, Proxy};

const BIN: &str = env!("CARGO_BIN_EXE_manager");

/// The most any process is waited for before the test gives up on it.
const PATIENCE: Duration = Duration::from_secs(60);

fn unique(tag: &str) -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    format!(
        "{tag}-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

/// A distinctive authkey, easy to look for in output.
fn new_key(tag: &str) -> String {
    format!("Sekr1t-{}-never-printed", unique(tag))
}

/// `manager ARGS`, with no authkey in its environment and verbose logs (so that a key leaking
/// into a log line would show).
fn manager(args: &[&str]) -> Command {
    let mut command = Command::new(BIN);
    command
        .args(args)
        .env_remove("MANAGER_AUTHKEY")
        .env("MANAGER_LOG", "debug")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    command
}

/// A running `manager` process. Dropping it kills and reaps the process if it is still running.
struct Running {
    child: Child,
    lines: Receiver<String>,
    stdout: Option<JoinHandle<String>>,
    stderr: Option<JoinHandle<String>>,
}

/// How a process ended, and everything it printed.
#[derive(Debug)]
struct Finished {
    status: ExitStatus,
    stdout: String,
    stderr: String,
}

impl Finished {
    fn code(&self) -> Option<i32> {
        self.status.code()
    }

    fn assert_success(&self, what: &str) {
        assert!(
            self.status.success(),
            "{what} failed with {}\nstdout:\n{}\nstderr:\n{}",
            self.status,
            self.stdout,
            self.stderr
        );
    }

    /// Both streams, for looking for a leaked key.
    fn output(&self) -> String {
        format!("{}{}", self.stdout, self.stderr)
    }
}

impl Running {
    fn spawn(mut command: Command) -> Running {
        let mut child = command.spawn().expect("spawn the manager binary");
        let stdout = child.stdout.take().expect("piped stdout");
        let mut stderr = child.stderr.take().expect("piped stderr");
        let (tx, lines) = mpsc::channel();
        let stdout = std::thread::spawn(move || {
            let mut reader = BufReader::new(stdout);
            let mut all = String::new();
            let mut line = String::new();
            while matches!(reader.read_line(&mut line), Ok(n) if n > 0) {
                all.push_str(&line);
                let _ = tx.send(line.trim_end().to_string());
                line.clear();
            }
            all
        });
        let stderr = std::thread::spawn(move || {
            let mut all = Vec::new();
            let _ = stderr.read_to_end(&mut all);
            String::from_utf8_lossy(&all).into_owned()
        });
        Running {
            child,
            lines,
            stdout: Some(stdout),
            stderr: Some(stderr),
        }
    }

    fn pid(&self) -> libc::pid_t {
        self.child.id() as libc::pid_t
    }

    /// The next line of stdout; fails the test (after killing the process, to show its
    /// stderr) if none comes.
    fn next_line(&mut self) -> String {
        match self.lines.recv_timeout(PATIENCE) {
            Ok(line) => line,
            Err(_) => {
                let _ = self.child.kill();
                let finished = self.wait();
                panic!("no line on stdout; the process printed:\n{finished:#?}");
            }
        }
    }

    fn signal(&self, signal: libc::c_int) {
        // SAFETY: kill(2) with the id of our own child, which is not reaped yet.
        let rc = unsafe { libc::kill(self.pid(), signal) };
        assert_eq!(rc, 0, "kill({}, {signal})", self.pid());
    }

    /// Waits for the process to end (killing it if it does not within `PATIENCE`, which
    /// fails the test) and collects its output.
    fn wait(&mut self) -> Finished {
        let deadline = Instant::now() + PATIENCE;
        let status = loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                break status;
            }
            if Instant::now() >= deadline {
                let _ = self.child.kill();
                let status = self.child.wait().expect("reap the killed process");
                let stderr = self.stderr.take().map(join).unwrap_or_default();
                panic!("the process did not end in time (killed: {status}); stderr:\n{stderr}");
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        Finished {
            status,
            stdout: self.stdout.take().map(join).unwrap_or_default(),
            stderr: self.stderr.take().map(join).unwrap_or_default(),
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

fn join(handle: JoinHandle<String>) -> String {
    handle.join().unwrap_or_default()
}

/// Runs a command to its end.
fn run(command: Command) -> Finished {
    Running::spawn(command).wait()
}

/// `manager serve` in the background, once it has announced its address.
struct Served {
    process: Running,
    address: String,
}

impl Served {
    /// Starts `command` (a `manager serve ...` command line) and reads `serving on ADDR`.
    fn start(command: Command) -> Served {
        let mut process = Running::spawn(command);
        let line = process.next_line();
        let address = line
            .strip_prefix("serving on ")
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
            .to_string();
        Served { process, address }
    }

    fn address(&self) -> Address {
        self.address.parse().expect("the announced address parses")
    }
}

/// `manager serve --address ADDR` with `MANAGER_AUTHKEY=key`.
fn serve(address: &str, key: &str) -> Served {
    let mut command = manager(&["serve", "--address", address]);
    command.env("MANAGER_AUTHKEY", key);
    Served::start(command)
}

/// `manager ARGS` with `MANAGER_AUTHKEY=key`.
fn client(args: &[&str], key: &str) -> Command {
    let mut command = manager(args);
    command.env("MANAGER_AUTHKEY", key);
    command
}

/// A directory under the system's temporary directory (short paths, for Unix sockets),
/// removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        let path = std::env::temp_dir().join(unique(&format!("mgr-cli-{tag}")));
        std::fs::create_dir_all(&path).expect("create a temporary directory");
        TempDir(path)
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn assert_no_key(outputs: &[&str], key: &str) {
    for output in outputs {
        assert!(
            !output.contains(key),
            "the authkey appears in the output:\n{output}"
        );
    }
}

#[test]
fn info_and_shutdown_over_tcp() {
    let key = new_key("tcp");
    let mut served = serve("127.0.0.1:0", &key);
    assert!(
        !served.address.ends_with(":0"),
        "the announced address has the real port: {}",
        served.address
    );

    let client_manager = BaseManager::new(served.address())
        .authkey(key.as_str())
        .connect()
        .expect("connect to the served manager");
    let list = client_manager.list(&[1, 2]).expect("create a list");
    assert_eq!(list.to_vec().expect("read the list"), vec![1, 2]);
    let list_id = list.base().token().id;

    // The table: a header, and a row for the list with its id, typeid and refcount.
    let table = run(client(&["info", "--address", &served.address], &key));
    table.assert_success("manager info");
    assert!(
        table
            .stdout
            .contains(&format!("server       {}\n", served.address)),
        "{}",
        table.stdout
    );
    // The test's connection and the one of `manager info`.
    assert!(
        table
            .stdout
            .contains("connections  2 (including this one)\n"),
        "{}",
        table.stdout
    );
    let header = table
        .stdout
        .lines()
        .find(|line| line.trim_start().starts_with("ID"))
        .unwrap_or_else(|| panic!("no table header in:\n{}", table.stdout));
    assert_eq!(
        header.split_whitespace().collect::<Vec<_>>(),
        ["ID", "TYPEID", "TYPE", "REFCOUNT"]
    );
    let row: Vec<&str> = table
        .stdout
        .lines()
        .map(|line| line.split_whitespace().collect::<Vec<_>>())
        .find(|cells| cells.get(1) == Some(&"list"))
        .unwrap_or_else(|| panic!("no row for the list in:\n{}", table.stdout));
    assert_eq!(row.len(), 4, "{row:?}");
    assert_eq!(row[0], list_id.to_string());
    assert!(row[2].contains("List"), "type name {:?}", row[2]);
    assert_eq!(row[3], "1", "the list's refcount");
    // Aligned: every row of the objects table (up to the blank line before the next table) is
    // as wide as the header where the last column ends.
    let header_end = header.len();
    for line in table
        .stdout
        .lines()
        .skip_while(|l| !l.contains("TYPEID"))
        .take_while(|l| !l.is_empty())
    {
        assert_eq!(line.len(), header_end, "misaligned row {line:?}");
    }

    // JSON: the server's DebugInfo.
    let json = run(client(&["info", "--json", "-a", &served.address], &key));
    json.assert_success("manager info --json");
    let info: serde_json::Value = serde_json::from_str(&json.stdout)
        .unwrap_or_else(|e| panic!("stdout is not JSON ({e}):\n{}", json.stdout));
    let objects = info["objects"].as_array().expect("objects is an array");
    assert_eq!(objects.len(), 1, "{info:#}");
    let object = &objects[0];
    assert_eq!(object["id"], serde_json::json!(list_id));
    assert_eq!(object["typeid"], "list");
    assert_eq!(object["refcount"], 1);
    assert!(object["type_name"].as_str().unwrap_or("").contains("List"));
    assert!(info["connections"].as_u64().expect("connections") >= 2);
    assert_eq!(info["address"]["Tcp"], served.address.as_str());

    // Shutdown: the command succeeds and the server exits 0.
    let stop = run(client(&["shutdown", "--address", &served.address], &key));
    stop.assert_success("manager shutdown");
    assert!(stop.stdout.contains("shut down"), "{}", stop.stdout);
    let ended = served.process.wait();
    ended.assert_success("manager serve after shutdown");
    drop(list);
    drop(client_manager);

    assert_no_key(
        &[
            &table.output(),
            &json.output(),
            &stop.output(),
            &ended.output(),
        ],
        &key,
    );
}

#[test]
fn a_wrong_key_is_refused_clearly() {
    let key = new_key("right");
    let wrong = new_key("wrong");
    let mut served = serve("127.0.0.1:0", &key);

    let refused = run(client(&["info", "--address", &served.address], &wrong));
    assert_eq!(refused.code(), Some(1), "{refused:#?}");
    assert!(
        refused.stderr.contains("authentication")
            && refused.stderr.contains(&served.address)
            && refused.stderr.contains("MANAGER_AUTHKEY"),
        "unclear message: {}",
        refused.stderr
    );
    assert!(refused.stdout.is_empty(), "{}", refused.stdout);
    assert!(!refused.stderr.contains("panicked"), "{}", refused.stderr);

    // The same through a key file.
    let dir = TempDir::new("wrong");
    let file = dir.path().join("key");
    std::fs::write(&file, format!("{wrong}\n")).unwrap();
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
    let file_arg = file.to_str().unwrap();
    let mut command = manager(&[
        "shutdown",
        "--address",
        &served.address,
        "--authkey-file",
        file_arg,
    ]);
    command.env("MANAGER_AUTHKEY", &key); // the file wins over the environment
    let refused_too = run(command);
    assert_eq!(refused_too.code(), Some(1), "{refused_too:#?}");
    assert!(
        refused_too.stderr.contains("authentication"),
        "{}",
        refused_too.stderr
    );

    // The server still serves the right key, then stops.
    let ok = run(client(&["info", "--address", &served.address], &key));
    ok.assert_success("manager info with the right key");
    served.process.signal(libc::SIGTERM);
    let ended = served.process.wait();
    ended.assert_success("manager serve");

    for secret in [&key, &wrong] {
        assert_no_key(
            &[
                &refused.output(),
                &refused_too.output(),
                &ok.output(),
                &ended.output(),
            ],
            secret,
        );
    }
}

#[test]
fn an_unreachable_address_fails_clearly() {
    let key = new_key("unreachable");
    // A port nobody listens on: bound, then released.
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let address = format!("127.0.0.1:{port}");
    for command in ["info", "shutdown"] {
        let failed = run(client(&[command, "--address", &address], &key));
        assert_eq!(failed.code(), Some(1), "{failed:#?}");
        assert!(
            failed.stderr.contains("cannot reach a manager server")
                && failed.stderr.contains(&address),
            "unclear message: {}",
            failed.stderr
        );
        assert!(!failed.stderr.contains("panicked"), "{}", failed.stderr);
        assert_no_key(&[&failed.output()], &key);
    }

    let dir = TempDir::new("nosock");
    let socket = format!("unix:{}", dir.path().join("absent.sock").display());
    let failed = run(client(&["info", "--address", &socket], &key));
    assert_eq!(failed.code(), Some(1), "{failed:#?}");
    assert!(
        failed.stderr.contains("cannot reach a manager server") && failed.stderr.contains(&socket),
        "{}",
        failed.stderr
    );
}

#[test]
fn a_malformed_address_is_a_usage_error() {
    let key = new_key("malformed");
    for (command, address) in [
        ("info", "nonsense"),
        ("shutdown", "localhost"),
        ("info", "host:99999"),
        ("serve", "unix:"),
    ] {
        let failed = run(client(&[command, "--address", address], &key));
        assert_eq!(failed.code(), Some(2), "{command} {address}: {failed:#?}");
        assert!(
            failed.stderr.contains("--address") && failed.stderr.contains("host:port"),
            "unclear message: {}",
            failed.stderr
        );
        assert!(!failed.stderr.contains("panicked"), "{}", failed.stderr);
    }
}

#[test]
fn sigterm_stops_the_server_with_exit_code_0() {
    let key = new_key("sigterm");
    let mut served = serve("127.0.0.1:0", &key);
    let info = run(client(&["info", "--address", &served.address], &key));
    info.assert_success("manager info");
    served.process.signal(libc::SIGTERM);
    let ended = served.process.wait();
    ended.assert_success("manager serve after SIGTERM");
    assert_no_key(&[&info.output(), &ended.output()], &key);
}

#[test]
fn sigint_stops_the_server_and_removes_its_socket() {
    let key = new_key("sigint");
    let dir = TempDir::new("sigint");
    let socket = dir.path().join("m.sock");
    let mut served = serve(&format!("unix:{}", socket.display()), &key);
    assert!(socket.exists(), "the socket file is there while serving");
    served.process.signal(libc::SIGINT);
    let ended = served.process.wait();
    ended.assert_success("manager serve after SIGINT");
    assert!(!socket.exists(), "the socket file is removed on exit");
    assert_no_key(&[&ended.output()], &key);
}

#[test]
fn unix_socket_info_and_shutdown() {
    let key = new_key("unix");
    let dir = TempDir::new("unix");
    let socket = dir.path().join("m.sock");
    let address = format!("unix:{}", socket.display());
    let mut served = serve(&address, &key);
    assert_eq!(served.address, address, "the announced address");
    assert_eq!(served.address(), Address::unix(&socket));

    let client_manager = BaseManager::new(served.address())
        .authkey(key.as_str())
        .connect()
        .expect("connect over the Unix socket");
    let list = client_manager
        .list(&["a".to_string(), "b".to_string()])
        .expect("create a list");

    let info = run(client(&["info", "--address", &address], &key));
    info.assert_success("manager info");
    assert!(
        info.stdout
            .lines()
            .any(|line| line.split_whitespace().nth(1) == Some("list")),
        "{}",
        info.stdout
    );

    let stop = run(client(&["shutdown", "--address", &address], &key));
    stop.assert_success("manager shutdown");
    let ended = served.process.wait();
    ended.assert_success("manager serve");
    assert!(!socket.exists(), "the socket file is removed on exit");
    drop(list);
    drop(client_manager);
    assert_no_key(&[&info.output(), &stop.output(), &ended.output()], &key);
}

#[test]
fn serve_refuses_to_start_without_a_key() {
    let refused = run(manager(&["serve", "--address", "127.0.0.1:0"]));
    assert_eq!(refused.code(), Some(2), "{refused:#?}");
    assert!(refused.stdout.is_empty(), "{}", refused.stdout);
    assert!(
        refused.stderr.contains("MANAGER_AUTHKEY")
            && refused.stderr.contains("--authkey-file")
            && refused.stderr.contains("--generate-authkey-file"),
        "{}",
        refused.stderr
    );
    // An empty variable is no key either.
    let mut command = manager(&["serve", "--address", "127.0.0.1:0"]);
    command.env("MANAGER_AUTHKEY", "");
    assert_eq!(run(command).code(), Some(2));
    // Nor can a client command run without one.
    let info = run(manager(&["info", "--address", "127.0.0.1:1"]));
    assert_eq!(info.code(), Some(2), "{info:#?}");
    assert!(info.stderr.contains("MANAGER_AUTHKEY"), "{}", info.stderr);
}

#[test]
fn authkey_from_a_file_trailing_newline_trimmed() {
    let key = new_key("file");
    let dir = TempDir::new("file");
    let file = dir.path().join("key");
    std::fs::write(&file, format!("{key}\n")).unwrap();
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
    let file_arg = file.to_str().unwrap();

    let mut served = Served::start(manager(&[
        "serve",
        "--address",
        "127.0.0.1:0",
        "--authkey-file",
        file_arg,
    ]));
    // A client with the key (no newline) in the environment: the newline was not part of it.
    let info = run(client(&["info", "--address", &served.address], &key));
    info.assert_success("manager info with MANAGER_AUTHKEY");
    let stop = run(manager(&[
        "shutdown",
        "--address",
        &served.address,
        "--authkey-file",
        file_arg,
    ]));
    stop.assert_success("manager shutdown with --authkey-file");
    let ended = served.process.wait();
    ended.assert_success("manager serve");
    assert_no_key(&[&info.output(), &stop.output(), &ended.output()], &key);
}

#[test]
fn generated_key_file_is_private_and_never_overwritten() {
    let dir = TempDir::new("generate");
    let file = dir.path().join("new.key");
    let file_arg = file.to_str().unwrap();
    let mut served = Served::start(manager(&[
        "serve",
        "--address",
        "127.0.0.1:0",
        "--generate-authkey-file",
        file_arg,
    ]));
    let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "the key file's mode is {mode:o}");
    let contents = std::fs::read_to_string(&file).unwrap();
    let key = contents.trim_end().to_string();
    assert_eq!(contents, format!("{key}\n"));
    assert_eq!(key.len(), 64, "{} hex digits", key.len());
    assert!(key.bytes().all(|b| b.is_ascii_hexdigit()));

    // The library and the command both authenticate with the file's key.
    let client_manager = BaseManager::new(served.address())
        .authkey(key.as_str())
        .connect()
        .expect("connect with the generated key");
    let info = run(manager(&[
        "info",
        "--json",
        "--address",
        &served.address,
        "--authkey-file",
        file_arg,
    ]));
    info.assert_success("manager info --authkey-file");
    let parsed: serde_json::Value = serde_json::from_str(&info.stdout).expect("JSON");
    assert!(parsed["objects"].as_array().is_some(), "{parsed:#}");

    // A second server asked to generate into the same file refuses and leaves it alone.
    let again = run(manager(&[
        "serve",
        "--address",
        "127.0.0.1:0",
        "--generate-authkey-file",
        file_arg,
    ]));
    assert_eq!(again.code(), Some(2), "{again:#?}");
    assert!(again.stderr.contains("already exists"), "{}", again.stderr);
    assert_eq!(std::fs::read_to_string(&file).unwrap(), contents);

    // --authkey-file and --generate-authkey-file together are a usage error.
    let both = run(manager(&[
        "serve",
        "--address",
        "127.0.0.1:0",
        "--authkey-file",
        file_arg,
        "--generate-authkey-file",
        file_arg,
    ]));
    assert_eq!(both.code(), Some(2), "{both:#?}");

    drop(client_manager);
    served.process.signal(libc::SIGTERM);
    let ended = served.process.wait();
    ended.assert_success("manager serve");
    assert_no_key(
        &[
            &info.output(),
            &again.output(),
            &both.output(),
            &ended.output(),
        ],
        &key,
    );
}

#[test]
fn help_everywhere_with_examples() {
    for args in [
        &["--help"][..],
        &["serve", "--help"],
        &["info", "--help"],
        &["shutdown", "--help"],
        &["help", "serve"],
    ] {
        let help = run(manager(args));
        help.assert_success(&format!("manager {args:?}"));
        assert!(help.stdout.contains("Usage: manager"), "{}", help.stdout);
        assert!(help.stdout.contains("Examples:"), "{}", help.stdout);
    }
    let usage = run(manager(&[]));
    assert_eq!(usage.code(), Some(2), "{usage:#?}");
}

/// Serving where other machines can reach it, without TLS, warns that the traffic after the
/// handshake is in the clear; serving on loopback does not.
#[test]
fn serving_beyond_loopback_without_tls_warns() {
    let key = new_key("exposed");
    let mut served = serve("0.0.0.0:0", &key);
    served.process.signal(libc::SIGTERM);
    let ended = served.process.wait();
    ended.assert_success("manager serve on 0.0.0.0 after SIGTERM");
    assert!(
        ended.stderr.contains("without TLS") && ended.stderr.contains("unencrypted"),
        "no warning:\n{}",
        ended.stderr
    );

    let mut local = serve("127.0.0.1:0", &key);
    local.process.signal(libc::SIGTERM);
    let ended = local.process.wait();
    ended.assert_success("manager serve on loopback after SIGTERM");
    assert!(!ended.stderr.contains("warning"), "{}", ended.stderr);
}
