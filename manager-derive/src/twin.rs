//! `#[blocking_twin(XBlockingProxy)]`, for `manager-core`'s built-in proxies: on an
//! `impl XProxy { pub async fn m(&self, ...) -> Result<R, Error> { ... } }` block, it emits
//! the block as written and, for each of its `pub async fn`s, the method of the same name,
//! arguments, result and docs on `XBlockingProxy` (a tuple struct around `XProxy`), whose body
//! runs the async one on the caller's thread with `crate::proxy::blocking::run`. So a typed
//! built-in proxy's signatures are written once, and its blocking twin cannot disagree.
//!
//! A method written without a body (`pub async fn len(&self) -> Result<u64, Error>;`) passes
//! its call on, unchanged, to the method of the same name of the raw proxy that
//! `#[shared(proxies = raw)]` generated (`self.0.raw`): the typed layer is written only where
//! it converts something. With `#[blocking_twin(XBlockingProxy, via = f)]` the call goes
//! through `f(base, call)` (the locks' `settled`, which first waits for the releases sent
//! before it).

use proc_macro2::TokenStream;
use quote::quote;
use syn::parse::{Parse, ParseStream};
use syn::{Attribute, FnArg, ImplItem, ImplItemFn, ItemImpl, Pat, Signature, Token, Visibility};

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

/// The attribute's arguments: the twin's type, and the function pass-throughs go through.
struct Args {
    blocking: syn::Ident,
    via: Option<syn::Path>,
}

impl Parse for Args {
    fn parse(input: ParseStream<'_>) -> syn::Result<Args> {
        let blocking = input.parse()?;
        let mut via = None;
        if input.parse::<Option<Token![,]>>()?.is_some() && !input.is_empty() {
            let key: syn::Ident = input.parse()?;
            if key != "via" {
                return Err(syn::Error::new_spanned(key, "expected `via = function`"));
            }
            input.parse::<Token![=]>()?;
            via = Some(input.parse()?);
            input.parse::<Option<Token![,]>>()?;
        }
        Ok(Args { blocking, via })
    }
}

/// A method written without a body: a pass-through to the raw proxy.
struct PassThrough {
    attrs: Vec<Attribute>,
    vis: Visibility,
    sig: Signature,
}

impl Parse for PassThrough {
    fn parse(input: ParseStream<'_>) -> syn::Result<PassThrough> {
        let attrs = input.call(Attribute::parse_outer)?;
        let vis = input.parse()?;
        let sig = input.parse()?;
        input.parse::<Token![;]>()?;
        Ok(PassThrough { attrs, vis, sig })
    }
}

impl PassThrough {
    /// The method with its body: the raw proxy's method of the same name, called with the
    /// same arguments (through `via` when given).
    fn with_body(self, via: Option<&syn::Path>) -> syn::Result<ImplItemFn> {
        let ident = &self.sig.ident;
        let arguments = argument_names(&self.sig)?;
        let call = quote!(self.0.raw.#ident(#(#arguments),*));
        let body = match via {
            None => quote!(#call.await),
            Some(via) => quote!(#via(crate::proxy::Proxy::base(self), #call).await),
        };
        let (attrs, vis, sig) = (&self.attrs, &self.vis, &self.sig);
        syn::parse2(quote! {
            #(#attrs)*
            #vis #sig {
                #body
            }
        })
    }
}

/// The names of `sig`'s arguments, to pass them on.
fn argument_names(sig: &Signature) -> syn::Result<Vec<syn::Ident>> {
    let mut names = Vec::new();
    for input in &sig.inputs {
        match input {
            FnArg::Receiver(_) => {}
            FnArg::Typed(pat) => match &*pat.pat {
                Pat::Ident(p) => names.push(p.ident.clone()),
                other => {
                    return Err(syn::Error::new_spanned(
                        other,
                        "name the argument, so that the blocking twin can pass it on",
                    ))
                }
            },
        }
    }
    Ok(names)
}

fn expand(args: TokenStream, item: TokenStream) -> syn::Result<TokenStream> {
    let Args { blocking, via } = syn::parse2(args)?;
    let mut block: ItemImpl = syn::parse2(item)?;
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
    for item in &mut block.items {
        if let ImplItem::Verbatim(tokens) = item {
            let pass: PassThrough = syn::parse2(tokens.clone())?;
            *item = ImplItem::Fn(pass.with_body(via.as_ref())?);
        }
    }
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
        let forwarded = argument_names(&sig)?;
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
