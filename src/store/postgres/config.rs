//! Where the database is and how a connection is set up.
//!
//! A connection string is a `postgres://` URL or a libpq `key=value` string,
//! as `postgres::Config` reads them, plus one parameter of idemflow's own:
//! `schema=<name>` (the PostgreSQL schema that holds idemflow's tables,
//! default `idemflow`), removed before the rest is handed to the client.
//! Several engines (or test cases) can share one database in separate schemas.

use std::str::FromStr;
use std::time::Duration;

use crate::durability::Durability;
use crate::error::{Error, InputField, Result};

/// The schema idemflow's tables go to when the connection string names none.
pub(crate) const DEFAULT_SCHEMA: &str = "idemflow";

/// How long opening a connection may take before it fails.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// How long an unacknowledged TCP send may take before the connection is
/// declared dead (a server that vanished without closing the socket).
const TCP_USER_TIMEOUT: Duration = Duration::from_secs(30);

/// How a store connects.
#[derive(Clone)]
pub(crate) struct PgOptions {
    /// The client's configuration (host, port, user, database, ...).
    pub(crate) client: postgres::Config,
    /// The schema holding idemflow's tables.
    pub(crate) schema: String,
    /// `Immediate`: `synchronous_commit = on`; `Buffered`: `off`.
    pub(crate) durability: Durability,
}

impl std::fmt::Debug for PgOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The client configuration may hold a password: never print it.
        f.debug_struct("PgOptions")
            .field("hosts", &self.client.get_hosts())
            .field("dbname", &self.client.get_dbname())
            .field("schema", &self.schema)
            .field("durability", &self.durability)
            .finish_non_exhaustive()
    }
}

impl PgOptions {
    /// Reads a connection string (see the module docs).
    pub(crate) fn parse(url: &str, durability: Durability) -> Result<PgOptions> {
        let (rest, schema) = take_schema(url)?;
        let mut client = postgres::Config::from_str(&rest).map_err(|error| {
            Error::invalid_input(
                InputField::Config,
                format!("the PostgreSQL connection string is not valid: {error}"),
            )
        })?;
        if client.get_connect_timeout().is_none() {
            client.connect_timeout(CONNECT_TIMEOUT);
        }
        if client.get_tcp_user_timeout().is_none() {
            client.tcp_user_timeout(TCP_USER_TIMEOUT);
        }
        client.keepalives(true);
        client.keepalives_idle(Duration::from_secs(30));
        if client.get_application_name().is_none() {
            client.application_name("idemflow");
        }
        let schema = schema.unwrap_or_else(|| DEFAULT_SCHEMA.to_owned());
        check_schema(&schema)?;
        Ok(PgOptions {
            client,
            schema,
            durability,
        })
    }

    /// The schema as a quoted SQL identifier.
    pub(crate) fn quoted_schema(&self) -> String {
        format!("\"{}\"", self.schema)
    }
}

/// Whether `url` names a PostgreSQL database rather than a directory.
pub(crate) fn is_postgres_url(url: &str) -> bool {
    url.starts_with("postgres://") || url.starts_with("postgresql://")
}

/// Splits idemflow's `schema` parameter off a connection string.
fn take_schema(url: &str) -> Result<(String, Option<String>)> {
    if is_postgres_url(url) {
        let Some((base, query)) = url.split_once('?') else {
            return Ok((url.to_owned(), None));
        };
        let mut schema = None;
        let mut kept = Vec::new();
        for pair in query.split('&').filter(|pair| !pair.is_empty()) {
            match pair.strip_prefix("schema=") {
                Some(value) => schema = Some(value.to_owned()),
                None => kept.push(pair),
            }
        }
        let rest = if kept.is_empty() {
            base.to_owned()
        } else {
            format!("{base}?{}", kept.join("&"))
        };
        Ok((rest, schema))
    } else {
        let mut schema = None;
        let mut kept = Vec::new();
        for word in url.split_whitespace() {
            match word.strip_prefix("schema=") {
                Some(value) => schema = Some(value.to_owned()),
                None => kept.push(word),
            }
        }
        Ok((kept.join(" "), schema))
    }
}

/// A schema name must be a plain lower-case SQL identifier: it is spliced
/// into statements (quoted), so nothing else is accepted.
fn check_schema(schema: &str) -> Result<()> {
    let valid = !schema.is_empty()
        && schema.len() <= 63
        && schema
            .bytes()
            .next()
            .is_some_and(|first| first.is_ascii_lowercase() || first == b'_')
        && schema
            .bytes()
            .all(|byte| byte.is_ascii_lowercase() || byte.is_ascii_digit() || byte == b'_');
    if valid {
        Ok(())
    } else {
        Err(Error::invalid_input(
            InputField::Config,
            format!(
                "schema {schema:?} is not a valid name: use 1 to 63 lower-case letters, digits \
                 and underscores, not starting with a digit"
            ),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_schema_parameter_is_idemflows_own() {
        let options = PgOptions::parse(
            "postgres://app@127.0.0.1:5432/orders?schema=tenant_a&connect_timeout=3",
            Durability::Immediate,
        )
        .unwrap();
        assert_eq!(options.schema, "tenant_a");
        assert_eq!(options.client.get_dbname(), Some("orders"));
        assert_eq!(
            options.client.get_connect_timeout(),
            Some(&Duration::from_secs(3))
        );
        let options =
            PgOptions::parse("host=127.0.0.1 user=app schema=s1", Durability::Buffered).unwrap();
        assert_eq!(options.schema, "s1");
        let options =
            PgOptions::parse("postgres://app@localhost/db", Durability::Buffered).unwrap();
        assert_eq!(options.schema, DEFAULT_SCHEMA);
    }

    #[test]
    fn bad_schemas_and_urls_are_invalid_input() {
        for url in [
            "postgres://a@h/db?schema=Bad",
            "postgres://a@h/db?schema=a;drop",
            "postgres://a@h/db?schema=",
            "postgres://a@h/db?schema=1a",
            "postgres://a@h:notaport/db",
        ] {
            assert!(
                matches!(
                    PgOptions::parse(url, Durability::Immediate),
                    Err(Error::InvalidInput {
                        field: InputField::Config,
                        ..
                    })
                ),
                "{url}"
            );
        }
    }
}
