//! The one error type of idemflow.
//!
//! Every variant carries the data a caller needs to act on it: the machine and
//! entity, the expected and actual version, the from and to states, the key.
//! Its message says the same in plain words. See `docs/semantics.md` for what
//! each error means and how a caller should react.

use std::fmt;
use std::path::PathBuf;

/// A specialised `Result` whose error is [`enum@Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Which part of a request an [`Error::InvalidInput`] is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum InputField {
    /// The entity id.
    Id,
    /// The idempotency key.
    Key,
    /// The idempotency key's scope.
    Scope,
    /// The JSON payload.
    Payload,
    /// The actor (metadata).
    Actor,
    /// A state name given as text (untyped handle, CLI, HTTP).
    State,
    /// An event name given as text (untyped handle, CLI, HTTP).
    Event,
    /// A machine name given as text.
    Machine,
    /// A configuration value of the engine.
    Config,
}

impl fmt::Display for InputField {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            InputField::Id => "id",
            InputField::Key => "idempotency key",
            InputField::Scope => "key scope",
            InputField::Payload => "payload",
            InputField::Actor => "actor",
            InputField::State => "state",
            InputField::Event => "event",
            InputField::Machine => "machine",
            InputField::Config => "configuration",
        })
    }
}

/// Whether a [`Missing`] name is a state's or an event's.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum NameKind {
    /// A state name.
    State,
    /// An event name.
    Event,
}

/// A state or event name that a new machine definition removes although
/// stored data still names it (and no alias maps it to a current name).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Missing {
    /// Whether it names a state or an event.
    pub kind: NameKind,
    /// The name.
    pub name: String,
    /// How many entities are in that state now (0 for an event).
    pub entities: u64,
    /// How many entities' histories name it.
    pub in_history: u64,
    /// How many idempotency key records name it (in their stored outcome).
    pub key_records: u64,
}

impl fmt::Display for Missing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self.kind {
            NameKind::State => "state",
            NameKind::Event => "event",
        };
        write!(f, "{kind} {:?} (", self.name)?;
        let mut parts = Vec::new();
        if self.kind == NameKind::State {
            parts.push(format!("{} entities in it", self.entities));
        }
        parts.push(format!(
            "named in the history of {} entities",
            self.in_history
        ));
        parts.push(format!("by {} key records", self.key_records));
        write!(f, "{})", parts.join(", "))
    }
}

fn join<T: fmt::Display>(items: &[T], separator: &str) -> String {
    items
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(separator)
}

fn describe_target(to: &Option<String>, event: &Option<String>) -> String {
    match (to, event) {
        (Some(to), Some(event)) => format!("to {to:?} (event {event:?})"),
        (Some(to), None) => format!("to {to:?}"),
        (None, Some(event)) => format!("by event {event:?}"),
        (None, None) => String::from("(no target)"),
    }
}

