//! `#[g2::remote]`: turns a trait of `async fn`s into a G2 remote interface.
//!
//! For `trait Island` it generates:
//! * the trait itself, with each `async fn` made `Send` so objects can be hosted on
//!   a multi-threaded runtime (implement it with plain `async fn`s);
//! * `IslandRef`, the typed proxy: `Clone`, `Serialize`, `Deserialize`, `Debug`,
//!   `Display` (its URI), with one async method per trait method returning
//!   `Result<_, g2::CallError>`;
//! * the dispatcher (`impl g2::Dispatch<T> for IslandRef`) that decodes a call and
//!   runs it on the object;
//! * `IslandClient`, an `async_trait` that `IslandRef` implements, mockable with
//!   mockall (`MockIslandClient` under `cfg(test)`; the crate then needs `mockall`
//!   as a dev-dependency), so application code that calls peers can be unit-tested
//!   without a network.
//!
//! A method marked `#[oneway]` must return `()`: its proxy returns once the target's
//! node accepted the call, without waiting for it to run.

use proc_macro::TokenStream;
use proc_macro2::TokenStream as TokenStream2;
use quote::{format_ident, quote, quote_spanned};
use syn::spanned::Spanned;
use syn::{
    FnArg, ItemTrait, Pat, ReturnType, TraitItem, TraitItemFn, Type, parse_macro_input, parse_quote,
};

struct Method {
    name: syn::Ident,
    args: Vec<(syn::Ident, Type)>,
    output: Type,
    oneway: bool,
    attrs: Vec<syn::Attribute>,
}

/// Declares a G2 remote interface; see the crate docs.
#[proc_macro_attribute]
pub fn remote(attr: TokenStream, item: TokenStream) -> TokenStream {
    if !attr.is_empty() {
        let attr: TokenStream2 = attr.into();
        return syn::Error::new(attr.span(), "#[g2::remote] takes no arguments")
            .to_compile_error()
            .into();
    }
    let item = parse_macro_input!(item as ItemTrait);
    match expand(item) {
        Ok(ts) => ts.into(),
        Err(e) => e.to_compile_error().into(),
    }
}

fn parse_method(f: &TraitItemFn) -> syn::Result<Method> {
    let sig = &f.sig;
    if sig.asyncness.is_none() {
        return Err(syn::Error::new(
            sig.fn_token.span(),
            format!(
                "methods of a #[g2::remote] trait must be `async fn`: write `async fn {}(..)`",
                sig.ident
            ),
        ));
    }
    if !sig.generics.params.is_empty() || sig.generics.where_clause.is_some() {
        return Err(syn::Error::new(
            sig.generics.span(),
            "methods of a #[g2::remote] trait cannot be generic: a remote call carries concrete types",
        ));
    }
    if f.default.is_some() {
        return Err(syn::Error::new(
            f.default.span(),
            "methods of a #[g2::remote] trait cannot have a default body",
        ));
    }
    let mut inputs = sig.inputs.iter();
    match inputs.next() {
        Some(FnArg::Receiver(r)) if r.reference.is_some() => {}
        other => {
            let span = other.map(|o| o.span()).unwrap_or_else(|| sig.ident.span());
            return Err(syn::Error::new(
                span,
                "methods of a #[g2::remote] trait take `&mut self` or `&self` (the object's state)",
            ));
        }
    }
    let mut args = Vec::new();
    for input in inputs {
        let FnArg::Typed(pt) = input else {
            return Err(syn::Error::new(input.span(), "unexpected receiver"));
        };
        let Pat::Ident(pi) = &*pt.pat else {
            return Err(syn::Error::new(
                pt.pat.span(),
                "arguments of a remote method must be plain names (`name: Type`)",
            ));
        };
        if let Type::Reference(r) = &*pt.ty {
            return Err(syn::Error::new(
                r.span(),
                "arguments of a remote method are sent by value: use an owned type, not a reference",
            ));
        }
        args.push((pi.ident.clone(), (*pt.ty).clone()));
    }
    let output: Type = match &sig.output {
        ReturnType::Default => parse_quote!(()),
        ReturnType::Type(_, t) => (**t).clone(),
    };
    let mut oneway = false;
    let mut attrs = Vec::new();
    for a in &f.attrs {
        if a.path().is_ident("oneway") {
            oneway = true;
        } else {
            attrs.push(a.clone());
        }
    }
    if oneway && !matches!(&output, Type::Tuple(t) if t.elems.is_empty()) {
        return Err(syn::Error::new(
            sig.output.span(),
            "a #[oneway] method returns nothing: its caller does not wait for a result",
        ));
    }
    Ok(Method {
        name: sig.ident.clone(),
        args,
        output,
        oneway,
        attrs,
    })
}

