//! [`Svc<S>`]: a service of the [`App`] as a handler argument.

use std::sync::Arc;

use axum::extract::{FromRef, FromRequestParts};
use axum::http::request::Parts;

use super::WebError;
use crate::{App, Error, ErrorKind, Service};

/// Service `S` of the [`App`] in the router's state: the object itself when
/// this process hosts it, else a client that calls a remote instance.
///
/// The state is the `App` itself or any state with `impl FromRef<MyState> for App`.
/// It derefs to the service, so a handler calls its methods directly:
///
/// ```
/// use modkit::prelude::*;
/// use modkit::web::Svc;
///
/// #[service]
/// pub trait Clock {
///     async fn now(&self) -> Result<u64, Error>;
/// }
///
/// async fn page(clock: Svc<dyn Clock>) -> Result<String, modkit::web::WebError> {
///     Ok(format!("it is {}", clock.now().await?))
/// }
///
/// # fn router(app: App) -> axum::Router {
/// axum::Router::new().route("/", axum::routing::get(page)).with_state(app)
/// # }
/// ```
pub struct Svc<S: Service + ?Sized>(pub Arc<S>);

impl<S: Service + ?Sized> Clone for Svc<S> {
    fn clone(&self) -> Self {
        Svc(self.0.clone())
    }
}

impl<S: Service + ?Sized> std::fmt::Debug for Svc<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Svc").field(&S::NAME).finish()
    }
}

impl<S: Service + ?Sized> std::ops::Deref for Svc<S> {
    type Target = S;

    fn deref(&self) -> &S {
        &self.0
    }
}

impl<S, St> FromRequestParts<St> for Svc<S>
where
    S: Service + ?Sized,
    App: FromRef<St>,
    St: Send + Sync,
{
    type Rejection = WebError;

    async fn from_request_parts(_parts: &mut Parts, state: &St) -> Result<Self, WebError> {
        App::from_ref(state).get::<S>().map(Svc).map_err(|e| {
            // A service that is not there is the deployment's fault, not the
            // client's: a 500 (logged), never a 404 for the page.
            let e = match e.kind() {
                ErrorKind::NotFound | ErrorKind::TypeMismatch => {
                    Error::internal(format!("service {} for a handler", S::NAME)).with_source(e)
                }
                _ => e,
            };
            WebError(e)
        })
    }
}
