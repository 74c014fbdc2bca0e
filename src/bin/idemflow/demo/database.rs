//! Opening the demo's database.

use std::path::Path;

use idemflow::{Durability, Engine};

use crate::commands::{connect, describe_db, postgres_url};
use crate::{CliError, CliResult};

/// Opens the demo's database: temporary, a directory or a PostgreSQL
/// database that holds no orders yet.
pub(crate) fn open_database(db: Option<&Path>, durability: Durability) -> CliResult<Engine> {
    let builder = Engine::builder().durability(durability);
    let Some(dir) = db else {
        return Ok(builder.temporary()?);
    };
    let engine = match postgres_url(dir) {
        Some(url) => connect(url, durability)?,
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

pub(crate) fn open_directory(builder: idemflow::EngineBuilder, dir: &Path) -> CliResult<Engine> {
    if dir.exists() && !dir.is_dir() {
        return Err(CliError::new(format!(
            "{} is not a directory; --db takes a database directory",
            dir.display()
        )));
    }
    Ok(builder.open(dir)?)
}
