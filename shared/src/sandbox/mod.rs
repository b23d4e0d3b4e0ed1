//! Sandboxes per project: the `static` provider (the project's files served
//! as a preview; no commands) and Daytona. The project store is the truth;
//! a sandbox is a cache of it. This module holds the routes; the work is in
//! `lifecycle` (start, stop, state), `sync` (files), `exec` (commands),
//! `webhook` (provider events) and `idle` (the scheduled job).

pub mod daytona;
pub mod exec;
pub mod idle;
pub mod lifecycle;
pub mod provider;
pub mod store;
pub mod sync;
pub mod webhook;

use bytes::Bytes;
use futures_channel::mpsc::UnboundedReceiver;
use futures_util::future::{select, Either, LocalBoxFuture};
use futures_util::StreamExt;
use http::{HeaderValue, StatusCode};
use serde_json::{json, Value};

use crate::auth::{authenticate, Caller};
use crate::billing::tiers::Limits;
use crate::chat::tools::ToolOutcome;
use crate::db::projects::{self, Project};
use crate::error::{ApiError, ApiResult};
use crate::http::body::Body;
use crate::http::request::{json_body, query_param, Request};
use crate::http::response::{json as json_response, no_content, ok, Response};
use crate::pagination::rfc3339;
use crate::ports::Ports;
use crate::routes::Ctx;

use exec::{ExecOutcome, ExecRequest};
use lifecycle::Lifecycle;
use provider::State;
use store::SandboxRow;

/// How long `POST .../sandbox` waits for a start by default (`?wait=` seconds, at most this).
const MAX_WAIT_SECS: u64 = 25;
/// Keep-alive comments of a streamed exec, so proxies keep the stream open.
const KEEPALIVE_MS: u64 = 15_000;

async fn own_project(ctx: &Ctx<'_>, req: &Request) -> ApiResult<(Caller, Project)> {
    let caller = authenticate(ctx, req).await?;
    let project = projects::get(ctx.ports.sql.as_ref(), caller.id(), ctx.params.get("id"))
        .await?
        .ok_or_else(|| ApiError::not_found("project"))?;
    Ok((caller, project))
}

/// What GET /v1/projects/{id}/sandbox answers for the static provider.
fn static_view(ctx: &Ctx<'_>, project: &str) -> ApiResult<Value> {
    Ok(json!({
        "provider": "static",
        "state": "started",
        "preview_url": crate::projects::preview::url(ctx, project)?,
        "commands": false,
    }))
}

/// The sandbox as the API shows it. `preview_url` is the sandbox's own
/// preview while it runs, else the static preview of the files
/// (`static_preview_url` is always there).
async fn view(
    ctx: &Ctx<'_>,
    lc: &Lifecycle<'_>,
    project: &str,
    row: Option<&SandboxRow>,
    restoring: bool,
    port: Option<u16>,
) -> ApiResult<Value> {
    let static_url = crate::projects::preview::url(ctx, project)?;
    let Some(row) = row else {
        return Ok(json!({
            "provider": lc.provider.name(),
            "state": State::None.as_str(),
            "preview_url": static_url,
            "static_preview_url": static_url,
            "sandbox_preview": false,
            "commands": true,
        }));
    };
    let port = port.unwrap_or(lc.preview_port);
    let preview = match lc.preview_of(row, port).await {
        Ok(p) => p,
        Err(e) => {
            crate::log::event(
                "warn",
                "sandbox_preview_failed",
                json!({ "project": project, "error": e.to_string() }),
            );
            None
        }
    };
    let mut doc = json!({
        "provider": lc.provider.name(),
        "state": row.state.as_str(),
        "preview_url": preview.as_ref().map_or(static_url.as_str(), |p| p.0.as_str()),
        "static_preview_url": static_url,
        "sandbox_preview": preview.is_some(),
        "preview_port": port,
        "commands": true,
        "restoring": restoring || row.state == State::Restoring,
        "idle_stop_minutes": row.idle_minutes,
        "last_activity_at": rfc3339(row.last_activity_ms),
        "created_at": rfc3339(row.created_ms),
        "updated_at": rfc3339(row.updated_ms),
    });
    if let Some((_, Some(token))) = &preview {
        doc["preview_token"] = Value::String(token.clone());
        doc["preview_token_header"] = Value::String("x-daytona-preview-token".into());
    }
    if row.state == State::Started {
        if let Some(due) = row.due_ms {
            doc["stops_at"] = Value::String(rfc3339(due));
        }
    }
    if row.state == State::Error {
        doc["error"] = Value::String(
            row.error
                .as_deref()
                .unwrap_or("The sandbox failed.")
                .chars()
                .take(300)
                .collect(),
        );
        doc["message"] = "Starting the sandbox again replaces it with a fresh one.".into();
    } else if restoring || row.state == State::Restoring {
        doc["message"] =
            "The sandbox is being restored from its archive; this takes longer than a normal start."
                .into();
    }
    Ok(doc)
}

