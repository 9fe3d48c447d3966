#![doc = include_str!("../README.md")]
#![warn(missing_docs)]

#[cfg(not(any(feature = "monolith", feature = "distribute")))]
compile_error!(
    "modkit needs a deployment package: enable the `monolith` (default) or `distribute` feature"
);

use std::sync::Arc;

// What business code uses, documented on this crate's front page.
pub use mod_api::{
    async_trait, config, service, AppError, Backend, BacklogPolicy, Cache, CacheExt, CachePolicy,
    CallContext, Capabilities, Cas, Config, Consumer, ConsumerInfo, Delivery, Error, ErrorKind,
    Instance, Lease, Loopback, MessageId, NearCachePolicy, Offered, Queue, QueueConfig, QueueExt,
    Registry, RegistryExt, Result, Service, ServiceError, ServiceExt, Session, SessionConfig,
    SessionId, SessionStore, Snapshot, Status, Value, Watch, Wire,
};
// The rest (codec, the seams between the container and a transport, the
// testkit) is plumbing for backends and generated code: reachable under the
// same paths, listed as one re-export rather than inlined.
#[doc(no_inline)]
pub use mod_api::*;

/// The monolith package's backend (feature `monolith`): operators' and
/// tests' tools; business code never names it.
#[cfg(feature = "monolith")]
#[doc(no_inline)]
pub use mod_monolith as monolith;

/// The distributed package's backend (feature `distribute`): operators' and
/// tests' tools (the `RedisServer` launcher); business code never names it.
#[cfg(feature = "distribute")]
#[doc(no_inline)]
pub use mod_distribute as distribute;

/// The resilience layer (feature `resilience`): the Redis HA controller
/// group and its stable-endpoint proxy, to embed in an application node
/// (the `modkit-ha` binary runs them standalone).
#[cfg(feature = "resilience")]
#[doc(no_inline)]
pub use mod_resilience as resilience;

mod kind;
#[cfg(feature = "prometheus")]
pub mod observe;
#[cfg(feature = "axum")]
pub mod web;

pub use kind::BackendKind;

/// What business code imports: `use modkit::prelude::*;`.
pub mod prelude {
    pub use crate::App;
    pub use mod_api::{
        async_trait, service, AppError, Backend, BacklogPolicy, Cache, CacheExt, CachePolicy, Cas,
        Config, Consumer, Delivery, Error, ErrorKind, Instance, MessageId, Offered, Queue,
        QueueConfig, QueueExt, Registry, RegistryExt, Result, Service, ServiceExt, Session,
        SessionConfig, SessionId, SessionStore, Status,
    };
}

/// A modkit runtime: the backend chosen by features and configuration.
///
/// Business code builds one at start-up, provides its services, and reaches every
/// building block through it, without naming a backend type.
///
/// ```
/// use std::time::Duration;
/// use modkit::prelude::*;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> modkit::Result<()> {
/// let app = App::start(Config::default()).await?;
/// let prices = app.cache::<u64>("prices", CachePolicy::new().ttl(Duration::from_secs(60)))?;
/// prices.set("tea", 350).await?;
/// assert_eq!(prices.get("tea").await?, Some(350));
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct App {
    backend: AppBackend,
    /// The metrics server (`metrics.listen`), stopped with the last clone.
    #[cfg(feature = "prometheus")]
    observer: Option<Arc<observe::Observer>>,
}

#[derive(Clone)]
enum AppBackend {
    #[cfg(feature = "monolith")]
    Monolith(mod_monolith::Monolith),
    #[cfg(feature = "distribute")]
    Distribute(mod_distribute::Distributed),
}

impl std::fmt::Debug for App {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("App")
            .field("kind", &self.kind())
            .field("node_id", &self.node_id())
            .finish()
    }
}

/// Calls `$body` with `$b` bound to the active backend.
macro_rules! with_backend {
    ($self:expr, $b:ident => $body:expr) => {
        match &$self.backend {
            #[cfg(feature = "monolith")]
            AppBackend::Monolith($b) => $body,
            #[cfg(feature = "distribute")]
            AppBackend::Distribute($b) => $body,
        }
    };
}

