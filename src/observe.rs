//! What the engine tells an application about its work: `tracing` spans and
//! events, and `metrics` through the facade.
//!
//! The library installs no subscriber and no recorder: without them every
//! span, event and metric costs next to nothing. An application that wants
//! them installs its own (`tracing-subscriber`, `metrics-exporter-prometheus`,
//! ...); `examples/http_service` shows both and `docs/guide.md` (sections
//! "Tracing" and "Metrics") lists every name.
//!
//! # Spans
//!
//! Every public engine call runs in a span of target `idemflow` named after
//! the call: `create`, `apply` (also `transition` and `fire`), `schedule`,
//! `cancel_scheduled`, `run_due_timers`, `purge_keys` and `install` (storing
//! or checking a machine's definition) at `INFO`; the reads `get`,
//! `history`, `in_state`, `count_by_state`, `scheduled`, `outbox_pending`
//! and `outbox_ack` at `DEBUG`. Their fields:
//!
//! | field | what |
//! |---|---|
//! | `machine` | the machine's name |
//! | `id` | the entity id |
//! | `key` | whether the request carries an idempotency key (`true`/`false`): **never the key** |
//! | `outcome` | `applied`, `noop`, `replay` for a request; `ok`, `found`, `absent`, `cancelled`, `not_pending` for other calls; the [`Error::kind`] of an error |
//! | `version` | the entity's version after the call, when there is one |
//! | `count` | how many items a list call returned or a batch call processed |
//!
//! Payloads, actors, scopes and key values are never recorded, in spans or
//! events: a key may be a secret or name another client's request.
//!
//! # Metrics
//!
//! See the constants of this module for every name, its kind and labels.

use std::sync::Arc;
use std::time::Duration;

use tracing::field::Empty;
use tracing::Span;

use crate::engine::{MachineRuntime, PurgeReport};
use crate::error::{Error, Result};
use crate::outcome::{EntityRecord, HistoryRecord, OutboxEvent, OutcomeRecord};
use crate::timers::ScheduledTimer;

/// Counter, labels `machine` and `outcome` (`applied`, `noop`, `replay`, or
/// an [`Error::kind`] such as `VersionConflict`): every `create` and
/// `apply` request (timer firings count in [`TIMERS_FIRED_TOTAL`]).
pub const REQUESTS_TOTAL: &str = "idemflow_requests_total";
/// Histogram, seconds: one batch's commit, its transaction and (under
/// `Durability::Immediate`) the sync that makes it durable.
pub const COMMIT_SECONDS: &str = "idemflow_commit_seconds";
/// Histogram: how many requests one commit (one transaction) carried.
pub const BATCH_SIZE: &str = "idemflow_batch_size";
/// Gauge: outbox events waiting to be acknowledged, as this process knows
/// it: set from the store when the engine starts and by `Outbox::len`,
/// moved by every commit and acknowledgement of this process.
pub const OUTBOX_PENDING: &str = "idemflow_outbox_pending";
/// Gauge: how many timers the latest round of firing found due (at most
/// one round's worth, 256).
pub const TIMERS_DUE: &str = "idemflow_timers_due";
/// Counter, labels `machine` and `outcome` (as for [`REQUESTS_TOTAL`]):
/// timers fired (declared timeouts and scheduled requests).
pub const TIMERS_FIRED_TOTAL: &str = "idemflow_timers_fired_total";
/// Counter, label `machine`: requests answered
/// [`Error::CommitUnknown`] (their change may or may not be durable).
pub const COMMIT_UNKNOWN_TOTAL: &str = "idemflow_commit_unknown_total";

