use mod_api::{Backend, CachePolicy};

// A cache value without serde derives and `Clone`: one error, naming all
// that is missing.
pub struct Opaque;

pub fn open(backend: &impl Backend) {
    let _ = backend.cache::<Opaque>("opaque", CachePolicy::new());
}

fn main() {}
