//! Answers as text for a terminal. Much of what is shown was written by agents (names,
//! reasons, resources, parameters), so every string is made inert first: control characters
//! (escape sequences, carriage returns, line breaks) and invisible bidirectional or
//! formatting characters are printed escaped, as `\u{1b}`, never passed to the terminal.

use super::View;
use serde_json::Value;

/// Widest cell of a table; longer values end in `…` (`--json` has them whole).
const MAX_CELL_CHARS: usize = 72;

/// One column of a table or one line of a record: a header and where its value is in each
/// JSON object (a JSON pointer). For an array of objects, `item` names the field shown of
/// each element.
pub struct Column {
    header: &'static str,
    pointer: &'static str,
    item: Option<&'static str>,
}

impl Column {
    pub const fn new(header: &'static str, pointer: &'static str) -> Column {
        Column {
            header,
            pointer,
            item: None,
        }
    }

    /// A column listing one field of each element of an array of objects.
    pub const fn each(header: &'static str, pointer: &'static str, item: &'static str) -> Column {
        Column {
            header,
            pointer,
            item: Some(item),
        }
    }

    fn cell(&self, object: &Value) -> String {
        match (object.pointer(self.pointer), self.item) {
            (Some(Value::Array(items)), Some(item)) => {
                let shown: Vec<String> = items.iter().map(|i| scalar(&i[item])).collect();
                none_if_empty(shown.join(", "))
            }
            (Some(value), _) => scalar(value),
            (None, _) => "-".to_owned(),
        }
    }
}

/// The text of an answer for `view`.
pub fn render(view: &View, answer: &Value) -> String {
    match view {
        View::Rows(columns) => rows(columns, array_at(answer, "")),
        View::RowsAt(pointer, columns) => rows(columns, array_at(answer, pointer)),
        View::Record(sections) => record(sections, answer),
        View::Fields => fields(answer),
        View::Narrative => narrative(answer),
    }
}

/// `text` with every character a terminal would act on, or would show as nothing, escaped.
pub fn inert(text: &str) -> String {
    text.chars()
        .map(|c| match is_unsafe(c) {
            true => c.escape_default().to_string(),
            false => c.to_string(),
        })
        .collect()
}

/// A JSON text with the characters JSON leaves raw but a terminal acts on (C1 controls such
/// as U+009B CSI, direction overrides) written as `\u` escapes: the same JSON value. Outside
/// strings valid JSON has only ASCII, and its ASCII controls are already escaped in strings.
pub fn inert_json(json: &str) -> String {
    json.chars()
        .map(|c| match is_unsafe(c) && !c.is_ascii() {
            // Every such character is in the Basic Multilingual Plane: one `\uXXXX`.
            true => format!("\\u{:04x}", u32::from(c)),
            false => c.to_string(),
        })
        .collect()
}

fn is_unsafe(c: char) -> bool {
    c.is_control()
        || matches!(c,
            // zero-width and direction marks, line and paragraph separators, bidirectional
            // embeddings, overrides and isolates, invisible operators, byte order mark
            '\u{200B}'..='\u{200F}' | '\u{2028}'..='\u{202E}' | '\u{2060}'..='\u{206F}' | '\u{FEFF}')
}

/// A JSON value as one inert line: strings without quotes, `-` for null, arrays joined by
/// commas, objects as compact JSON.
fn scalar(value: &Value) -> String {
    match value {
        Value::Null => "-".to_owned(),
        Value::String(text) => inert(text),
        Value::Array(items) => {
            none_if_empty(items.iter().map(scalar).collect::<Vec<_>>().join(", "))
        }
        other => inert(&other.to_string()),
    }
}

fn none_if_empty(text: String) -> String {
    match text.is_empty() {
        true => "-".to_owned(),
        false => text,
    }
}

fn array_at<'a>(answer: &'a Value, pointer: &str) -> &'a [Value] {
    match answer.pointer(pointer) {
        Some(Value::Array(items)) => items,
        _ => &[],
    }
}

fn rows(columns: &[Column], items: &[Value]) -> String {
    let cells: Vec<Vec<String>> = items
        .iter()
        .map(|item| columns.iter().map(|c| shortened(c.cell(item))).collect())
        .collect();
    let widths: Vec<usize> = columns
        .iter()
        .enumerate()
        .map(|(i, column)| {
            cells
                .iter()
                .map(|row| row[i].chars().count())
                .chain([column.header.len()])
                .max()
                .unwrap_or_default()
        })
        .collect();
    let headers = columns.iter().map(|c| c.header.to_owned()).collect();
    let mut text = String::new();
    for row in std::iter::once(headers).chain(cells) {
        let line: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(cell, width)| format!("{cell:<width$}"))
            .collect();
        text.push_str(line.join("  ").trim_end());
        text.push('\n');
    }
    if items.is_empty() {
        text.push_str("(none)\n");
    }
    text
}

