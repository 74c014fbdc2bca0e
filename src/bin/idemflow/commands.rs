//! The database tools: `machines`, `show`, `graph`, `outbox`, `purge-keys`,
//! `create` and `apply`. They work on any database through its stored machine
//! definitions, by state and event *names*.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{ErrorKind, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use idemflow::{DotOptions, Engine, NamedMachine, NamedRequest, OutcomeRecord, PendingEntry};
use serde_json::{json, Value};

use crate::cli::{
    ApplyArgs, CreateArgs, GraphArgs, GraphFormat, MachinesArgs, OutboxArgs, PurgeKeysArgs,
    ShowArgs,
};
use crate::render::{group, or_dash, timestamp, Align, Table};
use crate::{CliError, CliResult};

/// The PostgreSQL connection string `--db` holds, if it holds one
/// (`postgres://` or `postgresql://`) rather than a directory.
pub fn postgres_url(db: &Path) -> Option<&str> {
    db.to_str()
        .filter(|text| text.starts_with("postgres://") || text.starts_with("postgresql://"))
}

/// `--db` as it may be printed: a directory, or a URL without its password.
pub fn describe_db(db: &Path) -> String {
    match postgres_url(db) {
        None => db.display().to_string(),
        Some(url) => match (url.find("://"), url.find('@')) {
            (Some(scheme), Some(at)) if scheme + 3 < at => {
                let user = &url[scheme + 3..at];
                let user = user.split(':').next().unwrap_or(user);
                format!("{}{user}{}", &url[..scheme + 3], &url[at..])
            }
            _ => url.to_owned(),
        },
    }
}

/// Connects to a PostgreSQL database (built with the `postgres` feature).
pub fn connect(url: &str, durability: idemflow::Durability) -> CliResult<Engine> {
    connect_with(Engine::builder().durability(durability), url)
}

/// Connects to a PostgreSQL database with this builder's settings.
#[cfg(feature = "postgres")]
pub fn connect_with(builder: idemflow::EngineBuilder, url: &str) -> CliResult<Engine> {
    Ok(builder.connect(url)?)
}

/// Without the `postgres` feature, a PostgreSQL URL is a clear error.
#[cfg(not(feature = "postgres"))]
pub fn connect_with(_builder: idemflow::EngineBuilder, _url: &str) -> CliResult<Engine> {
    Err(CliError::new(
        "this idemflow was built without PostgreSQL support; rebuild it with `--features postgres`",
    ))
}

/// Opens an existing database: a directory, or a PostgreSQL database given
/// as a `postgres://` URL. Tools never create a sled database: a missing
/// directory, or one without sled's data file, is an error. (On PostgreSQL,
/// connecting creates idemflow's tables if the schema has none yet.)
pub fn open_existing(dir: &Path) -> CliResult<Engine> {
    if let Some(url) = postgres_url(dir) {
        return connect(url, idemflow::Durability::Immediate);
    }
    if !dir.exists() {
        return Err(CliError::new(format!(
            "database directory {} does not exist",
            dir.display()
        )));
    }
    if !dir.is_dir() {
        return Err(CliError::new(format!(
            "{} is not a directory; --db takes a database directory",
            dir.display()
        )));
    }
    if !dir.join("db").is_file() {
        return Err(CliError::new(format!(
            "{} is not an idemflow database (it has no sled data file `db`)",
            dir.display()
        )));
    }
    // Tools inspect and drive a database; they never fire its timers on the side.
    Ok(Engine::builder().timers(false).open(dir)?)
}

/// Writes `text` to stdout; a closed pipe (`| head`) is not an error.
pub fn print_out(text: &str) -> CliResult {
    let mut stdout = std::io::stdout().lock();
    match stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
    {
        Err(error) if error.kind() != ErrorKind::BrokenPipe => {
            Err(CliError::new(format!("could not write to stdout: {error}")))
        }
        _ => Ok(()),
    }
}

/// Prints a JSON value, pretty, followed by a newline.
pub fn print_json(value: &Value) -> CliResult {
    let text = serde_json::to_string_pretty(value)
        .map_err(|error| CliError::new(format!("could not encode JSON: {error}")))?;
    print_out(&format!("{text}\n"))
}

/// Parses a `--payload` argument.
fn parse_payload(text: Option<&str>) -> CliResult<Option<Value>> {
    text.map(|text| {
        serde_json::from_str(text)
            .map_err(|error| CliError::new(format!("--payload is not valid JSON: {error}")))
    })
    .transpose()
}

