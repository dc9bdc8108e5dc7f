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

#![warn(missing_docs)]

pub use manager_core::*;
pub use manager_derive::{entry, shared};

/// Items the generated code uses. Not a public API: it changes without notice.
#[doc(hidden)]
pub mod __private {
    pub use ::erased_serde;
    pub use ::futures::future::BoxFuture;
    pub use ::inventory;
    pub use ::serde_bytes::{ByteBuf, Bytes};
    pub use ::tokio::sync::RwLock;
    pub use manager_core::object::{
        decode_args, DispatchError, MethodDesc, Outcome, Receiver, Shared,
    };
    pub use manager_core::process::{decode_entry_args, EntryPoint, IntoEntryOutcome};
    pub use manager_core::{BaseProxy, Error, Proxy};

    /// An argument type of a `#[shared]` method.
    #[diagnostic::on_unimplemented(
        message = "`{Self}` cannot be an argument of a method called from another process",
        label = "this type does not implement serde's `Serialize` and `DeserializeOwned`",
        note = "arguments travel between processes by value: derive `serde::Serialize` and `serde::Deserialize` for it"
    )]
    pub trait RemoteArgument {}
    impl<T: ::serde::Serialize + ::serde::de::DeserializeOwned> RemoteArgument for T {}

    /// A result type of a `#[shared]` method.
    #[diagnostic::on_unimplemented(
        message = "`{Self}` cannot be returned to another process",
        label = "this type does not implement serde's `Serialize` and `DeserializeOwned`, or is not `Send + 'static`",
        note = "results travel by value: derive `serde::Serialize` and `serde::Deserialize` for it, or map the method with `method_to_typeid` to return a proxy"
    )]
    pub trait RemoteResult {}
    impl<T: ::serde::Serialize + ::serde::de::DeserializeOwned + Send + 'static> RemoteResult for T {}

    /// The result type of a `method_to_typeid` method.
    #[diagnostic::on_unimplemented(
        message = "`{Self}` cannot become a server-side object",
        label = "a `method_to_typeid` result must be `Send + 'static`"
    )]
    pub trait RemoteObject {}
    impl<T: Send + 'static> RemoteObject for T {}

    /// Checks, at compile time, that `T` can be an argument.
    pub const fn assert_argument<T: RemoteArgument>() {}
    /// Checks, at compile time, that `T` can be returned.
    pub const fn assert_result<T: RemoteResult>() {}
    /// Checks, at compile time, that `T` can become an object.
    pub const fn assert_object<T: RemoteObject>() {}
}
