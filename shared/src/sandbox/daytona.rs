//! Daytona's REST API (`{DAYTONA_API_URL}/sandbox...`) and its per-sandbox
//! toolbox API (files, process execution), over the core's HTTP client
//! port. Idempotent calls are retried with backoff on 5xx, 429, timeouts
//! and connection failures; command execution never is.

use std::rc::Rc;

use bytes::Bytes;
use futures_util::future::{select, Either};
use http::{Method, StatusCode};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use super::provider::{
    CreateSpec, ExecResult, ExecSpec, Handle, Preview, ProviderError, Remote, SandboxProvider,
    State, Upload,
};
use crate::config::{DaytonaConfig, SandboxSource};
use crate::ports::{Clock, HttpClient};

/// A path segment or query value, escaped.
use crate::http::escape as enc;

/// How long one REST call may take.
const CALL_TIMEOUT_MS: u64 = 15_000;
/// How long one upload request may take.
const UPLOAD_TIMEOUT_MS: u64 = 60_000;
/// Beyond the command's own time limit, for the answer to come back.
const EXEC_GRACE_MS: u64 = 20_000;
/// Attempts of a call that is safe to repeat.
const ATTEMPTS: u32 = 3;
/// First backoff; each next one is four times longer.
const BACKOFF_MS: u64 = 300;
/// The most bytes of files in one bulk upload request.
const UPLOAD_BATCH_BYTES: usize = 4 * 1024 * 1024;
const UPLOAD_BATCH_FILES: usize = 200;
/// Lifetime of a signed preview URL.
pub const PREVIEW_TTL_SECS: i64 = 3600;
/// Pages read by `list` at most (100 sandboxes each).
const LIST_PAGES: usize = 20;
/// How often a streamed command's status and log are read: often at
/// first, then less (each read is two requests, and a Worker's requests
/// per invocation are counted). Daytona follows a log only over a
/// WebSocket, which the HTTP port cannot open, and its HTTP log answer is
/// the whole log so far: past `BIG_LOG_BYTES` of it, it is read less often.
pub fn poll_ms(elapsed_ms: i64, log_bytes: usize) -> u64 {
    let by_time = if elapsed_ms < 5_000 {
        250
    } else if elapsed_ms < 60_000 {
        1_000
    } else {
        3_000
    };
    if log_bytes > BIG_LOG_BYTES {
        by_time.max(2_000)
    } else {
        by_time
    }
}
const BIG_LOG_BYTES: usize = 1024 * 1024;

/// A shell word in single quotes.
pub fn sh_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// The command sent to a session, which has no working directory of its
/// own: into `cwd`, then the command in a subshell (so an `exit` in it ends
/// the subshell, not the session's shell).
pub fn session_command(cwd: &str, command: &str) -> String {
    format!("cd {} && (\n{command}\n)", sh_quote(cwd))
}

/// The new text of a log read whole, from byte `seen` on; an unfinished
/// UTF-8 character at its end waits for the next read unless `last`.
/// Moves `seen` past what it returns.
pub fn log_delta(log: &[u8], seen: &mut usize, last: bool) -> String {
    let Some(new) = log.get(*seen..) else {
        return String::new();
    };
    let mut end = new.len();
    if !last {
        // Back up to the start of a trailing multi-byte character that is not complete yet.
        for back in 1..=3.min(end) {
            let b = new[end - back];
            if b & 0xC0 == 0x80 {
                continue;
            }
            let need = match b {
                0xC0..=0xDF => 2,
                0xE0..=0xEF => 3,
                0xF0..=0xF7 => 4,
                _ => 1,
            };
            if need > back {
                end -= back;
            }
            break;
        }
    }
    *seen += end;
    String::from_utf8_lossy(&new[..end]).into_owned()
}

pub struct Daytona {
    http: Rc<dyn HttpClient>,
    clock: Rc<dyn Clock>,
    api_url: String,
    api_key: String,
    source: SandboxSource,
}

/// Waits for `fut` at most `ms` milliseconds.
pub async fn with_timeout<T>(
    clock: &dyn Clock,
    ms: u64,
    fut: impl std::future::Future<Output = T>,
) -> Option<T> {
    let fut = std::pin::pin!(fut);
    let sleep = clock.sleep_ms(ms);
    match select(fut, sleep).await {
        Either::Left((v, _)) => Some(v),
        Either::Right(_) => None,
    }
}

