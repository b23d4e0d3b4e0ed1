//! The one error type of the API. Every failure a client can see becomes an
//! RFC 9457 `application/problem+json` body here, with a stable `code`, a
//! safe `detail`, and no internals in 5xx bodies.

use http::{HeaderValue, StatusCode};

use crate::http::body::Body;
use crate::ports::kv::KvError;
use crate::ports::sql::SqlError;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: StatusCode,
    /// Stable machine-readable code, e.g. `email_taken`.
    pub code: &'static str,
    /// Human-readable, safe to show.
    pub detail: String,
    /// Seconds, sent as `Retry-After`.
    pub retry_after: Option<u64>,
    /// Extra members of the problem object (e.g. the failing dependency).
    pub extra: Option<serde_json::Value>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, detail: impl Into<String>) -> Self {
        Self {
            status,
            code,
            detail: detail.into(),
            retry_after: None,
            extra: None,
        }
    }
    pub fn bad_request(code: &'static str, detail: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, detail)
    }
    pub fn unauthorized(code: &'static str, detail: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, code, detail)
    }
    pub fn forbidden(code: &'static str, detail: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, code, detail)
    }
    pub fn not_found(what: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("{what} not found"),
        )
    }
    pub fn conflict(code: &'static str, detail: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, code, detail)
    }
    pub fn too_large(code: &'static str, detail: impl Into<String>) -> Self {
        Self::new(StatusCode::PAYLOAD_TOO_LARGE, code, detail)
    }
    pub fn too_many(code: &'static str, detail: impl Into<String>, retry_after: u64) -> Self {
        Self {
            retry_after: Some(retry_after),
            ..Self::new(StatusCode::TOO_MANY_REQUESTS, code, detail)
        }
    }
    /// A server-side failure: the cause goes to the log, never to the client.
    pub fn internal(cause: impl std::fmt::Display) -> Self {
        crate::log::error("internal_error", &cause.to_string());
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "An internal error occurred. Try again later.",
        )
    }
    pub fn unavailable(code: &'static str, detail: impl Into<String>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, code, detail)
    }
    pub fn with_extra(mut self, extra: serde_json::Value) -> Self {
        self.extra = Some(extra);
        self
    }

    fn title(&self) -> &'static str {
        self.status.canonical_reason().unwrap_or("Error")
    }

    /// The problem+json response, tagged with the request id.
    pub fn into_response(self, request_id: &str) -> http::Response<Body> {
        let mut doc = serde_json::json!({
            "type": format!("https://everjust.dev/problems/{}", self.code.replace('_', "-")),
            "title": self.title(),
            "status": self.status.as_u16(),
            "detail": self.detail,
            "code": self.code,
            "request_id": request_id,
        });
        if let (Some(serde_json::Value::Object(extra)), Some(obj)) =
            (self.extra, doc.as_object_mut())
        {
            for (k, v) in extra {
                obj.entry(k).or_insert(v);
            }
        }
        let mut res = http::Response::new(Body::from(doc.to_string()));
        *res.status_mut() = self.status;
        res.headers_mut().insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        if let Some(secs) = self.retry_after {
            res.headers_mut()
                .insert(http::header::RETRY_AFTER, HeaderValue::from(secs));
        }
        res
    }
}

impl From<SqlError> for ApiError {
    fn from(e: SqlError) -> Self {
        match &e {
            // The collection of a content row raced a write that reused it
            // (migrations/0011): refused, nothing changed; a retry passes.
            SqlError::ForeignKey(c) if c == "files_owner_id_sha256_fkey" => ApiError::conflict(
                "concurrent_write",
                "Another write of the same content ran at the same time; nothing was changed, try again.",
            ),
            _ => ApiError::internal(e),
        }
    }
}

impl From<KvError> for ApiError {
    fn from(e: KvError) -> Self {
        ApiError::internal(e)
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} ({}): {}",
            self.status.as_u16(),
            self.code,
            self.detail
        )
    }
}

pub type ApiResult<T> = Result<T, ApiError>;
