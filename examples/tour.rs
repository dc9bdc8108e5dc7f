//! The tour: every scenario of the seed, each a real multi-process run, with a line saying
//! what it shows. Run with `cargo run --example tour`.

// The tour includes each example whole, and each brings its own copy of `common`.
#![allow(clippy::duplicate_mod)]

#[path = "by_value.rs"]
mod by_value;
#[path = "create_method.rs"]
mod create_method;
#[path = "custom_proxy.rs"]
mod custom_proxy;
#[path = "exposed.rs"]
mod exposed;
#[path = "method_to_typeid.rs"]
mod method_to_typeid;
#[path = "shared_class.rs"]
mod shared_class;
#[path = "spawn_list.rs"]
mod spawn_list;

type Scenario = (&'static str, &'static str, fn() -> manager::Result<()>);

const SCENARIOS: &[Scenario] = &[
    (
        "exposed",
        "the server exposes only get_x, so the consumer's set_x is refused by name",
        exposed::run,
    ),
    (
        "custom_proxy",
        "a proxy type of our own squares get_x: Pair(15, 6) gives 225",
        custom_proxy::run,
    ),
    (
        "create_method",
        "a typeid without a create method cannot be created by clients",
        create_method::run,
    ),
    (
        "shared_class",
        "a registered constructor makes a new object per create: 1 and 2",
        shared_class::run,
    ),
    (
        "method_to_typeid",
        "get_item returns a proxy to an ItemWrapper: every change reaches the shared pair",
        method_to_typeid::run,
    ),
    (
        "by_value",
        "without the mapping get_item returns a copy: the producer still sees \"intialized\"",
        by_value::run,
    ),
    (
        "spawn_list",
        "spawned processes share a list made by a registered function",
        spawn_list::run,
    ),
];

fn main() -> manager::Result<()> {
    manager::init();
    for (name, what, run) in SCENARIOS {
        println!("== {name}: {what}");
        run()?;
        println!();
    }
    println!("All {} scenarios ran.", SCENARIOS.len());
    Ok(())
}
