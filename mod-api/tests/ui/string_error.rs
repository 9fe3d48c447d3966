use mod_api::service;

// `String` cannot get `From<modkit::Error>` here (orphan rule): the hint says
// to use `modkit::AppError<String>`.
#[service(crate = mod_api)]
pub trait Vault {
    async fn open(&self, code: u32) -> Result<String, String>;
}

fn main() {}
