//! A small shop on all five building blocks: a `Catalog` with a product cache,
//! an `Auth` service with login sessions, an `Orders` service that emits
//! `OrderPlaced` messages, and a `Billing` worker that consumes them. Every
//! service is called through the container; the registry lists what runs.
//!
//! ```text
//! cargo run --example shop
//! ```
//!
//! It plays a fixed scenario and prints a transcript; ids that vary between runs
//! are masked, so two runs print the same text. `RUST_LOG=debug` shows the spans.
//!
//! On the distributed package (`--no-default-features --features distribute`)
//! it runs the processes of `deploy.toml` through the library's deployer
//! (`modkit::distribute::deploy`): this binary is the launcher, which plays
//! the scenario, and each process it starts is this binary again in a serving
//! role. Built with `--features distribute,prometheus`, the deployment's first
//! process serves `/metrics` and `/status`, and the scenario ends by checking
//! that process's per-method counters and latency histograms.

mod impls;
#[cfg(all(feature = "distribute", feature = "prometheus"))]
mod metrics;
#[cfg(all(feature = "distribute", feature = "prometheus"))]
mod scrape;
mod services;

use std::sync::Arc;
use std::time::{Duration, Instant};

#[cfg(feature = "distribute")]
use modkit::distribute::deploy;
use modkit::prelude::*;

use impls::*;
use services::*;

#[tokio::main]
async fn main() -> std::result::Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();

    #[allow(unused_mut)]
    let mut config = Config::load(None)?;
    // A process the deployer started: serve its services until it says stop.
    #[cfg(feature = "distribute")]
    if deploy::role().is_some() {
        return serve(config).await;
    }
    // The distributed package: launch the processes of the deployment file first.
    #[cfg(feature = "distribute")]
    let deployment = match modkit::BackendKind::of(&config) {
        Ok(modkit::BackendKind::Distribute) => Some(launch(&mut config)?),
        _ => None,
    };

    let app = App::start(config.clone()).await?;
    eprintln!("shop: {} package, node {}", app.kind(), app.node_id());
    provide_all(&app).await?;
    let worker = start_worker(&app)?;
    #[cfg(feature = "distribute")]
    if let Some((deployment, _)) = &deployment {
        let registry = app.registry();
        deployment
            .wait_ready(&*registry, Duration::from_secs(30))
            .await?;
    }

    #[allow(unused_mut)]
    let mut played = play(&app).await;
    #[cfg(all(feature = "distribute", feature = "prometheus"))]
    if let (Ok(()), Some((_, Some((node, addr))))) = (&played, &deployment) {
        played = metrics::check_metrics(node, addr).await.map_err(Into::into);
    }

    if let Some(worker) = worker {
        worker.abort();
    }
    app.shutdown(Duration::from_secs(2)).await;
    // Let this node's background tasks (registry, near cache) end before the
    // deployment's Redis goes away.
    drop(app);
    tokio::time::sleep(Duration::from_millis(50)).await;
    #[cfg(feature = "distribute")]
    if let Some((deployment, _)) = deployment {
        deployment.stop(Duration::from_secs(10)).await;
    }
    played
}

/// Starts the processes of the deployment file (`MODKIT_SHOP_DEPLOY`, else
/// `examples/shop/deploy.toml`) and its Redis; points `config` at that Redis,
/// hosting nothing. With feature `prometheus`, also the node and address of
/// the process that serves `/metrics`.
#[cfg(feature = "distribute")]
fn launch(config: &mut Config) -> Result<(deploy::Deployment, Option<(String, String)>)> {
    let path = std::env::var("MODKIT_SHOP_DEPLOY").unwrap_or_else(|_| {
        concat!(env!("CARGO_MANIFEST_DIR"), "/examples/shop/deploy.toml").into()
    });
    let file = deploy::DeploymentFile::load(&path)?;
    let launcher = deploy::Launcher::new(&file);
    #[cfg(feature = "prometheus")]
    let (launcher, metrics) = metrics::metrics_on_first(launcher, &file)?;
    #[cfg(not(feature = "prometheus"))]
    let metrics = None;
    let deployment = launcher.launch(config)?;
    for p in deployment.processes() {
        eprintln!(
            "shop: started process {} (pid {}) hosting {:?}",
            p.role.node,
            p.pid.unwrap_or_default(),
            p.role.services
        );
    }
    Ok((deployment, metrics))
}

/// Provides every service; the configuration decides which ones this process hosts.
async fn provide_all(app: &App) -> Result<()> {
    app.provide::<dyn Catalog>(Arc::new(CatalogService::new(app)?))
        .await?;
    app.provide::<dyn Auth>(Arc::new(AuthService::new(app)?))
        .await?;
    app.provide::<dyn Orders>(Arc::new(OrdersService::new(app)?))
        .await?;
    app.provide::<dyn Billing>(Arc::new(BillingService::new(app)?))
        .await?;
    // Everything is provided: a host list naming another service fails here.
    app.ready()
}

