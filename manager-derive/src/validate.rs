//! Validation: every reason the impl block cannot be shared, each spanned on the user's token.

use std::collections::HashSet;

use quote::ToTokens;
use syn::Type;

use crate::ctxt::Ctxt;
use crate::parse::{Args, Method, Model, Name, Receiver, Target};

/// A method that clients may call, with its position in the dispatch table.
pub(crate) struct Exposed<'a> {
    pub method: &'a Method,
    pub mapped: Option<Target>,
    /// Listed in `quick = [...]`.
    pub quick: bool,
}

/// Checks the arguments against the impl block, reporting every error to `cx`. Returns the
/// exposed methods that passed, so that a failed expansion can still emit proxies with them.
pub(crate) fn validate<'a>(cx: &Ctxt, args: &Args, model: &'a Model) -> Vec<Exposed<'a>> {
    let item = &model.item;
    if let Some((path, _)) = &item.trait_ {
        cx.syn_error(syn::Error::new_spanned(
            path,
            "#[shared] goes on an inherent impl block (`impl MyType { ... }`), not on a trait impl",
        ));
    }
    for param in &item.generics.params {
        if let syn::GenericParam::Lifetime(lifetime) = param {
            cx.syn_error(syn::Error::new_spanned(
                lifetime,
                "#[shared] goes on a type the server owns, which cannot borrow: remove the lifetime parameter",
            ));
        }
    }

    let by_name = |name: &str| model.methods.iter().find(|m| m.name() == name);
    let mut chosen: Vec<&Method> = Vec::new();
    match &args.exposed {
        Some((_, names)) => {
            let mut seen = HashSet::new();
            for name in names {
                if !seen.insert(name.value.clone()) {
                    cx.syn_error(syn::Error::new(
                        name.span,
                        format!("`{}` is exposed twice", name.value),
                    ));
                    continue;
                }
                match by_name(&name.value) {
                    Some(method) => chosen.push(method),
                    None => cx.syn_error(syn::Error::new(
                        name.span,
                        format!(
                            "`exposed` names `{}`, which is not a method of this impl block{}",
                            name.value,
                            available(model)
                        ),
                    )),
                }
            }
        }
        None => chosen.extend(
            model
                .methods
                .iter()
                .filter(|m| m.is_pub && matches!(m.receiver, Receiver::Ref | Receiver::Mut)),
        ),
    }

    let mut mapped = std::collections::HashMap::new();
    for mapping in &args.method_to_typeid {
        let name = &mapping.method;
        if let Target::Typeid(typeid) = &mapping.target {
            if typeid.value().is_empty() {
                cx.syn_error(syn::Error::new(
                    typeid.span(),
                    "the typeid must not be empty",
                ));
            }
        }
        if mapped.contains_key(&name.value) {
            cx.syn_error(syn::Error::new(
                name.span,
                format!("`{}` is mapped twice", name.value),
            ));
            continue;
        }
        if exposed_method(cx, model, &chosen, "method_to_typeid", name).is_some() {
            mapped.insert(name.value.clone(), mapping.target.clone());
        }
    }

    let mut quick = HashSet::new();
    for name in args.quick.iter().flat_map(|(_, names)| names) {
        if !quick.insert(name.value.clone()) {
            cx.syn_error(syn::Error::new(
                name.span,
                format!("`{}` is listed in `quick` twice", name.value),
            ));
            continue;
        }
        match exposed_method(cx, model, &chosen, "quick", name) {
            Some(method) if method.sig.asyncness.is_some() => cx.syn_error(syn::Error::new(
                name.span,
                format!(
                    "`quick` names `{}`, an `async fn`: an async method holds no thread while \
                     it waits, so `quick` is for plain methods only",
                    name.value
                ),
            )),
            _ => {}
        }
    }

    let explicit = args.exposed.is_some();
    chosen.retain(|method| {
        let before = cx.error_count();
        check_callable(method, explicit, cx);
        check_not_generic(method, &item.generics, cx);
        cx.error_count() == before
    });
    chosen.retain(|method| {
        !(mapped.contains_key(&method.name()) && crate::stream::refuse_mapped_stream(cx, method))
    });
    chosen
        .into_iter()
        .map(|method| Exposed {
            mapped: mapped.get(&method.name()).cloned(),
            quick: quick.contains(&method.name()),
            method,
        })
        .collect()
}

