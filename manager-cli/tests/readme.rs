//! The commands the documents show, checked as written, so that none of them goes stale:
//!
//! - every `cargo` command in the README, CONTRIBUTING, OPERATING and BENCHMARKS files names an
//!   example, test, bench, feature, package or fuzz target that exists (the README's two
//!   commands run as the test suite itself: `cargo test`, whose `tests/examples.rs` runs
//!   `tour`);
//! - the examples `manager --help` and `manager COMMAND --help` print, and the README's
//!   `manager` session, run in `sh` with the built `manager` first on `PATH`, their fixed
//!   addresses and paths moved to a free port and a temporary directory; every command must
//!   succeed (the README's wrong-key line must fail) and every server they start must stop
//!   with status 0.

use std::collections::BTreeSet;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_manager");

/// The repository's root (the workspace).
fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("manager-cli lives in the workspace")
        .to_path_buf()
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

/// The lines of a markdown file's fenced code blocks, with a leading `$ ` removed, paired with
/// the block's language.
fn code_lines(markdown: &str) -> Vec<(String, String)> {
    let mut lines = Vec::new();
    let mut language = None;
    for line in markdown.lines() {
        if let Some(fence) = line.trim_start().strip_prefix("```") {
            language = match language {
                None => Some(fence.trim().to_string()),
                Some(_) => None,
            };
            continue;
        }
        if let Some(language) = &language {
            let line = line.strip_prefix("$ ").unwrap_or(line);
            lines.push((language.clone(), line.to_string()));
        }
    }
    lines
}

/// A shell line without its trailing `# comment`.
fn without_comment(line: &str) -> &str {
    match line.find(" #") {
        Some(at) => line[..at].trim_end(),
        None => line.trim_end(),
    }
}

/// The word after `flag` in `words`, if `flag` is there.
fn after<'a>(words: &[&'a str], flag: &str) -> Option<&'a str> {
    words
        .iter()
        .position(|w| *w == flag)
        .and_then(|i| words.get(i + 1).copied())
}

#[test]
fn every_cargo_command_in_the_documents_names_something_that_exists() {
    let root = repo();
    let manifest = read(&root.join("Cargo.toml"));
    let features: BTreeSet<&str> = manifest
        .split("[features]")
        .nth(1)
        .expect("the root manifest has features")
        .split("\n[")
        .next()
        .unwrap()
        .lines()
        .filter_map(|l| l.split_once(" = ").map(|(name, _)| name.trim()))
        .filter(|name| !name.starts_with('#'))
        .collect();
    let packages = ["managers", "manager-core", "manager-derive", "manager-cli"];
    let exists = |path: &str| root.join(path).exists();

    let mut checked = 0;
    let mut problems = Vec::new();
    for document in [
        "README.md",
        "CONTRIBUTING.md",
        "OPERATING.md",
        "BENCHMARKS.md",
    ] {
        for (language, line) in code_lines(&read(&root.join(document))) {
            if !matches!(language.as_str(), "sh" | "console" | "") {
                continue;
            }
            let line = without_comment(&line);
            let Some(at) = line.find("cargo ") else {
                continue;
            };
            let words: Vec<&str> = line[at..].split_whitespace().collect();
            checked += 1;
            let mut problem = |what: String| problems.push(format!("{document}: `{line}`: {what}"));
            if let Some(name) = after(&words, "--example") {
                if !exists(&format!("examples/{name}.rs")) {
                    problem(format!("no example {name}"));
                }
            }
            if let Some(name) = after(&words, "--test") {
                if !exists(&format!("tests/{name}.rs"))
                    && !exists(&format!("manager-cli/tests/{name}.rs"))
                {
                    problem(format!("no test {name}"));
                }
            }
            if let Some(name) = after(&words, "--bench") {
                if !exists(&format!("benches/{name}.rs")) {
                    problem(format!("no bench {name}"));
                }
            }
            if let Some(list) = after(&words, "--features") {
                for feature in list.split(',') {
                    if !features.contains(feature) {
                        problem(format!("no feature {feature}"));
                    }
                }
            }
            for flag in ["-p", "--package"] {
                if let Some(name) = after(&words, flag) {
                    if !packages.contains(&name) {
                        problem(format!("no package {name}"));
                    }
                }
            }
            if let Some(path) = after(&words, "--manifest-path").or(after(&words, "--path")) {
                if !exists(path) {
                    problem(format!("no {path}"));
                }
            }
            if words.get(1) == Some(&"fuzz") && words.get(2) == Some(&"run") {
                let target = words[3..].iter().find(|w| !w.starts_with('-'));
                match target {
                    Some(target) if exists(&format!("fuzz/fuzz_targets/{target}.rs")) => {}
                    other => problem(format!("no fuzz target {other:?}")),
                }
            }
        }
    }
    assert!(
        problems.is_empty(),
        "stale commands:\n{}",
        problems.join("\n")
    );
    assert!(
        checked >= 10,
        "only {checked} cargo commands found: is the parser broken?"
    );

    // The README's two commands: `cargo test` is this suite, and it runs the tour.
    let readme = read(&root.join("README.md"));
    for command in ["cargo run --example tour", "cargo test "] {
        assert!(readme.contains(command), "the README lost `{command}`");
    }
    assert!(
        read(&root.join("tests/examples.rs")).contains("run(\"tour\")"),
        "tests/examples.rs no longer runs the tour the README promises"
    );
}

