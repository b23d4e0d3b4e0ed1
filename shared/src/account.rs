//! The caller's own account: profile and limits, GDPR export and erasure.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;

use crate::auth::authenticate;
use crate::db::{audit, files, projects};
use crate::error::ApiResult;
use crate::http::request::Request;
use crate::http::response::{no_content, ok, Response};
use crate::ports::sql::transaction;
use crate::routes::Ctx;

pub async fn me(ctx: &Ctx<'_>, req: &Request) -> ApiResult<Response> {
    let caller = authenticate(ctx, req).await?;
    let (max_file, max_project) = crate::projects::files::limits(ctx, caller.id()).await?;
    let mut doc = serde_json::to_value(&caller.user).unwrap_or_default();
    let mut limits = serde_json::to_value(caller.user.limits()).unwrap_or_default();
    limits["max_file_bytes"] = max_file.into();
    limits["max_project_bytes"] = max_project.into();
    doc["limits"] = limits;
    Ok(ok(&doc))
}

/// Erases the account: every row it owns goes with it (cascades), which
/// also revokes its refresh tokens.
pub async fn delete_me(ctx: &Ctx<'_>, req: &Request) -> ApiResult<Response> {
    let caller = authenticate(ctx, req).await?;
    let sql = ctx.ports.sql.as_ref();
    let sessions = transaction(sql, async || {
        // Read first: the delete's cascade takes them with it.
        let sessions = crate::db::chat::session_ids(sql, caller.id(), None).await?;
        sql.execute("DELETE FROM users WHERE id = $1", &[caller.id().into()])
            .await?;
        Ok::<_, crate::ApiError>(sessions)
    })
    .await?;
    // What the sessions' rooms hold goes too.
    crate::chat::purge_rooms(ctx.ports, sessions).await;
    crate::log::event(
        "info",
        "account_erased",
        serde_json::json!({ "request_id": ctx.request_id }),
    );
    Ok(no_content())
}

