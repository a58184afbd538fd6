//! HTTP handlers, one module per resource. Each handler is thin: extract, validate, call
//! the store, map the result.

pub mod agents;
pub mod authorize;
pub mod decisions;
pub mod graph;
pub mod health;
pub mod incidents;
pub mod investigate;
pub mod keys;
pub mod policies;
pub mod receipts;
pub mod tenants;
pub mod tools;
pub mod webhooks;
pub mod ws;

use crate::error::ApiError;
use crate::validate;
use aegis_store::Page;
use axum::Json;
use axum::http::HeaderValue;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::IntoParams;

/// Name of the response header that carries the next page's cursor.
pub const NEXT_CURSOR_HEADER: &str = "x-next-cursor";

/// `limit` and `cursor` of every list endpoint.
#[derive(Debug, Deserialize, IntoParams)]
pub struct PageQuery {
    /// 1 to 1000, default 50.
    pub limit: Option<u32>,
    /// The `X-Next-Cursor` of the previous page.
    pub cursor: Option<String>,
}

impl PageQuery {
    pub fn page(&self) -> Result<Page, ApiError> {
        Ok(Page {
            before: validate::cursor(self.cursor.as_deref())?,
            limit: validate::limit(self.limit)?,
        })
    }
}

/// A bare JSON array, with `X-Next-Cursor` when there is another page.
pub struct Listed<T> {
    items: Vec<T>,
    next_cursor: Option<i64>,
}

impl<T> Listed<T> {
    /// Builds a page from up to `limit + 1` rows fetched newest first: the extra row only
    /// tells that another page exists.
    pub fn paged<S>(
        mut rows: Vec<S>,
        limit: u32,
        cursor_of: impl Fn(&S) -> i64,
        view: impl Fn(S) -> T,
    ) -> Self {
        let next_cursor = if rows.len() > limit as usize {
            rows.truncate(limit as usize);
            rows.last().map(&cursor_of)
        } else {
            None
        };
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
