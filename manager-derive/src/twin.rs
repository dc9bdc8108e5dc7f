//! `#[blocking_twin(XBlockingProxy)]`, for `manager-core`'s built-in proxies: on an
//! `impl XProxy { pub async fn m(&self, ...) -> Result<R, Error> { ... } }` block, it emits
//! the block as written and, for each of its `pub async fn`s, the method of the same name,
//! arguments, result and docs on `XBlockingProxy` (a tuple struct around `XProxy`), whose body
//! runs the async one on the caller's thread with `crate::proxy::blocking::run`. So a typed
//! built-in proxy's signatures are written once, and its blocking twin cannot disagree.

use proc_macro2::TokenStream;
use quote::quote;
use syn::{FnArg, ImplItem, ItemImpl, Pat, Visibility};

/// Expands the attribute (see the module documentation).
pub(crate) fn blocking_twin(args: TokenStream, item: TokenStream) -> TokenStream {
    match expand(args, item.clone()) {
        Ok(tokens) => tokens,
        Err(error) => {
            let error = error.to_compile_error();
            quote!(#item #error)
        }
    }
}

fn expand(args: TokenStream, item: TokenStream) -> syn::Result<TokenStream> {
    let blocking: syn::Ident = syn::parse2(args)?;
    let block: ItemImpl = syn::parse2(item)?;
    let syn::Type::Path(self_ty) = &*block.self_ty else {
        return Err(syn::Error::new_spanned(
            &block.self_ty,
            "expected a proxy type",
        ));
    };
    let type_args = self_ty
        .path
        .segments
        .last()
        .map(|s| s.arguments.clone())
        .unwrap_or(syn::PathArguments::None);
    let (impl_generics, _, where_clause) = block.generics.split_for_impl();
    let mut methods = Vec::new();
    for item in &block.items {
        let ImplItem::Fn(f) = item else { continue };
        if f.sig.asyncness.is_none() || !matches!(f.vis, Visibility::Public(_)) {
            continue;
        }
        let docs = f.attrs.iter().filter(|a| a.path().is_ident("doc"));
        let mut sig = f.sig.clone();
        sig.asyncness = None;
        let ident = &sig.ident;
        let mut forwarded = Vec::new();
        for input in &sig.inputs {
            match input {
                FnArg::Receiver(_) => {}
                FnArg::Typed(pat) => match &*pat.pat {
                    Pat::Ident(p) => forwarded.push(p.ident.clone()),
                    other => {
                        return Err(syn::Error::new_spanned(
                            other,
                            "name the argument, so that the blocking twin can pass it on",
                        ))
                    }
                },
            }
        }
        methods.push(quote! {
            #(#docs)*
            pub #sig {
                crate::proxy::blocking::run(self.0.#ident(#(#forwarded),*))
            }
        });
    }
    Ok(quote! {
        #block

        impl #impl_generics #blocking #type_args #where_clause {
            #(#methods)*
        }
    })
}
