//! What the web tests share: the example application served on a free port
//! on either package, and a plain HTTP/1.1 client (hyper's) that sends exactly
//! the cookies a test names, stale and tampered ones included.

#![allow(dead_code)] // each test target uses a part

use std::net::SocketAddr;

use axum::body::Body;
use axum::http::{header, HeaderMap, Method, Request};
use modkit::prelude::*;
use modkit::web::CookieConfig;

use crate::app;

/// Which deployment package serves the example.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Package {
    /// In memory, one process.
    Monolith,
    /// Redis (a private `redis-server` per test) and RPC.
    Distribute,
}

/// The example application, listening on `127.0.0.1:<free port>` until dropped.
pub struct Server {
    pub addr: SocketAddr,
    pub app: App,
    task: tokio::task::JoinHandle<()>,
    // The package's private redis-server, if it has one; dropped last.
    _redis: Option<Box<dyn std::any::Any + Send + Sync>>,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Routes a test adds beside the example's, made from the running app.
pub type Extra = fn(&App) -> axum::Router;

/// No extra routes.
pub fn no_extra(_: &App) -> axum::Router {
    axum::Router::new()
}

/// Serves the example on `package` with these session and cookie settings.
pub async fn serve(package: Package, sessions: SessionConfig, cookie: CookieConfig) -> Server {
    serve_with(package, sessions, cookie, no_extra).await
}

/// [`serve`], with `extra` routes beside the example's (same origin, outside
/// its session layer unless they bring their own).
pub async fn serve_with(
    package: Package,
    sessions: SessionConfig,
    cookie: CookieConfig,
    extra: Extra,
) -> Server {
    let mut config = Config::default();
    let redis: Option<Box<dyn std::any::Any + Send + Sync>> = match package {
        Package::Monolith => {
            config.mode = Some(modkit::BackendKind::Monolith.name().into());
            None
        }
        #[cfg(feature = "distribute")]
        Package::Distribute => {
            let server = modkit::distribute::RedisServer::start()
                .expect("redis-server (install it: apt-get install redis-server)");
            config = distributed_node(&server.url(), "web-test");
            Some(Box::new(server))
        }
        #[cfg(not(feature = "distribute"))]
        Package::Distribute => {
            panic!("the distributed package is not compiled in (feature `distribute`)")
        }
    };
    let mut server = serve_config(config, sessions, cookie, extra).await;
    server._redis = redis;
    server
}

/// The configuration of a distributed node `node_id` on the Redis at
/// `redis_url`, hosting the example's service.
#[cfg(feature = "distribute")]
pub fn distributed_node(redis_url: &str, node_id: &str) -> Config {
    let mut config = Config {
        mode: Some(modkit::BackendKind::Distribute.name().into()),
        node_id: Some(node_id.into()),
        ..Config::default()
    };
    config
        .edit_section(|r: &mut modkit::distribute::RedisConfig| r.url = redis_url.into())
        .expect("a valid [redis] section");
    config.invoke.host = Some(vec![<dyn crate::greeter::Greeter as Service>::NAME.into()]);
    config
}

/// Serves the example on an app started from `config`.
pub async fn serve_config(
    config: Config,
    sessions: SessionConfig,
    cookie: CookieConfig,
    extra: Extra,
) -> Server {
    let app = App::start(config).await.expect("app starts");
    app::provide(&app).await.expect("provide Greeter");
    let router = app::router(&app, sessions, cookie)
        .expect("router")
        .merge(extra(&app));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        axum::serve(listener, router).await.expect("serve");
    });
    Server {
        addr,
        app,
        task,
        _redis: None,
    }
}

/// An HTTP response, its body read whole.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: String,
}

impl Reply {
    /// Every `Set-Cookie` header.
    pub fn set_cookies(&self) -> Vec<String> {
        self.headers
            .get_all(header::SET_COOKIE)
            .iter()
            .map(|v| v.to_str().unwrap().to_owned())
            .collect()
    }