fn shortened(cell: String) -> String {
    if cell.chars().count() <= MAX_CELL_CHARS {
        return cell;
    }
    let kept: String = cell.chars().take(MAX_CELL_CHARS - 1).collect();
    kept + "…"
}

fn record(sections: &[&[Column]], object: &Value) -> String {
    let columns = || sections.iter().flat_map(|section| section.iter());
    let width = columns().map(|c| c.header.len()).max().unwrap_or_default();
    columns()
        .map(|column| format!("{:<width$}  {}\n", column.header, column.cell(object)))
        .collect()
}

fn fields(object: &Value) -> String {
    let Some(object) = object.as_object() else {
        return scalar(object) + "\n";
    };
    let width = object
        .keys()
        .map(|key| key.chars().count())
        .max()
        .unwrap_or_default();
    object
        .iter()
        .map(|(key, value)| format!("{:<width$}  {}\n", inert(key), scalar(value)))
        .collect()
}

/// The narrative's lines kept as lines, each made inert.
fn narrative(answer: &Value) -> String {
    let text = answer["narrative"].as_str().unwrap_or_default();
    let lines: Vec<String> = text.lines().map(inert).collect();
    format!(
        "{}\n\n(generated by {} at {})\n",
        lines.join("\n"),
        scalar(&answer["generated_by"]),
        scalar(&answer["generated_at"])
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const COLUMNS: &[Column] = &[
        Column::new("ID", "/id"),
        Column::new("REASON", "/reason"),
        Column::each("BY", "/votes", "name"),
    ];

    #[test]
    fn agent_strings_cannot_reach_the_terminal() {
        let hostile = "ok\u{1b}[2J\u{1b}]0;pwned\u{7}\r\nfake row\u{9b}31m\u{202e}txt.exe";
        let shown = inert(hostile);
        assert!(
            shown.chars().all(|c| !is_unsafe(c)),
            "nothing a terminal acts on: {shown:?}"
        );
        assert_eq!(
            shown,
            "ok\\u{1b}[2J\\u{1b}]0;pwned\\u{7}\\r\\nfake row\\u{9b}31m\\u{202e}txt.exe"
        );
        let table = render(
            &View::Rows(COLUMNS),
            &json!([{"id": "a1", "reason": hostile, "votes": [{"name": hostile}]}]),
        );
        assert_eq!(table.lines().count(), 2, "one header, one row: {table}");
        assert!(!table.contains('\u{1b}'));
        let record = render(&View::Record(&[COLUMNS]), &json!({"id": hostile}));
        assert_eq!(record.lines().count(), 3, "{record}");
        assert!(!record.contains('\u{1b}'));
    }

    #[test]
    fn json_keeps_its_value_and_loses_what_a_terminal_acts_on() {
        let value = json!({"name": "a\u{9b}31m\u{202e}b\u{1b}[0m\n", "n": 1});
        let text = serde_json::to_string(&value).unwrap();
        assert!(
            text.contains('\u{9b}'),
            "JSON leaves C1 controls raw: {text}"
        );
        let shown = inert_json(&text);
        assert!(shown.chars().all(|c| !is_unsafe(c)), "{shown}");
        assert!(
            shown.contains("a\\u009b31m\\u202eb\\u001b[0m\\n"),
            "{shown}"
        );
        assert_eq!(serde_json::from_str::<Value>(&shown).unwrap(), value);
    }

    #[test]
    fn narratives_keep_their_lines_and_lose_their_escapes() {
        let shown = render(
            &View::Narrative,
            &json!({"narrative": "# Incident\n\n`agent \u{1b}[31m`", "generated_by": "deterministic",
                    "generated_at": "2026-01-01T00:00:00Z"}),
        );
        assert!(
            shown.starts_with("# Incident\n\n`agent \\u{1b}[31m`\n"),
            "{shown}"
        );
        assert!(shown.contains("(generated by deterministic at 2026-01-01T00:00:00Z)"));
    }

    #[test]
    fn tables_align_columns_and_show_what_is_missing() {
        let table = render(
            &View::Rows(COLUMNS),
            &json!([
                {"id": "a1", "reason": "short", "votes": []},
                {"id": "agent-2", "reason": null, "votes": [{"name": "ann"}, {"name": "bob"}]},
                {"id": "a3", "reason": "x".repeat(100)},
                {"id": "a4", "reason": "y".repeat(72)},
            ]),
        );
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines[0], format!("ID       REASON{}BY", " ".repeat(68)));
        assert_eq!(lines[1], format!("a1       short{}-", " ".repeat(69)));
        assert_eq!(lines[2], format!("agent-2  -{}ann, bob", " ".repeat(73)));
        assert_eq!(lines[3], format!("a3       {}…  -", "x".repeat(71)));
        assert_eq!(lines[4], format!("a4       {}  -", "y".repeat(72)));
        assert_eq!(
            render(&View::Rows(COLUMNS), &json!([])),
            "ID  REASON  BY\n(none)\n"
        );
    }
}
