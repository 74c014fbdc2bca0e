//! Graph export and analysis of `MachineDef`: exact DOT and Mermaid text,
//! escaping, determinism, the DOT options, timed transitions, rendering
//! through Graphviz, and the path queries.

use std::collections::BTreeMap;
use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use idemflow::{DotOptions, MachineDef};

/// The order machine of the docs (`docs/order.*`).
fn order() -> MachineDef {
    MachineDef::new("order", "draft")
        .state("draft")
        .describe("Created, not yet submitted")
        .state("submitted")
        .describe("Waiting for payment")
        .state("paid")
        .describe("Charged; ready to ship")
        .terminal_state("shipped")
        .describe("Handed to the carrier")
        .terminal_state("cancelled")
        .describe("Cancelled before payment")
        .terminal_state("refunded")
        .describe("Charged, then refunded")
        .transition("draft", "submit", "submitted")
        .transition("draft", "cancel", "cancelled")
        .transition("submitted", "pay", "paid")
        .transition("submitted", "cancel", "cancelled")
        .transition("paid", "ship", "shipped")
        .transition("paid", "refund", "refunded")
}

/// A small machine with a cycle and no descriptions.
fn door() -> MachineDef {
    MachineDef::new("door", "closed")
        .state("closed")
        .state("open")
        .terminal_state("removed")
        .transition("closed", "open", "open")
        .transition("open", "close", "closed")
        .transition("closed", "remove", "removed")
}

/// Names and descriptions with every character that needs care.
fn weird() -> MachineDef {
    MachineDef::new("we\"ird\\name", "a \"quoted\" state")
        .state("a \"quoted\" state")
        .describe("line one\nline two \\ back \"q\" & <b>bold</b> #1; x:y")
        .state("back\\slash")
        .describe("crlf\r\nend\ttab")
        .state("__start")
        .describe("direction LR; %%{init}%% [*] {x} `code`")
        .terminal_state("end\\")
        .terminal_state("multi\nline")
        .transition("a \"quoted\" state", "go \"now\"", "back\\slash")
        .transition("back\\slash", "x:y;z", "__start")
        .transition("__start", "end", "end\\")
        .transition("__start", "state", "multi\nline")
}

/// The invoice of `docs/machines.md`: `sent` expires after 30 minutes,
/// `reminded` moves on after 90 s; aliases everywhere (never drawn).
fn invoice() -> MachineDef {
    MachineDef::new("invoice", "draft")
        .state("draft")
        .state("sent")
        .state("reminded")
        .terminal_state("paid")
        .terminal_state("expired")
        .transition("draft", "send", "sent")
        .transition("sent", "pay", "paid")
        .transition("sent", "remind", "reminded")
        .transition("sent", "expire", "expired")
        .transition("reminded", "pay", "paid")
        .transition("reminded", "expire", "expired")
        .timeout("sent", Duration::from_secs(30 * 60), "expire")
        .timeout("reminded", Duration::from_secs(90), "expire")
        .alias("sent", "issued")
        .event_alias("pay", "settle")
}

fn lines(text: &str) -> Vec<&str> {
    text.lines().collect()
}

#[test]
fn dot_of_the_order_machine() {
    let expected = r#"digraph "order" {
    rankdir=LR;
    node [fontname="Helvetica,Arial,sans-serif"];
    edge [fontname="Helvetica,Arial,sans-serif"];
    "__start" [shape=point, width=0.2];
    "draft" [shape=circle, tooltip="Created, not yet submitted"];
    "submitted" [shape=circle, tooltip="Waiting for payment"];
    "paid" [shape=circle, tooltip="Charged; ready to ship"];
    "shipped" [shape=doublecircle, tooltip="Handed to the carrier"];
    "cancelled" [shape=doublecircle, tooltip="Cancelled before payment"];
    "refunded" [shape=doublecircle, tooltip="Charged, then refunded"];
    "__start" -> "draft";
    "draft" -> "submitted" [label="submit"];
    "draft" -> "cancelled" [label="cancel"];
    "submitted" -> "paid" [label="pay"];
    "submitted" -> "cancelled" [label="cancel"];
    "paid" -> "shipped" [label="ship"];
    "paid" -> "refunded" [label="refund"];
}
"#;
    assert_eq!(order().to_dot(), expected);
}

