//! A request on its caller's thread.
//!
//! 1. Check the input (SPEC step 1).
//! 2. Read the key record and, when the answer may come from reads alone or
//!    guards must run, the entity's record.
//! 3. Decide with the pure core. Guards run here, on the caller's thread,
//!    with no lock held and under `catch_unwind`: a slow guard delays only
//!    its own request, a panicking one fails only its own request.
//! 4. An answer that writes nothing (a replay, a no-op without a key, an
//!    error) is returned once what it read is durable, when the key is live
//!    or absent (a live key record never changes, and without a key the
//!    record read is the linearization point).
//! 5. Anything else goes to the writer, which decides again inside its
//!    transaction against the records as they are then. The guards' verdict
//!    travels with the request, bound to the record version and target it
//!    was computed for; if the writer finds the record changed and a guard
//!    watches the transition, it sends the request back to step 2.

use std::cell::RefCell;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;

use super::{EngineInner, MachineRuntime};
use crate::decide::{
    check_request, decide, decide_create_keyed, CreateSpec, Decision, DecisionInput, KeyRecord,
    MachineRules, NamedGuardInput,
};
use crate::error::{Error, Result};
use crate::guard::Guards;
use crate::observe::{self, Call, Subject};
use crate::outcome::{EntityRecord, OutcomeRecord};
use crate::request::{Fingerprint, RequestSpec};
use crate::write::abandoned_request;
use crate::write::jobs::{Job, RequestAnswer, RequestJob, WriterDecide, WriterVerdict};

/// What the guards said on the caller's thread, and about which record.
#[derive(Clone, Debug)]
struct GuardVerdict {
    version: u64,
    to: String,
    result: std::result::Result<(), String>,
}

/// A checked request for [`EngineInner::apply_many`]: the machine, the
/// entity id, the request, and the stored key of the timer it fires.
pub(crate) type CheckedRequest = (
    Arc<MachineRuntime>,
    String,
    Arc<RequestSpec>,
    Option<Vec<u8>>,
);

/// What [`EngineInner::check_caller`] calls a request's hand-off.
const COMMITTING: &str = "committing a request";

/// The answers to `count` requests refused by [`EngineInner::check_caller`]
/// (before any was prepared): the refusal for each.
fn refused_each(refused: Error, count: usize) -> Vec<Result<OutcomeRecord>> {
    let again = |refused: &Error| match refused {
        Error::BlockingInAsync { operation } => Error::BlockingInAsync {
            operation: operation.clone(),
        },
        other => Error::storage(COMMITTING, std::io::Error::other(other.to_string())),
    };
    let mut answers: Vec<Result<OutcomeRecord>> =
        (1..count).map(|_| Err(again(&refused))).collect();
    if count > 0 {
        answers.push(Err(refused));
    }
    answers
}

/// What preparing a request on the caller's thread gave.
enum Prepared {
    /// The answer, from reads alone.
    Answer(Result<OutcomeRecord>),
    /// A job for the writer.
    Job(RequestJob),
}

/// How a request is to be decided (everything but the records).
#[derive(Clone)]
enum Kind {
    Apply {
        request: Arc<RequestSpec>,
        /// The fingerprints computed under this definition version.
        fingerprints: (u64, Arc<[Fingerprint]>),
    },
    Create(Arc<CreateSpec>),
}

impl EngineInner {
    pub(crate) fn apply(
        &self,
        runtime: &Arc<MachineRuntime>,
        id: &str,
        request: RequestSpec,
    ) -> Result<OutcomeRecord> {
        let at = Subject::request(runtime.name(), id, request.key.is_some());
        observe::call(Call::Apply, at, || {
            let request = self.checked(runtime, id, request)?;
            self.apply_checked(runtime, id, &request, None)
        })
    }

    /// Step 1 (input) and the request's target in its current name.
    pub(crate) fn checked(
        &self,
        runtime: &MachineRuntime,
        id: &str,
        mut request: RequestSpec,
    ) -> Result<Arc<RequestSpec>> {
        let live = runtime.rules();
        check_request(&live.rules, &self.limits, id, &request)?;
        live.rules.canonical_request(&mut request);
        Ok(Arc::new(request))
    }

