//! HTTP plumbing on `http` types: bodies, routing, request parsing and
//! response building. Platform adapters convert at the edge.

pub mod body;
pub mod request;
pub mod response;
pub mod router;

use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};

/// Everything but RFC 3986's unreserved characters (alphanumerics and `-._~`).
const UNRESERVED_ONLY: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// `s` percent-encoded for one URL path segment, a query value or an
/// `application/x-www-form-urlencoded` field.
pub fn escape(s: &str) -> String {
    utf8_percent_encode(s, UNRESERVED_ONLY).to_string()
}