/// `idemflow machines`.
pub fn machines(args: &MachinesArgs) -> CliResult {
    let engine = open_existing(&args.db.db)?;
    let mut listed = Vec::new();
    for def in engine.machines()? {
        let machine = engine.machine_by_name(&def.name)?;
        let counts = machine.count_by_state()?;
        let version = machine.definition_version();
        let pending = machine.pending_migration()?;
        listed.push((def, counts, version, pending));
    }
    if args.json.json {
        let machines: Vec<Value> = listed
            .iter()
            .map(|(def, counts, version, pending)| {
                let states: Vec<Value> = def
                    .states
                    .iter()
                    .zip(counts)
                    .map(|(state, (_, count))| {
                        json!({
                            "name": state.name,
                            "terminal": state.terminal,
                            "description": state.description,
                            "entities": count,
                        })
                    })
                    .collect();
                json!({
                    "name": def.name,
                    "definition_version": version,
                    "pending_migration": pending,
                    "initial": def.initial,
                    "entities": counts.iter().map(|(_, count)| count).sum::<u64>(),
                    "states": states,
                    "transitions": def.transitions,
                })
            })
            .collect();
        return print_json(&Value::Array(machines));
    }
    if listed.is_empty() {
        return print_out(&format!(
            "no machine is stored in {}\n",
            describe_db(&args.db.db)
        ));
    }
    let mut out = String::new();
    for (index, (def, counts, version, pending)) in listed.iter().enumerate() {
        if index > 0 {
            out.push('\n');
        }
        let total: u64 = counts.iter().map(|(_, count)| count).sum();
        let _ = writeln!(
            out,
            "{}: definition version {version}, {} entities, {} states, {} transitions, initial state {}",
            def.name,
            group(total),
            def.states.len(),
            def.transitions.len(),
            def.initial
        );
        if *pending > 0 {
            let _ = writeln!(
                out,
                "  migrating: {} entities still stored under former state names (idemflow migrate)",
                group(*pending)
            );
        }
        let mut table = Table::new(&[
            ("STATE", Align::Left),
            ("ENTITIES", Align::Right),
            ("KIND", Align::Left),
            ("DESCRIPTION", Align::Left),
        ])
        .indent(2);
        for (state, (_, count)) in def.states.iter().zip(counts) {
            let kind = if state.name == def.initial {
                "initial"
            } else if state.terminal {
                "terminal"
            } else {
                ""
            };
            let description = state
                .description
                .as_deref()
                .map(|text| text.lines().next().unwrap_or_default().to_owned())
                .unwrap_or_default();
            table.row(vec![
                state.name.clone(),
                group(*count),
                kind.to_owned(),
                description,
            ]);
        }
        out.push_str(&table.render());
    }
    print_out(&out)
}

/// The entity's record, or a "does not exist" error.
fn existing_entity(machine: &NamedMachine, id: &str) -> CliResult<idemflow::EntityRecord> {
    machine.get(id)?.ok_or_else(|| {
        CliError::new(format!(
            "{} {id:?} does not exist",
            machine.definition().name
        ))
    })
}

/// `idemflow show`.
pub fn show(args: &ShowArgs) -> CliResult {
    let engine = open_existing(&args.db.db)?;
    let machine = engine.machine_by_name(&args.machine)?;
    let record = existing_entity(&machine, &args.id)?;
    let history = machine.history(&args.id)?;
    if args.json.json {
        return print_json(&json!({
            "machine": machine.definition().name,
            "entity": record,
            "history": history,
        }));
    }
    let mut out = String::new();
    let _ = writeln!(out, "{} {:?}", machine.definition().name, record.id);
    let _ = writeln!(out, "  state    {}", record.state);
    let _ = writeln!(out, "  version  {}", record.version);
    let _ = writeln!(out, "  created  {}", timestamp(record.created_at));
    let _ = writeln!(out, "  updated  {}", timestamp(record.updated_at));
    let _ = writeln!(out, "\nHistory ({} entries)", history.len());
    let mut table = Table::new(&[
        ("VERSION", Align::Right),
        ("FROM", Align::Left),
        ("TO", Align::Left),
        ("EVENT", Align::Left),
        ("KEY", Align::Left),
        ("ACTOR", Align::Left),
        ("AT", Align::Left),
        ("PAYLOAD", Align::Left),
    ])
    .indent(2);
    for entry in &history {
        table.row(vec![
            entry.version.to_string(),
            or_dash(entry.from.as_deref()),
            entry.to.clone(),
            or_dash(entry.event.as_deref()),
            or_dash(entry.key.as_deref()),
            or_dash(entry.actor.as_deref()),
            timestamp(entry.at),
            entry
                .payload
                .as_ref()
                .map_or_else(|| "-".to_owned(), Value::to_string),
        ]);
    }
    out.push_str(&table.render());
    print_out(&out)
}

