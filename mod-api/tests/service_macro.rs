//! `#[service]`: the generated client, dispatcher and `Service` impl, through
//! `Loopback` (real encoding) and directly; compile-fail cases in `tests/ui/`.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use mod_api::{
    async_trait, service, AppError, Call, CallContext, Container, DispatchTable, Error, ErrorKind,
    Hosting, Loopback, MethodInfo, Service, ServiceExt, Transport,
};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Item {
    name: String,
    qty: u32,
}

/// The service's own error type: absorbs transport failures by kind.
#[derive(Debug, PartialEq, Serialize, Deserialize)]
pub enum CartError {
    OutOfStock(String),
    Transport(ErrorKind),
}

impl From<Error> for CartError {
    fn from(err: Error) -> Self {
        CartError::Transport(err.kind())
    }
}

/// A shopping cart.
#[service(crate = mod_api, name = "test.cart")]
pub trait Cart {
    /// Zero arguments, safe to retry.
    #[idempotent]
    async fn count(&self) -> Result<u32, CartError>;
    /// One argument.
    async fn add(&self, item: Item) -> Result<u32, CartError>;
    /// Several arguments, `Result` written as a path.
    async fn add_many(
        &self,
        name: String,
        qty: u32,
        tags: Vec<String>,
    ) -> std::result::Result<u32, CartError>;
    /// Fails with the service's error type.
    async fn take(&self, name: String) -> mod_api::Result<Item, CartError>;
    /// Panics.
    async fn explode(&self) -> Result<(), Error>;
}

#[derive(Default)]
struct MemCart {
    items: Mutex<Vec<Item>>,
    tags: AtomicU32,
}

#[async_trait]
impl Cart for MemCart {
    async fn count(&self) -> Result<u32, CartError> {
        Ok(self.items.lock().unwrap().iter().map(|i| i.qty).sum())
    }

    async fn add(&self, item: Item) -> Result<u32, CartError> {
        self.items.lock().unwrap().push(item);
        self.count().await
    }

    async fn add_many(&self, name: String, qty: u32, tags: Vec<String>) -> Result<u32, CartError> {
        self.tags.fetch_add(tags.len() as u32, Ordering::Relaxed);
        self.add(Item { name, qty }).await
    }

    async fn take(&self, name: String) -> Result<Item, CartError> {
        let mut items = self.items.lock().unwrap();
        match items.iter().position(|i| i.name == name) {
            Some(at) => Ok(items.remove(at)),
            None => Err(CartError::OutOfStock(name)),
        }
    }

    async fn explode(&self) -> Result<(), Error> {
        panic!("boom")
    }
}

/// A private service with the default name, modkit's own error type and a
/// default method body (kept; the client sends it as a remote call).
#[service(crate = mod_api)]
trait Ping {
    async fn ping(&self, n: u64) -> Result<u64, Error>;

    async fn ping_twice(&self, n: u64) -> Result<u64, Error> {
        let once = self.ping(n).await?;
        self.ping(once).await
    }
}

struct Pong;

#[async_trait]
impl Ping for Pong {
    async fn ping(&self, n: u64) -> Result<u64, Error> {
        Ok(n + 1)
    }
}

fn apple(qty: u32) -> Item {
    Item {
        name: "apple".into(),
        qty,
    }
}

/// Every method of `Cart`, the same way whatever `cart` is.
async fn exercise(cart: &dyn Cart) {
    assert_eq!(cart.count().await, Ok(0));
    assert_eq!(cart.add(apple(2)).await, Ok(2));
    let tags = vec!["red".to_string(), "ripe".to_string()];
    assert_eq!(cart.add_many("pear".into(), 3, tags).await, Ok(5));
    assert_eq!(cart.take("apple".into()).await, Ok(apple(2)));
    assert_eq!(
        cart.take("apple".into()).await,
        Err(CartError::OutOfStock("apple".into()))
    );
    assert_eq!(cart.count().await, Ok(3));
}

#[tokio::test]
async fn direct_calls() {
    let cart = MemCart::default();
    exercise(&cart).await;
    assert_eq!(cart.tags.load(Ordering::Relaxed), 2);
}

