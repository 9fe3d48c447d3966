//! [`SessionLayer`]: puts a [`WebSession`] into every request and turns what
//! the handler did with it into a `Set-Cookie` header.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::http::{header, Request, Response};

use super::cookie::CookieConfig;
use super::session::{CookieChange, WebSession};
use crate::{App, Backend, Result, SessionConfig, SessionStore, Value};

/// A tower layer that gives each request a [`WebSession<D>`] backed by a
/// modkit [`SessionStore<D>`] (tower-sessions' `SessionManagerLayer`).
///
/// ```
/// use modkit::prelude::*;
/// use modkit::web::{CookieConfig, SessionLayer, WebSession};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> modkit::Result<()> {
/// let app = App::start(Config::default()).await?;
/// let sessions = SessionLayer::<String>::from_app(&app, "web", SessionConfig::default())?
///     .with_cookie(CookieConfig::default().with_name("sid"))?;
/// let router: axum::Router = axum::Router::new()
///     .route("/", axum::routing::get(|s: WebSession<String>| async move {
///         format!("{:?}", s.get().await.ok().flatten().map(|s| s.principal))
///     }))
///     .layer(sessions);
/// # drop(router);
/// # Ok(())
/// # }
/// ```
pub struct SessionLayer<D: Value> {
    store: Arc<dyn SessionStore<D>>,
    config: SessionConfig,
    cookie: Arc<CookieConfig>,
}

impl<D: Value> Clone for SessionLayer<D> {
    fn clone(&self) -> Self {
        SessionLayer {
            store: self.store.clone(),
            config: self.config,
            cookie: self.cookie.clone(),
        }
    }
}

impl<D: Value> std::fmt::Debug for SessionLayer<D> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionLayer")
            .field("config", &self.config)
            .field("cookie", &self.cookie)
            .finish_non_exhaustive()
    }
}

impl<D: Value> SessionLayer<D> {
    /// A layer over `store`, whose sessions expire as `config` says (pass the
    /// config the store was made with: the layer uses it for `Max-Age` only),
    /// with the default [`CookieConfig`].
    pub fn new(store: Arc<dyn SessionStore<D>>, config: SessionConfig) -> Self {
        SessionLayer {
            store,
            config,
            cookie: Arc::new(CookieConfig::default()),
        }
    }

    /// A layer over the app's session store `name` (see [`Backend::sessions`]):
    /// in memory in the monolith, in Redis (shared by every process) in the
    /// distributed package.
    pub fn from_app(app: &App, name: &str, config: SessionConfig) -> Result<Self> {
        Ok(Self::new(app.sessions::<D>(name, config)?, config))
    }

    /// Uses `cookie` for the session cookie; [`ErrorKind::InvalidInput`](crate::ErrorKind::InvalidInput)
    /// when it would make a malformed `Set-Cookie` header (a name that is no
    /// HTTP token, a `;` in the path or domain, `SameSite=None` without `Secure`).
    pub fn with_cookie(mut self, cookie: CookieConfig) -> Result<Self> {
        cookie.check()?;
        self.cookie = Arc::new(cookie);
        Ok(self)
    }

    /// The cookie settings in use.
    pub fn cookie(&self) -> &CookieConfig {
        &self.cookie
    }
}

impl<S, D: Value> tower_layer::Layer<S> for SessionLayer<D> {
    type Service = SessionService<S, D>;

    fn layer(&self, inner: S) -> Self::Service {
        SessionService {
            inner,
            layer: self.clone(),
        }
    }
}

/// The service [`SessionLayer`] wraps around the routes.
pub struct SessionService<S, D: Value> {
    inner: S,
    layer: SessionLayer<D>,
}

impl<S: Clone, D: Value> Clone for SessionService<S, D> {
    fn clone(&self) -> Self {
        SessionService {
            inner: self.inner.clone(),
            layer: self.layer.clone(),
        }
    }
}

impl<S, D: Value> std::fmt::Debug for SessionService<S, D> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionService")
            .field("layer", &self.layer)
            .finish_non_exhaustive()
    }
}

impl<S, D, ReqBody, ResBody> tower_service::Service<Request<ReqBody>> for SessionService<S, D>
where
    S: tower_service::Service<Request<ReqBody>, Response = Response<ResBody>>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    ReqBody: Send + 'static,
    ResBody: Send + 'static,
    D: Value,
{
    type Response = Response<ResBody>;
    type Error = S::Error;
    type Future =
        Pin<Box<dyn Future<Output = std::result::Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<std::result::Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<ReqBody>) -> Self::Future {
        let layer = self.layer.clone();
        let incoming = layer.cookie.read(request.headers());
        let session = WebSession::new(layer.store.clone(), incoming);
        request.extensions_mut().insert(session.clone());
        // The clone that was polled ready is the one to call (tower's rule).
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        Box::pin(async move {
            let mut response = inner.call(request).await?;
            let value = match session.cookie_change().await {
                CookieChange::Keep => None,
                CookieChange::Set { id, created_ms } => {
                    // A persistent cookie lives until the session's absolute end.
                    let max_age = layer.cookie.persistent.then(|| {
                        let lifetime = layer.config.absolute_lifetime.as_millis();
                        let end =
                            created_ms.saturating_add(lifetime.try_into().unwrap_or(u64::MAX));
                        end.saturating_sub(crate::session::now_millis()) / 1000
                    });
                    Some(layer.cookie.set(&id, max_age))
                }
                CookieChange::Clear => Some(layer.cookie.clear()),
            };
            if let Some(value) = value {
                response.headers_mut().append(header::SET_COOKIE, value);
            }
            Ok(response)
        })
    }
}