fn expand(mut item: ItemTrait) -> syn::Result<TokenStream2> {
    if !item.generics.params.is_empty() {
        return Err(syn::Error::new(
            item.generics.span(),
            "a #[g2::remote] trait cannot be generic",
        ));
    }
    let vis = item.vis.clone();
    let trait_name = item.ident.clone();
    let ref_name = format_ident!("{}Ref", trait_name);
    let client_name = format_ident!("{}Client", trait_name);
    let mut methods = Vec::new();
    for ti in &item.items {
        match ti {
            TraitItem::Fn(f) => methods.push(parse_method(f)?),
            other => {
                return Err(syn::Error::new(
                    other.span(),
                    "a #[g2::remote] trait holds only `async fn` methods",
                ));
            }
        }
    }

    // The trait, with each async fn made explicitly `Send`.
    for ti in &mut item.items {
        if let TraitItem::Fn(f) = ti {
            f.attrs.retain(|a| !a.path().is_ident("oneway"));
            let out = match &f.sig.output {
                ReturnType::Default => quote!(()),
                ReturnType::Type(_, t) => quote!(#t),
            };
            f.sig.asyncness = None;
            f.sig.output =
                parse_quote!(-> impl ::core::future::Future<Output = #out> + ::core::marker::Send);
        }
    }
    if item.colon_token.is_none() {
        item.colon_token = Some(Default::default());
    }
    item.supertraits.push(parse_quote!(::core::marker::Send));

    // Compile-time checks that every argument and result is serialisable, with
    // the error pointing at the offending type.
    let checks = methods.iter().flat_map(|m| {
        m.args
            .iter()
            .map(|(_, t)| t)
            .chain(std::iter::once(&m.output))
            .map(|t| {
                quote_spanned! {t.span()=>
                    ::g2::__private::assert_remote_value::<#t>();
                }
            })
            .collect::<Vec<_>>()
    });

    let proxy_methods = methods.iter().map(|m| {
        let Method { name, args, output, oneway, attrs } = m;
        let names: Vec<_> = args.iter().map(|(n, _)| n).collect();
        let types: Vec<_> = args.iter().map(|(_, t)| t).collect();
        let method_str = name.to_string();
        let docs: Vec<_> = attrs.iter().filter(|a| a.path().is_ident("doc")).collect();
        if *oneway {
            quote! {
                #(#docs)*
                /// One-way: returns once the object's node has accepted the call.
                pub async fn #name(&self, #(#names: #types),*) -> ::core::result::Result<(), ::g2::CallError> {
                    self.0.call_oneway(#method_str, &(#(&#names,)*)).await
                }
            }
        } else {
            quote! {
                #(#docs)*
                pub async fn #name(&self, #(#names: #types),*) -> ::core::result::Result<#output, ::g2::CallError> {
                    self.0.call(#method_str, &(#(&#names,)*)).await
                }
            }
        }
    });

    let client_methods = methods.iter().map(|m| {
        let Method { name, args, output, attrs, .. } = m;
        let names: Vec<_> = args.iter().map(|(n, _)| n).collect();
        let types: Vec<_> = args.iter().map(|(_, t)| t).collect();
        let docs: Vec<_> = attrs.iter().filter(|a| a.path().is_ident("doc")).collect();
        quote! {
            #(#docs)*
            async fn #name(&self, #(#names: #types),*) -> ::core::result::Result<#output, ::g2::CallError>;
        }
    });

    let client_impls = methods.iter().map(|m| {
        let Method { name, args, output, .. } = m;
        let names: Vec<_> = args.iter().map(|(n, _)| n).collect();
        let types: Vec<_> = args.iter().map(|(_, t)| t).collect();
        quote! {
            async fn #name(&self, #(#names: #types),*) -> ::core::result::Result<#output, ::g2::CallError> {
                #ref_name::#name(self, #(#names),*).await
            }
        }
    });

    let arms = methods.iter().map(|m| {
        let Method { name, args, .. } = m;
        let names: Vec<_> = args.iter().map(|(n, _)| n).collect();
        let types: Vec<_> = args.iter().map(|(_, t)| t).collect();
        let method_str = name.to_string();
        quote! {
            #method_str => {
                let (#(#names,)*): (#(#types,)*) = ::g2::decode_args(type_name, method, args)?;
                let result = <T as #trait_name>::#name(obj, #(#names),*).await;
                ::g2::encode_result(method, &result)
            }
        }
    });

    let ref_doc = format!(
        "Typed proxy of a remote [`{trait_name}`] object: calls are routed to wherever the object lives. Serialises as its URI, so it can be passed as an argument and kept in object state."
    );
    let client_doc = format!(
        "The calls a [`{ref_name}`] offers, as a trait: write application code against `impl {client_name}` and unit-test it with `Mock{client_name}` (mockall, under `cfg(test)`)."
    );
    let ref_name_str = ref_name.to_string();
    let check_fn = format_ident!("__g2_check_{}", trait_name.to_string().to_lowercase());

    Ok(quote! {
        #item

        #[doc = #ref_doc]
        #[derive(Clone, PartialEq, Eq, Hash, ::g2::__private::serde::Serialize, ::g2::__private::serde::Deserialize)]
        #[serde(crate = "::g2::__private::serde", transparent)]
        #vis struct #ref_name(::g2::ObjectHandle);

        impl #ref_name {
            #(#proxy_methods)*

            /// The object's URI (`g2p2p://network/guid`).
            pub fn uri(&self) -> &::g2::ObjectUri {
                self.0.uri()
            }
            /// The object's GUID.
            pub fn id(&self) -> ::g2::ObjectId {
                self.0.id()
            }
            /// A copy whose calls use this deadline.
            pub fn with_timeout(&self, timeout: ::core::time::Duration) -> Self {
                Self(self.0.with_timeout(timeout))
            }
            /// A copy that calls through `node`.
            pub fn bind(&self, node: &::g2::Node) -> Self {
                Self(self.0.bind(node))
            }
        }

        impl ::g2::RemoteRef for #ref_name {
            fn from_handle(handle: ::g2::ObjectHandle) -> Self {
                Self(handle)
            }
            fn handle(&self) -> &::g2::ObjectHandle {
                &self.0
            }
        }

        impl ::core::fmt::Debug for #ref_name {
            fn fmt(&self, f: &mut ::core::fmt::Formatter<'_>) -> ::core::fmt::Result {
                ::core::write!(f, "{}({})", #ref_name_str, self.0.uri())
            }
        }

        impl ::core::fmt::Display for #ref_name {
            fn fmt(&self, f: &mut ::core::fmt::Formatter<'_>) -> ::core::fmt::Result {
                ::core::fmt::Display::fmt(self.0.uri(), f)
            }
        }

        impl<T: #trait_name + ::core::marker::Send> ::g2::Dispatch<T> for #ref_name {
            fn dispatch<'a>(
                obj: &'a mut T,
                type_name: &'static str,
                method: &'a str,
                args: &'a [u8],
            ) -> ::g2::DispatchFuture<'a> {
                ::std::boxed::Box::pin(async move {
                    match method {
                        #(#arms)*
                        other => ::core::result::Result::Err(::g2::RemoteError::UnknownMethod {
                            type_name: type_name.to_string(),
                            method: other.to_string(),
                        }),
                    }
                })
            }
        }

        #[doc = #client_doc]
        #[cfg_attr(test, ::mockall::automock)]
        #[::g2::__private::async_trait]
        #vis trait #client_name: ::core::marker::Send + ::core::marker::Sync {
            #(#client_methods)*
        }

        #[::g2::__private::async_trait]
        impl #client_name for #ref_name {
            #(#client_impls)*
        }

        #[allow(dead_code, non_snake_case)]
        fn #check_fn() {
            #(#checks)*
        }
    })
}