#[tokio::test]
async fn loopback_calls_encode_and_decode() {
    let loopback = Loopback::new();
    loopback.serve::<dyn Cart>(Arc::new(MemCart::default()));
    loopback.serve::<dyn Ping>(Arc::new(Pong));
    let cart = loopback.client::<dyn Cart>();
    exercise(&*cart).await;
    let ping = loopback.client::<dyn Ping>();
    assert_eq!(ping.ping(41).await.unwrap(), 42);
    assert_eq!(ping.ping_twice(40).await.unwrap(), 42);

    // The client is a plain type too.
    let client = CartClient::new(Arc::new(loopback.clone()));
    assert_eq!(client.count().await, Ok(3));
}

#[tokio::test]
async fn transport_errors_become_the_method_error() {
    let nobody = Loopback::new().client::<dyn Cart>();
    assert_eq!(
        nobody.count().await,
        Err(CartError::Transport(ErrorKind::NotFound))
    );
}

#[test]
fn service_metadata() {
    assert_eq!(<dyn Cart as Service>::NAME, "test.cart");
    assert_eq!(<dyn Ping as Service>::NAME, "Ping");
    let info = |name, idempotent| MethodInfo { name, idempotent };
    assert_eq!(
        <dyn Cart as Service>::METHODS,
        &[
            info("count", true),
            info("add", false),
            info("add_many", false),
            info("take", false),
            info("explode", false),
        ]
    );
}

#[tokio::test]
async fn dispatcher_rejects_unknown_methods_and_garbage() {
    let dispatcher = <dyn Cart as Service>::dispatcher(Arc::new(MemCart::default()));
    assert_eq!(dispatcher.service(), "test.cart");

    let err = dispatcher.dispatch("nope", &[]).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound);
    assert!(err.message().contains("nope"), "{err}");

    let err = dispatcher
        .dispatch("add", &[0xff, 0xff, 0xff])
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Codec);
    // A zero-argument method still refuses trailing bytes.
    let err = dispatcher.dispatch("count", &[1]).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Codec);

    // A good payload gives the encoded `Result<R, E>`.
    let payload = mod_api::codec::encode(&("kiwi".to_string(),)).unwrap();
    let reply = dispatcher.dispatch("take", &payload).await.unwrap();
    let reply: Result<Item, CartError> = mod_api::codec::decode(&reply).unwrap();
    assert_eq!(reply, Err(CartError::OutOfStock("kiwi".into())));
}

#[tokio::test]
async fn a_panic_fails_one_call_only() {
    let loopback = Loopback::new();
    loopback.serve::<dyn Cart>(Arc::new(MemCart::default()));
    let cart = loopback.client::<dyn Cart>();
    let err = cart.explode().await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Panicked);
    assert_eq!(cart.add(apple(1)).await, Ok(1));
}

#[tokio::test]
async fn container_returns_the_provided_object() {
    let container = Container::new();
    let cart = Arc::new(MemCart::default());
    container.provide::<dyn Cart>(cart.clone()).await.unwrap();
    let got = container.get::<dyn Cart>().unwrap();
    assert!(Arc::ptr_eq(&got, &(cart.clone() as Arc<dyn Cart>)));
    assert!(container.dispatcher("test.cart").is_some());
    got.add(apple(4)).await.unwrap();
    assert_eq!(cart.count().await, Ok(4));
}

/// A service whose error type is the provided `AppError`, here around a
/// foreign type (`String` cannot get `From<modkit::Error>` in this crate).
#[service(crate = mod_api)]
pub trait Stock {
    async fn reserve(&self, sku: String) -> Result<u32, AppError<String>>;
}

struct OneLeft;

#[async_trait]
impl Stock for OneLeft {
    async fn reserve(&self, sku: String) -> Result<u32, AppError<String>> {
        match sku.as_str() {
            "tea" => Ok(1),
            _ => Err(AppError::App(format!("{sku} is sold out"))),
        }
    }
}

#[tokio::test]
async fn app_error_carries_business_and_platform_errors() {
    let loopback = Loopback::new();
    loopback.serve::<dyn Stock>(Arc::new(OneLeft));
    let stock = loopback.client::<dyn Stock>();
    assert_eq!(stock.reserve("tea".into()).await.unwrap(), 1);
    let err = stock.reserve("mug".into()).await.unwrap_err();
    assert_eq!(err.app().map(String::as_str), Some("mug is sold out"));
    assert_eq!(err.to_string(), "mug is sold out");

    let nobody = Loopback::new().client::<dyn Stock>();
    let err = nobody.reserve("tea".into()).await.unwrap_err();
    assert_eq!(err.kind(), Some(ErrorKind::NotFound));
    assert!(err.app().is_none());
}

