//! Request field types and validators whose rule and schema are written once, here: a
//! violation answers 422 naming the field, and the OpenAPI document states the same rule.

use crate::error::ApiError;
use serde::de::{self, Deserializer};
use serde::{Deserialize, Serialize, Serializer};
use std::fmt::Display;
use std::ops::RangeInclusive;
use utoipa::openapi::RefOr;
use utoipa::openapi::schema::{KnownFormat, ObjectBuilder, Schema, SchemaFormat, Type};
use utoipa::{PartialSchema, ToSchema};

/// A request string that is not blank and has at most `MAX` characters. The rule lives in
/// its `Deserialize` (a violation answers 422 naming the field) and its schema states the same
/// rule (`minLength`, `maxLength` and a pattern that needs a non-whitespace character), so
/// the document and the server cannot disagree. Characters are counted as JSON Schema counts
/// them; whitespace is Unicode `White_Space`, as `str::trim` sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Text<const MAX: usize>(String);

/// Longest `resource` of a tool call, however it arrives (`tool_call.resource`, an MCP tool's
/// resource argument).
pub const MAX_RESOURCE_CHARS: usize = 1024;
/// A tool call's `resource`.
pub type Resource = Text<MAX_RESOURCE_CHARS>;

/// A character outside Unicode `White_Space`, in a syntax that ECMA-262 and Python's `re`
/// read alike.
const NOT_BLANK: &str =
    "[^\\t\\n\\x0B\\f\\r \\x85\\xA0\\u1680\\u2000-\\u200A\\u2028\\u2029\\u202F\\u205F\\u3000]";

impl<const MAX: usize> Text<MAX> {
    /// Checks `value` against the rule; the error says what is wrong with it.
    pub fn parse(value: String) -> Result<Self, String> {
        if value.trim().is_empty() {
            return Err("must not be blank".to_owned());
        }
        if value.chars().count() > MAX {
            return Err(format!("must be at most {MAX} characters"));
        }
        Ok(Text(value))
    }

    pub fn into_string(self) -> String {
        self.0
    }
}

impl<const MAX: usize> std::ops::Deref for Text<MAX> {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl<const MAX: usize> Serialize for Text<MAX> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

impl<'de, const MAX: usize> Deserialize<'de> for Text<MAX> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Text::parse(String::deserialize(deserializer)?).map_err(de::Error::custom)
    }
}

impl<const MAX: usize> PartialSchema for Text<MAX> {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .min_length(Some(1))
            .max_length(Some(MAX))
            .pattern(Some(NOT_BLANK))
            .into()
    }
}

impl<const MAX: usize> ToSchema for Text<MAX> {}

/// A whole number field. JSON Schema's `integer` admits `5.0`, so the server does too, or a
/// client following the document would be refused. The document states every such field as
/// `format: int64`, so nothing above `i64::MAX` is read, whatever the Rust type holds.
/// Use with `#[serde(deserialize_with)]`.
pub fn whole<'de, D: Deserializer<'de>, T: TryFrom<u64>>(deserializer: D) -> Result<T, D::Error> {
    let number = serde_json::Number::deserialize(deserializer)?;
    number
        .as_u64()
        .or_else(|| {
            number
                .as_f64()
                .filter(|f| f.fract() == 0.0 && *f >= 0.0 && *f < i64::MAX as f64)
                .map(|f| f as u64)
        })
        .filter(|n| i64::try_from(*n).is_ok())
        .and_then(|n| T::try_from(n).ok())
        .ok_or_else(|| de::Error::custom(format!("{number} is not a whole number in range")))
}

/// 422 naming `field` unless `value` is within `range`: the bounds a body field's schema
/// states (`minimum`, `maximum`) beyond what its number type holds.
pub fn in_range<T: PartialOrd + Display>(
    field: &str,
    value: T,
    range: RangeInclusive<T>,
) -> Result<(), ApiError> {
    if range.contains(&value) {
        return Ok(());
    }
    Err(ApiError::invalid_field(
        field,
        format!("must be between {} and {}", range.start(), range.end()),
    ))
}

/// As [`whole`], for a nullable field.
pub fn optional_whole<'de, D: Deserializer<'de>, T: TryFrom<u64>>(
    deserializer: D,
) -> Result<Option<T>, D::Error> {
    #[derive(Deserialize)]
    struct Whole<T: TryFrom<u64>>(#[serde(deserialize_with = "whole")] T);
    Ok(Option::<Whole<T>>::deserialize(deserializer)?.map(|Whole(n)| n))
}

/// An RFC 3339 timestamp (query parameters `since` and `until`), read as Unix milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timestamp(i64);

impl Timestamp {
    pub fn millis(timestamp: Option<Timestamp>) -> Option<i64> {
        timestamp.map(|Timestamp(ms)| ms)
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        aegis_core::timestamp::parse_millis(&text)
            .map(Timestamp)
            .ok_or_else(|| {
                de::Error::custom("must be an RFC 3339 timestamp, e.g. 2026-11-25T10:00:00Z")
            })
    }
}

impl PartialSchema for Timestamp {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .format(Some(SchemaFormat::KnownFormat(KnownFormat::DateTime)))
            .into()
    }
}

impl ToSchema for Timestamp {}

/// An approval id as the gateway issues them: `apr_` and 32 lowercase hex digits. Anything
/// else answers 422 naming the field, before the store is asked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApprovalId(String);

/// The prefix of approval ids.
pub const APPROVAL_ID_PREFIX: &str = "apr";
const APPROVAL_ID_PATTERN: &str = "^apr_[0-9a-f]{32}$";

impl ApprovalId {
    pub fn into_string(self) -> String {
        self.0
    }
}

impl<'de> Deserialize<'de> for ApprovalId {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        let well_formed = text.strip_prefix("apr_").is_some_and(|hex| {
            hex.len() == 32 && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
        });
        if well_formed {
            Ok(ApprovalId(text))
        } else {
            Err(de::Error::custom(format!(
                "is not an approval id (expected {APPROVAL_ID_PATTERN})"
            )))
        }
    }
}

impl PartialSchema for ApprovalId {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .pattern(Some(APPROVAL_ID_PATTERN))
            .into()
    }
}

impl ToSchema for ApprovalId {}
