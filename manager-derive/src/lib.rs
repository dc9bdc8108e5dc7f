//! Procedural macros of the `manager` crate. Use them through `manager`: `#[manager::shared]`
//! and `#[manager::entry]`. This crate only holds the entry points; the work is in `parse`
//! (attribute arguments and the impl block, into a model), `validate` (every error, spanned on
//! the user's token) and `expand` (one generator per emitted item).

use proc_macro::TokenStream;

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
