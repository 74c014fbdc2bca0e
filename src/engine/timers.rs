//! Timers on the engine's side: scheduling, listing, cancelling, firing.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::{EngineInner, MachineRuntime};
use crate::decide::KeyRecord;
use crate::error::{Error, InputField, Result};
use crate::observe::{self, Call, Subject};
use crate::request::{stored_key, RequestSpec};
use crate::timers::{ScheduledTimer, TimerKind, TimerRecord};
use crate::write::jobs::Task;

/// How many due timers one round fires.
const FIRE_ROUND: usize = 256;

impl EngineInner {
    /// Stores `request` (keyed) to be applied to `id` after `after`.
    pub(crate) fn schedule(
        &self,
        runtime: &Arc<MachineRuntime>,
        id: &str,
        after: Duration,
        request: RequestSpec,
    ) -> Result<ScheduledTimer> {
        let at = Subject::request(runtime.name(), id, request.key.is_some());
        observe::call(Call::Schedule, at, || {
            self.store_timer(runtime, id, after, request)
        })
    }

    fn store_timer(
        &self,
        runtime: &Arc<MachineRuntime>,
        id: &str,
        after: Duration,
        request: RequestSpec,
    ) -> Result<ScheduledTimer> {
        if request.key.is_none() {
            return Err(Error::invalid_input(
                InputField::Key,
                "a scheduled request needs an idempotency key: it identifies the timer and makes its firing safe to repeat",
            ));
        }
        let request = self.checked(runtime, id, request)?;
        let live = runtime.rules();
        let fingerprints = live.rules.fingerprints(id, &request);
        let now = self.clock.now_ms();
        let after = u64::try_from(after.as_millis()).unwrap_or(u64::MAX);
        let timer = TimerRecord {
            id: id.to_owned(),
            due_at: now.saturating_add(after),
            kind: TimerKind::Scheduled,
            request: (*request).clone(),
            fingerprint: fingerprints[0],
        };
        let stored = timer.stored_key();
        let store = runtime.store.clone();
        let machine = runtime.name().to_owned();
        let key = request.key.clone().unwrap_or_default();
        let outcome = Arc::new(Mutex::new(None));
        let seen = outcome.clone();
        let task: Task = Box::new(move |writer| {
            let reused = || Error::KeyReused {
                machine: machine.clone(),
                key: key.clone(),
            };
            // A request already applied under this key is not scheduled again.
            let applied: Option<KeyRecord> = store
                .key_record(&stored)?
                .filter(|record| record.expires_at > now);
            let result = if let Some(record) = applied {
                if !fingerprints.contains(&record.fingerprint) {
                    return Err(reused());
                }
                TimerRecord {
                    due_at: record.outcome.at,
                    ..timer
                }
            } else if let Some(pending) = store.timer(&stored)? {
                if !fingerprints.contains(&pending.fingerprint) {
                    return Err(reused());
                }
                pending
            } else {
                writer.put_timer(&machine, &timer)?;
                timer
            };
            *seen.lock().unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(result);
            Ok(1)
        });
        self.run_task(task, "scheduling a request")?;
        if let Some(runner) = self.timers.get() {
            runner.wake();
        }
        let timer = outcome
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .take()
            .ok_or_else(|| {
                Error::storage("scheduling a request", std::io::Error::other("no answer"))
            })?;
        Ok(timer.view(runtime.name()))
    }

    /// The pending timers of `id` (declared timeouts and scheduled requests).
    pub(crate) fn scheduled(
        &self,
        runtime: &MachineRuntime,
        id: &str,
    ) -> Result<Vec<ScheduledTimer>> {
        observe::call(Call::Scheduled, Subject::entity(runtime.name(), id), || {
            self.limits.check_id(id)?;
            let timers = runtime.store.timers_of(id)?;
            self.settle_read()?;
            let mut views: Vec<ScheduledTimer> = timers
                .iter()
                .map(|timer| timer.view(runtime.name()))
                .collect();
            views.sort_by(|a, b| (a.due_at, &a.key).cmp(&(b.due_at, &b.key)));
            Ok(views)
        })
    }

    /// Cancels the pending timer of `id` with this key (in `scope`); returns
    /// whether one was pending.
    pub(crate) fn cancel_scheduled(
        &self,
        runtime: &MachineRuntime,
        id: &str,
        scope: Option<&str>,
        key: &str,
    ) -> Result<bool> {
        let at = Subject::request(runtime.name(), id, true);
        observe::call(Call::CancelScheduled, at, || {
            self.limits.check_id(id)?;
            let stored = stored_key(scope, key);
            let store = runtime.store.clone();
            let (machine, id) = (runtime.name().to_owned(), id.to_owned());
            let task: Task = Box::new(move |writer| match store.timer(&stored)? {
                Some(pending) if pending.id == id => {
                    Ok(u64::from(writer.remove_timer(&machine, &stored)?.is_some()))
                }
                _ => Ok(0),
            });
            Ok(self.run_task(task, "cancelling a scheduled request")? > 0)
        })
    }

