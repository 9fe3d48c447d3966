use mod_api::{service, Error};

pub struct Opaque;

#[service(crate = mod_api)]
pub trait Vault {
    async fn store(&self, value: Opaque) -> Result<(), Error>;
}

fn main() {}
