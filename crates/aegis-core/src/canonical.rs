//! Canonical JSON (RFC 8785, JCS) and the canonical action hash (docs/receipts.md, "The canonical action hash").
//!
//! The action hash is what binds an approval to the exact call that was approved, so an SDK
//! must be able to compute it before calling: SHA-256 over the JCS form of
//! `{action, mutates_state, parameters, resource, tool}` exactly as the agent sent them.

use serde::Serialize;
use serde_json::Value;
use sha2::{Digest, Sha256};

/// RFC 8785 canonical form of a JSON value.
pub fn canonical_json<T: Serialize>(value: &T) -> Result<String, CanonicalError> {
    serde_json_canonicalizer::to_string(value).map_err(|e| CanonicalError(e.to_string()))
}

/// The value could not be put in canonical form (e.g. a non-finite number).
#[derive(Debug, Clone, thiserror::Error)]
#[error("cannot canonicalise: {0}")]
pub struct CanonicalError(String);

impl From<serde_json::Error> for CanonicalError {
    fn from(error: serde_json::Error) -> Self {
        CanonicalError(error.to_string())
    }
}

/// Lower-case hex SHA-256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// A tool call as the agent proposed it; the input of the action hash.
#[derive(Debug, Clone, Copy)]
pub struct ActionRef<'a> {
    pub tool: &'a str,
    pub action: &'a str,
    /// Absent means `null`.
    pub resource: Option<&'a str>,
    /// Absent means `false`.
    pub mutates_state: bool,
    /// Absent means `{}`.
    pub parameters: Option<&'a Value>,
}

#[derive(Serialize)]
struct CanonicalAction<'a> {
    action: &'a str,
    mutates_state: bool,
    parameters: &'a Value,
    resource: Option<&'a str>,
    tool: &'a str,
}

static EMPTY_OBJECT: std::sync::LazyLock<Value> =
    std::sync::LazyLock::new(|| Value::Object(Default::default()));

impl ActionRef<'_> {
    /// The canonical JSON text that is hashed.
    pub fn canonical(&self) -> Result<String, CanonicalError> {
        canonical_json(&CanonicalAction {
            action: self.action,
            mutates_state: self.mutates_state,
            parameters: self.parameters.unwrap_or(&EMPTY_OBJECT),
            resource: self.resource,
            tool: self.tool,
        })
    }

    /// Hex SHA-256 of [`ActionRef::canonical`].
    pub fn hash(&self) -> Result<String, CanonicalError> {
        Ok(sha256_hex(self.canonical()?.as_bytes()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    /// Runs a vector file: every `tool_call` (fields may be absent) canonicalises to
    /// `canonical`, and hashes to `action_hash` where the file gives one.
    fn check_vector_file(path: &str) -> usize {
        let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path}: {e}"));
        let doc: Value = serde_json::from_str(&text).unwrap();
        let vectors = doc["vectors"].as_array().unwrap();
        for v in vectors {
            let call = &v["tool_call"];
            let action = ActionRef {
                tool: call["tool"].as_str().unwrap(),
                action: call["action"].as_str().unwrap(),
                resource: call["resource"].as_str(),
                mutates_state: call["mutates_state"].as_bool().unwrap_or(false),
                parameters: call.get("parameters"),
            };
            let expected = v["canonical"].as_str().unwrap();
            assert_eq!(
                action.canonical().unwrap(),
                expected,
                "vector {}",
                v["name"]
            );
            let hash = action.hash().unwrap();
            assert_eq!(hash, sha256_hex(expected.as_bytes()));
            if let Some(pinned) = v.get("action_hash") {
                assert_eq!(Some(hash.as_str()), pinned.as_str(), "vector {}", v["name"]);
            }
        }
        vectors.len()
    }

    #[test]
    fn reproduces_reference_action_vectors() {
        let reference = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/vectors/reference_canonical_action_vectors.json"
        );
        assert_eq!(check_vector_file(reference), 4);
    }

    #[test]
    fn reproduces_our_own_action_vectors() {
        let ours = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/vectors/canonical_action_vectors.json"
        );
        assert_eq!(check_vector_file(ours), 7);
    }

    fn arb_json() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            // I-JSON range: RFC 8785 serialises every number as an IEEE 754 double.
            (-(1i64 << 53)..(1i64 << 53)).prop_map(|n| json!(n)),
            (-1e15f64..1e15f64).prop_map(|f| json!(f)),
            ".*".prop_map(Value::String),
        ];
        leaf.prop_recursive(4, 32, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
                prop::collection::btree_map(".*", inner, 0..6)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    /// JSON equality where numbers compare by value (JCS writes 0.0 as 0).
    fn same_value(a: &Value, b: &Value) -> bool {
        match (a, b) {
            (Value::Number(x), Value::Number(y)) => x.as_f64() == y.as_f64(),
            (Value::Array(x), Value::Array(y)) => {
                x.len() == y.len() && x.iter().zip(y).all(|(x, y)| same_value(x, y))
            }
            (Value::Object(x), Value::Object(y)) => {
                x.len() == y.len()
                    && x.iter()
                        .all(|(k, v)| y.get(k).is_some_and(|w| same_value(v, w)))
            }
            _ => a == b,
        }
    }

    proptest! {
        #[test]
        fn canonical_form_is_a_fixed_point(value in arb_json()) {
            let once = canonical_json(&value).unwrap();
            let reparsed: Value = serde_json::from_str(&once).unwrap();
            prop_assert_eq!(canonical_json(&reparsed).unwrap(), once);
        }

        #[test]
        fn canonical_form_preserves_the_value(value in arb_json()) {
            let reparsed: Value = serde_json::from_str(&canonical_json(&value).unwrap()).unwrap();
            prop_assert!(same_value(&reparsed, &value), "{reparsed} != {value}");
        }
    }
}