#[test]
fn mermaid_of_the_order_machine() {
    let expected = r#"stateDiagram-v2
    direction LR
    state "draft" as draft
    draft : Created, not yet submitted
    state "submitted" as submitted
    submitted : Waiting for payment
    state "paid" as paid
    paid : Charged#59; ready to ship
    state "shipped" as shipped
    shipped : Handed to the carrier
    state "cancelled" as cancelled
    cancelled : Cancelled before payment
    state "refunded" as refunded
    refunded : Charged, then refunded
    [*] --> draft
    draft --> submitted : submit
    draft --> cancelled : cancel
    submitted --> paid : pay
    submitted --> cancelled : cancel
    paid --> shipped : ship
    paid --> refunded : refund
    shipped --> [*]
    cancelled --> [*]
    refunded --> [*]
"#;
    assert_eq!(order().to_mermaid(), expected);
}

#[test]
fn dot_draws_timed_transitions_dashed_with_their_delay() {
    let expected = r#"digraph "invoice" {
    rankdir=LR;
    node [fontname="Helvetica,Arial,sans-serif"];
    edge [fontname="Helvetica,Arial,sans-serif"];
    "__start" [shape=point, width=0.2];
    "draft" [shape=circle];
    "sent" [shape=circle];
    "reminded" [shape=circle];
    "paid" [shape=doublecircle];
    "expired" [shape=doublecircle];
    "__start" -> "draft";
    "draft" -> "sent" [label="send"];
    "sent" -> "paid" [label="pay"];
    "sent" -> "reminded" [label="remind"];
    "sent" -> "expired" [label="expire (after 30m)", style=dashed];
    "reminded" -> "paid" [label="pay"];
    "reminded" -> "expired" [label="expire (after 90s)", style=dashed];
}
"#;
    assert_eq!(invoice().to_dot(), expected);
    assert_eq!(invoice().validate().map_err(|e| e.to_string()), Ok(()));
}

#[test]
fn mermaid_labels_timed_transitions_with_their_delay() {
    let expected = r#"stateDiagram-v2
    direction LR
    state "draft" as draft
    state "sent" as sent
    state "reminded" as reminded
    state "paid" as paid
    state "expired" as expired
    [*] --> draft
    draft --> sent : send
    sent --> paid : pay
    sent --> reminded : remind
    sent --> expired : expire (after 30m)
    reminded --> paid : pay
    reminded --> expired : expire (after 90s)
    paid --> [*]
    expired --> [*]
"#;
    assert_eq!(invoice().to_mermaid(), expected);
}

