//! The evidence graph drawn as SVG on the server: the same [`Graph`] the API serves
//! (`GET /v1/graph/incident/{id}`), laid out in columns by node type (incident and response
//! actions, decisions, receipts, agent and run, tools and policies), with an edge drawn for
//! every edge of the graph. Labels are SVG text, escaped like any other text of the page, so
//! nothing an agent wrote can become markup; no script draws it.

use aegis_server::evidence::Graph;
use maud::{Markup, html};
use serde_json::Value;
use std::collections::HashMap;

const COLUMN_WIDTH: i64 = 210;
const NODE_WIDTH: i64 = 180;
const NODE_HEIGHT: i64 = 30;
const ROW_HEIGHT: i64 = 40;
const MARGIN: i64 = 10;
/// Characters of a label before it is cut (the full text is in the node's tooltip).
const LABEL_CHARS: usize = 24;

/// The column of a node type, left to right.
fn column(kind: &str) -> i64 {
    match kind {
        "incident" | "response_action" => 0,
        "decision" => 1,
        "receipt" => 2,
        "agent" | "run" => 3,
        _ => 4,
    }
}

fn text<'a>(node: &'a Value, field: &str) -> &'a str {
    node.get(field).and_then(Value::as_str).unwrap_or_default()
}

/// What a node says on the graph, and its tooltip.
fn label(node: &Value) -> (String, String) {
    let reference = text(node, "ref");
    match text(node, "type") {
        "decision" => {
            let short = format!(
                "{} {}.{}",
                text(node, "decision"),
                text(node, "tool"),
                text(node, "action")
            );
            let full = format!(
                "{short} · risk {} · {}",
                node.get("risk_score")
                    .map(Value::to_string)
                    .unwrap_or_default(),
                text(node, "reason")
            );
            (short, full)
        }
        "receipt" => {
            let verified = node.get("verified").and_then(Value::as_bool) == Some(true);
            let mark = if verified {
                "✓ verified"
            } else {
                "✗ unverified"
            };
            (
                format!("receipt {mark}"),
                format!("receipt {reference}: {mark}"),
            )
        }
        "incident" => (
            format!("incident {}", text(node, "kind")),
            format!("{}: {}", reference, text(node, "summary")),
        ),
        "response_action" => (
            format!("response {}", text(node, "action")),
            format!("{} by {}", text(node, "action"), text(node, "actor")),
        ),
        "mcp_server" => (
            format!("MCP server {}", text(node, "name")),
            format!("MCP server {} at {}", text(node, "name"), text(node, "url")),
        ),
        "tool_definition" => (
            format!("definition {} {}", text(node, "tool"), text(node, "status")),
            format!(
                "definition of {} ({}): {}",
                text(node, "tool"),
                text(node, "status"),
                text(node, "definition_hash")
            ),
        ),
        kind => (format!("{kind} {reference}"), format!("{kind} {reference}")),
    }
}

fn shorten(label: &str) -> String {
    if label.chars().count() <= LABEL_CHARS {
        label.to_owned()
    } else {
        let cut: String = label.chars().take(LABEL_CHARS - 1).collect();
        format!("{cut}…")
    }
}

/// The graph as an inline SVG figure.
pub fn render(graph: &Graph) -> Markup {
    let mut rows: HashMap<i64, i64> = HashMap::new();
    let mut positions: HashMap<&str, (i64, i64)> = HashMap::new();
    for node in &graph.nodes {
        let column = column(text(node, "type"));
        let row = rows.entry(column).or_default();
        positions.insert(
            text(node, "id"),
            (MARGIN + column * COLUMN_WIDTH, MARGIN + *row * ROW_HEIGHT),
        );
        *row += 1;
    }
    let height = rows.values().max().copied().unwrap_or(0) * ROW_HEIGHT + 2 * MARGIN;
    let width = 5 * COLUMN_WIDTH + MARGIN;
    html! {
        figure.graph {
            svg role="img" aria-label="Evidence graph" viewBox=(format!("0 0 {width} {height}"))
                width=(width) height=(height) xmlns="http://www.w3.org/2000/svg" {
                @for edge in &graph.edges {
                    @if let (Some((x1, y1)), Some((x2, y2))) = (positions.get(edge.source.as_str()), positions.get(edge.target.as_str())) {
                        line.edge data-type=(edge.kind)
                            x1=(x1 + NODE_WIDTH / 2) y1=(y1 + NODE_HEIGHT / 2)
                            x2=(x2 + NODE_WIDTH / 2) y2=(y2 + NODE_HEIGHT / 2) {}
                    }
                }
                @for node in &graph.nodes {
                    @let kind = text(node, "type");
                    @let (x, y) = positions[text(node, "id")];
                    @let (short, full) = label(node);
                    @let verdict = text(node, "decision");
                    @let unverified = kind == "receipt" && node.get("verified").and_then(Value::as_bool) != Some(true);
                    g class=(format!("node node-{kind}{}{}", if verdict.is_empty() { String::new() } else { format!(" verdict-{verdict}") }, if unverified { " unverified" } else { "" }))
                        data-type=(kind) data-id=(text(node, "ref")) {
                        title { (full) }
                        rect x=(x) y=(y) width=(NODE_WIDTH) height=(NODE_HEIGHT) rx="4" {}
                        text x=(x + 8) y=(y + 19) { (shorten(&short)) }
                    }
                }
            }
            @if graph.truncated {
                figcaption { "Only the most recent decisions are drawn; the timeline and "
                    code { "GET /v1/graph/incident/{id}" } " page through the rest." }
            }
        }
    }
}