    /// Runs a checked request; `fired_timer` names the timer it fires, if
    /// any (removed in the same atomic step).
    pub(crate) fn apply_checked(
        &self,
        runtime: &Arc<MachineRuntime>,
        id: &str,
        request: &Arc<RequestSpec>,
        fired_timer: Option<&[u8]>,
    ) -> Result<OutcomeRecord> {
        loop {
            let job = match self.prepare(runtime, id, request, fired_timer)? {
                Prepared::Answer(answer) => return answer,
                Prepared::Job(job) => job,
            };
            match self.submit(runtime, id, job)? {
                RequestAnswer::Done(result) => {
                    return result.map(|outcome| runtime.rules().rules.canonical_outcome(outcome))
                }
                RequestAnswer::NeedsCaller => {
                    observe::guards_rerun(runtime.name(), id);
                    continue;
                }
            }
        }
    }

    /// Runs many checked requests, handing them to the writer together so
    /// they can share a batch (the timer runner fires due timers this way).
    /// One result per request, in order.
    pub(crate) fn apply_many(&self, requests: Vec<CheckedRequest>) -> Vec<Result<OutcomeRecord>> {
        if let Err(refused) = self.check_caller(COMMITTING) {
            return refused_each(refused, requests.len());
        }
        let mut results: Vec<Option<Result<OutcomeRecord>>> = Vec::with_capacity(requests.len());
        let mut jobs = Vec::new();
        let mut waiting = Vec::new();
        for (index, (runtime, id, request, fired_timer)) in requests.iter().enumerate() {
            match self.prepare(runtime, id, request, fired_timer.as_deref()) {
                Ok(Prepared::Answer(answer)) => results.push(Some(answer)),
                Ok(Prepared::Job(job)) => {
                    results.push(None);
                    jobs.push(Job::Request(job));
                    waiting.push(index);
                }
                Err(error) => results.push(Some(Err(error))),
            }
        }
        let answers = self.writer.submit_all(jobs);
        for (index, answer) in waiting.into_iter().zip(answers) {
            let (runtime, id, request, fired_timer) = &requests[index];
            results[index] = Some(match answer {
                Ok(answer) => match answer.into_request() {
                    RequestAnswer::Done(result) => {
                        result.map(|outcome| runtime.rules().rules.canonical_outcome(outcome))
                    }
                    // A guard must run again: on this thread, alone.
                    RequestAnswer::NeedsCaller => {
                        self.apply_checked(runtime, id, request, fired_timer.as_deref())
                    }
                },
                Err(_) => Err(abandoned_request(runtime.name(), id)),
            });
        }
        results
            .into_iter()
            .map(|result| {
                result.unwrap_or_else(|| {
                    Err(Error::storage(
                        "running requests",
                        std::io::Error::other("a request was not answered"),
                    ))
                })
            })
            .collect()
    }

