//! Reading and checking the attribute's arguments and the trait's methods.

use proc_macro2::{Span, TokenStream, TokenTree};
use quote::ToTokens;
use syn::ext::IdentExt;
use syn::parse::Parser;
use syn::spanned::Spanned;
use syn::{
    FnArg, GenericArgument, Ident, ItemTrait, LitStr, Path, PathArguments, ReturnType, Signature,
    TraitItem, Type,
};

/// `#[service(crate = path, name = "...")]`.
pub struct Args {
    pub krate: Path,
    pub name: Option<LitStr>,
}

impl Args {
    pub fn parse(attr: TokenStream) -> syn::Result<Args> {
        let mut args = Args {
            krate: syn::parse_quote!(::modkit),
            name: None,
        };
        let parser = syn::meta::parser(|meta| {
            if meta.path.is_ident("crate") {
                let value = meta.value()?;
                args.krate = if value.peek(LitStr) {
                    value.parse::<LitStr>()?.parse()?
                } else {
                    value.parse()?
                };
                Ok(())
            } else if meta.path.is_ident("name") {
                args.name = Some(meta.value()?.parse()?);
                Ok(())
            } else {
                Err(meta.error(
                    "unknown #[service] argument: expected `crate = path` or `name = \"...\"`",
                ))
            }
        });
        parser.parse2(attr)?;
        Ok(args)
    }
}

/// One checked method of the trait.
pub struct Method {
    pub ident: Ident,
    /// The method's name on the wire.
    pub name: String,
    pub idempotent: bool,
    pub args: Vec<Type>,
    /// The return type as written (`Result<R, E>`).
    pub output: Type,
    pub ok: Type,
    pub err: Type,
}

/// Removes `#[idempotent]` from the methods and checks every item of the trait.
/// All problems are reported together.
pub fn methods(item: &mut ItemTrait) -> syn::Result<Vec<Method>> {
    let mut errors = Errors::default();
    if !item.generics.params.is_empty() || item.generics.where_clause.is_some() {
        errors.push(
            item.generics.span(),
            "modkit #[service] traits cannot be generic",
        );
    }
    let mut methods = Vec::new();
    for entry in &mut item.items {
        let TraitItem::Fn(f) = entry else {
            errors.push(
                entry.span(),
                "modkit #[service] traits may contain only `async fn` methods",
            );
            continue;
        };
        let before = f.attrs.len();
        f.attrs.retain(|a| !a.path().is_ident("idempotent"));
        let idempotent = f.attrs.len() != before;
        match method(&f.sig, idempotent) {
            Ok(m) => methods.push(m),
            Err(e) => errors.0.push(e),
        }
    }
    errors.finish().map(|()| methods)
}

fn method(sig: &Signature, idempotent: bool) -> syn::Result<Method> {
    let mut errors = Errors::default();
    if sig.asyncness.is_none() {
        errors.push(
            sig.fn_token.span,
            "modkit #[service] methods must be `async fn`",
        );
    }
    if let Some(t) = &sig.constness {
        errors.push(t.span, "modkit #[service] methods cannot be `const`");
    }
    if let Some(t) = &sig.unsafety {
        errors.push(t.span, "modkit #[service] methods cannot be `unsafe`");
    }
    if let Some(abi) = &sig.abi {
        errors.push(abi.span(), "modkit #[service] methods cannot have an ABI");
    }
    if let Some(v) = &sig.variadic {
        errors.push(v.span(), "modkit #[service] methods cannot be variadic");
    }
    if !sig.generics.params.is_empty() || sig.generics.where_clause.is_some() {
        errors.push(
            sig.generics.span(),
            "modkit #[service] methods cannot be generic: the client and the dispatcher need concrete types",
        );
    }

    let mut inputs = sig.inputs.iter();
    match inputs.next() {
        Some(FnArg::Receiver(r))
            if r.colon_token.is_none()
                && r.mutability.is_none()
                && matches!(r.reference, Some((_, None))) => {}
        other => {
            let span = other.map_or(sig.paren_token.span.join(), Spanned::span);
            errors.push(
                span,
                "modkit #[service] methods must take `&self` as their first argument",
            );
        }
    }
    let mut args = Vec::new();
    for input in inputs {
        match input {
            FnArg::Typed(pt) => {
                if let Err(e) = owned(&pt.ty, "arguments") {
                    errors.0.push(e);
                }
                args.push((*pt.ty).clone());
            }
            FnArg::Receiver(r) => errors.push(r.span(), "unexpected `self`"),
        }
    }

    let parts = result(&sig.output).map_err(|e| errors.0.push(e)).ok();
    if let Some((_, ok, err)) = &parts {
        for ty in [ok, err] {
            if let Err(e) = owned(ty, "results") {
                errors.0.push(e);
            }
        }
    }
    errors.finish()?;
    let Some((output, ok, err)) = parts else {
        unreachable!("a bad return type was reported above")
    };
    Ok(Method {
        ident: sig.ident.clone(),
        name: sig.ident.unraw().to_string(),
        idempotent,
        args,
        output,
        ok,
        err,
    })
}