fn wait_ms(req: &Request) -> ApiResult<u64> {
    match query_param(req, "wait") {
        None => Ok(MAX_WAIT_SECS * 1000),
        Some(v) => v
            .parse::<u64>()
            .ok()
            .filter(|s| *s <= MAX_WAIT_SECS)
            .map(|s| s * 1000)
            .ok_or_else(|| {
                ApiError::bad_request(
                    "invalid_wait",
                    format!("wait is a number of seconds from 0 to {MAX_WAIT_SECS}."),
                )
            }),
    }
}

/// `POST /v1/projects/{id}/sandbox`: creates or starts the sandbox and
/// uploads the files that changed. 200 when it runs, 202 (with
/// Retry-After) while it is still starting.
pub async fn create(ctx: &Ctx<'_>, req: &Request) -> ApiResult<Response> {
    let (caller, project) = own_project(ctx, req).await?;
    let Some(lc) = Lifecycle::new(ctx.ports)? else {
        return Ok(ok(&static_view(ctx, &project.id)?));
    };
    let wait = wait_ms(req)?;
    let limits = caller.user.limits();
    let started = lc.start(caller.id(), &project.id, &limits, wait).await?;
    let mut doc = view(
        ctx,
        &lc,
        &project.id,
        Some(&started.row),
        started.restoring,
        None,
    )
    .await?;
    if let Some(s) = started.synced {
        doc["uploaded_files"] = s.uploaded.into();
        doc["removed_files"] = s.removed.into();
    }
    if started.row.state == State::Started {
        touch(ctx.ports, &project.id).await;
        return Ok(ok(&doc));
    }
    let mut res = json_response(StatusCode::ACCEPTED, &doc);
    res.headers_mut()
        .insert(http::header::RETRY_AFTER, HeaderValue::from(3u32));
    Ok(res)
}

/// The lowest port a preview link may be asked for (below are system ports).
const MIN_PREVIEW_PORT: u16 = 1024;

/// `?port=N`: a port from 1024 to 65535.
fn port_param(req: &Request) -> ApiResult<Option<u16>> {
    let Some(v) = query_param(req, "port") else {
        return Ok(None);
    };
    v.parse::<u16>()
        .ok()
        .filter(|p| *p >= MIN_PREVIEW_PORT)
        .map(Some)
        .ok_or_else(|| {
            ApiError::bad_request(
                "invalid_port",
                format!("port is a number from {MIN_PREVIEW_PORT} to 65535."),
            )
        })
}

/// `GET /v1/projects/{id}/sandbox[?port=N]`: state and preview link (of
/// the app's port, or of port N); a sandbox that is changing state is
/// looked up at the provider.
pub async fn get(ctx: &Ctx<'_>, req: &Request) -> ApiResult<Response> {
    let (_, project) = own_project(ctx, req).await?;
    let port = port_param(req)?;
    let Some(lc) = Lifecycle::new(ctx.ports)? else {
        return Ok(ok(&static_view(ctx, &project.id)?));
    };
    let row = match lc.load(&project.id).await? {
        Some(row) => Some(lc.refresh(row).await?),
        None => None,
    };
    Ok(ok(
        &view(ctx, &lc, &project.id, row.as_ref(), false, port).await?
    ))
}

