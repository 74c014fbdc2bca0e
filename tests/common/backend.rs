//! One test suite, two backends: sled and PostgreSQL.
//!
//! A backend-independent test is a function `fn name(db: &TestDb)` listed in
//! [`backend_tests!`](crate::backend_tests), which makes one `#[test]` per
//! backend (`sled::name`, `postgres::name`). Each run gets a database of its
//! own: a temporary directory on sled, a fresh schema on PostgreSQL (named
//! after the test, in the database of `IDEMFLOW_TEST_POSTGRES_URL`).
//!
//! PostgreSQL cases run when the crate is built with `--features postgres`
//! and `IDEMFLOW_TEST_POSTGRES_URL` is set (`scripts/pg-cluster.sh` starts a
//! throw-away server); otherwise they print why they were skipped, on
//! stderr, and pass. With `IDEMFLOW_REQUIRE_POSTGRES=1` (set by `.ci/run`)
//! a skipped PostgreSQL case fails instead.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use idemflow::{Engine, EngineBuilder};

/// A storage backend.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Sled,
    Postgres,
}

/// A database for one test case (cheap to clone; the sled directory is
/// deleted when the last clone is dropped).
#[derive(Clone)]
pub struct TestDb {
    pub backend: Backend,
    dir: Option<Arc<tempfile::TempDir>>,
    url: Option<String>,
}

impl std::fmt::Debug for TestDb {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "TestDb({:?}, {:?})", self.backend, self.location())
    }
}

static NEXT: AtomicU64 = AtomicU64::new(0);

/// The PostgreSQL server to test against, or why there is none.
pub fn postgres_url() -> Result<String, String> {
    let url = std::env::var("IDEMFLOW_TEST_POSTGRES_URL")
        .ok()
        .filter(|url| !url.trim().is_empty());
    if !cfg!(feature = "postgres") {
        return Err("built without `--features postgres`".to_owned());
    }
    url.ok_or_else(|| {
        "IDEMFLOW_TEST_POSTGRES_URL is not set (scripts/pg-cluster.sh starts a server)".to_owned()
    })
}

/// How many cases a property test runs on PostgreSQL, where each case
/// costs a schema of its own: `IDEMFLOW_PG_PROPTEST_CASES`, else
/// `PROPTEST_CASES`, else a third of `sled_default` (at least 4).
pub fn postgres_cases(sled_default: u32) -> u32 {
    ["IDEMFLOW_PG_PROPTEST_CASES", "PROPTEST_CASES"]
        .iter()
        .find_map(|name| std::env::var(name).ok()?.parse().ok())
        .unwrap_or((sled_default / 3).max(4))
}

/// Whether a missing PostgreSQL server fails the run.
pub fn postgres_required() -> bool {
    std::env::var("IDEMFLOW_REQUIRE_POSTGRES").is_ok_and(|value| value == "1")
}

/// Skips a PostgreSQL case visibly (or fails it when PostgreSQL is required).
pub fn skip_postgres(test: &str, why: &str) {
    if postgres_required() {
        panic!("{test}: PostgreSQL is required (IDEMFLOW_REQUIRE_POSTGRES=1) but {why}");
    }
    static SAID: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());
    let mut said = SAID.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    if !said.iter().any(|name| name == test) {
        said.push(test.to_owned());
        // Straight to stderr, not through `eprintln!`: the test harness
        // captures the latter for passing tests, and a skip must be seen.
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), "SKIPPED (PostgreSQL) {test}: {why}");
    }
}

/// A schema name for `test`: unique in this run and across processes.
fn schema_for(test: &str) -> String {
    let mut name: String = test
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .collect();
    name.truncate(30);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!(
        "t_{name}_{}_{}_{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::SeqCst),
        nanos % 100_000
    )
}

/// `url` with idemflow's `schema` parameter set.
pub fn with_schema(url: &str, schema: &str) -> String {
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        let separator = if url.contains('?') { '&' } else { '?' };
        format!("{url}{separator}schema={schema}")
    } else {
        format!("{url} schema={schema}")
    }
}