/// Renders DOT text to SVG with Graphviz's `dot -Tsvg`.
pub fn render_svg(dot: &str) -> CliResult<Vec<u8>> {
    idemflow::render_svg(dot).map_err(|error| {
        if error.kind() == ErrorKind::NotFound {
            CliError::new(
                "Graphviz `dot` was not found on PATH; install Graphviz \
                 (Debian/Ubuntu: apt-get install graphviz; macOS: brew install graphviz) \
                 or use --format dot",
            )
        } else {
            CliError::new(format!("could not render SVG: {error}"))
        }
    })
}

/// Whether Graphviz's `dot` can be run.
pub fn graphviz_available() -> bool {
    Command::new("dot")
        .arg("-V")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success())
}

/// Writes `bytes` to `path`, with the path in the error message.
pub fn write_file(path: &Path, bytes: &[u8]) -> CliResult {
    std::fs::write(path, bytes)
        .map_err(|error| CliError::new(format!("could not write {}: {error}", path.display())))
}

/// `idemflow graph`.
pub fn graph(args: &GraphArgs) -> CliResult {
    if args.format == GraphFormat::Mermaid && (args.counts || args.entity.is_some()) {
        return Err(CliError::new(
            "--counts and --entity draw on DOT; use them with --format dot or svg, not mermaid",
        ));
    }
    let engine = open_existing(&args.db.db)?;
    let machine = engine.machine_by_name(&args.machine)?;
    let mut options = DotOptions::default();
    if args.counts {
        options.counts = Some(
            machine
                .count_by_state()?
                .into_iter()
                .collect::<BTreeMap<_, _>>(),
        );
    }
    if let Some(id) = &args.entity {
        existing_entity(&machine, id)?;
        options.highlight_path = machine
            .history(id)?
            .into_iter()
            .map(|entry| entry.to)
            .collect();
    }
    let def = machine.definition();
    let bytes = match args.format {
        GraphFormat::Dot => def.to_dot_with(&options).into_bytes(),
        GraphFormat::Mermaid => def.to_mermaid().into_bytes(),
        GraphFormat::Svg => render_svg(&def.to_dot_with(&options))?,
    };
    match &args.output {
        Some(path) => {
            write_file(path, &bytes)?;
            eprintln!("wrote {}", path.display());
            Ok(())
        }
        None => {
            let mut stdout = std::io::stdout().lock();
            match stdout.write_all(&bytes).and_then(|()| stdout.flush()) {
                Err(error) if error.kind() != ErrorKind::BrokenPipe => {
                    Err(CliError::new(format!("could not write to stdout: {error}")))
                }
                _ => Ok(()),
            }
        }
    }
}

/// `idemflow outbox`.
pub fn outbox(args: &OutboxArgs) -> CliResult {
    let engine = open_existing(&args.db.db)?;
    let outbox = engine.outbox();
    let quarantined = match args.quarantine {
        Some(position) => Some((position, outbox.quarantine(position)?)),
        None => None,
    };
    let mut events = Vec::new();
    let mut undecodable = Vec::new();
    for entry in outbox.pending_entries(args.limit)? {
        match entry {
            PendingEntry::Event(event) => events.push(event),
            PendingEntry::Undecodable { position, error } => {
                undecodable.push((position, error.to_string()));
            }
        }
    }
    let pending = outbox.len()?;
    let acknowledged = if args.ack {
        Some(outbox.ack(&events)?)
    } else {
        None
    };
    if args.json.json {
        let undecodable: Vec<Value> = undecodable
            .iter()
            .map(|(position, error)| json!({"position": position, "error": error}))
            .collect();
        return print_json(&json!({
            "pending": pending,
            "events": events,
            "undecodable": undecodable,
            "acknowledged": acknowledged,
            "quarantined": quarantined.map(|(position, moved)| json!({"position": position, "moved": moved})),
        }));
    }
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{} pending events; the oldest {}:",
        group(pending as u64),
        events.len()
    );
    let mut table = Table::new(&[
        ("MACHINE", Align::Left),
        ("ID", Align::Left),
        ("VERSION", Align::Right),
        ("FROM", Align::Left),
        ("TO", Align::Left),
        ("EVENT", Align::Left),
        ("KEY", Align::Left),
        ("AT", Align::Left),
    ]);
    for event in &events {
        table.row(vec![
            event.machine.clone(),
            event.id.clone(),
            event.version.to_string(),
            or_dash(event.from.as_deref()),
            event.to.clone(),
            or_dash(event.event.as_deref()),
            or_dash(event.key.as_deref()),
            timestamp(event.at),
        ]);
    }
    if !events.is_empty() {
        out.push_str(&table.render());
    }
    for (position, error) in &undecodable {
        let _ = writeln!(
            out,
            "undecodable entry at position {position}: {error} (quarantine it with --quarantine {position})"
        );
    }
    if let Some(count) = acknowledged {
        let _ = writeln!(out, "acknowledged {count} events");
    }
    if let Some((position, moved)) = quarantined {
        let _ = if moved {
            writeln!(
                out,
                "moved the entry at position {position} to the quarantine"
            )
        } else {
            writeln!(out, "no pending entry at position {position}")
        };
    }
    print_out(&out)
}

