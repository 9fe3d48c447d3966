//! The web example over real HTTP, on each package compiled in: the monolith,
//! and the distributed package against a private `redis-server` per test.
//!
//! The routes are the example's own (`examples/web`), served on a free port;
//! the client is hyper's, sending cookies by hand (stale, tampered, planted).

#[path = "../examples/web/app.rs"]
#[allow(dead_code)]
mod app;
#[path = "../examples/web/greeter.rs"]
mod greeter;
#[path = "../examples/web/pages.rs"]
mod pages;
mod web_support;

use std::time::{Duration, Instant};

use modkit::prelude::*;
use modkit::web::{CookieConfig, SameSite, SessionLayer, WebError, WebSession};
use web_support::{attributes, form_version, is_logged_out, serve, serve_with, Package, Server};

/// Generates one `#[tokio::test]` per package compiled in for each scenario.
macro_rules! on_each_package {
    ($($scenario:ident),* $(,)?) => {
        #[cfg(feature = "monolith")]
        mod monolith {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $scenario() {
                    super::$scenario(super::Package::Monolith).await
                }
            )*
        }
        #[cfg(feature = "distribute")]
        mod distribute {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $scenario() {
                    super::$scenario(super::Package::Distribute).await
                }
            )*
        }
    };
}

on_each_package!(
    login_sets_a_secure_http_only_lax_cookie,
    cookie_name_domain_path_and_max_age_are_configurable,
    login_always_moves_to_a_new_id,
    the_page_needs_the_cookie_and_calls_the_service,
    logout_ends_the_session_on_the_server,
    tampered_or_unknown_cookies_are_no_session,
    idle_expiry_slides_and_then_ends_the_session,
    absolute_expiry_ends_a_busy_session,
    concurrent_updates_conflict_with_409,
    a_session_extractor_without_its_layer_is_a_500,
    rotate_moves_the_session_to_a_new_id_with_its_data,
);

async fn default_server(package: Package) -> Server {
    serve(package, SessionConfig::default(), CookieConfig::default()).await
}

async fn login_sets_a_secure_http_only_lax_cookie(package: Package) {
    let server = default_server(package).await;
    let form = server.get("/login", None).await;
    assert_eq!(form.status, 200);
    assert!(form.body.contains("name=\"password\""), "{}", form.body);
    assert_eq!(form.set_cookie(), None, "no session before login");

    let wrong = server.login("ada", "babbage", None).await;
    assert_eq!(wrong.status, 401);
    assert!(wrong.body.contains("wrong user or password"));
    assert_eq!(wrong.set_cookie(), None);

    let ok = server.login("ada", "lovelace", None).await;
    assert_eq!(ok.status, 303);
    assert_eq!(ok.location(), Some("/hello"));
    let set = ok.set_cookie().expect("Set-Cookie at login");
    let cookie = ok.cookie();
    let id = cookie.strip_prefix("id=").expect("cookie named id");
    assert!(SessionId::parse(id).is_ok(), "{id} is a session id");
    // A browser-session cookie (no Max-Age), host-only (no Domain).
    assert_eq!(
        attributes(&set),
        ["HttpOnly", "Path=/", "SameSite=Lax", "Secure"],
        "{set}"
    );
}

async fn cookie_name_domain_path_and_max_age_are_configurable(package: Package) {
    let sessions = SessionConfig {
        absolute_lifetime: Duration::from_secs(3600),
        ..SessionConfig::default()
    };
    let cookie = CookieConfig::default()
        .with_name("app.sid")
        .with_domain("app.example")
        .with_same_site(SameSite::Strict)
        .with_persistent(true);
    let server = serve(package, sessions, cookie).await;
    let ok = server.login("ada", "lovelace", None).await;
    let set = ok.set_cookie().unwrap();
    assert!(set.starts_with("app.sid="), "{set}");
    let attrs = attributes(&set);
    for want in [
        "Domain=app.example",
        "SameSite=Strict",
        "Secure",
        "HttpOnly",
        "Path=/",
    ] {
        assert!(attrs.iter().any(|a| a == want), "{want} missing: {set}");
    }
    // Until the absolute end: an hour, less the time the login took.
    let max_age = attrs
        .iter()
        .find_map(|a| a.strip_prefix("Max-Age="))
        .expect("Max-Age");
    let secs: u64 = max_age.parse().unwrap();
    assert!((3590..=3600).contains(&secs), "{set}");

    let cookie = ok.cookie();
    assert_eq!(server.get("/hello", Some(&cookie)).await.status, 200);
    // The same id under the default name is not this application's cookie.
    let renamed = cookie.replacen("app.sid=", "id=", 1);
    assert!(is_logged_out(&server.get("/hello", Some(&renamed)).await));
}

