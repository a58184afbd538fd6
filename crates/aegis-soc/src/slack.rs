//! Building blocks of Slack messages that show agent-controlled text literally.
//!
//! Tool and action names, summaries and reasons come from agents: in Slack's mrkdwn they
//! could bold, strike or link text, or mention a channel (`<!channel>`). So such text goes
//! only into `plain_text` objects ([`literal`]: no formatting, `emoji: false`) and into the
//! message's top-level `text` with `"mrkdwn": false`; mrkdwn ([`markup`], `verbatim: true` so
//! nothing is auto-linked) carries only the gateway's own words and ids ([`code`]). Slack
//! treats `&`, `<` and `>` as control characters in every text, so all text is escaped
//! ([`escape_within`]), and cut, when too long, between entities, never inside one.

use serde_json::{Value, json};

/// Longest text we put in one text object, in bytes (Slack allows 3000 characters).
pub const MAX_TEXT: usize = 2900;
/// Appended to text cut at [`MAX_TEXT`].
const CUT: &str = "…";

fn entity(c: char) -> Option<&'static str> {
    match c {
        '&' => Some("&amp;"),
        '<' => Some("&lt;"),
        '>' => Some("&gt;"),
        _ => None,
    }
}

/// `text` with Slack's control characters escaped, at most `max` bytes long: when it does
/// not fit, it is cut after the last whole character or entity that leaves room for "…".
pub fn escape_within(text: &str, max: usize) -> String {
    let escaped_len: usize = text
        .chars()
        .map(|c| entity(c).map_or(c.len_utf8(), str::len))
        .sum();
    let room = if escaped_len <= max {
        max
    } else {
        max.saturating_sub(CUT.len())
    };
    let mut out = String::with_capacity(escaped_len.min(max));
    for c in text.chars() {
        let mut buffer = [0u8; 4];
        let piece = entity(c).unwrap_or_else(|| c.encode_utf8(&mut buffer));
        if out.len() + piece.len() > room {
            if out.len() + CUT.len() <= max {
                out.push_str(CUT);
            }
            return out;
        }
        out.push_str(piece);
    }
    out
}

/// A `plain_text` object: Slack shows it as written (no mrkdwn, no emoji codes).
pub fn literal(text: &str) -> Value {
    json!({"type": "plain_text", "text": escape_within(text, MAX_TEXT), "emoji": false})
}

/// A `mrkdwn` object for the gateway's own markup (no agent text): `verbatim`, so Slack
/// links nothing it was not asked to.
pub fn markup(text: &str) -> Value {
    json!({"type": "mrkdwn", "text": text, "verbatim": true})
}

/// An id or name inside [`markup`]: a code span, escaped, with backticks and line breaks
/// (which would end it) replaced.
pub fn code(text: &str) -> String {
    let neutral: String = text
        .chars()
        .map(|c| match c {
            '`' => 'ˋ',
            '\n' | '\r' => ' ',
            c => c,
        })
        .collect();
    format!("`{}`", escape_within(&neutral, 200))
}

/// An incoming-webhook message: the `fallback` (shown in notifications; agent text allowed,
/// rendered without mrkdwn) and the blocks.
pub fn message(fallback: &str, blocks: Vec<Value>) -> Value {
    json!({"text": escape_within(fallback, MAX_TEXT), "mrkdwn": false, "blocks": blocks})
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Reverses [`escape_within`] (without the cut mark); `None` if `text` holds a control
    /// character that is not part of an entity.
    pub(crate) fn unescape(text: &str) -> Option<String> {
        let mut out = String::new();
        let mut rest = text;
        while let Some(at) = rest.find(['&', '<', '>']) {
            out.push_str(&rest[..at]);
            rest = &rest[at..];
            let (c, len) = if rest.starts_with("&amp;") {
                ('&', 5)
            } else if rest.starts_with("&lt;") {
                ('<', 4)
            } else if rest.starts_with("&gt;") {
                ('>', 4)
            } else {
                return None;
            };
            out.push(c);
            rest = &rest[len..];
        }
        out.push_str(rest);
        Some(out)
    }

    #[test]
    fn control_characters_are_escaped_and_cuts_fall_between_entities() {
        assert_eq!(
            escape_within("<!channel> & co", 100),
            "&lt;!channel&gt; &amp; co"
        );
        // "a&" escapes to 6 bytes; with 5 allowed the entity is dropped whole.
        assert_eq!(escape_within("a&", 5), "a…");
        assert_eq!(escape_within("a&", 6), "a&amp;");
        assert_eq!(escape_within("ééé", 5), "é…"); // 2 bytes each, 3 for "…"
        assert_eq!(escape_within("abcd", 2), "");
        assert_eq!(code("x`y\nz"), "`xˋy z`");
    }

    proptest! {
        #[test]
        fn escaped_text_has_no_bare_control_character_and_is_a_prefix(text in any::<String>(), max in 0usize..64) {
            let out = escape_within(&text, max);
            prop_assert!(out.len() <= max, "{} > {max}", out.len());
            let whole = escape_within(&text, usize::MAX);
            let kept = if out == whole { &out[..] } else { out.strip_suffix(CUT).unwrap_or(&out) };
            let decoded = unescape(kept);
            prop_assert!(decoded.is_some(), "a bare control character or a split entity: {out:?}");
            prop_assert!(text.starts_with(&decoded.unwrap()));
        }

        #[test]
        fn code_spans_cannot_be_closed_or_broken(text in any::<String>()) {
            let span = code(&text);
            let inner = &span[1..span.len() - 1];
            prop_assert!(!inner.contains(['`', '\n', '\r']));
            prop_assert!(unescape(inner.strip_suffix(CUT).unwrap_or(inner)).is_some());
        }
    }
}
