//! Small field validators shared by handlers; each names the field it rejects.

use crate::error::ApiError;

/// A required string: non-blank, at most `max` bytes.
pub fn bounded(field: &str, value: &str, max: usize) -> Result<(), ApiError> {
    if value.trim().is_empty() {
        return Err(ApiError::invalid_field(field, "must not be empty"));
    }
    if value.len() > max {
        return Err(ApiError::invalid_field(
            field,
            format!("must be at most {max} bytes"),
        ));
    }
    Ok(())
}

/// An optional string: when present, as [`bounded`].
pub fn optional_bounded(field: &str, value: Option<&str>, max: usize) -> Result<(), ApiError> {
    value.map_or(Ok(()), |v| bounded(field, v, max))
}

/// Page size: default 50, at most 1000.
pub fn limit(requested: Option<u32>) -> Result<u32, ApiError> {
    match requested {
        None => Ok(50),
        Some(n @ 1..=1000) => Ok(n),
        Some(_) => Err(ApiError::invalid_field(
            "limit",
            "must be between 1 and 1000",
        )),
    }
}

/// An opaque cursor from `X-Next-Cursor`.
pub fn cursor(value: Option<&str>) -> Result<Option<i64>, ApiError> {
    value
        .map(|c| {
            c.parse::<i64>().map_err(|_| {
                ApiError::invalid_field("cursor", "is not a cursor this server issued")
            })
        })
        .transpose()
}

/// An RFC 3339 timestamp query parameter, as Unix milliseconds.
pub fn timestamp(field: &str, value: Option<&str>) -> Result<Option<i64>, ApiError> {
    value
        .map(|v| {
            aegis_core::timestamp::parse_millis(v).ok_or_else(|| {
                ApiError::invalid_field(
                    field,
                    "must be an RFC 3339 timestamp, e.g. 2026-11-25T10:00:00Z",
                )
            })
        })
        .transpose()
}
