//! The reads of a machine whose trees do not exist yet.

use crate::decide::KeyRecord;
use crate::definitions::unused;
use crate::error::{Missing, NameKind, Result};
use crate::outcome::{EntityRecord, HistoryRecord};
use crate::store::MachineStore;
use crate::timers::TimerRecord;

/// The reads of a machine whose trees do not exist yet: nothing is there.
pub(super) struct EmptyMachine;

impl MachineStore for EmptyMachine {
    fn key_record(&self, _: &[u8]) -> Result<Option<KeyRecord>> {
        Ok(None)
    }

    fn get(&self, _: &str) -> Result<Option<EntityRecord>> {
        Ok(None)
    }

    fn history(&self, _: &str) -> Result<Vec<HistoryRecord>> {
        Ok(Vec::new())
    }

    fn in_state(&self, _: &str, _: Option<&str>, _: usize) -> Result<Vec<String>> {
        Ok(Vec::new())
    }

    fn count_in_state(&self, _: &str) -> Result<u64> {
        Ok(0)
    }

    fn key_count(&self) -> Result<u64> {
        Ok(0)
    }

    fn timer(&self, _: &[u8]) -> Result<Option<TimerRecord>> {
        Ok(None)
    }

    fn timers_of(&self, _: &str) -> Result<Vec<TimerRecord>> {
        Ok(Vec::new())
    }

    fn timers(&self, _: usize) -> Result<Vec<TimerRecord>> {
        Ok(Vec::new())
    }

    fn references(&self, states: &[String], events: &[String]) -> Result<Vec<Missing>> {
        Ok(states
            .iter()
            .map(|name| unused(NameKind::State, name))
            .chain(events.iter().map(|name| unused(NameKind::Event, name)))
            .collect())
    }
}
