//! Pictures of workflows: a workflow's DAG as Mermaid or Graphviz DOT text,
//! optionally painted with the state of one execution's tasks.
//!
//! Node identifiers are generated (`t0`, `t1`, ... in the order the tasks are
//! given) rather than taken from task ids, because a task id may hold any
//! character; ids reach the picture only inside labels, escaped for each
//! language.

use std::collections::HashMap;
use std::fmt::Write;

use crate::engine::error::{Error, Result};

/// The languages a picture can be written in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum PictureFormat {
    /// A Mermaid flowchart, as rendered by Markdown viewers and mermaid.live.
    Mermaid,
    /// Graphviz DOT, for `dot -Tsvg` and the tools that read it.
    Dot,
}

impl PictureFormat {
    /// The format named by a `format=` argument, in any letter case.
    pub(crate) fn parse(value: &str) -> Result<Self> {
        if value.eq_ignore_ascii_case("mermaid") {
            Ok(PictureFormat::Mermaid)
        } else if value.eq_ignore_ascii_case("dot") {
            Ok(PictureFormat::Dot)
        } else {
            Err(Error::InvalidArgument { name: "format", value: value.to_string(), accepted: "\"mermaid\" or \"dot\"" })
        }
    }
}

/// What one execution did with a task, as a picture shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct TaskPaint {
    /// "Pending", "Ready", "Running", "Completed", "Failed", "Skipped", "Cancelled" or "Paused".
    pub(crate) status: String,
    pub(crate) attempts: i64,
    pub(crate) duration_ms: Option<i64>,
}

/// The colours of a task in one status.
struct Swatch {
    status: &'static str,
    /// The Mermaid class of the nodes in this status.
    class: &'static str,
    fill: &'static str,
    stroke: &'static str,
    /// Chosen for a contrast of at least 4.5:1 against `fill`, so labels stay readable.
    text: &'static str,
}

/// One colour per status. The first is Pending's, which also paints a task
/// the execution has no state for, or a status this table does not know.
const PALETTE: [Swatch; 8] = [
    Swatch { status: "Pending", class: "pending", fill: "#e5e7eb", stroke: "#6b7280", text: "#111827" },
    Swatch { status: "Ready", class: "ready", fill: "#bfdbfe", stroke: "#1d4ed8", text: "#1e3a8a" },
    Swatch { status: "Running", class: "running", fill: "#2563eb", stroke: "#1e3a8a", text: "#ffffff" },
    Swatch { status: "Completed", class: "completed", fill: "#bbf7d0", stroke: "#15803d", text: "#14532d" },
    Swatch { status: "Failed", class: "failed", fill: "#dc2626", stroke: "#7f1d1d", text: "#ffffff" },
    Swatch { status: "Skipped", class: "skipped", fill: "#f3f4f6", stroke: "#9ca3af", text: "#4b5563" },
    Swatch { status: "Cancelled", class: "cancelled", fill: "#fed7aa", stroke: "#c2410c", text: "#7c2d12" },
    Swatch { status: "Paused", class: "paused", fill: "#fef08a", stroke: "#a16207", text: "#713f12" },
];

/// One node: the lines of its label (unescaped) and, when painted, its colours.
struct Node {
    lines: Vec<String>,
    swatch: Option<usize>,
}

/// The workflow `workflow_name` as a picture in `format`.
///
/// `tasks` is in topological order, each task with the ids of its
/// dependencies; an edge goes from a dependency to its dependent. With
/// `paint`, each node is coloured by its task's status and labelled with its
/// duration and attempts; a task absent from `paint` is drawn as Pending.
/// The same arguments always give the same text, which ends in a newline.
pub(crate) fn render(
    workflow_name: &str,
    tasks: &[(String, Vec<String>)],
    paint: Option<&HashMap<String, TaskPaint>>,
    format: PictureFormat,
) -> String {
    let position: HashMap<&str, usize> = tasks.iter().enumerate().map(|(i, (id, _))| (id.as_str(), i)).collect();
    let nodes: Vec<Node> = tasks.iter().map(|(id, _)| node(id, paint)).collect();
    // The list comes from a validated DAG, where every dependency is a task;
    // an id that is not one has no node to draw an edge from.
    let edges: Vec<(usize, usize)> = tasks
        .iter()
        .enumerate()
        .flat_map(|(i, (_, deps))| deps.iter().filter_map(|d| position.get(d.as_str())).map(move |&d| (d, i)).collect::<Vec<_>>())
        .collect();
    match format {
        PictureFormat::Mermaid => mermaid(workflow_name, &nodes, &edges),
        PictureFormat::Dot => dot(workflow_name, &nodes, &edges),
    }
}

