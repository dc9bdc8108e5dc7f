//! The description of each exposed method that `manager info --types` and `describe()` show:
//! its parameters' and result's types as written, and the summary of its doc comment (its
//! first paragraph, as rustdoc takes it). The rest (names, receiver, async or not, `method_to_typeid`) is in the method table already.
//!
//! Generated as `Shared::DOCS`, one entry per method in dispatch order, beside
//! `Shared::METHODS`.

use proc_macro2::TokenStream;
use quote::{quote, ToTokens};
use syn::{Path, Type};

use crate::parse::Method;

/// `const DOCS: &[MethodDoc] = &[...];` for the methods, in dispatch order.
pub(crate) fn docs<'a>(
    krate: &Path,
    self_name: &str,
    methods: impl Iterator<Item = &'a Method>,
) -> TokenStream {
    let docs = methods.map(|method| {
        let params = method.params.iter().map(|p| type_text(&p.ty, self_name));
        let returns = type_text(&method.returns.ty, self_name);
        let doc = first_doc_line(&method.docs);
        quote! {
            #krate::__private::MethodDoc {
                param_types: &[ #(#params),* ],
                returns: #returns,
                doc: #doc,
            }
        }
    });
    quote! {
        const DOCS: &'static [#krate::__private::MethodDoc] = &[ #(#docs),* ];
    }
}

/// A type as the user wrote it, spaced as rustfmt would (`Result<Vec<i64>, String>`), with
/// `Self` named.
fn type_text(ty: &Type, self_name: &str) -> String {
    let raw = ty.to_token_stream().to_string();
    let named: Vec<&str> = raw
        .split(' ')
        .map(|token| if token == "Self" { self_name } else { token })
        .collect();
    let mut text = named.join(" ");
    for (spaced, tight) in [
        (" :: ", "::"),
        (" <", "<"),
        ("< ", "<"),
        (" >", ">"),
        (" ,", ","),
        ("& ", "&"),
        ("( ", "("),
        (" )", ")"),
        ("[ ", "["),
        (" ]", "]"),
        (" ;", ";"),
    ] {
        text = text.replace(spaced, tight);
    }
    text
}

/// The summary of the doc comment (`#[doc = "..."]` attributes) as rustdoc takes it: its
/// first paragraph, lines joined by spaces; empty without one.
fn first_doc_line(attrs: &[syn::Attribute]) -> String {
    let mut summary: Vec<String> = Vec::new();
    for attr in attrs {
        if !attr.path().is_ident("doc") {
            continue;
        }
        let syn::Meta::NameValue(meta) = &attr.meta else {
            continue;
        };
        let syn::Expr::Lit(syn::ExprLit {
            lit: syn::Lit::Str(text),
            ..
        }) = &meta.value
        else {
            continue;
        };
        let value = text.value();
        // A `///` line alone is an attribute of its own whose text has no line at all.
        let lines: Vec<&str> = if value.trim().is_empty() {
            vec![""]
        } else {
            value.lines().collect()
        };
        for line in lines {
            let line = line.trim();
            match (line.is_empty(), summary.is_empty()) {
                (true, true) => {}
                (true, false) => return summary.join(" "),
                (false, _) => summary.push(line.to_string()),
            }
        }
    }
    summary.join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(ty: &str) -> String {
        type_text(&syn::parse_str(ty).unwrap(), "Pair")
    }

    #[test]
    fn types_read_as_written() {
        assert_eq!(text("Result<Vec<i64>, String>"), "Result<Vec<i64>, String>");
        assert_eq!(text("&str"), "&str");
        assert_eq!(text("&mut [u8]"), "&mut [u8]");
        assert_eq!(text("Option<Self>"), "Option<Pair>");
        assert_eq!(text("(i64, String)"), "(i64, String)");
        assert_eq!(
            text("std::collections::HashMap<String, u8>"),
            "std::collections::HashMap<String, u8>"
        );
        assert_eq!(text("()"), "()");
    }

    #[test]
    fn the_summary_is_the_first_paragraph() {
        let item: syn::ItemFn = syn::parse_quote! {
            ///
            /// Adds one,
            /// or two.
            ///
            /// More.
            fn f() {}
        };
        assert_eq!(first_doc_line(&item.attrs), "Adds one, or two.");
    }
}