/// The exposed method that argument `arg` names with `name`, or `None` after reporting that it
/// names no method, or one that is not exposed.
fn exposed_method<'a>(
    cx: &Ctxt,
    model: &'a Model,
    chosen: &[&'a Method],
    arg: &str,
    name: &Name,
) -> Option<&'a Method> {
    let Some(method) = model.methods.iter().find(|m| m.name() == name.value) else {
        cx.syn_error(syn::Error::new(
            name.span,
            format!(
                "`{arg}` names `{}`, which is not a method of this impl block{}",
                name.value,
                available(model)
            ),
        ));
        return None;
    };
    if !chosen.iter().any(|c| std::ptr::eq(*c, method)) {
        cx.syn_error(syn::Error::new(
            name.span,
            format!(
                "`{arg}` names `{}`, which is not exposed; add it to `exposed`{}",
                name.value,
                if method.is_pub {
                    ""
                } else {
                    " (or make it `pub`)"
                }
            ),
        ));
        return None;
    }
    Some(method)
}

fn available(model: &Model) -> String {
    let names: Vec<String> = model
        .methods
        .iter()
        .filter(|m| matches!(m.receiver, Receiver::Ref | Receiver::Mut))
        .map(|m| format!("`{}`", m.name()))
        .collect();
    if names.is_empty() {
        String::new()
    } else {
        format!(" (its methods: {})", names.join(", "))
    }
}

fn check_callable(method: &Method, explicit: bool, cx: &Ctxt) {
    let name = method.name();
    let sig = &method.sig;
    let hint = if explicit {
        ""
    } else {
        " (it is shared because it is `pub`; to keep it out, list the methods to share with `exposed = [...]`)"
    };
    // `new_spanned` underlines the whole offending tokens, also on stable where spans do not join.
    let cannot = |tokens: &dyn ToTokens, why: String| {
        syn::Error::new_spanned(
            tokens,
            format!("method `{name}` cannot be called remotely: {why}{hint}"),
        )
    };
    if name == "into_async" || name == "into_blocking" {
        cx.syn_error(syn::Error::new_spanned(
            &sig.ident,
            format!("method `{name}` cannot be shared under this name: the generated proxies have a method `{name}` of their own, which switches between the async and the blocking proxy; rename it{hint}"),
        ));
    }
    if name == "with_timeout" {
        cx.syn_error(syn::Error::new_spanned(
            &sig.ident,
            format!("method `{name}` cannot be shared under this name: the generated proxies have a method `{name}` of their own, which sets the deadline of their calls; rename it{hint}"),
        ));
    }
    match method.receiver {
        Receiver::Ref | Receiver::Mut => {}
        Receiver::None => cx.syn_error(cannot(
            &sig.ident,
            "it takes no `self`, so there is no object to call it on".into(),
        )),
        Receiver::Other => cx.syn_error(cannot(
            // `Receiver::Other` comes from a first input that is a receiver.
            &sig.inputs[0],
            "it must take `&self` or `&mut self` (the server keeps the object)".into(),
        )),
    }
    if let Some(generic) = sig
        .generics
        .params
        .iter()
        .find(|p| !matches!(p, syn::GenericParam::Lifetime(_)))
    {
        cx.syn_error(cannot(
            generic,
            "it is generic, and the server cannot choose a type parameter from the bytes on the wire".into(),
        ));
    }
    if let syn::Safety::Unsafe(unsafety) = &sig.safety {
        cx.syn_error(cannot(unsafety, "it is `unsafe`".into()));
    }
    for param in &method.params {
        match &param.ty {
            Type::Reference(r) if r.mutability.is_some() => cx.syn_error(cannot(
                r,
                format!(
                    "its argument `{}` is a `&mut` reference, and a change to it could not reach the caller's process",
                    param.name
                ),
            )),
            Type::ImplTrait(t) => cx.syn_error(cannot(
                t,
                format!("its argument `{}` is an `impl Trait`, which has no concrete type to decode", param.name),
            )),
            _ => {}
        }
    }
    let ret = &method.returns.ty;
    if is_io_result(ret) {
        cx.error_spanned_by(
            ret,
            format!("method `{name}` cannot return `io::Result<T>` to another process: `io::Error` cannot be sent (it is not serde); return `Result<T, String>` with `.map_err(|e| e.to_string())`, or another error type that derives `Serialize` and `Deserialize`{hint}"),
        );
    }
    if let Type::ImplTrait(t) = ret {
        cx.syn_error(cannot(
            t,
            "it returns an `impl Trait`, which has no concrete type to send".into(),
        ));
    } else if let Some(borrow) = borrowed(ret) {
        cx.syn_error(cannot(
            &borrow,
            "it returns a borrowed value, and results travel to the caller by value; return an owned type".into(),
        ));
    }
}

