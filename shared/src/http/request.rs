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
    if nul_escapes(req.body()).next().is_some() {
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

/// Where JSON text holds the escape `\u0000` (a NUL in a string; a raw
/// NUL byte is not JSON at all): the offsets of each `u0000` after a `\`
/// that is not itself escaped.
pub fn nul_escapes(json: &[u8]) -> impl Iterator<Item = usize> + '_ {
    let mut backslashes = 0usize;
    json.iter().enumerate().filter_map(move |(i, &b)| {
        if b == b'\\' {
            backslashes += 1;
            return None;
        }
        let escaped = backslashes % 2 == 1;
        backslashes = 0;
        (escaped && json[i..].starts_with(b"u0000")).then_some(i)
    })
}

/// JSON text fit for a `jsonb` column: each escaped NUL (`\u0000`, which
/// `jsonb` refuses) becomes U+FFFD. Text a model wrote can hold one.
pub fn jsonb_text(json: String) -> String {
    let at: Vec<usize> = nul_escapes(json.as_bytes()).collect();
    if at.is_empty() {
        return json;
    }
    let mut out = json.into_bytes();
    for i in at {
        out[i..i + 5].copy_from_slice(b"ufffd");
    }
    // Only ASCII was replaced by ASCII.
    String::from_utf8(out).unwrap_or_default()
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
