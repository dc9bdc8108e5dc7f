//! Compile tests of `#[manager::shared]`, `#[manager::entry]` and the typed API: each file in
//! a directory of `tests/ui/` must fail to compile with exactly the message in its `.stderr`
//! file, and each in `tests/ui/pass/` must compile and run. The directories group the cases
//! by kind:
//!
//! - `args/`: the attribute's arguments (syntax, unknown, repeated; all reported at once);
//! - `impl/`: what the attribute is put on (trait impls, generic impls, not an impl), and the
//!   proxies still emitted when it has an error;
//! - `methods/`: methods that cannot be called from another process;
//! - `types/`: argument and result types that cannot travel (one error, on the type);
//! - `exposed/`: calling a method that is not exposed;
//! - `typeid/`: `method_to_typeid` and `Typeid`;
//! - `entry/`: `#[manager::entry]`.
//!
//! To regenerate the expected output after an intended change of a message:
//! `TRYBUILD=overwrite cargo test --test ui`, then read every changed `.stderr` as a user would.

#[test]
fn ui() {
    let t = trybuild::TestCases::new();
    for kind in [
        "args", "impl", "methods", "types", "exposed", "typeid", "entry",
    ] {
        t.compile_fail(format!("tests/ui/{kind}/*.rs"));
    }
    t.pass("tests/ui/pass/*.rs");
}