impl App {
    /// Starts the package that `config.mode` names; unset, the monolith when it
    /// is compiled in, else the distributed package ([`BackendKind::of`]).
    ///
    /// Fails with [`ErrorKind::Config`] when that package is not compiled in,
    /// or when the configuration has a section no compiled-in package reads
    /// (a misspelt `[section]`; the error lists the known ones).
    ///
    /// With `metrics.listen` set (`MODKIT_METRICS_LISTEN`) and the `prometheus`
    /// feature, it first installs the Prometheus recorder and turns metrics on,
    /// then serves `/metrics`, `/status` and `/status.json` there (see
    /// `modkit::observe`); an address it cannot bind fails the start
    /// ([`ErrorKind::Unavailable`], or [`ErrorKind::Config`] when malformed).
    /// Without the feature the setting is ignored, with a WARN.
    pub async fn start(config: Config) -> Result<App> {
        let kind = BackendKind::of(&config)?;
        config.sections.check_known(kind::known_sections())?;
        // Before the backend opens anything: blocks opened earlier record nothing.
        #[cfg(feature = "prometheus")]
        let metrics = match &config.metrics.listen {
            Some(listen) => Some(observe::bind(listen).await?),
            None => None,
        };
        #[cfg(not(feature = "prometheus"))]
        if let Some(listen) = &config.metrics.listen {
            tracing::warn!(listen, "metrics.listen is set but modkit was built without the `prometheus` feature: no metrics are served");
        }
        #[allow(unused_mut)]
        let mut app = match kind {
            BackendKind::Monolith => Self::start_monolith(config)?,
            BackendKind::Distribute => Self::start_distribute(config).await?,
        };
        #[cfg(feature = "prometheus")]
        if let Some((listener, addr)) = metrics {
            // The server's own App holds no observer: no cycle keeps it alive.
            let served = app.clone();
            app.observer = Some(Arc::new(observe::Observer::start(served, listener, addr)));
        }
        Ok(app)
    }

    fn with_backend(backend: AppBackend) -> App {
        App {
            backend,
            #[cfg(feature = "prometheus")]
            observer: None,
        }
    }

    /// The address `/metrics` and `/status` are served on (`metrics.listen`,
    /// with its port when that was 0); `None` when not serving.
    #[cfg(feature = "prometheus")]
    pub fn metrics_address(&self) -> Option<std::net::SocketAddr> {
        self.observer.as_ref().map(|o| o.addr())
    }

    /// The distributed backend, when it is the one running.
    #[cfg(all(feature = "prometheus", feature = "distribute"))]
    pub(crate) fn distributed(&self) -> Option<&mod_distribute::Distributed> {
        match &self.backend {
            AppBackend::Distribute(d) => Some(d),
            #[allow(unreachable_patterns)]
            _ => None,
        }
    }

    /// Starts from [`Config::load`]: the file in `MODKIT_CONFIG` if set, then `MODKIT_*` variables.
    pub async fn from_env() -> Result<App> {
        Self::start(Config::load(None)?).await
    }

    #[cfg(feature = "monolith")]
    fn start_monolith(config: Config) -> Result<App> {
        let monolith = mod_monolith::Monolith::new(config)?;
        Ok(Self::with_backend(AppBackend::Monolith(monolith)))
    }

    #[cfg(not(feature = "monolith"))]
    fn start_monolith(_config: Config) -> Result<App> {
        Err(Error::config(
            "mode \"monolith\" but modkit was built without the `monolith` feature",
        ))
    }

    #[cfg(feature = "distribute")]
    async fn start_distribute(config: Config) -> Result<App> {
        let distributed = mod_distribute::Distributed::start(config).await?;
        Ok(Self::with_backend(AppBackend::Distribute(distributed)))
    }

    #[cfg(not(feature = "distribute"))]
    async fn start_distribute(_config: Config) -> Result<App> {
        Err(Error::config(
            "mode \"distribute\" but modkit was built without the `distribute` feature",
        ))
    }

    /// Stops serving: deregisters hosted services and lets in-flight calls finish
    /// (up to `grace`); stateful services write their final checkpoints (the
    /// distributed package's owners hand their services to a standby).
    pub async fn shutdown(&self, grace: std::time::Duration) {
        match &self.backend {
            #[cfg(feature = "monolith")]
            AppBackend::Monolith(m) => {
                let _ = grace;
                m.shutdown().await;
            }
            #[cfg(feature = "distribute")]
            AppBackend::Distribute(d) => d.shutdown(grace).await,
        }
    }

