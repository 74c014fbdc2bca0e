//! The command line: subcommands, arguments and their help texts.

use std::path::PathBuf;

use clap::{ArgGroup, Args, Parser, Subcommand, ValueEnum};

const MAIN_EXAMPLES: &str = "\
Examples:
  idemflow demo                              run the order demo (10 000 orders) and check invariants
  idemflow demo --db ./orders-db --orders 2000
  idemflow machines --db ./orders-db         stored machines and entities per state
  idemflow show --db ./orders-db order order-000042
  idemflow graph --db ./orders-db order --format svg --counts -o heat.svg
  idemflow apply --db ./orders-db order o-1 --event pay --key pay-o-1 --payload '{\"amount\":4200}'

Exit codes: 0 success, 1 error (one line on stderr), 2 usage error.";

const DEMO_EXAMPLES: &str = "\
Examples:
  idemflow demo
  idemflow demo --orders 200 --threads 4 --duplicate-rate 0.3
  idemflow demo --db ./orders-db --durable --json > summary.json

The demo runs every order through the engine with idempotency keys, injecting
duplicate deliveries, retries after lost responses, out-of-order events and
concurrent conflicting requests; a submitted order unpaid for 30 minutes (on
the demo's own clock) is cancelled by its timeout, some payments come just
before it and some race it. Then it checks the invariants (versions equal
history lengths, one outbox event per change, no order charged twice, the state
index agrees with the records, no paid order cancelled by a timeout). Exit code
1 if any check fails.

Without --db the database is temporary and the DOT/Mermaid/SVG files of the
order machine go to ./idemflow-demo/; with --db they go into DIR.";

const MACHINES_EXAMPLES: &str = "\
Examples:
  idemflow machines --db ./orders-db
  idemflow machines --db ./orders-db --json | jq '.[].entities'";

const SHOW_EXAMPLES: &str = "\
Examples:
  idemflow show --db ./orders-db order order-000042
  idemflow show --db ./orders-db order order-000042 --json";

const GRAPH_EXAMPLES: &str = "\
Examples:
  idemflow graph --db ./orders-db order                          DOT on stdout
  idemflow graph --db ./orders-db order --format mermaid -o order.mmd
  idemflow graph --db ./orders-db order --format svg --counts -o heat.svg
  idemflow graph --db ./orders-db order --entity order-000042 --format svg -o path.svg

--counts labels and colours each state by its number of entities (a heat map);
--entity draws the path that entity took. Both apply to dot and svg.
svg needs Graphviz's `dot` (apt-get install graphviz).";

const OUTBOX_EXAMPLES: &str = "\
Examples:
  idemflow outbox --db ./orders-db                  the oldest 20 pending events
  idemflow outbox --db ./orders-db --limit 100 --ack  print, then acknowledge them
  idemflow outbox --db ./orders-db --json";

const DEFINITIONS_EXAMPLES: &str = "\
Examples:
  idemflow definitions --db ./orders-db order
  idemflow definitions --db ./orders-db order --json | jq '.[-1].changes'";

const MIGRATE_EXAMPLES: &str = "\
Examples:
  idemflow migrate --db ./orders-db          # every machine
  idemflow migrate --db ./orders-db ticket";

const TIMERS_EXAMPLES: &str = "\
Examples:
  idemflow timers --db ./orders-db
  idemflow timers --db ./orders-db invoice --limit 100 --json";

const PURGE_EXAMPLES: &str = "\
Examples:
  idemflow purge-keys --db ./orders-db";

const CREATE_EXAMPLES: &str = "\
Examples:
  idemflow create --db ./orders-db order o-1
  idemflow create --db ./orders-db order o-2 --payload '{\"customer\":\"c-7\"}' --actor web --json

Creating an entity that exists is a no-op that prints its current state.";

const APPLY_EXAMPLES: &str = "\
Examples:
  idemflow apply --db ./orders-db order o-1 --event submit
  idemflow apply --db ./orders-db order o-1 --to paid --key pay-o-1 --payload '{\"amount\":4200}'
  idemflow apply --db ./orders-db order o-1 --to shipped --expect-version 3 --json

Re-running a request with the same --key prints a replay of the original
outcome; a request whose target is already reached is a no-op.";

/// The idemflow command-line tool.
#[derive(Debug, Parser)]
#[command(
    name = "idemflow",
    version,
    about = "Idempotent, race-free finite-state-machine workflows on sled: demo and database tools",
    after_help = MAIN_EXAMPLES
)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the order lifecycle under duplicates, retries, out-of-order events,
    /// races and a payment timeout, then check the engine's invariants.
    #[command(after_help = DEMO_EXAMPLES)]
    Demo(DemoArgs),
    /// List the stored machines with their entity counts per state.
    #[command(after_help = MACHINES_EXAMPLES)]
    Machines(MachinesArgs),
    /// Show one entity: its snapshot and its history.
    #[command(after_help = SHOW_EXAMPLES)]
    Show(ShowArgs),
    /// Export a machine as DOT, Mermaid or SVG (optionally with a heat map or an entity's path).
    #[command(after_help = GRAPH_EXAMPLES)]
    Graph(GraphArgs),
    /// List pending outbox events, optionally acknowledging them.
    #[command(after_help = OUTBOX_EXAMPLES)]
    Outbox(OutboxArgs),
    /// Show a machine's definition change log: every stored version, what changed, when.
    #[command(after_help = DEFINITIONS_EXAMPLES)]
    Definitions(DefinitionsArgs),
    /// Finish migrating entities stored under former (aliased) state names, with progress.
    #[command(after_help = MIGRATE_EXAMPLES)]
    Migrate(MigrateArgs),
    /// List pending timers (declared timeouts and scheduled requests) by due time.
    #[command(after_help = TIMERS_EXAMPLES)]
    Timers(TimersArgs),
    /// Delete expired idempotency keys of every machine.
    #[command(after_help = PURGE_EXAMPLES)]
    PurgeKeys(PurgeKeysArgs),
    /// Create an entity of a stored machine in its initial state.
    #[command(after_help = CREATE_EXAMPLES)]
    Create(CreateArgs),
    /// Request a transition of an entity, by target state or by event.
    #[command(after_help = APPLY_EXAMPLES)]
    Apply(ApplyArgs),
}

