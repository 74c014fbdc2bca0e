//! Declared timeouts: a state that an entity may hold only for so long,
//! after which the engine fires one of the state's events (SPEC section 9).
//! This module holds the definition side: [`TimeoutDef`], the builder, the
//! lookup, the validation rules and [`format_delay`].

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::MachineDef;

/// A state's timeout: once an entity has been in the state for `after_ms`
/// milliseconds, the engine fires `event` (`#[timeout(after = "30m", fire =
/// expire)]` is `after_ms: 1_800_000, event: "expire"`).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct TimeoutDef {
    /// The delay after entering the state, in milliseconds (at least 1).
    pub after_ms: u64,
    /// The event to fire: one the state declares a transition for.
    pub event: String,
}

impl TimeoutDef {
    /// The delay as a [`Duration`].
    pub fn after(&self) -> Duration {
        Duration::from_millis(self.after_ms)
    }
}

impl MachineDef {
    /// Gives the state `state` a timeout: `after` entering it, the engine
    /// fires `event` (a transition that `state` declares). Replaces a timeout
    /// the state had. The delay is kept in whole milliseconds (a fraction is
    /// dropped; more than `u64::MAX` ms counts as `u64::MAX`). No effect
    /// when no state is named `state` (add the state first); with several
    /// states of that name, the first gets it.
    ///
    /// ```
    /// use std::time::Duration;
    /// use idemflow::{MachineDef, TimeoutDef};
    ///
    /// let def = MachineDef::new("invoice", "sent")
    ///     .state("sent")
    ///     .terminal_state("paid")
    ///     .terminal_state("expired")
    ///     .transition("sent", "pay", "paid")
    ///     .transition("sent", "expire", "expired")
    ///     .timeout("sent", Duration::from_secs(30 * 60), "expire");
    /// def.validate()?;
    /// assert_eq!(
    ///     def.timeout_of("sent"),
    ///     Some(&TimeoutDef { after_ms: 1_800_000, event: "expire".to_owned() })
    /// );
    /// assert_eq!(def.timeout_of("paid"), None);
    /// # Ok::<(), idemflow::Error>(())
    /// ```
    #[must_use]
    pub fn timeout(
        mut self,
        state: impl AsRef<str>,
        after: Duration,
        event: impl Into<String>,
    ) -> Self {
        let state = state.as_ref();
        if let Some(found) = self.states.iter_mut().find(|s| s.name == state) {
            found.timeout = Some(TimeoutDef {
                after_ms: millis(after),
                event: event.into(),
            });
        }
        self
    }

    /// The timeout of the state with that (current) name, if it has one.
    pub fn timeout_of(&self, state: &str) -> Option<&TimeoutDef> {
        self.find_state(state)?.timeout.as_ref()
    }
}

/// A duration in whole milliseconds, `u64::MAX` at most.
pub(super) fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

/// The timeout rules of [`MachineDef::validate`], appended to `problems`.
pub(super) fn problems(def: &MachineDef, problems: &mut Vec<String>) {
    for state in &def.states {
        let Some(timeout) = &state.timeout else {
            continue;
        };
        if state.terminal {
            problems.push(format!(
                "terminal state {:?} has a timeout, but no transition leaves a terminal state",
                state.name
            ));
            continue;
        }
        if timeout.after_ms == 0 {
            problems.push(format!(
                "the timeout of state {:?} is zero; it must be at least 1 ms",
                state.name
            ));
        }
        if def.target(&state.name, &timeout.event).is_none() {
            problems.push(format!(
                "the timeout of state {:?} fires {:?}, but no transition from {:?} fires it",
                state.name, timeout.event, state.name
            ));
        }
    }
}

/// A delay in the largest unit that expresses it exactly: `d`, `h`, `m`, `s`
/// or `ms` (the units of `#[timeout(after = "..")]`), so that reading it back
/// gives the same number of milliseconds.
///
/// ```
/// use idemflow::format_delay;
///
/// assert_eq!(format_delay(1_800_000), "30m");
/// assert_eq!(format_delay(90_000), "90s");
/// assert_eq!(format_delay(1_500), "1500ms");
/// assert_eq!(format_delay(172_800_000), "2d");
/// assert_eq!(format_delay(0), "0ms");
/// ```
pub fn format_delay(ms: u64) -> String {
    const UNITS: [(u64, &str); 4] = [
        (86_400_000, "d"),
        (3_600_000, "h"),
        (60_000, "m"),
        (1_000, "s"),
    ];
    if ms > 0 {
        for (size, unit) in UNITS {
            if ms % size == 0 {
                return format!("{}{unit}", ms / size);
            }
        }
    }
    format!("{ms}ms")
}
