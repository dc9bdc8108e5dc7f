//! `create_method`: a typeid registered with `create_method=False` cannot be created by clients.
//!
//! The seed registers `get_pair` with `create_method=False` on both sides; the consumer's
//! `manager.get_pair()` then fails. In Rust, a typeid declared with `Typeid::without_create`
//! has no typed create at all (`manager.create(&GET_PAIR, ())` does not compile), and the
//! dynamic path is refused by the server by name. Run with `cargo run --example create_method`.
#![allow(unreachable_pub, reason = "#[shared] exposes an impl's `pub` methods")]

mod common;

use common::{Pair, PairBlockingProxy};
use manager::{Address, BaseManager, NoCreate, Process, Register, Registry, Typeid};

/// The server's registry: the shared `Pair(15, 6)`, but clients may not create it.
#[manager::entry]
pub fn registry() -> manager::Result<Registry> {
    let mut registry = Registry::new();
    registry.register(
        Register::shared("get_pair", Pair::new(15, 6))
            .exposed(["get_x"])
            .create_method(false),
    )?;
    Ok(registry)
}

/// The consumer's declaration: no create method (Python: `create_method=False`).
/// `manager.create(&GET_PAIR, ())` would not compile.
#[allow(dead_code)]
const GET_PAIR: Typeid<PairBlockingProxy, (), NoCreate> = Typeid::without_create("get_pair");

/// The consumer process: it tries the only way left, the dynamic create by name.
#[manager::entry]
pub fn process_task(address: Address) -> manager::Result<()> {
    let manager = BaseManager::new(address).connect()?;
    match manager.create_dynamic(GET_PAIR.name(), ()) {
        Ok(_) => println!("get_pair() was created"),
        Err(e) => println!("get_pair() refused: {e}"),
    }
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