    /// The one `Set-Cookie` header (fails the test if there are several).
    pub fn set_cookie(&self) -> Option<String> {
        let all = self.set_cookies();
        assert!(all.len() <= 1, "several Set-Cookie headers: {all:?}");
        all.into_iter().next()
    }

    /// `name=value` of the one `Set-Cookie`, as a `Cookie` header sends it back.
    pub fn cookie(&self) -> String {
        let set = self.set_cookie().expect("a Set-Cookie header");
        set.split(';').next().unwrap().to_owned()
    }

    /// The `Location` header.
    pub fn location(&self) -> Option<&str> {
        self.headers
            .get(header::LOCATION)
            .map(|v| v.to_str().unwrap())
    }
}

impl Server {
    /// `http://127.0.0.1:<port><path>`.
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.addr.port())
    }

    /// One request on a fresh connection; `form` is sent url-encoded.
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        cookie: Option<&str>,
        form: Option<&str>,
    ) -> Reply {
        let stream = tokio::net::TcpStream::connect(self.addr).await.unwrap();
        let io = hyper_util::rt::TokioIo::new(stream);
        let (mut sender, conn) = hyper::client::conn::http1::handshake(io).await.unwrap();
        tokio::spawn(conn);
        let mut request = Request::builder()
            .method(method)
            .uri(path)
            .header(header::HOST, format!("127.0.0.1:{}", self.addr.port()));
        if let Some(cookie) = cookie {
            request = request.header(header::COOKIE, cookie);
        }
        let body = match form {
            Some(form) => {
                request = request.header(header::CONTENT_TYPE, "application/x-www-form-urlencoded");
                Body::from(form.to_owned())
            }
            None => Body::empty(),
        };
        let response = sender
            .send_request(request.body(body).unwrap())
            .await
            .unwrap();
        let (parts, body) = response.into_parts();
        let bytes = axum::body::to_bytes(Body::new(body), 1 << 20)
            .await
            .unwrap();
        Reply {
            status: parts.status.as_u16(),
            headers: parts.headers,
            body: String::from_utf8(bytes.to_vec()).unwrap(),
        }
    }

    /// `GET path` with `cookie`.
    pub async fn get(&self, path: &str, cookie: Option<&str>) -> Reply {
        self.send(Method::GET, path, cookie, None).await
    }

    /// `POST path` of `form` with `cookie`.
    pub async fn post(&self, path: &str, cookie: Option<&str>, form: &str) -> Reply {
        self.send(Method::POST, path, cookie, Some(form)).await
    }

    /// Logs `user` in with `password`, sending `cookie` along.
    pub async fn login(&self, user: &str, password: &str, cookie: Option<&str>) -> Reply {
        let form = format!("user={user}&password={password}");
        self.post("/login", cookie, &form).await
    }

    /// Logs `user` in (a known user) and returns the session cookie (`id=...`).
    pub async fn logged_in(&self, user: &str) -> String {
        let password = match user {
            "ada" => "lovelace",
            "grace" => "hopper",
            other => panic!("no such example user {other}"),
        };
        let reply = self.login(user, password, None).await;
        assert_eq!(reply.status, 303, "login of {user}: {reply:?}");
        reply.cookie()
    }
}

/// The attributes of a `Set-Cookie` header after `name=value`, as written.
pub fn attributes(set_cookie: &str) -> Vec<String> {
    let mut attrs: Vec<String> = set_cookie
        .split(';')
        .skip(1)
        .map(|a| a.trim().to_owned())
        .collect();
    attrs.sort();
    attrs
}

/// The session version the nickname form of `/hello` was rendered with.
pub fn form_version(page: &str) -> u64 {
    let marker = "name=\"version\" value=\"";
    let at = page.find(marker).expect("the nickname form") + marker.len();
    let digits: String = page[at..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().unwrap()
}

pub fn is_logged_out(reply: &Reply) -> bool {
    reply.status == 303 && reply.location() == Some("/login")
}
