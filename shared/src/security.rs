//! Security headers set on every response, and CORS for the origins in
//! `CORS_ORIGINS` (everything else is same-origin only).

use http::{HeaderMap, HeaderValue, StatusCode};

use crate::error::ApiError;
use crate::http::body::Body;
use crate::ports::Ports;

pub fn apply_headers(headers: &mut HeaderMap) {
    let set = |h: &mut HeaderMap, k: &'static str, v: &'static str| {
        if !h.contains_key(k) {
            h.insert(k, HeaderValue::from_static(v));
        }
    };
    set(headers, "x-content-type-options", "nosniff");
    set(headers, "referrer-policy", "no-referrer");
    set(
        headers,
        "strict-transport-security",
        "max-age=63072000; includeSubDomains",
    );
    set(headers, "x-frame-options", "DENY");
    set(
        headers,
        "content-security-policy",
        "default-src 'none'; frame-ancestors 'none'",
    );
    set(headers, "cache-control", "no-store");
}

pub fn origin_allowed(ports: &Ports, origin: &str) -> bool {
    ports
        .config()
        .is_ok_and(|c| c.cors_origins.iter().any(|o| o == origin || o == "*"))
}

/// Headers that make a response readable by an allowed origin.
pub fn cors_headers(h: &mut HeaderMap, origin: &str) {
    if let Ok(v) = HeaderValue::from_str(origin) {
        h.insert("access-control-allow-origin", v);
    }
    h.insert("vary", HeaderValue::from_static("Origin"));
    h.insert(
        "access-control-expose-headers",
        HeaderValue::from_static("x-request-id, retry-after, ratelimit-limit, ratelimit-remaining, ratelimit-reset, etag, x-vercel-ai-ui-message-stream"),
    );
}

/// The answer to a CORS preflight: 204 for an allowed origin, else 403.
pub fn preflight(allowed: Option<&str>, request_id: &str) -> http::Response<Body> {
    let Some(origin) = allowed else {
        return ApiError::forbidden(
            "cors_forbidden",
            "This origin may not call the API from a browser.",
        )
        .into_response(request_id);
    };
    let mut res = http::Response::new(Body::empty());
    *res.status_mut() = StatusCode::NO_CONTENT;
    let h = res.headers_mut();
    cors_headers(h, origin);
    h.insert(
        "access-control-allow-methods",
        HeaderValue::from_static("GET, POST, PUT, PATCH, DELETE, OPTIONS"),
    );
    h.insert(
        "access-control-allow-headers",
        HeaderValue::from_static("authorization, content-type, last-event-id, x-request-id"),
    );
    h.insert("access-control-max-age", HeaderValue::from_static("600"));
    res
}
