//! Benchmarks of modkit against its peers; the code is in `compare/` (one line
//! per comparison) and `blocks.rs` (criterion). This library is empty: the
//! package exists so that the peers are dev-dependencies here, not of `modkit`.
//!
//! ```sh
//! cargo bench -p modkit-benches --bench compare -- --quick
//! cargo bench -p modkit-benches --bench blocks
//! ```
