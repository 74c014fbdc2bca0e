//! Definition changes in sled: migrating a renamed state's records and
//! index entries, and counting what stored data still uses a name.

use std::collections::HashSet;

use sled::transaction::ConflictableTransactionError;
use sled::Transactional;

use super::machine::SledMachine;
use super::storage;
use crate::definitions::unused;
use crate::error::{Error, Missing, NameKind, Result};
use crate::store::codec::{self, decode_at};
use crate::store::MachineStore;

impl SledMachine {
    /// Moves up to `budget` entities from state `from` to state `to`: the
    /// record and the state index in one transaction per batch.
    pub(super) fn migrate_state(&self, from: &str, to: &str, budget: usize) -> Result<u64> {
        let prefix = codec::state_prefix(from);
        let mut ids = Vec::new();
        for item in self.by_state.scan_prefix(&prefix).keys().take(budget) {
            let key = item.map_err(storage("reading the state index"))?;
            ids.push(decode_at(&self.by_state_name, &key, || {
                codec::id_of_state_key(prefix.len(), &key)
            })?);
        }
        if ids.is_empty() {
            return Ok(0);
        }
        let mut moves = Vec::with_capacity(ids.len());
        for id in &ids {
            let Some(mut record) = self.get(id)? else {
                // An index entry without a record: drop the entry.
                moves.push((id.clone(), None));
                continue;
            };
            if record.state == from {
                record.state = to.to_owned();
            }
            moves.push((id.clone(), Some(record)));
        }
        (&self.entities, &self.by_state)
            .transaction(|(entities, by_state)| {
                for (id, record) in &moves {
                    by_state.remove(codec::state_key(from, id))?;
                    if let Some(record) = record {
                        entities.insert(id.as_bytes(), codec::encode_entity(record))?;
                        by_state.insert(codec::state_key(&record.state, id), codec::marker())?;
                    }
                }
                Ok::<_, ConflictableTransactionError<Error>>(())
            })
            .map_err(|error| match error {
                sled::transaction::TransactionError::Abort(error) => error,
                sled::transaction::TransactionError::Storage(error) => {
                    Error::storage("migrating a renamed state", error)
                }
            })?;
        Ok(moves.len() as u64)
    }

    /// See [`MachineStore::references`].
    pub(super) fn count_references(
        &self,
        states: &[String],
        events: &[String],
    ) -> Result<Vec<Missing>> {
        let mut counts: Vec<Missing> = states
            .iter()
            .map(|name| unused(NameKind::State, name))
            .chain(events.iter().map(|name| unused(NameKind::Event, name)))
            .collect();
        if counts.is_empty() {
            return Ok(counts);
        }
        for count in counts.iter_mut().filter(|c| c.kind == NameKind::State) {
            count.entities = self.count_in_state(&count.name)?;
        }
        // History: which entities' histories name each.
        let mut named_by: Vec<HashSet<String>> = vec![HashSet::new(); counts.len()];
        for item in self.history.iter() {
            let (key, value) = item.map_err(storage("reading history"))?;
            let entry = decode_at(&self.history_name, &key, || {
                let (id, version) = codec::decode_history_key(&key)?;
                Ok((id, codec::decode_change(version, &value)?))
            })?;
            let (id, change) = entry;
            for (index, count) in counts.iter().enumerate() {
                let named = match count.kind {
                    NameKind::State => {
                        change.to == count.name || change.from.as_deref() == Some(&count.name)
                    }
                    NameKind::Event => change.event.as_deref() == Some(&count.name),
                };
                if named {
                    named_by[index].insert(id.clone());
                }
            }
        }
        for (count, ids) in counts.iter_mut().zip(named_by) {
            count.in_history = ids.len() as u64;
        }
        // Key records: their stored outcome.
        for item in self.keys.iter() {
            let (key, value) = item.map_err(storage("reading idempotency keys"))?;
            let record = self.decode_key_record(&key, &value)?;
            let outcome = &record.outcome;
            for count in &mut counts {
                let named = match count.kind {
                    NameKind::State => {
                        outcome.state == count.name || outcome.from.as_deref() == Some(&count.name)
                    }
                    NameKind::Event => outcome.event.as_deref() == Some(&count.name),
                };
                if named {
                    count.key_records += 1;
                }
            }
        }
        Ok(counts)
    }
}
