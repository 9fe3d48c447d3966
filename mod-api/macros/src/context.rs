//! The per-call context in generated code: the hidden hook through which a
//! handle takes a new `CallContext`, and the wrapper that holds a local
//! object's deadline.

use proc_macro2::TokenStream;
use quote::quote;
use syn::{ItemTrait, Path};

use crate::expand::{arg_idents, uses};
use crate::parse::Method;

/// Adds the hidden provided method through which a handle of the trait takes
/// a new [`CallContext`]: a client or the local wrapper answers with a copy
/// under that context; any other object (`None`) gets wrapped.
pub(crate) fn add_context_hook(krate: &Path, item: &mut ItemTrait) {
    let ident = &item.ident;
    item.items.push(syn::parse_quote! {
        #[doc(hidden)]
        fn __modkit_with_context(
            &self,
            __context: &#krate::CallContext,
        ) -> ::core::option::Option<::std::sync::Arc<dyn #ident>> {
            let _ = __context;
            ::core::option::Option::None
        }
    });
}

/// `__ModkitLocal`: a local object under a [`CallContext`] (its deadline is a
/// timer around each call, as `Service::with_context` documents).
pub(crate) fn local(krate: &Path, item: &ItemTrait, name: &str, methods: &[Method]) -> TokenStream {
    let ident = &item.ident;
    let uses = uses(krate);
    let methods = methods.iter().map(|m| {
        let (method, wire, tys, output, err) = (&m.ident, &m.name, &m.args, &m.output, &m.err);
        let args = arg_idents(m);
        quote! {
            async fn #method(&self, #(#args: #tys),*) -> #output {
                #uses
                let __call = <dyn #ident as #ident>::#method(&*self.inner, #(#args),*);
                match #krate::__private::within(self.context.timeout(), #name, #wire, __call).await {
                    ::core::result::Result::Ok(__reply) => __reply,
                    ::core::result::Result::Err(__e) => ::core::result::Result::Err(
                        (&#krate::__private::Tag::<#err>::new()).wrap_platform(__e),
                    ),
                }
            }
        }
    });
    quote! {
        struct __ModkitLocal {
            inner: ::std::sync::Arc<dyn #ident>,
            context: #krate::CallContext,
        }

        #[#krate::__private::async_trait]
        impl #ident for __ModkitLocal {
            #(#methods)*

            fn __modkit_with_context(
                &self,
                __context: &#krate::CallContext,
            ) -> ::core::option::Option<::std::sync::Arc<dyn #ident>> {
                ::core::option::Option::Some(::std::sync::Arc::new(__ModkitLocal {
                    inner: ::std::sync::Arc::clone(&self.inner),
                    context: ::core::clone::Clone::clone(__context),
                }))
            }
        }
    }
}