/// In a generic impl block, that `method`'s arguments and result name none of the block's
/// parameters (nor `Self`, which names them): the server fixes them when it registers the type,
/// and the proxies, which serve every choice, cannot name them.
fn check_not_generic(method: &Method, generics: &syn::Generics, cx: &Ctxt) {
    let names: Vec<String> = generics
        .params
        .iter()
        .filter_map(|p| match p {
            syn::GenericParam::Type(t) => Some(t.ident.to_string()),
            syn::GenericParam::Const(c) => Some(c.ident.to_string()),
            syn::GenericParam::Lifetime(_) => None,
        })
        .collect();
    if names.is_empty() {
        return;
    }
    fn find(tokens: proc_macro2::TokenStream, names: &[String]) -> Option<proc_macro2::Ident> {
        tokens.into_iter().find_map(|token| match token {
            proc_macro2::TokenTree::Ident(ident)
                if ident == "Self" || names.iter().any(|n| ident == n) =>
            {
                Some(ident)
            }
            proc_macro2::TokenTree::Group(group) => find(group.stream(), names),
            _ => None,
        })
    }
    let types = method
        .params
        .iter()
        .map(|p| &p.ty)
        .chain([&method.returns.ty]);
    for ty in types {
        if let Some(ident) = find(ty.to_token_stream(), &names) {
            cx.syn_error(syn::Error::new(
                ident.span(),
                format!(
                    "method `{}` cannot be called remotely: its signature names `{ident}`, a parameter of the generic impl block, which the server fixes when it registers the type; the proxies serve every choice of it, so they cannot name it",
                    method.name()
                ),
            ));
        }
    }
}

/// The tokens of the borrow in `ty`: the whole type when it is a reference, else the first
/// reference or lifetime inside it.
pub(crate) fn borrowed(ty: &Type) -> Option<proc_macro2::TokenStream> {
    fn walk(tokens: proc_macro2::TokenStream) -> Option<proc_macro2::TokenStream> {
        let mut tokens = tokens.into_iter();
        while let Some(token) = tokens.next() {
            match token {
                proc_macro2::TokenTree::Punct(p) if p.as_char() == '&' => {
                    return Some(proc_macro2::TokenTree::Punct(p).into())
                }
                // A lifetime: the quote and the name.
                proc_macro2::TokenTree::Punct(p) if p.as_char() == '\'' => {
                    let mut lifetime: proc_macro2::TokenStream =
                        proc_macro2::TokenTree::Punct(p).into();
                    lifetime.extend(tokens.next());
                    return Some(lifetime);
                }
                proc_macro2::TokenTree::Group(g) => {
                    if let Some(tokens) = walk(g.stream()) {
                        return Some(tokens);
                    }
                }
                _ => {}
            }
        }
        None
    }
    if let Type::Reference(_) = ty {
        return Some(ty.to_token_stream());
    }
    walk(ty.to_token_stream())
}

/// Whether `ty` is written `io::Result<T>` (`std::io::Result<T>`): its error type is
/// `io::Error`, which has no serde impls and, by the orphan rule, never can.
fn is_io_result(ty: &Type) -> bool {
    let Type::Path(path) = ty else { return false };
    let segments: Vec<_> = path.path.segments.iter().collect();
    matches!(segments.as_slice(), [.., io, last] if io.ident == "io" && last.ident == "Result")
}
