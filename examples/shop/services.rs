//! The shop's service traits and the types that cross them.
//!
//! Everything here is plain business code: it names no backend, so the same
//! traits run in one process or spread over many.

use modkit::prelude::*;
use serde::{Deserialize, Serialize};

/// A product of the catalog.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Product {
    pub sku: String,
    pub name: String,
    /// Price in cents.
    pub price: u64,
}

/// What a login session carries.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Login {
    pub user: String,
    pub roles: Vec<String>,
}

/// Emitted by `Orders`, consumed by the billing worker.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OrderPlaced {
    pub order_id: String,
    pub user: String,
    pub sku: String,
    pub quantity: u32,
    pub unit_price: u64,
}

/// A bill for one order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Invoice {
    pub order_id: String,
    pub user: String,
    pub total: u64,
}

/// The shop's business failures. Service methods return
/// `AppError<ShopError>`, whose `Platform` variant carries modkit's failures
/// (a lost connection, a deadline), so this enum needs no such variant.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ShopError {
    UnknownProduct(String),
    BadCredentials,
    NotLoggedIn,
    InvalidQuantity,
}

impl std::fmt::Display for ShopError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ShopError::UnknownProduct(sku) => write!(f, "unknown product {sku}"),
            ShopError::BadCredentials => f.write_str("bad credentials"),
            ShopError::NotLoggedIn => f.write_str("not logged in"),
            ShopError::InvalidQuantity => f.write_str("quantity must be 1 to 99"),
        }
    }
}

/// The product catalog, read through a cache.
#[service(name = "shop.Catalog")]
pub trait Catalog {
    /// One product by SKU.
    #[idempotent]
    async fn product(&self, sku: String) -> Result<Product, AppError<ShopError>>;
    /// Every product, sorted by SKU.
    #[idempotent]
    async fn list(&self) -> Result<Vec<Product>, AppError<ShopError>>;
    /// How many times this instance loaded a product from the database.
    #[idempotent]
    async fn database_loads(&self) -> Result<u64, AppError<ShopError>>;
}

/// Logins, on sessions.
#[service(name = "shop.Auth")]
pub trait Auth {
    /// Checks the password and opens a session; returns its id.
    async fn login(&self, user: String, password: String) -> Result<String, AppError<ShopError>>;
    /// The user of a live session (refreshes its idle timeout).
    async fn whoami(&self, session: String) -> Result<Login, AppError<ShopError>>;
    /// Gives the session a new id (after a privilege change); the old id ends.
    async fn refresh(&self, session: String) -> Result<String, AppError<ShopError>>;
    /// Ends the session.
    async fn logout(&self, session: String) -> Result<bool, AppError<ShopError>>;
}

/// Order taking: checks the login and the product, then emits `OrderPlaced`.
#[service(name = "shop.Orders")]
pub trait Orders {
    /// Places an order; returns its id.
    async fn place(
        &self,
        session: String,
        sku: String,
        quantity: u32,
    ) -> Result<String, AppError<ShopError>>;
}

/// Invoices written by the billing worker.
#[service(name = "shop.Billing")]
pub trait Billing {
    /// The invoices of `user`, oldest first.
    #[idempotent]
    async fn invoices(&self, user: String) -> Result<Vec<Invoice>, AppError<ShopError>>;
}
