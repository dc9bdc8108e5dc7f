//! `shared_class`: registering a constructor instead of an instance.
//!
//! The seed registers the class itself, `manager.register('get_pair', Pair)`; every
//! `get_pair(x, y)` then makes a new object in the server. Two objects, two answers: 1 and 2.
//! Run with `cargo run --example shared_class`.
#![allow(unreachable_pub, reason = "#[shared] exposes an impl's `pub` methods")]

mod common;

use common::{Pair, PairBlockingProxy};
use manager::{Address, BaseManager, Process, Register, Registry, Typeid};

/// The server's registry: a factory called with the client's arguments for every create.
#[manager::entry]
pub fn registry() -> manager::Result<Registry> {
    let mut registry = Registry::new();
    registry.register(Register::factory("get_pair", |(x, y): (i64, i64)| {
        Pair::new(x, y)
    }))?;
    Ok(registry)
}

/// The consumer's typed create: `get_pair` takes `(x, y)`.
const GET_PAIR: Typeid<PairBlockingProxy, (i64, i64)> = Typeid::new("get_pair");

/// The consumer process: creates two pairs and shows they are distinct objects.
#[manager::entry]
pub fn process_task(address: Address) -> manager::Result<()> {
    let manager = BaseManager::new(address).connect()?;
    let obj1 = manager.create(&GET_PAIR, (1, 3))?;
    let obj2 = manager.create(&GET_PAIR, (2, 4))?;
    // verify two different objects are created
    println!("{}", obj1.get_x()?);
    println!("{}", obj2.get_x()?);
    Ok(())
}

/// Starts the server, runs the consumer in its own process, and shuts the server down.
pub fn run() -> manager::Result<()> {
    let manager = BaseManager::new(Address::local_tcp()).start(registry)?;
    let status = Process::spawn(process_task, (manager.address().clone(),))?.join()?;
    manager.shutdown()?;
    if !status.success() {
        return Err(manager::Error::Process(format!(
            "the consumer failed: {status}"
        )));
    }
    Ok(())
}

#[allow(dead_code)]
fn main() -> manager::Result<()> {
    manager::init();
    run()
}