/// Splits `-> Result<R, E>` (any path ending in `Result`) into its parts.
fn result(output: &ReturnType) -> syn::Result<(Type, Type, Type)> {
    const MSG: &str = "modkit #[service] methods must return `Result<T, E>` \
                       with an error type `E: From<modkit::Error>`";
    let ReturnType::Type(_, ty) = output else {
        return Err(syn::Error::new(output.span(), MSG));
    };
    let Type::Path(tp) = &**ty else {
        return Err(syn::Error::new(ty.span(), MSG));
    };
    let last = tp.path.segments.last().filter(|s| s.ident == "Result");
    let Some(PathArguments::AngleBracketed(generics)) = last.map(|s| &s.arguments) else {
        return Err(syn::Error::new(ty.span(), MSG));
    };
    let types: Vec<&Type> = generics
        .args
        .iter()
        .filter_map(|a| match a {
            GenericArgument::Type(t) => Some(t),
            _ => None,
        })
        .collect();
    match types[..] {
        [ok, err] if generics.args.len() == 2 => Ok(((**ty).clone(), ok.clone(), err.clone())),
        [_] if generics.args.len() == 1 => Err(syn::Error::new(
            ty.span(),
            "write the error type of a modkit #[service] method explicitly: \
             `Result<T, E>` with `E: From<modkit::Error>`",
        )),
        _ => Err(syn::Error::new(ty.span(), MSG)),
    }
}

/// Rejects types that cannot be decoded into an owned value: references,
/// `impl Trait` and non-`'static` lifetimes anywhere inside `ty`.
fn owned(ty: &Type, what: &str) -> syn::Result<()> {
    fn scan(tokens: TokenStream, what: &str) -> syn::Result<()> {
        let mut tokens = tokens.into_iter().peekable();
        while let Some(tt) = tokens.next() {
            match &tt {
                TokenTree::Group(g) => scan(g.stream(), what)?,
                TokenTree::Punct(p) if p.as_char() == '&' => {
                    return Err(syn::Error::new(
                        p.span(),
                        format!(
                            "{what} of modkit #[service] methods must be owned types: \
                             a reference cannot cross the wire (use e.g. `String` for `&str`)"
                        ),
                    ))
                }
                TokenTree::Punct(p) if p.as_char() == '\'' => {
                    if let Some(TokenTree::Ident(lt)) = tokens.peek() {
                        if lt != "static" {
                            return Err(syn::Error::new(
                                lt.span(),
                                format!("{what} of modkit #[service] methods cannot borrow: only `'static` lifetimes are allowed"),
                            ));
                        }
                    }
                }
                TokenTree::Ident(i) if i == "impl" => {
                    return Err(syn::Error::new(
                        i.span(),
                        format!("`impl Trait` {what} are not allowed in modkit #[service] methods: use a concrete serializable type"),
                    ))
                }
                _ => {}
            }
        }
        Ok(())
    }
    scan(ty.to_token_stream(), what)
}

/// Collects several errors into one.
#[derive(Default)]
struct Errors(Vec<syn::Error>);

impl Errors {
    fn push(&mut self, span: Span, message: &str) {
        self.0.push(syn::Error::new(span, message));
    }

    fn finish(self) -> syn::Result<()> {
        let mut all = self.0.into_iter();
        match all.next() {
            None => Ok(()),
            Some(mut first) => {
                first.extend(all);
                Err(first)
            }
        }
    }
}
