//! Chat routes: sessions, messages, sending a message (starting a run),
//! the event stream with resume, WebSocket tickets, and cancel.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use http::{HeaderValue, StatusCode};
use serde::Deserialize;

use super::agent::{resolve_provider, RunSpec};
use super::early;
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
use crate::ports::sql;
use crate::routes::Ctx;

/// Longest user message, in bytes.
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024;
pub const TICKET_TTL_SECS: u64 = 60;
/// A running run its room does not hold is taken as lost after this long.
const LOST_RUN_SECS: i64 = 10;

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
    let sql = ctx.ports.sql.as_ref();
    // With rooms, what the session's lease needs (`early::grant`) is read
    // with the caller's row and the project, in the same round trip.
    let leasing = ctx.ports.rooms.is_some();
    let (caller, (project, lease_read)) = authenticate_and(ctx, req, |user_id| async move {
        let lease_read = async {
            if !leasing {
                return None;
            }
            Some(
                futures_util::future::join(
                    crate::billing::keys::user_keys(ctx, &user_id),
                    crate::billing::quota::model_usage(ctx, &user_id),
                )
                .await,
            )
        };
        Ok(futures_util::future::join(
            projects::get(sql, &user_id, ctx.params.get("id")),
            lease_read,
        )
        .await)
    })
    .await?;
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
    let project = project?.ok_or_else(|| ApiError::not_found("project"))?;
    let session = db::insert_session(
        sql,
        &ids::new_id(ctx.ports, "ses"),
        &project.id,
        caller.id(),
        title.trim(),
    )
    .await?;
    // The first message usually follows at once: have its room made
    // meanwhile, with the lease to start its model call early.
    if let Some(rooms) = ctx.ports.rooms.clone() {
        let id = session.id.clone();
        let lease = lease_read.and_then(|(keys, usage)| {
            early::grant(ctx, caller.id(), &caller.user.limits(), keys, usage)
        });
        ctx.ports
            .after_response(Box::pin(async move { rooms.prepare(&id, lease).await }))
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

/// A `Server-Timing` header of a run's start: `admit` (authentication, rate
/// limit, quota and the run stored: the caller's Postgres round trip) and
/// `room` (until the session's room answered the start; it calls the model
/// as soon as it has stored the run, before its answer is back), in ms. On
/// Workers the clock moves only with I/O, so each is the time of its I/O to
/// within a millisecond.
fn server_timing(phases: &[(&str, i64)]) -> HeaderValue {
    let value = phases
        .iter()
        .map(|(name, ms)| format!("{name};dur={}", ms.max(&0)))
        .collect::<Vec<_>>()
        .join(", ");
    HeaderValue::from_str(&value).unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// The session already has a run in progress.
fn run_in_progress() -> ApiError {
    ApiError::conflict(
        "run_in_progress",
        "A run is already in progress in this session; wait for it or cancel it.",
    )
}

/// A message to send, as the request gives it, read before the caller is
/// known (and reported after, so a 401 comes first).
struct MessageInput {
    protocol: Protocol,
    /// The provider the request names.
    provider: Option<String>,
    /// The user's message as stored: its content blocks.
    content: serde_json::Value,
}

fn message_input(req: &Request) -> ApiResult<MessageInput> {
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
    Ok(MessageInput {
        protocol,
        provider: body.provider,
        content: serde_json::json!([{ "type": "text", "text": body.content }]),
    })
}

/// The detail of a run's audit event.
fn run_audit_detail(run_id: &str, provider: &crate::llm::Provider) -> serde_json::Value {
    serde_json::json!({ "run_id": run_id, "provider": provider.name() })
}

/// The ids a new run's rows get, made before its first statement.
struct RunIds {
    run: String,
    message: String,
    audit: String,
}

impl RunIds {
    /// What [`db::start_run`] stores for a run with these ids.
    fn start<'a>(
        &'a self,
        ctx: &'a Ctx<'_>,
        session_id: &'a str,
        owner_id: &'a str,
        provider: &'a crate::llm::Provider,
        content: &'a serde_json::Value,
        audit_detail: &'a serde_json::Value,
    ) -> db::RunStart<'a> {
        db::RunStart {
            run_id: &self.run,
            session_id,
            owner_id,
            provider: provider.name(),
            model: provider.model(),
            message_id: &self.message,
            content,
            audit_id: &self.audit,
            audit_detail,
            ip: ctx.meta.client_ip.as_deref(),
            request_id: ctx.request_id,
        }
    }
}

