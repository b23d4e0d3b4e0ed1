//! Reading requests: JSON bodies with strict content type and unknown-field
//! rejection, query strings, bearer tokens, client metadata.

use bytes::Bytes;
use http::header;
use serde::de::DeserializeOwned;

use crate::error::{ApiError, ApiResult};

/// What the platform knows about the request beyond HTTP.
#[derive(Debug, Clone, Default)]
pub struct Meta {
    /// The client's IP as the platform saw it (never from a client-set header).
    pub client_ip: Option<String>,
}

pub type Request = http::Request<Bytes>;

/// Parses a JSON body; the content type must be JSON.
pub fn json_body<T: DeserializeOwned>(req: &Request) -> ApiResult<T> {
    let ct = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let essence = ct
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    if essence != "application/json" && !essence.ends_with("+json") {
        return Err(ApiError::new(
            http::StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "Send the body as application/json.",
        ));
    }
    if has_nul_escape(req.body()) {
        // Postgres stores no NUL in text or jsonb: refused here, for every
        // body, rather than failing deep in a write.
        return Err(ApiError::bad_request(
            "invalid_body",
            "Text in the body may not contain NUL characters (\\u0000).",
        ));
    }
    serde_json::from_slice(req.body()).map_err(|e| {
        let detail = match e.classify() {
            serde_json::error::Category::Data => {
                format!("The JSON body does not match the expected shape: {e}")
            }
            _ => "The body is not valid JSON.".to_owned(),
        };
        ApiError::bad_request("invalid_body", detail)
    })
}

/// Whether JSON text holds the escape `\u0000` (a NUL in a string; a raw
/// NUL byte is not JSON at all): a `\` that is not itself escaped, then
/// `u0000`.
pub fn has_nul_escape(json: &[u8]) -> bool {
    let mut backslashes = 0usize;
    for (i, &b) in json.iter().enumerate() {
        if b == b'\\' {
            backslashes += 1;
            continue;
        }
        if backslashes % 2 == 1 && b == b'u' && json[i..].starts_with(b"u0000") {
            return true;
        }
        backslashes = 0;
    }
    false
}

/// JSON text fit for a `jsonb` column: each escaped NUL (`\u0000`, which
/// `jsonb` refuses) becomes U+FFFD. Text a model wrote can hold one.
pub fn jsonb_text(json: String) -> String {
    if !has_nul_escape(json.as_bytes()) {
        return json;
    }
    let mut out = String::with_capacity(json.len());
    let mut backslashes = 0usize;
    let mut rest = json.as_str();
    while let Some(c) = rest.chars().next() {
        if c == '\\' {
            backslashes += 1;
        } else {
            if backslashes % 2 == 1 && rest.starts_with("u0000") {
                out.push_str("ufffd");
                rest = &rest[5..];
                backslashes = 0;
                continue;
            }
            backslashes = 0;
        }
        out.push(c);
        rest = &rest[c.len_utf8()..];
    }
    out
}

/// The value of `name` in the query string, percent-decoded.
pub fn query_param(req: &Request, name: &str) -> Option<String> {
    let q = req.uri().query()?;
    q.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (k == name).then(|| {
            let v = v.replace('+', " ");
            percent_encoding::percent_decode_str(&v)
                .decode_utf8_lossy()
                .into_owned()
        })
    })
}

pub fn bearer_token(req: &Request) -> Option<&str> {
    let v = req.headers().get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = v.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}
