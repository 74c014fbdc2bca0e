//! Pictures of the order machine, plain and as a heat map of final states.

use std::path::Path;

use idemflow::{DotOptions, Machine};

use super::WrittenFile;
use crate::commands::{demo_output_dir, graphviz_available, render_svg, write_file};
use crate::demo::machine::OrderState;
use crate::CliResult;

/// Writes the order machine as DOT, Mermaid and (with Graphviz) SVG, plain
/// and as a heat map of the final states.
pub(crate) fn write_graphs(
    db: Option<&Path>,
    orders: &Machine<OrderState>,
    final_states: &[(String, u64)],
) -> CliResult<(Vec<WrittenFile>, Option<String>)> {
    let dir = demo_output_dir(db)?;
    let def = orders.named().definition().clone();
    let heat = def.to_dot_with(&DotOptions {
        counts: Some(final_states.iter().cloned().collect()),
        ..DotOptions::default()
    });
    let plain = def.to_dot();
    let mut files = Vec::new();
    let mut write = |kind: &'static str, name: &str, bytes: &[u8]| -> CliResult {
        let path = dir.join(name);
        write_file(&path, bytes)?;
        files.push(WrittenFile {
            kind,
            path: path.display().to_string(),
        });
        Ok(())
    };
    write("dot", "order.dot", plain.as_bytes())?;
    write("dot heat map", "order-counts.dot", heat.as_bytes())?;
    write("mermaid", "order.mmd", def.to_mermaid().as_bytes())?;
    let mut note = None;
    if graphviz_available() {
        write("svg", "order.svg", &render_svg(&plain)?)?;
        write("svg heat map", "order-counts.svg", &render_svg(&heat)?)?;
    } else {
        note =
            Some("no SVG: Graphviz `dot` is not installed (apt-get install graphviz)".to_owned());
    }
    Ok((files, note))
}
