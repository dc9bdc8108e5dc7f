//! Parsing: the attribute arguments and the impl block, into a model of the shared methods.

use proc_macro2::{Span, TokenStream};
use syn::parse::{Parse, ParseStream};

use crate::ctxt::Ctxt;
use syn::punctuated::Punctuated;
use syn::{FnArg, ImplItem, ItemImpl, LitStr, Pat, Path, ReturnType, Token, Type};

/// A method name as written in the attribute: an identifier or a string.
#[derive(Clone)]
pub(crate) struct Name {
    pub value: String,
    pub span: Span,
}

impl Parse for Name {
    fn parse(input: ParseStream<'_>) -> syn::Result<Self> {
        if input.peek(LitStr) {
            let lit: LitStr = input.parse()?;
            Ok(Name {
                value: lit.value(),
                span: lit.span(),
            })
        } else {
            let ident: syn::Ident = input.call(syn::ext::IdentExt::parse_any)?;
            Ok(Name {
                value: ident.to_string(),
                span: ident.span(),
            })
        }
    }
}

/// One `method: Target` pair of `method_to_typeid`.
pub(crate) struct Mapping {
    pub method: Name,
    pub target: Target,
}

/// What a method is mapped to.
#[derive(Clone)]
pub(crate) enum Target {
    /// A typeid string, as in Python: the proxy type is chosen at the call.
    Typeid(LitStr),
    /// A type with a `#[shared]` impl: the method returns that type's proxies.
    Type(syn::Path),
}

impl Parse for Mapping {
    fn parse(input: ParseStream<'_>) -> syn::Result<Self> {
        let method: Name = input.parse()?;
        if input.peek(Token![:]) {
            input.parse::<Token![:]>()?;
        } else if input.peek(Token![=]) && !input.peek(Token![=>]) {
            input.parse::<Token![=]>()?;
        } else {
            return Err(input.error(
                "expected `:` between the method and its typeid, as in `get_item: \"ItemWrapper\"`",
            ));
        }
        let target = if input.peek(LitStr) {
            Target::Typeid(input.parse()?)
        } else {
            Target::Type(input.parse().map_err(|e| {
                syn::Error::new(
                    e.span(),
                    "expected a type with a `#[shared]` impl (`get_item: ItemWrapper`) or a typeid string (`get_item: \"ItemWrapper\"`)",
                )
            })?)
        };
        Ok(Mapping { method, target })
    }
}

/// The arguments of `#[shared(...)]`.
pub(crate) struct Args {
    pub exposed: Option<(Span, Vec<Name>)>,
    pub method_to_typeid: Vec<Mapping>,
    /// `quick = [...]`: methods that never block and finish in microseconds, run by the
    /// server where it reads the request instead of on a worker thread.
    pub quick: Option<(Span, Vec<Name>)>,
    pub krate: Option<Path>,
    /// `proxies = ...`: which client proxies to generate.
    pub proxies: Proxies,
}

/// Which client proxies `#[shared]` generates.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Proxies {
    /// `proxies = true` (the default): `XProxy` and `XBlockingProxy`.
    Typed,
    /// `proxies = false`: the dispatcher only.
    None,
    /// `proxies = raw`: one crate-private async `XRawProxy`, whose methods take and return
    /// exactly what the server's do, for a type whose public proxies are a hand-written
    /// layer over it (the built-in types, which store `Value`s: the layer converts `T`).
    Raw,
}

/// The arguments `#[shared(...)]` takes.
const SHARED_ARGS: &[&str] = &["exposed", "method_to_typeid", "quick", "crate", "proxies"];

