//! The session cookie: its attributes, and reading and writing it.

use axum::http::{header, HeaderMap, HeaderValue};

use crate::{Error, Result, SessionId};

/// The cookie's `SameSite` attribute.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SameSite {
    /// Sent only on requests from this site: a link from another site (a mail,
    /// a search result) lands logged out.
    Strict,
    /// The default: also sent on top-level navigations (links) from other sites,
    /// never on their forms' POSTs, iframes or scripts' requests.
    #[default]
    Lax,
    /// Sent on every request, cross-site too; browsers then require `Secure`.
    None,
}

/// How the session cookie looks.
///
/// Defaults: `name = "id"`, no `Domain` (host-only), `Path=/`, `Secure`,
/// `HttpOnly`, `SameSite=Lax`, and a browser-session cookie (no `Max-Age`).
/// These are tower-sessions' defaults except `SameSite`, which is `Strict`
/// there: with `Lax` a link into the application from elsewhere lands logged
/// in, while other sites' form posts still come without the cookie.
///
/// Expiry is enforced by the store whatever the cookie says; `persistent`
/// only decides whether the browser keeps the cookie across its restarts.
///
/// ```
/// use modkit::web::{CookieConfig, SameSite};
///
/// let cookie = CookieConfig::default()
///     .with_name("shop.sid")
///     .with_domain("shop.example")
///     .with_same_site(SameSite::Strict);
/// assert!(cookie.secure && cookie.http_only);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CookieConfig {
    /// The cookie's name (an HTTP token).
    pub name: String,
    /// The `Domain` attribute; `None` keeps the cookie on the exact host.
    pub domain: Option<String>,
    /// The `Path` attribute.
    pub path: String,
    /// `Secure`: only sent over HTTPS (browsers treat `localhost` as secure).
    pub secure: bool,
    /// `HttpOnly`: invisible to JavaScript.
    pub http_only: bool,
    /// The `SameSite` attribute.
    pub same_site: SameSite,
    /// `Max-Age` until the session's absolute end instead of a browser-session cookie.
    pub persistent: bool,
}

impl Default for CookieConfig {
    fn default() -> Self {
        CookieConfig {
            name: "id".into(),
            domain: None,
            path: "/".into(),
            secure: true,
            http_only: true,
            same_site: SameSite::Lax,
            persistent: false,
        }
    }
}

impl CookieConfig {
    /// Sets the cookie's name.
    pub fn with_name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// Sets the `Domain` attribute.
    pub fn with_domain(mut self, domain: impl Into<String>) -> Self {
        self.domain = Some(domain.into());
        self
    }

    /// Sets the `Path` attribute.
    pub fn with_path(mut self, path: impl Into<String>) -> Self {
        self.path = path.into();
        self
    }

    /// Sets `Secure` (turn off only for plain-HTTP development on another host than localhost).
    pub fn with_secure(mut self, secure: bool) -> Self {
        self.secure = secure;
        self
    }

    /// Sets `HttpOnly`.
    pub fn with_http_only(mut self, http_only: bool) -> Self {
        self.http_only = http_only;
        self
    }

    /// Sets the `SameSite` attribute.
    pub fn with_same_site(mut self, same_site: SameSite) -> Self {
        self.same_site = same_site;
        self
    }

    /// Makes the cookie live until the session's absolute end (`Max-Age`).
    pub fn with_persistent(mut self, persistent: bool) -> Self {
        self.persistent = persistent;
        self
    }

    /// Refuses what would make a malformed `Set-Cookie` header.
    pub(crate) fn check(&self) -> Result<()> {
        let token = |s: &str| {
            !s.is_empty()
                && s.bytes()
                    .all(|b| b.is_ascii_graphic() && !b"()<>@,;:\\\"/[]?={}".contains(&b))
        };
        let attr = |s: &str| s.bytes().all(|b| b.is_ascii_graphic() && b != b';');
        if !token(&self.name) {
            return Err(Error::invalid_input(format!(
                "cookie name {:?} is not an HTTP token",
                self.name
            )));
        }
        if !attr(&self.path) || !self.domain.as_deref().is_none_or(attr) {
            return Err(Error::invalid_input(
                "cookie path and domain must be visible ASCII without ';'",
            ));
        }
        if self.same_site == SameSite::None && !self.secure {
            return Err(Error::invalid_input(
                "SameSite=None needs Secure (browsers reject the cookie otherwise)",
            ));
        }
        Ok(())
    }

    /// A `Set-Cookie` value carrying `id`, kept `max_age_secs` when given.
    pub(crate) fn set(&self, id: &SessionId, max_age_secs: Option<u64>) -> HeaderValue {
        self.header(id.as_str(), max_age_secs)
    }

    /// A `Set-Cookie` value that makes the browser drop the cookie.
    pub(crate) fn clear(&self) -> HeaderValue {
        self.header("", Some(0))
    }

