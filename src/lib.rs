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
//! # Tutorial
//!
//! **1. Share a type.** [`#[shared]`](macro@shared) on its impl block generates the server's
//! dispatcher and two client proxies, `PairProxy` (async) and `PairBlockingProxy`, with one
//! method per `pub` method taking `&self` or `&mut self`. Arguments and results travel as serde
//! values; each proxy method returns `manager::Result<_>`, whose error is the call's own
//! (connection, timeout, a panic in the method). [`example_generated`] shows the generated API.
//!
//! **2. Build the registry in an [`#[entry]`](macro@entry) function**, so that the server, a
//! child process running a copy of this program, can build the same registry there.
//!
//! **3. Start the server and call.** [`init()`] first in `main` (in the child, it runs the
//! server and exits); [`BaseManager::start`] spawns it and connects; [`BlockingManager::create`]
//! makes an object from its typeid and returns its proxy.
//!
//! ```
//! use manager::{shared, Address, BaseManager, Register, Registry, Typeid};
//!
//! pub struct Pair { x: i64, y: i64 }
//!
//! #[shared]
//! impl Pair {
//!     pub fn get_x(&self) -> i64 { self.x }            // &self: shares the read lock
//!     pub fn set_x(&mut self, x: i64) { self.x = x }   // &mut self: takes the write lock
//!     pub fn sum(&self) -> i64 { self.x + self.y }
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
//!     assert_eq!(pair.sum()?, 13);
//!     manager.shutdown()
//! }
//! ```
//!
//! **4. Go async, or pass proxies on.** `pair.into_async()` is the same proxy with `async`
//! methods (use [`BaseManager::start_async`] / [`Manager`] in async code). One rule says which
//! calls block: a call blocks exactly when its signature says `blocking` (a `Blocking…` type, a
//! `*_blocking` method, or a `Blocking…` handle returned, as by `start`), and every other call
//! is `async` (see [the rule](manager_core#blocking-or-async-the-signature-says)). Proxies are serde
//! values: pass one to a child started with [`Process::spawn`], and it calls the same object.
//! `pair.with_timeout(d)` bounds each call.
//!
//! **Next:** the [`#[shared]`](macro@shared) reference (what may be shared, locks, errors,
//! timeouts, `method_to_typeid`, every argument), [`#[entry]`](macro@entry), the built-in
//! shared types in [`sync`] (Python's `manager.list()`, `dict()`, `Lock()`, `Queue()`...),
//! [`python`] for CPython clients, and the README for the tour of every feature.

pub use manager_core::*;

#[cfg(any(doc, test))]
pub mod example_generated;