/// Runs the billing worker in the process that hosts `Billing`.
fn start_worker(app: &App) -> Result<Option<tokio::task::JoinHandle<Result<()>>>> {
    if !app.hosts::<dyn Billing>() {
        return Ok(None);
    }
    let billing = Arc::new(BillingService::new(app)?);
    Ok(Some(tokio::spawn(billing.run_worker(app.clone()))))
}

/// A process of a distributed deployment: serves its services until
/// SIGTERM (the deployer sends it) or SIGINT, then deregisters and drains.
#[cfg(feature = "distribute")]
async fn serve(config: Config) -> std::result::Result<(), Box<dyn std::error::Error>> {
    let app = App::start(config).await?;
    provide_all(&app).await?;
    let worker = start_worker(&app)?;
    app.serve_until_signal().await?;
    if let Some(worker) = worker {
        worker.abort();
    }
    Ok(())
}

/// The scenario: the same calls, and the same transcript, on every package.
async fn play(app: &App) -> std::result::Result<(), Box<dyn std::error::Error>> {
    println!("== modkit shop");
    let registry = app.registry();
    println!("-- registry");
    for service in registry.services().await? {
        let instances = registry.lookup(&service).await?;
        let up = instances.iter().filter(|i| i.status == Status::Up).count();
        eprintln!("shop: {service}: {up} instance(s) up");
        println!("   {service}: up");
    }

    let catalog = app.get::<dyn Catalog>()?;
    let auth = app.get::<dyn Auth>()?;
    let orders = app.get::<dyn Orders>()?;
    let billing = app.get::<dyn Billing>()?;

    println!("-- catalog");
    for p in catalog.list().await? {
        println!(
            "   {:<9} {:<20} {:>6.2}",
            p.sku,
            p.name,
            p.price as f64 / 100.0
        );
    }
    // Eight concurrent readers of one product: the cache loads it once at most.
    let readers: Vec<_> = (0..8)
        .map(|_| {
            let catalog = catalog.clone();
            tokio::spawn(async move { catalog.product("mug".into()).await })
        })
        .collect();
    let mut all = Vec::new();
    for reader in readers {
        all.push(reader.await?);
    }
    println!(
        "   8 concurrent reads of mug: {} ok; database loads so far: {}",
        all.iter().filter(|r| r.is_ok()).count(),
        catalog.database_loads().await?
    );
    println!(
        "   unknown sku: {}",
        show(catalog.product("tea".into()).await)
    );

    println!("-- auth");
    println!(
        "   grace, wrong password: {}",
        show(auth.login("grace".into(), "nope".into()).await)
    );
    let session = auth.login("ada".into(), "lovelace".into()).await?;
    println!(
        "   ada logs in: session {} ({} chars)",
        mask(&session),
        session.len()
    );
    let who = auth.whoami(session.clone()).await?;
    println!("   whoami: {} {:?}", who.user, who.roles);

    println!("-- orders");
    let mut placed = 0;
    for (sku, qty) in [("bean-1kg", 2), ("mug", 4), ("tea", 1), ("grinder", 0)] {
        match orders.place(session.clone(), sku.into(), qty).await {
            Ok(id) => {
                placed += 1;
                println!("   {qty} x {sku}: placed {}", mask(&id));
            }
            Err(e) => println!("   {qty} x {sku}: refused: {e}"),
        }
    }

    println!("-- billing");
    let deadline = Instant::now() + Duration::from_secs(10);
    let invoices = loop {
        let invoices = billing.invoices("ada".into()).await?;
        if invoices.len() >= placed || Instant::now() > deadline {
            break invoices;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let mut totals: Vec<u64> = invoices.iter().map(|i| i.total).collect();
    totals.sort_unstable(); // the worker may bill in either order on other packages
    for total in &totals {
        println!("   invoice for ada: {:.2}", *total as f64 / 100.0);
    }
    println!(
        "   billed {} of {placed} orders, total {:.2}",
        invoices.len(),
        totals.iter().sum::<u64>() as f64 / 100.0
    );

    println!("-- session lifecycle");
    let rotated = auth.refresh(session.clone()).await?;
    println!("   refresh: new id differs: {}", rotated != session);
    println!(
        "   old id: {}",
        show(auth.whoami(session.clone()).await.map(|l| l.user))
    );
    println!(
        "   new id: {}",
        show(auth.whoami(rotated.clone()).await.map(|l| l.user))
    );
    println!("   logout: {}", show(auth.logout(rotated.clone()).await));
    println!(
        "   after logout: {}",
        show(auth.whoami(rotated).await.map(|l| l.user))
    );

    println!("== done");
    Ok(())
}

/// Masks the varying part of an id so transcripts compare equal.
fn mask(id: &str) -> String {
    match id.strip_prefix("ord-") {
        Some(_) => "ord-<masked>".into(),
        None => "<masked>".into(),
    }
}

fn show<T: std::fmt::Debug, E: std::fmt::Display>(r: std::result::Result<T, E>) -> String {
    match r {
        Ok(v) => format!("ok {v:?}"),
        Err(e) => format!("error: {e}"),
    }
}
