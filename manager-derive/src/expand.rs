//! Code generation: one generator per emitted item. Generated code names only absolute paths
//! (`::manager::__private::...`, `::core::...`, `::std::...`), so it works with
//! `#![no_implicit_prelude]` and reads plainly in `cargo expand`.

use proc_macro2::{Span, TokenStream, TokenTree};
use quote::{format_ident, quote, quote_spanned, ToTokens};
use syn::spanned::Spanned;
use syn::{Path, Type};

use crate::parse::{parse_item, Args, Method, Model, Receiver, Target};
use crate::validate::{validate, Exposed};

/// The `#[shared]` macro. On an error the user's impl block is still emitted, so the only
/// errors the user sees are the real ones.
pub(crate) fn shared(args: TokenStream, item: TokenStream) -> TokenStream {
    let args: Args = match syn::parse2(args) {
        Ok(args) => args,
        Err(e) => return with_error(item, e),
    };
    let model = match parse_item(item.clone()) {
        Ok(model) => model,
        Err(e) => return with_error(item, e),
    };
    let exposed = match validate(&args, &model) {
        Ok(exposed) => exposed,
        Err(e) => return with_error(item, e),
    };
    let krate: Path = args
        .krate
        .clone()
        .unwrap_or_else(|| syn::parse_quote!(::manager));
    let names = match Names::new(&model) {
        Ok(names) => names,
        Err(e) => return with_error(item, e),
    };
    let gen = Gen {
        krate: &krate,
        model: &model,
        names: &names,
        exposed: &exposed,
    };
    let impl_block = &model.item;
    let dispatcher = gen.dispatcher();
    let checks = gen.type_checks();
    let (async_proxy, blocking_proxy) = if args.proxies {
        (gen.proxy(false), gen.proxy(true))
    } else {
        (TokenStream::new(), TokenStream::new())
    };
    quote! {
        #impl_block
        #checks
        #dispatcher
        #async_proxy
        #blocking_proxy
    }
}

