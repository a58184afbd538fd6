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
pub struct CanonicalError(pub(crate) String);

impl From<serde_json::Error> for CanonicalError {
    fn from(error: serde_json::Error) -> Self {
        CanonicalError(error.to_string())
    }
}

/// Lower-case hex SHA-256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    // The digest's own `LowerHex` prints from a table in one write; `hex::encode` collects
    // the digits one `char` at a time, several times the cost for the hashes of every call.
    format!("{:x}", Sha256::digest(bytes))
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

/// The hashed object, its keys in JCS order; `P` is how its parameters are written.
#[derive(Serialize)]
struct CanonicalAction<'a, P> {
    action: &'a str,
    mutates_state: bool,
    parameters: P,
    resource: Option<&'a str>,
    tool: &'a str,
}

static EMPTY_OBJECT: std::sync::LazyLock<Value> =
    std::sync::LazyLock::new(|| Value::Object(Default::default()));

impl ActionRef<'_> {
    /// The canonical JSON text that is hashed.
    ///
    /// serde_json writes it when every number in the parameters is an integer JCS prints
    /// in plain digits ([`IntegralJcs`]), as agents' parameters nearly always are; any
    /// other number takes the generic canonicaliser, whose JSON-value round trip cost about
    /// 3 % of the gateway's CPU under an allow load. The property test
    /// `canonical_action_is_jcs` holds the two to the same text.
    pub fn canonical(&self) -> Result<String, CanonicalError> {
        let parameters = self.parameters.unwrap_or(&EMPTY_OBJECT);
        match serde_json::to_string(&self.with_parameters(IntegralJcs(parameters))) {
            Ok(text) => Ok(text),
            Err(_) => self.generic_canonical(),
        }
    }

    /// [`ActionRef::canonical`] by the generic canonicaliser alone.
    fn generic_canonical(&self) -> Result<String, CanonicalError> {
        canonical_json(&self.with_parameters(self.parameters.unwrap_or(&EMPTY_OBJECT)))
    }

    fn with_parameters<P: Serialize>(&self, parameters: P) -> CanonicalAction<'_, P> {
        CanonicalAction {
            action: self.action,
            mutates_state: self.mutates_state,
            parameters,
            resource: self.resource,
            tool: self.tool,
        }
    }

    /// Hex SHA-256 of [`ActionRef::canonical`].
    pub fn hash(&self) -> Result<String, CanonicalError> {
        Ok(sha256_hex(self.canonical()?.as_bytes()))
    }
}

/// The largest integer JCS prints as plain digits (it prints numbers as IEEE doubles).
pub(crate) const MAX_EXACT_INTEGER: u64 = 1 << 53;

/// `JCS(value)`, printed by serde_json from `in_key_order`, the same fields declared in JCS
/// key order, instead of through a generic JSON value that is built, sorted and printed:
/// serde_json writes strings and integers up to 2^53 exactly as JCS does (the same string
/// escapes, integers in plain digits). When `largest_integer`, the largest of the fields'
/// integers, is past that, the generic canonicaliser prints `value`.
pub(crate) fn canonical_in_key_order<T: Serialize, K: Serialize>(
    value: &T,
    in_key_order: K,
    largest_integer: u64,
) -> Result<String, CanonicalError> {
    if largest_integer > MAX_EXACT_INTEGER {
        return canonical_json(value);
    }
    Ok(serde_json::to_string(&in_key_order)?)
}

/// A JSON value that serde_json writes in JCS form: object keys sorted by UTF-16 code units
/// (whatever order the map keeps them in), strings escaped as JCS escapes them (serde_json
/// escapes exactly the same characters the same way), and integers up to
/// [`MAX_EXACT_INTEGER`] in plain digits, as both print them. Any other number is an error,
/// for the generic canonicaliser: JCS prints it as ECMAScript does, which serde_json does not.
struct IntegralJcs<'a>(&'a Value);

impl Serialize for IntegralJcs<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self.0 {
            Value::Number(number) if is_exact_integer(number) => number.serialize(serializer),
            Value::Number(_) => Err(serde::ser::Error::custom(
                "a number JCS does not print as serde_json does",
            )),
            Value::Array(items) => serializer.collect_seq(items.iter().map(IntegralJcs)),
            Value::Object(map) => {
                let mut entries: Vec<(&String, &Value)> = map.iter().collect();
                entries.sort_unstable_by(|(a, _), (b, _)| utf16_order(a, b));
                serializer.collect_map(entries.into_iter().map(|(k, v)| (k, IntegralJcs(v))))
            }
            scalar => scalar.serialize(serializer),
        }
    }
}

fn is_exact_integer(number: &serde_json::Number) -> bool {
    match (number.as_u64(), number.as_i64()) {
        (Some(n), _) => n <= MAX_EXACT_INTEGER,
        (None, Some(n)) => n.unsigned_abs() <= MAX_EXACT_INTEGER,
        (None, None) => false,
    }
}

/// JCS's order of object keys: by UTF-16 code units, which differs from byte (code point)
/// order only between characters above U+FFFF and those from U+E000 to U+FFFF.
fn utf16_order(a: &str, b: &str) -> std::cmp::Ordering {
    if a.is_ascii() && b.is_ascii() {
        a.cmp(b)
    } else {
        a.encode_utf16().cmp(b.encode_utf16())
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

    #[test]
    fn parameters_take_jcs_key_order_and_numbers_in_either_path() {
        let canonical = |parameters: Value| {
            let action = ActionRef {
                tool: "t",
                action: "a",
                resource: None,
                mutates_state: false,
                parameters: Some(&parameters),
            };
            let text = action.canonical().unwrap();
            assert_eq!(text, action.generic_canonical().unwrap());
            text
        };
        // U+10000 is written as the surrogates D800 DC00, before U+E000 in UTF-16 order
        // (after it in byte order), whichever order the map holds them in.
        let keys = canonical(json!({"\u{e000}": 1, "\u{10000}": 2, "b": 3, "a": [1, -2]}));
        let jcs_order = "{\"a\":[1,-2],\"b\":3,\"\u{10000}\":2,\"\u{e000}\":1}";
        assert!(keys.contains(jcs_order), "{keys}");
        // Numbers serde_json would print otherwise than JCS take the generic path.
        let fraction = canonical(json!({"x": 1.5, "y": 1e21, "z": 9_007_199_254_740_993u64}));
        assert!(
            fraction.contains(r#"{"x":1.5,"y":1e+21,"z":9007199254740992}"#),
            "{fraction}"
        );
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
                prop::collection::btree_map(".*", inner.clone(), 0..6)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
                // Keys in the order they came (a map that keeps its insertion order, as
                // serde_json's does when a crate of the build asks for it, keeps them so).
                prop::collection::vec((".*", inner), 0..6)
                    .prop_map(|pairs| Value::Object(pairs.into_iter().collect())),
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
        fn canonical_action_is_jcs(
            parameters in arb_json(),
            resource in proptest::option::of(".*"),
            mutates_state in any::<bool>(),
        ) {
            let action = ActionRef {
                tool: "tool",
                action: "act",
                resource: resource.as_deref(),
                mutates_state,
                parameters: Some(&parameters),
            };
            prop_assert_eq!(action.canonical().unwrap(), action.generic_canonical().unwrap());
        }

        #[test]
        fn canonical_form_preserves_the_value(value in arb_json()) {
            let reparsed: Value = serde_json::from_str(&canonical_json(&value).unwrap()).unwrap();
            prop_assert!(same_value(&reparsed, &value), "{reparsed} != {value}");
        }
    }
}