/// The provider's message from an error body, for logs only.
fn message(body: &[u8]) -> String {
    let text = serde_json::from_slice::<Value>(body)
        .ok()
        .and_then(|v| {
            v.get("message")
                .map(|m| match m {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                })
                .or_else(|| v.get("error").map(ToString::to_string))
        })
        .unwrap_or_else(|| String::from_utf8_lossy(body).into_owned());
    text.chars().take(300).collect()
}

fn ms_of(v: Option<&Value>) -> Option<i64> {
    chrono::DateTime::parse_from_rfc3339(v?.as_str()?)
        .ok()
        .map(|d| d.timestamp_millis())
}

/// A `Sandbox` object of Daytona's API (unknown fields ignored).
pub fn parse_sandbox(v: &Value) -> Option<Remote> {
    let id = v.get("id")?.as_str()?.to_owned();
    let raw = v.get("state").and_then(Value::as_str).unwrap_or("unknown");
    Some(Remote {
        id,
        // An unknown state: treat it as still on its way somewhere.
        state: State::from_daytona(raw).unwrap_or(State::Starting),
        error: v
            .get("errorReason")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .map(str::to_owned),
        toolbox_url: v
            .get("toolboxProxyUrl")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .map(|s| s.trim_end_matches('/').to_owned()),
        last_activity_ms: ms_of(v.get("lastActivityAt")),
        project: v
            .get("labels")
            .and_then(|l| l.get("everjust_project"))
            .and_then(Value::as_str)
            .map(str::to_owned),
    })
}

/// One page of `GET /sandbox`: `{items, nextCursor}` since May 2026, a
/// plain array before. Returns the sandboxes and the next cursor.
pub fn parse_list(v: &Value) -> Option<(Vec<Remote>, Option<String>)> {
    let (items, next) = match v {
        Value::Array(items) => (items, None),
        Value::Object(o) => (
            o.get("items")?.as_array()?,
            o.get("nextCursor")
                .and_then(Value::as_str)
                .filter(|c| !c.is_empty())
                .map(str::to_owned),
        ),
        _ => return None,
    };
    Some((items.iter().filter_map(parse_sandbox).collect(), next))
}

/// A `multipart/form-data` body for the toolbox's bulk upload
/// (`files[i].path` then `files[i].file` per file). Returns the content type
/// and the body.
pub fn multipart(files: &[Upload]) -> (String, Vec<u8>) {
    let mut h = Sha256::new();
    for f in files {
        h.update(f.path.as_bytes());
        h.update(&f.content);
    }
    let digest = h.finalize();
    let boundary = format!("everjust{}", crate::projects::handlers::hex(&digest[..12]));
    let mut body = Vec::new();
    for (i, f) in files.iter().enumerate() {
        body.extend_from_slice(
            format!(
                "--{boundary}\r\nContent-Disposition: form-data; name=\"files[{i}].path\"\r\n\r\n{}\r\n",
                f.path
            )
            .as_bytes(),
        );
        let filename = f.path.replace(['"', '\r', '\n'], "_");
        body.extend_from_slice(
            format!(
                "--{boundary}\r\nContent-Disposition: form-data; name=\"files[{i}].file\"; filename=\"{filename}\"\r\nContent-Type: application/octet-stream\r\n\r\n"
            )
            .as_bytes(),
        );
        body.extend_from_slice(&f.content);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    (format!("multipart/form-data; boundary={boundary}"), body)
}

/// Files cut into upload requests of bounded size.
pub fn batches(files: &[Upload]) -> Vec<&[Upload]> {
    let mut out = Vec::new();
    let (mut start, mut bytes) = (0, 0);
    for (i, f) in files.iter().enumerate() {
        if i > start
            && (bytes + f.content.len() > UPLOAD_BATCH_BYTES || i - start >= UPLOAD_BATCH_FILES)
        {
            out.push(&files[start..i]);
            start = i;
            bytes = 0;
        }
        bytes += f.content.len();
    }
    if start < files.len() {
        out.push(&files[start..]);
    }
    out
}

/// The body of `POST /sandbox`. Daytona sizes a sandbox made from a
/// snapshot (named, or its default one) by the snapshot and refuses
/// resources with it, so only an image, built on create from a one-line
/// Dockerfile (`buildInfo`), carries the tier's CPU, memory and disk.
pub fn create_body(spec: &CreateSpec, source: &SandboxSource) -> Value {
    let labels: serde_json::Map<String, Value> = spec
        .labels
        .iter()
        .map(|(k, v)| (k.clone(), Value::String(v.clone())))
        .collect();
    let mut body = json!({
        "name": spec.name,
        "labels": labels,
        "public": false,
        "autoStopInterval": spec.auto_stop_minutes,
        "autoArchiveInterval": spec.auto_archive_minutes,
    });
    match source {
        SandboxSource::Default => {}
        SandboxSource::Snapshot(s) => body["snapshot"] = Value::String(s.clone()),
        SandboxSource::Image(image) => {
            body["buildInfo"] = json!({
                "dockerfileContent": format!("FROM {image}\n"),
                "contextHashes": [],
            });
            body["cpu"] = spec.resources.cpu.into();
            body["memory"] = spec.resources.memory_gib.into();
            body["disk"] = spec.resources.disk_gib.into();
        }
    }
    body
}

struct Call<'a> {
    method: Method,
    url: String,
    body: Option<(&'a str, Bytes)>,
    timeout_ms: u64,
    /// Safe to send again after an outage.
    retry: bool,
}

impl Call<'_> {
    fn new(method: Method, url: String) -> Self {
        Call {
            method,
            url,
            body: None,
            timeout_ms: CALL_TIMEOUT_MS,
            retry: true,
        }
    }
    fn json(mut self, v: &Value) -> Self {
        self.body = Some(("application/json", Bytes::from(v.to_string())));
        self
    }
}