async fn login_always_moves_to_a_new_id(package: Package) {
    let server = default_server(package).await;
    let ada = server.logged_in("ada").await;

    // Logging in on a request that carries a live session: a new id, and the
    // old session ends (nobody keeps a pre-login id).
    let again = server.login("grace", "hopper", Some(&ada)).await;
    assert_eq!(again.status, 303);
    let grace = again.cookie();
    assert_ne!(grace, ada);
    assert!(is_logged_out(&server.get("/hello", Some(&ada)).await));
    let page = server.get("/hello", Some(&grace)).await;
    assert!(page.body.contains("hello, grace"), "{}", page.body);

    // An id planted by an attacker (well formed, never issued) is not adopted.
    let planted = format!("id={}", SessionId::generate().unwrap());
    let fixed = server.login("ada", "lovelace", Some(&planted)).await;
    assert_ne!(fixed.cookie(), planted);
    assert!(is_logged_out(&server.get("/hello", Some(&planted)).await));
}

async fn the_page_needs_the_cookie_and_calls_the_service(package: Package) {
    let server = default_server(package).await;
    let anonymous = server.get("/hello", None).await;
    assert!(is_logged_out(&anonymous), "{anonymous:?}");
    assert_eq!(anonymous.set_cookie(), None);
    assert_eq!(server.get("/", None).await.location(), Some("/hello"));

    let cookie = server.logged_in("ada").await;
    let first = server.get("/hello", Some(&cookie)).await;
    assert_eq!(first.status, 200);
    assert!(
        first.body.contains("hello, ada (visit 1)"),
        "{}",
        first.body
    );
    assert_eq!(first.set_cookie(), None, "a live cookie is not re-sent");
    let second = server.get("/hello", Some(&cookie)).await;
    assert!(
        second.body.contains("hello, ada (visit 2)"),
        "{}",
        second.body
    );

    // An update without a session: 401 from WebSession (a WebError).
    let nick = server.post("/nickname", None, "version=1&nickname=x").await;
    assert_eq!(nick.status, 401, "{nick:?}");
}

async fn logout_ends_the_session_on_the_server(package: Package) {
    let server = default_server(package).await;
    let cookie = server.logged_in("ada").await;
    let version = form_version(&server.get("/hello", Some(&cookie)).await.body);

    let out = server.post("/logout", Some(&cookie), "").await;
    assert!(is_logged_out(&out), "{out:?}");
    let cleared = out.set_cookie().expect("the cookie is cleared");
    assert!(
        cleared.starts_with("id=;") && cleared.contains("Max-Age=0"),
        "{cleared}"
    );

    // The store no longer has it: replaying the old cookie finds nothing.
    let store = server
        .app
        .sessions::<app::Profile>("web.sessions", SessionConfig::default())
        .unwrap();
    let id = SessionId::parse(cookie.strip_prefix("id=").unwrap()).unwrap();
    assert_eq!(store.get(&id).await.unwrap(), None);
    let replay = server.get("/hello", Some(&cookie)).await;
    assert!(is_logged_out(&replay), "{replay:?}");
    assert!(
        replay.set_cookie().unwrap().contains("Max-Age=0"),
        "a dead cookie is cleared"
    );
    let form = format!("version={version}&nickname=ghost");
    assert_eq!(
        server.post("/nickname", Some(&cookie), &form).await.status,
        401
    );
    // Logging out twice is harmless.
    assert!(is_logged_out(
        &server.post("/logout", Some(&cookie), "").await
    ));
}

async fn tampered_or_unknown_cookies_are_no_session(package: Package) {
    let server = default_server(package).await;
    let cookie = server.logged_in("ada").await;
    let last = cookie.chars().last().unwrap();
    let tampered = format!(
        "{}{}",
        &cookie[..cookie.len() - 1],
        if last == 'A' { 'B' } else { 'A' }
    );
    let unknown = format!("id={}", SessionId::generate().unwrap());
    for bad in [
        tampered.as_str(),
        unknown.as_str(),
        "id=",
        "id=../../etc/passwd",
        "id=\"quoted\"",
        "id=短い",
        "other=1",
    ] {
        let reply = server.get("/hello", Some(bad)).await;
        assert!(is_logged_out(&reply), "{bad}: {reply:?}");
        if bad.starts_with("id=") {
            let cleared = reply.set_cookie().unwrap_or_default();
            assert!(
                cleared.contains("Max-Age=0"),
                "{bad}: the cookie is cleared: {reply:?}"
            );
        }
        let nick = server
            .post("/nickname", Some(bad), "version=1&nickname=x")
            .await;
        assert_eq!(nick.status, 401, "{bad}: {nick:?}");
    }
    // None of that touched the real session.
    assert_eq!(server.get("/hello", Some(&cookie)).await.status, 200);
}

async fn idle_expiry_slides_and_then_ends_the_session(package: Package) {
    let sessions = SessionConfig {
        idle_timeout: Duration::from_millis(1500),
        ..SessionConfig::default()
    };
    let server = serve(package, sessions, CookieConfig::default()).await;
    let cookie = server.logged_in("ada").await;
    // Each visit slides the idle timer: 3 × 600 ms outlives one idle timeout.
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_millis(600)).await;
        let page = server.get("/hello", Some(&cookie)).await;
        assert_eq!(page.status, 200, "still within the idle timeout: {page:?}");
    }
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert!(is_logged_out(&server.get("/hello", Some(&cookie)).await));
}

