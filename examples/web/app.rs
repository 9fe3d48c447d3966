//! The example's routes: log in (a form), a page that calls the `Greeter`
//! service, a nickname form (a versioned session update), log out.
//!
//! | route | what |
//! |---|---|
//! | `GET /login` | the login form |
//! | `POST /login` | checks the password; a new session under a new id, then `303 /hello` |
//! | `GET /hello` | logged in: the greeting from `Greeter`; else `303 /login` |
//! | `POST /nickname` | updates the session data if its version is still the form's (else 409) |
//! | `POST /logout` | ends the session on the server, clears the cookie, `303 /login` |

use std::sync::Arc;

use axum::extract::Form;
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::Router;
use modkit::prelude::*;
use modkit::web::{CookieConfig, SessionLayer, Svc, WebError, WebSession};
use serde::{Deserialize, Serialize};

use crate::greeter::{CountingGreeter, Greeter};
use crate::pages;

/// What a login session carries.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Profile {
    pub nickname: String,
}

/// The users of the example, with their (plain-text, for the example only) passwords.
const USERS: &[(&str, &str)] = &[("ada", "lovelace"), ("grace", "hopper")];

/// Provides the example's service; the configuration decides whether this process hosts it.
pub async fn provide(app: &App) -> Result<()> {
    app.provide::<dyn Greeter>(Arc::new(CountingGreeter::new(app)?))
        .await
}

/// The application's router over `app`, its sessions in the store `web.sessions`.
pub fn router(app: &App, sessions: SessionConfig, cookie: CookieConfig) -> Result<Router> {
    let layer =
        SessionLayer::<Profile>::from_app(app, "web.sessions", sessions)?.with_cookie(cookie)?;
    Ok(Router::new()
        .route("/", get(|| async { Redirect::to("/hello") }))
        .route("/login", get(login_form).post(login))
        .route("/hello", get(hello))
        .route("/nickname", post(nickname))
        .route("/logout", post(logout))
        .layer(layer)
        .with_state(app.clone()))
}

async fn login_form() -> Html<String> {
    Html(pages::login(None))
}

#[derive(Deserialize)]
struct LoginForm {
    user: String,
    password: String,
}

async fn login(
    session: WebSession<Profile>,
    Form(form): Form<LoginForm>,
) -> Result<Response, WebError> {
    let known = USERS
        .iter()
        .any(|(user, password)| *user == form.user && *password == form.password);
    if !known {
        let page = pages::login(Some("wrong user or password"));
        return Ok((StatusCode::UNAUTHORIZED, Html(page)).into_response());
    }
    // A new session under a new id; the one the request came with ends.
    let profile = Profile {
        nickname: form.user.clone(),
    };
    session.login(&form.user, profile).await?;
    Ok(Redirect::to("/hello").into_response())
}

async fn hello(
    session: WebSession<Profile>,
    greeter: Svc<dyn Greeter>,
) -> Result<Response, WebError> {
    let Some(s) = session.get().await? else {
        return Ok(Redirect::to("/login").into_response());
    };
    let greeting = greeter
        .greet(s.principal.clone(), s.data.nickname.clone())
        .await?;
    let page = pages::hello(&greeting.text, greeting.visits, &s.data.nickname, s.version);
    Ok(Html(page).into_response())
}

#[derive(Deserialize)]
struct NicknameForm {
    version: u64,
    nickname: String,
}

async fn nickname(
    session: WebSession<Profile>,
    Form(form): Form<NicknameForm>,
) -> Result<Response, WebError> {
    let chars = form.nickname.chars().count();
    if !(1..=40).contains(&chars) || form.nickname.chars().any(char::is_control) {
        return Err(Error::invalid_input("a nickname has 1 to 40 printable characters").into());
    }
    // Checked against the version the form was rendered with: of two tabs
    // that both submit, the second gets 409 instead of silently winning.
    let profile = Profile {
        nickname: form.nickname,
    };
    session.update_version(form.version, profile).await?;
    Ok(Redirect::to("/hello").into_response())
}

async fn logout(session: WebSession<Profile>) -> Result<Redirect, WebError> {
    session.logout().await?;
    Ok(Redirect::to("/login"))
}
