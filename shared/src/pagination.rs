//! Opaque cursor pagination (`?limit=&cursor=` -> `{items, next_cursor}`)
//! and the timestamp format of every response.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;

use crate::error::{ApiError, ApiResult};
use crate::http::request::{query_param, Request};

pub struct Page {
    pub limit: usize,
    /// The key after which the page starts (decoded from the cursor).
    pub after: Option<String>,
}

/// Reads `limit` (1..=max, default `default`) and `cursor`.
pub fn page(req: &Request, default: usize, max: usize) -> ApiResult<Page> {
    let limit = match query_param(req, "limit") {
        None => default,
        Some(s) => s
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=max).contains(n))
            .ok_or_else(|| {
                ApiError::bad_request(
                    "invalid_limit",
                    format!("limit must be an integer from 1 to {max}."),
                )
            })?,
    };
    let after = match query_param(req, "cursor").filter(|c| !c.is_empty()) {
        None => None,
        Some(c) => Some(
            URL_SAFE_NO_PAD
                .decode(c.as_bytes())
                .ok()
                .and_then(|b| String::from_utf8(b).ok())
                .and_then(|s| s.strip_prefix("c1:").map(str::to_owned))
                // Keys are ids, names and times: no control character (a
                // NUL would reach Postgres, which refuses it in text).
                .filter(|key| !key.chars().any(char::is_control))
                .ok_or_else(|| {
                    ApiError::bad_request(
                        "invalid_cursor",
                        "The cursor is not one this API issued.",
                    )
                })?,
        ),
    };
    Ok(Page { limit, after })
}

pub fn cursor(key: &str) -> String {
    URL_SAFE_NO_PAD.encode(format!("c1:{key}"))
}

/// Splits a result fetched with `limit + 1` rows into the page and its next cursor.
pub fn finish<T>(
    mut items: Vec<T>,
    limit: usize,
    key: impl Fn(&T) -> String,
) -> (Vec<T>, Option<String>) {
    if items.len() > limit {
        items.truncate(limit);
        let next = items.last().map(|i| cursor(&key(i)));
        (items, next)
    } else {
        (items, None)
    }
}

/// RFC 3339 UTC with millisecond precision.
pub fn rfc3339(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|d| d.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string())
        .unwrap_or_default()
}