fn with_error(item: TokenStream, error: syn::Error) -> TokenStream {
    let error = error.to_compile_error();
    quote! { #item #error }
}

/// The names of the type and of the generated proxies.
struct Names {
    self_ty: Type,
    ident: syn::Ident,
    proxy: syn::Ident,
    blocking: syn::Ident,
}

impl Names {
    fn new(model: &Model) -> syn::Result<Names> {
        let self_ty = (*model.item.self_ty).clone();
        let Type::Path(path) = &self_ty else {
            return Err(syn::Error::new(
                self_ty.span(),
                "#[shared] needs a named type: `impl MyType { ... }`",
            ));
        };
        let ident = path
            .path
            .segments
            .last()
            .map(|s| s.ident.clone())
            .ok_or_else(|| syn::Error::new(self_ty.span(), "#[shared] needs a named type"))?;
        Ok(Names {
            proxy: format_ident!("{}Proxy", ident),
            blocking: format_ident!("{}BlockingProxy", ident),
            ident,
            self_ty,
        })
    }
}

/// How a parameter travels: the type decoded on the server and how it is passed to the method.
enum Wire {
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

fn wire_of(ty: &Type) -> Wire {
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

fn is_byte_vec(ty: &Type) -> bool {
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

struct Gen<'a> {
    krate: &'a Path,
    model: &'a Model,
    names: &'a Names,
    exposed: &'a [Exposed<'a>],
}

impl Gen<'_> {
    fn outside(&self, ty: &Type) -> TokenStream {
        replace_self(ty.to_token_stream(), &self.names.self_ty)
    }

    /// `impl Shared for T`: the method table and the dispatcher.
    fn dispatcher(&self) -> TokenStream {
        let krate = self.krate;
        let self_ty = &self.names.self_ty;
        let (impl_generics, _, where_clause) = self.model.item.generics.split_for_impl();
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
            impl #impl_generics #krate::__private::Shared for #self_ty #where_clause {
                const METHODS: &'static [#krate::__private::MethodDesc] = &[ #(#descs),* ];
                #docs

                fn dispatch(
                    this: ::std::sync::Arc<#krate::__private::RwLock<Self>>,
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

    /// Static checks that give a clear message, on the user's own type, when an argument or a
    /// result cannot travel between processes.
    fn type_checks(&self) -> TokenStream {
        let krate = self.krate;
        let mut checks = Vec::new();
        for exposed in self.exposed {
            let method = exposed.method;
            for param in &method.params {
                let wire = match wire_of(&param.ty) {
                    Wire::Owned(ty) | Wire::Unsized(ty) | Wire::Ref(ty) => self.outside(&ty),
                    Wire::ByteVec | Wire::ByteSlice => continue,
                };
                let span = param.ty.span();
                checks.push(quote_spanned!(span=> #krate::__private::assert_argument::<#wire>();));
            }
            let (produced, error) = match &method.returns.result {
                Some((ok, err)) => (ok, Some(err)),
                None => (&method.returns.ty, None),
            };
            let produced_out = self.outside(produced);
            let span = produced.span();
            if exposed.mapped.is_some() {
                checks.push(
                    quote_spanned!(span=> #krate::__private::assert_object::<#produced_out>();),
                );
            } else {
                checks.push(
                    quote_spanned!(span=> #krate::__private::assert_result::<#produced_out>();),
                );
            }
            if let Some(err) = error {
                let err_out = self.outside(err);
                let span = err.span();
                checks.push(quote_spanned!(span=> #krate::__private::assert_result::<#err_out>();));
            }
        }
        let self_ty = &self.names.self_ty;
        quote! {
            const _: () = {
                // `async` so that rustc checks this body with the items, before the bodies of
                // the proxies and of the dispatcher: the first error the user sees is then the
                // clear one, on their own type, not a serde bound deep in the generated code.
                #[allow(dead_code, clippy::extra_unused_type_parameters, clippy::unused_async)]
                async fn __manager_assert_remote_types() {
                    let _ = ::core::marker::PhantomData::<#self_ty>;
                    #(#checks)*
                }
            };
        }
    }

    /// The async (`TProxy`) or blocking (`TBlockingProxy`) client proxy.
    fn proxy(&self, blocking: bool) -> TokenStream {
        let krate = self.krate;
        let names = self.names;
        let ty_ident = &names.ident;
        let (name, other, kind, other_fn, other_kind) = if blocking {
            (
                &names.blocking,
                &names.proxy,
                "blocking",
                format_ident!("into_async"),
                "async",
            )
        } else {
            (
                &names.proxy,
                &names.blocking,
                "async",
                format_ident!("into_blocking"),
                "blocking",
            )
        };
        let doc = format!(
            "The {kind} client proxy of [`{ty_ident}`], generated by `#[shared]`: one method for each exposed method, run in the manager server."
        );
        let other_doc = format!("The same proxy with the {other_kind} API.");
        let methods = self.exposed.iter().map(|e| self.proxy_method(e, blocking));
        // Once per type: what a method mapped to this type (`method_to_typeid = { m: T }`)
        // returns.
        let proxies = (!blocking).then(|| {
            let self_ty = &names.self_ty;
            let (proxy, blocking) = (&names.proxy, &names.blocking);
            let typeid = ty_ident.to_string();
            quote! {
                #[automatically_derived]
                impl #krate::proxy::SharedProxies for #self_ty {
                    type Proxy = #proxy;
                    type BlockingProxy = #blocking;
                    const TYPEID: &'static str = #typeid;
                }
            }
        });
        quote! {
            #proxies

            #[doc = #doc]
            pub struct #name {
                base: #krate::__private::BaseProxy,
            }

            impl ::core::clone::Clone for #name {
                fn clone(&self) -> Self {
                    #name { base: ::core::clone::Clone::clone(&self.base) }
                }
            }

            impl ::core::fmt::Debug for #name {
                fn fmt(&self, f: &mut ::core::fmt::Formatter<'_>) -> ::core::fmt::Result {
                    f.debug_tuple(::core::stringify!(#name)).field(&self.base).finish()
                }
            }

            impl #krate::__private::serde::Serialize for #name {
                fn serialize<__S: #krate::__private::serde::Serializer>(
                    &self,
                    serializer: __S,
                ) -> ::core::result::Result<__S::Ok, __S::Error> {
                    #krate::__private::serde::Serialize::serialize(&self.base, serializer)
                }
            }

            impl<'de> #krate::__private::serde::Deserialize<'de> for #name {
                fn deserialize<__D: #krate::__private::serde::Deserializer<'de>>(
                    deserializer: __D,
                ) -> ::core::result::Result<Self, __D::Error> {
                    ::core::result::Result::map(
                        <#krate::__private::BaseProxy as #krate::__private::serde::Deserialize<'de>>::deserialize(deserializer),
                        |base| #name { base },
                    )
                }
            }

            impl #krate::__private::Proxy for #name {
                fn from_base(base: #krate::__private::BaseProxy) -> Self {
                    #name { base }
                }

                fn base(&self) -> &#krate::__private::BaseProxy {
                    &self.base
                }
            }

            impl #name {
                #[doc = #other_doc]
                pub fn #other_fn(self) -> #other {
                    #other { base: self.base }
                }

                /// The same proxy, whose calls fail with `Error::Timeout` after `timeout` (and
                /// are cancelled on the server when they are `async` methods still waiting).
                pub fn with_timeout(mut self, timeout: ::core::time::Duration) -> Self {
                    self.base.set_timeout(::core::option::Option::Some(timeout));
                    self
                }

                #(#methods)*
            }
        }
    }

    fn proxy_method(&self, exposed: &Exposed<'_>, blocking: bool) -> TokenStream {
        let krate = self.krate;
        let method: &Method = exposed.method;
        let ident = &method.sig.ident;
        let name = method.name();
        let docs = &method.docs;
        let lifetimes = method
            .sig
            .generics
            .params
            .iter()
            .filter(|p| matches!(p, syn::GenericParam::Lifetime(_)));
        let lifetimes: Vec<_> = lifetimes.collect();
        let params: Vec<(syn::Ident, TokenStream)> = method
            .params
            .iter()
            .enumerate()
            .map(|(i, p)| {
                let ident =
                    if syn::parse_str::<syn::Ident>(&p.name).is_ok() && !p.name.starts_with("__") {
                        syn::Ident::new(&p.name, Span::call_site())
                    } else {
                        format_ident!("arg{}", i)
                    };
                (ident, self.outside(&p.ty))
            })
            .collect();
        let sig_params = params.iter().map(|(ident, ty)| quote!(#ident: #ty));
        let sent = params
            .iter()
            .zip(&method.params)
            .map(|((ident, _), p)| match wire_of(&p.ty) {
                Wire::ByteVec | Wire::ByteSlice => {
                    quote!(#krate::__private::Bytes::new(&#ident[..]))
                }
                _ => quote!(&#ident),
            });
        let args = quote!(( #(#sent,)* ));
        let call = if blocking {
            quote!(call_blocking)
        } else {
            quote!(call)
        };
        let wait = if blocking { quote!() } else { quote!(.await) };
        let shapes = quote!(#krate::proxy::shape);
        let typed = match &exposed.mapped {
            Some(Target::Type(path)) => {
                let assoc = if blocking {
                    quote_spanned!(path.span()=> BlockingProxy)
                } else {
                    quote_spanned!(path.span()=> Proxy)
                };
                Some(quote_spanned! {path.span()=>
                    <#path as #krate::proxy::SharedProxies>::#assoc
                })
            }
            _ => None,
        };
        let (generics, output, body) = match (&exposed.mapped, &method.returns.result) {
            // Spanned on the user's type, so that a type without proxies is one error there.
            (Some(Target::Type(path)), None) => {
                let proxy = typed.expect("a typed mapping");
                (
                    quote!(<#(#lifetimes),*>),
                    proxy.clone(),
                    quote_spanned!(path.span()=> self.base.#call::<#shapes::Mapped<#proxy>>(#name, #args) #wait),
                )
            }
            (Some(Target::Type(path)), Some((_, err))) => {
                let proxy = typed.expect("a typed mapping");
                let err = self.outside(err);
                (
                    quote!(<#(#lifetimes),*>),
                    quote_spanned!(path.span()=> ::core::result::Result<#proxy, #err>),
                    quote_spanned!(path.span()=> self.base.#call::<#shapes::MappedFallible<#proxy, #err>>(#name, #args) #wait),
                )
            }
            (Some(_), None) => (
                quote!(<#(#lifetimes,)* __P: #krate::__private::Proxy>),
                quote!(__P),
                quote!(self.base.#call::<#shapes::Mapped<__P>>(#name, #args) #wait),
            ),
            (Some(_), Some((_, err))) => {
                let err = self.outside(err);
                (
                    quote!(<#(#lifetimes,)* __P: #krate::__private::Proxy>),
                    quote!(::core::result::Result<__P, #err>),
                    quote!(self.base.#call::<#shapes::MappedFallible<__P, #err>>(#name, #args) #wait),
                )
            }
            (None, Some((ok, err))) => {
                let (ok, err) = (self.outside(ok), self.outside(err));
                (
                    quote!(<#(#lifetimes),*>),
                    quote!(::core::result::Result<#ok, #err>),
                    quote!(self.base.#call::<#shapes::Fallible<#ok, #err>>(#name, #args) #wait),
                )
            }
            (None, None) if is_byte_vec(&method.returns.ty) => (
                quote!(<#(#lifetimes),*>),
                quote!(::std::vec::Vec<u8>),
                quote! {
                    ::core::result::Result::map(
                        self.base.#call::<#shapes::Plain<#krate::__private::ByteBuf>>(#name, #args) #wait,
                        #krate::__private::ByteBuf::into_vec,
                    )
                },
            ),
            (None, None) => {
                let ret = self.outside(&method.returns.ty);
                (
                    quote!(<#(#lifetimes),*>),
                    ret.clone(),
                    quote!(self.base.#call::<#shapes::Plain<#ret>>(#name, #args) #wait),
                )
            }
        };
        let asyncness = if blocking { quote!() } else { quote!(async) };
        // A method mapped to a type is spanned on that type, so that a type without proxies
        // is one error, there.
        let span = match &exposed.mapped {
            Some(Target::Type(path)) => path.span(),
            _ => Span::call_site(),
        };
        quote_spanned! {span=>
            #(#docs)*
            pub #asyncness fn #ident #generics (&self, #(#sig_params),*)
                -> ::core::result::Result<#output, #krate::__private::Error>
            {
                #body
            }
        }
    }
}
