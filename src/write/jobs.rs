//! What callers hand the writer, and what it answers.

use std::sync::Arc;

use crate::decide::{Decision, KeyRecord};
use crate::error::{Error, Result};
use crate::outcome::{EntityRecord, OutcomeRecord};
use crate::store::{LiveDefinition, StoreWriter};
use crate::write::sync_step::PendingSync;

/// How the writer's decision of a request came out.
#[allow(clippy::large_enum_variant)] // built and consumed at once, never stored
pub(crate) enum WriterVerdict {
    /// Decided (an error writes nothing).
    Decided(Result<Decision>),
    /// A guard watches the transition and the caller's guard result does not
    /// apply to the record as it is now: the caller must evaluate the guards
    /// again (user code never runs on the writer).
    NeedsCaller,
}

/// The decision of one request over the records as the transaction reads
/// them. Pure: it may run more than once.
pub(crate) type WriterDecide =
    Box<dyn Fn(Option<&EntityRecord>, Option<&KeyRecord>) -> WriterVerdict + Send>;

/// One request for the writer: where it goes and how to decide it.
pub(crate) struct RequestJob {
    pub(crate) machine: String,
    pub(crate) id: String,
    /// The idempotency key as stored (scope included).
    pub(crate) key: Option<Vec<u8>>,
    /// About how many bytes it writes (to bound a batch).
    pub(crate) bytes: usize,
    /// The stored key of the timer this request fires, if any.
    pub(crate) fired_timer: Option<Vec<u8>>,
    /// The machine's live definition, which `decide` runs under.
    pub(crate) definition: Arc<dyn LiveDefinition>,
    pub(crate) decide: WriterDecide,
}

/// Work for the writer that is not a request: runs alone, with the store's
/// writer, and answers a count (acknowledged events, purged keys, ...).
pub(crate) type Task = Box<dyn FnOnce(&mut dyn StoreWriter) -> Result<u64> + Send>;

/// A job handed to the writer.
pub(crate) enum Job {
    /// A request: batched with its neighbours into one transaction.
    Request(RequestJob),
    /// Other writes (acknowledging the outbox, storing a definition, purging keys).
    Task(Task),
    /// Make every commit so far durable.
    Sync,
    /// The background sync under `Buffered` and the key purge, when due
    /// (submitted by the housekeeper thread); answers 1 if more is due at once.
    Periodic,
}

/// The writer's answer to a request.
pub(crate) enum RequestAnswer {
    /// The final outcome (or error) of the request.
    Done(Result<OutcomeRecord>),
    /// Re-decide on the caller's thread and submit again.
    NeedsCaller,
}

/// The writer's answer to a job.
pub(crate) enum Answer {
    Request(RequestAnswer),
    Task(Result<u64>),
    /// A sync's first part ran (sled's flush); its file sync is for the
    /// caller to complete (none when everything was durable already).
    Sync(Option<PendingSync>),
    /// The periodic work ran; `more` when more is due at once.
    Periodic {
        more: bool,
        sync: Option<PendingSync>,
    },
}

impl Answer {
    pub(crate) fn into_request(self) -> RequestAnswer {
        match self {
            Answer::Request(answer) => answer,
            Answer::Task(_) | Answer::Sync(_) | Answer::Periodic { .. } => {
                RequestAnswer::Done(Err(Error::storage(
                    "running a request",
                    std::io::Error::other("the writer answered a request with a task result"),
                )))
            }
        }
    }

    /// The result of a task, or of a sync (completing its file sync here).
    pub(crate) fn into_task(self) -> Result<u64> {
        match self {
            Answer::Task(result) => result,
            Answer::Sync(sync) | Answer::Periodic { sync, .. } => match sync {
                Some(sync) => sync.complete().map(|()| 0).map_err(|reason| {
                    Error::storage("syncing the database", std::io::Error::other(reason))
                }),
                None => Ok(0),
            },
            Answer::Request(_) => Err(Error::storage(
                "running a task",
                std::io::Error::other("the writer answered a task with a request result"),
            )),
        }
    }
}

/// Whether a decision writes anything.
pub(crate) fn writes(decision: &Decision) -> bool {
    matches!(
        decision,
        Decision::Apply(_)
            | Decision::NoOp {
                key_record: Some(_),
                ..
            }
    )
}
