use mod_api::{service, Error};
use serde::Serialize;

// No serde at all on the argument, `Deserialize` missing on the result: one
// error for each type.
pub struct Opaque;

#[derive(Serialize)]
pub struct Receipt;

#[service(crate = mod_api)]
pub trait Vault {
    async fn store(&self, value: Opaque) -> Result<Receipt, Error>;
}

fn main() {}
