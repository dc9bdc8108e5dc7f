//! Procedural macros of the `manager` crate. Use them through `manager`: `#[manager::shared]`
//! and `#[manager::entry]`, whose docs here are the reference. This crate only holds the entry
//! points; the work is in `parse` (attribute arguments and the impl block, into a model),
//! `validate` (every error, spanned on the user's token), `expand` (the dispatcher and the
//! type checks) and `proxy` (the client proxies), all reporting errors to one `ctxt::Ctxt`.
//! `entry` holds `#[entry]`'s own three stages; `twin` the built-in proxies' `#[blocking_twin]`.

use proc_macro::TokenStream;

mod ctxt;
mod describe;
mod entry;
mod expand;
mod parse;
mod proxy;
mod stream;
mod twin;
mod validate;

#[doc = include_str!("doc/shared.md")]
#[proc_macro_attribute]
pub fn shared(args: TokenStream, item: TokenStream) -> TokenStream {
    expand::shared(args.into(), item.into()).into()
}

#[doc = include_str!("doc/entry.md")]
#[proc_macro_attribute]
pub fn entry(args: TokenStream, item: TokenStream) -> TokenStream {
    entry::entry(args.into(), item.into()).into()
}

/// For `manager-core`'s built-in proxies only: generates `XBlockingProxy`'s methods from the
/// `pub async fn`s of an `impl XProxy` block (see `twin.rs`).
#[doc(hidden)]
#[proc_macro_attribute]
pub fn blocking_twin(args: TokenStream, item: TokenStream) -> TokenStream {
    twin::blocking_twin(args.into(), item.into()).into()
}
