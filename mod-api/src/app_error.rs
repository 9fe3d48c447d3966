//! [`AppError`]: a ready-made service error type, so a service needs no
//! hand-written error enum with a platform variant.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::error::{Error, ErrorKind};

/// The error type of a service method: the application's own error `E`, or a
/// platform failure (no instance, deadline, lost connection, codec, ...).
///
/// It implements `From<modkit::Error>`, `Serialize` and `Deserialize` (for a
/// serializable `E`), so `#[service]` accepts `Result<T, AppError<E>>` for any
/// serializable `E` — including a type from another crate such as `String`,
/// for which `From<modkit::Error>` could not be written (orphan rule). `?` on a
/// modkit call converts into the `Platform` variant.
///
/// ```
/// use mod_api::{async_trait, service, AppError, Loopback};
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Debug, PartialEq, Serialize, Deserialize)]
/// pub enum VaultError {
///     Locked,
/// }
///
/// #[service(crate = mod_api)]
/// pub trait Vault {
///     async fn open(&self, code: u32) -> Result<String, AppError<VaultError>>;
/// }
///
/// struct Safe;
///
/// #[async_trait]
/// impl Vault for Safe {
///     async fn open(&self, code: u32) -> Result<String, AppError<VaultError>> {
///         match code {
///             1234 => Ok("gold".into()),
///             _ => Err(AppError::App(VaultError::Locked)),
///         }
///     }
/// }
///
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// let loopback = Loopback::new();
/// loopback.serve::<dyn Vault>(std::sync::Arc::new(Safe));
/// let vault = loopback.client::<dyn Vault>();
/// assert_eq!(vault.open(1234).await.unwrap(), "gold");
/// assert_eq!(vault.open(1).await.unwrap_err().app(), Some(&VaultError::Locked));
/// # });
/// ```
#[derive(Debug, Serialize, Deserialize)]
pub enum AppError<E> {
    /// The method's own failure.
    App(E),
    /// modkit failed: transport, deadline, codec, a panic in the method, ...
    Platform(Error),
}

impl<E> AppError<E> {
    /// The application's error, if this is one.
    pub fn app(&self) -> Option<&E> {
        match self {
            AppError::App(e) => Some(e),
            AppError::Platform(_) => None,
        }
    }

    /// The platform error, if this is one.
    pub fn platform(&self) -> Option<&Error> {
        match self {
            AppError::App(_) => None,
            AppError::Platform(e) => Some(e),
        }
    }

    /// The application's error as `Ok`, a platform error as `Err`: lets `?`
    /// pass platform failures on while the caller matches its own.
    pub fn into_app(self) -> Result<E, Error> {
        match self {
            AppError::App(e) => Ok(e),
            AppError::Platform(e) => Err(e),
        }
    }

    /// The platform error's kind; `None` for an application error.
    pub fn kind(&self) -> Option<ErrorKind> {
        self.platform().map(Error::kind)
    }

    /// Whether trying again may succeed: a retryable platform error (an
    /// application error is not retryable).
    pub fn is_retryable(&self) -> bool {
        self.platform().is_some_and(Error::is_retryable)
    }
}

impl<E> From<Error> for AppError<E> {
    fn from(err: Error) -> Self {
        AppError::Platform(err)
    }
}

impl<E: fmt::Display> fmt::Display for AppError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AppError::App(e) => e.fmt(f),
            AppError::Platform(e) => e.fmt(f),
        }
    }
}

// `Display + Debug` rather than `Error`, so that `AppError<String>` is an
// error too (`?` into `Box<dyn Error>`); the application error's own source
// chain is then not reachable, its `Display` is.
impl<E: fmt::Debug + fmt::Display> std::error::Error for AppError<E> {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            AppError::App(_) => None,
            AppError::Platform(e) => std::error::Error::source(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn platform_and_app_errors_round_trip_the_codec() {
        let app: AppError<String> = AppError::App("sold out".into());
        let bytes = crate::codec::encode(&app).unwrap();
        let back: AppError<String> = crate::codec::decode(&bytes).unwrap();
        assert_eq!(back.app().map(String::as_str), Some("sold out"));
        assert_eq!(back.to_string(), "sold out");
        assert!(!back.is_retryable());

        let platform: AppError<String> = Error::timeout("slow").into();
        let bytes = crate::codec::encode(&platform).unwrap();
        let back: AppError<String> = crate::codec::decode(&bytes).unwrap();
        assert_eq!(back.kind(), Some(ErrorKind::Timeout));
        assert!(back.is_retryable());
        assert!(back.app().is_none());
        assert_eq!(back.into_app().unwrap_err().message(), "slow");
    }
}