/// Parses `#[shared(...)]`'s arguments. Every error is reported to `cx` and the argument in
/// error is left at its default, so validation still runs on the rest.
pub(crate) fn shared_args(cx: &Ctxt, tokens: TokenStream) -> Args {
    let mut args = Args {
        exposed: None,
        method_to_typeid: Vec::new(),
        quick: None,
        krate: None,
        proxies: Proxies::Typed,
    };
    arguments(cx, tokens, "#[shared]", SHARED_ARGS, |key, input| {
        match key.to_string().as_str() {
            "exposed" => {
                let names = bracketed_names(input, "exposed = [get_x, set_x]")?;
                args.exposed = Some((key.span(), names));
            }
            "quick" => {
                let names = bracketed_names(input, "quick = [get_x, len]")?;
                args.quick = Some((key.span(), names));
            }
            "method_to_typeid" => {
                if !input.peek(syn::token::Brace) {
                    return Err(input.error(
                        "expected the mapping in braces, as in `method_to_typeid = { get_item: \"ItemWrapper\" }`",
                    ));
                }
                let pairs = in_group(input, Punctuated::<Mapping, Token![,]>::parse_terminated)?;
                args.method_to_typeid = pairs.into_iter().collect();
            }
            "crate" => args.krate = Some(crate_path(input)?),
            _ => {
                if input.peek(syn::Ident) {
                    let ident: syn::Ident = input.parse()?;
                    if ident != "raw" {
                        return Err(syn::Error::new(
                            ident.span(),
                            "expected `true` or `false`, as in `proxies = false`",
                        ));
                    }
                    args.proxies = Proxies::Raw;
                } else {
                    let lit: syn::LitBool = input.parse().map_err(|e| {
                        syn::Error::new(
                            e.span(),
                            "expected `true` or `false`, as in `proxies = false`",
                        )
                    })?;
                    args.proxies = if lit.value {
                        Proxies::Typed
                    } else {
                        Proxies::None
                    };
                }
            }
        }
        Ok(())
    });
    args
}

/// Parses the contents of the next `[...]` or `{...}` with `parser`, as a stream of its own,
/// so that an error inside is one error (not also "unexpected token" for the rest).
/// The method names in brackets after `exposed =` or `quick =`; `example` shows the form in
/// the error when the brackets are missing.
fn bracketed_names(input: ParseStream<'_>, example: &str) -> syn::Result<Vec<Name>> {
    if !input.peek(syn::token::Bracket) {
        return Err(input.error(format!(
            "expected the method names in brackets, as in `{example}`"
        )));
    }
    let names = in_group(input, Punctuated::<Name, Token![,]>::parse_terminated)?;
    Ok(names.into_iter().collect())
}

fn in_group<T>(
    input: ParseStream<'_>,
    parser: impl syn::parse::Parser<Output = T>,
) -> syn::Result<T> {
    let group: proc_macro2::Group = input.parse()?;
    parser.parse2(group.stream())
}

/// `crate = "path"`: the path of the `manager` crate, for crates that rename it.
pub(crate) fn crate_path(input: ParseStream<'_>) -> syn::Result<Path> {
    let lit: LitStr = input.parse().map_err(|e| {
        syn::Error::new(
            e.span(),
            "expected the path of the `manager` crate in a string, as in `crate = \"::manager\"`",
        )
    })?;
    lit.parse().map_err(|_| {
        syn::Error::new(
            lit.span(),
            format!(
                "`{}` is not a path, as in `crate = \"::manager\"`",
                lit.value()
            ),
        )
    })
}

