//! The workload threads: writers (keyed transitions, retries, expected
//! versions), the consumer that drains the outbox, the key purger, readers
//! and flushers.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use idemflow::{Engine, Error, Machine, Request};
use serde_json::json;

use super::config::Config;
use super::shared::{Role, Shared};
use super::{entity_id, SoakEvent, SoakState, CYCLE, MACHINE};

/// xorshift64*.
struct Rng(u64);

impl Rng {
    /// A generator seeded with `seed` (0 counts as 1).
    fn new(seed: u64) -> Rng {
        Rng(seed.max(1))
    }
    /// The next number.
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    /// A number below `n` (0 when `n` is 0).
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// The padding that makes a payload about `payload_bytes` long.
fn payload_pad(config: &Config) -> String {
    "x".repeat(config.payload_bytes.saturating_sub(40))
}

/// Writer `w`: creates entities and applies keyed `advance` transitions
/// (some retried, some with an expected version) until the stop.
pub(super) fn writer(shared: &Shared, machine: &Machine<SoakState>, role: &Role, w: usize) {
    let config = &shared.config;
    let mut rng = Rng::new(config.seed ^ (0x9e37_79b9_7f4a_7c15u64.wrapping_mul(w as u64 + 1)));
    let pad = payload_pad(config);
    let actor = format!("writer-{w}");
    let interval = if config.rate > 0 {
        Some(Duration::from_secs_f64(
            config.writers as f64 / config.rate as f64,
        ))
    } else {
        None
    };
    let mut next_at = Instant::now();
    let mut serial = 0u64;
    // The last applied keyed request, to retry it.
    let mut last: Option<(String, Request<SoakState>, Instant)> = None;
    while !shared.stopping() {
        if let Some(interval) = interval {
            next_at += interval;
            let now = Instant::now();
            if next_at > now {
                std::thread::sleep(next_at - now);
            } else if now - next_at > Duration::from_secs(1) {
                next_at = now;
            }
        }
        serial += 1;
        let i = rng.below(config.entities as u64) as usize;
        let id = entity_id(i);
        if !shared.created[i].load(Ordering::Relaxed) {
            let payload = json!({"w": w, "n": serial, "pad": pad});
            match machine.create_with(&id, Some(payload), Some(actor.clone())) {
                Ok(outcome) => {
                    if outcome.was_applied() {
                        shared.applied.fetch_add(1, Ordering::Relaxed);
                        shared.creations.fetch_add(1, Ordering::Relaxed);
                    } else {
                        shared.noops.fetch_add(1, Ordering::Relaxed);
                    }
                    shared.created[i].store(true, Ordering::Relaxed);
                }
                Err(error) => shared.error("create", &error),
            }
        } else {
            let roll = rng.below(100);
            let retry = match &last {
                Some((_, _, at)) if roll < config.retry_percent => Some(at.elapsed()),
                _ => None,
            };
            let (target, request) = match (retry, &last) {
                (Some(_), Some((target, request, _))) => (target.clone(), request.clone()),
                _ => {
                    let mut request = Request::fire(SoakEvent::Advance)
                        .key(format!("k-{w}-{serial}-{}", config.seed))
                        .payload(json!({"w": w, "n": serial, "pad": pad}))
                        .actor(actor.clone());
                    if roll >= 100 - config.expect_percent {
                        match machine.get(&id) {
                            Ok(Some(entity)) => {
                                request = request.expect_version(entity.version);
                            }
                            Ok(None) => shared.violation(format!("{id} created but not found")),
                            Err(error) => shared.error("get before write", &error),
                        }
                    }
                    (id, request)
                }
            };
            // A key's retention runs from when the engine recorded it, so the
            // retry's age is measured from when the original was sent (an
            // answer that took longer than the retention may find the key
            // expired on a retry right after it: the 2-hour soak of
            // 2026-12-01 had one call answered after 2.8 s, with 2 s retention).
            let sent = Instant::now();
            match machine.apply(&target, request.clone()) {
                Ok(outcome) => {
                    if outcome.is_replay() {
                        shared.replays.fetch_add(1, Ordering::Relaxed);
                    } else if outcome.was_applied() {
                        shared.applied.fetch_add(1, Ordering::Relaxed);
                    } else {
                        shared.noops.fetch_add(1, Ordering::Relaxed);
                    }
                    match retry {
                        // A retry well within the key's retention must replay.
                        Some(after)
                            if !outcome.is_replay()
                                && after.as_millis() < u128::from(config.key_retention_ms / 2) =>
                        {
                            shared.violation(format!(
                                "{target}: retry after {after:?} was not a replay"
                            ));
                        }
                        Some(_) => {}
                        None if outcome.was_applied() => {
                            last = Some((target, request, sent));
                        }
                        None => {}
                    }
                }
                Err(Error::VersionConflict { .. }) => {
                    shared.conflicts.fetch_add(1, Ordering::Relaxed);
                }
                Err(error) => shared.error("apply", &error),
            }
        }
        shared.writes.fetch_add(1, Ordering::Relaxed);
        shared.tick(role);
    }
}

/// Drains the outbox; `expected` ends as the last acknowledged version of
/// each entity.
pub(super) fn consume(
    shared: &Shared,
    engine: &Engine,
    role: &Role,
    expected: &Mutex<HashMap<String, u64>>,
) {
    let outbox = engine.outbox();
    let mut last_acked: HashMap<String, u64> = HashMap::new();
    let every = Duration::from_secs(shared.config.drain_every_secs);
    let mut next_drain = Instant::now() + every;
    while !shared.stopping() {
        if !every.is_zero() && Instant::now() < next_drain {
            shared.idle(role);
            std::thread::sleep(Duration::from_millis(100));
            continue;
        }
        let events = match outbox.pending(shared.config.drain_batch) {
            Ok(events) => events,
            Err(error) => {
                shared.error("pending", &error);
                std::thread::sleep(Duration::from_millis(10));
                continue;
            }
        };
        shared.pending_calls.fetch_add(1, Ordering::Relaxed);
        shared.tick(role);
        if events.is_empty() {
            // Drained: the next burst comes after a pause.
            next_drain = Instant::now() + every;
            std::thread::sleep(Duration::from_millis(2));
            continue;
        }
        for event in &events {
            if event.machine != MACHINE {
                shared.violation(format!("event of machine {}", event.machine));
                continue;
            }
            let last = last_acked.entry(event.id.clone()).or_insert(0);
            if event.version != *last + 1 {
                shared.violation(format!(
                    "{}: outbox event version {} after {} (duplicate or gap)",
                    event.id, event.version, last
                ));
            }
            *last = (*last).max(event.version);
        }
        match outbox.ack(&events) {
            Ok(removed) => {
                if removed != events.len() {
                    shared.violation(format!(
                        "ack removed {removed} of {} pending events",
                        events.len()
                    ));
                }
                shared
                    .acked
                    .fetch_add(events.len() as u64, Ordering::Relaxed);
            }
            Err(error) => shared.error("ack", &error),
        }
        shared.tick(role);
    }
    *expected.lock().unwrap() = last_acked;
}

/// Purges expired keys, pausing `purge_pause_ms` between calls.
pub(super) fn purge(shared: &Shared, engine: &Engine, role: &Role) {
    while !shared.stopping() {
        match engine.purge_expired_keys() {
            Ok(purged) => {
                shared.purged.fetch_add(purged, Ordering::Relaxed);
            }
            Err(error) => shared.error("purge_expired_keys", &error),
        }
        shared.purge_calls.fetch_add(1, Ordering::Relaxed);
        shared.tick(role);
        sleep_unless_stopping(shared, shared.config.purge_pause_ms);
    }
}

/// Flushes the engine, pausing `flush_pause_ms` between calls.
pub(super) fn flush(shared: &Shared, engine: &Engine, role: &Role) {
    while !shared.stopping() {
        if let Err(error) = engine.flush() {
            shared.error("flush", &error);
        }
        shared.flushes.fetch_add(1, Ordering::Relaxed);
        shared.tick(role);
        sleep_unless_stopping(shared, shared.config.flush_pause_ms);
    }
}

/// Sleeps `ms` milliseconds, or less if the threads must stop.
pub(super) fn sleep_unless_stopping(shared: &Shared, ms: u64) {
    let until = Instant::now() + Duration::from_millis(ms);
    while !shared.stopping() && Instant::now() < until {
        std::thread::sleep((until - Instant::now()).min(Duration::from_millis(50)));
    }
}

/// Reader `r`: reads random entities and their histories (checking the
/// cycle and the version chain), and now and then the counts by state.
pub(super) fn read(shared: &Shared, machine: &Machine<SoakState>, role: &Role, r: usize) {
    let config = &shared.config;
    let mut rng = Rng::new(config.seed ^ 0x5151_5151 ^ (r as u64 + 1));
    let mut calls = 0u64;
    while !shared.stopping() {
        calls += 1;
        if calls % 64 == 0 {
            // One range scan per state, not a snapshot: under writes an
            // entity that moves during the scan may be counted twice or
            // not at all, so only the final counts are checked (`check`).
            if let Err(error) = machine.count_by_state() {
                shared.error("count_by_state", &error);
            }
        } else {
            let i = rng.below(config.entities as u64) as usize;
            let id = entity_id(i);
            match machine.get(&id) {
                Ok(Some(entity)) => {
                    if entity.state != CYCLE[((entity.version - 1) % 3) as usize] {
                        shared.violation(format!(
                            "{id}: state {:?} at version {}",
                            entity.state, entity.version
                        ));
                    }
                    if calls % 4 == 0 {
                        match machine.history(&id) {
                            Ok(history) => {
                                let len = history.len() as u64;
                                let chain = history
                                    .iter()
                                    .enumerate()
                                    .all(|(k, entry)| entry.version == k as u64 + 1);
                                if len < entity.version || !chain {
                                    shared.violation(format!(
                                        "{id}: history of {len} entries (chain {chain}) read \
                                         after version {}",
                                        entity.version
                                    ));
                                }
                            }
                            Err(error) => shared.error("history", &error),
                        }
                    }
                }
                Ok(None) => {
                    if shared.created[i].load(Ordering::Relaxed) {
                        shared.violation(format!("{id} created but not found by a reader"));
                    }
                }
                Err(error) => shared.error("get", &error),
            }
        }
        shared.reads.fetch_add(1, Ordering::Relaxed);
        shared.tick(role);
    }
}
