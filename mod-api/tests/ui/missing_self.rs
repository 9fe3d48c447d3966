use mod_api::{service, Error};

#[service(crate = mod_api)]
pub trait Vault {
    async fn open(code: u32) -> Result<String, Error>;
    async fn close(self) -> Result<(), Error>;
}

fn main() {}