/// Everything that can go wrong in idemflow.
///
/// Errors are never stored under an idempotency key: a retry after the cause
/// is fixed is evaluated afresh.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The request itself is malformed: an empty or oversized id or key, an
    /// oversized payload, an unknown state or event name. Nothing was read or written.
    #[error("invalid {field}: {reason}")]
    InvalidInput {
        /// Which part of the request is wrong.
        field: InputField,
        /// What is wrong with it, in plain words.
        reason: String,
    },

    /// The entity does not exist (create it first).
    #[error("{machine} {id:?} does not exist")]
    NotFound {
        /// The machine's name.
        machine: String,
        /// The entity id.
        id: String,
    },

    /// The machine has no transition from the entity's current state to the
    /// requested target (or for the requested event).
    #[error("{id:?} cannot go from {from:?} {}", describe_target(.to, .event))]
    InvalidTransition {
        /// The entity id.
        id: String,
        /// The entity's current state.
        from: String,
        /// The requested target state, if the request named one or the event has one.
        to: Option<String>,
        /// The fired event, if the request fired one.
        event: Option<String>,
    },

    /// The request expected another version than the stored one: someone else
    /// changed the entity since the caller read it. Re-read and decide again.
    #[error("{machine} {id:?} is at version {actual}, the request expected version {expected}")]
    VersionConflict {
        /// The machine's name.
        machine: String,
        /// The entity id.
        id: String,
        /// The version the request expected.
        expected: u64,
        /// The entity's current version.
        actual: u64,
    },

    /// The idempotency key was already used for a different request. A key is
    /// bound to its first request; use a new key for a new request. The error
    /// never says which entity or request the key was first used for: a key
    /// presented by someone else must not reveal their data.
    #[error("idempotency key {key:?} of machine {machine} was already used for a different request; use a new key for a new request")]
    KeyReused {
        /// The machine's name.
        machine: String,
        /// The key, as the caller gave it (without its scope).
        key: String,
    },

    /// A guard attached to the transition panicked. The panic stays with the
    /// caller whose request ran the guard; nothing was written, and other
    /// requests are unaffected. A guard that panics is a bug to fix; the
    /// request can be retried once it is.
    #[error(
        "{id:?}: a guard of the transition to {to:?} panicked ({message}); nothing was written"
    )]
    GuardPanicked {
        /// The entity id.
        id: String,
        /// The target state.
        to: String,
        /// The panic's message.
        message: String,
    },

    /// The outcome of the request is unknown: it was committed, but making it
    /// durable failed (or the engine stopped before answering). The change
    /// may or may not survive a crash. Retrying with the same idempotency key
    /// is safe and tells: a replay if the change is there, the change applied
    /// once otherwise.
    #[error("outcome unknown for {machine} {id:?}: {reason}; the change may be durable, so retry with the same idempotency key (that is safe)")]
    CommitUnknown {
        /// The machine's name.
        machine: String,
        /// The entity id.
        id: String,
        /// What failed.
        reason: String,
    },

    /// A guard attached to the transition rejected it. Nothing was written.
    #[error("{id:?}: transition from {from:?} to {to:?} rejected by guard: {reason}")]
    GuardRejected {
        /// The entity id.
        id: String,
        /// The entity's current state.
        from: String,
        /// The target state.
        to: String,
        /// The guard's reason.
        reason: String,
    },

    /// A machine definition breaks the rules of a valid machine. Lists every problem.
    #[error("invalid definition of machine {machine:?}: {}", join(.problems, "; "))]
    InvalidDefinition {
        /// The machine's name.
        machine: String,
        /// Every problem found, each in plain words.
        problems: Vec<String>,
    },

    /// The definition given when opening a machine removes states or events
    /// that stored data (records, history, key records) still names, without
    /// an alias that maps them to a current name. Nothing was changed.
    #[error("definition of machine {machine:?} removes names that stored data still uses (declare them as aliases, or keep them): {}", join(.missing, "; "))]
    DefinitionMismatch {
        /// The machine's name.
        machine: String,
        /// Every removed name still in use, with how much uses it.
        missing: Vec<Missing>,
    },

    /// No machine of that name is stored in the database.
    #[error("no machine named {machine:?} is stored in this database")]
    UnknownMachine {
        /// The requested machine name.
        machine: String,
    },

    /// A stored value or key failed to decode. Other records are unaffected.
    #[error("corrupt data in tree {tree:?} at key {key}: {reason}")]
    Corrupt {
        /// The sled tree holding the value.
        tree: String,
        /// The key, printed readably (text where it is text, hex escapes otherwise).
        key: String,
        /// What failed to decode.
        reason: String,
    },

    /// Another process (or another open engine) holds the database directory.
    #[error(
        "database {path:?} is locked by another process; close it there or use another directory"
    )]
    Locked {
        /// The database directory.
        path: PathBuf,
    },

    /// A blocking call was made on a thread that runs async code (a tokio
    /// runtime's worker thread, or inside a runtime's `block_on`), where the
    /// backend's blocking client cannot run (PostgreSQL: its client would
    /// start a runtime of its own there, which tokio forbids). Nothing was
    /// read or written, and no other caller's request is affected. This is
    /// a bug in the calling code, not a storage failure: use the async
    /// handle (`Engine::machine_async`, feature `tokio`),
    /// or make the call inside `tokio::task::spawn_blocking` or
    /// `tokio::task::block_in_place`. sled never returns it.
    #[error("{operation}: a blocking idemflow call was made on a thread that runs async code (a tokio worker), where the PostgreSQL client cannot block; nothing was read or written. Use the async handle (`machine_async`, feature `tokio`), or make the call inside `tokio::task::spawn_blocking` or `tokio::task::block_in_place`")]
    BlockingInAsync {
        /// What the engine was about to do (`"reading an entity"`, ...).
        operation: String,
    },

    /// The storage layer failed (I/O error, disk full, ...).
    #[error("storage error while {context}: {source}")]
    Storage {
        /// What the engine was doing.
        context: String,
        /// The underlying I/O error.
        #[source]
        source: std::io::Error,
    },
}

