//! Opening the demo's database.

use std::path::Path;

use idemflow::testing::ManualClock;
use idemflow::{Durability, Engine, EngineBuilder};

use crate::commands::{connect_with, describe_db, postgres_url};
use crate::{CliError, CliResult};

/// The settings of every engine of the demo: the demo's clock, which it
/// moves itself, and no background timer runner (the demo fires due timers
/// with `run_due_timers` after moving the clock).
pub(crate) fn demo_engine(durability: Durability, clock: &ManualClock) -> EngineBuilder {
    Engine::builder()
        .durability(durability)
        .clock(clock.clone())
        .timers(false)
}

/// Opens the demo's database: temporary, a directory or a PostgreSQL
/// database that holds no orders yet.
pub(crate) fn open_database(
    db: Option<&Path>,
    durability: Durability,
    clock: &ManualClock,
) -> CliResult<Engine> {
    let builder = demo_engine(durability, clock);
    let Some(dir) = db else {
        return Ok(builder.temporary()?);
    };
    let engine = match postgres_url(dir) {
        Some(url) => connect_with(builder, url)?,
        None => open_directory(builder, dir)?,
    };
    let has_orders = engine.machines()?.iter().any(|def| def.name == "order");
    if has_orders {
        let existing: u64 = engine
            .machine_by_name("order")?
            .count_by_state()?
            .iter()
            .map(|(_, count)| count)
            .sum();
        if existing > 0 {
            return Err(CliError::new(format!(
                "{} already holds {existing} orders; the demo's checks need a database without orders: pass a new --db",
                describe_db(dir)
            )));
        }
    }
    Ok(engine)
}

pub(crate) fn open_directory(builder: EngineBuilder, dir: &Path) -> CliResult<Engine> {
    if dir.exists() && !dir.is_dir() {
        return Err(CliError::new(format!(
            "{} is not a directory; --db takes a database directory",
            dir.display()
        )));
    }
    Ok(builder.open(dir)?)
}
