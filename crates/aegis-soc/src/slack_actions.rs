//! Slack's interactive side of approvals: the Approve/Reject buttons a `require_approval`
//! message carries, and how a click that Slack posts back is authenticated and read.
//!
//! Slack signs each request: `X-Slack-Signature: v0=<hex HMAC-SHA256(signing secret,
//! "v0:<X-Slack-Request-Timestamp>:<raw body>")>`. A request is accepted only when that
//! signature matches (compared in constant time) and its timestamp is within five minutes of
//! the gateway's clock, so a captured request cannot be replayed later. Pure: the caller
//! supplies the time.

use hmac::{Hmac, Mac};
use serde::Deserialize;
use serde_json::{Value, json};
use sha2::Sha256;

/// How far a request's timestamp may be from now, in seconds.
pub const MAX_SKEW_SECS: i64 = 5 * 60;

/// `action_id` of the two buttons.
pub const APPROVE_ACTION: &str = "aegis_approve";
pub const REJECT_ACTION: &str = "aegis_reject";

/// Why a request is not Slack's (the callback's 401).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Unsigned {
    #[error("the request timestamp is missing or not a number")]
    NoTimestamp,
    #[error("the request timestamp is more than five minutes from now (replayed?)")]
    Stale,
    #[error("the Slack signature is missing or wrong")]
    BadSignature,
}

/// Checks Slack's `v0` signature of `body` and its timestamp against `now_secs`.
pub fn verify(
    secret: &str,
    timestamp: Option<&str>,
    signature: Option<&str>,
    body: &[u8],
    now_secs: i64,
) -> Result<(), Unsigned> {
    let timestamp = timestamp.ok_or(Unsigned::NoTimestamp)?;
    let at: i64 = timestamp.parse().map_err(|_| Unsigned::NoTimestamp)?;
    if (now_secs - at).abs() > MAX_SKEW_SECS {
        return Err(Unsigned::Stale);
    }
    let given = signature
        .and_then(|s| s.strip_prefix("v0="))
        .and_then(|hex| hex::decode(hex).ok())
        .ok_or(Unsigned::BadSignature)?;
    let mut mac =
        Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes keys of any length");
    mac.update(b"v0:");
    mac.update(timestamp.as_bytes());
    mac.update(b":");
    mac.update(body);
    // `verify_slice` compares in constant time.
    mac.verify_slice(&given).map_err(|_| Unsigned::BadSignature)
}

/// The signature Slack would send for `body` at `timestamp` (for tests and tools that play
/// Slack).
pub fn sign(secret: &str, timestamp: &str, body: &[u8]) -> String {
    let mut mac =
        Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes keys of any length");
    mac.update(format!("v0:{timestamp}:").as_bytes());
    mac.update(body);
    format!("v0={}", hex::encode(mac.finalize().into_bytes()))
}

/// A button click: who clicked which button for which approval of which tenant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Click {
    pub slack_user_id: String,
    pub approve: bool,
    pub tenant_id: String,
    pub approval_id: String,
}

#[derive(Deserialize)]
struct Payload {
    #[serde(rename = "type")]
    kind: String,
    user: User,
    actions: Vec<Action>,
}

#[derive(Deserialize)]
struct User {
    id: String,
}

#[derive(Deserialize)]
struct Action {
    action_id: String,
    value: String,
}

/// Reads the `payload` field's JSON of Slack's form-encoded interactive request; `None`
/// when it is not one of our buttons.
pub fn read_click(payload: &str) -> Result<Option<Click>, serde_json::Error> {
    let payload: Payload = serde_json::from_str(payload)?;
    if payload.kind != "block_actions" {
        return Ok(None);
    }
    let Some(action) = payload.actions.into_iter().next() else {
        return Ok(None);
    };
    let approve = match action.action_id.as_str() {
        APPROVE_ACTION => true,
        REJECT_ACTION => false,
        _ => return Ok(None),
    };
    let Some((tenant_id, approval_id)) = action.value.split_once('/') else {
        return Ok(None);
    };
    Ok(Some(Click {
        slack_user_id: payload.user.id,
        approve,
        tenant_id: tenant_id.to_owned(),
        approval_id: approval_id.to_owned(),
    }))
}

/// The Approve and Reject buttons of one approval (`value` names the tenant and the
/// approval; Slack sends it back on a click).
pub fn buttons(tenant_id: &str, approval_id: &str) -> Value {
    let value = format!("{tenant_id}/{approval_id}");
    json!({
        "type": "actions",
        "block_id": format!("aegis_approval_{approval_id}"),
        "elements": [
            {"type": "button", "action_id": APPROVE_ACTION, "style": "primary", "value": value,
             "text": {"type": "plain_text", "text": "Approve", "emoji": false}},
            {"type": "button", "action_id": REJECT_ACTION, "style": "danger", "value": value,
             "text": {"type": "plain_text", "text": "Reject", "emoji": false}},
        ]
    })
}

/// The message that replaces the one clicked: what happened, in the gateway's words only.
pub fn outcome_message(text: &str) -> Value {
    json!({
        "replace_original": true,
        "text": crate::slack::escape_within(text, crate::slack::MAX_TEXT),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signature_verifies_only_for_its_body_secret_and_time() {
        let body = b"payload=%7B%7D";
        let signature = sign("s3cret", "1000", body);
        assert_eq!(
            verify("s3cret", Some("1000"), Some(&signature), body, 1000),
            Ok(())
        );
        assert_eq!(
            verify("s3cret", Some("1000"), Some(&signature), body, 1300),
            Ok(())
        );
        assert_eq!(
            verify("s3cret", Some("1000"), Some(&signature), body, 1301),
            Err(Unsigned::Stale)
        );
        assert_eq!(
            verify("other", Some("1000"), Some(&signature), body, 1000),
            Err(Unsigned::BadSignature)
        );
        assert_eq!(
            verify("s3cret", Some("1000"), Some(&signature), b"payload=x", 1000),
            Err(Unsigned::BadSignature)
        );
        assert_eq!(
            verify("s3cret", None, Some(&signature), body, 1000),
            Err(Unsigned::NoTimestamp)
        );
        assert_eq!(
            verify("s3cret", Some("1000"), None, body, 1000),
            Err(Unsigned::BadSignature)
        );
    }

    #[test]
    fn clicks_name_the_user_the_button_and_the_approval() {
        let payload = json!({"type": "block_actions", "user": {"id": "U1"},
            "actions": [{"action_id": APPROVE_ACTION, "value": "acme/apr_1"}]});
        assert_eq!(
            read_click(&payload.to_string()).unwrap(),
            Some(Click {
                slack_user_id: "U1".into(),
                approve: true,
                tenant_id: "acme".into(),
                approval_id: "apr_1".into()
            })
        );
        let other = json!({"type": "block_actions", "user": {"id": "U1"},
            "actions": [{"action_id": "something_else", "value": "acme/apr_1"}]});
        assert_eq!(read_click(&other.to_string()).unwrap(), None);
        assert!(read_click("not json").is_err());
    }
}
