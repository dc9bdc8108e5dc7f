//! Stream methods: a method whose return type is written `Stream<T>` (`manager::Stream<T>`,
//! or any path ending in `Stream<T>`) hands out a stream of `T`. Recognised by how the type is
//! written, as `Result<T, E>` is: the server side turns it into `Outcome::stream`, and the
//! proxies return `RemoteStream<T>` (async) or `BlockingStream<T>` (blocking).

use proc_macro2::TokenStream;
use quote::quote;
use syn::Type;

use crate::ctxt::Ctxt;
use crate::expand::Gen;
use crate::parse::Method;

/// Reports a stream method that `method_to_typeid` maps (its items are values, not objects),
/// and says whether it did.
pub(crate) fn refuse_mapped_stream(cx: &Ctxt, method: &Method) -> bool {
    if stream_item(&method.returns.ty).is_none() {
        return false;
    }
    cx.error_spanned_by(
        &method.returns.ty,
        format!(
            "`{}` returns a stream, which `method_to_typeid` cannot map: a stream's items \
             travel by value",
            method.name()
        ),
    );
    true
}

/// The item type `T` of a return type written `Stream<T>`.
pub(crate) fn stream_item(ty: &Type) -> Option<&Type> {
    let Type::Path(path) = ty else { return None };
    if path.qself.is_some() {
        return None;
    }
    let last = path.path.segments.last()?;
    if last.ident != "Stream" {
        return None;
    }
    let syn::PathArguments::AngleBracketed(args) = &last.arguments else {
        return None;
    };
    match (args.args.len(), args.args.first()) {
        (1, Some(syn::GenericArgument::Type(item))) => Some(item),
        _ => None,
    }
}

impl Gen<'_> {
    /// The output type and body of a stream method on the async or the blocking proxy.
    pub(crate) fn stream_proxy(
        &self,
        method: &Method,
        item: &Type,
        args: &TokenStream,
        blocking: bool,
    ) -> (TokenStream, TokenStream) {
        let krate = self.krate;
        let name = method.name();
        let item = self.outside(item);
        if blocking {
            (
                quote!(#krate::BlockingStream<#item>),
                quote!(self.base.call_stream_blocking::<#item>(#name, #args)),
            )
        } else {
            (
                quote!(#krate::RemoteStream<#item>),
                quote!(self.base.call_stream::<#item>(#name, #args).await),
            )
        }
    }
}
