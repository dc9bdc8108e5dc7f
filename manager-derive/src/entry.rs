//! `#[entry]`: records a free function so that a re-executed copy of the binary can call it.
//! The same three stages as `#[shared]`: [`parse`] (the attribute and the function),
//! [`validate`] (every reason it cannot be an entry, each spanned on the user's token) and
//! [`expand`] (the `inventory` registration), all reporting to one [`Ctxt`].

use proc_macro2::TokenStream;
use quote::{format_ident, quote};
use syn::spanned::Spanned;
use syn::{FnArg, ItemFn, Type};

use crate::ctxt::Ctxt;
use crate::parse::{arguments, crate_path};

/// An entry function, as the macro sees it.
struct Entry {
    function: ItemFn,
    krate: syn::Path,
}

pub(crate) fn entry(args: TokenStream, item: TokenStream) -> TokenStream {
    let cx = Ctxt::new();
    let entry = parse(&cx, args, item.clone());
    if let Some(entry) = &entry {
        validate(&cx, entry);
    }
    match (cx.check(), entry) {
        (Ok(()), Some(entry)) => expand(&entry),
        // The function itself is still emitted, so that calls of it are not errors too.
        (Err(error), Some(entry)) => {
            let (function, error) = (&entry.function, error.to_compile_error());
            quote!(#function #error)
        }
        (Err(error), None) => {
            let error = error.to_compile_error();
            quote!(#item #error)
        }
        (Ok(()), None) => unreachable!("parse reports why it found no function"),
    }
}

/// The attribute's arguments (`crate = "path"`, optional) and the function.
fn parse(cx: &Ctxt, args: TokenStream, item: TokenStream) -> Option<Entry> {
    let mut krate: syn::Path = syn::parse_quote!(::manager);
    arguments(cx, args, "#[entry]", &["crate"], |_, input| {
        krate = crate_path(input)?;
        Ok(())
    });
    match syn::parse2::<ItemFn>(item) {
        Ok(function) => Some(Entry { function, krate }),
        Err(e) => {
            cx.error_at(
                e.span(),
                "#[manager::entry] goes on a free function: `fn worker(arg: T) -> R { ... }`",
            );
            None
        }
    }
}

/// Every reason the function cannot be run by a spawned process.
fn validate(cx: &Ctxt, entry: &Entry) {
    let sig = &entry.function.sig;
    if !sig.generics.params.is_empty() {
        cx.error_spanned_by(
            &sig.generics.params,
            "an entry function cannot be generic: the spawned process must find one concrete function",
        );
    }
    if let Some(asyncness) = &sig.asyncness {
        cx.error_at(
            asyncness.span(),
            "an entry function cannot be async; start a runtime inside it",
        );
    }
    for input in &sig.inputs {
        if let FnArg::Receiver(r) = input {
            cx.error_at(r.span(), "an entry function cannot take `self`");
        }
    }
}

/// The function, and its registration: its name, and how to decode its arguments and run it.
fn expand(entry: &Entry) -> TokenStream {
    let Entry { function, krate } = entry;
    let sig = &function.sig;
    let ident = &sig.ident;
    let types: Vec<&Type> = sig
        .inputs
        .iter()
        .filter_map(|input| match input {
            FnArg::Typed(pat) => Some(&*pat.ty),
            FnArg::Receiver(_) => None,
        })
        .collect();
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