/// Describes every metric of the engine (its unit and meaning) to the
/// installed recorder, for exporters that show descriptions (Prometheus'
/// `# HELP`). Call it once, after installing a recorder; without one it
/// does nothing.
pub fn describe_metrics() {
    use metrics::Unit;
    metrics::describe_counter!(
        REQUESTS_TOTAL,
        Unit::Count,
        "create and apply requests, by machine and outcome (applied, noop, replay, or the error kind)"
    );
    metrics::describe_histogram!(
        COMMIT_SECONDS,
        Unit::Seconds,
        "one batch's commit: its transaction and, under Immediate durability, its sync"
    );
    metrics::describe_histogram!(
        BATCH_SIZE,
        Unit::Count,
        "requests committed together in one transaction"
    );
    metrics::describe_gauge!(
        OUTBOX_PENDING,
        Unit::Count,
        "outbox events not yet acknowledged, as this process knows it"
    );
    metrics::describe_gauge!(
        TIMERS_DUE,
        Unit::Count,
        "timers the latest round of firing found due"
    );
    metrics::describe_counter!(
        TIMERS_FIRED_TOTAL,
        Unit::Count,
        "timers fired, by machine and outcome"
    );
    metrics::describe_counter!(
        COMMIT_UNKNOWN_TOTAL,
        Unit::Count,
        "requests answered CommitUnknown (retry them with the same key), by machine"
    );
}

/// The calls that get a span.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Call {
    Create,
    Apply,
    Get,
    History,
    InState,
    CountByState,
    Schedule,
    Scheduled,
    CancelScheduled,
    OutboxPending,
    OutboxAck,
    PurgeKeys,
    RunDueTimers,
    Install,
}

/// Where a call happens: what its span names.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Subject<'a> {
    pub(crate) machine: Option<&'a str>,
    pub(crate) id: Option<&'a str>,
    pub(crate) key: Option<bool>,
}

impl<'a> Subject<'a> {
    /// A call on a machine.
    pub(crate) fn machine(machine: &'a str) -> Self {
        Subject {
            machine: Some(machine),
            ..Subject::default()
        }
    }

    /// A call on one entity.
    pub(crate) fn entity(machine: &'a str, id: &'a str) -> Self {
        Subject {
            machine: Some(machine),
            id: Some(id),
            key: None,
        }
    }

    /// A request on one entity, keyed or not.
    pub(crate) fn request(machine: &'a str, id: &'a str, key: bool) -> Self {
        Subject {
            machine: Some(machine),
            id: Some(id),
            key: Some(key),
        }
    }
}

fn span(call: Call, at: Subject<'_>) -> Span {
    let Subject { machine, id, key } = at;
    macro_rules! make {
        ($level:ident, $name:literal) => {
            tracing::$level!(
                target: "idemflow",
                $name,
                machine,
                id,
                key,
                outcome = Empty,
                version = Empty,
                count = Empty
            )
        };
    }
    match call {
        Call::Create => make!(info_span, "create"),
        Call::Apply => make!(info_span, "apply"),
        Call::Schedule => make!(info_span, "schedule"),
        Call::CancelScheduled => make!(info_span, "cancel_scheduled"),
        Call::PurgeKeys => make!(info_span, "purge_keys"),
        Call::RunDueTimers => make!(info_span, "run_due_timers"),
        Call::Install => make!(info_span, "install"),
        Call::Get => make!(debug_span, "get"),
        Call::History => make!(debug_span, "history"),
        Call::InState => make!(debug_span, "in_state"),
        Call::CountByState => make!(debug_span, "count_by_state"),
        Call::Scheduled => make!(debug_span, "scheduled"),
        Call::OutboxPending => make!(debug_span, "outbox_pending"),
        Call::OutboxAck => make!(debug_span, "outbox_ack"),
    }
}

/// Runs `work` as the public call `call` on `at`: in its span, recording
/// the outcome (and, for requests, counting it).
pub(crate) fn call<T: Report>(
    call: Call,
    at: Subject<'_>,
    work: impl FnOnce() -> Result<T>,
) -> Result<T> {
    let span = span(call, at);
    let result = span.in_scope(work);
    let outcome = match &result {
        Ok(value) => {
            if let Some(version) = value.version() {
                span.record("version", version);
            }
            if let Some(count) = value.count() {
                span.record("count", count);
            }
            value.outcome()
        }
        Err(error) => {
            span.in_scope(|| error_event(at, error));
            error.kind()
        }
    };
    span.record("outcome", outcome);
    if let (Call::Create | Call::Apply, Some(machine)) = (call, at.machine) {
        metrics::counter!(REQUESTS_TOTAL, "machine" => machine.to_owned(), "outcome" => outcome)
            .increment(1);
    }
    result
}