/// A directory removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        let path =
            std::env::temp_dir().join(format!("manager-readme-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).expect("create a temporary directory");
        TempDir(path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A port nothing listens on (now).
fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind port 0");
    listener.local_addr().expect("local address").port()
}

/// `line` with the examples' fixed places moved into `dir` and onto `port`.
fn localize(line: &str, dir: &Path, port: u16) -> String {
    let dir = dir.display();
    line.replace("127.0.0.1:50000", &format!("127.0.0.1:{port}"))
        .replace("0.0.0.0:50000", &format!("127.0.0.1:{port}"))
        .replace(
            "unix:/run/manager.sock",
            &format!("unix:{dir}/manager.sock"),
        )
        .replace("/etc/manager/key", &format!("{dir}/key"))
        .replace("./manager.key", &format!("{dir}/manager.key"))
        // jq is not assumed: the JSON must still name the objects.
        .replace("| jq '.objects'", "| grep -q '\"objects\"'")
        .replace("| jq '.[].typeid'", "| grep -q '\"typeid\"'")
}

/// A shell script that runs `lines` (already localized) in order, each `manager serve` in the
/// background until it says where it serves, then stops every server still running and waits
/// for each to exit 0. A line containing `MANAGER_AUTHKEY=wrong` must fail.
fn script(lines: &[String]) -> String {
    let mut script = String::from(
        "set -eu\n\
         wait_serving() { i=0; until grep -q '^serving on ' \"$1\"; do\n\
           i=$((i + 1)); if [ $i -gt 600 ]; then cat \"$1\" \"$2\" >&2; exit 97; fi; sleep 0.1\n\
         done; }\n",
    );
    let mut servers = Vec::new();
    for line in lines {
        if line.contains("manager serve") {
            let n = servers.len();
            let command = line.trim_end_matches('&').trim_end();
            script += &format!("{command} > serve{n}.out 2> serve{n}.err &\npid{n}=$!\n");
            script += &format!("wait_serving serve{n}.out serve{n}.err\n");
            let words: Vec<&str> = command.split_whitespace().collect();
            let key = if let Some(file) = after(&words, "--generate-authkey-file") {
                format!("--authkey-file {file}")
            } else if let Some(file) = after(&words, "--authkey-file") {
                format!("--authkey-file {file}")
            } else {
                String::new()
            };
            let env = words
                .first()
                .filter(|w| w.starts_with("MANAGER_AUTHKEY="))
                .map(|w| format!("{w} "))
                .unwrap_or_default();
            servers.push((n, env, key));
        } else if line.contains("MANAGER_AUTHKEY=wrong") {
            script +=
                &format!("if {line}; then echo 'a wrong key was accepted' >&2; exit 98; fi\n");
        } else {
            script += &format!("{line}\n");
        }
    }
    for (n, env, key) in servers {
        script += &format!(
            "if kill -0 $pid{n} 2>/dev/null; then\n\
               {env}manager shutdown --address \"$(sed -n 's/^serving on //p' serve{n}.out)\" {key} || true\n\
             fi\n\
             wait $pid{n} || {{ echo \"server {n} exited with $?\" >&2; cat serve{n}.err >&2; exit 99; }}\n"
        );
    }
    script
}

/// Runs `script` in `dir` with `manager` first on `PATH` and no authkey in the environment;
/// panics with its output unless it exits 0 within two minutes.
fn run(what: &str, script: &str, dir: &Path) {
    let bin_dir = Path::new(BIN).parent().expect("the binary's directory");
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut child = Command::new("sh")
        .arg("-c")
        .arg(script)
        .current_dir(dir)
        .env("PATH", path)
        .env_remove("MANAGER_AUTHKEY")
        .env_remove("MANAGER_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .expect("run sh");
    let deadline = Instant::now() + Duration::from_secs(120);
    while child.try_wait().expect("wait for sh").is_none() {
        if Instant::now() > deadline {
            // SAFETY: kill(2) with the negated id of the process group the child leads (made by
            // `process_group(0)`): it signals that script and the servers it started, nothing else.
            unsafe { libc::kill(-(child.id() as libc::pid_t), libc::SIGKILL) };
            let _ = child.wait();
            panic!("{what}: did not finish within two minutes\n{script}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let output = child.wait_with_output().expect("output of sh");
    assert!(
        output.status.success(),
        "{what} failed ({}):\n--- script\n{script}\n--- stdout\n{}\n--- stderr\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// The command lines after `Examples:` in a help text, comments and blank lines dropped.
fn help_examples(args: &[&str]) -> Vec<String> {
    let output = Command::new(BIN)
        .args(args)
        .arg("--help")
        .output()
        .expect("run manager --help");
    assert!(output.status.success(), "manager {args:?} --help failed");
    let help = String::from_utf8(output.stdout).expect("help is UTF-8");
    let mut commands: Vec<String> = Vec::new();
    let mut continued = false;
    for line in help
        .split("Examples:")
        .nth(1)
        .unwrap_or_else(|| panic!("manager {args:?} --help has no examples"))
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
    {
        let (text, continues) = match line.strip_suffix('\\') {
            Some(text) => (text.trim_end(), true),
            None => (line, false),
        };
        match commands.last_mut() {
            Some(last) if continued => {
                last.push(' ');
                last.push_str(text);
            }
            _ => commands.push(text.to_string()),
        }
        continued = continues;
    }
    // The TLS examples name certificate files and a host this machine does not have:
    // `tests/tls.rs` runs serve, info and shutdown with TLS from certificates it makes.
    let examples: Vec<String> = commands
        .into_iter()
        .filter(|command| !command.contains("--tls-"))
        .collect();
    assert!(
        !examples.is_empty(),
        "manager {args:?} --help shows no example"
    );
    examples
}

#[test]
fn the_help_examples_run_as_written() {
    let groups: [(&str, &[&str]); 4] = [
        ("manager --help", &[]),
        ("manager serve --help", &["serve"]),
        // info and shutdown examples need servers at their addresses: the test starts them.
        ("manager info --help", &["info"]),
        ("manager shutdown --help", &["shutdown"]),
    ];
    // The info examples run against servers that the shutdown examples then stop.
    let mut pending_info = Vec::new();
    for (what, args) in groups {
        let examples = help_examples(args);
        if what.contains("info") {
            pending_info = examples;
            continue;
        }
        let dir = TempDir::new(&what.replace(' ', "-"));
        let port = free_port();
        let key = dir.0.join("key");
        std::fs::write(&key, "s3cret\n").expect("write the key file");
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        let mut lines = Vec::new();
        if what.contains("shutdown") {
            lines.push(format!(
                "MANAGER_AUTHKEY=s3cret manager serve --address 127.0.0.1:{port}"
            ));
            lines.push(localize(
                "manager serve --address unix:/run/manager.sock --generate-authkey-file ./manager.key",
                &dir.0,
                port,
            ));
            lines.extend(pending_info.iter().map(|l| localize(l, &dir.0, port)));
        }
        lines.extend(examples.iter().map(|l| localize(l, &dir.0, port)));
        run(what, &script(&lines), &dir.0);
    }
}

#[test]
fn the_readme_session_runs_as_written() {
    let readme = read(&repo().join("README.md"));
    let session: Vec<String> = readme
        .lines()
        .skip_while(|l| !l.starts_with("```console"))
        .skip(1)
        .take_while(|l| !l.starts_with("```"))
        .filter_map(|l| l.strip_prefix("$ "))
        .filter(|l| !l.starts_with('#'))
        .map(str::to_string)
        .collect();
    assert!(
        session.iter().any(|l| l.contains("manager serve"))
            && session.iter().any(|l| l.contains("manager info"))
            && session.iter().any(|l| l.contains("manager shutdown")),
        "the README's console session lost its commands: {session:?}"
    );
    let dir = TempDir::new("session");
    let port = free_port();
    let lines: Vec<String> = session.iter().map(|l| localize(l, &dir.0, port)).collect();
    run("the README's session", &script(&lines), &dir.0);
}