    /// Serves until this process gets SIGINT or SIGTERM (elsewhere than Unix:
    /// Ctrl-C), then shuts down gracefully: deregisters the services it
    /// hosts and lets in-flight calls finish, for up to [`SHUTDOWN_GRACE`]
    /// (5 s; [`App::shutdown`] for another grace period).
    ///
    /// The serving role of a distributed deployment is three lines (the
    /// deployer, `modkit::distribute::deploy`, stops its processes with
    /// SIGTERM); in the monolith it simply waits for the signal.
    ///
    /// ```no_run
    /// # use std::sync::Arc;
    /// # use modkit::prelude::*;
    /// # #[service]
    /// # pub trait Notes { async fn count(&self) -> Result<u64, Error>; }
    /// # struct NoNotes;
    /// # #[async_trait]
    /// # impl Notes for NoNotes { async fn count(&self) -> Result<u64, Error> { Ok(0) } }
    /// # #[tokio::main]
    /// # async fn main() -> modkit::Result<()> {
    /// let app = App::from_env().await?;
    /// app.provide::<dyn Notes>(Arc::new(NoNotes)).await?;
    /// app.serve_until_signal().await
    /// # }
    /// ```
    ///
    /// Fails only when the signal handlers cannot be installed.
    pub async fn serve_until_signal(&self) -> Result<()> {
        let signal = shutdown_signal().await?;
        tracing::info!(node = %self.node_id(), signal, "shutting down on signal");
        self.shutdown(SHUTDOWN_GRACE).await;
        Ok(())
    }

    /// Provides the implementation of service `S` (see [`Container::provide`]).
    pub async fn provide<S: Service + ?Sized>(&self, service: Arc<S>) -> Result<()> {
        self.container().provide(service).await
    }

    /// Provides service `S` whose implementation owns in-memory state: the
    /// same object as the service (`service`) and as [`Stateful`](state::Stateful)
    /// (`state`). See [`state`] for what each package guarantees.
    ///
    /// The monolith restores the last checkpoint from `data_dir` (required)
    /// and writes one every `config.period` and at [`shutdown`](Self::shutdown).
    /// The distributed package makes this process the owner (restored from
    /// Redis) or a standby that takes over when the owner moves or dies.
    ///
    /// ```
    /// # use std::sync::{Arc, Mutex};
    /// use modkit::prelude::*;
    /// use modkit::state::{StateConfig, Stateful};
    ///
    /// #[service(name = "demo.Counter")]
    /// pub trait Counter {
    ///     async fn add(&self, n: u64) -> Result<u64, Error>;
    /// }
    ///
    /// #[derive(Default)]
    /// struct Total(Mutex<u64>);
    ///
    /// #[async_trait]
    /// impl Counter for Total {
    ///     async fn add(&self, n: u64) -> Result<u64, Error> {
    ///         let mut total = self.0.lock().unwrap();
    ///         *total += n;
    ///         Ok(*total)
    ///     }
    /// }
    ///
    /// impl Stateful for Total {
    ///     type State = u64;
    ///     async fn checkpoint(&self) -> modkit::Result<u64> { Ok(*self.0.lock().unwrap()) }
    ///     async fn restore(&self, total: u64) -> modkit::Result<()> {
    ///         *self.0.lock().unwrap() = total;
    ///         Ok(())
    ///     }
    /// }
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> modkit::Result<()> {
    /// # let dir = std::env::temp_dir().join(format!("modkit-doc-state-{}", std::process::id()));
    /// let mut config = Config::default();
    /// config.data_dir = Some(dir.clone());
    /// let app = App::start(config.clone()).await?;
    /// let total = Arc::new(Total::default());
    /// app.provide_stateful::<dyn Counter, _>(total.clone(), total, StateConfig::new()).await?;
    /// assert_eq!(app.get::<dyn Counter>()?.add(2).await?, 2);
    /// app.shutdown(std::time::Duration::from_secs(1)).await; // final checkpoint
    ///
    /// // A warm restart (after an upgrade, say): the state is back.
    /// let app = App::start(config).await?;
    /// let total = Arc::new(Total::default());
    /// app.provide_stateful::<dyn Counter, _>(total.clone(), total, StateConfig::new()).await?;
    /// assert_eq!(app.get::<dyn Counter>()?.add(1).await?, 3);
    /// # std::fs::remove_dir_all(dir).ok();
    /// # Ok(())
    /// # }
    /// ```
    pub async fn provide_stateful<S: Service + ?Sized, T: state::Stateful>(
        &self,
        service: Arc<S>,
        state: Arc<T>,
        config: state::StateConfig,
    ) -> Result<state::StateHandle> {
        with_backend!(self, b => b.provide_stateful(service, state, config).await)
    }

    /// Whether this process hosts service `S` (see [`Container::hosts`]): in
    /// the monolith always; in the distributed package when the host list
    /// (`MODKIT_HOST`, `[invoke] host`) names it. Use it to run work that
    /// belongs with a service, such as its queue worker, only where it is hosted.
    ///
    /// ```
    /// use modkit::prelude::*;
    ///
    /// #[service(name = "todo.Notes")]
    /// pub trait Notes {
    ///     async fn count(&self) -> Result<u64, Error>;
    /// }
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> modkit::Result<()> {
    /// let app = App::start(Config::default()).await?;
    /// if app.hosts::<dyn Notes>() {
    ///     // start the notes worker here
    /// }
    /// # assert!(app.hosts::<dyn Notes>());
    /// # Ok(())
    /// # }
    /// ```
    pub fn hosts<S: Service + ?Sized>(&self) -> bool {
        self.container().hosts::<S>()
    }

    /// Gets service `S`: the object itself when hosted here, else a client (see [`Container::get`]).
    ///
    /// One call can have its own deadline: `app.get::<dyn S>()?.with_timeout(d).method(..)`
    /// ([`ServiceExt`], in the prelude). Past it the call fails with
    /// [`ErrorKind::Timeout`] in both packages: a remote call's deadline travels
    /// to the server, which drops the call; a local call's future is dropped.
    /// Without one, a remote call has `invoke.timeout` and a local call none.
    pub fn get<S: Service + ?Sized>(&self) -> Result<Arc<S>> {
        self.container().get::<S>()
    }

    /// Call once every service is provided: checks that the host list
    /// (`invoke.host`, `MODKIT_HOST`) names only services this process
    /// provides, and logs (INFO) what this node hosts and what it calls.
    ///
    /// A name never provided (`Notes` for `todo.Notes`) is an
    /// [`ErrorKind::Config`] error listing the provided names; without this
    /// check such a process would silently host nothing. In the monolith
    /// every provided service is here and the check passes.
    ///
    /// ```
    /// # use std::sync::Arc;
    /// # use modkit::prelude::*;
    /// # #[service]
    /// # pub trait Notes { async fn count(&self) -> Result<u64, Error>; }
    /// # struct NoNotes;
    /// # #[async_trait]
    /// # impl Notes for NoNotes { async fn count(&self) -> Result<u64, Error> { Ok(0) } }
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> modkit::Result<()> {
    /// let app = App::start(Config::default()).await?;
    /// app.provide::<dyn Notes>(Arc::new(NoNotes)).await?;
    /// app.ready()?; // every service provided: check the hosting configuration
    /// # Ok(())
    /// # }
    /// ```
    pub fn ready(&self) -> Result<()> {
        self.container().check_hosting()
    }

    /// The package running.
    pub fn kind(&self) -> BackendKind {
        match &self.backend {
            #[cfg(feature = "monolith")]
            AppBackend::Monolith(_) => BackendKind::Monolith,
            #[cfg(feature = "distribute")]
            AppBackend::Distribute(_) => BackendKind::Distribute,
        }
    }
}

/// How long [`App::serve_until_signal`] lets in-flight calls finish after
/// the signal: 5 s.
pub const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(5);

/// Waits for SIGINT or SIGTERM (elsewhere than Unix: Ctrl-C); the signal's name.
async fn shutdown_signal() -> Result<&'static str> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        // (No `tokio::select!`: the facade does without tokio's macros.)
        let signal = std::future::poll_fn(|cx| {
            if term.poll_recv(cx).is_ready() {
                return std::task::Poll::Ready("SIGTERM");
            }
            int.poll_recv(cx).map(|_| "SIGINT")
        });
        Ok(signal.await)
    }
    #[cfg(not(unix))]
    {
        tokio::signal::ctrl_c().await?;
        Ok("Ctrl-C")
    }
}