/// The run as the caller's first round trip stored it (see [`send_message`]).
struct Early {
    /// The transaction of the run's insert and its reads: the run is
    /// durable once this succeeds.
    commit: sql::Commit,
    /// The session's sequence number before the run; `None` when the
    /// session already has a run (or is not the caller's).
    first_seq: Result<Option<i64>, sql::SqlError>,
    /// The session's messages, read after the run's insert.
    history: Result<Vec<db::StoredMessage>, sql::SqlError>,
}

/// A run that may start: everything [`send_message`] checked.
struct Admitted {
    /// The run's insert is durable once this succeeds.
    commit: sql::Commit,
    caller: crate::auth::Caller,
    session: db::Session,
    protocol: Protocol,
    provider: crate::llm::Provider,
    byok: bool,
    /// The user's message as stored.
    content: serde_json::Value,
    first_seq: i64,
    history: Vec<db::StoredMessage>,
    limits: crate::billing::tiers::Limits,
    budget_checked: bool,
    /// The run's stored provider or model is not this one (see [`send_message`]).
    stored_other_provider: bool,
    /// The first model call, if it was started beside the checks.
    early_call: Option<early::EarlyCall>,
}

/// Sends a message: stores it with a new run and starts the run (in the
/// session's room when there are rooms), answering with the run's event
/// stream (`Accept: text/event-stream`) or 202 and where to read it.
///
/// Each round trip to Postgres before the run starts adds to the time to
/// the first token, so the run is stored in the caller's own lookup, in the
/// same round trip as everything the checks read: the run, its user message
/// and its audit event go in one statement that only inserts into a session
/// of the caller's with no run in progress. The checks that need the
/// caller's row (tier, rate limit, budget, concurrent runs) come after; a
/// request they refuse has its run deleted again before the answer, so a
/// refused request leaves nothing behind. The run is stored under the
/// provider the request names or the server's default; when the caller's
/// own keys pick another, the run's record is corrected beside the room's
/// start. Without a valid body or a provider to name, the run is stored
/// after the checks instead (a second round trip).
///
/// The insert and the reads after it are one transaction, whose `COMMIT`
/// goes out in the same round trip and is not waited for before the checks
/// ([`sql::commit_behind`]): the room starts the run, and the model call,
/// while the server flushes the commit to disk. With rooms the answer does
/// not wait for the commit either: a commit that fails cancels the run in
/// its room (after the answer), whose own statements wait for it
/// (`db::AFTER_RUN_START`). A run driven inline starts once it succeeded. Starts
/// of one owner are serialized by a lock the transaction holds, so the
/// budget read of each still counts the runs started before it.
pub async fn send_message(ctx: &Ctx<'_>, req: &Request) -> ApiResult<Response> {
    let sql = ctx.ports.sql.as_ref();
    let input = message_input(req);
    let ids = RunIds {
        run: ids::new_id(ctx.ports, "run"),
        message: ids::new_id(ctx.ports, "msg"),
        audit: ids::new_id(ctx.ports, "aud"),
    };
    let inserted = std::cell::Cell::new(false);
    let started_ms = ctx.ports.clock.now_ms();
    let admitted = match admit(ctx, req, input, &ids, &inserted).await {
        Ok(a) => a,
        Err(e) => {
            if inserted.get() {
                if let Err(undo) = db::undo_run_start(sql, &ids.run, &ids.message, &ids.audit).await
                {
                    crate::log::event(
                        "error",
                        "run_undo_failed",
                        serde_json::json!({ "run_id": ids.run, "error": undo.to_string() }),
                    );
                }
            }
            return Err(e);
        }
    };
    let Admitted {
        commit,
        caller,
        session,
        protocol,
        provider,
        byok,
        content,
        first_seq,
        mut history,
        limits,
        budget_checked,
        stored_other_provider,
        early_call,
    } = admitted;
    let admitted_ms = ctx.ports.clock.now_ms();
    let RunIds {
        run: run_id,
        message: user_message_id,
        ..
    } = &ids;
    // The user's message ends the conversation, whichever way the history
    // read saw it.
    history.retain(|m| m.id != *user_message_id);
    history.push(early::user_message(user_message_id, run_id, content));
    // A model call made beside the checks shows as `early` (no duration).
    let early_mark = early_call.is_some().then_some(("early", 0));
    let preload = super::agent::Preload {
        messages: super::agent::context(&history, ctx.ports.config()?.agent_context_tokens),
        limits,
        budget_checked,
        own_key: provider.api_key().filter(|_| byok).cloned(),
        early: early::EarlyHandle::new(early_call),
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
    // Beside the run's start, not before it (with rooms, after the answer):
    // the run's record when the caller's keys picked another provider, and
    // the project's sandbox activity (a chat turn keeps it from the idle
    // auto-stop). Its statements go out behind the start's commit.
    let aside = {
        let ports = ctx.ports.clone();
        let fix = stored_other_provider.then(|| {
            (
                run_id.clone(),
                ids.audit.clone(),
                provider.name().to_owned(),
                provider.model().to_owned(),
                run_audit_detail(run_id, &provider),
            )
        });
        let project_id = session.project_id.clone();
        async move {
            let fixed = async {
                match &fix {
                    Some((run, audit, name, model, detail)) => {
                        db::set_run_provider(ports.sql.as_ref(), run, audit, name, model, detail)
                            .await
                    }
                    None => Ok(()),
                }
            };
            let (fixed, ()) =
                futures_util::future::join(fixed, crate::sandbox::touch(&ports, &project_id)).await;
            fixed
        }
    };
    let accepted = |after: i64| {
        serde_json::json!({
            "run_id": run_id, "session_id": session.id, "message_id": user_message_id, "after": after,
            "events_url": format!("/v1/sessions/{}/events?after={after}", session.id),
        })
    };
    let admit = ("admit", admitted_ms - started_ms);
    let (mut res, timing) = match &ctx.ports.rooms {
        Some(rooms) => {
            let stream = wants_stream(req).then_some(protocol);
            let (first_seq, events) = match rooms.start(&spec, stream).await {
                Ok(started) => started,
                Err(RoomError::Busy) => {
                    db::finish_run(sql, run_id, "error", Some("room_busy")).await?;
                    return Err(ApiError::conflict(
                        "run_in_progress",
                        "A run is still in progress in this session; wait for it or cancel it.",
                    ));
                }
                Err(e) => {
                    db::finish_run(sql, run_id, "error", Some("room_unavailable")).await?;
                    return Err(ApiError::internal(e));
                }
            };
            // The answer does not wait for the start's commit: a slow flush
            // to disk would otherwise hold the first token (scripts/bench-
            // chat saw 40-57 ms, a few times in 60). A commit that fails
            // cancels the run in its room, whose readers see it end, and
            // whose own statements wait for the commit
            // (`db::AFTER_RUN_START`).
            let (rooms, session_id, run) = (rooms.clone(), session.id.clone(), run_id.clone());
            ctx.ports
                .after_response(Box::pin(async move {
                    let (committed, aside) = futures_util::future::join(commit.wait(), aside).await;
                    if let Err(e) = committed {
                        crate::log::event(
                            "error",
                            "run_start_commit_failed",
                            serde_json::json!({ "run_id": run, "error": e.to_string() }),
                        );
                        if let Err(e) = rooms.cancel(&session_id).await {
                            crate::log::event(
                                "error",
                                "run_cancel_failed",
                                serde_json::json!({ "run_id": run, "error": e.to_string() }),
                            );
                        }
                    } else if let Err(e) = aside {
                        // The run is under way: this is only logged.
                        crate::log::event(
                            "warn",
                            "run_provider_fix_failed",
                            serde_json::json!({ "run_id": run, "error": e.to_string() }),
                        );
                    }
                }))
                .await;
            let res = match events {
                Some(events) => sse_response(protocol, events),
                None => json(StatusCode::ACCEPTED, &accepted(first_seq)),
            };
            let room = ("room", ctx.ports.clock.now_ms() - admitted_ms);
            let phases: Vec<_> = [Some(admit), Some(room), early_mark]
                .into_iter()
                .flatten()
                .collect();
            (res, server_timing(&phases))
        }
        None => {
            let (aside, committed) = futures_util::future::join(aside, commit.wait()).await;
            committed?;
            aside?;
            let res = if wants_stream(req) {
                let mut res = sse_response(
                    protocol,
                    Body::Stream(inline::stream_run(ctx.ports.clone(), spec, protocol)),
                );
                // The run lives in this body: it must go on if the client leaves.
                res.extensions_mut().insert(crate::http::body::DrivesWork);
                res
            } else if ctx.ports.background.is_some() {
                // The run goes on after the answer, in this request's
                // instance (Spin): the client reads it from `events_url`.
                let ports = ctx.ports.clone();
                ctx.ports
                    .after_response(Box::pin(async move {
                        inline::run_detached(&ports, &spec).await;
                    }))
                    .await;
                json(StatusCode::ACCEPTED, &accepted(first_seq))
            } else {
                // Nothing runs after the answer here: answer when the run is done.
                let outcome = inline::run_detached(ctx.ports, &spec).await;
                let mut doc = accepted(first_seq);
                doc["status"] = outcome.status.into();
                json(StatusCode::ACCEPTED, &doc)
            };
            (res, server_timing(&[admit]))
        }
    };
    res.headers_mut().insert("server-timing", timing);
    Ok(res)
}

/// The checks of [`send_message`], with the run stored on the way. `inserted`
/// says whether the run's rows were written, so a refusal can remove them.
async fn admit(
    ctx: &Ctx<'_>,
    req: &Request,
    input: ApiResult<MessageInput>,
    ids: &RunIds,
    inserted: &std::cell::Cell<bool>,
) -> ApiResult<Admitted> {
    let sql = ctx.ports.sql.as_ref();
    let config = ctx.ports.config()?;
    // The run's own context: its budget read counts the runs started before
    // it (`quota::model_usage`).
    let run_ctx = Ctx {
        ports: ctx.ports,
        request_id: &ids.run,
        meta: ctx.meta.clone(),
        params: Default::default(),
        rate: Default::default(),
    };
    let session_id = ctx.params.get("id");
    // What the first round trip stores: the message and the provider the
    // request names or the server's default (see `send_message`).
    let early = input.as_ref().ok().and_then(|m| {
        let (provider, _) = resolve_provider(config, m.provider.as_deref(), &[]).ok()?;
        let detail = run_audit_detail(&ids.run, &provider);
        Some((&m.content, provider, detail))
    });
    let (early_ref, run_ctx_ref) = (early.as_ref(), &run_ctx);
    let wanted = input
        .as_ref()
        .ok()
        .map(|m| (m.provider.as_deref(), &m.content));
    let (caller, (own, session, running, stored, usage, early_call)) =
        authenticate_and(ctx, req, |user_id| async move {
            // A message from the owner its session's room holds a lease
            // for: its model call starts now, beside the checks.
            let early_call = wanted.and_then(|(provider, content)| {
                let lease = ctx.ports.rooms.as_ref()?.take_lease(session_id, &user_id)?;
                let message = early::user_message(&ids.message, &ids.run, content.clone());
                early::EarlyCall::start(ctx.ports, config, lease, message, provider)
            });
            // The caller's runs in progress: with the run stored early,
            // the budget read counts them (`in_flight`), after the start's
            // lock, so two starts of one owner cannot both see none.
            let running = async {
                if early_ref.is_some() {
                    return Ok::<_, ApiError>(None);
                }
                Ok(Some(
                    sql.query_opt(
                        "SELECT count(*)::int8 AS n FROM runs WHERE owner_id = $1 AND status = 'running'",
                        &[user_id.as_str().into()],
                    )
                    .await?
                    .map(|r| r.int("n"))
                    .transpose()?
                    .unwrap_or(0),
                ))
            };
            // The run, then the reads that must see it, in this order on the
            // connection (Postgres runs them in order): with the run in
            // place no other run can finish in this session, so the history
            // read is the run's; the budget read counts the runs started
            // before this one. They are a transaction whose COMMIT is sent
            // behind them, not waited for: the checks use what was read
            // while the server makes the run durable (a flush of its log to
            // disk, milliseconds on many disks); `send_message` waits for it
            // after the answer with rooms, before the run without.
            let store = async {
                let Some((content, provider, detail)) = early_ref else {
                    return (None, crate::billing::quota::model_usage(ctx, &user_id).await);
                };
                let start = ids.start(ctx, session_id, &user_id, provider, content, detail);
                let ((begin, first_seq, history, usage), commit) = sql::commit_behind(
                    &ctx.ports.sql,
                    futures_util::future::join4(
                        sql.batch("BEGIN"),
                        db::start_run(sql, &start),
                        db::recent_messages(
                            sql,
                            session_id,
                            Some(&user_id),
                            super::agent::context_bytes(config.agent_context_tokens),
                        ),
                        crate::billing::quota::model_usage(run_ctx_ref, &user_id),
                    ),
                )
                .await;
                let first_seq = begin.and(first_seq);
                inserted.set(matches!(first_seq, Ok(Some(_))));
                (Some(Early { first_seq, history, commit }), usage)
            };
            let (own, session, running, (stored, usage)) = futures_util::future::join4(
                crate::billing::keys::user_keys(ctx, &user_id),
                own_session(ctx, &user_id),
                running,
                // Boxed: the handler's future stays small.
                Box::pin(store),
            )
            .await;
            Ok((own, session, running, stored, usage, early_call))
        })
        .await?;
    // The provider the run was stored under, if it was.
    let guessed = early.map(|(_, provider, _)| provider);
    let MessageInput {
        protocol,
        provider: wanted,
        content,
    } = input?;
    let limits = caller.user.limits();
    let (own, session, running) = (own?, session?, running?);
    let (provider, byok) = resolve_provider(config, wanted.as_deref(), &own)?;
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
    let budget_free = byok || provider.name() == "demo";
    let usage = usage?;
    if !budget_free {
        crate::billing::quota::judge_model(ctx, &usage, &limits)?;
    }
    let running = running.unwrap_or_else(|| usage.in_flight());
    let (stored, commit) = match stored {
        Some(Early {
            first_seq,
            history,
            commit,
        }) => (Some((first_seq?, history)), commit),
        None => (None, sql::Commit::None),
    };
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
        let busy = match &stored {
            Some((first_seq, _)) => first_seq.is_none(),
            None => db::active_run(sql, &session.id).await?.is_some(),
        };
        if busy {
            e = run_in_progress();
        }
        return Err(e);
    }
    let stored_other_provider = guessed
        .as_ref()
        .is_some_and(|p| p.name() != provider.name() || p.model() != provider.model());
    let (first_seq, history, budget_checked, stored_early) = match stored {
        // Stored with the checks: the budget read above was the run's own.
        Some((Some(first_seq), history)) => (first_seq, history?, true, true),
        Some((None, _)) if ctx.ports.rooms.is_some() => return Err(run_in_progress()),
        // Not stored yet, or (without rooms) the session still has a run,
        // which may be a stale one that only this instance can recover.
        _ => {
            if ctx.ports.rooms.is_none() {
                inline::recover_stale(ctx.ports, &session.id, caller.id()).await?;
            }
            let detail = run_audit_detail(&ids.run, &provider);
            let start = ids.start(ctx, &session.id, caller.id(), &provider, &content, &detail);
            let (first_seq, history, budget) = futures_util::future::join3(
                db::start_run(sql, &start),
                db::recent_messages(
                    sql,
                    &session.id,
                    None,
                    super::agent::context_bytes(config.agent_context_tokens),
                ),
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
            (first_seq, history?, budget.is_ok(), false)
        }
    };
    Ok(Admitted {
        commit,
        caller,
        session,
        protocol,
        provider,
        byok,
        content,
        first_seq,
        history,
        limits,
        budget_checked: budget_free || budget_checked,
        // Only a run stored with the checks was stored under a guess.
        stored_other_provider: stored_other_provider && stored_early,
        early_call,
    })
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
    let mut status = "cancelling";
    if let Some(rooms) = &ctx.ports.rooms {
        let held = rooms
            .cancel(&session.id)
            .await
            .map_err(ApiError::internal)?;
        // A run its room does not hold was lost before the room stored it
        // (its isolate died): nothing else would end it, and it blocks the
        // session. A run younger than a start takes may still be on its way
        // to the room.
        if !held && db::end_lost_run(ctx.ports.sql.as_ref(), &run, LOST_RUN_SECS).await? {
            status = "cancelled";
        }
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
        &serde_json::json!({ "run_id": run, "status": status }),
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
