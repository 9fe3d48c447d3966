//! Session: login state with typed data, idle and absolute expiry.
//!
//! A session id is 256 bits from the operating system's CSPRNG, encoded
//! URL-safe base64 without padding (43 characters). A session ends at whichever
//! comes first: `idle_timeout` after its last validate/update (sliding), or
//! `absolute_lifetime` after it was created (rotation keeps the creation time).
//! Every update carries the version it read; a concurrent update makes it fail
//! with [`ErrorKind::Conflict`], so no write is lost.

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::error::{Error, ErrorKind, Result};
use crate::Value;

/// Expiry of the sessions of one store.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct SessionConfig {
    /// A session unused this long ends (sliding: validate and update refresh it).
    #[serde(with = "crate::config::duration")]
    pub idle_timeout: Duration,
    /// A session ends this long after creation, however busy.
    #[serde(with = "crate::config::duration")]
    pub absolute_lifetime: Duration,
    /// Largest encoded session data that create and update accept (default
    /// [`DEFAULT_MAX_VALUE_BYTES`](crate::codec::DEFAULT_MAX_VALUE_BYTES), 16 MiB);
    /// a larger one fails with `PayloadTooLarge` and changes nothing.
    pub max_value_bytes: usize,
}

impl Default for SessionConfig {
    fn default() -> Self {
        SessionConfig {
            idle_timeout: Duration::from_secs(30 * 60),
            absolute_lifetime: Duration::from_secs(12 * 60 * 60),
            max_value_bytes: crate::codec::DEFAULT_MAX_VALUE_BYTES,
        }
    }
}

/// An unguessable session id.
///
/// Deserializing checks the shape as [`SessionId::parse`] does, so an id that
/// came over the wire or out of storage is always 43 URL-safe characters.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Deserialize)]
#[serde(try_from = "String")]
pub struct SessionId(String);

impl Serialize for SessionId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

const ID_BYTES: usize = 32;
const URL_SAFE: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

impl SessionId {
    /// A fresh id: 256 random bits from the OS CSPRNG, URL-safe.
    pub fn generate() -> Result<SessionId> {
        let mut bytes = [0u8; ID_BYTES];
        getrandom::fill(&mut bytes).map_err(|e| {
            Error::new(
                ErrorKind::Unavailable,
                format!("no randomness for a session id: {e}"),
            )
        })?;
        Ok(SessionId(base64_url(&bytes)))
    }

    /// The id as text (safe in URLs and cookies).
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Accepts an id received from a client: only checks its shape, never trusts it.
    pub fn parse(text: &str) -> Result<SessionId> {
        SessionId::try_from(text.to_owned())
    }
}

impl fmt::Display for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for SessionId {
    // Ids are bearer secrets: never print one whole in logs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // By characters: an id is ASCII once parsed, but Debug must never panic.
        let head: String = self.0.chars().take(6).collect();
        write!(f, "SessionId({head}…)")
    }
}

impl TryFrom<String> for SessionId {
    type Error = Error;

    fn try_from(text: String) -> Result<SessionId> {
        if is_well_formed(&text) {
            Ok(SessionId(text))
        } else {
            Err(Error::invalid_input("malformed session id"))
        }
    }
}

/// Every id is checked once, where it enters (parse or deserialize), so a
/// store never sees another shape. A byte table: a linear search per byte
/// showed in profiles of `validate`.
fn is_well_formed(text: &str) -> bool {
    const TABLE: [bool; 256] = {
        let mut table = [false; 256];
        let mut i = 0;
        while i < URL_SAFE.len() {
            table[URL_SAFE[i] as usize] = true;
            i += 1;
        }
        table
    };
    text.len() == 43 && text.bytes().all(|b| TABLE[b as usize])
}

fn base64_url(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | (*b as u32) << (16 - 8 * i));
        for i in 0..=chunk.len() {
            out.push(URL_SAFE[(n >> (18 - 6 * i) & 63) as usize] as char);
        }
    }
    out
}

/// Milliseconds since the Unix epoch, the time unit sessions store.
pub fn now_millis() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// One session as read from the store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Session<D> {
    /// The id (a bearer secret).
    pub id: SessionId,
    /// Who is logged in.
    pub principal: String,
    /// The application's data.
    pub data: D,
    /// Increases with every update; pass it back to [`SessionStore::update`].
    pub version: u64,
    /// Creation time, ms since the Unix epoch (kept across rotation).
    pub created_ms: u64,
    /// Last validate or update, ms since the Unix epoch.
    pub last_seen_ms: u64,
}