/// The events of an error worth telling: conflicts and unknown outcomes.
fn error_event(at: Subject<'_>, error: &Error) {
    let (machine, id) = (at.machine, at.id);
    match error {
        Error::VersionConflict {
            expected, actual, ..
        } => tracing::info!(
            target: "idemflow",
            machine,
            id,
            expected,
            actual,
            "conflict: the entity is not at the expected version"
        ),
        Error::KeyReused { .. } => tracing::info!(
            target: "idemflow",
            machine,
            id,
            "conflict: the idempotency key was already used for a different request"
        ),
        Error::CommitUnknown { reason, .. } => tracing::warn!(
            target: "idemflow",
            machine,
            id,
            reason = reason.as_str(),
            "outcome unknown: the change may be durable; a retry with the same key is safe"
        ),
        _ => {}
    }
}

/// An error's message with nothing a key or payload could leak through:
/// for logs. (`KeyReused` and `Corrupt` name keys in their messages.)
pub(crate) fn loggable(error: &Error) -> String {
    match error {
        Error::KeyReused { machine, .. } => {
            format!(
                "an idempotency key of machine {machine} was already used for a different request"
            )
        }
        Error::Corrupt { tree, reason, .. } => {
            format!("corrupt data in tree {tree:?}: {reason}")
        }
        other => other.to_string(),
    }
}

/// A request was sent back to its caller: the record changed since its
/// guards ran, so they run again.
pub(crate) fn guards_rerun(machine: &str, id: &str) {
    tracing::debug!(
        target: "idemflow",
        machine,
        id,
        "retry: the record changed since the guards ran; running them again"
    );
}

/// A batch of `size` requests committed in `took` (transaction and, under
/// `Immediate`, sync), appending `events` outbox events.
pub(crate) fn batch_committed(size: usize, took: Duration, events: usize) {
    metrics::histogram!(BATCH_SIZE).record(size as f64);
    metrics::histogram!(COMMIT_SECONDS).record(took.as_secs_f64());
    if events > 0 {
        metrics::gauge!(OUTBOX_PENDING).increment(events as f64);
    }
}

/// A request of `machine` is answered `CommitUnknown`.
pub(crate) fn commit_unknown(machine: &str) {
    metrics::counter!(COMMIT_UNKNOWN_TOTAL, "machine" => machine.to_owned()).increment(1);
}

/// A sync failed: the commits it covered are of unknown outcome.
pub(crate) fn sync_failed(reason: &str) {
    tracing::warn!(
        target: "idemflow",
        reason,
        "a sync failed: the writing requests it covered get CommitUnknown"
    );
}

/// The outbox holds `pending` entries (a fresh count from the store).
pub(crate) fn outbox_pending(pending: usize) {
    metrics::gauge!(OUTBOX_PENDING).set(pending as f64);
}

/// `removed` outbox entries were acknowledged or quarantined.
pub(crate) fn outbox_removed(removed: usize) {
    if removed > 0 {
        metrics::gauge!(OUTBOX_PENDING).decrement(removed as f64);
    }
}

/// A round of timer firing found `due` timers due.
pub(crate) fn timers_due(due: usize) {
    metrics::gauge!(TIMERS_DUE).set(due as f64);
}

/// A timer of `machine` on `id` fired, with this result.
pub(crate) fn timer_fired(machine: &str, id: &str, result: &Result<OutcomeRecord>) {
    let outcome = match result {
        Ok(outcome) => outcome.outcome(),
        Err(error) => error.kind(),
    };
    metrics::counter!(TIMERS_FIRED_TOTAL, "machine" => machine.to_owned(), "outcome" => outcome)
        .increment(1);
    match result {
        Ok(record) if record.replay => tracing::info!(
            target: "idemflow",
            machine,
            id,
            version = record.version,
            "retry: a timer fired again; its first firing had applied, so this is a replay"
        ),
        Ok(record) => tracing::debug!(
            target: "idemflow",
            machine,
            id,
            outcome,
            version = record.version,
            "fired a timer"
        ),
        Err(error) => tracing::debug!(
            target: "idemflow",
            machine,
            id,
            outcome,
            error = loggable(error),
            "a timer fired with an error"
        ),
    }
}

