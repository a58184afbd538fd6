//! HTTP handlers, one module per resource. Each handler is thin: extract, validate, call
//! the store, map the result.

pub mod agents;
pub mod approvals;
pub mod authorize;
pub mod decisions;
pub mod graph;
pub mod health;
pub mod incidents;
pub mod investigate;
pub mod keys;
pub mod mcp;
pub mod mcp_stdio;
pub mod policies;
pub mod rate_limits;
pub mod receipts;
pub mod slack;
pub mod tenants;
pub mod tools;
pub mod webhooks;
pub mod ws;

use aegis_store::Page;
use axum::Json;
use axum::http::HeaderValue;
use axum::response::{IntoResponse, Response};
use serde::de::{self, Deserializer};
use serde::{Deserialize, Serialize};
use utoipa::openapi::RefOr;
use utoipa::openapi::schema::{ObjectBuilder, Schema, Type};
use utoipa::{IntoParams, PartialSchema, ToSchema};

/// Name of the response header that carries the next page's cursor.
pub const NEXT_CURSOR_HEADER: &str = "x-next-cursor";

/// Largest page of every list.
pub const MAX_LIMIT: u32 = 1000;

/// A whole number query parameter from `MIN` to `MAX`. Anything else (not a number, a sign,
/// out of range) answers the same 422 naming the parameter.
#[derive(Debug, Clone, Copy)]
pub struct Bounded<const MIN: u32, const MAX: u32>(u32);

impl<const MIN: u32, const MAX: u32> Bounded<MIN, MAX> {
    /// The parameter's value, or `default` when it was left out.
    pub fn or(value: Option<Self>, default: u32) -> u32 {
        value.map_or(default, |Bounded(n)| n)
    }
}

impl<'de, const MIN: u32, const MAX: u32> Deserialize<'de> for Bounded<MIN, MAX> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        match text.parse::<u32>() {
            Ok(n) if (MIN..=MAX).contains(&n) && is_digits(&text) => Ok(Bounded(n)),
            _ => Err(de::Error::custom(format!(
                "must be a whole number between {MIN} and {MAX}"
            ))),
        }
    }
}

impl<const MIN: u32, const MAX: u32> PartialSchema for Bounded<MIN, MAX> {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::Integer)
            .minimum(Some(MIN))
            .maximum(Some(MAX))
            .into()
    }
}

impl<const MIN: u32, const MAX: u32> ToSchema for Bounded<MIN, MAX> {}

/// A page size, 1 to [`MAX_LIMIT`]; each list has its own default.
pub type Limit = Bounded<1, MAX_LIMIT>;

/// A cursor from `X-Next-Cursor`: the decimal digits of a position this server issued.
#[derive(Debug, Clone, Copy)]
pub struct Cursor(i64);

/// Digits in a cursor: 18 always fit an `i64`.
const CURSOR_DIGITS: usize = 18;

impl<'de> Deserialize<'de> for Cursor {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        match text.parse::<i64>() {
            Ok(position) if is_digits(&text) && text.len() <= CURSOR_DIGITS => Ok(Cursor(position)),
            _ => Err(de::Error::custom("is not a cursor this server issued")),
        }
    }
}

impl PartialSchema for Cursor {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .pattern(Some(format!("^[0-9]{{1,{CURSOR_DIGITS}}}$")))
            .into()
    }
}

impl ToSchema for Cursor {}

/// Only ASCII digits: no sign, no spaces, as the documents' schemas say.
fn is_digits(text: &str) -> bool {
    !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit())
}

/// Default page size of the lists that take [`PageQuery`].
pub const DEFAULT_LIMIT: u32 = 50;

/// `limit` and `cursor` of every list endpoint.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct PageQuery {
    /// 1 to 1000, default 50.
    #[param(inline)]
    pub limit: Option<Limit>,
    /// The `X-Next-Cursor` of the previous page.
    #[param(inline)]
    pub cursor: Option<Cursor>,
}

impl PageQuery {
    pub fn page(&self) -> Page {
        page(self.limit, self.cursor, DEFAULT_LIMIT)
    }
}

/// The store page for a `limit` (or `default`) and an optional cursor.
pub fn page(limit: Option<Limit>, cursor: Option<Cursor>, default: u32) -> Page {
    Page {
        before: cursor.map(|Cursor(position)| position),
        limit: Limit::or(limit, default),
    }
}

/// A bare JSON array, with `X-Next-Cursor` when there is another page.
pub struct Listed<T> {
    items: Vec<T>,
    next_cursor: Option<i64>,
}

impl<T> Listed<T> {
    /// `page` of the rows read with [`Page::with_next_row`], newest first, each shown as
    /// `view` shows it.
    pub fn paged<S>(
        rows: Vec<S>,
        page: Page,
        cursor_of: impl Fn(&S) -> i64,
        view: impl Fn(S) -> T,
    ) -> Self {
        let (rows, next_cursor) = page.split(rows, cursor_of);
        Listed {
            items: rows.into_iter().map(view).collect(),
            next_cursor,
        }
    }

    /// A complete, unpaged list.
    pub fn all(items: Vec<T>) -> Self {
        Listed {
            items,
            next_cursor: None,
        }
    }
}

impl<T: Serialize> IntoResponse for Listed<T> {
    fn into_response(self) -> Response {
        let mut response = Json(self.items).into_response();
        if let Some(cursor) = self.next_cursor {
            response
                .headers_mut()
                .insert(NEXT_CURSOR_HEADER, HeaderValue::from(cursor));
        }
        response
    }
}
