//! # mod-api: the unified API of modkit
//!
//! The traits and types of modkit's five building blocks — [registry],
//! [invocation](invoke), [cache], [session] and [queue] —
//! with the one [`Error`], the wire [`codec`], [`config`]uration, and (feature
//! `testkit`) the conformance suite every backend runs.
//!
//! This crate depends on no backend library and names no backend. Business
//! code uses it through the `modkit` facade; backend crates implement
//! [`Backend`], each with its own configuration [`Section`](config::Section)s
//! and [`Capabilities`]. How a third backend plugs in (and how a backend per
//! block would work): `docs/backends.md` in this crate.
//!
//! # Layers
//!
//! Backends implement the blocks plainly. Cross-cutting behaviour is written
//! once, in [`layer`], and wrapped around every block a backend opens at one
//! place ([`backend::OpenBlocks::open`]):
//!
//! ```text
//! ObserveLayer  DEBUG span per operation, WARN per failure (with the kind), metrics
//!  CheckLayer   names, max_value_bytes: refused before the backend sees the call
//!   the block   as the backend implements it
//! ```
//!
//! A layer of your own implements [`Layer`] for the handles it wraps and is
//! applied to one handle ([`layer`] has a worked example: a concurrency limit
//! on one cache).

#![warn(missing_docs)]

pub mod app_error;
pub mod backend;
pub mod cache;
pub mod capabilities;
pub mod codec;
pub mod config;
pub mod error;
pub mod flight;
mod generated;
pub mod invoke;
pub mod layer;
pub mod name;
pub mod queue;
pub mod registry;
pub mod session;
pub mod state;
#[cfg(feature = "testkit")]
pub mod testkit;

pub use app_error::AppError;
pub use async_trait::async_trait;
pub use backend::Backend;
pub use cache::{Cache, CacheExt, CachePolicy, Cas, NearCachePolicy};
pub use capabilities::Capabilities;
pub use codec::{Codec, DefaultCodec};
pub use config::Config;
pub use error::{Error, ErrorKind, Result};
pub use invoke::{
    Call, CallContext, Container, Dispatch, DispatchTable, Hosting, Loopback, MethodInfo, Service,
    ServiceExt, Transport,
};
pub use layer::Layer;
pub use mod_api_macros::service;
pub use queue::{
    BacklogPolicy, Consumer, Delivery, MessageId, Offered, Queue, QueueConfig, QueueExt,
};
pub use registry::{ConsumerInfo, Instance, Lease, Registry, RegistryExt, Snapshot, Status, Watch};
pub use session::{Session, SessionConfig, SessionId, SessionStore};

/// A boxed, sendable future: what `async_trait` methods return, and what
/// the seams written out by hand (layers, [`state::StateControl`]) return.
pub type BoxFuture<'a, T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send + 'a>>;

use serde::de::DeserializeOwned;
use serde::Serialize;

/// A value that may cross a process boundary: arguments and results of service
/// methods. Checked at compile time in every build, so a monolith build is always
/// a valid distributed build.
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot cross a modkit service boundary",
    label = "must implement serde's `Serialize` and `DeserializeOwned`, and be `Send + 'static`",
    note = "add `#[derive(serde::Serialize, serde::Deserialize)]` to the type"
)]
pub trait Wire: Serialize + DeserializeOwned + Send + 'static {}
// One error naming `Wire` (whose message lists what it needs) rather than one
// per unmet serde bound, each with a list of unrelated implementors.
#[diagnostic::do_not_recommend]
impl<T: Serialize + DeserializeOwned + Send + 'static> Wire for T {}

/// A value kept by a building block (cache entry, session data, queue message):
/// [`Wire`], plus `Clone + Sync` because the in-process backend hands out clones
/// instead of serializing.
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be stored by modkit",
    label = "must implement `Serialize + DeserializeOwned + Clone + Send + Sync + 'static`",
    note = "derive `Clone`, `serde::Serialize` and `serde::Deserialize` for it"
)]
pub trait Value: Wire + Clone + Sync {}
#[diagnostic::do_not_recommend]
impl<T: Wire + Clone + Sync> Value for T {}

/// The error type of a service method: it must absorb transport failures
/// (`From<modkit::Error>`) and cross the wire itself.
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be the error type of a modkit service method",
    label = "must implement `From<modkit::Error>` and `Serialize + DeserializeOwned`",
    note = "transport failures surface in the method's own error type: use `modkit::AppError<{Self}>` \
            (variants `App({Self})` and `Platform(modkit::Error)`), or, for your own type, add `impl From<modkit::Error> for {Self}`"
)]
pub trait ServiceError: From<Error> + Wire {}
impl<T: From<Error> + Wire> ServiceError for T {}

/// Items used by code that `#[service]` generates. Not a public API.
#[doc(hidden)]
pub mod __private {
    pub use crate::codec::{decode, encode};
    pub use async_trait::async_trait;
    pub use tracing;

    pub use crate::generated::*;
}
