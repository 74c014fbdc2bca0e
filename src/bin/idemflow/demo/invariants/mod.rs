//! The invariant checks: every order read back and compared with its
//! history, the state index, the outbox and what the clients saw.

mod timeouts;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU32, Ordering};

use idemflow::{Engine, Machine, StateMachine};

use super::machine::{order_id, OrderState};
use super::scenarios::STAMPEDE_SIZE;
use super::summary::Check;
use super::tally::Tally;
use crate::render::group;
use crate::CliResult;
use timeouts::TimeoutWalk;

/// What the invariant checks found.
pub(crate) struct InvariantReport {
    pub(crate) checks: Vec<Check>,
    pub(crate) final_states: Vec<(String, u64)>,
    pub(crate) orders_charged: u64,
    pub(crate) orders_charged_twice: u64,
    /// Orders the payment timeout cancelled.
    pub(crate) orders_cancelled_by_timeout: u64,
}

/// Reads back every order, its history, the state index and the outbox, and
/// checks the engine's invariants against them and against what the clients saw.
pub(crate) fn check_invariants(
    engine: &Engine,
    orders: &Machine<OrderState>,
    count: u64,
    charges: &[AtomicU32],
    tally: &Tally,
) -> CliResult<InvariantReport> {
    let mut checks = Vec::new();
    let mut ids_by_state: BTreeMap<&'static str, BTreeSet<String>> = BTreeMap::new();
    let mut versions: BTreeMap<String, u64> = BTreeMap::new();
    let mut missing = Vec::new();
    let mut version_mismatches = Vec::new();
    let mut history_entries = 0u64;
    let mut charge_mismatches = Vec::new();
    let (mut orders_charged, mut orders_charged_twice, mut paid_by_history) = (0u64, 0u64, 0u64);

    let mut timeouts = TimeoutWalk::default();
    for order in 0..count {
        let id = order_id(order);
        let Some(entity) = orders.get(&id)? else {
            missing.push(id);
            continue;
        };
        let history = orders.history(&id)?;
        history_entries += history.len() as u64;
        timeouts.visit(&id, &history);
        let contiguous = history
            .iter()
            .enumerate()
            .all(|(index, entry)| entry.version == index as u64 + 1);
        if entity.version != history.len() as u64 || !contiguous {
            version_mismatches.push(format!(
                "{id}: version {} with {} history entries",
                entity.version,
                history.len()
            ));
        }
        let paid_in_history = history
            .iter()
            .filter(|entry| entry.to == OrderState::Paid)
            .count() as u64;
        let charged = usize::try_from(order)
            .ok()
            .and_then(|index| charges.get(index))
            .map_or(0, |charges| u64::from(charges.load(Ordering::Relaxed)));
        orders_charged += u64::from(charged > 0);
        orders_charged_twice += u64::from(charged > 1);
        paid_by_history += u64::from(paid_in_history > 0);
        if charged != paid_in_history || charged > 1 {
            charge_mismatches.push(format!(
                "{id}: charged {charged} times, {paid_in_history} payments in history"
            ));
        }
        ids_by_state
            .entry(entity.state.name())
            .or_default()
            .insert(id.clone());
        versions.insert(id, entity.version);
    }

    let first = |items: &[String]| items.first().cloned().unwrap_or_default();

    checks.push(Check::new(
        "every order exists and its version equals its history length",
        missing.is_empty() && version_mismatches.is_empty(),
        if missing.is_empty() && version_mismatches.is_empty() {
            format!(
                "{} orders, {} history entries",
                group(count),
                group(history_entries)
            )
        } else {
            format!(
                "{} missing, {} mismatched; first: {}{}",
                missing.len(),
                version_mismatches.len(),
                first(&missing),
                first(&version_mismatches)
            )
        },
    ));

    // The outbox: exactly one event per applied change, per entity in version order.
    // (It hands out durable events only: under Buffered, sync first.)
    engine.flush()?;
    let events = engine.outbox().pending(usize::MAX)?;
    let mut outbox_versions: BTreeMap<&str, Vec<u64>> = BTreeMap::new();
    let mut foreign = 0u64;
    for event in &events {
        if event.machine == "order" && versions.contains_key(&event.id) {
            outbox_versions
                .entry(&event.id)
                .or_default()
                .push(event.version);
        } else if event.machine == "order" {
            foreign += 1;
        }
    }
    let order_events: u64 = outbox_versions.values().map(|list| list.len() as u64).sum();
    let mut outbox_mismatches = Vec::new();
    for (id, version) in &versions {
        let expected: Vec<u64> = (1..=*version).collect();
        let listed = outbox_versions
            .get(id.as_str())
            .cloned()
            .unwrap_or_default();
        if listed != expected {
            outbox_mismatches.push(format!(
                "{id}: events for versions {listed:?}, expected 1..={version}"
            ));
        }
    }
    // The clients' applied requests, and the cancellations the timeouts applied.
    let applied = tally.applied + timeouts.cancelled_by_timeout;
    let outbox_ok = outbox_mismatches.is_empty()
        && foreign == 0
        && order_events == history_entries
        && order_events == applied;
    checks.push(Check::new(
        "the outbox holds exactly one event per applied change",
        outbox_ok,
        if outbox_ok {
            format!(
                "{} events = {} applied requests + {} timeouts, versions 1..=v per order",
                group(order_events),
                group(tally.applied),
                group(timeouts.cancelled_by_timeout)
            )
        } else {
            format!(
                "{} events, {} applied requests, {} timeouts, {} history entries, {} events of unknown orders, {} orders mismatched; first: {}",
                order_events,
                tally.applied,
                timeouts.cancelled_by_timeout,
                history_entries,
                foreign,
                outbox_mismatches.len(),
                first(&outbox_mismatches)
            )
        },
    ));

    // No double charge: the charges the clients saw are the payments in history.
    let paid_states: u64 = [OrderState::Paid, OrderState::Shipped, OrderState::Refunded]
        .iter()
        .map(|state| {
            ids_by_state
                .get(state.name())
                .map_or(0, |ids| ids.len() as u64)
        })
        .sum();
    let charges_ok = charge_mismatches.is_empty()
        && orders_charged_twice == 0
        && orders_charged == paid_by_history
        && orders_charged == paid_states;
    checks.push(Check::new(
        "no order charged twice",
        charges_ok,
        if charges_ok {
            format!(
                "{} orders charged once = {} paid/shipped/refunded orders",
                group(orders_charged),
                group(paid_states)
            )
        } else {
            format!(
                "{orders_charged} charged, {orders_charged_twice} twice, {paid_by_history} with a payment in history, {paid_states} paid/shipped/refunded; first: {}",
                first(&charge_mismatches)
            )
        },
    ));

    // The state index agrees with the records: counts and members.
    let mut index_mismatches = Vec::new();
    let mut final_states = Vec::new();
    let indexed_counts = orders.count_by_state()?;
    for (state, indexed) in &indexed_counts {
        let recorded = ids_by_state.get(state.name()).cloned().unwrap_or_default();
        let listed: BTreeSet<String> = orders.in_state(*state)?.into_iter().collect();
        if *indexed != recorded.len() as u64 || listed != recorded {
            index_mismatches.push(format!(
                "{}: index counts {indexed}, lists {}, records {}",
                state.name(),
                listed.len(),
                recorded.len()
            ));
        }
        final_states.push((state.name().to_owned(), *indexed));
    }
    checks.push(Check::new(
        "state index counts and members equal the records",
        index_mismatches.is_empty(),
        if index_mismatches.is_empty() {
            format!("{} states", indexed_counts.len())
        } else {
            index_mismatches.join("; ")
        },
    ));

    checks.push(Check::new(
        "pay racing cancel: exactly one applies, the other is refused",
        tally.races_with_one_winner == tally.races,
        format!(
            "{} of {} races; pay won {}, cancel won {}",
            group(tally.races_with_one_winner),
            group(tally.races),
            group(tally.races_won_by_pay),
            group(tally.races - tally.races_won_by_pay)
        ),
    ));
    checks.push(Check::new(
        "identical concurrent payments: exactly one applies, the rest replay",
        tally.stampedes_with_one_payment == tally.stampedes,
        format!(
            "{} of {} stampedes of {STAMPEDE_SIZE} identical requests",
            group(tally.stampedes_with_one_payment),
            group(tally.stampedes)
        ),
    ));
    checks.push(timeouts.check(engine, tally)?);
    checks.push(Check::new(
        "every other request got the outcome SPEC section 3 prescribes",
        tally.unexpected == 0,
        if tally.unexpected == 0 {
            "duplicates replayed, stale versions, reused keys and early events refused".to_owned()
        } else {
            format!(
                "{} unexpected; first: {}",
                tally.unexpected,
                tally
                    .unexpected_samples
                    .first()
                    .cloned()
                    .unwrap_or_default()
            )
        },
    ));

    Ok(InvariantReport {
        checks,
        final_states,
        orders_charged,
        orders_charged_twice,
        orders_cancelled_by_timeout: timeouts.cancelled_by_timeout,
    })
}
