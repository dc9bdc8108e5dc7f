//! The runtime of [`manager`](https://docs.rs/managers): share objects between processes through
//! a manager server, the model of Python's `multiprocessing.managers`.
//!
//! Most programs use the `manager` facade crate, which re-exports everything here together
//! with the `#[shared]` and `#[entry]` macros. The modules:
//!
//! - [`wire`]: frames and messages; [`auth`]: the authkey handshake; [`tls`]: TLS around it
//!   (the `tls` feature);
//! - [`registry`]: typeid registrations; [`object`]: what `#[shared]` implements;
//!   [`context`]: what a method knows of the call it serves;
//! - [`server`]: the object table and connections; [`client`] and [`proxy`]: the client side;
//! - [`manager`]: `BaseManager`, `Manager`, `Typeid`; [`process`]: spawning processes.
//!
//! # Blocking or async: the signature says
//!
//! A call that talks to a server blocks the calling thread exactly when its signature says
//! `blocking`: it is a method of a `Blocking…` type ([`BlockingManager`], `PairBlockingProxy`,
//! [`sync::ListBlockingProxy`], [`sync::BlockingLockGuard`], [`BlockingStream`]), its name
//! says `blocking` ([`Connection::connect_blocking`], [`BaseProxy::call_method_blocking`],
//! [`BaseManager::serve_forever_blocking`]), or it returns a `Blocking…` handle
//! ([`BaseManager::start`] and [`BaseManager::connect`], the Python-shaped builder's, return a
//! [`BlockingManager`]); every other call that talks to a server is `async` ([`Manager`],
//! `PairProxy`, [`Connection::connect`], [`BaseManager::start_async`]). A blocking call made on
//! a thread of a tokio runtime fails with [`Error::BlockingInAsync`] instead of stalling the
//! runtime. (Handles on child processes, [`Process`] and [`ServerProcess`], wait as
//! `std::process::Child` does: they talk to no server.)

#[doc(hidden)]
#[path = "private.rs"]
pub mod __private;
pub mod address;
pub mod auth;
pub mod client;
pub mod context;
pub mod describe;
pub mod error;
pub mod events;
pub mod manager;
pub mod object;
pub mod process;
pub mod proxy;
#[cfg(feature = "python")]
pub mod python;
pub mod registry;
pub mod server;
pub mod shared_memory;
pub mod stream;
pub mod sync;
pub mod tls;
pub mod trace;
mod transport;
pub mod value;
mod value_py;
pub mod wire;

pub use address::Address;
pub use auth::AuthKey;
pub use client::streams::{BlockingStream, RemoteStream};
pub use client::{ConnectOptions, Connection};
pub use context::{CallContext, Retained};
pub use error::{Error, RemoteError, RemoteErrorKind, Result};
pub use manager::{BaseManager, BlockingManager, Create, Manager, NoCreate, Typeid};
pub use object::{Call, Outcome, Shared};
pub use process::{current_process_name, init, Process, ServerProcess};
pub use proxy::{BaseProxy, CallResult, Payload, Proxy};
pub use registry::{Register, Registry};
pub use server::{Server, ServerConfig, ShutdownHandle};
pub use stream::Stream;
pub use tls::{TlsClientConfig, TlsServerConfig};
pub use wire::{DebugInfo, MethodStats, ObjectInfo, RunningCall, Token};

pub(crate) use manager_derive::blocking_twin;
pub use manager_derive::{entry, shared};
