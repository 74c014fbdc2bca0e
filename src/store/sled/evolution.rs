//! Definition changes in sled: migrating a renamed state's records and
//! index entries, and counting what stored data still uses a name.

use sled::transaction::ConflictableTransactionError;
use sled::Transactional;

use super::machine::SledMachine;
use super::storage;
use crate::definitions::References;
use crate::error::{Error, Missing, Result};
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
        let mut references = References::new(states, events);
        if references.is_empty() {
            return Ok(references.finish());
        }
        let states: Vec<String> = references.states().map(str::to_owned).collect();
        for state in &states {
            references.in_state(state, self.count_in_state(state)?);
        }
        for item in self.history.iter() {
            let (key, value) = item.map_err(storage("reading history"))?;
            let (id, entry) = decode_at(&self.history_name, &key, || {
                let (id, version) = codec::decode_history_key(&key)?;
                Ok((id, codec::decode_change(version, &value)?))
            })?;
            references.history_entry(&id, &entry);
        }
        for item in self.keys.iter() {
            let (key, value) = item.map_err(storage("reading idempotency keys"))?;
            let record = self.decode_key_record(&key, &value)?;
            references.key_record(&record.outcome);
        }
        Ok(references.finish())
    }
}
