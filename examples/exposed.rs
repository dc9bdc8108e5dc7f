//! `exposed`: the server lets clients call only the methods it exposes.
//!
//! The seed registers a shared `Pair(5, 6)` with `exposed=['get_x']`; a consumer process that
//! calls `set_x` is refused by the server. Run with `cargo run --example exposed`.
#![allow(unreachable_pub, reason = "#[shared] exposes an impl's `pub` methods")]

use manager::{Address, BaseManager, Process, Register, Registry, Typeid};

mod common;

use common::{Pair, PairBlockingProxy};

/// The server's registry: one `Pair(5, 6)` shared by every client, with only `get_x` exposed
/// (Python: `manager.register('get_pair', callable=lambda: pair, exposed=['get_x'])`).
#[manager::entry]
pub fn registry() -> manager::Result<Registry> {
    let mut registry = Registry::new();
    registry.register(Register::shared("get_pair", Pair::new(5, 6)).exposed(["get_x"]))?;
    Ok(registry)
}

/// The consumer's view of the typeid (Python: `manager.register('get_pair')`).
const GET_PAIR: Typeid<PairBlockingProxy> = Typeid::new("get_pair");

/// The consumer process: tries every method, as the seed's `process_task` does.
#[manager::entry]
pub fn process_task(address: Address) -> manager::Result<()> {
    let manager = BaseManager::new(address).connect()?;
    let p = manager.create(&GET_PAIR, ())?;
    match p.set_x(7) {
        Ok(()) => println!("set_x(7) was allowed"),
        Err(e) => println!("set_x(7) refused: {e}"),
    }
    match p.set_y(7) {
        Ok(()) => println!("set_y(7) was allowed"),
        Err(e) => println!("set_y(7) refused: {e}"),
    }
    println!("{}", p.get_x()?);
    match p.get_y() {
        Ok(y) => println!("{y}"),
        Err(e) => println!("get_y() refused: {e}"),
    }
    Ok(())
}

/// Starts the server, runs the consumer in its own process, and shuts the server down.
pub fn run() -> manager::Result<()> {
    let manager = BaseManager::new(Address::local_tcp()).start(registry)?;
    let mut consumer = Process::spawn(process_task, (manager.address().clone(),))?;
    let status = consumer.join()?;
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