    /// Reads, decides on this thread (running the guards), and either
    /// answers (a read-only answer) or prepares the job for the writer.
    fn prepare(
        &self,
        runtime: &Arc<MachineRuntime>,
        id: &str,
        request: &Arc<RequestSpec>,
        fired_timer: Option<&[u8]>,
    ) -> Result<Prepared> {
        let stored_key = request.stored_key();
        let live = runtime.rules();
        let fingerprints: Arc<[Fingerprint]> = live.rules.fingerprints(id, request).into();
        let now = self.clock.now_ms();
        let guards = runtime.guards();
        // Without guards to run, a keyed request goes to the writer unread
        // when the store would rather not read first, or when a batch is
        // being committed (the writer reads the key under its locks and
        // answers a replay itself). On sled a read while the writer commits
        // contends with it for sled's process-wide lock, and a reader
        // preempted while holding it stalls the whole batch: under 8
        // clients this read doubled the p99 (docs/BENCHMARKS.md). An idle
        // engine still answers a replay here, without the writer.
        let key_record = match &stored_key {
            Some(_)
                if guards.is_empty()
                    && (!runtime.store.pre_reads_keys() || self.writer.is_busy()) =>
            {
                None
            }
            Some(key) => runtime.store.key_record(key)?,
            None => None,
        };
        let live_key = key_record.filter(|seen| seen.expires_at > now);
        // A fresh key will be written whatever the outcome, and a fired timer
        // removed, so the writer decides; the caller only runs the guards it
        // needs.
        let must_write = (stored_key.is_some() && live_key.is_none()) || fired_timer.is_some();
        let mut verdict = None;
        if !must_write || !guards.is_empty() {
            let record = runtime.store.get(id)?;
            let (decision, seen) = self.decide_on_caller(
                &live.rules,
                &guards,
                id,
                record.as_ref(),
                live_key.as_ref(),
                request,
                &fingerprints,
                now,
            );
            verdict = seen;
            match decision {
                Err(error @ Error::GuardPanicked { .. }) => {
                    return Ok(Prepared::Answer(Err(error)));
                }
                Ok(Decision::Replay(outcome))
                | Ok(Decision::NoOp {
                    outcome,
                    key_record: None,
                }) if !must_write => {
                    self.settle_read()?;
                    return Ok(Prepared::Answer(Ok(live.rules.canonical_outcome(outcome))));
                }
                Err(error) if !must_write => {
                    self.settle_read()?;
                    return Ok(Prepared::Answer(Err(error)));
                }
                _ => {}
            }
        }
        let kind = Kind::Apply {
            request: request.clone(),
            fingerprints: (live.version, fingerprints),
        };
        Ok(Prepared::Job(RequestJob {
            machine: runtime.name().to_owned(),
            id: id.to_owned(),
            key: stored_key,
            bytes: request_bytes(id, request),
            fired_timer: fired_timer.map(<[u8]>::to_vec),
            definition: runtime.clone(),
            decide: self.writer_decide(runtime, id, kind, now, verdict),
        }))
    }

    pub(crate) fn create(
        &self,
        runtime: &Arc<MachineRuntime>,
        id: &str,
        create: CreateSpec,
    ) -> Result<OutcomeRecord> {
        let at = Subject::request(runtime.name(), id, create.key.is_some());
        observe::call(Call::Create, at, || self.run_create(runtime, id, create))
    }

    fn run_create(
        &self,
        runtime: &Arc<MachineRuntime>,
        id: &str,
        create: CreateSpec,
    ) -> Result<OutcomeRecord> {
        self.limits.check_id(id)?;
        self.limits.check_actor(create.actor.as_deref())?;
        self.limits.check_payload(create.payload.as_ref())?;
        self.limits
            .check_key(create.key.as_deref(), create.scope.as_deref())?;
        let stored_key = create.stored_key();
        let create = Arc::new(create);
        let now = self.clock.now_ms();
        // As in `prepare`: a keyed creation may go to the writer unread.
        let key_record = match &stored_key {
            Some(_) if !runtime.store.pre_reads_keys() => None,
            Some(key) => runtime.store.key_record(key)?,
            None => None,
        };
        let live_key = key_record.filter(|seen| seen.expires_at > now);
        let fresh_key = stored_key.is_some() && live_key.is_none();
        if !fresh_key {
            // Without a key, or with a live one, reads decide: an existing
            // entity is a no-op, a live key replays or is reused.
            let record = runtime.store.get(id)?;
            if record.is_some() || live_key.is_some() {
                let live = runtime.rules();
                let decision = decide_create_keyed(
                    &live.rules,
                    id,
                    record.as_ref(),
                    live_key.as_ref(),
                    &create,
                    now,
                    self.key_retention_ms,
                );
                self.settle_read()?;
                return decision
                    .map(|decision| live.rules.canonical_outcome(decision.into_outcome()));
            }
        }
        let bytes = id.len() + payload_bytes(create.payload.as_ref()) + 64;
        let job = RequestJob {
            machine: runtime.name().to_owned(),
            id: id.to_owned(),
            key: stored_key,
            bytes,
            fired_timer: None,
            definition: runtime.clone(),
            decide: self.writer_decide(runtime, id, Kind::Create(create), now, None),
        };
        match self.submit(runtime, id, job)? {
            RequestAnswer::Done(result) => {
                result.map(|outcome| runtime.rules().rules.canonical_outcome(outcome))
            }
            // A creation runs no guard: the writer never sends it back.
            RequestAnswer::NeedsCaller => Err(Error::storage(
                "creating an entity",
                std::io::Error::other("the writer sent a creation back"),
            )),
        }
    }

