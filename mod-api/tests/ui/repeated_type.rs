use mod_api::{service, Error};

// One faulty type used by three methods: one error, at its first use.
pub struct Opaque;

#[service(crate = mod_api)]
pub trait Vault {
    async fn put(&self, value: Opaque) -> Result<(), Error>;
    async fn get(&self) -> Result<Opaque, Error>;
    async fn swap(&self, value: Opaque) -> Result<Opaque, Error>;
}

fn main() {}
