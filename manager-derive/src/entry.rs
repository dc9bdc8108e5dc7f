//! `#[entry]`: records a free function so that a re-executed copy of the binary can call it.

use proc_macro2::TokenStream;
use quote::{format_ident, quote};
use syn::spanned::Spanned;
use syn::{FnArg, ItemFn};

pub(crate) fn entry(args: TokenStream, item: TokenStream) -> TokenStream {
    let function: ItemFn = match syn::parse2(item.clone()) {
        Ok(function) => function,
        Err(e) => {
            let error = syn::Error::new(e.span(), "#[manager::entry] goes on a free function")
                .to_compile_error();
            return quote!(#item #error);
        }
    };
    let mut errors: Vec<syn::Error> = Vec::new();
    let mut krate: syn::Path = syn::parse_quote!(::manager);
    if !args.is_empty() {
        match syn::parse2::<syn::MetaNameValue>(args) {
            Ok(meta) if meta.path.is_ident("crate") => match &meta.value {
                syn::Expr::Lit(syn::ExprLit {
                    lit: syn::Lit::Str(s),
                    ..
                }) => match s.parse() {
                    Ok(path) => krate = path,
                    Err(e) => errors.push(e),
                },
                other => errors.push(syn::Error::new(
                    other.span(),
                    "expected a string: crate = \"path\"",
                )),
            },
            Ok(meta) => errors.push(syn::Error::new(
                meta.path.span(),
                "expected `crate = \"path\"` or nothing",
            )),
            Err(e) => errors.push(syn::Error::new(
                e.span(),
                "expected `crate = \"path\"` or nothing",
            )),
        }
    }
    let sig = &function.sig;
    if !sig.generics.params.is_empty() {
        errors.push(syn::Error::new_spanned(
            &sig.generics.params,
            "an entry function cannot be generic: the spawned process must find one concrete function",
        ));
    }
    if let Some(asyncness) = &sig.asyncness {
        errors.push(syn::Error::new(
            asyncness.span(),
            "an entry function cannot be async; start a runtime inside it",
        ));
    }
    let mut types = Vec::new();
    for input in &sig.inputs {
        match input {
            FnArg::Receiver(r) => errors.push(syn::Error::new(
                r.span(),
                "an entry function cannot take `self`",
            )),
            FnArg::Typed(pat) => types.push((*pat.ty).clone()),
        }
    }
    if let Some(first) = errors.into_iter().reduce(|mut all, e| {
        all.combine(e);
        all
    }) {
        let error = first.to_compile_error();
        return quote!(#function #error);
    }
    let ident = &sig.ident;
    let vars: Vec<_> = (0..types.len())
        .map(|i| format_ident!("__arg{}", i))
        .collect();
    quote! {
        #function

        #krate::__private::inventory::submit! {
            #krate::__private::EntryPoint {
                name: || ::core::any::type_name_of_val(&#ident),
                run: |__bytes, __started| {
                    let ( #(#vars,)* ): ( #(#types,)* ) = #krate::__private::decode_entry_args(__bytes)?;
                    __started();
                    ::core::result::Result::Ok(#krate::__private::IntoEntryOutcome::into_outcome(#ident(#(#vars),*)))
                },
            }
        }
    }
}
