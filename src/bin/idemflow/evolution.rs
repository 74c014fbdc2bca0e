//! `idemflow definitions` (a machine's change log) and `idemflow migrate`
//! (finish migrating renamed states, with progress).

use std::fmt::Write as _;

use serde_json::{json, Value};

use crate::cli::{DefinitionsArgs, MigrateArgs};
use crate::commands::{open_existing, print_json, print_out};
use crate::render::timestamp;
use crate::CliResult;

/// `idemflow definitions`.
pub fn definitions(args: &DefinitionsArgs) -> CliResult {
    let engine = open_existing(&args.db.db)?;
    // The name must be a stored machine: say so clearly otherwise.
    engine.machine_by_name(&args.machine)?;
    let log = engine.definition_log(&args.machine)?;
    if args.json.json {
        let versions: Vec<Value> = log
            .iter()
            .map(|version| {
                json!({
                    "version": version.version,
                    "at": version.at,
                    "changes": version.changes,
                    "definition": version.definition,
                })
            })
            .collect();
        return print_json(&Value::Array(versions));
    }
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{}: {} stored versions, the current one last",
        args.machine,
        log.len()
    );
    for version in &log {
        let when = version
            .at
            .map_or_else(|| "(time not recorded)".to_owned(), timestamp);
        let _ = writeln!(out, "\nversion {}  {when}", version.version);
        for change in &version.changes {
            let _ = writeln!(out, "  - {change}");
        }
    }
    print_out(&out)
}

/// `idemflow migrate`.
pub fn migrate(args: &MigrateArgs) -> CliResult {
    let engine = open_existing(&args.db.db)?;
    let names: Vec<String> = match &args.machine {
        Some(name) => vec![name.clone()],
        None => engine.machines()?.into_iter().map(|def| def.name).collect(),
    };
    let mut report = Vec::new();
    for name in names {
        let machine = engine.machine_by_name(&name)?;
        let total = machine.pending_migration()?;
        let progress = (total > 0 && !args.json.json).then(|| {
            let bar = indicatif::ProgressBar::new(total);
            bar.set_style(
                indicatif::ProgressStyle::with_template(
                    "{prefix} [{bar:30}] {pos}/{len} entities ({per_sec}, {eta} left)",
                )
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
                .progress_chars("=> "),
            );
            bar.set_prefix(name.clone());
            bar
        });
        let mut moved = 0;
        loop {
            let step = machine.migrate_step()?;
            if step == 0 {
                break;
            }
            moved += step;
            if let Some(bar) = &progress {
                bar.set_position(moved.min(total));
            }
        }
        if let Some(bar) = progress {
            bar.finish_and_clear();
        }
        report.push((name, moved, machine.definition_version()));
    }
    if args.json.json {
        let machines: Vec<Value> = report
            .iter()
            .map(|(name, moved, version)| {
                json!({"machine": name, "migrated": moved, "definition_version": version})
            })
            .collect();
        return print_json(&Value::Array(machines));
    }
    let mut out = String::new();
    for (name, moved, version) in report {
        let _ = writeln!(
            out,
            "{name} (definition version {version}): migrated {moved} entities; nothing left under former state names"
        );
    }
    print_out(&out)
}