async fn absolute_expiry_ends_a_busy_session(package: Package) {
    let sessions = SessionConfig {
        absolute_lifetime: Duration::from_millis(2000),
        ..SessionConfig::default()
    };
    let server = serve(package, sessions, CookieConfig::default()).await;
    let start = Instant::now();
    let cookie = server.logged_in("ada").await;
    while start.elapsed() < Duration::from_millis(1200) {
        assert_eq!(server.get("/hello", Some(&cookie)).await.status, 200);
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    tokio::time::sleep(Duration::from_millis(2600).saturating_sub(start.elapsed())).await;
    assert!(is_logged_out(&server.get("/hello", Some(&cookie)).await));
}

async fn concurrent_updates_conflict_with_409(package: Package) {
    let server = std::sync::Arc::new(default_server(package).await);
    let cookie = server.logged_in("ada").await;
    let version = form_version(&server.get("/hello", Some(&cookie)).await.body);

    // Eight tabs submit the form rendered at one version, all at once: one wins.
    let tabs: Vec<_> = (0..8)
        .map(|i| {
            let (server, cookie) = (server.clone(), cookie.clone());
            tokio::spawn(async move {
                let form = format!("version={version}&nickname=tab{i}");
                server.post("/nickname", Some(&cookie), &form).await
            })
        })
        .collect();
    let mut replies = Vec::new();
    for tab in tabs {
        replies.push(tab.await.unwrap());
    }
    let won: Vec<_> = replies.iter().filter(|r| r.status == 303).collect();
    let lost: Vec<_> = replies.iter().filter(|r| r.status == 409).collect();
    assert_eq!((won.len(), lost.len()), (1, 7), "{replies:?}");
    for r in &lost {
        assert_eq!(r.headers["retry-after"], "0");
        assert_eq!(r.set_cookie(), None, "a conflict keeps the session");
    }

    let page = server.get("/hello", Some(&cookie)).await;
    let now = form_version(&page.body);
    assert!(now > version);
    let winners = (0..8)
        .filter(|i| page.body.contains(&format!("value=\"tab{i}\"")))
        .count();
    assert_eq!(winners, 1, "{}", page.body);
    // A stale form after that still conflicts; a fresh one passes.
    let stale = format!("version={version}&nickname=late");
    assert_eq!(
        server.post("/nickname", Some(&cookie), &stale).await.status,
        409
    );
    let fresh = format!("version={now}&nickname=late");
    assert_eq!(
        server.post("/nickname", Some(&cookie), &fresh).await.status,
        303
    );
}

async fn a_session_extractor_without_its_layer_is_a_500(package: Package) {
    // Routes outside the layer, and a WebSession of another data type than
    // the layer's: a server bug, answered 500 (and logged), never a panic.
    fn extra(_: &App) -> axum::Router {
        axum::Router::new().route(
            "/bare",
            axum::routing::get(|s: WebSession<String>| async move {
                format!("{:?}", s.get().await.map(|s| s.is_some()))
            }),
        )
    }
    let server = serve_with(
        package,
        SessionConfig::default(),
        CookieConfig::default(),
        extra,
    )
    .await;
    let cookie = server.logged_in("ada").await;
    let reply = server.get("/bare", Some(&cookie)).await;
    assert_eq!(reply.status, 500, "{reply:?}");
    assert_eq!(reply.body, "Internal Server Error");
}

async fn rotate_moves_the_session_to_a_new_id_with_its_data(package: Package) {
    // A route of the test's own, on the example's session store.
    fn extra(app: &App) -> axum::Router {
        let layer =
            SessionLayer::<app::Profile>::from_app(app, "web.sessions", SessionConfig::default());
        axum::Router::new()
            .route(
                "/rotate",
                axum::routing::post(|s: WebSession<app::Profile>| async move {
                    Ok::<_, WebError>(s.rotate().await?.data.nickname)
                }),
            )
            .layer(layer.unwrap())
    }
    let server = serve_with(
        package,
        SessionConfig::default(),
        CookieConfig::default(),
        extra,
    )
    .await;
    let old = server.logged_in("ada").await;
    let version = form_version(&server.get("/hello", Some(&old)).await.body);
    let form = format!("version={version}&nickname=Countess");
    assert_eq!(
        server.post("/nickname", Some(&old), &form).await.status,
        303
    );

    let rotated = server.post("/rotate", Some(&old), "").await;
    assert_eq!((rotated.status, rotated.body.as_str()), (200, "Countess"));
    let new = rotated.cookie();
    assert_ne!(new, old);
    assert!(is_logged_out(&server.get("/hello", Some(&old)).await));
    let page = server.get("/hello", Some(&new)).await;
    assert!(
        page.body.contains("hello, Countess (visit 2)"),
        "{}",
        page.body
    );
    assert_eq!(server.post("/rotate", None, "").await.status, 401);
}
