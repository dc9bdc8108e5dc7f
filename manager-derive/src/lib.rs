//! Procedural macros of the `manager` crate. Use them through `manager`: `#[manager::shared]`
//! and `#[manager::entry]`. This crate only holds the entry points; the work is in `parse`
//! (attribute arguments and the impl block, into a model), `validate` (every error, spanned on
//! the user's token) and `expand` (one generator per emitted item).

use proc_macro::TokenStream;

mod describe;
mod entry;
mod expand;
mod parse;
mod validate;

/// Shares the methods of an impl block with other processes.
///
/// ```ignore
/// #[manager::shared(exposed = [get_x, set_x], method_to_typeid = { get_item: "ItemWrapper" })]
/// impl Pair { ... }
/// ```
///
/// Generates the server-side dispatcher (`impl manager::Shared for Pair`), an async proxy
/// `PairProxy` and a blocking proxy `PairBlockingProxy` with exactly the exposed methods.
/// Both arguments are optional; by default every `pub` method with a `self` receiver is exposed.
///
/// How the server runs the methods:
///
/// - `&self` methods share the object's read lock and run alongside each other; `&mut self`
///   methods take its write lock and run alone. That lock is the only thing that orders calls.
/// - A plain (not `async`) method's body runs on a worker thread of the server
///   (`ServerConfig::max_workers` at once), never where the server reads or writes sockets: it
///   may block or compute for as long as it needs, and use blocking proxies to other shared
///   objects, without holding up any other call. The lock is taken before the worker is.
/// - An `async fn` runs in the server's tasks and holds its lock across its `.await`s; it
///   should wait (`.await`), not block; it may use async proxies.
#[proc_macro_attribute]
pub fn shared(args: TokenStream, item: TokenStream) -> TokenStream {
    expand::shared(args.into(), item.into()).into()
}

/// Marks a free function that can run in another process (`Process::spawn`), or that builds
/// the registry of a server started with `BaseManager::start`.
#[proc_macro_attribute]
pub fn entry(args: TokenStream, item: TokenStream) -> TokenStream {
    entry::entry(args.into(), item.into()).into()
}
