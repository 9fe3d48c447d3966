//! The shop's implementations: each uses modkit's building blocks the way a
//! real service would, and names no backend type.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use modkit::prelude::*;

use crate::services::*;

/// The product "database" the catalog loads from (a real shop would query SQL).
const PRODUCTS: &[(&str, &str, u64)] = &[
    ("bean-1kg", "Coffee beans, 1 kg", 2_450),
    ("grinder", "Burr grinder", 8_900),
    ("mug", "Enamel mug", 1_200),
];

const USERS: &[(&str, &str, &[&str])] = &[
    ("ada", "lovelace", &["customer"]),
    ("grace", "hopper", &["customer", "admin"]),
];

/// Reads products through the `products` cache; counts database loads.
pub struct CatalogService {
    products: Arc<dyn Cache<Product>>,
    loads: Arc<AtomicU64>,
}

impl CatalogService {
    pub fn new(app: &App) -> Result<Self> {
        let policy = CachePolicy::new()
            .max_entries(10_000)
            .ttl(Duration::from_secs(300));
        Ok(CatalogService {
            products: app.cache("products", policy)?,
            loads: Arc::new(AtomicU64::new(0)),
        })
    }
}

#[async_trait]
impl Catalog for CatalogService {
    async fn product(&self, sku: String) -> Result<Product, AppError<ShopError>> {
        let loads = self.loads.clone();
        let key = sku.clone();
        let found = self
            .products
            .optionally_get_or_insert_with(&key, || async move {
                loads.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(5)).await; // a database round trip
                Ok(PRODUCTS
                    .iter()
                    .find(|(s, _, _)| *s == sku)
                    .map(|(s, name, price)| Product {
                        sku: s.to_string(),
                        name: name.to_string(),
                        price: *price,
                    }))
            })
            .await?;
        found.ok_or(AppError::App(ShopError::UnknownProduct(key)))
    }

    async fn list(&self) -> Result<Vec<Product>, AppError<ShopError>> {
        let mut all = Vec::new();
        for (sku, _, _) in PRODUCTS {
            all.push(self.product(sku.to_string()).await?);
        }
        Ok(all)
    }

    async fn database_loads(&self) -> Result<u64, AppError<ShopError>> {
        Ok(self.loads.load(Ordering::Relaxed))
    }
}

/// Logins on the `logins` session store.
pub struct AuthService {
    sessions: Arc<dyn SessionStore<Login>>,
}

impl AuthService {
    pub fn new(app: &App) -> Result<Self> {
        let config = SessionConfig {
            idle_timeout: Duration::from_secs(15 * 60),
            absolute_lifetime: Duration::from_secs(8 * 60 * 60),
            ..SessionConfig::default()
        };
        Ok(AuthService {
            sessions: app.sessions("logins", config)?,
        })
    }
}

fn session_id(text: &str) -> Result<SessionId, AppError<ShopError>> {
    SessionId::parse(text).map_err(|_| AppError::App(ShopError::NotLoggedIn))
}

#[async_trait]
impl Auth for AuthService {
    async fn login(&self, user: String, password: String) -> Result<String, AppError<ShopError>> {
        let Some((_, _, roles)) = USERS.iter().find(|(u, p, _)| *u == user && *p == password)
        else {
            return Err(AppError::App(ShopError::BadCredentials));
        };
        let roles = roles.iter().map(|r| r.to_string()).collect();
        let session = self
            .sessions
            .create(
                &user,
                Login {
                    user: user.clone(),
                    roles,
                },
            )
            .await?;
        Ok(session.id.to_string())
    }

    async fn whoami(&self, session: String) -> Result<Login, AppError<ShopError>> {
        let found = self.sessions.validate(&session_id(&session)?).await?;
        found
            .map(|s| s.data)
            .ok_or(AppError::App(ShopError::NotLoggedIn))
    }

