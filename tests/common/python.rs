//! CPython interpreters for the tests that run Python clients or servers.

use std::path::PathBuf;
use std::process::Command;

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
