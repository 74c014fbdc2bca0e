//! A machine's timers in sled: three key spaces in one tree (see
//! `codec::timer_due_key` and neighbours), written inside the request's
//! transaction (arming, disarming, removing a fired timer) or on their own
//! (scheduling, cancelling).

use sled::transaction::TransactionalTree;

use super::machine::{tx_error, SledMachine, TxResult};
use super::storage;
use crate::error::Result;
use crate::store::codec::{self, decode_at};
use crate::timers::TimerRecord;

/// A timer and its two index entries (by key, by entity), replacing a timer
/// with the same key.
pub(super) fn put_timer(timers: &TransactionalTree, timer: &TimerRecord) -> TxResult<()> {
    let key = timer.stored_key();
    remove_timer(timers, &key)?;
    timers.insert(
        codec::timer_due_key(timer.due_at, &timer.id, &key),
        codec::encode_timer(timer),
    )?;
    timers.insert(
        codec::timer_key_key(&key),
        codec::encode_timer_ref(timer.due_at, &timer.id),
    )?;
    timers.insert(
        codec::timer_entity_key(&timer.id, &key),
        codec::encode_timer_ref(timer.due_at, &timer.id),
    )?;
    Ok(())
}

/// Removes the timer with this stored key (its three entries), if pending;
/// returns its due-ordered key. A damaged index entry is dropped.
pub(super) fn remove_timer(timers: &TransactionalTree, key: &[u8]) -> TxResult<Option<Vec<u8>>> {
    let Some(reference) = timers.remove(codec::timer_key_key(key))? else {
        return Ok(None);
    };
    let Ok((due_at, id)) = codec::decode_timer_ref(&reference) else {
        return Ok(None);
    };
    let due_key = codec::timer_due_key(due_at, &id, key);
    timers.remove(due_key.clone())?;
    timers.remove(codec::timer_entity_key(&id, key))?;
    Ok(Some(due_key))
}

impl SledMachine {
    pub(super) fn decode_timer(&self, key: &[u8], value: &[u8]) -> Result<TimerRecord> {
        decode_at(&self.timers_name, key, || codec::decode_timer(value))
    }

    /// Up to `limit` timers due at `now` (all when `now` is `None`), in due order.
    pub(super) fn due_timers(&self, now: Option<u64>, limit: usize) -> Result<Vec<TimerRecord>> {
        let (start, end) = match now {
            Some(now) => codec::timer_due_range(now),
            None => (
                codec::timer_due_prefix(),
                vec![codec::timer_due_prefix()[0] + 1],
            ),
        };
        let mut timers = Vec::new();
        for item in self.timers.range(start..end).take(limit) {
            let (key, value) = item.map_err(storage("reading timers"))?;
            timers.push(self.decode_timer(&key, &value)?);
        }
        Ok(timers)
    }

    /// When the earliest pending timer is due.
    pub(super) fn next_due(&self) -> Result<Option<u64>> {
        let prefix = codec::timer_due_prefix();
        match self.timers.scan_prefix(&prefix).next() {
            Some(item) => {
                let (key, value) = item.map_err(storage("reading timers"))?;
                Ok(Some(self.decode_timer(&key, &value)?.due_at))
            }
            None => Ok(None),
        }
    }

    /// Stores a timer outside a request (a scheduled request).
    pub(super) fn store_timer(&self, timer: &TimerRecord) -> Result<()> {
        self.timers
            .transaction(|timers| put_timer(timers, timer))
            .map_err(|error| tx_error(error, "scheduling a request"))
    }

    /// Removes a timer outside a request; returns it if it was pending.
    pub(super) fn delete_timer(&self, key: &[u8]) -> Result<Option<TimerRecord>> {
        let pending = self.timer_of_key(key)?;
        self.timers
            .transaction(|timers| remove_timer(timers, key))
            .map_err(|error| tx_error(error, "removing a timer"))?;
        Ok(pending)
    }

    pub(super) fn timer_of_key(&self, key: &[u8]) -> Result<Option<TimerRecord>> {
        let Some(reference) = self
            .timers
            .get(codec::timer_key_key(key))
            .map_err(storage("reading timers"))?
        else {
            return Ok(None);
        };
        let (due_at, id) = decode_at(&self.timers_name, key, || {
            codec::decode_timer_ref(&reference)
        })?;
        let due_key = codec::timer_due_key(due_at, &id, key);
        match self
            .timers
            .get(&due_key)
            .map_err(storage("reading timers"))?
        {
            Some(value) => self.decode_timer(&due_key, &value).map(Some),
            None => Ok(None),
        }
    }
}
