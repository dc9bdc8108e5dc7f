//! Code generation: one generator per emitted item. Generated code names only absolute paths
//! (`::manager::__private::...`, `::core::...`, `::std::...`), so it works with
//! `#![no_implicit_prelude]` and reads plainly in `cargo expand`.

use proc_macro2::{TokenStream, TokenTree};
use quote::{format_ident, quote, quote_spanned, ToTokens};
use syn::spanned::Spanned;
use syn::{Path, Type};

use crate::ctxt::Ctxt;
use crate::parse::{is_result_alias, parse_item, shared_args, Model, Proxies, Receiver, Target};
use crate::stream::stream_item;
use crate::validate::{borrowed, validate, Exposed};

/// The `#[shared]` macro: parse, validate, then expand, every stage reporting to one [`Ctxt`].
/// The user's impl block is always emitted. On an error, the proxies are still emitted with
/// the methods that passed (see [`Gen::fallback`]), so that the only errors the user sees are
/// the real ones and their editor still knows `XProxy` and `XBlockingProxy`.
pub(crate) fn shared(args: TokenStream, item: TokenStream) -> TokenStream {
    let cx = Ctxt::new();
    let args = shared_args(&cx, args);
    let Some(model) = parse_item(&cx, item.clone()) else {
        return with_errors(item, cx);
    };
    let exposed = validate(&cx, &args, &model);
    let names = Names::new(&cx, &model);
    let krate: Path = args
        .krate
        .clone()
        .unwrap_or_else(|| syn::parse_quote!(::manager));
    let impl_block = &model.item;
    let gen = names.as_ref().map(|names| Gen {
        krate: &krate,
        model: &model,
        names,
        exposed: &exposed,
    });
    if let Err(error) = cx.check() {
        let error = error.to_compile_error();
        let stubs = gen
            .map(|gen| gen.fallback(args.proxies))
            .unwrap_or_default();
        return quote! { #impl_block #error #stubs };
    }
    let gen = gen.expect("Names::new reports why it found no name");
    let checks = gen.type_checks();
    let dispatcher = gen.dispatcher();
    let proxies = match args.proxies {
        Proxies::Typed => gen.proxies(true),
        Proxies::Raw => gen.raw_proxy(),
        Proxies::None => TokenStream::new(),
    };
    quote! {
        #impl_block
        #checks
        #dispatcher
        #proxies
    }
}

fn with_errors(item: TokenStream, cx: Ctxt) -> TokenStream {
    let error = cx
        .check()
        .err()
        .map(|e| e.to_compile_error())
        .unwrap_or_default();
    quote! { #item #error }
}

/// The names of the type and of the generated proxies.
pub(crate) struct Names {
    pub(crate) self_ty: Type,
    pub(crate) ident: syn::Ident,
    pub(crate) proxy: syn::Ident,
    pub(crate) blocking: syn::Ident,
    /// `TRawProxy`, for `proxies = raw`.
    pub(crate) raw: syn::Ident,
}

impl Names {
    fn new(cx: &Ctxt, model: &Model) -> Option<Names> {
        let self_ty = (*model.item.self_ty).clone();
        let ident = match &self_ty {
            Type::Path(path) if path.qself.is_none() => {
                path.path.segments.last().map(|s| s.ident.clone())
            }
            _ => None,
        };
        let Some(ident) = ident else {
            cx.error_spanned_by(
                &self_ty,
                "#[shared] needs a named type: `impl MyType { ... }`",
            );
            return None;
        };
        Some(Names {
            proxy: format_ident!("{}Proxy", ident),
            blocking: format_ident!("{}BlockingProxy", ident),
            raw: format_ident!("{}RawProxy", ident),
            ident,
            self_ty,
        })
    }
}

/// How a parameter travels: the type decoded on the server and how it is passed to the method.
pub(crate) enum Wire {
    /// Decoded as the parameter's own type and moved in.
    Owned(Type),
    /// `Vec<u8>`: one block of bytes.
    ByteVec,
    /// `&[u8]`: one block of bytes, borrowed.
    ByteSlice,
    /// `&str` or `&[T]`: decoded as `String` / `Vec<T>`, passed as `&*value`.
    Unsized(Type),
    /// `&T`: decoded as `T`, passed as `&value`.
    Ref(Type),
}

pub(crate) fn wire_of(ty: &Type) -> Wire {
    match ty {
        Type::Reference(r) => match &*r.elem {
            Type::Slice(s) if is_u8(&s.elem) => Wire::ByteSlice,
            Type::Slice(s) => {
                let elem = &s.elem;
                Wire::Unsized(syn::parse_quote!(::std::vec::Vec<#elem>))
            }
            Type::Path(p) if p.qself.is_none() && p.path.is_ident("str") => {
                Wire::Unsized(syn::parse_quote!(::std::string::String))
            }
            elem => Wire::Ref(elem.clone()),
        },
        ty if is_byte_vec(ty) => Wire::ByteVec,
        ty => Wire::Owned(ty.clone()),
    }
}

fn is_u8(ty: &Type) -> bool {
    matches!(ty, Type::Path(p) if p.qself.is_none() && p.path.is_ident("u8"))
}

pub(crate) fn is_byte_vec(ty: &Type) -> bool {
    let Type::Path(p) = ty else { return false };
    let Some(last) = p.path.segments.last() else {
        return false;
    };
    if last.ident != "Vec" {
        return false;
    }
    let syn::PathArguments::AngleBracketed(args) = &last.arguments else {
        return false;
    };
    matches!(args.args.first(), Some(syn::GenericArgument::Type(t)) if is_u8(t))
        && args.args.len() == 1
}

/// Replaces `Self` in a type written inside the impl block with the type itself, for use
/// outside it.
fn replace_self(tokens: TokenStream, self_ty: &Type) -> TokenStream {
    tokens
        .into_iter()
        .map(|token| match token {
            TokenTree::Ident(ident) if ident == "Self" => self_ty.to_token_stream(),
            TokenTree::Group(group) => {
                let mut new = proc_macro2::Group::new(
                    group.delimiter(),
                    replace_self(group.stream(), self_ty),
                );
                new.set_span(group.span());
                TokenTree::Group(new).into()
            }
            other => other.into(),
        })
        .collect()
}

/// What every generator needs: the crate path, the impl block, the names, the exposed methods.
pub(crate) struct Gen<'a> {
    pub(crate) krate: &'a Path,
    pub(crate) model: &'a Model,
    pub(crate) names: &'a Names,
    pub(crate) exposed: &'a [Exposed<'a>],
}

impl Gen<'_> {
    pub(crate) fn outside(&self, ty: &Type) -> TokenStream {
        replace_self(ty.to_token_stream(), &self.names.self_ty)
    }

    /// `impl Shared for T`: the method table and the dispatcher.
    fn dispatcher(&self) -> TokenStream {
        let krate = self.krate;
        let self_ty = &self.names.self_ty;
        let (impl_generics, _, _) = self.model.item.generics.split_for_impl();
        let where_clause = self.with_impl_bounds(self.where_clause(self.exposed, false));
        let descs = self.exposed.iter().map(|e| self.method_desc(e));
        let docs = crate::describe::docs(
            krate,
            &self.names.ident.to_string(),
            self.exposed.iter().map(|e| e.method),
        );
        let arms = self
            .exposed
            .iter()
            .enumerate()
            .map(|(i, e)| self.dispatch_arm(i, e));
        quote! {
            #[automatically_derived]
            impl #impl_generics #krate::__private::Shared for #self_ty #where_clause {
                const METHODS: &'static [#krate::__private::MethodDesc] = &[ #(#descs),* ];
                #docs

                fn dispatch(
                    this: #krate::__private::Handle<Self>,
                    method: usize,
                    args: &mut dyn #krate::__private::erased_serde::Deserializer<'_>,
                    context: #krate::__private::CallContext,
                ) -> ::core::result::Result<
                    #krate::__private::Call,
                    #krate::__private::DispatchError,
                > {
                    let _ = &context;
                    match method {
                        #(#arms)*
                        _ => ::core::result::Result::Err(#krate::__private::DispatchError::NoSuchMethod),
                    }
                }
            }
        }
    }

    fn method_desc(&self, exposed: &Exposed<'_>) -> TokenStream {
        let krate = self.krate;
        let method = exposed.method;
        let name = method.name();
        let params = method.params.iter().map(|p| &p.name);
        let receiver = match method.receiver {
            Receiver::Mut => quote!(#krate::__private::Receiver::Exclusive),
            _ => quote!(#krate::__private::Receiver::Shared),
        };
        let is_async = method.sig.asyncness.is_some();
        let quick = exposed.quick;
        let mapped = match &exposed.mapped {
            Some(Target::Typeid(typeid)) => quote!(::core::option::Option::Some(#typeid)),
            Some(Target::Type(path)) => quote_spanned! {path.span()=>
                ::core::option::Option::Some(<#path as #krate::proxy::SharedProxies>::TYPEID)
            },
            None => quote!(::core::option::Option::None),
        };
        let produced = match &method.returns.result {
            Some((ok, _)) => ok,
            None => &method.returns.ty,
        };
        let produced_name = produced.to_token_stream().to_string().replace(' ', "");
        quote! {
            #krate::__private::MethodDesc {
                name: #name,
                params: &[ #(#params),* ],
                receiver: #receiver,
                is_async: #is_async,
                quick: #quick,
                method_to_typeid: #mapped,
                returns: || ::core::any::TypeId::of::<#produced>(),
                returns_name: #produced_name,
            }
        }
    }

    fn dispatch_arm(&self, index: usize, exposed: &Exposed<'_>) -> TokenStream {
        let krate = self.krate;
        let method = exposed.method;
        let self_ty = &self.names.self_ty;
        let ident = &method.sig.ident;
        let vars: Vec<syn::Ident> = (0..method.params.len())
            .map(|i| format_ident!("__arg{}", i))
            .collect();
        let mut decoded = Vec::new();
        let mut passed = Vec::new();
        for (var, param) in vars.iter().zip(&method.params) {
            let (ty, pass) = match wire_of(&param.ty) {
                Wire::Owned(ty) => (ty.to_token_stream(), quote!(#var)),
                Wire::ByteVec => (
                    quote!(#krate::__private::ByteBuf),
                    quote!(#krate::__private::ByteBuf::into_vec(#var)),
                ),
                Wire::ByteSlice => (quote!(#krate::__private::ByteBuf), quote!(&#var[..])),
                Wire::Unsized(ty) => (ty.to_token_stream(), quote!(&*#var)),
                Wire::Ref(ty) => (ty.to_token_stream(), quote!(&#var)),
            };
            decoded.push(ty);
            passed.push(pass);
        }
        let arguments: Vec<TokenStream> = method
            .call_order
            .iter()
            .map(|slot| match slot {
                Some(i) => passed[*i].clone(),
                None => quote!(&context),
            })
            .collect();
        let outcome = match (&exposed.mapped, &method.returns.result) {
            (Some(_), Some(_)) => quote!(#krate::__private::Outcome::object_result(__ret)),
            (Some(_), None) => quote!(#krate::__private::Outcome::object(__ret)),
            (None, Some(_)) => quote!(#krate::__private::Outcome::result(__ret)),
            (None, None) if stream_item(&method.returns.ty).is_some() => {
                quote!(#krate::__private::Outcome::stream(__ret))
            }
            (None, None) if is_byte_vec(&method.returns.ty) => {
                quote!(#krate::__private::Outcome::value(#krate::__private::ByteBuf::from(__ret)))
            }
            (None, None) => quote!(#krate::__private::Outcome::value(__ret)),
        };
        let decode = quote! {
            let ( #(#vars,)* ): ( #(#decoded,)* ) = #krate::__private::decode_args(args)?;
        };
        if method.sig.asyncness.is_some() {
            // An `async fn` takes its lock and runs in a task of the server's; the lock is held
            // across its `.await`s.
            let (guard, borrow) = match method.receiver {
                Receiver::Mut => (
                    quote!(let mut __guard = this.write().await;),
                    quote!(&mut *__guard),
                ),
                _ => (quote!(let __guard = this.read().await;), quote!(&*__guard)),
            };
            return quote! {
                #index => {
                    #decode
                    ::core::result::Result::Ok(#krate::__private::Call::asynchronous(async move {
                        #guard
                        let __ret = <#self_ty>::#ident(#borrow, #(#arguments),*).await;
                        ::core::mem::drop(__guard);
                        #outcome
                    }))
                }
            };
        }
        // A plain method: its body runs on a server worker thread once the lock is held.
        let (constructor, this_ty) = match method.receiver {
            Receiver::Mut => (quote!(exclusive), quote!(&mut #self_ty)),
            _ => (quote!(shared), quote!(&#self_ty)),
        };
        quote! {
            #index => {
                #decode
                ::core::result::Result::Ok(#krate::__private::Call::#constructor(
                    this,
                    move |__this: #this_ty| {
                        let __ret = <#self_ty>::#ident(__this, #(#arguments),*);
                        #outcome
                    },
                ))
            }
        }
    }

    /// What `exposed` needs of each type it sends or receives: one [`Requirement`] per
    /// argument and result type, in the order written.
    pub(crate) fn requirements(&self, exposed: &Exposed<'_>) -> Vec<Requirement> {
        let method = exposed.method;
        let mut out = Vec::new();
        let mut push = |kind: Kind, ty: &Type, span: proc_macro2::Span, checked: bool| {
            out.push(Requirement {
                kind,
                ty: self.outside(ty),
                span,
                checked,
                // A type that borrows names lifetimes the where clause does not declare.
                bounded: borrowed(ty).is_none(),
            });
        };
        for param in &method.params {
            let span = param.ty.span();
            match wire_of(&param.ty) {
                Wire::Owned(ty) | Wire::Ref(ty) => push(Kind::Argument, &ty, span, true),
                Wire::Unsized(ty) => {
                    // Decoded as `String` or `Vec<T>`; the check is on the user's `T`, so
                    // that its error points at their type.
                    push(Kind::Argument, &ty, span, false);
                    if let Type::Reference(r) = &param.ty {
                        if let Type::Slice(slice) = &*r.elem {
                            push(Kind::Argument, &slice.elem, slice.elem.span(), true);
                        }
                    }
                }
                Wire::ByteVec | Wire::ByteSlice => {}
            }
        }
        let returned = &method.returns.ty;
        match (&method.returns.result, &exposed.mapped) {
            (Some((ok, err)), mapped) => {
                let kind = if mapped.is_some() {
                    Kind::Object
                } else {
                    Kind::Result
                };
                push(kind, ok, ok.span(), true);
                push(Kind::Result, err, err.span(), true);
            }
            (None, Some(_)) => push(Kind::Object, returned, returned.span(), true),
            (None, None) if is_result_alias(returned) => {
                push(Kind::ResultAlias, returned, returned.span(), true);
            }
            (None, None) if is_byte_vec(returned) => {}
            (None, None) if stream_item(returned).is_some() => {
                let item = stream_item(returned).expect("checked");
                push(Kind::Result, item, item.span(), true);
            }
            (None, None) => push(Kind::Result, returned, returned.span(), true),
        }
        out
    }

    /// The where clause of a generated item that uses `exposed`'s types:
    /// `for<'__m> Point: RemoteArgument, ...`. The requirement is checked once, with a clear
    /// message, by [`Gen::type_checks`]; with it, the item assumes it and reports nothing more.
    ///
    /// With `client`, for a proxy's method: what a mapped method returns stays in the server,
    /// so the client side needs nothing of it.
    pub(crate) fn where_clause<'e>(
        &self,
        exposed: impl IntoIterator<Item = &'e Exposed<'e>>,
        client: bool,
    ) -> TokenStream {
        let krate = self.krate;
        // One bound per type: the strongest it needs (`RemoteResult` implies the others).
        let mut needs: Vec<(String, TokenStream, Kind)> = Vec::new();
        for r in exposed.into_iter().flat_map(|e| self.requirements(e)) {
            if !r.bounded || is_plain_serde(&r.ty) || (client && r.kind == Kind::Object) {
                continue;
            }
            let key = r.ty.to_string();
            match needs.iter_mut().find(|(k, _, _)| *k == key) {
                Some((_, _, kind)) if *kind != r.kind.bound_kind() => *kind = Kind::Result,
                Some(_) => {}
                None => needs.push((key, r.ty, r.kind.bound_kind())),
            }
        }
        let bounds: Vec<TokenStream> = needs
            .iter()
            .map(|(_, ty, kind)| {
                let bound = kind.bound();
                quote!(for<'__m> #ty: #krate::__private::#bound)
            })
            .collect();
        if bounds.is_empty() {
            TokenStream::new()
        } else {
            quote!(where #(#bounds),*)
        }
    }

    /// `where_clause` (tokens `where ...`, or none) with the impl block's own where clause
    /// added, for an item generic as the impl block is.
    pub(crate) fn with_impl_bounds(&self, where_clause: TokenStream) -> TokenStream {
        let Some(own) = &self.model.item.generics.where_clause else {
            return where_clause;
        };
        let own = own.predicates.iter();
        if where_clause.is_empty() {
            quote!(where #(#own),*)
        } else {
            quote!(#where_clause, #(#own),*)
        }
    }

    /// Static checks that give a clear message, on the user's own type, when an argument or a
    /// result cannot travel between processes: one error per missing trait, and none anywhere
    /// else (the generated items carry the requirement in their where clauses).
    fn type_checks(&self) -> TokenStream {
        let krate = self.krate;
        let checks = self
            .exposed
            .iter()
            .flat_map(|e| self.requirements(e))
            .filter(|r| r.checked)
            .map(|r| {
                let (ty, assert) = (&r.ty, r.kind.assert());
                quote_spanned!(r.span=> #krate::__private::#assert::<#ty>();)
            });
        let self_ty = &self.names.self_ty;
        let (impl_generics, _, where_clause) = self.model.item.generics.split_for_impl();
        quote! {
            const _: () = {
                #[allow(dead_code, clippy::extra_unused_type_parameters)]
                fn __manager_assert_remote_types #impl_generics () #where_clause {
                    let _ = ::core::marker::PhantomData::<#self_ty>;
                    #(#checks)*
                }
            };
        }
    }
}

/// What a type must be to travel: the kinds of [`Requirement`].
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Kind {
    Argument,
    Result,
    /// A result written as a one-argument `Result<T>` alias: a plain value, with its own message.
    ResultAlias,
    /// What a `method_to_typeid` method returns: it stays in the server.
    Object,
}

impl Kind {
    /// The kind whose trait is the where clause's bound.
    fn bound_kind(self) -> Kind {
        match self {
            Kind::ResultAlias => Kind::Result,
            kind => kind,
        }
    }

    fn bound(self) -> syn::Ident {
        let name = match self {
            Kind::Argument => "RemoteArgument",
            Kind::Result | Kind::ResultAlias => "RemoteResult",
            Kind::Object => "RemoteObject",
        };
        format_ident!("{}", name)
    }

    fn assert(self) -> syn::Ident {
        let name = match self {
            Kind::Argument => "assert_argument",
            Kind::Result => "assert_result",
            Kind::ResultAlias => "assert_result_alias",
            Kind::Object => "assert_object",
        };
        format_ident!("{}", name)
    }
}

/// One type an exposed method sends or receives, and what it must be.
pub(crate) struct Requirement {
    kind: Kind,
    /// The type, written as outside the impl block (`Self` replaced).
    ty: TokenStream,
    /// The user's type, where the check's error points.
    span: proc_macro2::Span,
    /// Checked by [`Gen::type_checks`] (else only assumed, as implied by a checked one).
    checked: bool,
    /// Assumed in where clauses.
    bounded: bool,
}

/// Whether `ty` (as tokens) is a standard type that is always serde, `Send` and `'static`
/// (`i64`, `String`, `Vec<u8>`, `Option<bool>`, tuples of those...): such a type needs no
/// where clause, which keeps the generated API's docs and `cargo expand` plain.
fn is_plain_serde(ty: &TokenStream) -> bool {
    let Ok(ty) = syn::parse2::<Type>(ty.clone()) else {
        return false;
    };
    fn plain(ty: &Type) -> bool {
        match ty {
            Type::Tuple(t) => t.elems.iter().all(plain),
            Type::Paren(p) => plain(&p.elem),
            Type::Path(p) if p.qself.is_none() => {
                let Some(last) = p.path.segments.last() else {
                    return false;
                };
                let name = last.ident.to_string();
                match &last.arguments {
                    syn::PathArguments::None => matches!(
                        name.as_str(),
                        "bool"
                            | "char"
                            | "i8"
                            | "i16"
                            | "i32"
                            | "i64"
                            | "i128"
                            | "isize"
                            | "u8"
                            | "u16"
                            | "u32"
                            | "u64"
                            | "u128"
                            | "usize"
                            | "f32"
                            | "f64"
                            | "String"
                    ),
                    syn::PathArguments::AngleBracketed(args)
                        if matches!(name.as_str(), "Vec" | "Option" | "Box") =>
                    {
                        args.args.len() == 1
                            && matches!(args.args.first(), Some(syn::GenericArgument::Type(t)) if plain(t))
                    }
                    _ => false,
                }
            }
            _ => false,
        }
    }
    plain(&ty)
}
