//! Durability modes.

/// When a call returns relative to its commit reaching stable storage.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Durability {
    /// A call returns only after everything its answer depends on is on
    /// stable storage (sled's flush plus `fdatasync` of the data file, of any
    /// blob file and of the directories). Concurrent callers share one sync
    /// (group commit). Reads wait too, until what they read is durable. The default.
    #[default]
    Immediate,
    /// A call returns after its commit is in memory; the writer syncs in the
    /// background (every 100 ms by default, see `EngineBuilder::flush_every_ms`).
    /// A crash may lose the last acknowledged calls, never half of one. The
    /// outbox hands out only events that are already durable.
    Buffered,
}
