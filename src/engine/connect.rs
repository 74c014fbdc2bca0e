//! Starting an engine on PostgreSQL (feature `postgres`).

use std::sync::Arc;

use super::{Engine, EngineBuilder};
use crate::error::Result;
use crate::store::postgres::{PgOptions, PgStore};

impl Engine {
    /// Connects to a PostgreSQL database with default options
    /// ([`Durability::Immediate`](crate::Durability::Immediate), 24 h key
    /// retention), creating or upgrading idemflow's tables.
    ///
    /// `url` is a `postgres://` URL or a libpq `key=value` string. idemflow's
    /// tables live in the schema `idemflow` unless the string names another
    /// with idemflow's own parameter `schema=<name>`
    /// (`postgres://app@db/orders?schema=billing`). Any number of engine
    /// processes may connect to the same database and schema at once: there
    /// is no ownership lock, and every guarantee holds across them.
    ///
    /// ```no_run
    /// use idemflow::Engine;
    ///
    /// let engine = Engine::connect("postgres://app@127.0.0.1:5432/orders")?;
    /// # Ok::<(), idemflow::Error>(())
    /// ```
    pub fn connect(url: &str) -> Result<Engine> {
        EngineBuilder::default().connect(url)
    }
}

impl EngineBuilder {
    /// Connects to a PostgreSQL database with these options; see
    /// [`Engine::connect`]. [`Durability::Immediate`](crate::Durability::Immediate)
    /// commits with `synchronous_commit = on`;
    /// [`Durability::Buffered`](crate::Durability::Buffered) with `off`, and
    /// syncs in the background like on sled. The sled-only options (cache
    /// capacity, segment size) are ignored.
    ///
    /// ```no_run
    /// use idemflow::{Durability, Engine};
    ///
    /// let engine = Engine::builder()
    ///     .durability(Durability::Immediate)
    ///     .connect("postgres://app@127.0.0.1:5432/orders")?;
    /// # Ok::<(), idemflow::Error>(())
    /// ```
    pub fn connect(self, url: &str) -> Result<Engine> {
        self.check()?;
        let options = PgOptions::parse(url, self.durability)?;
        let store = Arc::new(PgStore::connect(options)?);
        Engine::start_on(self, store, None)
    }
}