impl Backend for App {
    fn name(&self) -> &'static str {
        self.kind().name()
    }

    fn capabilities(&self) -> Capabilities {
        with_backend!(self, b => b.capabilities())
    }

    fn node_id(&self) -> &str {
        with_backend!(self, b => b.node_id())
    }

    fn registry(&self) -> Arc<dyn Registry> {
        with_backend!(self, b => b.registry())
    }

    fn container(&self) -> &Container {
        with_backend!(self, b => b.container())
    }

    fn cache<V: Value>(&self, name: &str, policy: CachePolicy) -> Result<Arc<dyn Cache<V>>> {
        with_backend!(self, b => b.cache(name, policy))
    }

    fn sessions<D: Value>(
        &self,
        name: &str,
        config: SessionConfig,
    ) -> Result<Arc<dyn SessionStore<D>>> {
        with_backend!(self, b => b.sessions(name, config))
    }

    fn queue<M: Value>(&self, name: &str, config: QueueConfig) -> Result<Arc<dyn Queue<M>>> {
        with_backend!(self, b => b.queue(name, config))
    }

    async fn provide_stateful<S: Service + ?Sized, T: state::Stateful>(
        &self,
        service: Arc<S>,
        state: Arc<T>,
        config: state::StateConfig,
    ) -> Result<state::StateHandle> {
        App::provide_stateful(self, service, state, config).await
    }
}