#[test]
fn a_highlighted_timed_transition_stays_dashed() {
    let dot = invoice().to_dot_with(&DotOptions {
        highlight_path: ["draft", "sent", "expired"].map(str::to_owned).to_vec(),
        ..DotOptions::default()
    });
    assert!(dot.contains(
        r##"    "sent" -> "expired" [label="expire (after 30m)", style=dashed, color="#1f6feb", fontcolor="#1f6feb", penwidth=2.5];"##
    ));
    assert!(
        dot.contains(r#"    "reminded" -> "expired" [label="expire (after 90s)", style=dashed];"#)
    );
    assert_eq!(dot.matches("style=dashed").count(), 2);
}

#[test]
fn delays_are_drawn_in_the_largest_exact_unit() {
    let door = |after: Duration| door().timeout("open", after, "close");
    let label = |after: Duration| {
        let dot = door(after).to_dot();
        let line = dot
            .lines()
            .find(|line| line.contains(r#""open" -> "closed""#))
            .unwrap()
            .to_owned();
        let mermaid = door(after).to_mermaid();
        let edge = mermaid
            .lines()
            .find(|line| line.starts_with("    open --> closed : "))
            .unwrap()
            .trim_start_matches("    open --> closed : ")
            .to_owned();
        (line, edge)
    };
    for (after, text) in [
        (Duration::from_millis(1_800_000), "30m"),
        (Duration::from_millis(90_000), "90s"),
        (Duration::from_millis(1_500), "1500ms"),
        (Duration::from_secs(7_200), "2h"),
        (Duration::from_secs(2 * 86_400), "2d"),
        (Duration::from_secs(36 * 3_600), "36h"),
    ] {
        let (dot, mermaid) = label(after);
        assert_eq!(
            dot,
            format!(r#"    "open" -> "closed" [label="close (after {text})", style=dashed];"#)
        );
        assert_eq!(mermaid, format!("close (after {text})"));
    }
}

#[test]
fn only_the_fired_transition_is_dashed() {
    // `closed` times out on `remove`: `open` stays solid, as does `open --close-->`.
    let def = door().timeout("closed", Duration::from_secs(60), "remove");
    let dot = def.to_dot();
    assert_eq!(dot.matches("style=dashed").count(), 1);
    assert!(dot.contains(r#""closed" -> "removed" [label="remove (after 1m)", style=dashed];"#));
    assert!(dot.contains(r#""closed" -> "open" [label="open"];"#));
    assert!(dot.contains(r#""open" -> "closed" [label="close"];"#));
    // A timeout that fires no declared transition (an invalid definition) draws nothing.
    let def = door().timeout("closed", Duration::from_secs(60), "close");
    assert!(def.validate().is_err());
    assert_eq!(def.to_dot(), door().to_dot());
    assert_eq!(def.to_mermaid(), door().to_mermaid());
}

#[test]
fn aliases_are_not_drawn() {
    let aliased = order()
        .alias("paid", "charged")
        .alias("draft", "new")
        .event_alias("ship", "dispatch");
    aliased.validate().unwrap();
    assert_eq!(aliased.to_dot(), order().to_dot());
    assert_eq!(aliased.to_mermaid(), order().to_mermaid());
}

/// The files under docs/ are what the current code writes.
#[test]
fn docs_files_are_up_to_date() {
    let root = env!("CARGO_MANIFEST_DIR");
    let dot = std::fs::read_to_string(format!("{root}/docs/order.dot")).unwrap();
    let mermaid = std::fs::read_to_string(format!("{root}/docs/order.mmd")).unwrap();
    assert_eq!(
        dot,
        order().to_dot(),
        "regenerate docs/order.dot (see docs/graphs.md)"
    );
    assert_eq!(mermaid, order().to_mermaid(), "regenerate docs/order.mmd");
    let svg = std::fs::read_to_string(format!("{root}/docs/order.svg")).unwrap();
    assert!(svg.contains("<svg"));
}

/// Rewrites `docs/order.dot`, `docs/order.mmd` and (with Graphviz)
/// `docs/order.svg`: `cargo test --test graph -- --ignored write_docs_files`.
#[test]
#[ignore = "writes docs/order.*; run by hand after changing the output"]
fn write_docs_files() {
    let root = env!("CARGO_MANIFEST_DIR");
    let dot = order().to_dot();
    std::fs::write(format!("{root}/docs/order.dot"), &dot).unwrap();
    std::fs::write(format!("{root}/docs/order.mmd"), order().to_mermaid()).unwrap();
    if let Some(svg) = render_svg(&dot) {
        std::fs::write(format!("{root}/docs/order.svg"), svg).unwrap();
    }
}

#[test]
fn output_is_deterministic_and_follows_declaration_order() {
    for def in [order(), door(), weird()] {
        assert_eq!(def.to_dot(), def.clone().to_dot());
        assert_eq!(def.to_mermaid(), def.clone().to_mermaid());
        let options = DotOptions {
            counts: Some(BTreeMap::from([("closed".to_owned(), 2)])),
            highlight_path: vec!["closed".to_owned(), "open".to_owned()],
        };
        assert_eq!(def.to_dot_with(&options), def.to_dot_with(&options.clone()));
    }

    // Declaring the same states in another order changes only the order.
    let mut reordered = order();
    reordered.states.reverse();
    reordered.transitions.reverse();
    let dot = reordered.to_dot();
    let refunded = dot.find(r#""refunded" [shape"#).unwrap();
    let draft = dot.find(r#""draft" [shape"#).unwrap();
    assert!(refunded < draft);
    let mut sorted_a = lines(&dot);
    let original = order().to_dot();
    let mut sorted_b = lines(&original);
    sorted_a.sort_unstable();
    sorted_b.sort_unstable();
    assert_eq!(sorted_a, sorted_b);
}

#[test]
fn to_dot_is_to_dot_with_default_options() {
    for def in [order(), door(), weird()] {
        assert_eq!(def.to_dot(), def.to_dot_with(&DotOptions::default()));
    }
}

#[test]
fn dot_escapes_quotes_backslashes_and_newlines() {
    let dot = weird().to_dot();
    let expected = r#"digraph "we\"ird\\name" {
    rankdir=LR;
    node [fontname="Helvetica,Arial,sans-serif"];
    edge [fontname="Helvetica,Arial,sans-serif"];
    "__start_" [shape=point, width=0.2];
    "a \"quoted\" state" [shape=circle, tooltip="line one\nline two \\ back \"q\" &amp; <b>bold</b> #1; x:y"];
    "back\\slash" [shape=circle, tooltip="crlf\nend tab"];
    "__start" [shape=circle, tooltip="direction LR; %%{init}%% [*] {x} `code`"];
    "end\\" [shape=doublecircle];
    "multi\nline" [shape=doublecircle];
    "__start_" -> "a \"quoted\" state";
    "a \"quoted\" state" -> "back\\slash" [label="go \"now\""];
    "back\\slash" -> "__start" [label="x:y;z"];
    "__start" -> "end\\" [label="end"];
    "__start" -> "multi\nline" [label="state"];
}
"#;
    assert_eq!(dot, expected);
    // No raw line break inside any statement.
    for line in lines(&dot).iter().skip(1) {
        assert!(line.starts_with("    ") || *line == "}", "{line:?}");
    }
}

#[test]
fn dot_control_characters_are_replaced() {
    let def = MachineDef::new("m", "a\u{0}b")
        .state("a\u{0}b")
        .describe("bell\u{7}")
        .terminal_state("z")
        .transition("a\u{0}b", "go", "z");
    let dot = def.to_dot();
    assert!(dot.contains("\"a\u{FFFD}b\" [shape=circle, tooltip=\"bell\u{FFFD}\"];"));
    assert!(!dot.contains('\u{0}'));
}

#[test]
fn mermaid_escapes_what_it_cannot_take() {
    let expected = "stateDiagram-v2
    direction LR
    state \"a #34;quoted#34; state\" as s0
    s0 : line one
    s0 : line two #92; back #34;q#34; #38; #60;b#62;bold#60;/b#62; #35;1#59; x#58;y
    state \"back#92;slash\" as s1
    s1 : crlf
    s1 : end tab
    state \"__start\" as __start
    __start : directio#110; LR#59; #37;#37;#123;init#125;#37;#37; #91;*#93; #123;x#125; #96;code#96;
    state \"end#92;\" as s3
    state \"multi line\" as s4
    [*] --> s0
    s0 --> s1 : go #34;now#34;
    s1 --> __start : x#58;y#59;z
    __start --> s3 : end
    __start --> s4 : state
    s3 --> [*]
    s4 --> [*]
";
    assert_eq!(weird().to_mermaid(), expected);
}

#[test]
fn mermaid_ids_avoid_keywords_and_clashes() {
    // `state`, `note`, `end1` and names containing "direction" cannot be
    // Mermaid ids; the generated `s<index>` must not clash with a real `s1`.
    let def = MachineDef::new("m", "state")
        .state("state")
        .state("s1")
        .state("Direction_x")
        .state("note")
        .terminal_state("end1")
        .transition("state", "a", "s1")
        .transition("s1", "b", "Direction_x")
        .transition("Direction_x", "c", "note")
        .transition("note", "d", "end1");
    let mermaid = def.to_mermaid();
    assert!(mermaid.contains("    state \"state\" as s0\n"));
    assert!(mermaid.contains("    state \"s1\" as s1\n"));
    assert!(mermaid.contains("    state \"Directio#110;_x\" as s2\n"));
    assert!(mermaid.contains("    state \"note\" as s3\n"));
    assert!(mermaid.contains("    state \"end1\" as s4\n"));
    assert!(mermaid.contains("    s0 --> s1 : a\n"));
    assert!(mermaid.contains("    s1 --> s2 : b\n"));

    // A real state named like the generated id pushes the id aside.
    let def = MachineDef::new("m", "x y")
        .state("x y")
        .terminal_state("s0")
        .transition("x y", "go", "s0");
    let mermaid = def.to_mermaid();
    assert!(mermaid.contains("    state \"x y\" as s0_\n"));
    assert!(mermaid.contains("    s0_ --> s0 : go\n"));
}

#[test]
fn dot_with_counts_is_a_heat_map() {
    let counts = BTreeMap::from([
        ("closed".to_owned(), 3),
        ("open".to_owned(), 1),
        ("ghost".to_owned(), 1000), // not a state: ignored
    ]);
    let dot = door().to_dot_with(&DotOptions {
        counts: Some(counts),
        ..DotOptions::default()
    });
    let expected = r##"digraph "door" {
    rankdir=LR;
    node [fontname="Helvetica,Arial,sans-serif"];
    edge [fontname="Helvetica,Arial,sans-serif"];
    "__start" [shape=point, width=0.2];
    "closed" [shape=circle, label="closed\n3", style=filled, fillcolor="#d7301f", fontcolor=white];
    "open" [shape=circle, label="open\n1", style=filled, fillcolor="#fdd49e"];
    "removed" [shape=doublecircle, label="removed\n0", style=filled, fillcolor="#fff7ec"];
    "__start" -> "closed";
    "closed" -> "open" [label="open"];
    "open" -> "closed" [label="close"];
    "closed" -> "removed" [label="remove"];
}
"##;
    assert_eq!(dot, expected);

    // All zero (or empty) counts: every state at the palest shade.
    let dot = door().to_dot_with(&DotOptions {
        counts: Some(BTreeMap::new()),
        ..DotOptions::default()
    });
    assert_eq!(dot.matches(r##"fillcolor="#fff7ec""##).count(), 3);

    // Everything in one state: the darkest shade.
    let dot = door().to_dot_with(&DotOptions {
        counts: Some(BTreeMap::from([("removed".to_owned(), u64::MAX)])),
        ..DotOptions::default()
    });
    assert!(dot.contains(r##""removed" [shape=doublecircle, label="removed\n18446744073709551615", style=filled, fillcolor="#7f0000", fontcolor=white];"##));
}

#[test]
fn dot_with_highlighted_path() {
    let path = ["closed", "open", "closed"].map(str::to_owned).to_vec();
    let dot = door().to_dot_with(&DotOptions {
        highlight_path: path,
        ..DotOptions::default()
    });
    let expected = r##"digraph "door" {
    rankdir=LR;
    node [fontname="Helvetica,Arial,sans-serif"];
    edge [fontname="Helvetica,Arial,sans-serif"];
    "__start" [shape=point, width=0.2];
    "closed" [shape=circle, style=filled, fillcolor="#1f6feb", fontcolor=white, color="#1f6feb", penwidth=2];
    "open" [shape=circle, color="#1f6feb", penwidth=2];
    "removed" [shape=doublecircle];
    "__start" -> "closed" [color="#1f6feb", penwidth=2.5];
    "closed" -> "open" [label="open", color="#1f6feb", fontcolor="#1f6feb", penwidth=2.5];
    "open" -> "closed" [label="close", color="#1f6feb", fontcolor="#1f6feb", penwidth=2.5];
    "closed" -> "removed" [label="remove"];
}
"##;
    assert_eq!(dot, expected);
}

#[test]
fn highlighted_path_ignores_unknown_states_and_missing_steps() {
    // A history from an older definition: `lost` is gone; `draft -> paid`
    // is not a transition; the path does not start at the initial state.
    let path = ["submitted", "lost", "paid", "draft", "paid", "refunded"]
        .map(str::to_owned)
        .to_vec();
    let dot = order().to_dot_with(&DotOptions {
        highlight_path: path,
        ..DotOptions::default()
    });
    assert!(dot.contains("    \"__start\" -> \"draft\";\n"));
    // `submitted -> lost -> paid`: no step is drawn across the unknown state.
    assert!(dot.contains(r#"    "submitted" -> "paid" [label="pay"];"#));
    assert!(dot.contains(r##""submitted" [shape=circle, color="#1f6feb", penwidth=2, "##));
    assert!(dot.contains(
        r##"    "paid" -> "refunded" [label="refund", color="#1f6feb", fontcolor="#1f6feb", penwidth=2.5];"##
    ));
    assert!(dot.contains(r##""refunded" [shape=doublecircle, style=filled, fillcolor="#1f6feb", fontcolor=white, color="#1f6feb", penwidth=2, tooltip="Charged, then refunded"];"##));
    assert!(dot.contains(r#""draft" -> "submitted" [label="submit"];"#));
    assert!(dot.contains(r#""paid" -> "shipped" [label="ship"];"#));
    assert_eq!(dot.matches("penwidth=2.5").count(), 1);
}

#[test]
fn counts_and_path_together() {
    let options = DotOptions {
        counts: Some(BTreeMap::from([
            ("draft".to_owned(), 5),
            ("paid".to_owned(), 5),
        ])),
        highlight_path: ["draft", "submitted", "paid"].map(str::to_owned).to_vec(),
    };
    let dot = order().to_dot_with(&options);
    // The current state keeps its count label but takes the highlight fill.
    assert!(dot.contains(r##""paid" [shape=circle, label="paid\n5", style=filled, fillcolor="#1f6feb", fontcolor=white, color="#1f6feb", penwidth=2, tooltip="Charged; ready to ship"];"##));
    assert!(dot.contains(r##""draft" [shape=circle, label="draft\n5", style=filled, fillcolor="#fc8d59", color="#1f6feb", penwidth=2, tooltip="Created, not yet submitted"];"##));
    assert!(dot.contains(r##"    "__start" -> "draft" [color="#1f6feb", penwidth=2.5];"##));
}

/// Runs `dot -Tsvg` on the text; `None` when Graphviz is not installed
/// (which fails instead when `IDEMFLOW_REQUIRE_DOT=1`).
fn render_svg(dot_text: &str) -> Option<String> {
    let child = Command::new("dot")
        .arg("-Tsvg")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let mut child = match child {
        Ok(child) => child,
        Err(error) => {
            assert!(
                std::env::var("IDEMFLOW_REQUIRE_DOT").as_deref() != Ok("1"),
                "IDEMFLOW_REQUIRE_DOT=1 but Graphviz `dot` cannot be run: {error}"
            );
            eprintln!("skipping the Graphviz check: `dot` cannot be run ({error})");
            return None;
        }
    };
    child
        .stdin
        .take()
        .unwrap()
        .write_all(dot_text.as_bytes())
        .unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "dot -Tsvg failed ({}): {}\n--- input ---\n{dot_text}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        !stderr.contains("Error") && !stderr.contains("syntax error"),
        "dot -Tsvg complained: {stderr}\n--- input ---\n{dot_text}"
    );
    Some(String::from_utf8(output.stdout).expect("SVG is UTF-8"))
}

#[test]
fn graphviz_renders_every_variant() {
    let single = MachineDef::new("single", "only").terminal_state("only");
    let unicode = MachineDef::new("ünïcødé ✓", "été")
        .state("été")
        .describe("naïve — “quoted” 💡")
        .terminal_state("fin")
        .transition("été", "→", "fin");
    let with_options = |def: &MachineDef| {
        let counts = def
            .states
            .iter()
            .enumerate()
            .map(|(i, s)| (s.name.clone(), i as u64 * 7))
            .collect();
        let path: Vec<String> = def
            .shortest_path(&def.states.last().unwrap().name)
            .map(|steps| {
                std::iter::once(def.initial.clone())
                    .chain(steps.into_iter().map(|t| t.to))
                    .collect()
            })
            .unwrap_or_default();
        [
            DotOptions {
                counts: Some(counts),
                ..DotOptions::default()
            },
            DotOptions {
                highlight_path: path.clone(),
                ..DotOptions::default()
            },
            DotOptions {
                counts: Some(BTreeMap::from([(def.initial.clone(), 1)])),
                highlight_path: path,
            },
        ]
    };
    for def in [order(), door(), weird(), single, unicode, invoice()] {
        let mut texts = vec![def.to_dot()];
        texts.extend(with_options(&def).iter().map(|o| def.to_dot_with(o)));
        for text in texts {
            let Some(svg) = render_svg(&text) else {
                return;
            };
            assert!(svg.contains("<svg"), "no <svg in the output of {text}");
        }
    }
}

#[test]
fn graphviz_reads_names_back_exactly() {
    // `dot -Tcanon` prints the graph as parsed: the weird names come back
    // with the same escaping, so none was mangled or merged.
    let text = weird().to_dot();
    let Some(_) = render_svg(&text) else { return };
    let output = Command::new("dot")
        .arg("-Tcanon")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            child.stdin.take().unwrap().write_all(text.as_bytes())?;
            child.wait_with_output()
        })
        .unwrap();
    let canon = String::from_utf8(output.stdout).unwrap();
    for name in [
        r#""a \"quoted\" state""#,
        r#""back\\slash""#,
        r#""end\\""#,
        r#""multi\nline""#,
        "__start_",
    ] {
        assert!(canon.contains(name), "{name} missing from\n{canon}");
    }
    // 5 states + the entry marker.
    assert_eq!(canon.matches("shape=").count(), 6, "{canon}");
}

#[test]
fn shortest_paths() {
    let def = order();
    assert_eq!(def.shortest_path("draft"), Some(vec![]));
    let events = |to: &str| -> Vec<String> {
        def.shortest_path(to)
            .unwrap()
            .into_iter()
            .map(|t| t.event)
            .collect()
    };
    assert_eq!(events("submitted"), ["submit"]);
    assert_eq!(events("cancelled"), ["cancel"]);
    assert_eq!(events("paid"), ["submit", "pay"]);
    assert_eq!(events("refunded"), ["submit", "pay", "refund"]);
    let path = def.shortest_path("shipped").unwrap();
    assert_eq!(
        path.iter()
            .map(|t| (t.from.as_str(), t.event.as_str(), t.to.as_str()))
            .collect::<Vec<_>>(),
        [
            ("draft", "submit", "submitted"),
            ("submitted", "pay", "paid"),
            ("paid", "ship", "shipped"),
        ]
    );
    assert_eq!(def.shortest_path("unknown"), None);

    // Unreachable state (an invalid definition): no path.
    let def = door().state("island").transition("island", "go", "closed");
    assert_eq!(def.shortest_path("island"), None);
    // Undeclared initial state: no path at all.
    let mut def = door();
    def.initial = "nowhere".to_owned();
    assert_eq!(def.shortest_path("closed"), None);
}

#[test]
fn shortest_path_breaks_ties_by_declaration_order() {
    let def = MachineDef::new("m", "a")
        .state("a")
        .state("b")
        .state("c")
        .terminal_state("d")
        .transition("a", "via_c", "c")
        .transition("a", "via_b", "b")
        .transition("b", "to_d", "d")
        .transition("c", "to_d", "d")
        .transition("a", "slow", "b");
    let events: Vec<String> = def
        .shortest_path("d")
        .unwrap()
        .into_iter()
        .map(|t| t.event)
        .collect();
    assert_eq!(events, ["via_c", "to_d"]);
}

#[test]
fn legal_targets_are_distinct_and_in_declaration_order() {
    let def = order();
    assert_eq!(def.legal_targets("draft"), ["submitted", "cancelled"]);
    assert_eq!(def.legal_targets("paid"), ["shipped", "refunded"]);
    assert!(def.legal_targets("shipped").is_empty());
    assert!(def.legal_targets("unknown").is_empty());

    let def = MachineDef::new("m", "a")
        .state("a")
        .terminal_state("b")
        .terminal_state("c")
        .transition("a", "x", "c")
        .transition("a", "y", "b")
        .transition("a", "z", "c")
        .transition("a", "w", "ghost");
    assert_eq!(def.legal_targets("a"), ["c", "b"]);
}

#[test]
fn reachable_and_terminal_states() {
    let def = order();
    assert_eq!(def.reachable_states().len(), 6);
    assert_eq!(def.terminal_states(), ["shipped", "cancelled", "refunded"]);
}

#[test]
fn invalid_definitions_still_export() {
    // Unknown ends are left out; nothing panics.
    let def = MachineDef::new("", "ghost")
        .state("a")
        .transition("a", "go", "nowhere")
        .transition("a", "", "a");
    let dot = def.to_dot();
    assert!(dot.starts_with("digraph \"\" {\n"));
    assert!(!dot.contains("nowhere"));
    assert!(!dot.contains("__start"));
    assert!(dot.contains("    \"a\" -> \"a\" [label=\"\"];\n"));
    let mermaid = def.to_mermaid();
    assert!(!mermaid.contains("nowhere"));
    assert!(!mermaid.contains("[*]"));
    assert!(mermaid.contains("    a --> a\n"));
    if let Some(svg) = render_svg(&dot) {
        assert!(svg.contains("<svg"));
    }
}
