//! Runs every example as a user would (a real process that starts a server process and worker
//! processes) and checks that it prints what the seed's script prints.

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

/// The path of a built example. `cargo test` builds the examples before the tests run.
fn example(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    let dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target directory");
    let path = dir.join("examples").join(name);
    assert!(
        path.exists(),
        "{} is missing: build the examples first (`cargo build --examples`)",
        path.display()
    );
    path
}

/// Runs an example to completion (killing it after two minutes) and returns its stdout.
fn run(name: &str) -> String {
    let mut child = Command::new(example(name))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn the example");
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        match child.try_wait().expect("wait for the example") {
            Some(_) => break,
            None if Instant::now() > deadline => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("example {name} did not finish within two minutes");
            }
            None => std::thread::sleep(Duration::from_millis(20)),
        }
    }
    let output = child.wait_with_output().expect("collect the output");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(
        output.status.success(),
        "example {name} failed with {}\nstdout:\n{stdout}\nstderr:\n{stderr}",
        output.status
    );
    stdout
}

fn lines(text: &str) -> Vec<&str> {
    text.lines().collect()
}

#[test]
fn exposed_refuses_methods_that_are_not_exposed() {
    let out = run("exposed");
    let lines = lines(&out);
    assert_eq!(lines.len(), 4, "{out}");
    assert!(lines[0].starts_with("set_x(7) refused: "), "{out}");
    assert!(
        lines[0].contains(r#"method "set_x" is not exposed by typeid "get_pair""#),
        "{out}"
    );
    assert!(lines[1].starts_with("set_y(7) refused: "), "{out}");
    assert_eq!(lines[2], "5", "x is unchanged: {out}");
    assert!(lines[3].starts_with("get_y() refused: "), "{out}");
}

#[test]
fn custom_proxy_squares_get_x() {
    assert_eq!(run("custom_proxy"), "225\n");
}

#[test]
fn create_method_false_refuses_the_create() {
    let out = run("create_method");
    assert!(out.starts_with("get_pair() refused: "), "{out}");
    assert!(
        out.contains(r#"typeid "get_pair" has no create method"#),
        "{out}"
    );
}

#[test]
fn shared_class_makes_distinct_objects() {
    assert_eq!(run("shared_class"), "1\n2\n");
}

const MAPPED: &str = "\
proxy1 sees item as : intialized
proxy1 changes item from intialized to 7
proxy2 sees item as : 7
proxy2 changes item from 7 to 11
proxy1 sees item as : 11

After changes in consumer process, the producer process sees item as = 11
";

const BY_VALUE: &str = "\
proxy1 sees item as : intialized
proxy1 changes item from intialized to 7
proxy2 sees item as : intialized
proxy2 changes item from intialized to 11
proxy1 sees item as : 7

After changes in consumer process, the producer process sees item as = intialized
";

#[test]
fn method_to_typeid_proxies_share_the_item() {
    assert_eq!(run("method_to_typeid"), MAPPED);
}

#[test]
fn by_value_results_are_copies() {
    assert_eq!(run("by_value"), BY_VALUE);
}

#[test]
fn spawn_list_appends_from_another_process() {
    let out = run("spawn_list");
    let lines = lines(&out);
    assert_eq!(lines.len(), 2, "{out}");
    assert!(
        lines[0].starts_with("set by BaseManager-"),
        "the list was made in the server process: {out}"
    );
    assert_eq!(lines[1], "Educative is Great !");
}

#[test]
fn tour_runs_every_scenario() {
    let out = run("tour");
    for name in [
        "exposed",
        "custom_proxy",
        "create_method",
        "shared_class",
        "method_to_typeid",
        "by_value",
        "spawn_list",
    ] {
        assert!(
            out.contains(&format!("== {name}: ")),
            "{name} missing:\n{out}"
        );
    }
    assert!(out.contains("\n225\n"), "{out}");
    assert!(out.contains(MAPPED), "{out}");
    assert!(out.contains(BY_VALUE), "{out}");
    assert!(out.ends_with("All 7 scenarios ran.\n"), "{out}");
}

#[test]
fn containers_are_shared_by_worker_processes() {
    let out = run("containers");
    let lines = lines(&out);
    assert_eq!(lines.len(), 6, "{out}");
    let squares: Vec<&str> = lines[..3]
        .iter()
        .map(|l| l.split_once(": ").expect("worker: squares").1)
        .collect();
    assert_eq!(squares, ["[1, 4]", "[9, 16]", "[25, 36]"], "{out}");
    assert_eq!(lines[3], "log entries: 3");
    assert_eq!(lines[4], "total: 91");
    assert_eq!(lines[5], "array: [0, 0, 0, 9]");
}

#[test]
fn worker_pool_drains_the_joinable_queue() {
    let out = run("worker_pool");
    let lines = lines(&out);
    assert_eq!(lines.len(), 3, "{out}");
    assert_eq!(lines[0], "all 40 jobs done (the queue's join() returned)");
    assert_eq!(lines[1], "results: 40 entries, 1474 Collatz steps in all");
    // How the jobs spread over the workers depends on how fast each process starts.
    let workers: usize = lines[2]
        .strip_prefix("workers that took part: ")
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{out}"));
    assert!((1..=4).contains(&workers), "{out}");
}

#[test]
fn events_start_workers_and_the_barrier_gathers_them() {
    assert_eq!(
        run("events"),
        "before the signal: 0 log entries\n\
         workers started: 3\n\
         barrier indices: [0, 1, 2, 3]\n\
         barrier broken: false\n"
    );
}

#[test]
fn locks_exclude_and_a_killed_holder_releases() {
    assert_eq!(
        run("locks"),
        "counter: 100 (expected 100)\n\
         semaphore value back to: 2\n\
         locked while the holder lives: true\n\
         acquired after the holder was killed: true\n"
    );
}

#[test]
fn python_interop_runs_the_seed_consumer_in_cpython() {
    if std::process::Command::new("python3")
        .arg("-V")
        .output()
        .is_err()
    {
        eprintln!("SKIPPED: python3 is not installed");
        return;
    }
    let out = run("python_interop");
    assert!(out.starts_with(MAPPED), "{out}");
    assert!(out.contains("python squared 2 jobs\n"), "{out}");
    assert!(
        out.contains("rust reads the dict: [(\"a\", 4), (\"b\", 16)]\n"),
        "{out}"
    );
    assert!(
        out.ends_with("rust gets from the queue: Job { name: \"from python\", n: 3 }\n"),
        "{out}"
    );
}

#[test]
fn job_board_workers_hear_of_every_job_and_claim_each_once() {
    let out = run("job_board");
    let lines = lines(&out);
    assert_eq!(lines[0], "3 workers subscribed");
    assert_eq!(lines[1], "30 of 30 jobs claimed, each once");
    assert!(lines[2].starts_with("claimed by "), "{out}");
    assert_eq!(lines[3], "subscriptions open after the workers left: 0");
}

#[test]
fn shared_memory_workers_fill_a_block_cpython_reads_and_shutdown_unlinks() {
    let out = run("shared_memory");
    assert!(
        out.starts_with(
            "squares: [0.0, 1.0, 4.0, 9.0, 16.0, 25.0, 36.0, 49.0, 64.0, 81.0]\n\
             tracked by the server: true\n"
        ),
        "{out}"
    );
    let python = std::process::Command::new("python3").arg("-V").output();
    if python.is_ok() {
        assert!(out.contains(" sum 285.0\n"), "{out}");
    }
    assert!(out.ends_with(" exists: false\n"), "{out}");
}
