//! Writes the order machine as DOT, Mermaid and (when Graphviz's `dot` is
//! installed) SVG, plain and with a heat map of entity counts.
//!
//! ```text
//! cargo run --example graph_export                 # into a new temporary directory (kept)
//! cargo run --example graph_export -- ./graphs     # into ./graphs
//! ```
//!
//! The same exports are available for any stored machine from the command
//! line: `idemflow graph --db DIR MACHINE --format dot|mermaid|svg [--counts]`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use idemflow::{DotOptions, StateMachine};

/// The life of an order in a shop.
#[derive(StateMachine, Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[machine(name = "order", initial = Draft, events = OrderEvent)]
pub enum OrderState {
    /// Being filled by the customer; not yet submitted.
    #[on(submit = Submitted, cancel = Cancelled)]
    Draft,
    /// Submitted by the customer, waiting for payment.
    #[on(pay = Paid, cancel = Cancelled)]
    Submitted,
    /// Paid: the customer's card was charged.
    #[on(ship = Shipped, refund = Refunded)]
    Paid,
    /// Handed to the carrier.
    #[terminal]
    Shipped,
    /// Cancelled before payment; nothing was charged.
    #[terminal]
    Cancelled,
    /// Paid, then refunded.
    #[terminal]
    Refunded,
}

/// Renders DOT to SVG with Graphviz; `None` when Graphviz is not installed.
fn render_svg(dot: &str) -> std::io::Result<Option<Vec<u8>>> {
    match idemflow::render_svg(dot) {
        Ok(svg) => Ok(Some(svg)),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(error) => Err(error),
    }
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> std::io::Result<PathBuf> {
    let path = dir.join(name);
    std::fs::write(&path, bytes)?;
    Ok(path)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = match std::env::args_os().nth(1) {
        Some(dir) => PathBuf::from(dir),
        // `keep`: the files outlive the program, for you to open.
        None => tempfile::Builder::new()
            .prefix("idemflow-graphs-")
            .tempdir()?
            .keep(),
    };
    std::fs::create_dir_all(&dir)?;

    let def = OrderState::definition();
    let dot = def.to_dot();
    // A heat map: entities per state (here made up; `count_by_state()` gives real ones).
    let counts = BTreeMap::from([
        ("draft".to_owned(), 12),
        ("submitted".to_owned(), 30),
        ("paid".to_owned(), 8),
        ("shipped".to_owned(), 410),
        ("cancelled".to_owned(), 55),
        ("refunded".to_owned(), 21),
    ]);
    let heat = def.to_dot_with(&DotOptions {
        counts: Some(counts),
        ..DotOptions::default()
    });

    let mut written = vec![
        write(&dir, "order.dot", dot.as_bytes())?,
        write(&dir, "order-counts.dot", heat.as_bytes())?,
        write(&dir, "order.mmd", def.to_mermaid().as_bytes())?,
    ];
    match (render_svg(&dot)?, render_svg(&heat)?) {
        (Some(svg), Some(heat_svg)) => {
            written.push(write(&dir, "order.svg", &svg)?);
            written.push(write(&dir, "order-counts.svg", &heat_svg)?);
        }
        _ => eprintln!("no SVG: Graphviz `dot` is not installed (apt-get install graphviz)"),
    }
    for path in written {
        println!("{}", path.display());
    }
    Ok(())
}