/// Entities stored under a former state name were moved to its current name.
pub(crate) fn migrated(machine: &str, from: &str, to: &str, moved: u64) {
    tracing::info!(
        target: "idemflow",
        machine,
        from,
        to,
        moved,
        "migration: moved entities from a former state name to its current one"
    );
}

/// A version of a machine's definition was stored: the first one, or a
/// new one (a change of the machine).
pub(crate) fn definition_stored(machine: &str, version: u64, changes: usize) {
    if version <= 1 {
        tracing::debug!(
            target: "idemflow",
            machine,
            version,
            "stored the machine's definition"
        );
    } else {
        tracing::info!(
            target: "idemflow",
            machine,
            version,
            changes,
            "migration: stored a new version of the machine's definition"
        );
    }
}

/// What a call's span records of its result.
pub(crate) trait Report {
    /// The `outcome` field.
    fn outcome(&self) -> &'static str {
        "ok"
    }

    /// The `version` field.
    fn version(&self) -> Option<u64> {
        None
    }

    /// The `count` field.
    fn count(&self) -> Option<u64> {
        None
    }
}

impl Report for OutcomeRecord {
    fn outcome(&self) -> &'static str {
        if self.replay {
            "replay"
        } else if self.applied {
            "applied"
        } else {
            "noop"
        }
    }

    fn version(&self) -> Option<u64> {
        Some(self.version)
    }
}

impl Report for Option<EntityRecord> {
    fn outcome(&self) -> &'static str {
        if self.is_some() {
            "found"
        } else {
            "absent"
        }
    }

    fn version(&self) -> Option<u64> {
        self.as_ref().map(|record| record.version)
    }
}

impl Report for Vec<HistoryRecord> {
    fn version(&self) -> Option<u64> {
        self.last().map(|entry| entry.version)
    }

    fn count(&self) -> Option<u64> {
        Some(self.len() as u64)
    }
}

impl Report for Vec<String> {
    fn count(&self) -> Option<u64> {
        Some(self.len() as u64)
    }
}

impl Report for Vec<(String, u64)> {
    fn count(&self) -> Option<u64> {
        Some(self.iter().map(|(_, count)| count).sum())
    }
}

impl Report for Vec<OutboxEvent> {
    fn count(&self) -> Option<u64> {
        Some(self.len() as u64)
    }
}

impl Report for Vec<ScheduledTimer> {
    fn count(&self) -> Option<u64> {
        Some(self.len() as u64)
    }
}

impl Report for ScheduledTimer {
    fn outcome(&self) -> &'static str {
        "scheduled"
    }
}

impl Report for bool {
    fn outcome(&self) -> &'static str {
        if *self {
            "cancelled"
        } else {
            "not_pending"
        }
    }
}

impl Report for usize {
    fn count(&self) -> Option<u64> {
        Some(*self as u64)
    }
}

impl Report for PurgeReport {
    fn count(&self) -> Option<u64> {
        Some(self.purged)
    }
}

impl Report for Arc<MachineRuntime> {
    fn version(&self) -> Option<u64> {
        Some(self.rules().version)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loggable_messages_never_name_keys() {
        let reused = Error::KeyReused {
            machine: "order".into(),
            key: "secret-key".into(),
        };
        assert!(reused.to_string().contains("secret-key"));
        assert!(!loggable(&reused).contains("secret-key"));
        let corrupt = Error::corrupt("keys/order", b"secret-key", "truncated");
        assert!(!loggable(&corrupt).contains("secret-key"));
        assert!(loggable(&corrupt).contains("truncated"));
    }

    #[test]
    fn outcomes_are_named() {
        let mut outcome = OutcomeRecord {
            id: "o-1".into(),
            state: "paid".into(),
            version: 3,
            applied: true,
            from: Some("submitted".into()),
            event: None,
            replay: false,
            at: 0,
        };
        assert_eq!(outcome.outcome(), "applied");
        outcome.replay = true;
        assert_eq!(outcome.outcome(), "replay");
        outcome.replay = false;
        outcome.applied = false;
        assert_eq!(outcome.outcome(), "noop");
    }
}
