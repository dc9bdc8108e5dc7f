//! CPython interpreters for the tests that run Python clients or servers, and a server for
//! their scripts.

use std::path::PathBuf;
use std::process::Command;

use manager::{Address, AuthKey, Registry, ServerConfig};

use super::InProcessServer;

/// Every CPython 3 interpreter on the machine: `python3`, and those under `$(pyenv root)`.
pub fn interpreters() -> Vec<PathBuf> {
    let mut found = Vec::new();
    if let Ok(root) = Command::new("pyenv").arg("root").output() {
        let root = String::from_utf8_lossy(&root.stdout).trim().to_string();
        if let Ok(versions) = std::fs::read_dir(PathBuf::from(root).join("versions")) {
            let mut versions: Vec<PathBuf> = versions
                .flatten()
                .map(|v| v.path().join("bin").join("python3"))
                .filter(|p| p.exists())
                .collect();
            versions.sort();
            found.extend(versions);
        }
    }
    if found.is_empty() && Command::new("python3").arg("-V").output().is_ok() {
        found.push(PathBuf::from("python3"));
    }
    // multiprocessing.managers needs 3.8+ for what the scripts use.
    found.retain(|python| {
        Command::new(python)
            .args([
                "-c",
                "import sys; sys.exit(0 if sys.version_info >= (3, 8) else 1)",
            ])
            .status()
            .is_ok_and(|s| s.success())
    });
    if found.is_empty() {
        eprintln!("SKIPPED: no CPython 3.8+ interpreter found (python3, or under `pyenv root`)");
    }
    found
}

/// A server of `registry` taking CPython clients on a free TCP port: the server, and the
/// host and port CPython clients connect to.
pub fn server(registry: Registry) -> (InProcessServer, String, String) {
    server_with(registry, ServerConfig::default())
}

/// [`server`] with `config` (its CPython address set here).
pub fn server_with(registry: Registry, config: ServerConfig) -> (InProcessServer, String, String) {
    let mut config = config;
    config.python_address = Some(Address::tcp("127.0.0.1:0"));
    let server = InProcessServer::start_with(
        registry,
        Address::local_tcp(),
        AuthKey::from("py-key"),
        config,
    );
    let manager = server.connect();
    let Some(Address::Tcp(at)) = manager.connection().python_address().cloned() else {
        panic!("the server takes no CPython clients");
    };
    let (host, port) = at.rsplit_once(':').expect("host:port");
    let (host, port) = (host.to_string(), port.to_string());
    (server, host, port)
}

/// Runs `script` with every CPython found against a server of the built-in types, and checks
/// that it prints `expected`.
pub fn assert_sync_script_prints(script: &str, expected: &str) {
    for python in interpreters() {
        let (_server, host, port) = server(manager::sync::registry());
        let out = run_python(&python, script, &host, &port);
        assert_eq!(out, expected, "{}", python.display());
    }
}

/// Runs `script` with `python`, passing host, port and key; returns its stdout.
pub fn run_python(python: &PathBuf, script: &str, host: &str, port: &str) -> String {
    let output = Command::new(python)
        .args(["-c", script, host, port, "py-key"])
        .output()
        .expect("run python");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(
        output.status.success(),
        "{} failed ({}):\nstdout:\n{stdout}\nstderr:\n{stderr}",
        python.display(),
        output.status
    );
    stdout
}