fn node(id: &str, paint: Option<&HashMap<String, TaskPaint>>) -> Node {
    let Some(paint) = paint else {
        return Node { lines: vec![id.to_string()], swatch: None };
    };
    let (status, attempts, duration_ms) = match paint.get(id) {
        Some(p) => (p.status.as_str(), p.attempts, p.duration_ms),
        None => (PALETTE[0].status, 0, None),
    };
    let swatch = PALETTE.iter().position(|s| s.status == status).unwrap_or(0);
    let mut facts = vec![status.to_string()];
    if let Some(ms) = duration_ms {
        facts.push(duration(ms));
    }
    match attempts {
        a if a <= 0 => {}
        1 => facts.push("1 attempt".into()),
        a => facts.push(format!("{a} attempts")),
    }
    Node { lines: vec![id.to_string(), facts.join(" · ")], swatch: Some(swatch) }
}

/// A duration as a person reads it: "35 ms", "1.2 s", "3 min 5 s", "2 h 10 min".
fn duration(ms: i64) -> String {
    // A negative duration can only come from a clock that stepped back.
    let ms = ms.max(0);
    if ms < 1000 {
        return format!("{ms} ms");
    }
    // Integer rounding to tenths, so 59,960 ms reads "1 min 0 s", not "60.0 s".
    let tenths = ms.saturating_add(50) / 100;
    if tenths < 600 {
        return format!("{}.{} s", tenths / 10, tenths % 10);
    }
    let seconds = ms.saturating_add(500) / 1000;
    if seconds < 3600 {
        return format!("{} min {} s", seconds / 60, seconds % 60);
    }
    let minutes = (seconds + 30) / 60;
    format!("{} h {} min", minutes / 60, minutes % 60)
}

fn mermaid(workflow_name: &str, nodes: &[Node], edges: &[(usize, usize)]) -> String {
    let mut out = format!("---\ntitle: {}\n---\nflowchart TB\n", yaml_quoted(workflow_name));
    for (i, node) in nodes.iter().enumerate() {
        let label: Vec<String> = node.lines.iter().map(|l| mermaid_text(l)).collect();
        let _ = writeln!(out, "    t{i}[\"{}\"]", label.join("<br>"));
    }
    for (from, to) in edges {
        let _ = writeln!(out, "    t{from} --> t{to}");
    }
    for (s, swatch) in PALETTE.iter().enumerate() {
        let members: Vec<String> = nodes.iter().enumerate().filter(|(_, n)| n.swatch == Some(s)).map(|(i, _)| format!("t{i}")).collect();
        if members.is_empty() {
            continue;
        }
        let _ = writeln!(out, "    classDef {} fill:{},stroke:{},color:{}", swatch.class, swatch.fill, swatch.stroke, swatch.text);
        let _ = writeln!(out, "    class {} {}", members.join(","), swatch.class);
    }
    out
}