/// `DELETE /v1/projects/{id}/sandbox[?archive=true]`: stops (or archives)
/// the sandbox; 202, it finishes on its own.
pub async fn delete(ctx: &Ctx<'_>, req: &Request) -> ApiResult<Response> {
    let (_, project) = own_project(ctx, req).await?;
    let Some(lc) = Lifecycle::new(ctx.ports)? else {
        return Ok(no_content());
    };
    let archive = match query_param(req, "archive").as_deref() {
        None | Some("false" | "0") => false,
        Some("true" | "1") => true,
        Some(_) => {
            return Err(ApiError::bad_request(
                "invalid_archive",
                "archive is true or false.",
            ))
        }
    };
    let row = lc.stop(&project.id, archive).await?;
    Ok(json_response(
        StatusCode::ACCEPTED,
        &view(ctx, &lc, &project.id, row.as_ref(), false, None).await?,
    ))
}

fn wants_stream(req: &Request) -> bool {
    req.headers()
        .get(http::header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| {
            a.split(',')
                .any(|t| t.trim().starts_with("text/event-stream"))
        })
}

fn sse(event: &str, data: &Value) -> Bytes {
    Bytes::from(format!("event: {event}\ndata: {data}\n\n"))
}

fn outcome_events(result: ApiResult<ExecOutcome>) -> Bytes {
    match result {
        Ok(o) => sse(
            "exit",
            &json!({
                "exit_code": o.exit_code, "timed_out": o.timed_out, "truncated": o.truncated,
                "timeout_secs": o.timeout_secs, "duration_ms": o.duration_ms, "uploaded_files": o.uploaded_files,
            }),
        ),
        Err(e) => sse(
            "error",
            &json!({ "status": e.status.as_u16(), "code": e.code, "detail": e.detail, "retry_after": e.retry_after }),
        ),
    }
}

/// The events of a streamed exec after `start`: output as it comes,
/// keep-alive comments while nothing does, then `exit` (or `error`).
struct ExecStream {
    work: Option<LocalBoxFuture<'static, ApiResult<ExecOutcome>>>,
    output: UnboundedReceiver<String>,
    last: Option<Bytes>,
}

/// `POST /v1/projects/{id}/sandbox/exec {command, cwd?, timeout_secs?}`:
/// runs a command (starting the sandbox when needed). JSON by default;
/// with `Accept: text/event-stream`, events `start`, then `output` events
/// as the command's output grows (keep-alive comments while none comes),
/// then `exit` (or `error`).
pub async fn exec(ctx: &Ctx<'_>, req: &Request) -> ApiResult<Response> {
    let (caller, project) = own_project(ctx, req).await?;
    if Lifecycle::new(ctx.ports)?.is_none() {
        return Err(ApiError::conflict(
            "no_sandbox",
            "No sandbox provider is configured, so commands cannot run; the static preview serves the files.",
        ));
    }
    let body: ExecRequest = json_body(req)?;
    // Refused as problem+json, streamed or not.
    exec::check(&body)?;
    let limits = caller.user.limits();
    if !wants_stream(req) {
        let lc = Lifecycle::new(ctx.ports)?.ok_or_else(|| ApiError::internal("no provider"))?;
        let out = exec::run(&lc, caller.id(), &project.id, &limits, &body).await?;
        return Ok(ok(&out));
    }
    let ports = ctx.ports.clone();
    let (owner, project_id) = (caller.id().to_owned(), project.id.clone());
    let start = sse(
        "start",
        &json!({ "command": body.command, "timeout_secs": exec::time_limit(&limits, body.timeout_secs) }),
    );
    let clock = ctx.ports.clock.clone();
    let (tx, rx) = futures_channel::mpsc::unbounded::<String>();
    let work: LocalBoxFuture<'static, ApiResult<ExecOutcome>> = Box::pin(async move {
        let lc = Lifecycle::new(&ports)?.ok_or_else(|| ApiError::internal("no provider"))?;
        let mut sink = |text: String| {
            let _ = tx.unbounded_send(text);
        };
        exec::run_streaming(&lc, &owner, &project_id, &limits, &body, &mut sink).await
    });
    let state = ExecStream {
        work: Some(work),
        output: rx,
        last: None,
    };
    let rest = futures_util::stream::unfold(Some(state), move |state| {
        let clock = clock.clone();
        async move {
            let mut st = state?;
            loop {
                let Some(work) = st.work.take() else {
                    // Done: what output is left, then the last event.
                    return match st.output.next().await {
                        Some(text) => Some((sse("output", &json!({ "text": text })), Some(st))),
                        None => st.last.take().map(|last| (last, None)),
                    };
                };
                let tick = clock.sleep_ms(KEEPALIVE_MS);
                match select(work, select(st.output.next(), tick)).await {
                    Either::Left((result, _)) => st.last = Some(outcome_events(result)),
                    Either::Right((Either::Left((Some(text), _)), work)) => {
                        st.work = Some(work);
                        return Some((sse("output", &json!({ "text": text })), Some(st)));
                    }
                    // The sender lives as long as the work: it cannot end first.
                    Either::Right((Either::Left((None, _)), work)) => st.work = Some(work),
                    Either::Right((Either::Right(_), work)) => {
                        st.work = Some(work);
                        return Some((Bytes::from_static(b": running\n\n"), Some(st)));
                    }
                }
            }
        }
    });
    let stream = futures_util::stream::once(async move { start })
        .chain(rest)
        .boxed_local();
    let mut res = http::Response::new(Body::Stream(stream));
    let h = res.headers_mut();
    h.insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream; charset=utf-8"),
    );
    h.insert(
        http::header::CACHE_CONTROL,
        HeaderValue::from_static("no-cache, no-transform"),
    );
    h.insert("x-accel-buffering", HeaderValue::from_static("no"));
    Ok(res)
}

