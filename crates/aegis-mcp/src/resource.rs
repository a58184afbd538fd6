//! The `resource` of a call's decision: the string value of the argument an admin named for
//! the tool (`PUT /v1/mcp/servers/{id}/tools/{tool}`). Once named, it is required: a call
//! that leaves it out or passes something else than a string is refused rather than decided
//! as if it named no resource, since a policy on the resource would then not see it.

use aegis_store::ToolPin;
use serde_json::{Map, Value};

/// The call's resource, `Ok(None)` when the tool has no resource argument, or why the call
/// must be denied.
pub fn of_call(
    pin: Option<&ToolPin>,
    arguments: Option<&Map<String, Value>>,
) -> Result<Option<String>, String> {
    let Some(name) = pin.and_then(|pin| pin.resource_argument.as_deref()) else {
        return Ok(None);
    };
    match arguments.and_then(|arguments| arguments.get(name)) {
        Some(Value::String(resource)) => Ok(Some(resource.clone())),
        Some(_) => Err(format!(
            "argument {name:?} names this tool's resource and must be a string"
        )),
        None => Err(format!(
            "argument {name:?} names this tool's resource and is missing"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aegis_store::PinStatus;

    fn pin(resource_argument: Option<&str>) -> ToolPin {
        ToolPin {
            server_id: "mcp_1".into(),
            tool: "read_file".into(),
            definition_hash: "aa".into(),
            read_only: true,
            status: PinStatus::Pinned,
            changed_hash: None,
            accepted_by: None,
            accepted_at_ms: None,
            pinned_at_ms: 0,
            resource_argument: resource_argument.map(Into::into),
        }
    }

    fn arguments(value: Value) -> Map<String, Value> {
        value.as_object().unwrap().clone()
    }

    #[test]
    fn the_named_argument_is_the_resource_and_is_required_as_a_string() {
        let path = pin(Some("path"));
        let args = arguments(serde_json::json!({"path": "/etc/passwd", "n": 1}));
        assert_eq!(
            of_call(Some(&path), Some(&args)),
            Ok(Some("/etc/passwd".into()))
        );
        let not_a_string = arguments(serde_json::json!({"path": ["/etc/passwd"]}));
        assert!(
            of_call(Some(&path), Some(&not_a_string))
                .unwrap_err()
                .contains("must be a string")
        );
        let missing = arguments(serde_json::json!({"other": "x"}));
        assert!(
            of_call(Some(&path), Some(&missing))
                .unwrap_err()
                .contains("is missing")
        );
        assert!(
            of_call(Some(&path), None)
                .unwrap_err()
                .contains("is missing")
        );
    }

    #[test]
    fn without_a_named_argument_a_call_has_no_resource() {
        let args = arguments(serde_json::json!({"path": "/etc/passwd"}));
        assert_eq!(of_call(Some(&pin(None)), Some(&args)), Ok(None));
        assert_eq!(of_call(None, Some(&args)), Ok(None));
    }
}
