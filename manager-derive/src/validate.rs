//! Validation: every reason the impl block cannot be shared, each spanned on the user's token.

use std::collections::HashSet;

use quote::ToTokens;
use syn::Type;

use crate::parse::{Args, Method, Model, Receiver, Target};

/// A method that clients may call, with its position in the dispatch table.
pub(crate) struct Exposed<'a> {
    pub method: &'a Method,
    pub mapped: Option<Target>,
    /// Listed in `quick = [...]`.
    pub quick: bool,
}

/// Collects errors so that the user sees all of them at once.
#[derive(Default)]
struct Errors(Option<syn::Error>);

impl Errors {
    fn push(&mut self, error: syn::Error) {
        match &mut self.0 {
            Some(all) => all.combine(error),
            None => self.0 = Some(error),
        }
    }
}

pub(crate) fn validate<'a>(args: &Args, model: &'a Model) -> Result<Vec<Exposed<'a>>, syn::Error> {
    let mut errors = Errors::default();
    let item = &model.item;
    if let Some((path, _)) = &item.trait_ {
        errors.push(syn::Error::new_spanned(
            path,
            "#[shared] goes on an inherent impl block (`impl MyType { ... }`), not on a trait impl",
        ));
    }
    if !item.generics.params.is_empty() {
        errors.push(syn::Error::new_spanned(
            &item.generics.params,
            "#[shared] does not support generic impl blocks: a server must know the concrete type it holds",
        ));
    }

    let by_name = |name: &str| model.methods.iter().find(|m| m.name() == name);
    let mut chosen: Vec<&Method> = Vec::new();
    match &args.exposed {
        Some((_, names)) => {
            let mut seen = HashSet::new();
            for name in names {
                if !seen.insert(name.value.clone()) {
                    errors.push(syn::Error::new(
                        name.span,
                        format!("`{}` is exposed twice", name.value),
                    ));
                    continue;
                }
                match by_name(&name.value) {
                    Some(method) => chosen.push(method),
                    None => errors.push(syn::Error::new(
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

    let explicit = args.exposed.is_some();
    for method in &chosen {
        check_callable(method, explicit, &mut errors);
    }

    let mut mapped = std::collections::HashMap::new();
    for mapping in &args.method_to_typeid {
        let name = &mapping.method;
        if let Target::Typeid(typeid) = &mapping.target {
            if typeid.value().is_empty() {
                errors.push(syn::Error::new(
                    typeid.span(),
                    "the typeid must not be empty",
                ));
            }
        }
        if mapped.contains_key(&name.value) {
            errors.push(syn::Error::new(
                name.span,
                format!("`{}` is mapped twice", name.value),
            ));
            continue;
        }
        match by_name(&name.value) {
            None => errors.push(syn::Error::new(
                name.span,
                format!(
                    "`method_to_typeid` names `{}`, which is not a method of this impl block{}",
                    name.value,
                    available(model)
                ),
            )),
            Some(method) if !chosen.iter().any(|c| std::ptr::eq(*c, method)) => {
                errors.push(syn::Error::new(
                    name.span,
                    format!(
                        "`method_to_typeid` names `{}`, which is not exposed; add it to `exposed`{}",
                        name.value,
                        if method.is_pub { "" } else { " (or make it `pub`)" }
                    ),
                ))
            }
            Some(_) => {
                mapped.insert(name.value.clone(), mapping.target.clone());
            }
        }
    }

    let mut quick = HashSet::new();
    for name in args.quick.iter().flat_map(|(_, names)| names) {
        if !quick.insert(name.value.clone()) {
            errors.push(syn::Error::new(
                name.span,
                format!("`{}` is listed in `quick` twice", name.value),
            ));
            continue;
        }
        match by_name(&name.value) {
            None => errors.push(syn::Error::new(
                name.span,
                format!(
                    "`quick` names `{}`, which is not a method of this impl block{}",
                    name.value,
                    available(model)
                ),
            )),
            Some(method) if !chosen.iter().any(|c| std::ptr::eq(*c, method)) => {
                errors.push(syn::Error::new(
                    name.span,
                    format!(
                        "`quick` names `{}`, which is not exposed; add it to `exposed`{}",
                        name.value,
                        if method.is_pub {
                            ""
                        } else {
                            " (or make it `pub`)"
                        }
                    ),
                ))
            }
            Some(method) if method.sig.asyncness.is_some() => errors.push(syn::Error::new(
                name.span,
                format!(
                    "`quick` names `{}`, an `async fn`: async methods never hold a thread \
                     while they wait, so `quick` is only for plain methods",
                    name.value
                ),
            )),
            Some(_) => {}
        }
    }

    if let Some(error) = errors.0 {
        return Err(error);
    }
    Ok(chosen
        .into_iter()
        .map(|method| Exposed {
            mapped: mapped.get(&method.name()).cloned(),
            quick: quick.contains(&method.name()),
            method,
        })
        .collect())
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

fn check_callable(method: &Method, explicit: bool, errors: &mut Errors) {
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
        errors.push(syn::Error::new_spanned(
            &sig.ident,
            format!("method `{name}` cannot be shared under this name: the generated proxies have a method `{name}` of their own, which switches between the async and the blocking proxy; rename it{hint}"),
        ));
    }
    if name == "with_timeout" {
        errors.push(syn::Error::new_spanned(
            &sig.ident,
            format!("method `{name}` cannot be shared under this name: the generated proxies have a method `{name}` of their own, which sets the deadline of their calls; rename it{hint}"),
        ));
    }
    match method.receiver {
        Receiver::Ref | Receiver::Mut => {}
        Receiver::None => errors.push(cannot(
            &sig.ident,
            "it takes no `self`, so there is no object to call it on".into(),
        )),
        Receiver::Other => errors.push(cannot(
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
        errors.push(cannot(
            generic,
            "it is generic, and the server cannot choose a type parameter from the bytes on the wire".into(),
        ));
    }
    if let syn::Safety::Unsafe(unsafety) = &sig.safety {
        errors.push(cannot(unsafety, "it is `unsafe`".into()));
    }
    for param in &method.params {
        match &param.ty {
            Type::Reference(r) if r.mutability.is_some() => errors.push(cannot(
                r,
                format!(
                    "its argument `{}` is a `&mut` reference, and a change to it could not reach the caller's process",
                    param.name
                ),
            )),
            Type::ImplTrait(t) => errors.push(cannot(
                t,
                format!("its argument `{}` is an `impl Trait`, which has no concrete type to decode", param.name),
            )),
            _ => {}
        }
    }
    let ret = &method.returns.ty;
    if let Type::ImplTrait(t) = ret {
        errors.push(cannot(
            t,
            "it returns an `impl Trait`, which has no concrete type to send".into(),
        ));
    } else if let Some(borrow) = borrowed(ret) {
        errors.push(cannot(
            &borrow,
            "it returns a borrowed value, and results travel to the caller by value; return an owned type".into(),
        ));
    }
}

/// The tokens of the borrow in `ty`: the whole type when it is a reference, else the first
/// reference or lifetime inside it.
fn borrowed(ty: &Type) -> Option<proc_macro2::TokenStream> {
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