/// A hosting that hosts only `test.cart`.
struct HostsCart;

#[async_trait]
impl Hosting for HostsCart {
    fn hosts(&self, service: &str) -> bool {
        service == "test.cart"
    }

    async fn serve(&self, _: &'static str, _: &DispatchTable) -> Result<(), Error> {
        Ok(())
    }

    fn transport(&self, _: &'static str) -> Result<Arc<dyn mod_api::Transport>, Error> {
        Ok(Arc::new(Loopback::new()))
    }
}

#[test]
fn hosts_asks_the_hosting_by_trait() {
    let container = Container::with_hosting(Arc::new(HostsCart));
    assert!(container.hosts::<dyn Cart>());
    assert!(!container.hosts::<dyn Ping>());
    // Without a hosting, everything provided runs here.
    assert!(Container::new().hosts::<dyn Ping>());
}

/// A service that takes its time.
#[service(crate = mod_api, name = "test.clock")]
pub trait Clock {
    /// Sleeps `ms`, then counts one finished nap; returns the count.
    async fn nap(&self, ms: u64) -> Result<u32, Error>;
}

#[derive(Default)]
struct Napper(AtomicU32);

#[async_trait]
impl Clock for Napper {
    async fn nap(&self, ms: u64) -> Result<u32, Error> {
        tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
        Ok(self.0.fetch_add(1, Ordering::SeqCst) + 1)
    }
}

/// A transport that records each call's deadline and answers `Ok(0)`.
#[derive(Default)]
struct Recorder(Mutex<Vec<Option<std::time::Duration>>>);

#[async_trait]
impl Transport for Recorder {
    async fn call(&self, call: Call) -> Result<Vec<u8>, Error> {
        self.0.lock().unwrap().push(call.context.timeout());
        mod_api::codec::encode(&Ok::<u32, Error>(0))
    }
}

#[tokio::test]
async fn a_client_sends_its_context_with_each_call() {
    let ms = std::time::Duration::from_millis;
    let recorder = Arc::new(Recorder::default());
    let plain = <dyn Clock as Service>::client(recorder.clone());
    plain.nap(1).await.unwrap();
    plain.with_timeout(ms(250)).nap(1).await.unwrap();
    plain
        .with_timeout(ms(250))
        .with_context(CallContext::new())
        .nap(1)
        .await
        .unwrap();
    // The generated client's own methods do the same.
    let typed = ClockClient::new(recorder.clone()).with_timeout(ms(40));
    typed.nap(1).await.unwrap();
    typed.with_timeout(ms(41)).nap(1).await.unwrap();
    assert_eq!(
        *recorder.0.lock().unwrap(),
        [None, Some(ms(250)), None, Some(ms(40)), Some(ms(41))]
    );
}

#[tokio::test]
async fn a_local_object_and_the_loopback_hold_a_per_call_deadline() {
    let ms = std::time::Duration::from_millis;
    let napper = Arc::new(Napper::default());
    let loopback = Loopback::new();
    loopback.serve::<dyn Clock>(napper.clone());
    let local: Arc<dyn Clock> = napper.clone();
    for handle in [local, loopback.client::<dyn Clock>()] {
        let err = handle.with_timeout(ms(20)).nap(400).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Timeout, "{err}");
        assert_eq!(err.context_value("service"), Some("test.clock"), "{err}");
    }
    tokio::time::sleep(ms(600)).await;
    assert_eq!(
        napper.0.load(Ordering::SeqCst),
        0,
        "a call went on past its deadline"
    );
    // A longer deadline set last replaces the short one.
    let local: Arc<dyn Clock> = napper.clone();
    let relaxed = local.with_timeout(ms(20)).with_timeout(ms(5_000));
    assert_eq!(relaxed.nap(50).await.unwrap(), 1);
    assert_eq!(local.nap(50).await.unwrap(), 2, "no deadline by default");
}

#[test]
fn ui() {
    trybuild::TestCases::new().compile_fail("tests/ui/*.rs");
}
