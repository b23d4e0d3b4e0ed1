//! EverJust core: the whole product as a sans-I/O library on `http` types.
//! Platform adapters (Cloudflare Workers, Spin) build [`Ports`] per request
//! and call [`handle`]; everything else lives here.

pub mod account;
pub mod auth;
pub mod billing;
pub mod chat;
pub mod config;
pub mod db;
pub mod error;
pub mod github;
pub mod health;
pub mod http;
pub mod ids;
pub mod jobs;
pub mod llm;
pub mod log;
pub mod openapi;
pub mod pagination;
pub mod ports;
pub mod projects;
pub mod routes;
pub mod sandbox;
pub mod security;

pub use config::{Config, ConfigError};
pub use error::{ApiError, ApiResult};
pub use http::body::Body;
pub use http::request::Meta;
pub use ports::Ports;

use ::http::HeaderValue;

/// Serves one request. Never fails: every error is a problem+json response.
pub async fn handle(
    ports: &Ports,
    req: ::http::Request<bytes::Bytes>,
    meta: Meta,
) -> ::http::Response<Body> {
    let started_ms = ports.clock.now_ms();
    let method = req.method().clone();
    let request_id = request_id(&req, ports);
    let allowed = allowed_origin(&req, ports);
    if req.method() == ::http::Method::OPTIONS && req.headers().contains_key(::http::header::ORIGIN)
    {
        let mut res = security::preflight(allowed.as_deref(), &request_id);
        security::apply_headers(res.headers_mut());
        let elapsed = ports.clock.now_ms() - started_ms;
        let status = res.status().as_u16();
        log::access(method.as_str(), None, status, elapsed, &request_id, None);
        return res;
    }
    let (mut res, access) = routes::dispatch(ports, req, meta, &request_id).await;
    finish(&mut res, allowed.as_deref(), &request_id);
    log::access(
        method.as_str(),
        access.route,
        res.status().as_u16(),
        ports.clock.now_ms() - started_ms,
        &request_id,
        access.user_id.as_deref(),
    );
    res
}

/// The answer to `req` when the platform could not serve it (a Durable
/// Object it was handed to failed): `error` as problem+json, with the
/// headers every answer has.
pub fn failed<B>(
    ports: &Ports,
    req: &::http::Request<B>,
    error: ApiError,
) -> ::http::Response<Body> {
    let request_id = request_id(req, ports);
    let mut res = error.into_response(&request_id);
    finish(&mut res, allowed_origin(req, ports).as_deref(), &request_id);
    res
}

/// The request's `Origin` when it is allowed (CORS).
fn allowed_origin<B>(req: &::http::Request<B>, ports: &Ports) -> Option<String> {
    req.headers()
        .get(::http::header::ORIGIN)
        .and_then(|v| v.to_str().ok())
        .filter(|o| security::origin_allowed(ports, o))
        .map(str::to_owned)
}

/// What every answer carries: CORS for an allowed origin, the request id,
/// the security headers.
fn finish(res: &mut ::http::Response<Body>, allowed: Option<&str>, request_id: &str) {
    if let Some(o) = allowed {
        security::cors_headers(res.headers_mut(), o);
    }
    let headers = res.headers_mut();
    if let Ok(v) = HeaderValue::from_str(request_id) {
        headers.insert("x-request-id", v);
    }
    security::apply_headers(headers);
}

/// The caller's `X-Request-Id` when it is a sane token, else a new one.
fn request_id<B>(req: &::http::Request<B>, ports: &Ports) -> String {
    req.headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| {
            !v.is_empty()
                && v.len() <= 64
                && v.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
        .map(str::to_owned)
        .unwrap_or_else(|| ids::new_id(ports, "req"))
}
