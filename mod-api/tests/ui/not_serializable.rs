use mod_api::{service, Error};
use serde::Deserialize;

// One derive forgotten: one error, at the argument.
#[derive(Deserialize)]
pub struct Note {
    pub text: String,
}

#[service(crate = mod_api)]
pub trait Notes {
    async fn add(&self, note: Note) -> Result<u64, Error>;
}

fn main() {}
