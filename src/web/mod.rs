//! Web applications on axum (feature `axum`): login sessions in a cookie and
//! services as handler arguments.
//!
//! - [`SessionLayer<D>`] around the routes, [`WebSession<D>`] in a handler: log
//!   in ([`WebSession::login`], always under a new id), read and update the
//!   session's typed data `D`, rotate its id, log out.
//! - [`Svc<dyn S>`](Svc) in a handler: service `S` of the [`App`](crate::App)
//!   in the router's state.
//! - [`WebError`]: a modkit [`Error`](crate::Error) as an HTTP response
//!   (`Conflict` is 409, `Unavailable` 503 with `Retry-After`, …).
//!
//! The cookie holds only the session id (256 random bits): the data stays in
//! the store, so a tampered or unknown id is simply no session, and logging
//! out ends the session on the server (replaying the old cookie finds nothing).
//!
//! # Compared with tower-sessions
//!
//! The shape follows tower-sessions: a layer, a lazily loaded session
//! extractor, the cookie called `id` with `Secure`, `HttpOnly` and `Path=/` by
//! default, a 500 when the layer is missing. Where modkit differs:
//!
//! - **The store is modkit's** [`SessionStore`](crate::SessionStore): in memory
//!   in the monolith, in Redis in the distributed package, where every process
//!   of the deployment sees the same sessions (a login on one node is valid on
//!   all of them, a logout everywhere) with no change to the handlers.
//! - **Typed data and versioned updates.** A session carries one value `D`, not
//!   a map of JSON values, and every update names the version it read: two
//!   concurrent requests never silently overwrite each other; the loser gets
//!   [`ErrorKind::Conflict`](crate::ErrorKind::Conflict), HTTP 409 as a
//!   [`WebError`]. tower-sessions saves the last writer's map.
//! - **Sessions exist only after login**: there are no anonymous sessions, so
//!   a visitor costs no store entry. [`WebSession::login`] destroys the
//!   session the request came with and creates one under a fresh id (what
//!   tower-sessions' `cycle_id` is for, done for you).
//! - **Expiry is the store's** [`SessionConfig`](crate::SessionConfig): idle
//!   (sliding, refreshed by each request that reads the session) and absolute.
//!   The cookie is a browser-session cookie unless
//!   [`CookieConfig::with_persistent`] asks for `Max-Age` until the absolute end.
//! - **`SameSite=Lax` by default** (tower-sessions: `Strict`), see [`CookieConfig`].
//! - No signed or private cookies: the id is unguessable and checked against
//!   the store on every request that reads the session.

mod cookie;
mod error;
mod extract;
mod layer;
mod session;

pub use cookie::{CookieConfig, SameSite};
pub use error::WebError;
pub use extract::Svc;
pub use layer::{SessionLayer, SessionService};
pub use session::WebSession;