    fn submit(&self, runtime: &MachineRuntime, id: &str, job: RequestJob) -> Result<RequestAnswer> {
        self.check_caller(COMMITTING)?;
        match self.writer.submit(Job::Request(job)) {
            Ok(answer) => Ok(answer.into_request()),
            Err(_) => Err(abandoned_request(runtime.name(), id)),
        }
    }

    /// Decides on the caller's thread, running the guards (user code) here.
    /// Returns the decision and the guards' verdict, if a guard ran.
    #[allow(clippy::too_many_arguments)]
    fn decide_on_caller(
        &self,
        rules: &MachineRules,
        guards: &Guards,
        id: &str,
        record: Option<&EntityRecord>,
        key_record: Option<&KeyRecord>,
        request: &RequestSpec,
        fingerprints: &[Fingerprint],
        now: u64,
    ) -> (Result<Decision>, Option<GuardVerdict>) {
        let verdict = RefCell::new(None);
        let panicked = RefCell::new(None);
        let guard = |input: &NamedGuardInput<'_>| {
            if !guards.watches(input) {
                return Ok(());
            }
            let result = match catch_unwind(AssertUnwindSafe(|| guards.check(input))) {
                Ok(result) => result,
                Err(panic) => {
                    *panicked.borrow_mut() = Some((input.to.to_owned(), panic_text(&*panic)));
                    Err(String::new())
                }
            };
            *verdict.borrow_mut() = Some(GuardVerdict {
                version: input.entity.version,
                to: input.to.to_owned(),
                result: result.clone(),
            });
            result
        };
        let decision = decide(&DecisionInput {
            rules,
            id,
            record,
            key_record,
            request,
            fingerprints,
            now,
            key_retention_ms: self.key_retention_ms,
            guard: &guard,
        });
        if let Some((to, message)) = panicked.into_inner() {
            let error = Error::GuardPanicked {
                id: id.to_owned(),
                to,
                message,
            };
            return (Err(error), None);
        }
        (decision, verdict.into_inner())
    }

    /// The decision the writer makes inside its transaction: the same pure
    /// core under the *live* rules of the machine (a definition installed
    /// since the caller decided applies), with the guards' verdict from the
    /// caller standing in for the guards (the writer never runs user code).
    fn writer_decide(
        &self,
        runtime: &Arc<MachineRuntime>,
        id: &str,
        kind: Kind,
        now: u64,
        verdict: Option<GuardVerdict>,
    ) -> WriterDecide {
        let runtime = runtime.clone();
        let id = id.to_owned();
        let key_retention_ms = self.key_retention_ms;
        Box::new(move |record, key_record| {
            let live = runtime.rules();
            match &kind {
                Kind::Create(create) => WriterVerdict::Decided(decide_create_keyed(
                    &live.rules,
                    &id,
                    record,
                    key_record,
                    create,
                    now,
                    key_retention_ms,
                )),
                Kind::Apply {
                    request,
                    fingerprints: (version, fingerprints),
                } => {
                    // Under a newer definition, the request's former names differ.
                    let renamed;
                    let fingerprints: &[Fingerprint] = if *version == live.version {
                        fingerprints
                    } else {
                        renamed = live.rules.fingerprints(&id, request);
                        &renamed
                    };
                    let guards = runtime.guards();
                    let needs_caller = std::cell::Cell::new(false);
                    let guard = |input: &NamedGuardInput<'_>| {
                        if !guards.watches(input) {
                            return Ok(());
                        }
                        match &verdict {
                            Some(seen)
                                if seen.version == input.entity.version && seen.to == input.to =>
                            {
                                seen.result.clone()
                            }
                            _ => {
                                needs_caller.set(true);
                                Err(String::new())
                            }
                        }
                    };
                    let decision = decide(&DecisionInput {
                        rules: &live.rules,
                        id: &id,
                        record,
                        key_record,
                        request,
                        fingerprints,
                        now,
                        key_retention_ms,
                        guard: &guard,
                    });
                    if needs_caller.get() {
                        WriterVerdict::NeedsCaller
                    } else {
                        WriterVerdict::Decided(decision)
                    }
                }
            }
        })
    }
}