impl Daytona {
    pub fn new(http: Rc<dyn HttpClient>, clock: Rc<dyn Clock>, config: &DaytonaConfig) -> Self {
        Daytona {
            http,
            clock,
            api_url: config.api_url.trim_end_matches('/').to_owned(),
            api_key: config.api_key.clone(),
            source: config.source.clone(),
        }
    }

    fn api(&self, path: &str) -> String {
        format!("{}{path}", self.api_url)
    }

    fn toolbox(&self, h: Handle<'_>, path: &str) -> String {
        match h.toolbox_url {
            Some(base) => format!("{}/{}{path}", base.trim_end_matches('/'), enc(h.id)),
            // The older route through the API itself.
            None => format!("{}/toolbox/{}/toolbox{path}", self.api_url, enc(h.id)),
        }
    }

    /// One call, retried when it is safe; returns the status and body of a
    /// 2xx (and of a 408 for the caller to read), else the error.
    async fn send(&self, call: Call<'_>) -> Result<(StatusCode, Bytes), ProviderError> {
        let attempts = if call.retry { ATTEMPTS } else { 1 };
        let mut last = ProviderError::Unavailable("no attempt".into());
        for attempt in 0..attempts {
            if attempt > 0 {
                let wait = match &last {
                    ProviderError::Unavailable(_) => BACKOFF_MS * 4u64.pow(attempt - 1),
                    _ => break,
                };
                self.clock.sleep_ms(wait).await;
            }
            let mut b = http::Request::builder()
                .method(call.method.clone())
                .uri(&call.url)
                .header("authorization", format!("Bearer {}", self.api_key))
                .header("accept", "application/json");
            let body = match &call.body {
                Some((ct, bytes)) => {
                    b = b.header("content-type", *ct);
                    bytes.clone()
                }
                None => Bytes::new(),
            };
            let req = b
                .body(body)
                .map_err(|e| ProviderError::Rejected(0, format!("bad request: {e}")))?;
            let res = match with_timeout(self.clock.as_ref(), call.timeout_ms, self.http.send(req))
                .await
            {
                None => {
                    last = ProviderError::Unavailable(format!(
                        "{} {} timed out after {} ms",
                        call.method, call.url, call.timeout_ms
                    ));
                    continue;
                }
                Some(Err(e)) => {
                    last = ProviderError::Unavailable(format!("{} {}: {e}", call.method, call.url));
                    continue;
                }
                Some(Ok(res)) => res,
            };
            let status = res.status();
            if status.is_success() || status == StatusCode::REQUEST_TIMEOUT {
                return Ok((status, res.into_body()));
            }
            let msg = message(res.body());
            last = match status.as_u16() {
                404 => ProviderError::NotFound,
                409 => ProviderError::Conflict(msg),
                429 | 500..=599 => ProviderError::Unavailable(format!(
                    "{} {}: {status} {msg}",
                    call.method, call.url
                )),
                s => ProviderError::Rejected(s, msg),
            };
        }
        Err(last)
    }