/// Parses `key = value, ...` arguments of the attribute `what`. `value` parses the value of a
/// key of `known`, each at most once. Every unknown or repeated key, missing `=`, bad value or
/// missing `,` is reported to `cx`, spanned on its token; parsing then skips to the next `,`
/// and goes on, so one build shows every mistake.
pub(crate) fn arguments(
    cx: &Ctxt,
    tokens: TokenStream,
    what: &str,
    known: &[&str],
    mut value: impl FnMut(&syn::Ident, ParseStream<'_>) -> syn::Result<()>,
) {
    let expected = match known {
        [only] => format!("`{only}`"),
        _ => format!(
            "one of {}",
            known
                .iter()
                .map(|k| format!("`{k}`"))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    };
    let parser = |input: ParseStream<'_>| {
        let mut seen: Vec<String> = Vec::new();
        while !input.is_empty() {
            if let Err(error) = one_argument(input, what, known, &expected, &mut seen, &mut value) {
                cx.syn_error(error);
                skip_to_comma(input);
            }
            if input.is_empty() {
                break;
            }
            if let Err(error) = input.parse::<Token![,]>() {
                cx.syn_error(syn::Error::new(
                    error.span(),
                    "expected `,` between the arguments",
                ));
                skip_to_comma(input);
                let _ = input.parse::<Token![,]>();
            }
        }
        Ok(())
    };
    if let Err(error) = syn::parse::Parser::parse2(parser, tokens) {
        cx.syn_error(error);
    }
}

fn one_argument(
    input: ParseStream<'_>,
    what: &str,
    known: &[&str],
    expected: &str,
    seen: &mut Vec<String>,
    value: &mut impl FnMut(&syn::Ident, ParseStream<'_>) -> syn::Result<()>,
) -> syn::Result<()> {
    let key: syn::Ident = input.call(syn::ext::IdentExt::parse_any).map_err(|e| {
        syn::Error::new(
            e.span(),
            format!("expected an argument of {what}: {expected}"),
        )
    })?;
    let name = key.to_string();
    if !known.contains(&name.as_str()) {
        return Err(syn::Error::new(
            key.span(),
            format!("unknown argument `{name}` of {what}: expected {expected}"),
        ));
    }
    if seen.contains(&name) {
        return Err(syn::Error::new(
            key.span(),
            format!("`{name}` is given twice; give each argument of {what} once"),
        ));
    }
    seen.push(name.clone());
    input
        .parse::<Token![=]>()
        .map_err(|e| syn::Error::new(e.span(), format!("expected `=` after `{name}`")))?;
    value(&key, input)?;
    if !input.is_empty() && !input.peek(Token![,]) {
        return Err(input.error(format!(
            "unexpected tokens after the value of `{name}`; separate the arguments with `,`"
        )));
    }
    Ok(())
}

/// Skips the tokens of an argument in error, up to (not including) the next `,`.
fn skip_to_comma(input: ParseStream<'_>) {
    let _ = input.step(|cursor| {
        let mut rest = *cursor;
        while let Some((tree, next)) = rest.token_tree() {
            if matches!(&tree, proc_macro2::TokenTree::Punct(p) if p.as_char() == ',') {
                break;
            }
            rest = next;
        }
        Ok(((), rest))
    });
}

/// How a method takes `self`.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Receiver {
    Ref,
    Mut,
    /// By value, boxed, or absent: cannot be called remotely.
    Other,
    None,
}

/// One parameter of a method.
pub(crate) struct Param {
    /// The parameter's name, for `MethodDesc::params`.
    pub name: String,
    pub ty: Type,
}

/// The return of a method, as the macro sees it.
pub(crate) struct Returns {
    /// The whole return type (`()` when absent).
    pub ty: Type,
    /// For `Result<T, E>`: `T` and `E`.
    pub result: Option<(Type, Type)>,
}

/// One method of the impl block.
pub(crate) struct Method {
    pub sig: syn::Signature,
    pub is_pub: bool,
    pub receiver: Receiver,
    /// The parameters that travel on the wire (not the `&CallContext`).
    pub params: Vec<Param>,
    /// The method's parameters in order: `Some(i)` is `params[i]`, `None` the call context.
    pub call_order: Vec<Option<usize>>,
    pub returns: Returns,
    pub docs: Vec<syn::Attribute>,
}

impl Method {
    pub(crate) fn name(&self) -> String {
        self.sig.ident.to_string()
    }
}

/// The impl block.
pub(crate) struct Model {
    pub item: ItemImpl,
    pub methods: Vec<Method>,
}

/// Parses the impl block. `None` (with the error reported) when it is not an impl block.
pub(crate) fn parse_item(cx: &Ctxt, item: TokenStream) -> Option<Model> {
    let item: ItemImpl = match syn::parse2(item) {
        Ok(item) => item,
        Err(e) => {
            cx.error_at(
                e.span(),
                "#[shared] goes on an inherent impl block: `impl MyType { ... }`",
            );
            return None;
        }
    };
    let mut methods = Vec::new();
    for impl_item in &item.items {
        let ImplItem::Fn(f) = impl_item else { continue };
        let receiver = match f.sig.inputs.first() {
            Some(FnArg::Receiver(r)) => match &r.kind {
                syn::ReceiverKind::Reference(_, _, Some(_)) => Receiver::Mut,
                syn::ReceiverKind::Reference(_, _, None) => Receiver::Ref,
                _ => Receiver::Other,
            },
            _ => Receiver::None,
        };
        let mut params = Vec::new();
        let mut call_order = Vec::new();
        for input in &f.sig.inputs {
            let FnArg::Typed(pat) = input else { continue };
            if is_call_context(&pat.ty) {
                call_order.push(None);
                continue;
            }
            let name = match &*pat.pat {
                Pat::Ident(p) => syn::ext::IdentExt::unraw(&p.ident).to_string(),
                _ => format!("arg{}", params.len()),
            };
            call_order.push(Some(params.len()));
            params.push(Param {
                name,
                ty: (*pat.ty).clone(),
            });
        }
        let ty: Type = match &f.sig.output {
            ReturnType::Default => syn::parse_quote!(()),
            ReturnType::Type(_, ty) => (**ty).clone(),
        };
        let result = result_parts(&ty);
        methods.push(Method {
            sig: f.sig.clone(),
            is_pub: matches!(f.vis, syn::Visibility::Public(_)),
            receiver,
            params,
            call_order,
            returns: Returns { ty, result },
            docs: f
                .attrs
                .iter()
                .filter(|a| a.path().is_ident("doc"))
                .cloned()
                .collect(),
        });
    }
    Some(Model { item, methods })
}

/// Whether `ty` is `&CallContext` (any path ending in `CallContext`): the server passes it,
/// the caller does not.
fn is_call_context(ty: &Type) -> bool {
    let Type::Reference(r) = ty else { return false };
    if r.mutability.is_some() {
        return false;
    }
    matches!(&*r.elem, Type::Path(p) if p.path.segments.last().is_some_and(|s| s.ident == "CallContext"))
}

/// `Some((T, E))` when `ty` is written `Result<T, E>` (any path ending in `Result` with two
/// type arguments).
fn result_parts(ty: &Type) -> Option<(Type, Type)> {
    let Type::Path(path) = ty else { return None };
    let last = path.path.segments.last()?;
    if last.ident != "Result" {
        return None;
    }
    let syn::PathArguments::AngleBracketed(args) = &last.arguments else {
        return None;
    };
    let types: Vec<&Type> = args
        .args
        .iter()
        .filter_map(|a| match a {
            syn::GenericArgument::Type(t) => Some(t),
            _ => None,
        })
        .collect();
    match types.as_slice() {
        [ok, err] => Some(((*ok).clone(), (*err).clone())),
        _ => None,
    }
}

/// Whether `ty` is written as a one-argument `Result<T>` (`io::Result<T>`, `fmt::Result` has
/// none): an alias whose error type the macro cannot see, so the value is sent as it is.
pub(crate) fn is_result_alias(ty: &Type) -> bool {
    let Type::Path(path) = ty else { return false };
    let Some(last) = path.path.segments.last() else {
        return false;
    };
    let syn::PathArguments::AngleBracketed(args) = &last.arguments else {
        return false;
    };
    last.ident == "Result"
        && args
            .args
            .iter()
            .filter(|a| matches!(a, syn::GenericArgument::Type(_)))
            .count()
            == 1
}