/// About how many bytes a request writes (history and outbox both hold the payload).
fn request_bytes(id: &str, request: &RequestSpec) -> usize {
    2 * (id.len()
        + request.key.as_ref().map_or(0, String::len)
        + request.actor.as_ref().map_or(0, String::len)
        + payload_bytes(request.payload.as_ref()))
        + 128
}

fn payload_bytes(payload: Option<&serde_json::Value>) -> usize {
    payload.map_or(0, crate::request::json_size)
}

fn panic_text(panic: &(dyn std::any::Any + Send)) -> String {
    if let Some(text) = panic.downcast_ref::<&str>() {
        (*text).to_owned()
    } else if let Some(text) = panic.downcast_ref::<String>() {
        text.clone()
    } else {
        "(no message)".to_owned()
    }
}

#[cfg(test)]
mod tests {
    use crate::{Durability, Engine, Request, StateMachine};

    #[derive(StateMachine, Clone, Copy, Debug, PartialEq, Eq, Hash)]
    #[machine(name = "payment", initial = Pending, events = PaymentEvent)]
    enum Payment {
        #[on(capture = Captured)]
        Pending,
        #[terminal]
        Captured,
    }

    /// A keyed retry gets the original outcome whether the caller reads the
    /// key itself (idle engine) or leaves it to the writer (a batch in
    /// flight), and neither path writes anything.
    #[test]
    fn a_keyed_retry_replays_whether_or_not_the_writer_is_busy() {
        let engine = Engine::builder()
            .durability(Durability::Buffered)
            .temporary()
            .unwrap();
        let payments = engine.machine::<Payment>().unwrap();
        payments.create("p-1").unwrap();
        let request = || {
            Request::fire(PaymentEvent::Capture)
                .key("capture-p-1")
                .payload(serde_json::json!({"amount": 4200}))
        };
        let first = payments.apply("p-1", request()).unwrap();
        assert!(first.was_applied());

        assert!(!engine.inner.writer.is_busy());
        let idle = payments.apply("p-1", request()).unwrap();
        let busy = {
            let _busy = engine.inner.writer.pretend_busy();
            assert!(engine.inner.writer.is_busy());
            payments.apply("p-1", request()).unwrap()
        };
        assert!(!engine.inner.writer.is_busy());
        let mut original = first.to_record();
        original.replay = true;
        for retry in [&idle, &busy] {
            assert!(retry.is_replay(), "{retry:?}");
            assert_eq!(retry.to_record(), original);
        }
        assert_eq!(payments.get("p-1").unwrap().unwrap().version, 2);
        assert_eq!(payments.history("p-1").unwrap().len(), 2);
        engine.flush().unwrap();
        assert_eq!(engine.outbox().pending(10).unwrap().len(), 2);

        // The same request with another payload is a misuse of the key on
        // both paths.
        let changed = || {
            Request::fire(PaymentEvent::Capture)
                .key("capture-p-1")
                .payload(serde_json::json!({"amount": 1}))
        };
        assert!(payments.apply("p-1", changed()).is_err());
        let _busy = engine.inner.writer.pretend_busy();
        assert!(payments.apply("p-1", changed()).is_err());
    }
}
