//! Compile tests of `#[manager::shared]`, `#[manager::entry]` and the typed API: each file in
//! `tests/ui/` must fail to compile with exactly the message in its `.stderr` file, and each in
//! `tests/ui/pass/` must compile and run.
//!
//! To regenerate the expected output after an intended change of a message:
//! `TRYBUILD=overwrite cargo test --test ui`, then review the diff.

#[test]
fn ui() {
    let t = trybuild::TestCases::new();
    t.compile_fail("tests/ui/*.rs");
    t.pass("tests/ui/pass/*.rs");
}
