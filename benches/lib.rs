//! Benchmarks of modkit against its peers; the code is in `compare/` (one line
//! per comparison) and `blocks.rs` (criterion). This library holds only what
//! the runners share: the package exists so that the peers are
//! dev-dependencies here, not of `modkit`.
//!
//! ```sh
//! cargo bench -p modkit-benches --bench compare -- --quick
//! cargo bench -p modkit-benches --bench blocks
//! ```

/// The `p`th percentile (0–100) of `values`, nearest rank; NaN when empty.
pub fn percentile(values: &mut [f64], p: f64) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    values.sort_by(f64::total_cmp);
    let rank = ((p / 100.0) * (values.len() - 1) as f64).round() as usize;
    values[rank]
}