/// The database of a tool subcommand: a directory (it must exist) or a
/// PostgreSQL URL.
#[derive(Debug, Args)]
pub struct DbArg {
    /// The database: a sled directory (it must exist: tools never create a
    /// database) or a PostgreSQL URL, `postgres://user@host:5432/dbname`
    /// (`?schema=NAME` picks the schema; default `idemflow`; needs a build
    /// with `--features postgres`).
    #[arg(long, value_name = "DIR|URL")]
    pub db: PathBuf,
}

/// `--json`.
#[derive(Debug, Args)]
pub struct JsonArg {
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

/// Arguments of `demo`.
#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Database directory or PostgreSQL URL (`postgres://...`; a temporary
    /// sled database if not given). It must not already hold orders.
    #[arg(long, value_name = "DIR|URL")]
    pub db: Option<PathBuf>,
    /// Run the demo across this many engine processes sharing the database
    /// (needs `--db postgres://...`); the checks run over all of them.
    #[arg(long, value_name = "P", default_value_t = 1,
          value_parser = clap::value_parser!(u64).range(1..=64))]
    pub processes: u64,
    /// Internal: run as worker K of `--processes` (started by the demo itself).
    #[arg(long, value_name = "K", hide = true)]
    pub worker: Option<u64>,
    /// Internal: where the demo's clock starts (ms since the epoch), so that
    /// every worker process's clock starts at the same time.
    #[arg(long, value_name = "MS", hide = true)]
    pub clock_ms: Option<u64>,
    /// Number of orders to run.
    #[arg(long, value_name = "N", default_value_t = 10_000,
          value_parser = clap::value_parser!(u64).range(1..=10_000_000))]
    pub orders: u64,
    /// Probability of each injected fault: a duplicate delivery after a
    /// request, a retry after a lost response, an out-of-order event, a stale
    /// expected version, a key reused by mistake (half as often).
    #[arg(long, value_name = "R", default_value_t = 0.1, value_parser = parse_rate)]
    pub duplicate_rate: f64,
    /// Number of client threads (races use extra short-lived threads).
    #[arg(long, value_name = "T", default_value_t = 4,
          value_parser = clap::value_parser!(u64).range(1..=256))]
    pub threads: u64,
    /// Seed of the scenario generator (same seed, same scenarios).
    #[arg(long, value_name = "S", default_value_t = 42)]
    pub seed: u64,
    /// Use Durability::Immediate (every call waits for its commit to be on
    /// disk) instead of the default Buffered.
    #[arg(long)]
    pub durable: bool,
    #[command(flatten)]
    pub json: JsonArg,
}

fn parse_rate(text: &str) -> Result<f64, String> {
    let rate: f64 = text
        .parse()
        .map_err(|_| format!("{text:?} is not a number"))?;
    if (0.0..=1.0).contains(&rate) {
        Ok(rate)
    } else {
        Err(format!("{rate} is not between 0 and 1"))
    }
}

/// Arguments of `timers`.
#[derive(Debug, Args)]
pub struct TimersArgs {
    #[command(flatten)]
    pub db: DbArg,
    /// Only this machine's timers.
    pub machine: Option<String>,
    /// How many timers to list, earliest first.
    #[arg(long, value_name = "N", default_value_t = 50)]
    pub limit: usize,
    #[command(flatten)]
    pub json: JsonArg,
}