    async fn sandbox_call(&self, call: Call<'_>) -> Result<Remote, ProviderError> {
        let (_, body) = self.send(call).await?;
        let v: Value = serde_json::from_slice(&body)
            .map_err(|e| ProviderError::Unavailable(format!("sandbox body is not JSON: {e}")))?;
        parse_sandbox(&v).ok_or_else(|| ProviderError::Unavailable("sandbox body has no id".into()))
    }

    /// Starts the command in its session and relays its log until it exits
    /// or runs over its time limit.
    async fn follow(
        &self,
        h: Handle<'_>,
        spec: &ExecSpec,
        on_output: &mut dyn for<'t> FnMut(&'t str),
    ) -> Result<ExecResult, ProviderError> {
        let session = format!("/process/session/{}", enc(&spec.session));
        let mut call =
            Call::new(Method::POST, self.toolbox(h, &format!("{session}/exec"))).json(&json!({
                "command": session_command(&spec.cwd, &spec.command),
                "runAsync": true,
            }));
        // Running a command twice is not safe.
        call.retry = false;
        let (_, body) = self.send(call).await?;
        let v: Value = serde_json::from_slice(&body).map_err(|e| {
            ProviderError::Unavailable(format!("session exec body is not JSON: {e}"))
        })?;
        let cmd = v
            .get("cmdId")
            .and_then(Value::as_str)
            .ok_or_else(|| ProviderError::Unavailable("session exec body has no cmdId".into()))?;
        let command_url = self.toolbox(h, &format!("{session}/command/{}", enc(cmd)));
        let logs_url = format!("{command_url}/logs");
        let started = self.clock.now_ms();
        let limit_ms = i64::from(spec.timeout_secs) * 1000;
        let mut seen = 0usize;
        loop {
            let (_, body) = self
                .send(Call::new(Method::GET, command_url.clone()))
                .await?;
            let exit_code = serde_json::from_slice::<Value>(&body)
                .ok()
                .and_then(|v| v.get("exitCode").and_then(Value::as_i64));
            let elapsed = self.clock.now_ms() - started;
            let over = elapsed >= limit_ms;
            let (_, log) = self.send(Call::new(Method::GET, logs_url.clone())).await?;
            let text = log_delta(&log, &mut seen, exit_code.is_some() || over);
            if !text.is_empty() {
                on_output(&text);
            }
            if let Some(exit_code) = exit_code {
                return Ok(ExecResult {
                    exit_code,
                    output: String::new(),
                    timed_out: false,
                });
            }
            if over {
                // Deleting the session (by the caller) kills the command.
                return Ok(ExecResult {
                    exit_code: 124,
                    output: String::new(),
                    timed_out: true,
                });
            }
            let wait = poll_ms(elapsed, seen).min(u64::try_from(limit_ms - elapsed).unwrap_or(0));
            self.clock.sleep_ms(wait.max(1)).await;
        }
    }

    async fn action(&self, id: &str, action: &str) -> Result<(), ProviderError> {
        self.send(Call::new(
            Method::POST,
            self.api(&format!("/sandbox/{}/{action}", enc(id))),
        ))
        .await
        .map(|_| ())
    }
}

