//! `custom_proxy`: a proxy type of the user's own, over `BaseProxy`.
//!
//! The seed's consumer registers `get_pair` with `proxytype=MyProxy`, whose `get_x` returns the
//! square of the referent's `x`: for `Pair(15, 6)` it prints 225.
//! Run with `cargo run --example custom_proxy`.
#![allow(unreachable_pub, reason = "#[shared] exposes an impl's `pub` methods")]

mod common;

use common::Pair;
use manager::{Address, BaseManager, BaseProxy, Process, Proxy, Register, Registry, Typeid};

/// The seed's `MyProxy`: `get_x` calls the referent's `get_x` and squares the result.
#[derive(Debug)]
pub struct MyProxy(BaseProxy);

impl Proxy for MyProxy {
    fn from_base(base: BaseProxy) -> Self {
        MyProxy(base)
    }

    fn base(&self) -> &BaseProxy {
        &self.0
    }
}

impl MyProxy {
    /// `x * x`, where `x` comes from the shared pair (Python: `self._callmethod('get_x')`).
    pub fn get_x(&self) -> manager::Result<i64> {
        let x: i64 = self.0.call_method_blocking("get_x", ())?;
        Ok(x * x)
    }
}

/// The server's registry: a shared `Pair(15, 6)` exposing `get_x`.
#[manager::entry]
pub fn registry() -> manager::Result<Registry> {
    let mut registry = Registry::new();
    registry.register(Register::shared("get_pair", Pair::new(15, 6)).exposed(["get_x"]))?;
    Ok(registry)
}

/// The consumer registers `get_pair` with its own proxy type
/// (Python: `manager.register('get_pair', proxytype=MyProxy)`).
const GET_PAIR: Typeid<MyProxy> = Typeid::new("get_pair");

/// The consumer process.
#[manager::entry]
pub fn process_task(address: Address) -> manager::Result<()> {
    let manager = BaseManager::new(address).connect()?;
    let p = manager.create(&GET_PAIR, ())?;
    println!("{}", p.get_x()?);
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
