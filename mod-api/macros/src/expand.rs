//! Code generation: the trait, its client, its dispatcher, `Service` and the checks.

use proc_macro2::TokenStream;
use quote::{format_ident, quote, quote_spanned, ToTokens};
use syn::ext::IdentExt;
use syn::spanned::Spanned;
use syn::{Ident, Item, ItemTrait, Path, TypeParamBound};

use crate::context::{add_context_hook, local};
use crate::parse::{self, Args, Method};

pub fn service(attr: TokenStream, item: TokenStream) -> syn::Result<TokenStream> {
    let args = Args::parse(attr)?;
    let mut item = match syn::parse2::<Item>(item)? {
        Item::Trait(t) => t,
        other => {
            return Err(syn::Error::new(
                other.span(),
                "#[service] applies to a trait: `#[service] pub trait Name { async fn .. }`",
            ))
        }
    };
    let krate = &args.krate;
    let methods = match parse::methods(&mut item) {
        Ok(methods) => methods,
        // Keep the trait (without `#[idempotent]`) so that the only errors are ours.
        Err(err) => {
            let err = err.into_compile_error();
            return Ok(quote! { #err #[#krate::__private::async_trait] #item });
        }
    };
    add_supertraits(&mut item);
    add_context_hook(krate, &mut item);

    let ident = &item.ident;
    let name = match &args.name {
        Some(lit) => lit.value(),
        None => ident.unraw().to_string(),
    };
    let client = client(krate, &item, &name, &methods);
    let dispatcher = dispatcher(krate, &item, &name, &methods);
    let local = local(krate, &item, &name, &methods);
    let checks = checks(krate, &methods);
    let client_ident = format_ident!("{}Client", ident);
    let dispatcher_ident = format_ident!("{}Dispatcher", ident);
    let infos = methods.iter().map(|m| {
        let (name, idempotent) = (&m.name, m.idempotent);
        quote! { #krate::MethodInfo { name: #name, idempotent: #idempotent } }
    });

    // The checks come first: rustc then reports their readable errors first.
    Ok(quote! {
        #checks

        #[#krate::__private::async_trait]
        #item

        #client
        #dispatcher

        // In a block of its own: the local wrapper's name cannot clash with the user's.
        const _: () = {
            #local

            impl #krate::Service for dyn #ident {
                const NAME: &'static str = #name;
                const METHODS: &'static [#krate::MethodInfo] = &[#(#infos),*];

                fn client(transport: ::std::sync::Arc<dyn #krate::Transport>) -> ::std::sync::Arc<Self> {
                    ::std::sync::Arc::new(#client_ident::new(transport))
                }

                fn dispatcher(service: ::std::sync::Arc<Self>) -> ::std::sync::Arc<dyn #krate::Dispatch> {
                    ::std::sync::Arc::new(#dispatcher_ident::new(service))
                }

                fn with_context(
                    service: &::std::sync::Arc<Self>,
                    context: #krate::CallContext,
                ) -> ::std::sync::Arc<Self> {
                    match <dyn #ident as #ident>::__modkit_with_context(&**service, &context) {
                        ::core::option::Option::Some(handle) => handle,
                        ::core::option::Option::None => ::std::sync::Arc::new(
                            __ModkitLocal { inner: ::std::sync::Arc::clone(service), context },
                        ),
                    }
                }
            }
        };
    })
}

/// Adds `Send + Sync + 'static` to the supertraits, unless already there.
fn add_supertraits(item: &mut ItemTrait) {
    let has = |name: &str| {
        item.supertraits.iter().any(|b| match b {
            TypeParamBound::Trait(t) => t.path.segments.last().is_some_and(|s| s.ident == name),
            TypeParamBound::Lifetime(l) => l.ident == name,
            _ => false,
        })
    };
    let missing: Vec<TypeParamBound> = [
        (!has("Send")).then(|| syn::parse_quote!(::core::marker::Send)),
        (!has("Sync")).then(|| syn::parse_quote!(::core::marker::Sync)),
        (!has("static")).then(|| syn::parse_quote!('static)),
    ]
    .into_iter()
    .flatten()
    .collect();
    if !missing.is_empty() {
        item.colon_token.get_or_insert_with(Default::default);
        item.supertraits.extend(missing);
    }
}

/// Brings the generated code's coding traits into scope (see `__private::Tag`:
/// a type that fails its check takes the unbounded fallback, so the check's
/// error is the only one).
pub(crate) fn uses(krate: &Path) -> TokenStream {
    quote! {
        #[allow(unused_imports)]
        use #krate::__private::{
            DecodeUnchecked as _, DecodeWire as _, EncodeUnchecked as _, EncodeWire as _,
            FromPlatform as _, FromPlatformUnchecked as _,
        };
    }
}

/// `__arg0, __arg1, ...` for a method's arguments.
pub(crate) fn arg_idents(m: &Method) -> Vec<Ident> {
    (0..m.args.len())
        .map(|i| format_ident!("__arg{}", i))
        .collect()
}

fn client(krate: &Path, item: &ItemTrait, name: &str, methods: &[Method]) -> TokenStream {
    let (vis, ident) = (&item.vis, &item.ident);
    let client = format_ident!("{}Client", ident);
    let doc = format!(
        "Client of [`{ident}`]: implements the trait by sending each call over a transport.\n\n\
         Generated by `#[service]`; the service is named `{name}`."
    );
    let uses = uses(krate);
    let methods = methods.iter().map(|m| {
        let (method, wire, idempotent) = (&m.ident, &m.name, m.idempotent);
        let (tys, output, ok, err) = (&m.args, &m.output, &m.ok, &m.err);
        let args = arg_idents(m);
        let tag = |ty: TokenStream| quote! { (&#krate::__private::Tag::<#ty>::new()) };
        let into_err = tag(err.to_token_stream());
        let into_err = quote! { #into_err.wrap_platform };
        let encode = tag(quote! { (#(#tys,)*) });
        let encode = quote! { #encode.encode_wire(&(#(#args,)*)) };
        let decode = tag(quote! { ::core::result::Result<#ok, #err> });
        let decode = quote! { #decode.decode_wire(&__reply) };
        quote! {
            async fn #method(&self, #(#args: #tys),*) -> #output {
                #uses
                let __payload = match #encode {
                    ::core::result::Result::Ok(__bytes) => __bytes,
                    ::core::result::Result::Err(__e) => return ::core::result::Result::Err(#into_err(__e)),
                };
                let __request = #krate::Call {
                    service: #name,
                    method: #wire,
                    idempotent: #idempotent,
                    payload: __payload,
                    context: ::core::clone::Clone::clone(&self.context),
                };
                let __reply = match #krate::Transport::call(&*self.transport, __request).await {
                    ::core::result::Result::Ok(__bytes) => __bytes,
                    ::core::result::Result::Err(__e) => return ::core::result::Result::Err(#into_err(__e)),
                };
                match #decode {
                    ::core::result::Result::Ok(__reply) => __reply,
                    ::core::result::Result::Err(__e) => ::core::result::Result::Err(#into_err(__e)),
                }
            }
        }
    });
    quote! {
        #[doc = #doc]
        #[derive(Clone)]
        #vis struct #client {
            transport: ::std::sync::Arc<dyn #krate::Transport>,
            context: #krate::CallContext,
        }

        impl #client {
            /// A client that sends its calls over `transport`, with the
            /// transport's default deadline.
            #vis fn new(transport: ::std::sync::Arc<dyn #krate::Transport>) -> Self {
                Self { transport, context: #krate::CallContext::new() }
            }

            /// This client with every call sent under `context` (replacing this one's).
            #vis fn with_context(&self, context: #krate::CallContext) -> Self {
                Self { transport: ::std::sync::Arc::clone(&self.transport), context }
            }

            /// This client with a deadline of `timeout` on each call: it travels
            /// with the request, and the server drops the call past it.
            #vis fn with_timeout(&self, timeout: ::core::time::Duration) -> Self {
                self.with_context(#krate::CallContext::new().with_timeout(timeout))
            }
        }

        impl ::core::fmt::Debug for #client {
            fn fmt(&self, f: &mut ::core::fmt::Formatter<'_>) -> ::core::fmt::Result {
                f.debug_struct(::core::stringify!(#client)).finish_non_exhaustive()
            }
        }

        #[#krate::__private::async_trait]
        impl #ident for #client {
            #(#methods)*

            fn __modkit_with_context(
                &self,
                __context: &#krate::CallContext,
            ) -> ::core::option::Option<::std::sync::Arc<dyn #ident>> {
                ::core::option::Option::Some(::std::sync::Arc::new(
                    self.with_context(::core::clone::Clone::clone(__context)),
                ))
            }
        }
    }
}

fn dispatcher(krate: &Path, item: &ItemTrait, name: &str, methods: &[Method]) -> TokenStream {
    let (vis, ident) = (&item.vis, &item.ident);
    let dispatcher = format_ident!("{}Dispatcher", ident);
    let doc = format!(
        "Server side of [`{ident}`]: decodes a call, runs the method on a `T: {ident}`, \
         encodes its reply.\n\nGenerated by `#[service]`; the service is named `{name}`."
    );
    let uses = uses(krate);
    let arms = methods.iter().map(|m| {
        let (method, wire, tys, ok, err) = (&m.ident, &m.name, &m.args, &m.ok, &m.err);
        let args = arg_idents(m);
        let decode = quote! {
            (&#krate::__private::Tag::<(#(#tys,)*)>::new()).decode_wire(__payload)
        };
        let encode = quote! {
            (&#krate::__private::Tag::<::core::result::Result<#ok, #err>>::new()).encode_wire(&__reply)
        };
        let decode = if args.is_empty() {
            quote! { #decode?; }
        } else {
            quote! { let (#(#args,)*) = #decode?; }
        };
        quote! {
            #wire => {
                #decode
                let __reply: ::core::result::Result<#ok, #err> =
                    <__S as #ident>::#method(&*self.0, #(#args),*).await;
                #encode
            }
        }
    });
    quote! {
        #[doc = #doc]
        #vis struct #dispatcher<T: ?::core::marker::Sized>(::std::sync::Arc<T>);

        impl<T: ?::core::marker::Sized> #dispatcher<T> {
            /// A dispatcher that serves calls with `service`.
            #vis fn new(service: ::std::sync::Arc<T>) -> Self {
                Self(service)
            }
        }

        impl<T: ?::core::marker::Sized> ::core::fmt::Debug for #dispatcher<T> {
            fn fmt(&self, f: &mut ::core::fmt::Formatter<'_>) -> ::core::fmt::Result {
                f.debug_struct(::core::stringify!(#dispatcher)).finish_non_exhaustive()
            }
        }

        #[#krate::__private::async_trait]
        impl<__S: #ident + ?::core::marker::Sized> #krate::Dispatch for #dispatcher<__S> {
            fn service(&self) -> &'static str {
                #name
            }

            fn methods(&self) -> &'static [#krate::MethodInfo] {
                <dyn #ident as #krate::Service>::METHODS
            }

            async fn dispatch(
                &self,
                __method: &str,
                __payload: &[u8],
            ) -> ::core::result::Result<::std::vec::Vec<u8>, #krate::Error> {
                #uses
                match __method {
                    #(#arms)*
                    __other => {
                        #krate::__private::tracing::warn!(
                            service = #name, method = __other, "call of an unknown method"
                        );
                        ::core::result::Result::Err(#krate::Error::not_found(::std::format!(
                            "service {} has no method {}", #name, __other
                        )))
                    }
                }
            }
        }
    }
}

/// One check per argument, result and error type, each spanned at its first
/// use so that a failed bound points there; a type used again is not checked
/// again (one error per faulty type, not per use). A type without serde
/// derives fails one check (`Serialize`), not one per missing trait (see
/// `__private::CheckWire`).
fn checks(krate: &Path, methods: &[Method]) -> TokenStream {
    let mut seen = std::collections::HashSet::new();
    let mut first =
        |kind: &str, ty: &syn::Type| seen.insert(format!("{kind} {}", ty.to_token_stream()));
    let mut calls = Vec::new();
    for m in methods {
        for ty in m.args.iter().chain([&m.ok, &m.err]) {
            if first("wire", ty) {
                calls.push(quote_spanned! {ty.span()=>
                    (&#krate::__private::Tag::<#ty>::new()).check_wire();
                });
            }
        }
        let err = &m.err;
        if first("error", err) {
            calls.push(quote_spanned! {err.span()=>
                #krate::__private::assert_from_platform::<#err>();
            });
        }
    }
    quote! {
        const _: () = {
            // Type-checked, never called.
            #[allow(dead_code)]
            fn __modkit_checks() {
                use #krate::__private::{CheckWire as _, CheckWireUnserializable as _};
                #(#calls)*
            }
        };
    }
}
