//! `POST /webhooks/github`: the signature (`X-Hub-Signature-256`, HMAC-SHA256
//! of the raw body, compared in constant time) is checked before anything
//! is parsed; each `X-GitHub-Delivery` is processed once (a repeat answers
//! 200 and changes nothing; one whose processing failed runs again); the
//! answer goes out at once and the work continues after it.

use hmac::{Hmac, Mac};
use http::StatusCode;
use serde_json::Value;
use sha2::Sha256;

use super::sync::{locked_sync, Mode};
use super::{catchup, store};
use crate::error::{ApiError, ApiResult};
use crate::http::request::{Meta, Request};
use crate::http::response::{json, Response};
use crate::routes::{Ctx, Params};

/// How long a webhook waits for a running sync of the same project.
const WAIT_MS: u64 = 30_000;

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

/// Whether `header` (`sha256=<hex>`) is the HMAC-SHA256 of `body` with `secret`.
pub fn signature_ok(secret: &str, header: Option<&str>, body: &[u8]) -> bool {
    let Some(sig) = header
        .and_then(|h| h.trim().strip_prefix("sha256="))
        .and_then(unhex)
    else {
        return false;
    };
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret.as_bytes()) else {
        return false;
    };
    mac.update(body);
    mac.verify_slice(&sig).is_ok()
}

/// `sha256=<hex>` for `body`: what GitHub sends (tests and fakes use it).
pub fn sign(secret: &str, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes())
        .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
    mac.update(body);
    format!(
        "sha256={}",
        crate::projects::handlers::hex(&mac.finalize().into_bytes())
    )
}

pub async fn receive(ctx: &Ctx<'_>, req: &Request) -> ApiResult<Response> {
    let cfg = super::config(ctx)?;
    let header = |n: &str| req.headers().get(n).and_then(|v| v.to_str().ok());
    if !signature_ok(
        &cfg.webhook_secret,
        header("x-hub-signature-256"),
        req.body(),
    ) {
        return Err(ApiError::unauthorized(
            "invalid_signature",
            "X-Hub-Signature-256 is missing or does not match the body.",
        ));
    }
    let delivery = header("x-github-delivery")
        .filter(|d| !d.is_empty() && d.len() <= 100)
        .ok_or_else(|| ApiError::bad_request("invalid_delivery", "X-GitHub-Delivery is missing."))?
        .to_owned();
    let event = header("x-github-event")
        .filter(|e| !e.is_empty() && e.len() <= 100)
        .ok_or_else(|| ApiError::bad_request("invalid_event", "X-GitHub-Event is missing."))?
        .to_owned();
    let payload: Value = serde_json::from_slice(req.body())
        .map_err(|_| ApiError::bad_request("invalid_body", "The body is not valid JSON."))?;
    if !store::begin_delivery(ctx.ports.sql.as_ref(), &delivery, &event).await? {
        return Ok(json(
            StatusCode::OK,
            &serde_json::json!({ "status": "duplicate", "delivery": delivery }),
        ));
    }
    let ports = ctx.ports.clone();
    let id = delivery.clone();
    ctx.ports
        .after_response(Box::pin(async move {
            let ctx = Ctx {
                ports: &ports,
                request_id: &id,
                meta: Meta::default(),
                params: Params::default(),
                rate: Default::default(),
            };
            let result = match process(&ctx, &event, &payload).await {
                Ok(r) => r,
                Err(e) => {
                    crate::log::event(
                        "warn",
                        "github_webhook_failed",
                        serde_json::json!({ "delivery": id, "event": event, "code": e.code }),
                    );
                    format!("failed: {}: {}", e.code, e.detail)
                }
            };
            let _ = store::finish_delivery(ports.sql.as_ref(), &id, &result).await;
        }))
        .await;
    Ok(json(
        StatusCode::ACCEPTED,
        &serde_json::json!({ "status": "accepted", "delivery": delivery }),
    ))
}

fn int(v: &Value) -> Option<i64> {
    v.as_i64()
}

fn text<'v>(v: &'v Value, pointer: &str) -> &'v str {
    v.pointer(pointer).and_then(Value::as_str).unwrap_or("")
}

