//! The `WebSession<D>` extractor: the request's view of its login session.

use std::sync::Arc;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use tokio::sync::Mutex;

use super::cookie::Incoming;
use super::WebError;
use crate::{Error, ErrorKind, Result, Session, SessionId, SessionStore, Value};

/// The login session of one request (tower-sessions' `Session`); extract it
/// in a handler. It needs a [`SessionLayer`](super::SessionLayer) of the same
/// `D` around the route, else the extraction fails with a 500.
///
/// Loading is lazy: a handler that never asks costs no store call. The first
/// [`get`](Self::get) validates the cookie's id (refreshing the idle timeout);
/// later calls in the same request reuse that read. What the handler did —
/// log in, rotate, log out — the layer turns into a `Set-Cookie` header when
/// the response leaves; a cookie that names no live session is cleared.
///
/// Every method's error is a modkit [`Error`]; returned through `?` as a
/// [`WebError`] it is an HTTP status (`Conflict` 409, `Unauthenticated` 401,
/// a store that is down 503).
pub struct WebSession<D: Value> {
    handle: Arc<Handle<D>>,
}

impl<D: Value> Clone for WebSession<D> {
    fn clone(&self) -> Self {
        WebSession {
            handle: self.handle.clone(),
        }
    }
}

impl<D: Value> std::fmt::Debug for WebSession<D> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebSession").finish_non_exhaustive()
    }
}

struct Handle<D: Value> {
    store: Arc<dyn SessionStore<D>>,
    incoming: Incoming,
    state: Mutex<State<D>>,
}

struct State<D> {
    loaded: Loaded<D>,
    cookie: CookieChange,
}

enum Loaded<D> {
    NotYet,
    Live(Session<D>),
    Absent,
}

/// What the layer must tell the browser after the handler ran.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum CookieChange {
    /// Nothing (the cookie, if any, still names the live session).
    Keep,
    /// A new id, for a session created at `created_ms`.
    Set { id: SessionId, created_ms: u64 },
    /// Drop the cookie.
    Clear,
}

impl<D: Value> WebSession<D> {
    pub(crate) fn new(store: Arc<dyn SessionStore<D>>, incoming: Incoming) -> Self {
        WebSession {
            handle: Arc::new(Handle {
                store,
                incoming,
                state: Mutex::new(State {
                    loaded: Loaded::NotYet,
                    cookie: CookieChange::Keep,
                }),
            }),
        }
    }

    /// The live session, or `None` when logged out (no cookie, a tampered or
    /// unknown id, or an ended session). Refreshes the idle timeout.
    pub async fn get(&self) -> Result<Option<Session<D>>> {
        let mut state = self.handle.state.lock().await;
        self.load(&mut state).await?;
        Ok(match &state.loaded {
            Loaded::Live(s) => Some(s.clone()),
            _ => None,
        })
    }

    /// The live session, or [`ErrorKind::Unauthenticated`] (HTTP 401 as a [`WebError`]).
    pub async fn require(&self) -> Result<Session<D>> {
        self.get().await?.ok_or_else(logged_out)
    }

    /// Logs `principal` in with `data`: always a new session under a new id.
    ///
    /// The session the request came with, if any, is destroyed first, so an
    /// id planted before login (session fixation) never becomes a logged-in one.
    pub async fn login(&self, principal: &str, data: D) -> Result<Session<D>> {
        let mut state = self.handle.state.lock().await;
        if let Some(old) = self.current_id(&state) {
            self.handle.store.destroy(&old).await?;
        }
        state.loaded = Loaded::Absent;
        state.cookie = CookieChange::Clear;
        let session = self.handle.store.create(principal, data).await?;
        tracing::info!(principal, "web login");
        state.cookie = CookieChange::Set {
            id: session.id.clone(),
            created_ms: session.created_ms,
        };
        state.loaded = Loaded::Live(session.clone());
        Ok(session)
    }

    /// Replaces the data, checked against the version this request read.
    ///
    /// [`ErrorKind::Conflict`] (retryable; HTTP 409) when another request
    /// updated the session in between: nothing was written, re-read and decide
    /// again. [`ErrorKind::Unauthenticated`] when logged out. (tower-sessions
    /// would keep the last writer's data.)
    pub async fn update(&self, data: D) -> Result<Session<D>> {
        let mut state = self.handle.state.lock().await;
        self.load(&mut state).await?;
        let version = match &state.loaded {
            Loaded::Live(s) => s.version,
            _ => return Err(logged_out()),
        };
        self.update_locked(&mut state, version, data).await
    }