/// Text for inside a quoted Mermaid label, where `#name;` and `#number;` are
/// Mermaid's entities.
fn mermaid_text(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '"' => out.push_str("#quot;"),
            // Labels are HTML: a raw `<b>` or `&lt;` would be markup, not text.
            '<' => out.push_str("#lt;"),
            '>' => out.push_str("#gt;"),
            '&' => out.push_str("#amp;"),
            // `#` starts an entity, `%%{` a directive anywhere in the text, a
            // backtick right after the quote a Markdown string, and Mermaid
            // rewrites any line holding `style`, a `:` and an entity, so none
            // of these may stay raw.
            '#' | '%' | '`' | ':' => {
                let _ = write!(out, "#{};", u32::from(c));
            }
            c if c.is_control() => {
                let _ = write!(out, "#{};", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out
}

/// A YAML double-quoted scalar, for Mermaid's front matter.
fn yaml_quoted(text: &str) -> String {
    let mut out = String::from("\"");
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            // Mermaid scans its whole text for markup, directives and entities
            // before and after taking the front matter off; YAML's escapes keep
            // these characters out of that text.
            c if c.is_control() || matches!(c, '<' | '>' | '%' | '#' | ':' | ';') => {
                let _ = write!(out, "\\u{:04X}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn dot(workflow_name: &str, nodes: &[Node], edges: &[(usize, usize)]) -> String {
    let name = dot_quoted(workflow_name);
    let painted = nodes.iter().any(|n| n.swatch.is_some());
    let mut out = format!("digraph {name} {{\n    graph [label={name}, labelloc=t, rankdir=TB];\n");
    out.push_str(if painted { "    node [shape=box, style=\"rounded,filled\"];\n" } else { "    node [shape=box, style=rounded];\n" });
    for (i, node) in nodes.iter().enumerate() {
        let label = dot_quoted(&node.lines.join("\n"));
        match node.swatch {
            Some(s) => {
                let swatch = &PALETTE[s];
                let _ = writeln!(
                    out,
                    "    t{i} [label={label}, fillcolor=\"{}\", color=\"{}\", fontcolor=\"{}\"];",
                    swatch.fill, swatch.stroke, swatch.text
                );
            }
            None => {
                let _ = writeln!(out, "    t{i} [label={label}];");
            }
        }
    }
    for (from, to) in edges {
        let _ = writeln!(out, "    t{from} -> t{to};");
    }
    out.push_str("}\n");
    out
}

/// A DOT double-quoted string. A backslash is escaped too: in a label it
/// would start an escape of Graphviz's own (`\N`, `\l`, ...).
fn dot_quoted(text: &str) -> String {
    let mut out = String::from("\"");
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn diamond() -> Vec<(String, Vec<String>)> {
        let task = |id: &str, deps: &[&str]| (id.to_string(), deps.iter().map(|d| d.to_string()).collect());
        vec![task("a", &[]), task("b", &["a"]), task("c", &["a"]), task("d", &["b", "c"])]
    }

    fn paint(status: &str, attempts: i64, duration_ms: Option<i64>) -> TaskPaint {
        TaskPaint { status: status.into(), attempts, duration_ms }
    }

    #[test]
    fn a_diamond_in_mermaid() {
        assert_eq!(
            render("etl", &diamond(), None, PictureFormat::Mermaid),
            "---\ntitle: \"etl\"\n---\nflowchart TB\n    t0[\"a\"]\n    t1[\"b\"]\n    t2[\"c\"]\n    t3[\"d\"]\n    \
             t0 --> t1\n    t0 --> t2\n    t1 --> t3\n    t2 --> t3\n"
        );
    }

    #[test]
    fn a_diamond_in_dot() {
        assert_eq!(
            render("etl", &diamond(), None, PictureFormat::Dot),
            "digraph \"etl\" {\n    graph [label=\"etl\", labelloc=t, rankdir=TB];\n    node [shape=box, style=rounded];\n    \
             t0 [label=\"a\"];\n    t1 [label=\"b\"];\n    t2 [label=\"c\"];\n    t3 [label=\"d\"];\n    \
             t0 -> t1;\n    t0 -> t2;\n    t1 -> t3;\n    t2 -> t3;\n}\n"
        );
    }

    #[test]
    fn awkward_ids_become_escaped_labels_of_generated_nodes() {
        let id = "say \"hi\" <b>{x}</b> & #quot; 100% `tick` a:b\\n é\nnext";
        let tasks = vec![(id.to_string(), vec![]), ("then -> me".to_string(), vec![id.to_string()])];
        let mermaid = render("wf \"q\" <x>: 5% #1", &tasks, None, PictureFormat::Mermaid);
        assert!(mermaid.starts_with("---\ntitle: \"wf \\\"q\\\" \\u003Cx\\u003E\\u003A 5\\u0025 \\u00231\"\n---\n"), "{mermaid}");
        assert!(
            mermaid.contains(
                "    t0[\"say #quot;hi#quot; #lt;b#gt;{x}#lt;/b#gt; #amp; #35;quot; 100#37; #96;tick#96; a#58;b\\n é#10;next\"]\n"
            ),
            "{mermaid}"
        );
        assert!(mermaid.contains("    t1[\"then -#gt; me\"]\n    t0 --> t1\n"), "{mermaid}");
        let dot = render("wf \"q\"\\", &tasks, None, PictureFormat::Dot);
        assert!(dot.starts_with("digraph \"wf \\\"q\\\"\\\\\" {\n"), "{dot}");
        assert!(dot.contains("    t0 [label=\"say \\\"hi\\\" <b>{x}</b> & #quot; 100% `tick` a:b\\\\n é\\nnext\"];\n"), "{dot}");
        assert!(dot.contains("    t1 [label=\"then -> me\"];\n    t0 -> t1;\n"), "{dot}");
    }

    #[test]
    fn paint_colours_nodes_by_status_and_labels_duration_and_attempts() {
        let states: HashMap<String, TaskPaint> = [
            ("a".to_string(), paint("Completed", 1, Some(1234))),
            ("b".to_string(), paint("Failed", 2, Some(35))),
            ("c".to_string(), paint("Running", 1, None)),
        ]
        .into();
        let mermaid = render("etl", &diamond(), Some(&states), PictureFormat::Mermaid);
        assert_eq!(
            mermaid,
            "---\ntitle: \"etl\"\n---\nflowchart TB\n    \
             t0[\"a<br>Completed · 1.2 s · 1 attempt\"]\n    \
             t1[\"b<br>Failed · 35 ms · 2 attempts\"]\n    \
             t2[\"c<br>Running · 1 attempt\"]\n    \
             t3[\"d<br>Pending\"]\n    \
             t0 --> t1\n    t0 --> t2\n    t1 --> t3\n    t2 --> t3\n    \
             classDef pending fill:#e5e7eb,stroke:#6b7280,color:#111827\n    class t3 pending\n    \
             classDef running fill:#2563eb,stroke:#1e3a8a,color:#ffffff\n    class t2 running\n    \
             classDef completed fill:#bbf7d0,stroke:#15803d,color:#14532d\n    class t0 completed\n    \
             classDef failed fill:#dc2626,stroke:#7f1d1d,color:#ffffff\n    class t1 failed\n"
        );
        let dot = render("etl", &diamond(), Some(&states), PictureFormat::Dot);
        assert_eq!(
            dot,
            "digraph \"etl\" {\n    graph [label=\"etl\", labelloc=t, rankdir=TB];\n    node [shape=box, style=\"rounded,filled\"];\n    \
             t0 [label=\"a\\nCompleted · 1.2 s · 1 attempt\", fillcolor=\"#bbf7d0\", color=\"#15803d\", fontcolor=\"#14532d\"];\n    \
             t1 [label=\"b\\nFailed · 35 ms · 2 attempts\", fillcolor=\"#dc2626\", color=\"#7f1d1d\", fontcolor=\"#ffffff\"];\n    \
             t2 [label=\"c\\nRunning · 1 attempt\", fillcolor=\"#2563eb\", color=\"#1e3a8a\", fontcolor=\"#ffffff\"];\n    \
             t3 [label=\"d\\nPending\", fillcolor=\"#e5e7eb\", color=\"#6b7280\", fontcolor=\"#111827\"];\n    \
             t0 -> t1;\n    t0 -> t2;\n    t1 -> t3;\n    t2 -> t3;\n}\n"
        );
    }

    #[test]
    fn an_empty_paint_draws_every_task_pending_and_an_unknown_status_in_pending_colours() {
        let none = HashMap::new();
        let mermaid = render("etl", &diamond(), Some(&none), PictureFormat::Mermaid);
        assert!(
            mermaid.ends_with("    classDef pending fill:#e5e7eb,stroke:#6b7280,color:#111827\n    class t0,t1,t2,t3 pending\n"),
            "{mermaid}"
        );
        assert_eq!(mermaid.matches("<br>Pending\"]").count(), 4, "{mermaid}");
        let odd: HashMap<String, TaskPaint> = [("a".to_string(), paint("Zombie", 0, Some(-5)))].into();
        let dot = render("etl", &diamond(), Some(&odd), PictureFormat::Dot);
        assert!(dot.contains("    t0 [label=\"a\\nZombie · 0 ms\", fillcolor=\"#e5e7eb\""), "{dot}");
    }

    #[test]
    fn every_status_has_its_own_colour() {
        for (i, swatch) in PALETTE.iter().enumerate() {
            let states: HashMap<String, TaskPaint> = [("a".to_string(), paint(swatch.status, 1, None))].into();
            let dot = render("wf", &diamond()[..1], Some(&states), PictureFormat::Dot);
            assert!(dot.contains(&format!("fillcolor=\"{}\"", swatch.fill)), "{dot}");
            assert!(PALETTE.iter().skip(i + 1).all(|other| other.fill != swatch.fill), "{} shares its fill", swatch.status);
        }
    }

    #[test]
    fn durations_read_in_their_own_unit() {
        let cases = [(0, "0 ms"), (35, "35 ms"), (999, "999 ms"), (1000, "1.0 s"), (1234, "1.2 s"), (59_940, "59.9 s")];
        let more = [(59_960, "1 min 0 s"), (125_000, "2 min 5 s"), (3_599_000, "59 min 59 s"), (7_800_000, "2 h 10 min")];
        for (ms, text) in cases.into_iter().chain(more) {
            assert_eq!(duration(ms), text, "{ms} ms");
        }
    }

    #[test]
    fn the_same_input_gives_the_same_text() {
        let states: HashMap<String, TaskPaint> = [("a".to_string(), paint("Completed", 1, Some(1)))].into();
        for format in [PictureFormat::Mermaid, PictureFormat::Dot] {
            let first = render("etl", &diamond(), Some(&states), format);
            assert_eq!(first, render("etl", &diamond(), Some(&states).cloned().as_ref(), format));
            assert!(first.ends_with('\n'));
        }
    }

    #[test]
    fn formats_parse_by_name_and_others_are_refused_naming_both() {
        assert_eq!(PictureFormat::parse("mermaid").unwrap(), PictureFormat::Mermaid);
        assert_eq!(PictureFormat::parse("DOT").unwrap(), PictureFormat::Dot);
        let error = PictureFormat::parse("svg").unwrap_err();
        assert_eq!(error.to_string(), "format=\"svg\" is not accepted: use \"mermaid\" or \"dot\"");
        assert_eq!(error.kind(), crate::engine::error::ErrorKind::InvalidArgument);
    }
}
