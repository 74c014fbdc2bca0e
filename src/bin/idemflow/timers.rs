//! `idemflow timers`: the pending timers of a database.

use std::fmt::Write as _;

use serde_json::Value;

use crate::cli::TimersArgs;
use crate::commands::{open_existing, print_json, print_out};
use crate::render::{group, timestamp, Align, Table};
use crate::CliResult;

/// `idemflow timers`.
pub fn timers(args: &TimersArgs) -> CliResult {
    let engine = open_existing(&args.db.db)?;
    let names: Vec<String> = match &args.machine {
        Some(name) => vec![name.clone()],
        None => engine.machines()?.into_iter().map(|def| def.name).collect(),
    };
    let mut timers = Vec::new();
    for name in &names {
        timers.extend(engine.timers(name, args.limit)?);
    }
    timers.sort_by(|a, b| (a.due_at, &a.machine, &a.id).cmp(&(b.due_at, &b.machine, &b.id)));
    timers.truncate(args.limit);
    if args.json.json {
        let listed: Vec<Value> = timers
            .iter()
            .map(|timer| serde_json::to_value(timer).unwrap_or(Value::Null))
            .collect();
        return print_json(&Value::Array(listed));
    }
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{} pending timers (the first {} by due time):",
        group(timers.len() as u64),
        args.limit
    );
    let mut table = Table::new(&[
        ("DUE", Align::Left),
        ("MACHINE", Align::Left),
        ("ID", Align::Left),
        ("KIND", Align::Left),
        ("REQUEST", Align::Left),
        ("KEY", Align::Left),
    ]);
    for timer in &timers {
        let request = match &timer.target {
            idemflow::Target::To(state) => format!("to {state}"),
            idemflow::Target::Fire(event) => format!("fire {event}"),
        };
        let kind = match timer.kind {
            idemflow::TimerKind::Timeout => "timeout",
            idemflow::TimerKind::Scheduled => "scheduled",
        };
        table.row(vec![
            timestamp(timer.due_at),
            timer.machine.clone(),
            timer.id.clone(),
            kind.to_owned(),
            request,
            timer.key.clone(),
        ]);
    }
    if !timers.is_empty() {
        out.push_str(&table.render());
    }
    print_out(&out)
}
