//! What one soak run does: [`Config`], from the `IDEMFLOW_SOAK_*`
//! environment variables (listed in the harness's module docs).

use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

use idemflow::Durability;

/// What one soak run does.
#[derive(Clone, Debug)]
pub struct Config {
    /// How long the workload runs, in seconds (`IDEMFLOW_SOAK_SECS`).
    pub secs: u64,
    /// Writer threads (`IDEMFLOW_SOAK_WRITERS`).
    pub writers: usize,
    /// Reader threads (`IDEMFLOW_SOAK_READERS`).
    pub readers: usize,
    /// Threads calling `Engine::flush` in a loop (`IDEMFLOW_SOAK_FLUSHERS`).
    pub flushers: usize,
    /// Entities the writers pick from (`IDEMFLOW_SOAK_ENTITIES`).
    pub entities: usize,
    /// Payload size in bytes (`IDEMFLOW_SOAK_PAYLOAD`).
    pub payload_bytes: usize,
    /// Most writes per second over all writers (0: no limit).
    pub rate: u64,
    /// The engine's durability (`IDEMFLOW_SOAK_DURABILITY`).
    pub durability: Durability,
    /// `None`: the engine's default; `Some(None)`: no background flush.
    pub flush_every_ms: Option<Option<u64>>,
    /// sled's cache in bytes; `None`: the engine's (`IDEMFLOW_SOAK_CACHE`).
    pub cache_bytes: Option<u64>,
    /// sled's segment size for the new database; `None`: the engine's
    /// choice (`IDEMFLOW_SOAK_SEGMENT`).
    pub segment_bytes: Option<usize>,
    /// How long idempotency keys live (`IDEMFLOW_SOAK_KEY_RETENTION_MS`).
    pub key_retention_ms: u64,
    /// Events per `pending` call of the consumer (`IDEMFLOW_SOAK_DRAIN_BATCH`).
    pub drain_batch: usize,
    /// 0: drain continuously; else let the outbox fill for this long between
    /// full drains (a burst of removals frees many segments at once).
    pub drain_every_secs: u64,
    /// Pause between purges (`IDEMFLOW_SOAK_PURGE_PAUSE_MS`).
    pub purge_pause_ms: u64,
    /// Pause between a flusher's flushes (`IDEMFLOW_SOAK_FLUSH_PAUSE_MS`).
    pub flush_pause_ms: u64,
    /// Share of writes that retry the last keyed request
    /// (`IDEMFLOW_SOAK_RETRY_PERCENT`).
    pub retry_percent: u64,
    /// Share of writes that send an expected version
    /// (`IDEMFLOW_SOAK_EXPECT_PERCENT`).
    pub expect_percent: u64,
    /// Seconds without progress that make a hang (`IDEMFLOW_SOAK_HANG_SECS`).
    pub hang_secs: u64,
    /// Whether the hang report includes gdb backtraces (`IDEMFLOW_SOAK_GDB`).
    pub gdb: bool,
    /// A file for the hang report (`IDEMFLOW_SOAK_DUMP`).
    pub dump: Option<PathBuf>,
    /// The database directory, kept; `None`: a temporary one
    /// (`IDEMFLOW_SOAK_DIR`).
    pub dir: Option<PathBuf>,
    /// A file for one line of figures per sample (`IDEMFLOW_SOAK_CSV`).
    pub csv: Option<PathBuf>,
    /// Seconds between progress lines (`IDEMFLOW_SOAK_REPORT_SECS`).
    pub report_secs: u64,
    /// A name for the summary line (`IDEMFLOW_SOAK_LABEL`).
    pub label: String,
    /// The random seed (`IDEMFLOW_SOAK_SEED`; default: the time).
    pub seed: u64,
    /// Print progress lines.
    pub verbose: bool,
}

impl Config {
    /// The defaults, overridden by `IDEMFLOW_SOAK_*` variables.
    pub fn from_env(default_secs: u64) -> Config {
        let durability = match env_text("DURABILITY").as_deref() {
            None | Some("buffered") => Durability::Buffered,
            Some("immediate") => Durability::Immediate,
            Some(other) => panic!("IDEMFLOW_SOAK_DURABILITY={other}: buffered or immediate"),
        };
        let flush_every_ms = env_text("FLUSH_MS").map(|text| match text.as_str() {
            "none" | "off" => None,
            ms => Some(ms.parse().expect("IDEMFLOW_SOAK_FLUSH_MS")),
        });
        Config {
            secs: env_num("SECS", default_secs),
            writers: env_num("WRITERS", 4) as usize,
            readers: env_num("READERS", 2) as usize,
            flushers: env_num("FLUSHERS", 0) as usize,
            entities: (env_num("ENTITIES", 10_000) as usize).max(1),
            payload_bytes: env_num("PAYLOAD", 256) as usize,
            rate: env_num("RATE", 0),
            durability,
            flush_every_ms,
            cache_bytes: env_text("CACHE").map(|text| parse_num("CACHE", &text)),
            segment_bytes: env_text("SEGMENT").map(|text| parse_num("SEGMENT", &text) as usize),
            key_retention_ms: env_num("KEY_RETENTION_MS", 2000).max(1),
            drain_batch: (env_num("DRAIN_BATCH", 256) as usize).max(1),
            drain_every_secs: env_num("DRAIN_EVERY_SECS", 0),
            purge_pause_ms: env_num("PURGE_PAUSE_MS", 100),
            flush_pause_ms: env_num("FLUSH_PAUSE_MS", 0),
            retry_percent: env_num("RETRY_PERCENT", 10),
            expect_percent: env_num("EXPECT_PERCENT", 10),
            hang_secs: env_num("HANG_SECS", 30).max(1),
            gdb: env_num("GDB", 1) != 0,
            dump: env_text("DUMP").map(PathBuf::from),
            dir: env_text("DIR").map(PathBuf::from),
            csv: env_text("CSV").map(PathBuf::from),
            report_secs: env_num("REPORT_SECS", 10).max(1),
            label: env_text("LABEL").unwrap_or_else(|| "idemflow".to_owned()),
            seed: env_num("SEED", now_ms()),
            verbose: true,
        }
    }
}

/// The value of `IDEMFLOW_SOAK_<name>`, unless unset or empty.
pub fn env_text(name: &str) -> Option<String> {
    std::env::var(format!("IDEMFLOW_SOAK_{name}"))
        .ok()
        .filter(|value| !value.is_empty())
}

/// The number in `IDEMFLOW_SOAK_<name>` (see [`parse_num`]), or `default`.
fn env_num(name: &str, default: u64) -> u64 {
    env_text(name).map_or(default, |text| parse_num(name, &text))
}

/// A number, with `_` separators and an optional `k`/`m`/`g` (binary) suffix.
fn parse_num(name: &str, text: &str) -> u64 {
    let text = text.replace('_', "").to_ascii_lowercase();
    let (digits, scale) = match text.chars().last() {
        Some('k') => (&text[..text.len() - 1], 1 << 10),
        Some('m') => (&text[..text.len() - 1], 1 << 20),
        Some('g') => (&text[..text.len() - 1], 1 << 30),
        _ => (&text[..], 1),
    };
    digits
        .parse::<u64>()
        .unwrap_or_else(|_| panic!("IDEMFLOW_SOAK_{name}={text}: not a number"))
        * scale
}

/// Milliseconds since the Unix epoch (the default seed).
fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_millis() as u64)
}