impl<D> Session<D> {
    /// When this session ends if unused, ms since the Unix epoch.
    pub fn expires_ms(&self, config: &SessionConfig) -> u64 {
        let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        let idle = self.last_seen_ms.saturating_add(ms(config.idle_timeout));
        let absolute = self.created_ms.saturating_add(ms(config.absolute_lifetime));
        idle.min(absolute)
    }
}

/// A store of sessions carrying data `D`.
///
/// Its methods are `async fn`s. They go through `async_trait` so that the
/// trait stays usable as `dyn` (handles are `Arc<dyn …>`), which makes rustdoc
/// show them desugared (`Pin<Box<dyn Future …>>`, `'life0`); each method's
/// doc therefore ends with its plain `async fn` signature.
#[async_trait]
pub trait SessionStore<D: Value>: Send + Sync {
    /// The store's name.
    fn name(&self) -> &str;

    /// Creates a session for `principal` with a fresh id.
    ///
    /// Signature: `async fn create(&self, principal: &str, data: D) -> Result<Session<D>>`
    async fn create(&self, principal: &str, data: D) -> Result<Session<D>>;

    /// Reads a live session without refreshing it.
    ///
    /// Signature: `async fn get(&self, id: &SessionId) -> Result<Option<Session<D>>>`
    async fn get(&self, id: &SessionId) -> Result<Option<Session<D>>>;

    /// Reads a live session and refreshes its idle timeout (sliding expiry).
    ///
    /// Signature: `async fn validate(&self, id: &SessionId) -> Result<Option<Session<D>>>`
    async fn validate(&self, id: &SessionId) -> Result<Option<Session<D>>>;

    /// Replaces the data if the stored version is still `expected_version`.
    ///
    /// [`ErrorKind::Conflict`] when another update came first (re-read, retry);
    /// [`ErrorKind::NotFound`] when the session ended.
    ///
    /// Signature: `async fn update(&self, id: &SessionId, expected_version: u64, data: D) -> Result<Session<D>>`
    async fn update(&self, id: &SessionId, expected_version: u64, data: D) -> Result<Session<D>>;

    /// Moves the session to a new id (same data and creation time); the old id ends.
    ///
    /// Signature: `async fn rotate(&self, id: &SessionId) -> Result<Session<D>>`
    async fn rotate(&self, id: &SessionId) -> Result<Session<D>>;

    /// Ends a session; `true` when it was live.
    ///
    /// Signature: `async fn destroy(&self, id: &SessionId) -> Result<bool>`
    async fn destroy(&self, id: &SessionId) -> Result<bool>;

    /// Ends every session of `principal`; returns how many were live.
    ///
    /// Signature: `async fn destroy_principal(&self, principal: &str) -> Result<usize>`
    async fn destroy_principal(&self, principal: &str) -> Result<usize>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_long_url_safe_and_distinct() {
        let a = SessionId::generate().unwrap();
        let b = SessionId::generate().unwrap();
        assert_ne!(a, b);
        assert_eq!(a.as_str().len(), 43);
        assert!(SessionId::parse(a.as_str()).is_ok());
        assert!(SessionId::parse("short").is_err());
        assert!(SessionId::parse(&"+".repeat(43)).is_err());
        assert!(!format!("{a:?}").contains(a.as_str()));
    }

    #[test]
    fn decoded_ids_are_checked_and_never_panic_in_debug() {
        let good = SessionId::generate().unwrap();
        let back: SessionId = crate::codec::decode(&crate::codec::encode(&good).unwrap()).unwrap();
        assert_eq!(back, good);
        // A non-ASCII id from the wire: a codec error, not a panic later in Debug.
        let hostile = crate::codec::encode("ééééééééééééééééééééé€").unwrap();
        let err = crate::codec::decode::<SessionId>(&hostile).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Codec);
        let odd = SessionId("ab\u{e9}\u{e9}\u{e9}\u{e9}".into());
        assert_eq!(format!("{odd:?}"), "SessionId(ab\u{e9}\u{e9}\u{e9}\u{e9}…)");
    }

    #[test]
    fn base64_matches_known_vectors() {
        assert_eq!(base64_url(b"foobar"), "Zm9vYmFy");
        assert_eq!(base64_url(b"fo"), "Zm8");
        assert_eq!(base64_url(&[0xfb, 0xff]), "-_8");
    }
}
