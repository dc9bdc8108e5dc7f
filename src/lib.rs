//! # manager
//!
//! Share Rust objects between processes through a manager server: the model of Python's
//! `multiprocessing.managers`, typed and checked at compile time.
//!
//! A manager server owns objects (referents). Other processes connect over TCP or a Unix socket,
//! prove they hold the authkey, and hold proxies; a proxy call runs the method on the referent
//! in the server and returns the result by value, or, for methods mapped by
//! `method_to_typeid`, as a proxy to another server-side object.
//!
//! ```no_run
//! use manager::{shared, BaseManager, Register, Registry, Typeid, Address};
//!
//! pub struct Pair { x: i64, y: i64 }
//!
//! #[shared]
//! impl Pair {
//!     pub fn get_x(&self) -> i64 { self.x }
//!     pub fn set_x(&mut self, x: i64) { self.x = x }
//! }
//!
//! #[manager::entry]
//! fn registry() -> manager::Result<Registry> {
//!     let mut registry = Registry::new();
//!     registry.register(Register::shared("get_pair", Pair { x: 5, y: 6 }))?;
//!     Ok(registry)
//! }
//!
//! const GET_PAIR: Typeid<PairBlockingProxy> = Typeid::new("get_pair");
//!
//! fn main() -> manager::Result<()> {
//!     manager::init(); // in a spawned child (the server), runs it and exits
//!     let manager = BaseManager::new(Address::local_tcp()).start(registry)?;
//!     let pair = manager.create(&GET_PAIR, ())?;
//!     pair.set_x(7)?;
//!     assert_eq!(pair.get_x()?, 7);
//!     manager.shutdown()
//! }
//! ```
//!
//! See the README for the tour of every feature, and `examples/` for the seed's scripts.

pub use manager_core::*;