impl Error {
    /// Builds an [`Error::InvalidInput`].
    pub fn invalid_input(field: InputField, reason: impl Into<String>) -> Self {
        Error::InvalidInput {
            field,
            reason: reason.into(),
        }
    }

    /// Builds an [`Error::Corrupt`], printing the key readably.
    pub fn corrupt(tree: impl Into<String>, key: &[u8], reason: impl Into<String>) -> Self {
        Error::Corrupt {
            tree: tree.into(),
            key: printable_key(key),
            reason: reason.into(),
        }
    }

    /// Builds an [`Error::Storage`] from any I/O-like error.
    pub fn storage(context: impl Into<String>, source: impl Into<std::io::Error>) -> Self {
        Error::Storage {
            context: context.into(),
            source: source.into(),
        }
    }
}

impl Error {
    /// The variant's name (`"VersionConflict"`, `"CommitUnknown"`, ...): a
    /// short, stable label for logs, metrics and API answers that never
    /// carries the error's data (no key, no payload).
    pub fn kind(&self) -> &'static str {
        match self {
            Error::InvalidInput { .. } => "InvalidInput",
            Error::NotFound { .. } => "NotFound",
            Error::InvalidTransition { .. } => "InvalidTransition",
            Error::VersionConflict { .. } => "VersionConflict",
            Error::KeyReused { .. } => "KeyReused",
            Error::GuardPanicked { .. } => "GuardPanicked",
            Error::CommitUnknown { .. } => "CommitUnknown",
            Error::GuardRejected { .. } => "GuardRejected",
            Error::InvalidDefinition { .. } => "InvalidDefinition",
            Error::DefinitionMismatch { .. } => "DefinitionMismatch",
            Error::UnknownMachine { .. } => "UnknownMachine",
            Error::Corrupt { .. } => "Corrupt",
            Error::Locked { .. } => "Locked",
            Error::Storage { .. } => "Storage",
            Error::BlockingInAsync { .. } => "BlockingInAsync",
        }
    }
}

/// Prints a byte key as text where it is printable ASCII and with `\xNN` escapes elsewhere.
pub fn printable_key(key: &[u8]) -> String {
    let mut out = String::with_capacity(key.len() + 2);
    out.push('"');
    for &byte in key {
        match byte {
            b'"' => out.push_str("\\\""),
            b'\\' => out.push_str("\\\\"),
            0x20..=0x7e => out.push(byte as char),
            _ => out.push_str(&format!("\\x{byte:02x}")),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_say_what_happened() {
        let error = Error::VersionConflict {
            machine: "order".into(),
            id: "o-1".into(),
            expected: 3,
            actual: 4,
        };
        assert_eq!(
            error.to_string(),
            "order \"o-1\" is at version 4, the request expected version 3"
        );
        let error = Error::InvalidTransition {
            id: "o-1".into(),
            from: "draft".into(),
            to: Some("paid".into()),
            event: None,
        };
        assert_eq!(
            error.to_string(),
            "\"o-1\" cannot go from \"draft\" to \"paid\""
        );
    }

    #[test]
    fn printable_key_escapes_binary() {
        assert_eq!(printable_key(b"ab\x00\"c"), "\"ab\\x00\\\"c\"");
    }

    #[test]
    fn error_is_small_enough_for_results() {
        // clippy's result_large_err fires at 128 bytes in users' code.
        assert!(std::mem::size_of::<Error>() < 128);
    }

    #[test]
    fn error_is_send_and_sync() {
        fn assert_send_sync<T: Send + Sync + 'static>() {}
        assert_send_sync::<Error>();
    }
}