/// Handles one verified, new delivery; returns what was done (stored with it).
pub async fn process(ctx: &Ctx<'_>, event: &str, p: &Value) -> ApiResult<String> {
    let sql = ctx.ports.sql.as_ref();
    let installation = int(&p["installation"]["id"]);
    let action = p["action"].as_str().unwrap_or("");
    match event {
        "ping" => Ok("pong".into()),
        "installation" => {
            let Some(id) = installation else {
                return Ok("ignored: no installation".into());
            };
            let account = &p["installation"]["account"];
            match action {
                "created" => {
                    store::upsert_installation(
                        sql,
                        id,
                        text(account, "/login"),
                        int(&account["id"]),
                        account["type"].as_str().unwrap_or("User"),
                        false,
                    )
                    .await?;
                    Ok("installation created".into())
                }
                "deleted" => {
                    let n = store::set_status_for_installation(
                        sql,
                        id,
                        &["active", "suspended", "no_access"],
                        "uninstalled",
                    )
                    .await?;
                    store::delete_installation(sql, id).await?;
                    Ok(format!("installation deleted; {n} links uninstalled"))
                }
                "suspend" => {
                    store::set_suspended(sql, id, true).await?;
                    let n = store::set_status_for_installation(sql, id, &["active"], "suspended")
                        .await?;
                    Ok(format!("installation suspended; {n} links suspended"))
                }
                "unsuspend" => {
                    store::set_suspended(sql, id, false).await?;
                    let n = store::set_status_for_installation(sql, id, &["suspended"], "active")
                        .await?;
                    Ok(format!("installation unsuspended; {n} links active"))
                }
                other => Ok(format!("ignored: installation {other}")),
            }
        }
        "installation_repositories" => {
            let Some(id) = installation else {
                return Ok("ignored: no installation".into());
            };
            let ids = |key: &str| -> Vec<i64> {
                p[key]
                    .as_array()
                    .map(|a| a.iter().filter_map(|r| int(&r["id"])).collect())
                    .unwrap_or_default()
            };
            let removed = store::set_status_for_repos(
                sql,
                id,
                &ids("repositories_removed"),
                &["active"],
                "no_access",
            )
            .await?;
            let added = store::set_status_for_repos(
                sql,
                id,
                &ids("repositories_added"),
                &["no_access"],
                "active",
            )
            .await?;
            Ok(format!("{removed} links lost access, {added} regained it"))
        }
        "repository" => {
            let Some(repo_id) = int(&p["repository"]["id"]) else {
                return Ok("ignored: no repository".into());
            };
            match action {
                "renamed" | "transferred" => {
                    let n = store::rename_repo(
                        sql,
                        repo_id,
                        text(p, "/repository/owner/login"),
                        text(p, "/repository/name"),
                    )
                    .await?;
                    Ok(format!("{n} links follow the new name"))
                }
                "deleted" => {
                    let n = store::set_status_for_repo(sql, repo_id, "deleted").await?;
                    Ok(format!("{n} links marked deleted"))
                }
                other => Ok(format!("ignored: repository {other}")),
            }
        }
        "push" => push(ctx, installation, p).await,
        other => Ok(format!("ignored: event {other}")),
    }
}

async fn push(ctx: &Ctx<'_>, installation: Option<i64>, p: &Value) -> ApiResult<String> {
    let Some(branch) = text(p, "/ref").strip_prefix("refs/heads/") else {
        return Ok("ignored: not a branch".into());
    };
    let owner = match text(p, "/repository/owner/login") {
        "" => text(p, "/repository/owner/name"),
        login => login,
    };
    let links = store::links_of_repo(
        ctx.ports.sql.as_ref(),
        int(&p["repository"]["id"]),
        owner,
        text(p, "/repository/name"),
    )
    .await?;
    let links: Vec<_> = links
        .into_iter()
        .filter(|l| {
            l.status == "active"
                && l.branch == branch
                && installation.is_none_or(|i| i == l.installation_id)
        })
        .collect();
    if links.is_empty() {
        return Ok("ignored: no project is linked to this repository and branch".into());
    }
    if p["deleted"].as_bool() == Some(true) {
        return Ok("ignored: the branch was deleted".into());
    }
    let after = text(p, "/after");
    let who = match text(p, "/pusher/name") {
        "" => text(p, "/sender/login"),
        name => name,
    };
    let who = format!("github:{who}");
    let mut done = Vec::new();
    let mut owed = Vec::new();
    for link in links {
        if link.last_synced_sha.as_deref() == Some(after)
            || link.last_pushed_sha.as_deref() == Some(after)
        {
            done.push(format!("{}: our own commit", link.project_id));
            continue;
        }
        // Every pull is owed before any runs: one that fails, or never
        // runs because the work was cut off, is left to the catch-up job.
        let since = catchup::owe(ctx, &link, &Mode::Pull, &who).await?;
        owed.push((link, since));
    }
    for (link, since) in owed {
        let r = locked_sync(ctx, &link, &Mode::Pull, &who, WAIT_MS).await?;
        catchup::settled(ctx, &link.project_id, &Mode::Pull, since).await;
        done.push(format!(
            "{}: {} pulled, {} deleted, {} skipped, {} conflicts",
            link.project_id,
            r.pulled.len(),
            r.deleted.len(),
            r.skipped.len(),
            r.conflicts.len()
        ));
    }
    Ok(done.join("; "))
}
