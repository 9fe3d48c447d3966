//! The `#[service]` attribute of modkit.
//!
//! Use it through `modkit::service` (or `mod_api::service`); this crate only
//! holds the procedural macro. See [`macro@service`] for what it generates.

mod context;
mod expand;
mod parse;

use proc_macro::TokenStream;

/// Turns a trait into a modkit service: a client, a dispatcher, and an
/// implementation of `Service` for `dyn Trait`.
///
/// Every method must be `async fn name(&self, arg: T, ...) -> Result<R, E>`:
/// owned arguments, no generics, and an explicit error type `E` that implements
/// `From<modkit::Error>` (transport failures surface in the method's own error
/// type): `modkit::Error` itself, `modkit::AppError<YourError>` (no hand-written
/// conversion), or your own enum with such an impl. Arguments, `R` and `E` must
/// be serializable; this is checked at compile time with one error per type
/// that lacks something, pointing at that type (the generated code adds none
/// of its own).
///
/// ```
/// use modkit::{async_trait, service, Error};
///
/// #[service]                      // or #[service(name = "shop.cart")]
/// pub trait Cart {
///     /// Adds an item, returns the new count.
///     async fn add(&self, item: String, qty: u32) -> Result<u32, Error>;
///     /// Safe to retry on another instance.
///     #[idempotent]
///     async fn count(&self) -> Result<u32, Error>;
/// }
///
/// struct MemCart;
///
/// #[async_trait]
/// impl Cart for MemCart {
///     async fn add(&self, _item: String, qty: u32) -> Result<u32, Error> { Ok(qty) }
///     async fn count(&self) -> Result<u32, Error> { Ok(0) }
/// }
///
/// // The generated client works over any transport; `Loopback` is the one in-process.
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// let loopback = modkit::Loopback::new();
/// loopback.serve::<dyn Cart>(std::sync::Arc::new(MemCart));
/// let cart = loopback.client::<dyn Cart>();
/// assert_eq!(cart.add("tea".into(), 2).await?, 2);
/// # Ok::<(), Error>(())
/// # }).unwrap();
/// ```
///
/// # Arguments
///
/// - `name = "..."`: the service's name in a deployment (default: the trait's name).
/// - `crate = path` (or `crate = "path"`): where modkit is (default `::modkit`;
///   `mod_api` in mod-api's own tests).
///
/// # What it generates
///
/// - The trait itself, with `Send + Sync + 'static` added to its supertraits and
///   `#[async_trait]` applied: implement it with `#[async_trait] impl Cart for X`.
///   Doc comments, visibility and default method bodies are kept (a default
///   body runs on the server: the client sends the call like any other).
/// - `CartClient`: implements the trait by encoding the arguments as a tuple and
///   sending a `Call` over an `Arc<dyn Transport>` (`CartClient::new(transport)`;
///   the container and the loopback wrap that transport in the client-side call
///   layer, with its `modkit.call` span and metrics). Each call carries the client's
///   `CallContext` (empty by default: the transport's deadline applies);
///   `with_timeout(d)` / `with_context(cx)` return a copy with another one.
/// - A hidden provided method on the trait and a private wrapper, so that any
///   handle — client or local object — takes per-call options through
///   `ServiceExt` (`cart.with_timeout(d).add(..)`): a client sends the
///   deadline with the request; a local object runs the call under a timer
///   and its future is dropped at the deadline (the method's error type then
///   holds an `ErrorKind::Timeout` error).
/// - `CartDispatcher<T>`: a `Dispatch` that decodes a call's arguments, runs the
///   method on a `T: Cart` and encodes its `Result<R, E>`. An unknown method is an
///   `ErrorKind::NotFound` error, undecodable arguments an `ErrorKind::Codec` one.
/// - `impl Service for dyn Cart`, with `NAME` and `METHODS` (which report the
///   methods marked `#[idempotent]`, the only ones a transport may retry) and
///   `with_context`.
///
/// Misuse (a method that is not `async`, has no `&self`, is generic, takes a
/// reference or `impl Trait`, or does not return `Result<T, E>`) is a compile
/// error that points at the problem.
#[proc_macro_attribute]
pub fn service(attr: TokenStream, item: TokenStream) -> TokenStream {
    expand::service(attr.into(), item.into())
        .unwrap_or_else(syn::Error::into_compile_error)
        .into()
}
