use mod_api::{service, Error};

#[service(crate = mod_api)]
pub trait Vault {
    fn open(&self, code: u32) -> Result<String, Error>;
}

fn main() {}