/// Arguments of `definitions`.
#[derive(Debug, Args)]
pub struct DefinitionsArgs {
    #[command(flatten)]
    pub db: DbArg,
    /// The machine's name.
    pub machine: String,
    #[command(flatten)]
    pub json: JsonArg,
}

/// Arguments of `migrate`.
#[derive(Debug, Args)]
pub struct MigrateArgs {
    #[command(flatten)]
    pub db: DbArg,
    /// The machine's name (default: every stored machine).
    pub machine: Option<String>,
    #[command(flatten)]
    pub json: JsonArg,
}

/// Arguments of `machines`.
#[derive(Debug, Args)]
pub struct MachinesArgs {
    #[command(flatten)]
    pub db: DbArg,
    #[command(flatten)]
    pub json: JsonArg,
}

/// Arguments of `show`.
#[derive(Debug, Args)]
pub struct ShowArgs {
    #[command(flatten)]
    pub db: DbArg,
    /// The machine's name.
    pub machine: String,
    /// The entity id.
    pub id: String,
    #[command(flatten)]
    pub json: JsonArg,
}

/// Output formats of `graph`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum GraphFormat {
    /// Graphviz DOT text.
    Dot,
    /// A Mermaid state diagram.
    Mermaid,
    /// SVG rendered by Graphviz's `dot -Tsvg`.
    Svg,
}

/// Arguments of `graph`.
#[derive(Debug, Args)]
pub struct GraphArgs {
    #[command(flatten)]
    pub db: DbArg,
    /// The machine's name.
    pub machine: String,
    /// Output format.
    #[arg(long, value_enum, default_value_t = GraphFormat::Dot)]
    pub format: GraphFormat,
    /// Label and colour each state by its number of entities (heat map; dot and svg).
    #[arg(long)]
    pub counts: bool,
    /// Draw the path this entity took through the machine (dot and svg).
    #[arg(long, value_name = "ID")]
    pub entity: Option<String>,
    /// Write to FILE instead of stdout.
    #[arg(short = 'o', long = "output", value_name = "FILE")]
    pub output: Option<PathBuf>,
}

/// Arguments of `outbox`.
#[derive(Debug, Args)]
pub struct OutboxArgs {
    #[command(flatten)]
    pub db: DbArg,
    /// How many pending events to list, oldest first.
    #[arg(long, value_name = "N", default_value_t = 20)]
    pub limit: usize,
    /// Acknowledge (remove) the listed events after printing them.
    #[arg(long)]
    pub ack: bool,
    /// Move the entry at this position (e.g. an undecodable one) out of the
    /// outbox into the quarantine, where it is kept but never delivered.
    #[arg(long, value_name = "POSITION")]
    pub quarantine: Option<u64>,
    #[command(flatten)]
    pub json: JsonArg,
}

/// Arguments of `purge-keys`.
#[derive(Debug, Args)]
pub struct PurgeKeysArgs {
    #[command(flatten)]
    pub db: DbArg,
    #[command(flatten)]
    pub json: JsonArg,
}

/// Arguments of `create`.
#[derive(Debug, Args)]
pub struct CreateArgs {
    #[command(flatten)]
    pub db: DbArg,
    /// The machine's name.
    pub machine: String,
    /// The new entity's id.
    pub id: String,
    /// JSON payload recorded in the first history entry and the outbox event.
    #[arg(long, value_name = "JSON")]
    pub payload: Option<String>,
    /// Who creates it (recorded in history).
    #[arg(long, value_name = "A")]
    pub actor: Option<String>,
    #[command(flatten)]
    pub json: JsonArg,
}

/// Arguments of `apply`.
#[derive(Debug, Args)]
#[command(group(ArgGroup::new("target").required(true).args(["to", "event"])))]
pub struct ApplyArgs {
    #[command(flatten)]
    pub db: DbArg,
    /// The machine's name.
    pub machine: String,
    /// The entity id.
    pub id: String,
    /// Move the entity to this state.
    #[arg(long, value_name = "STATE")]
    pub to: Option<String>,
    /// Fire this event.
    #[arg(long, value_name = "EVENT")]
    pub event: Option<String>,
    /// Idempotency key: a retry with the same key replays the first outcome.
    #[arg(long, value_name = "K")]
    pub key: Option<String>,
    /// Refuse the request unless the entity is at this version.
    #[arg(long, value_name = "V")]
    pub expect_version: Option<u64>,
    /// JSON payload recorded in history and the outbox event.
    #[arg(long, value_name = "JSON")]
    pub payload: Option<String>,
    /// Who makes the request (recorded in history).
    #[arg(long, value_name = "A")]
    pub actor: Option<String>,
    #[command(flatten)]
    pub json: JsonArg,
}
