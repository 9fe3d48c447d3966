use mod_api::service;
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize)]
pub enum VaultError {
    Locked,
}

#[service(crate = mod_api)]
pub trait Vault {
    async fn open(&self, code: u32) -> Result<String, VaultError>;
}

fn main() {}