pub async fn export(ctx: &Ctx<'_>, req: &Request) -> ApiResult<Response> {
    let caller = authenticate(ctx, req).await?;
    let sql = ctx.ports.sql.as_ref();
    // Every project's files in one read, not one per project.
    let (projects, files) = futures_util::future::join(
        projects::all_for_owner(sql, caller.id()),
        files::export_all(sql, caller.id()),
    )
    .await;
    // Both are in project id order (Postgres's, the same for both reads):
    // a project's files are the run of rows that name it.
    let mut files = files?.into_iter().peekable();
    let mut out_projects = Vec::new();
    for p in projects? {
        let mut own = Vec::new();
        while let Some((_, meta, bytes)) = files.next_if(|(project, _, _)| *project == p.id) {
            let mut f = serde_json::to_value(&meta).unwrap_or_default();
            f["content_base64"] = STANDARD.encode(bytes).into();
            own.push(f);
        }
        let mut doc = serde_json::to_value(&p).unwrap_or_default();
        doc["files"] = own.into();
        out_projects.push(doc);
    }
    let tokens = sql
        .query(
            "SELECT id, created_at AT TIME ZONE 'UTC' AS created_at, expires_at AT TIME ZONE 'UTC' AS expires_at, rotated_at IS NOT NULL AS rotated, revoked_at IS NOT NULL AS revoked
             FROM refresh_tokens WHERE user_id = $1 ORDER BY id",
            &[caller.id().into()],
        )
        .await?
        .iter()
        .map(|r| {
            Ok(serde_json::json!({
                "id": r.text("id")?,
                "created_at": crate::pagination::rfc3339(r.int("created_at")?),
                "expires_at": crate::pagination::rfc3339(r.int("expires_at")?),
                "rotated": r.bool("rotated")?,
                "revoked": r.bool("revoked")?,
            }))
        })
        .collect::<Result<Vec<_>, crate::ports::sql::SqlError>>()?;
    audit::record(
        sql,
        ctx,
        caller.id(),
        "account.export",
        None,
        serde_json::json!({}),
    )
    .await?;
    Ok(ok(&serde_json::json!({
        "exported_at": crate::pagination::rfc3339(ctx.ports.clock.now_ms()),
        "user": caller.user,
        "projects": out_projects,
        "refresh_tokens": tokens,
        "audit": audit::export(sql, caller.id()).await?,
        "sessions": rows_json(sql, "SELECT s.id, s.project_id, s.title, s.created_at AT TIME ZONE 'UTC' AS created_at,
                (SELECT COALESCE(jsonb_agg(jsonb_build_object('id', m.id, 'role', m.role, 'content', m.content,
                    'status', m.status, 'model', m.model, 'created_at', m.created_at) ORDER BY m.id), '[]'::jsonb)
                 FROM messages m WHERE m.session_id = s.id)::text AS messages
             FROM sessions s WHERE s.owner_id = $1 ORDER BY s.id", caller.id()).await?,
        "usage": rows_json(sql, "SELECT id, kind, provider, model, input_tokens, output_tokens, cache_read_tokens,
                cache_write_tokens, cost_micros, byok, estimated, created_at AT TIME ZONE 'UTC' AS created_at FROM usage_ledger WHERE owner_id = $1 ORDER BY id", caller.id()).await?,
        "provider_keys": rows_json(sql, "SELECT provider, last4, created_at AT TIME ZONE 'UTC' AS created_at, updated_at AT TIME ZONE 'UTC' AS updated_at FROM provider_keys WHERE owner_id = $1 ORDER BY provider", caller.id()).await?,
        "github": rows_json(sql, "SELECT project_id, repo_owner, repo_name, branch, last_synced_sha, status, created_at AT TIME ZONE 'UTC' AS created_at
             FROM github_links WHERE owner_id = $1 ORDER BY project_id", caller.id()).await?,
        // The GitHub App installations the caller linked (no secret lives in that table).
        "github_installations": rows_json(sql, "SELECT installation_id, account_login, account_id, account_type, suspended,
                created_at AT TIME ZONE 'UTC' AS created_at, updated_at AT TIME ZONE 'UTC' AS updated_at
             FROM github_installations WHERE owner_id = $1 ORDER BY installation_id", caller.id()).await?,
        "sandboxes": rows_json(sql, "SELECT project_id, provider, state, last_activity_at AT TIME ZONE 'UTC' AS last_activity_at, created_at AT TIME ZONE 'UTC' AS created_at
             FROM sandboxes WHERE owner_id = $1 ORDER BY project_id", caller.id()).await?,
    })))
}

/// Rows of a query over the owner's data as JSON objects (text columns that
/// hold JSON are embedded as JSON; timestamps as RFC 3339).
async fn rows_json(
    sql: &dyn crate::ports::sql::Sql,
    query: &str,
    owner: &str,
) -> ApiResult<Vec<serde_json::Value>> {
    use crate::ports::sql::Value;
    let rows = sql.query(query, &[owner.into()]).await?;
    Ok(rows
        .iter()
        .map(|r| {
            let mut obj = serde_json::Map::new();
            for (name, v) in r.columns.iter().zip(&r.values) {
                let j = match v {
                    Value::Null => serde_json::Value::Null,
                    Value::Bool(b) => (*b).into(),
                    Value::Int(i) => (*i).into(),
                    Value::Float(f) => (*f).into(),
                    Value::Text(s) if name == "messages" => {
                        serde_json::from_str(s).unwrap_or_default()
                    }
                    Value::Text(s) => s.clone().into(),
                    Value::Bytes(_) => serde_json::Value::Null,
                    Value::Timestamp(ms) => crate::pagination::rfc3339(*ms).into(),
                };
                obj.insert(name.clone(), j);
            }
            serde_json::Value::Object(obj)
        })
        .collect())
}

/// GET /v1/audit: the caller's own audit events, newest first.
pub async fn audit(ctx: &Ctx<'_>, req: &Request) -> ApiResult<Response> {
    let caller = authenticate(ctx, req).await?;
    let page = crate::pagination::page(req, 50, 200)?;
    let rows = ctx
        .ports
        .sql
        .query(
            "SELECT id, action, target, detail::text AS detail, ip, request_id, created_at AT TIME ZONE 'UTC' AS created_at FROM audit_events
             WHERE user_id = $1 AND ($2::text IS NULL OR id < $2) ORDER BY id DESC LIMIT $3",
            &[caller.id().into(), page.after.clone().into(), crate::ports::sql::Value::Int(i64::try_from(page.limit + 1).unwrap_or(51))],
        )
        .await?;
    let items = rows
        .iter()
        .map(|r| {
            Ok(serde_json::json!({
                "id": r.text("id")?, "action": r.text("action")?, "target": r.opt_text("target")?,
                "detail": serde_json::from_str::<serde_json::Value>(&r.text("detail")?).unwrap_or_default(),
                "ip": r.opt_text("ip")?, "request_id": r.opt_text("request_id")?,
                "created_at": crate::pagination::rfc3339(r.int("created_at")?),
            }))
        })
        .collect::<Result<Vec<_>, crate::ports::sql::SqlError>>()?;
    let (items, next) = crate::pagination::finish(items, page.limit, |e| {
        e["id"].as_str().unwrap_or_default().to_owned()
    });
    Ok(ok(
        &serde_json::json!({ "items": items, "next_cursor": next }),
    ))
}