    /// Cancels and schedules again the pending request under `key`.
    pub(crate) fn reschedule(
        &self,
        runtime: &Arc<MachineRuntime>,
        id: &str,
        key: &str,
        after: Duration,
    ) -> Result<Option<ScheduledTimer>> {
        self.limits.check_id(id)?;
        let pending = runtime.store.timer(&stored_key(None, key))?;
        let Some(pending) = pending.filter(|timer| timer.id == id) else {
            return Ok(None);
        };
        if !self.cancel_scheduled(runtime, id, None, key)? {
            return Ok(None);
        }
        self.schedule(runtime, id, after, pending.request).map(Some)
    }

    /// Fires every timer due at the clock's now; returns how many were
    /// processed (applied, found stale, or failed for good and removed).
    pub(crate) fn fire_due_timers(&self) -> Result<usize> {
        let mut processed = 0;
        loop {
            let now = self.clock.now_ms();
            let due = earliest_per_entity(self.store.due_timers(now, FIRE_ROUND)?);
            observe::timers_due(due.len());
            if due.is_empty() {
                return Ok(processed);
            }
            let round = self.fire(due)?;
            processed += round;
            if round == 0 {
                // Nothing could be settled this round (a storage failure):
                // leave the rest for later rather than spin.
                return Ok(processed);
            }
        }
    }

    /// Fires these timers together; returns how many were settled.
    fn fire(&self, due: Vec<(String, TimerRecord)>) -> Result<usize> {
        let mut requests = Vec::with_capacity(due.len());
        let mut settled = 0;
        for (machine, timer) in due {
            let runtime = match self.runtime_by_name_for_timers(&machine) {
                Ok(runtime) => runtime,
                Err(error) => {
                    let error = observe::loggable(&error);
                    tracing::warn!(error, machine, "a timer's machine cannot be opened");
                    continue;
                }
            };
            let stored = timer.stored_key();
            match self.checked(&runtime, &timer.id, timer.request.clone()) {
                Ok(request) => requests.push((runtime, timer.id.clone(), request, Some(stored))),
                Err(error) => {
                    // The definition changed: the request no longer makes sense.
                    let error = observe::loggable(&error);
                    tracing::info!(
                        error,
                        id = timer.id,
                        "dropped a timer whose request is no longer valid"
                    );
                    self.drop_timer(&runtime, &stored)?;
                    settled += 1;
                }
            }
        }
        let fired: Vec<_> = requests
            .iter()
            .map(|(runtime, id, _, stored)| (runtime.clone(), id.clone(), stored.clone()))
            .collect();
        let results = self.apply_many(requests);
        for ((runtime, id, stored), result) in fired.into_iter().zip(results) {
            observe::timer_fired(runtime.name(), &id, &result);
            match result {
                Ok(_) => settled += 1,
                Err(error @ (Error::Storage { .. } | Error::CommitUnknown { .. })) => {
                    // Left in place: it fires again later, which is safe.
                    let error = observe::loggable(&error);
                    tracing::warn!(
                        error,
                        id,
                        "retry: firing a timer failed; it will fire again"
                    );
                }
                Err(_) => {
                    // The entity moved on (a stale timeout), or the request is
                    // refused: the timer has fired, with no effect.
                    if let Some(stored) = stored {
                        // It may be gone already (disarmed by an earlier
                        // firing of the same batch): processed either way.
                        self.drop_timer(&runtime, &stored)?;
                    }
                    settled += 1;
                }
            }
        }
        Ok(settled)
    }

    fn drop_timer(&self, runtime: &MachineRuntime, stored: &[u8]) -> Result<bool> {
        let (machine, stored) = (runtime.name().to_owned(), stored.to_vec());
        let task: Task = Box::new(move |writer| {
            Ok(u64::from(writer.remove_timer(&machine, &stored)?.is_some()))
        });
        Ok(self.run_task(task, "removing a fired timer")? > 0)
    }
}

/// Keeps each entity's first timer of a round (the list is in due order):
/// an entity's later timers wait for the next round, after the earlier one
/// has fired and whatever it disarmed is gone. So an entity's timers fire one
/// after the other in due order, and a timeout that an earlier timer's
/// firing disarms is never fired (nor counted).
fn earliest_per_entity(due: Vec<(String, TimerRecord)>) -> Vec<(String, TimerRecord)> {
    let mut seen = std::collections::HashSet::new();
    due.into_iter()
        .filter(|(machine, timer)| seen.insert((machine.clone(), timer.id.clone())))
        .collect()
}
