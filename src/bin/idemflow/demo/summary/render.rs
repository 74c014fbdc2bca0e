//! The summary as text tables.

use std::fmt::Write as _;

use super::Summary;
use crate::render::{group, Align, Table};

/// The summary as text tables.
pub(crate) fn render_summary(summary: &Summary) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "idemflow demo: {} orders, {}{} client threads, fault rate {}, seed {}, durability {}",
        group(summary.orders),
        if summary.processes > 1 {
            format!("{} processes x ", summary.processes)
        } else {
            String::new()
        },
        summary.threads,
        summary.duplicate_rate,
        summary.seed,
        summary.durability
    );
    let _ = writeln!(
        out,
        "database: {}\n",
        summary
            .database
            .as_deref()
            .unwrap_or("temporary (deleted at exit)")
    );

    let requests = &summary.requests;
    let mut table = Table::new(&[("REQUESTS", Align::Left), ("COUNT", Align::Right)]);
    table.row(vec!["sent".into(), group(requests.sent)]);
    table.row(vec![
        "applied (creations included)".into(),
        group(requests.applied),
    ]);
    table.row(vec!["no-ops (already there)".into(), group(requests.noops)]);
    table.row(vec![
        "replays (same key again)".into(),
        group(requests.replays),
    ]);
    table.row(vec!["rejected".into(), group(requests.rejected)]);
    for (kind, count) in &requests.rejected_by_reason {
        table.row(vec![format!("  {kind}"), group(*count)]);
    }
    out.push_str(&table.render());

    let mut table = Table::new(&[("SCENARIO", Align::Left), ("ORDERS", Align::Right)]);
    for (name, count) in &summary.scenarios {
        table.row(vec![(*name).to_owned(), group(*count)]);
    }
    out.push('\n');
    out.push_str(&table.render());

    let mut table = Table::new(&[("INJECTED", Align::Left), ("TIMES", Align::Right)]);
    for (name, count) in &summary.injected_faults {
        table.row(vec![(*name).to_owned(), group(*count)]);
    }
    out.push('\n');
    out.push_str(&table.render());

    let mut table = Table::new(&[("FINAL STATE", Align::Left), ("ORDERS", Align::Right)]);
    for (state, count) in &summary.final_states {
        table.row(vec![state.clone(), group(*count)]);
    }
    table.row(vec![
        "charged (applied pay)".into(),
        group(summary.orders_charged),
    ]);
    table.row(vec![
        "charged twice".into(),
        group(summary.orders_charged_twice),
    ]);
    table.row(vec![
        "cancelled by the payment timeout".into(),
        group(summary.orders_cancelled_by_timeout),
    ]);
    out.push('\n');
    out.push_str(&table.render());

    let _ = writeln!(out, "\nINVARIANT CHECKS");
    for check in &summary.checks {
        let _ = writeln!(
            out,
            "  {}  {} ({})",
            if check.pass { "PASS" } else { "FAIL" },
            check.name,
            check.detail
        );
    }
    for sample in &summary.unexpected_outcomes {
        let _ = writeln!(out, "        unexpected: {sample}");
    }

    let _ = writeln!(
        out,
        "\nTHROUGHPUT\n  {} requests in {:.2} s = {} requests/s ({} threads, {} durability)",
        group(summary.requests.sent),
        summary.elapsed_seconds,
        group(summary.requests_per_second.round() as u64),
        summary.threads,
        summary.durability
    );

    let _ = writeln!(out, "\nGRAPHS OF THE ORDER MACHINE");
    let mut table = Table::new(&[("KIND", Align::Left), ("FILE", Align::Left)]).indent(2);
    for file in &summary.files {
        table.row(vec![file.kind.to_owned(), file.path.clone()]);
    }
    // Without its header line: the section title says what it is.
    let rendered = table.render();
    for line in rendered.lines().skip(1) {
        let _ = writeln!(out, "{line}");
    }
    if let Some(note) = &summary.graph_note {
        let _ = writeln!(out, "  {note}");
    }
    out
}