impl TestDb {
    /// A fresh database on `backend`, or `None` (with the skip printed) when
    /// PostgreSQL is not available.
    pub fn new(backend: Backend, test: &str) -> Option<TestDb> {
        match backend {
            Backend::Sled => Some(TestDb {
                backend,
                dir: Some(Arc::new(
                    tempfile::tempdir().expect("a temporary directory"),
                )),
                url: None,
            }),
            Backend::Postgres => match postgres_url() {
                Ok(url) => Some(TestDb {
                    backend,
                    dir: None,
                    url: Some(with_schema(&url, &schema_for(test))),
                }),
                Err(why) => {
                    skip_postgres(test, &why);
                    None
                }
            },
        }
    }

    /// The PostgreSQL database at `url` (schema included), shared with
    /// another process that made it (a child of a multi-process test).
    pub fn postgres_at(url: String) -> TestDb {
        TestDb {
            backend: Backend::Postgres,
            dir: None,
            url: Some(url),
        }
    }

    /// Another fresh database on the same backend.
    pub fn fresh(&self, test: &str) -> TestDb {
        TestDb::new(self.backend, test).expect("the backend of a running case is available")
    }

    /// Where the database is: a directory, or a connection string.
    pub fn location(&self) -> String {
        match (&self.dir, &self.url) {
            (Some(dir), _) => dir.path().display().to_string(),
            (_, Some(url)) => url.clone(),
            _ => String::new(),
        }
    }

    /// The sled directory (none on PostgreSQL).
    pub fn dir(&self) -> Option<PathBuf> {
        self.dir.as_ref().map(|dir| dir.path().to_owned())
    }

    /// Opens (or connects to) this database with `builder`.
    pub fn open_with(&self, builder: EngineBuilder) -> idemflow::Result<Engine> {
        match self.backend {
            Backend::Sled => {
                let dir = self.dir().expect("a sled test database has a directory");
                // sled releases its lock a moment after the last handle drops.
                let started = std::time::Instant::now();
                loop {
                    match builder.clone().open(&dir) {
                        Err(idemflow::Error::Locked { .. })
                            if started.elapsed() < std::time::Duration::from_secs(5) =>
                        {
                            std::thread::sleep(std::time::Duration::from_millis(10));
                        }
                        other => return other,
                    }
                }
            }
            Backend::Postgres => self.connect(builder),
        }
    }

    #[cfg(feature = "postgres")]
    fn connect(&self, builder: EngineBuilder) -> idemflow::Result<Engine> {
        builder.connect(
            self.url
                .as_deref()
                .expect("a PostgreSQL test database has a URL"),
        )
    }

    #[cfg(not(feature = "postgres"))]
    fn connect(&self, _builder: EngineBuilder) -> idemflow::Result<Engine> {
        unreachable!("PostgreSQL cases are skipped without the feature")
    }

    /// Opens this database with `builder`, panicking on failure.
    pub fn open(&self, builder: EngineBuilder) -> Engine {
        self.open_with(builder)
            .unwrap_or_else(|error| panic!("opening {self:?}: {error}"))
    }
}

/// Runs `test` on a fresh database of `backend` (or skips it visibly).
pub fn run_on(backend: Backend, name: &str, test: fn(&TestDb)) {
    if let Some(db) = TestDb::new(backend, name) {
        test(&db);
    }
}

/// One `#[test]` per backend for each listed `fn name(db: &TestDb)`:
/// `sled::name` and `postgres::name`.
#[macro_export]
macro_rules! backend_tests {
    ($($name:ident),* $(,)?) => {
        mod sled {
            $(
                #[test]
                fn $name() {
                    $crate::common::backend::run_on(
                        $crate::common::backend::Backend::Sled,
                        stringify!($name),
                        super::$name,
                    );
                }
            )*
        }
        mod postgres {
            $(
                #[test]
                fn $name() {
                    $crate::common::backend::run_on(
                        $crate::common::backend::Backend::Postgres,
                        stringify!($name),
                        super::$name,
                    );
                }
            )*
        }
    };
}
