//! A small GitHub REST client over the core's `HttpClient` port: auth
//! headers, JSON in and out, rate limits (`x-ratelimit-remaining` /
//! `x-ratelimit-reset`, secondary limits' `retry-after`, remembered in KV per
//! installation so later requests wait instead of hammering), one retry of a
//! refused cached token, and GitHub failures turned into clear API errors.
//! It counts its calls (the benchmark reports them).

use std::cell::{Cell, RefCell};

use bytes::Bytes;
use http::{HeaderMap, Method, StatusCode};
use serde_json::Value;

use super::app;
use crate::config::GithubConfig;
use crate::error::{ApiError, ApiResult};
use crate::ports::Ports;

/// What a GitHub call can fail with.
#[derive(Debug, Clone, PartialEq)]
pub enum GhError {
    /// GitHub answered with this status; `message` is GitHub's own.
    Status { status: u16, message: String },
    /// A primary or secondary rate limit: wait this many seconds.
    RateLimited { retry_after: u64 },
    /// GitHub could not be reached or failed (5xx).
    Unavailable(String),
    /// A 2xx answer that is not what the API documents.
    Invalid(String),
}

impl GhError {
    pub fn status(&self) -> Option<u16> {
        match self {
            GhError::Status { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// The error a client of our API sees.
    pub fn into_api(self) -> ApiError {
        match self {
            GhError::RateLimited { retry_after } => ApiError {
                retry_after: Some(retry_after),
                ..ApiError::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    "github_rate_limited",
                    format!("GitHub's rate limit is reached; try again in {retry_after} s."),
                )
            },
            GhError::Unavailable(why) => {
                crate::log::event(
                    "warn",
                    "github_unavailable",
                    serde_json::json!({ "why": why }),
                );
                ApiError {
                    retry_after: Some(30),
                    ..ApiError::unavailable(
                        "github_unavailable",
                        "GitHub cannot be reached right now; nothing was changed. Try again later.",
                    )
                }
            }
            GhError::Invalid(why) => {
                crate::log::error("github_invalid_response", &why);
                ApiError::new(
                    StatusCode::BAD_GATEWAY,
                    "github_error",
                    "GitHub answered something unexpected.",
                )
            }
            GhError::Status { status, message } => {
                let msg = message.chars().take(300).collect::<String>();
                match status {
                    401 => ApiError::new(
                        StatusCode::BAD_GATEWAY,
                        "github_unauthorized",
                        "GitHub refused this server's credentials (check the GitHub App id and key).",
                    ),
                    403 => ApiError::new(
                        StatusCode::BAD_GATEWAY,
                        "github_forbidden",
                        format!("GitHub refused the request: {msg}. Check the App's permissions (contents: write, metadata: read)."),
                    ),
                    404 => ApiError::new(
                        StatusCode::NOT_FOUND,
                        "github_not_found",
                        "The repository or branch does not exist or the GitHub App installation cannot reach it.",
                    ),
                    409 => ApiError::conflict("github_conflict", format!("GitHub reported a conflict: {msg}")),
                    422 => ApiError::new(
                        StatusCode::UNPROCESSABLE_ENTITY,
                        "github_rejected",
                        format!("GitHub rejected the request: {msg}"),
                    ),
                    s if s >= 500 => GhError::Unavailable(format!("status {s}")).into_api(),
                    s => ApiError::new(
                        StatusCode::BAD_GATEWAY,
                        "github_error",
                        format!("GitHub answered {s}: {msg}"),
                    ),
                }
            }
        }
    }
}

impl From<GhError> for ApiError {
    fn from(e: GhError) -> Self {
        e.into_api()
    }
}

enum Auth {
    App(String),
    Installation {
        id: i64,
        token: RefCell<String>,
    },
    /// A user-to-server token: calls as the GitHub user who signed in.
    User(String),
}

/// `s` escaped as one URL path segment.
pub use crate::http::escape as seg;

/// `s` escaped segment by segment, keeping its slashes (file paths, branch names).
pub fn segs(s: &str) -> String {
    s.split('/').map(seg).collect::<Vec<_>>().join("/")
}

fn rate_key(installation: i64) -> String {
    format!("github:ratelimit:{installation}")
}

pub struct Api<'a> {
    ports: &'a Ports,
    config: &'a GithubConfig,
    auth: Auth,
    calls: Cell<u32>,
    /// Unix seconds until which GitHub asked us to wait.
    blocked_until: Cell<i64>,
}

impl<'a> Api<'a> {
    /// Calls as the app itself (its JWT): installations and token exchange.
    pub fn app(ports: &'a Ports, config: &'a GithubConfig) -> ApiResult<Self> {
        let jwt = app::app_jwt(config, ports.clock.now_ms())?;
        Ok(Self {
            ports,
            config,
            auth: Auth::App(jwt),
            calls: Cell::new(0),
            blocked_until: Cell::new(0),
        })
    }

