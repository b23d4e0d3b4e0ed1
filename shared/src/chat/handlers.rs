//! Chat routes: sessions, messages, sending a message (starting a run),
//! the event stream with resume, WebSocket tickets, and cancel.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use http::{HeaderValue, StatusCode};
use serde::Deserialize;

use super::agent::{resolve_provider, RunSpec};
use super::encode::Protocol;
use super::inline;
use crate::auth::{authenticate, authenticate_and};
use crate::db::chat as db;
use crate::db::{audit, projects};
use crate::error::{ApiError, ApiResult};
use crate::http::body::Body;
use crate::http::request::{json_body, query_param, Request};
use crate::http::response::{created, json, ok, Response};
use crate::ids;
use crate::pagination;
use crate::ports::rooms::{Member, RoomError};
use crate::routes::Ctx;

/// Longest user message, in bytes.
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024;
pub const TICKET_TTL_SECS: u64 = 60;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateSession {
    #[serde(default)]
    title: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SendMessage {
    content: String,
    #[serde(default)]
    provider: Option<String>,
}

async fn own_session(ctx: &Ctx<'_>, user_id: &str) -> ApiResult<db::Session> {
    db::session_of(ctx.ports.sql.as_ref(), user_id, ctx.params.get("id"))
        .await?
        .ok_or_else(|| ApiError::not_found("session"))
}

pub async fn create_session(ctx: &Ctx<'_>, req: &Request) -> ApiResult<Response> {
    let caller = authenticate(ctx, req).await?;
    let body: CreateSession = if req.body().is_empty() {
        CreateSession { title: None }
    } else {
        json_body(req)?
    };
    let title = body.title.unwrap_or_default();
    if title.chars().count() > 200 || title.chars().any(char::is_control) {
        return Err(ApiError::bad_request(
            "invalid_title",
            "A session title has at most 200 characters and no control characters.",
        ));
    }
    let sql = ctx.ports.sql.as_ref();
    let project = projects::get(sql, caller.id(), ctx.params.get("id"))
        .await?
        .ok_or_else(|| ApiError::not_found("project"))?;
    let session = db::insert_session(
        sql,
        &ids::new_id(ctx.ports, "ses"),
        &project.id,
        caller.id(),
        title.trim(),
    )
    .await?;
    // The first message usually follows at once: have its room made meanwhile.
    if let Some(rooms) = ctx.ports.rooms.clone() {
        let id = session.id.clone();
        ctx.ports
            .after_response(Box::pin(async move { rooms.prepare(&id).await }))
            .await;
    }
    Ok(created(&session))
}

pub async fn list_sessions(ctx: &Ctx<'_>, req: &Request) -> ApiResult<Response> {
    let caller = authenticate(ctx, req).await?;
    let page = pagination::page(req, 20, 100)?;
    let sql = ctx.ports.sql.as_ref();
    let project = projects::get(sql, caller.id(), ctx.params.get("id"))
        .await?
        .ok_or_else(|| ApiError::not_found("project"))?;
    let rows = db::sessions_page(sql, &project.id, page.after.as_deref(), page.limit + 1).await?;
    let (items, next) = pagination::finish(rows, page.limit, |s| s.id.clone());
    Ok(ok(
        &serde_json::json!({ "items": items, "next_cursor": next }),
    ))
}

pub async fn list_messages(ctx: &Ctx<'_>, req: &Request) -> ApiResult<Response> {
    let caller = authenticate(ctx, req).await?;
    let page = pagination::page(req, 50, 200)?;
    let session = own_session(ctx, caller.id()).await?;
    if ctx.ports.rooms.is_none() {
        inline::recover_stale(ctx.ports, &session.id, caller.id()).await?;
    }
    let rows = db::messages_page(
        ctx.ports.sql.as_ref(),
        &session.id,
        page.after.as_deref(),
        page.limit + 1,
    )
    .await?;
    let (items, next) = pagination::finish(rows, page.limit, |m| m.id.clone());
    Ok(ok(
        &serde_json::json!({ "items": items, "next_cursor": next }),
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

fn sse_response(protocol: Protocol, body: Body) -> Response {
    let mut res = http::Response::new(body);
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
    for (k, v) in protocol.headers() {
        h.insert(*k, HeaderValue::from_static(v));
    }
    res
}

/// The session already has a run in progress.
fn run_in_progress() -> ApiError {
    ApiError::conflict(
        "run_in_progress",
        "A run is already in progress in this session; wait for it or cancel it.",
    )
}

pub async fn send_message(ctx: &Ctx<'_>, req: &Request) -> ApiResult<Response> {
    let sql = ctx.ports.sql.as_ref();
    // The reads the run needs go out with the caller's own lookup, in one
    // round trip: each round trip before the run starts is added to the
    // time to the first token. Their answers are looked at only after the
    // caller is known and the request is valid (so their errors come after
    // those); the budget is read before it is known whether it applies (not
    // for the user's own key or the demo provider).
    let (caller, (own, session, running, usage)) =
        authenticate_and(ctx, req, |user_id| async move {
            let running = async {
                Ok::<_, ApiError>(
                    sql.query_opt(
                        "SELECT count(*)::int8 AS n FROM runs WHERE owner_id = $1 AND status = 'running'",
                        &[user_id.as_str().into()],
                    )
                    .await?
                    .map(|r| r.int("n"))
                    .transpose()?
                    .unwrap_or(0),
                )
            };
            Ok(futures_util::future::join4(
                super::agent::own_keys(ctx, &user_id),
                own_session(ctx, &user_id),
                running,
                // Boxed: the handler's future stays small.
                Box::pin(crate::billing::quota::model_usage(ctx, &user_id)),
            )
            .await)
        })
        .await?;
    let protocol = Protocol::parse(query_param(req, "protocol").as_deref())?;
    let body: SendMessage = json_body(req)?;
    if body.content.trim().is_empty() {
        return Err(ApiError::bad_request(
            "empty_message",
            "The message is empty.",
        ));
    }
    if body.content.len() > MAX_MESSAGE_BYTES {
        return Err(ApiError::too_large(
            "message_too_large",
            format!("A message may have at most {MAX_MESSAGE_BYTES} bytes."),
        ));
    }
    let config = ctx.ports.config()?;
    let limits = caller.user.limits();
    let (own, session, running) = (own?, session?, running?);
    let (provider, byok) = resolve_provider(config, body.provider.as_deref(), &own)?;
    if !limits.allows_model(provider.model()) {
        return Err(ApiError::new(
            StatusCode::PAYMENT_REQUIRED,
            "model_not_allowed",
            format!(
                "Your tier cannot use the model {}; add your own key or upgrade.",
                provider.model()
            ),
        ));
    }
    if !byok && provider.name() != "demo" {
        crate::billing::quota::judge_model(ctx, &usage?, &limits)?;
    }
    if running >= limits.concurrent_runs {
        let mut e = ApiError::too_many(
            "quota_concurrent_runs",
            format!(
                "Your tier allows {} run(s) at a time; wait for one to finish.",
                limits.concurrent_runs
            ),
            5,
        );
        // A run in this very session is the more useful answer.
        if db::active_run(sql, &session.id).await?.is_some() {
            e = run_in_progress();
        }
        return Err(e);
    }
    if ctx.ports.rooms.is_none() {
        inline::recover_stale(ctx.ports, &session.id, caller.id()).await?;
    }
    // A chat turn is activity on the project's sandbox (idle auto-stop).
    crate::sandbox::touch(ctx.ports, &session.project_id).await;
    let run_id = ids::new_id(ctx.ports, "run");
    let user_message_id = ids::new_id(ctx.ports, "msg");
    let content = serde_json::json!([{ "type": "text", "text": body.content }]);
    let audit_id = ids::new_id(ctx.ports, "aud");
    let audit_detail = serde_json::json!({ "run_id": run_id, "provider": provider.name() });
    let start = db::RunStart {
        run_id: &run_id,
        session_id: &session.id,
        owner_id: caller.id(),
        provider: provider.name(),
        model: provider.model(),
        message_id: &user_message_id,
        content: &content,
        audit_id: &audit_id,
        audit_detail: &audit_detail,
        ip: ctx.meta.client_ip.as_deref(),
        request_id: ctx.request_id,
    };
    // The run, then the reads it needs, sent together (one round trip):
    // Postgres runs them in order, so the reads see the run. With it in
    // place no other run can finish in this session, so the history read is
    // the run's; the budget read counts the runs started before this one
    // (as the run's own first check would). Both are wasted only when the
    // start is refused.
    let budget_free = byok || provider.name() == "demo";
    let run_ctx = Ctx {
        ports: ctx.ports,
        request_id: &run_id,
        meta: ctx.meta.clone(),
        params: Default::default(),
        rate: Default::default(),
    };
    let (first_seq, history, budget) = futures_util::future::join3(
        db::start_run(sql, &start),
        db::all_messages(sql, &session.id),
        async {
            if budget_free {
                Ok(())
            } else {
                crate::billing::quota::check_model(&run_ctx, caller.id(), &limits).await
            }
        },
    )
    .await;
    let first_seq = first_seq?.ok_or_else(run_in_progress)?;
    // The user's message ends the conversation, whichever way the history
    // read saw it.
    let mut history: Vec<db::StoredMessage> = history?
        .into_iter()
        .filter(|m| m.id != user_message_id)
        .collect();
    history.push(db::StoredMessage {
        id: user_message_id.clone(),
        run_id: Some(run_id.clone()),
        role: "user".into(),
        content: content.clone(),
        status: "complete".into(),
        model: None,
        usage: Default::default(),
        cost_micros: 0,
        created_at: String::new(),
    });
    let budget_checked = budget_free || budget.is_ok();
    let preload = super::agent::Preload {
        messages: super::agent::conversation(&history),
        limits: limits.clone(),
        budget_checked,
    };
    let spec = RunSpec {
        run_id: run_id.clone(),
        session_id: session.id.clone(),
        project_id: session.project_id.clone(),
        owner_id: caller.id().to_owned(),
        user_message_id: user_message_id.clone(),
        assistant_message_id: ids::new_id(ctx.ports, "msg"),
        provider: provider.name().to_owned(),
        model: provider.model().to_owned(),
        first_seq,
        started_ms: ctx.ports.clock.now_ms(),
        byok,
        preload: Some(preload),
    };
    let accepted = |after: i64| {
        serde_json::json!({
            "run_id": run_id, "session_id": session.id, "message_id": user_message_id, "after": after,
            "events_url": format!("/v1/sessions/{}/events?after={after}", session.id),
        })
    };
    match &ctx.ports.rooms {
        Some(rooms) => {
            let stream = wants_stream(req).then_some(protocol);
            let (first_seq, events) = match rooms.start(&spec, stream).await {
                Ok(started) => started,
                Err(RoomError::Busy) => {
                    db::finish_run(sql, &run_id, "error", Some("room_busy")).await?;
                    return Err(ApiError::conflict(
                        "run_in_progress",
                        "A run is still in progress in this session; wait for it or cancel it.",
                    ));
                }
                Err(e) => {
                    db::finish_run(sql, &run_id, "error", Some("room_unavailable")).await?;
                    return Err(ApiError::internal(e));
                }
            };
            match events {
                Some(events) => Ok(sse_response(protocol, events)),
                None => Ok(json(StatusCode::ACCEPTED, &accepted(first_seq))),
            }
        }
        None if wants_stream(req) => Ok(sse_response(
            protocol,
            Body::Stream(inline::stream_run(ctx.ports.clone(), spec, protocol)),
        )),
        None => {
            // Without a room the run lives in this request: answer when it is done.
            let outcome = inline::run_detached(ctx.ports, &spec).await;
            let mut doc = accepted(first_seq);
            doc["status"] = outcome.status.into();
            Ok(json(StatusCode::ACCEPTED, &doc))
        }
    }
}

/// The sequence number to resume after: `Last-Event-ID` wins over `?after=`.
fn resume_point(req: &Request) -> ApiResult<i64> {
    let bad = |what: &str| {
        ApiError::bad_request(
            "invalid_resume_point",
            format!("{what} must be a non-negative integer event id."),
        )
    };
    if let Some(v) = req.headers().get("last-event-id") {
        return v
            .to_str()
            .ok()
            .and_then(|s| s.trim().parse::<i64>().ok())
            .filter(|n| *n >= 0)
            .ok_or_else(|| bad("Last-Event-ID"));
    }
    match query_param(req, "after") {
        None => Ok(0),
        Some(s) => s
            .parse::<i64>()
            .ok()
            .filter(|n| *n >= 0)
            .ok_or_else(|| bad("after")),
    }
}

pub async fn events(ctx: &Ctx<'_>, req: &Request) -> ApiResult<Response> {
    let caller = authenticate(ctx, req).await?;
    let protocol = Protocol::parse(query_param(req, "protocol").as_deref())?;
    let after = resume_point(req)?;
    let session = own_session(ctx, caller.id()).await?;
    let stream = match &ctx.ports.rooms {
        Some(rooms) => rooms
            .events(&session.id, after, protocol)
            .await
            .map_err(ApiError::internal)?,
        None => {
            inline::recover_stale(ctx.ports, &session.id, caller.id()).await?;
            Body::Stream(inline::tail(
                ctx.ports.clone(),
                session.id.clone(),
                caller.id().to_owned(),
                after,
                protocol,
            ))
        }
    };
    Ok(sse_response(protocol, stream))
}

pub async fn cancel(ctx: &Ctx<'_>, req: &Request) -> ApiResult<Response> {
    let caller = authenticate(ctx, req).await?;
    let session = own_session(ctx, caller.id()).await?;
    let run = db::request_cancel(ctx.ports.sql.as_ref(), &session.id)
        .await?
        .ok_or_else(|| {
            ApiError::conflict("no_active_run", "No run is in progress in this session.")
        })?;
    if let Some(rooms) = &ctx.ports.rooms {
        rooms
            .cancel(&session.id)
            .await
            .map_err(ApiError::internal)?;
    }
    audit::record(
        ctx.ports.sql.as_ref(),
        ctx,
        caller.id(),
        "chat.cancel",
        Some(&session.id),
        serde_json::json!({ "run_id": run }),
    )
    .await?;
    Ok(json(
        StatusCode::ACCEPTED,
        &serde_json::json!({ "run_id": run, "status": "cancelling" }),
    ))
}

#[derive(serde::Serialize, serde::Deserialize)]
struct Ticket {
    session_id: String,
    user_id: String,
    name: String,
}

pub async fn ws_ticket(ctx: &Ctx<'_>, req: &Request) -> ApiResult<Response> {
    let caller = authenticate(ctx, req).await?;
    let session = own_session(ctx, caller.id()).await?;
    let mut raw = [0u8; 24];
    ctx.ports.crypto.fill_random(&mut raw);
    let ticket = URL_SAFE_NO_PAD.encode(raw);
    let name = caller
        .user
        .email
        .clone()
        .unwrap_or_else(|| caller.id().to_owned());
    let doc = serde_json::to_vec(&Ticket {
        session_id: session.id.clone(),
        user_id: caller.id().to_owned(),
        name,
    })
    .unwrap_or_default();
    ctx.ports
        .kv
        .put(&format!("wsticket:{ticket}"), &doc, Some(TICKET_TTL_SECS))
        .await?;
    Ok(created(&serde_json::json!({
        "ticket": ticket,
        "expires_in": TICKET_TTL_SECS,
        "url": format!("/v1/sessions/{}/ws?ticket={ticket}", session.id),
        // Whether this deployment has live rooms (WebSocket, presence); without
        // them the socket answers 501 and clients use the SSE event stream.
        "live": ctx.ports.rooms.is_some(),
    })))
}

/// The WebSocket to the session's room. Authenticated by a single-use ticket
/// in the query (browsers cannot set headers on WebSockets).
pub async fn websocket(ctx: &Ctx<'_>, req: &Request) -> ApiResult<Response> {
    let invalid = || {
        ApiError::unauthorized(
            "invalid_ticket",
            "The WebSocket ticket is missing, expired or already used.",
        )
    };
    let ticket = query_param(req, "ticket")
        .filter(|t| !t.is_empty() && t.len() <= 64)
        .ok_or_else(invalid)?;
    let key = format!("wsticket:{ticket}");
    let doc = ctx.ports.kv.get(&key).await?.ok_or_else(invalid)?;
    let t: Ticket = serde_json::from_slice(&doc).map_err(|_| invalid())?;
    if t.session_id != ctx.params.get("id") {
        return Err(ApiError::not_found("session"));
    }
    // Checked before the ticket is used up: wasi:http hosts strip `Upgrade`,
    // so a deployment without rooms must say so first.
    let Some(rooms) = &ctx.ports.rooms else {
        return Err(ApiError::new(
            StatusCode::NOT_IMPLEMENTED,
            "websocket_unsupported",
            "This deployment has no live rooms; use GET /v1/sessions/{id}/events (SSE).",
        ));
    };
    let upgrade = req
        .headers()
        .get(http::header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"));
    if !upgrade {
        return Err(ApiError::new(
            StatusCode::UPGRADE_REQUIRED,
            "upgrade_required",
            "Connect with a WebSocket.",
        ));
    }
    // Single use: gone before the socket opens. (Workers KV is eventually
    // consistent across locations; the room also refuses a ticket it has seen.)
    ctx.ports.kv.delete(&key).await?;
    let after = query_param(req, "after")
        .and_then(|s| s.parse::<i64>().ok())
        .filter(|n| *n >= 0);
    let member = Member {
        user_id: t.user_id,
        name: t.name,
    };
    rooms
        .websocket(&t.session_id, &member, after)
        .await
        .map_err(ApiError::internal)
}
