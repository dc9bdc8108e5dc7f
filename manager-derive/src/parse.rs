//! Parsing: the attribute arguments and the impl block, into a model of the shared methods.

use proc_macro2::{Span, TokenStream};
use syn::parse::{Parse, ParseStream};
use syn::punctuated::Punctuated;
use syn::{
    braced, bracketed, FnArg, ImplItem, ItemImpl, LitStr, Pat, Path, ReturnType, Token, Type,
};

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
    /// `proxies = false`: generate the dispatcher only (for types whose proxies are written by
    /// hand, such as the built-in containers).
    pub proxies: bool,
}

impl Parse for Args {
    fn parse(input: ParseStream<'_>) -> syn::Result<Self> {
        let mut args = Args {
            exposed: None,
            method_to_typeid: Vec::new(),
            quick: None,
            krate: None,
            proxies: true,
        };
        let mut seen_mapping = false;
        while !input.is_empty() {
            let key: syn::Ident = input.call(syn::ext::IdentExt::parse_any).map_err(|e| {
                syn::Error::new(
                    e.span(),
                    "expected one of `exposed`, `method_to_typeid`, `quick`, `crate`, `proxies`",
                )
            })?;
            let eq = input
                .parse::<Token![=]>()
                .map_err(|e| syn::Error::new(e.span(), format!("expected `=` after `{key}`")));
            match key.to_string().as_str() {
                "exposed" => {
                    eq?;
                    if args.exposed.is_some() {
                        return Err(syn::Error::new(key.span(), "`exposed` is given twice"));
                    }
                    if !input.peek(syn::token::Bracket) {
                        return Err(input.error(
                            "expected the method names in brackets, as in `exposed = [get_x, set_x]`",
                        ));
                    }
                    let content;
                    bracketed!(content in input);
                    let names = Punctuated::<Name, Token![,]>::parse_terminated(&content)?;
                    args.exposed = Some((key.span(), names.into_iter().collect()));
                }
                "quick" => {
                    eq?;
                    if args.quick.is_some() {
                        return Err(syn::Error::new(key.span(), "`quick` is given twice"));
                    }
                    if !input.peek(syn::token::Bracket) {
                        return Err(input.error(
                            "expected the method names in brackets, as in `quick = [get_x, len]`",
                        ));
                    }
                    let content;
                    bracketed!(content in input);
                    let names = Punctuated::<Name, Token![,]>::parse_terminated(&content)?;
                    args.quick = Some((key.span(), names.into_iter().collect()));
                }
                "method_to_typeid" => {
                    eq?;
                    if seen_mapping {
                        return Err(syn::Error::new(key.span(), "`method_to_typeid` is given twice"));
                    }
                    seen_mapping = true;
                    if !input.peek(syn::token::Brace) {
                        return Err(input.error(
                            "expected the mapping in braces, as in `method_to_typeid = { get_item: \"ItemWrapper\" }`",
                        ));
                    }
                    let content;
                    braced!(content in input);
                    let pairs = Punctuated::<Mapping, Token![,]>::parse_terminated(&content)?;
                    args.method_to_typeid = pairs.into_iter().collect();
                }
                "crate" => {
                    eq?;
                    let lit: LitStr = input.parse()?;
                    args.krate = Some(lit.parse()?);
                }
                "proxies" => {
                    eq?;
                    let lit: syn::LitBool = input.parse()?;
                    args.proxies = lit.value;
                }
                other => {
                    return Err(syn::Error::new(
                        key.span(),
                        format!("unknown argument `{other}`: expected one of `exposed`, `method_to_typeid`, `quick`, `crate`, `proxies`"),
                    ))
                }
            }
            if !input.is_empty() {
                input.parse::<Token![,]>()?;
            }
        }
        Ok(args)
    }
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

pub(crate) fn parse_item(item: TokenStream) -> syn::Result<Model> {
    let item: ItemImpl = syn::parse2(item).map_err(|e| {
        syn::Error::new(
            e.span(),
            "#[shared] goes on an inherent impl block: `impl MyType { ... }`",
        )
    })?;
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
    Ok(Model { item, methods })
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