/// `POST /webhooks/daytona`.
pub async fn webhook(ctx: &Ctx<'_>, req: &Request) -> ApiResult<Response> {
    webhook::handle(ctx, req).await
}

/// `POST /v1/_jobs/sandbox-idle`.
pub async fn idle_job(ctx: &Ctx<'_>, req: &Request) -> ApiResult<Response> {
    idle::route(ctx, req).await
}

/// Records activity on the project's sandbox (chat, exec, preview hits):
/// moves its idle deadline, and at most once a minute refreshes the
/// provider's own idle timer after the response. Never fails the caller.
pub async fn touch(ports: &Ports, project: &str) {
    let Ok(config) = ports.config() else { return };
    if config.daytona.is_none() {
        return;
    }
    match store::touch(ports.sql.as_ref(), project, ports.clock.now_ms()).await {
        Ok(Some(t)) => {
            let owned = ports.clone();
            ports
                .after_response(Box::pin(async move {
                    if let Ok(provider::Selected::Remote(p)) = provider::select(&owned) {
                        if let Err(e) = p.keep_alive(&t.external_id).await {
                            crate::log::event(
                                "warn",
                                "sandbox_keepalive_failed",
                                json!({ "sandbox": t.external_id, "error": e.to_string() }),
                            );
                        }
                    }
                }))
                .await;
        }
        Ok(None) => {}
        Err(e) => crate::log::event(
            "warn",
            "sandbox_touch_failed",
            json!({ "project": project, "error": e.to_string() }),
        ),
    }
}

async fn owner_limits(ports: &Ports, owner: &str) -> ApiResult<Limits> {
    crate::db::users::by_id(ports.sql.as_ref(), owner)
        .await?
        .map(|u| u.limits())
        .ok_or_else(|| ApiError::not_found("user"))
}

/// The agent's `run_command` tool: the same path as the exec route; the
/// model reads the exit code and the (cut) output.
pub async fn run_command(ctx: &Ctx<'_>, owner: &str, project: &str, command: &str) -> ToolOutcome {
    let lc = match Lifecycle::new(ctx.ports) {
        Ok(Some(lc)) => lc,
        Ok(None) => {
            return ToolOutcome {
                output: "No sandbox is configured for this project, so commands cannot run. Write files instead; the static preview shows index.html.".into(),
                is_error: true,
                changed_files: false,
            }
        }
        Err(e) => return tool_error(&e),
    };
    let limits = match owner_limits(ctx.ports, owner).await {
        Ok(l) => l,
        Err(e) => return tool_error(&e),
    };
    let req = ExecRequest {
        command: command.to_owned(),
        cwd: None,
        timeout_secs: None,
    };
    match exec::run(&lc, owner, project, &limits, &req).await {
        Ok(o) => ToolOutcome {
            output: exec::for_model(&o),
            is_error: o.timed_out,
            changed_files: false,
        },
        Err(e) => tool_error(&e),
    }
}

fn tool_error(e: &ApiError) -> ToolOutcome {
    ToolOutcome {
        output: format!("The command did not run: {} ({})", e.detail, e.code),
        is_error: true,
        changed_files: false,
    }
}
