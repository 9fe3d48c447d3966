//! What a backend supports beyond the contract every backend honours.

/// The optional features of a backend, field by field.
///
/// Everything else in the API is the same on every backend (SPEC §2, stated
/// by the conformance suite); these are where backends may differ. The
/// conformance suite reads them from [`Backend::capabilities`](crate::Backend::capabilities):
/// it runs the tests of a capability where it is claimed, and where it is not
/// it checks the refusal when the API has one (a queue with
/// [`BacklogPolicy::Overflow`](crate::BacklogPolicy::Overflow)) or says that it
/// skips the test. Not exhaustive: a new capability is added as `false`,
/// claiming nothing.
///
/// A backend that is not a modkit package sets the fields it claims on
/// `Capabilities::default()` (nothing claimed).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct Capabilities {
    /// [`CachePolicy::near`](crate::CachePolicy::near) is honoured: a small
    /// in-process copy serves hot reads, and it is invalidated when any node
    /// changes, removes or clears the key. Without it the near policy is
    /// accepted and ignored (every read goes to the cache itself, which is
    /// already coherent). The in-process backend has no use for it; the
    /// distributed one claims it.
    pub near_cache: bool,
    /// [`BacklogPolicy::Overflow`](crate::BacklogPolicy::Overflow) is
    /// supported: what does not fit the queue's `capacity` is kept in durable
    /// storage of the backend, delivered in offer order after the log, and
    /// recovered when the queue is opened again after a restart. Without it,
    /// opening such a queue is `InvalidInput`. The in-process backend claims it
    /// when it has a `data_dir` (its overflow files go there).
    pub durable_overflow: bool,
    /// [`CachePolicy::max_entries`](crate::CachePolicy::max_entries) is exact:
    /// once the backend's own maintenance has run (in the in-process backend,
    /// after a few more operations), a cache holds exactly `max_entries` of
    /// the most recently used entries. Without it the bound is approximate
    /// (sampled or periodic eviction, as the backend's docs say).
    pub exact_max_entries: bool,
}
