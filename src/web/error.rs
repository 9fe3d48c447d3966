//! [`WebError`]: a modkit [`Error`] as an HTTP response.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

use crate::{Error, ErrorKind};

/// A modkit [`Error`] as an HTTP response: the rejection of the extractors,
/// and what a handler returns with `?` (`Result<_, WebError>`).
///
/// | kind | status |
/// |---|---|
/// | `Conflict` (a concurrent session update won) | 409 Conflict, `Retry-After: 0` |
/// | `Unavailable`, `Timeout` (Redis or an instance is down) | 503 Service Unavailable, `Retry-After: 1` |
/// | `Unauthenticated` (not logged in) | 401 Unauthorized |
/// | `InvalidInput`, `Codec` | 400 Bad Request |
/// | `NotFound` | 404 Not Found |
/// | `PayloadTooLarge` | 413 Content Too Large |
/// | `QueueFull` | 429 Too Many Requests, `Retry-After: 1` |
/// | anything else | 500 Internal Server Error |
///
/// A version conflict is 409, not 503: the request was based on data that
/// changed, so the client must re-read before it tries again (a form shows the
/// new data); the server is fine. `Retry-After: 0` says that once re-read, it
/// may retry at once. Client errors (4xx) carry the error's message; server
/// errors (5xx) a generic text, and the error itself goes to the log.
#[derive(Debug)]
pub struct WebError(pub Error);

impl WebError {
    /// The HTTP status this error answers with.
    pub fn status(&self) -> StatusCode {
        match self.0.kind() {
            ErrorKind::Conflict => StatusCode::CONFLICT,
            ErrorKind::Unavailable | ErrorKind::Timeout => StatusCode::SERVICE_UNAVAILABLE,
            ErrorKind::Unauthenticated => StatusCode::UNAUTHORIZED,
            ErrorKind::InvalidInput | ErrorKind::Codec => StatusCode::BAD_REQUEST,
            ErrorKind::NotFound => StatusCode::NOT_FOUND,
            ErrorKind::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ErrorKind::QueueFull => StatusCode::TOO_MANY_REQUESTS,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The modkit error inside.
    pub fn error(&self) -> &Error {
        &self.0
    }
}

impl From<Error> for WebError {
    fn from(error: Error) -> Self {
        WebError(error)
    }
}

impl std::fmt::Display for WebError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(&self.0, f)
    }
}

impl std::error::Error for WebError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.0)
    }
}

impl IntoResponse for WebError {
    fn into_response(self) -> Response {
        let status = self.status();
        let body = if status.is_server_error() {
            tracing::error!(error = %self.0, kind = %self.0.kind(), "request failed");
            status.canonical_reason().unwrap_or("error").to_owned()
        } else {
            self.0.message().to_owned()
        };
        let retry_after = match status {
            StatusCode::CONFLICT => Some("0"),
            StatusCode::SERVICE_UNAVAILABLE | StatusCode::TOO_MANY_REQUESTS => Some("1"),
            _ => None,
        };
        let mut response = (status, body).into_response();
        if let Some(secs) = retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static(secs));
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn respond(kind: ErrorKind, message: &'static str) -> Response {
        WebError::from(Error::new(kind, message)).into_response()
    }

    #[test]
    fn conflict_is_409_retry_at_once_with_its_message() {
        let r = respond(ErrorKind::Conflict, "session changed");
        assert_eq!(r.status(), StatusCode::CONFLICT);
        assert_eq!(r.headers()[header::RETRY_AFTER], "0");
    }

    async fn body(r: Response) -> String {
        let bytes = axum::body::to_bytes(r.into_body(), 1 << 16).await.unwrap();
        String::from_utf8(bytes.to_vec()).unwrap()
    }

    #[tokio::test]
    async fn kinds_map_to_statuses_and_server_errors_hide_their_message() {
        for (kind, status) in [
            (ErrorKind::Unauthenticated, 401),
            (ErrorKind::InvalidInput, 400),
            (ErrorKind::NotFound, 404),
            (ErrorKind::PayloadTooLarge, 413),
            (ErrorKind::Unavailable, 503),
            (ErrorKind::Timeout, 503),
            (ErrorKind::Internal, 500),
            (ErrorKind::Panicked, 500),
        ] {
            assert_eq!(respond(kind, "x").status().as_u16(), status, "{kind}");
        }
        let r = respond(ErrorKind::Unavailable, "redis://secret@host down");
        assert_eq!(r.headers()[header::RETRY_AFTER], "1");
        assert_eq!(body(r).await, "Service Unavailable");
        let r = respond(ErrorKind::Unauthenticated, "not logged in");
        assert!(r.headers().get(header::RETRY_AFTER).is_none());
        assert_eq!(body(r).await, "not logged in");
    }
}