/// `idemflow purge-keys`.
pub fn purge_keys(args: &PurgeKeysArgs) -> CliResult {
    let engine = open_existing(&args.db.db)?;
    let report = engine.purge_keys()?;
    let skipped: Vec<String> = report.skipped.iter().map(ToString::to_string).collect();
    if args.json.json {
        return print_json(&json!({ "purged": report.purged, "skipped": skipped }));
    }
    let mut out = format!("purged {} expired idempotency keys\n", report.purged);
    for error in &skipped {
        let _ = writeln!(out, "skipped an unreadable key record: {error}");
    }
    print_out(&out)
}

/// An outcome as JSON, with the machine's name.
fn outcome_json(machine: &str, outcome: &OutcomeRecord) -> CliResult<Value> {
    let mut value = serde_json::to_value(outcome)
        .map_err(|error| CliError::new(format!("could not encode JSON: {error}")))?;
    if let Value::Object(map) = &mut value {
        map.insert("machine".to_owned(), Value::String(machine.to_owned()));
    }
    Ok(value)
}

/// `idemflow create`.
pub fn create(args: &CreateArgs) -> CliResult {
    let payload = parse_payload(args.payload.as_deref())?;
    let engine = open_existing(&args.db.db)?;
    let machine = engine.machine_by_name(&args.machine)?;
    let outcome = machine.create_with(&args.id, payload, args.actor.clone())?;
    let name = &machine.definition().name;
    if args.json.json {
        return print_json(&outcome_json(name, &outcome)?);
    }
    let line = if outcome.applied {
        format!(
            "created {name} {:?} in state {} (version {})",
            outcome.id, outcome.state, outcome.version
        )
    } else {
        format!(
            "{name} {:?} exists already, in state {} at version {}; nothing changed",
            outcome.id, outcome.state, outcome.version
        )
    };
    print_out(&format!("{line}\n"))
}

/// `idemflow apply`.
pub fn apply(args: &ApplyArgs) -> CliResult {
    let payload = parse_payload(args.payload.as_deref())?;
    let mut request = match (&args.to, &args.event) {
        (Some(state), _) => NamedRequest::to(state.clone()),
        (None, Some(event)) => NamedRequest::fire(event.clone()),
        // clap's argument group requires one of them.
        (None, None) => return Err(CliError::new("give --to STATE or --event EVENT")),
    };
    if let Some(key) = &args.key {
        request = request.key(key.clone());
    }
    if let Some(version) = args.expect_version {
        request = request.expect_version(version);
    }
    if let Some(payload) = payload {
        request = request.payload(payload);
    }
    if let Some(actor) = &args.actor {
        request = request.actor(actor.clone());
    }
    let engine = open_existing(&args.db.db)?;
    let machine = engine.machine_by_name(&args.machine)?;
    let outcome = machine.apply(&args.id, request)?;
    let name = &machine.definition().name;
    if args.json.json {
        return print_json(&outcome_json(name, &outcome)?);
    }
    print_out(&format!("{}\n", describe_outcome(name, &outcome)))
}

/// One line saying what a request did.
fn describe_outcome(machine: &str, outcome: &OutcomeRecord) -> String {
    let change = match (&outcome.from, &outcome.event) {
        (Some(from), Some(event)) => format!("{from} -> {} by event {event}", outcome.state),
        (Some(from), None) => format!("{from} -> {}", outcome.state),
        (None, _) => format!("created in {}", outcome.state),
    };
    let what = format!(
        "{machine} {:?}: {} (version {})",
        outcome.id,
        if outcome.applied {
            change
        } else {
            format!("already in {}, nothing changed", outcome.state)
        },
        outcome.version
    );
    match (outcome.replay, outcome.applied) {
        (true, _) => format!(
            "replay: {what}; this is the original outcome of the first request with this key (at {})",
            timestamp(outcome.at)
        ),
        (false, true) => format!("applied: {what}"),
        (false, false) => format!("no-op: {what}"),
    }
}

/// The directory the demo writes its graph files to.
pub fn demo_output_dir(db: Option<&Path>) -> CliResult<PathBuf> {
    let dir = match db {
        Some(db) => db.to_owned(),
        None => PathBuf::from("idemflow-demo"),
    };
    std::fs::create_dir_all(&dir)
        .map_err(|error| CliError::new(format!("could not create {}: {error}", dir.display())))?;
    Ok(dir)
}