    fn header(&self, value: &str, max_age_secs: Option<u64>) -> HeaderValue {
        // A cookie value is a token (RFC 6265): a session id always is; the
        // empty value of `clear` too.
        let mut c = cookie::Cookie::build((self.name.as_str(), value))
            .path(self.path.as_str())
            .secure(self.secure)
            .http_only(self.http_only)
            .same_site(match self.same_site {
                SameSite::Strict => cookie::SameSite::Strict,
                SameSite::Lax => cookie::SameSite::Lax,
                SameSite::None => cookie::SameSite::None,
            });
        if let Some(domain) = &self.domain {
            c = c.domain(domain.as_str());
        }
        if let Some(secs) = max_age_secs {
            let secs = i64::try_from(secs).unwrap_or(i64::MAX);
            c = c.max_age(cookie::time::Duration::seconds(secs));
        }
        // Name, path and domain passed `check` (visible ASCII), the id is
        // URL-safe: the header is valid. Should that ever break, no cookie is
        // better than a panic in the response path.
        HeaderValue::from_str(&c.build().to_string()).unwrap_or_else(|e| {
            tracing::error!(error = %e, "session cookie is not a valid header value");
            HeaderValue::from_static("")
        })
    }

    /// What the request's `Cookie` headers say about the session cookie.
    pub(crate) fn read(&self, headers: &HeaderMap) -> Incoming {
        let mut seen = false;
        for value in headers.get_all(header::COOKIE) {
            // UTF-8, not only visible ASCII: a garbled cookie of ours is still
            // found, so it can be flagged and cleared.
            let Ok(text) = std::str::from_utf8(value.as_bytes()) else {
                continue;
            };
            for c in cookie::Cookie::split_parse(text).flatten() {
                if c.name() != self.name {
                    continue;
                }
                seen = true;
                // Several cookies of one name (other paths or domains): the first
                // well-formed one wins; the store decides whether it is live.
                if let Ok(id) = SessionId::parse(c.value()) {
                    return Incoming::Id(id);
                }
            }
        }
        if seen {
            Incoming::Malformed
        } else {
            Incoming::None
        }
    }
}

/// The session cookie a request came with.
#[derive(Debug, Clone)]
pub(crate) enum Incoming {
    /// None at all.
    None,
    /// One that is not a session id (tampered, or from another application).
    Malformed,
    /// A well-formed id, live or not.
    Id(SessionId),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_make_a_lax_secure_http_only_session_cookie() {
        let id = SessionId::generate().unwrap();
        let v = CookieConfig::default().set(&id, None);
        let text = v.to_str().unwrap();
        assert!(text.starts_with(&format!("id={id}")), "{text}");
        for attr in ["HttpOnly", "SameSite=Lax", "Secure", "Path=/"] {
            assert!(text.contains(attr), "{attr} missing: {text}");
        }
        assert!(!text.contains("Max-Age"), "{text}");
        let clear = CookieConfig::default().clear();
        assert!(clear.to_str().unwrap().contains("Max-Age=0"));
    }

    #[test]
    fn bad_names_and_attributes_are_refused() {
        let c = CookieConfig::default;
        assert!(c().with_name("a;b").check().is_err());
        assert!(c().with_name("").check().is_err());
        assert!(c().with_name("sp ace").check().is_err());
        assert!(c().with_path("/a; x").check().is_err());
        assert!(c().with_domain("a.example;x").check().is_err());
        assert!(c().with_domain("\u{e9}.example").check().is_err());
        let none = c().with_same_site(SameSite::None);
        assert!(none.clone().with_secure(false).check().is_err());
        assert!(none.check().is_ok());
        let err = c().with_name("a;b").check().unwrap_err();
        assert_eq!(err.kind(), crate::ErrorKind::InvalidInput);
    }

    #[test]
    fn custom_name_domain_path_and_max_age_are_written() {
        let id = SessionId::generate().unwrap();
        let cfg = CookieConfig::default()
            .with_name("app.sid")
            .with_domain("app.example")
            .with_path("/app")
            .with_same_site(SameSite::Strict)
            .with_http_only(false)
            .with_secure(false);
        cfg.check().unwrap();
        let text = cfg.set(&id, Some(90)).to_str().unwrap().to_owned();
        assert!(text.starts_with(&format!("app.sid={id}")), "{text}");
        for attr in [
            "Domain=app.example",
            "Path=/app",
            "SameSite=Strict",
            "Max-Age=90",
        ] {
            assert!(text.contains(attr), "{attr} missing: {text}");
        }
        assert!(
            !text.contains("HttpOnly") && !text.contains("Secure"),
            "{text}"
        );
    }

    #[test]
    fn reads_the_named_cookie_among_others_and_flags_garbage() {
        let id = SessionId::generate().unwrap();
        let cfg = CookieConfig::default();
        let headers = |v: &str| {
            let mut h = HeaderMap::new();
            h.insert(header::COOKIE, HeaderValue::from_str(v).unwrap());
            h
        };
        let read = |v: &str| cfg.read(&headers(v));
        assert!(matches!(read(&format!("a=1; id={id}; b=2")), Incoming::Id(got) if got == id));
        assert!(matches!(read("a=1"), Incoming::None));
        assert!(matches!(read("id=../../etc/passwd"), Incoming::Malformed));
        assert!(matches!(read("id="), Incoming::Malformed));
        // A malformed one first, a good one after (another path): the good one.
        assert!(matches!(read(&format!("id=x; id={id}")), Incoming::Id(_)));
        assert!(matches!(cfg.read(&HeaderMap::new()), Incoming::None));
    }
}