    /// Calls as a GitHub user, with the user-to-server token the App's OAuth
    /// flow gave ([`super::oauth::user_token`]).
    pub fn user(ports: &'a Ports, config: &'a GithubConfig, token: String) -> Self {
        Self {
            ports,
            config,
            auth: Auth::User(token),
            calls: Cell::new(0),
            blocked_until: Cell::new(0),
        }
    }

    /// Calls as an installation (its cached or fresh token).
    pub async fn installation(
        ports: &'a Ports,
        config: &'a GithubConfig,
        installation: i64,
    ) -> ApiResult<Self> {
        let blocked = ports
            .kv
            .get(&rate_key(installation))
            .await
            .ok()
            .flatten()
            .and_then(|v| String::from_utf8(v).ok())
            .and_then(|s| s.parse::<i64>().ok())
            .unwrap_or(0);
        let now = ports.clock.now_secs();
        if blocked > now {
            return Err(GhError::RateLimited {
                retry_after: u64::try_from(blocked - now).unwrap_or(1),
            }
            .into_api());
        }
        let token = app::installation_token(ports, config, installation).await?;
        Ok(Self {
            ports,
            config,
            auth: Auth::Installation {
                id: installation,
                token: RefCell::new(token),
            },
            calls: Cell::new(0),
            blocked_until: Cell::new(blocked),
        })
    }

    /// GitHub calls made so far by this client.
    pub fn calls(&self) -> u32 {
        self.calls.get()
    }

    pub async fn get(&self, path: &str) -> Result<Value, GhError> {
        self.call(Method::GET, path, None).await
    }
    pub async fn post(&self, path: &str, body: &Value) -> Result<Value, GhError> {
        self.call(Method::POST, path, Some(body)).await
    }
    pub async fn patch(&self, path: &str, body: &Value) -> Result<Value, GhError> {
        self.call(Method::PATCH, path, Some(body)).await
    }
    pub async fn put(&self, path: &str, body: &Value) -> Result<Value, GhError> {
        self.call(Method::PUT, path, Some(body)).await
    }

    fn request(&self, method: &Method, path: &str, body: &Bytes) -> http::Request<Bytes> {
        let auth = match &self.auth {
            Auth::App(jwt) | Auth::User(jwt) => format!("Bearer {jwt}"),
            Auth::Installation { token, .. } => format!("Bearer {}", token.borrow()),
        };
        let mut b = http::Request::builder()
            .method(method.clone())
            .uri(format!("{}{path}", self.config.api_url))
            .header("accept", "application/vnd.github+json")
            .header("x-github-api-version", "2022-11-28")
            .header("user-agent", "everjust")
            .header("authorization", auth);
        if !body.is_empty() {
            b = b.header("content-type", "application/json");
        }
        b.body(body.clone())
            .unwrap_or_else(|_| http::Request::new(Bytes::new()))
    }

    /// A call; a cached installation token GitHub refuses (401) is replaced
    /// by a fresh one once.
    async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Value, GhError> {
        match self.raw(method.clone(), path, body).await {
            Err(GhError::Status { status: 401, .. })
                if matches!(self.auth, Auth::Installation { .. }) =>
            {
                if let Auth::Installation { id, token } = &self.auth {
                    app::forget_token(self.ports, *id).await;
                    let fresh = app::installation_token(self.ports, self.config, *id)
                        .await
                        .map_err(|e| GhError::Status {
                            status: 401,
                            message: e.detail,
                        })?;
                    *token.borrow_mut() = fresh;
                }
                self.raw(method, path, body).await
            }
            other => other,
        }
    }