    /// Replaces the data if the stored version is still `expected_version`:
    /// for a form that carried the version it was rendered with (two tabs).
    pub async fn update_version(&self, expected_version: u64, data: D) -> Result<Session<D>> {
        let mut state = self.handle.state.lock().await;
        self.load(&mut state).await?;
        self.update_locked(&mut state, expected_version, data).await
    }

    /// Moves the live session to a new id (same principal, data and creation
    /// time): call it when privileges change without a new login.
    pub async fn rotate(&self) -> Result<Session<D>> {
        let mut state = self.handle.state.lock().await;
        self.load(&mut state).await?;
        let Loaded::Live(s) = &state.loaded else {
            return Err(logged_out());
        };
        let id = s.id.clone();
        let rotated = match self.handle.store.rotate(&id).await {
            Ok(r) => r,
            Err(e) if e.kind() == ErrorKind::NotFound => return Err(self.ended(&mut state)),
            Err(e) => return Err(e),
        };
        state.cookie = CookieChange::Set {
            id: rotated.id.clone(),
            created_ms: rotated.created_ms,
        };
        state.loaded = Loaded::Live(rotated.clone());
        Ok(rotated)
    }

    /// Logs out: destroys the session and expires the cookie; `true` when it was live.
    pub async fn logout(&self) -> Result<bool> {
        let mut state = self.handle.state.lock().await;
        let live = match self.current_id(&state) {
            Some(id) => self.handle.store.destroy(&id).await?,
            None => false,
        };
        if live {
            tracing::info!("web logout");
        }
        state.loaded = Loaded::Absent;
        state.cookie = CookieChange::Clear;
        Ok(live)
    }

    /// What the response must say about the cookie (called by the layer).
    pub(crate) async fn cookie_change(&self) -> CookieChange {
        let state = self.handle.state.lock().await;
        match (&state.cookie, &self.handle.incoming, &state.loaded) {
            // A cookie that names no session is dropped, so the browser stops sending it.
            (CookieChange::Keep, Incoming::Malformed, _)
            | (CookieChange::Keep, Incoming::Id(_), Loaded::Absent) => CookieChange::Clear,
            (change, _, _) => change.clone(),
        }
    }

    async fn load(&self, state: &mut State<D>) -> Result<()> {
        if !matches!(state.loaded, Loaded::NotYet) {
            return Ok(());
        }
        state.loaded = match &self.handle.incoming {
            Incoming::Id(id) => match self.handle.store.validate(id).await? {
                Some(s) => Loaded::Live(s),
                None => Loaded::Absent,
            },
            Incoming::None | Incoming::Malformed => Loaded::Absent,
        };
        Ok(())
    }

    async fn update_locked(
        &self,
        state: &mut State<D>,
        version: u64,
        data: D,
    ) -> Result<Session<D>> {
        let Loaded::Live(s) = &state.loaded else {
            return Err(logged_out());
        };
        let id = s.id.clone();
        match self.handle.store.update(&id, version, data).await {
            Ok(updated) => {
                state.loaded = Loaded::Live(updated.clone());
                Ok(updated)
            }
            Err(e) if e.kind() == ErrorKind::NotFound => Err(self.ended(state)),
            Err(e) => {
                if e.kind() == ErrorKind::Conflict {
                    tracing::debug!(version, "web session update conflict");
                }
                Err(e)
            }
        }
    }

    /// The session ended under us (expired, or logged out elsewhere).
    fn ended(&self, state: &mut State<D>) -> Error {
        state.loaded = Loaded::Absent;
        state.cookie = CookieChange::Clear;
        logged_out()
    }

    /// The id to end on login or logout: the loaded one, else the cookie's.
    fn current_id(&self, state: &State<D>) -> Option<SessionId> {
        match (&state.loaded, &self.handle.incoming) {
            (Loaded::Live(s), _) => Some(s.id.clone()),
            (Loaded::NotYet, Incoming::Id(id)) => Some(id.clone()),
            _ => None,
        }
    }
}

fn logged_out() -> Error {
    Error::new(ErrorKind::Unauthenticated, "not logged in")
}

impl<D: Value, St: Send + Sync> FromRequestParts<St> for WebSession<D> {
    type Rejection = WebError;

    async fn from_request_parts(parts: &mut Parts, _state: &St) -> Result<Self, WebError> {
        parts
            .extensions
            .get::<WebSession<D>>()
            .cloned()
            .ok_or_else(|| {
                tracing::error!(
                    data = std::any::type_name::<D>(),
                    "WebSession extracted on a route without a SessionLayer of that data type"
                );
                WebError::from(Error::internal("no SessionLayer for this WebSession"))
            })
    }
}