#[async_trait::async_trait(?Send)]
impl SandboxProvider for Daytona {
    fn name(&self) -> &'static str {
        "daytona"
    }

    async fn create(&self, spec: &CreateSpec) -> Result<Remote, ProviderError> {
        let body = create_body(spec, &self.source);
        let created = self
            .sandbox_call(Call::new(Method::POST, self.api("/sandbox")).json(&body))
            .await;
        match created {
            // A retry after a lost answer, or a second starter: the name is taken by our sandbox.
            Err(ProviderError::Conflict(_)) => self.get(&spec.name).await,
            other => other,
        }
    }

    async fn get(&self, id: &str) -> Result<Remote, ProviderError> {
        self.sandbox_call(Call::new(
            Method::GET,
            self.api(&format!("/sandbox/{}", enc(id))),
        ))
        .await
    }

    async fn start(&self, id: &str) -> Result<(), ProviderError> {
        self.action(id, "start").await
    }

    async fn stop(&self, id: &str) -> Result<(), ProviderError> {
        self.action(id, "stop").await
    }

    async fn archive(&self, id: &str) -> Result<(), ProviderError> {
        self.action(id, "archive").await
    }

    async fn destroy(&self, id: &str) -> Result<(), ProviderError> {
        match self
            .send(Call::new(
                Method::DELETE,
                self.api(&format!("/sandbox/{}", enc(id))),
            ))
            .await
        {
            Ok(_) | Err(ProviderError::NotFound) => Ok(()),
            Err(e) => Err(e),
        }
    }

    async fn keep_alive(&self, id: &str) -> Result<(), ProviderError> {
        self.action(id, "last-activity").await
    }

    async fn set_auto_stop(&self, id: &str, minutes: i64) -> Result<(), ProviderError> {
        self.action(id, &format!("autostop/{minutes}")).await
    }

    async fn list(&self, labels: &[(String, String)]) -> Result<Vec<Remote>, ProviderError> {
        let filter: serde_json::Map<String, Value> = labels
            .iter()
            .map(|(k, v)| (k.clone(), Value::String(v.clone())))
            .collect();
        let filter = enc(&Value::Object(filter).to_string());
        let mut out = Vec::new();
        let mut cursor: Option<String> = None;
        for _ in 0..LIST_PAGES {
            let mut url = self.api(&format!("/sandbox?labels={filter}&limit=100"));
            if let Some(c) = &cursor {
                url.push_str(&format!("&cursor={}", enc(c)));
            }
            let (_, body) = self.send(Call::new(Method::GET, url)).await?;
            let v: Value = serde_json::from_slice(&body)
                .map_err(|e| ProviderError::Unavailable(format!("list body is not JSON: {e}")))?;
            let (items, next) = parse_list(&v)
                .ok_or_else(|| ProviderError::Unavailable("list body has no items".into()))?;
            out.extend(items);
            match next {
                Some(n) if cursor.as_deref() != Some(n.as_str()) => cursor = Some(n),
                _ => break,
            }
        }
        Ok(out)
    }

    async fn upload(&self, h: Handle<'_>, files: &[Upload]) -> Result<(), ProviderError> {
        for batch in batches(files) {
            let (ct, body) = multipart(batch);
            let mut call = Call::new(Method::POST, self.toolbox(h, "/files/bulk-upload"));
            call.body = Some((ct.as_str(), Bytes::from(body)));
            call.timeout_ms = UPLOAD_TIMEOUT_MS;
            self.send(call).await?;
        }
        Ok(())
    }

    async fn remove(&self, h: Handle<'_>, path: &str) -> Result<(), ProviderError> {
        let url = self.toolbox(h, &format!("/files?path={}", enc(path)));
        match self.send(Call::new(Method::DELETE, url)).await {
            Ok(_) | Err(ProviderError::NotFound) => Ok(()),
            Err(e) => Err(e),
        }
    }

    async fn make_dir(&self, h: Handle<'_>, path: &str) -> Result<(), ProviderError> {
        let url = self.toolbox(h, &format!("/files/folder?path={}&mode=755", enc(path)));
        match self.send(Call::new(Method::POST, url)).await {
            // Already there.
            Ok(_) | Err(ProviderError::Conflict(_)) => Ok(()),
            Err(e) => Err(e),
        }
    }

    async fn exec(&self, h: Handle<'_>, spec: &ExecSpec) -> Result<ExecResult, ProviderError> {
        let mut call = Call::new(Method::POST, self.toolbox(h, "/process/execute")).json(&json!({
            "command": spec.command,
            "cwd": spec.cwd,
            "timeout": spec.timeout_secs,
        }));
        // Running a command twice is not safe.
        call.retry = false;
        call.timeout_ms = u64::from(spec.timeout_secs) * 1000 + EXEC_GRACE_MS;
        let (status, body) = self.send(call).await?;
        if status == StatusCode::REQUEST_TIMEOUT {
            return Ok(ExecResult {
                exit_code: 124,
                output: String::new(),
                timed_out: true,
            });
        }
        let v: Value = serde_json::from_slice(&body)
            .map_err(|e| ProviderError::Unavailable(format!("execute body is not JSON: {e}")))?;
        Ok(ExecResult {
            exit_code: v
                .get("exitCode")
                .or_else(|| v.get("code"))
                .and_then(Value::as_i64)
                .unwrap_or(-1),
            output: v
                .get("result")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_owned(),
            timed_out: false,
        })
    }

    /// In a process session of its own: the command runs asynchronously,
    /// its status and log are read every `POLL_MS`, and the session is
    /// deleted at the end, which also kills a command over its time limit.
    async fn exec_streaming(
        &self,
        h: Handle<'_>,
        spec: &ExecSpec,
        on_output: &mut dyn for<'t> FnMut(&'t str),
    ) -> Result<ExecResult, ProviderError> {
        let created = self
            .send(
                Call::new(Method::POST, self.toolbox(h, "/process/session"))
                    .json(&json!({ "sessionId": spec.session })),
            )
            .await;
        match created {
            // A retry after a lost answer.
            Ok(_) | Err(ProviderError::Conflict(_)) => {}
            Err(e) => return Err(e),
        }
        let result = self.follow(h, spec, on_output).await;
        let session = self.toolbox(h, &format!("/process/session/{}", enc(&spec.session)));
        match self.send(Call::new(Method::DELETE, session)).await {
            Ok(_) | Err(ProviderError::NotFound) => {}
            Err(e) => crate::log::event(
                "warn",
                "sandbox_session_delete_failed",
                json!({ "sandbox": h.id, "session": spec.session, "error": e.to_string() }),
            ),
        }
        result
    }

    async fn preview(&self, id: &str, port: u16) -> Result<Preview, ProviderError> {
        // A signed URL carries its token, so a browser frame can load it.
        let signed = self
            .send(Call::new(
                Method::GET,
                self.api(&format!(
                    "/sandbox/{}/ports/{port}/signed-preview-url?expiresInSeconds={PREVIEW_TTL_SECS}",
                    enc(id)
                )),
            ))
            .await;
        let (signed, body) = match signed {
            Ok((_, body)) => (true, body),
            Err(ProviderError::NotFound | ProviderError::Rejected(..)) => {
                let (_, body) = self
                    .send(Call::new(
                        Method::GET,
                        self.api(&format!("/sandbox/{}/ports/{port}/preview-url", enc(id))),
                    ))
                    .await?;
                (false, body)
            }
            Err(e) => return Err(e),
        };
        let v: Value = serde_json::from_slice(&body)
            .map_err(|e| ProviderError::Unavailable(format!("preview body is not JSON: {e}")))?;
        let url = v
            .get("url")
            .and_then(Value::as_str)
            .ok_or_else(|| ProviderError::Unavailable("preview body has no url".into()))?
            .to_owned();
        let token = v.get("token").and_then(Value::as_str).map(str::to_owned);
        Ok(if signed {
            Preview {
                url,
                token: None,
                expires_ms: Some(self.clock.now_ms() + PREVIEW_TTL_SECS * 1000),
            }
        } else {
            Preview {
                url,
                token,
                expires_ms: None,
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> CreateSpec {
        CreateSpec {
            name: "ej-p1-0".into(),
            labels: vec![("everjust_project".into(), "p1".into())],
            auto_stop_minutes: 12,
            auto_archive_minutes: 1440,
            resources: super::super::provider::Resources {
                cpu: 2,
                memory_gib: 4,
                disk_gib: 10,
            },
        }
    }

    #[test]
    fn an_image_is_built_with_the_tiers_resources() {
        let body = create_body(&spec(), &SandboxSource::Image("node:22-bookworm".into()));
        assert_eq!(
            body["buildInfo"]["dockerfileContent"],
            "FROM node:22-bookworm\n"
        );
        assert_eq!(
            (&body["cpu"], &body["memory"], &body["disk"]),
            (&json!(2), &json!(4), &json!(10))
        );
        assert!(body.get("snapshot").is_none());
        assert_eq!(body["labels"]["everjust_project"], "p1");
    }

    #[test]
    fn a_snapshot_brings_its_own_resources() {
        for source in [
            SandboxSource::Snapshot("everjust-node".into()),
            SandboxSource::Default,
        ] {
            let body = create_body(&spec(), &source);
            for field in ["cpu", "memory", "disk", "gpu", "buildInfo"] {
                assert!(body.get(field).is_none(), "{field} with {source:?}");
            }
            assert_eq!(body["autoStopInterval"], 12);
        }
        let body = create_body(&spec(), &SandboxSource::Snapshot("everjust-node".into()));
        assert_eq!(body["snapshot"], "everjust-node");
    }

    #[test]
    fn both_list_shapes_are_read() {
        let item = json!({"id": "sb1", "state": "started", "toolboxProxyUrl": "https://proxy.example/toolbox/"});
        let (old, next) = parse_list(&json!([item.clone()])).expect("array");
        assert_eq!((old.len(), next), (1, None));
        let (new, next) =
            parse_list(&json!({"items": [item], "nextCursor": "c2"})).expect("object");
        assert_eq!(
            new[0].toolbox_url.as_deref(),
            Some("https://proxy.example/toolbox")
        );
        assert_eq!(next.as_deref(), Some("c2"));
        let (_, next) = parse_list(&json!({"items": [], "nextCursor": null})).expect("end");
        assert_eq!(next, None);
        assert!(parse_list(&json!("nope")).is_none());
    }

    #[test]
    fn a_sandbox_in_an_unknown_state_is_treated_as_changing() {
        let r = parse_sandbox(
            &json!({"id": "x", "state": "warping", "lastActivityAt": "2026-05-01T10:00:00.000Z"}),
        )
        .expect("sandbox");
        assert_eq!(r.state, State::Starting);
        assert_eq!(r.last_activity_ms, Some(1_777_629_600_000));
    }

    #[test]
    fn log_deltas_wait_for_whole_characters() {
        let log = "ab\u{e9}c".as_bytes();
        let mut seen = 0;
        assert_eq!(log_delta(&log[..3], &mut seen, false), "ab");
        assert_eq!(seen, 2);
        assert_eq!(log_delta(&log[..3], &mut seen, false), "");
        assert_eq!(log_delta(log, &mut seen, false), "\u{e9}c");
        assert_eq!(seen, log.len());
        assert_eq!(log_delta(b"x", &mut seen, true), "");
        let mut seen = 0;
        assert_eq!(log_delta(&log[..3], &mut seen, true), "ab\u{fffd}");
    }

    #[test]
    fn commands_are_read_often_at_first_then_less() {
        assert_eq!(poll_ms(0, 0), 250);
        assert_eq!(poll_ms(10_000, 0), 1_000);
        assert_eq!(poll_ms(10_000, 2 * BIG_LOG_BYTES), 2_000);
        assert_eq!(poll_ms(300_000, 0), 3_000);
    }

    #[test]
    fn session_commands_run_in_their_directory_in_a_subshell() {
        assert_eq!(
            session_command("/home/daytona/project/it's", "ls; exit 3"),
            "cd '/home/daytona/project/it'\\''s' && (\nls; exit 3\n)"
        );
    }

    #[test]
    fn multipart_bodies_name_each_file_and_its_path() {
        let files = vec![
            Upload {
                path: "/p/a.txt".into(),
                content: b"alpha".to_vec(),
            },
            Upload {
                path: "/p/b/c.bin".into(),
                content: vec![0, 1, 2],
            },
        ];
        let (ct, body) = multipart(&files);
        let boundary = ct.split("boundary=").nth(1).expect("boundary");
        let text = String::from_utf8_lossy(&body);
        assert!(text.contains("name=\"files[0].path\"\r\n\r\n/p/a.txt\r\n"));
        assert!(text.contains("name=\"files[1].file\"; filename=\"/p/b/c.bin\""));
        assert!(text.ends_with(&format!("--{boundary}--\r\n")));
        assert_eq!(text.matches(&format!("--{boundary}\r\n")).count(), 4);
    }

    #[test]
    fn uploads_are_cut_into_bounded_batches() {
        let big = |n: usize| Upload {
            path: format!("/p/{n}"),
            content: vec![0; 3 * 1024 * 1024],
        };
        let files = vec![big(0), big(1), big(2)];
        assert_eq!(
            batches(&files).iter().map(|b| b.len()).collect::<Vec<_>>(),
            vec![1, 1, 1]
        );
        let small: Vec<Upload> = (0..450)
            .map(|n| Upload {
                path: format!("/p/{n}"),
                content: vec![1; 10],
            })
            .collect();
        assert_eq!(
            batches(&small).iter().map(|b| b.len()).collect::<Vec<_>>(),
            vec![200, 200, 50]
        );
        assert!(batches(&[]).is_empty());
    }
}