    /// One call (a read is repeated once after a network failure or a 502-504).
    pub(super) async fn raw(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Value, GhError> {
        let body = body.map_or_else(Bytes::new, |v| Bytes::from(v.to_string()));
        let mut retried = false;
        loop {
            let now = self.ports.clock.now_secs();
            let blocked = self.blocked_until.get();
            if blocked > now {
                return Err(GhError::RateLimited {
                    retry_after: u64::try_from(blocked - now).unwrap_or(1),
                });
            }
            self.calls.set(self.calls.get() + 1);
            let res = self
                .ports
                .http
                .send(self.request(&method, path, &body))
                .await;
            let res = match res {
                Ok(r) => r,
                Err(e) => {
                    // Reads are safe to repeat once.
                    if method == Method::GET && !retried {
                        retried = true;
                        self.ports.clock.sleep_ms(250).await;
                        continue;
                    }
                    return Err(GhError::Unavailable(e.0));
                }
            };
            let status = res.status().as_u16();
            self.note_rate(res.headers()).await;
            if (200..300).contains(&status) {
                let bytes = res.into_body();
                if bytes.is_empty() {
                    return Ok(Value::Null);
                }
                return serde_json::from_slice(&bytes)
                    .map_err(|e| GhError::Invalid(format!("{method} {path}: {e}")));
            }
            if matches!(status, 403 | 429) {
                if let Some(wait) = self.limit_wait(res.headers()) {
                    let until = self.ports.clock.now_secs() + i64::try_from(wait).unwrap_or(60);
                    self.block(until).await;
                    return Err(GhError::RateLimited { retry_after: wait });
                }
            }
            if matches!(status, 502..=504) && method == Method::GET && !retried {
                retried = true;
                self.ports.clock.sleep_ms(250).await;
                continue;
            }
            let message = serde_json::from_slice::<Value>(res.body())
                .ok()
                .and_then(|v| v["message"].as_str().map(str::to_owned))
                .unwrap_or_default();
            return Err(GhError::Status { status, message });
        }
    }

    /// Seconds to wait when a 403/429 is a rate limit, else `None`.
    fn limit_wait(&self, headers: &HeaderMap) -> Option<u64> {
        let header = |n: &str| headers.get(n).and_then(|v| v.to_str().ok());
        if let Some(secs) = header("retry-after").and_then(|v| v.trim().parse::<u64>().ok()) {
            return Some(secs.max(1));
        }
        if header("x-ratelimit-remaining") == Some("0") {
            let reset = header("x-ratelimit-reset")
                .and_then(|v| v.parse::<i64>().ok())
                .unwrap_or(0);
            let wait = reset - self.ports.clock.now_secs();
            return Some(u64::try_from(wait).unwrap_or(0).max(1));
        }
        None
    }

    /// Remembers an exhausted primary limit (remaining 0) until its reset.
    async fn note_rate(&self, headers: &HeaderMap) {
        let header = |n: &str| headers.get(n).and_then(|v| v.to_str().ok());
        if header("x-ratelimit-remaining") == Some("0") {
            if let Some(reset) = header("x-ratelimit-reset").and_then(|v| v.parse::<i64>().ok()) {
                self.block(reset).await;
            }
        }
    }

    async fn block(&self, until: i64) {
        if until <= self.blocked_until.get() {
            return;
        }
        self.blocked_until.set(until);
        if let Auth::Installation { id, .. } = &self.auth {
            let ttl = until - self.ports.clock.now_secs();
            if ttl > 0 {
                let _ = self
                    .ports
                    .kv
                    .put(
                        &rate_key(*id),
                        until.to_string().as_bytes(),
                        Some(u64::try_from(ttl).unwrap_or(60).max(60)),
                    )
                    .await;
            }
        }
    }
}