    async fn refresh(&self, session: String) -> Result<String, AppError<ShopError>> {
        match self.sessions.rotate(&session_id(&session)?).await {
            Ok(rotated) => Ok(rotated.id.to_string()),
            Err(e) if e.kind() == ErrorKind::NotFound => Err(AppError::App(ShopError::NotLoggedIn)),
            Err(e) => Err(e.into()),
        }
    }

    async fn logout(&self, session: String) -> Result<bool, AppError<ShopError>> {
        Ok(self.sessions.destroy(&session_id(&session)?).await?)
    }
}

/// Takes orders: calls `Auth` and `Catalog` through the container, emits `OrderPlaced`.
pub struct OrdersService {
    app: App,
    placed: Arc<dyn Queue<OrderPlaced>>,
}

/// The queue between `Orders` and the billing worker.
pub fn orders_queue(app: &App) -> Result<Arc<dyn Queue<OrderPlaced>>> {
    let config = QueueConfig {
        capacity: 1_000,
        backlog: BacklogPolicy::Block {
            timeout: Duration::from_secs(2),
        },
        visibility_timeout: Duration::from_secs(10),
        max_deliveries: 3,
        ..QueueConfig::default()
    };
    app.queue("orders", config)
}

impl OrdersService {
    pub fn new(app: &App) -> Result<Self> {
        Ok(OrdersService {
            app: app.clone(),
            placed: orders_queue(app)?,
        })
    }
}

#[async_trait]
impl Orders for OrdersService {
    async fn place(
        &self,
        session: String,
        sku: String,
        quantity: u32,
    ) -> Result<String, AppError<ShopError>> {
        if !(1..=99).contains(&quantity) {
            return Err(AppError::App(ShopError::InvalidQuantity));
        }
        let login = self.app.get::<dyn Auth>()?.whoami(session).await?;
        let product = self.app.get::<dyn Catalog>()?.product(sku).await?;
        let order_id = format!("ord-{}", &SessionId::generate()?.as_str()[..10]);
        let event = OrderPlaced {
            order_id: order_id.clone(),
            user: login.user,
            sku: product.sku,
            quantity,
            unit_price: product.price,
        };
        self.placed.offer(event).await?;
        Ok(order_id)
    }
}

/// Serves the invoices the worker wrote to the `invoices` cache.
pub struct BillingService {
    invoices: Arc<dyn Cache<Vec<Invoice>>>,
}

impl BillingService {
    pub fn new(app: &App) -> Result<Self> {
        Ok(BillingService {
            invoices: app.cache(
                "invoices",
                CachePolicy::new().ttl(Duration::from_secs(86_400)),
            )?,
        })
    }

    /// The billing worker: bills every `OrderPlaced`, then acknowledges it.
    ///
    /// Workers on several nodes may append to one user's invoice list at once:
    /// `update` retries on a concurrent change instead of losing it.
    pub async fn run_worker(self: Arc<Self>, app: App) -> Result<()> {
        let queue = orders_queue(&app)?;
        let me = Consumer::new("billing", app.node_id());
        loop {
            let delivery = queue.take(&me).await?;
            let order = &delivery.message;
            let invoice = Invoice {
                order_id: order.order_id.clone(),
                user: order.user.clone(),
                total: order.unit_price * u64::from(order.quantity),
            };
            // Compare-and-set: a concurrent writer of the list loses nothing.
            self.invoices
                .update(&order.user, |list| {
                    let mut list = list.cloned().unwrap_or_default();
                    list.push(invoice.clone());
                    list
                })
                .await?;
            queue.ack_delivery(&delivery).await?;
            tracing::info!(order = %order.order_id, "billed");
        }
    }
}

#[async_trait]
impl Billing for BillingService {
    async fn invoices(&self, user: String) -> Result<Vec<Invoice>, AppError<ShopError>> {
        Ok(self.invoices.get(&user).await?.unwrap_or_default())
    }
}
