use mod_api::{service, Error};

#[service(crate = mod_api)]
pub trait Vault {
    async fn by_ref(&self, name: &str) -> Result<(), Error>;
    async fn opaque(&self, value: impl ToString) -> Result<(), Error>;
    async fn generic<T>(&self, value: T) -> Result<(), Error>;
    async fn no_result(&self) -> u32;
    async fn implicit_error(&self) -> mod_api::Result<u32>;
    const LIMIT: u32;
}

fn main() {}
