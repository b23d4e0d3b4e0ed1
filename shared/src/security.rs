//! Security headers set on every response.

use http::{HeaderMap, HeaderValue};

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
