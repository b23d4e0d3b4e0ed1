//! File routes, and [`write_file`] / [`delete_file`]: the one path every
//! change to a project's files takes (API, agent tools, sync), with path
//! rules, size limits and the audit log.

use http::{HeaderValue, StatusCode};
use sha2::{Digest, Sha256};

use crate::auth::authenticate;
use crate::db::files::{self, FileMeta};
use crate::db::{audit, projects};
use crate::error::{ApiError, ApiResult};
use crate::http::request::Request;
use crate::http::response::{bytes, created, no_content, ok, Response};
use crate::pagination;
use crate::ports::sql::transaction;
use crate::projects::handlers::hex;
use crate::projects::path::ProjectPath;
use crate::routes::Ctx;

/// Who made a change, for the audit log.
#[derive(Debug, Clone, Copy)]
pub enum Actor {
    User,
    Agent,
    /// A push on the linked GitHub branch, synced back.
    Github,
}

impl Actor {
    fn as_str(self) -> &'static str {
        match self {
            Actor::User => "user",
            Actor::Agent => "agent",
            Actor::Github => "github",
        }
    }
}

/// The owner's file and project size limits: the server's, lowered by the tier's.
pub async fn limits(ctx: &Ctx<'_>, owner: &str) -> ApiResult<(u64, u64)> {
    let config = ctx.ports.config()?;
    let tier = crate::db::users::by_id(ctx.ports.sql.as_ref(), owner)
        .await?
        .map(|u| u.limits());
    let cap = |server: u64, tier: Option<i64>| {
        tier.and_then(|t| u64::try_from(t).ok())
            .map_or(server, |t| t.min(server))
    };
    Ok((
        cap(
            config.max_file_bytes,
            tier.as_ref().map(|l| l.max_file_bytes),
        ),
        cap(
            config.max_project_bytes,
            tier.as_ref().map(|l| l.max_project_bytes),
        ),
    ))
}

fn too_large(max: u64, size: u64) -> ApiError {
    ApiError::too_large(
        "file_too_large",
        format!("A file may have at most {max} bytes; this one has {size}."),
    )
}

/// What a change expects the file to be when it lands.
#[derive(Debug, Clone, Copy)]
pub enum Expect<'a> {
    /// Whatever it is.
    Any,
    /// Exactly this content (its sha256), or absent (`None`).
    Is(Option<&'a str>),
}

impl Expect<'_> {
    /// 409 `file_changed` when the file is no longer what the change expected.
    fn check(self, path: &ProjectPath, current: Option<&str>) -> ApiResult<()> {
        match self {
            Expect::Is(want) if want != current => Err(ApiError::conflict(
                "file_changed",
                format!("{} changed while this change was prepared.", path.as_str()),
            )),
            _ => Ok(()),
        }
    }
}

/// Writes one file of the owner's project within the size limits.
pub async fn write_file(
    ctx: &Ctx<'_>,
    owner: &str,
    project_id: &str,
    path: &ProjectPath,
    content: &[u8],
    actor: Actor,
) -> ApiResult<(FileMeta, bool)> {
    write_file_if(ctx, owner, project_id, path, content, actor, Expect::Any).await
}

/// [`write_file`], only when the file is still what `expect` says (the
/// check and the write are one transaction under the project's lock).
pub async fn write_file_if(
    ctx: &Ctx<'_>,
    owner: &str,
    project_id: &str,
    path: &ProjectPath,
    content: &[u8],
    actor: Actor,
    expect: Expect<'_>,
) -> ApiResult<(FileMeta, bool)> {
    let size = u64::try_from(content.len()).unwrap_or(u64::MAX);
    // Over the server's own limit: refused before any hashing or reading
    // (the tier's, at most as high, is read with the lock below). Hashed
    // before the lock is taken, so the lock is not held meanwhile.
    let server_max = ctx.ports.config()?.max_file_bytes;
    if size > server_max {
        return Err(too_large(server_max, size));
    }
    let sha = hex(&Sha256::digest(content));
    let sql = ctx.ports.sql.as_ref();
    // Three round trips: the limits, the project's lock, the file as it is
    // and any file its path clashes with, read together; the writes and
    // the audit event together; COMMIT.
    transaction(sql, async || {
        let (limits, project, current, clash) = futures_util::future::join4(
            limits(ctx, owner),
            projects::lock(sql, owner, project_id),
            files::meta(sql, project_id, path),
            files::clash(sql, project_id, path),
        )
        .await;
        let (max_file, max_project) = limits?;
        if size > max_file {
            return Err(too_large(max_file, size));
        }
        let project = project?.ok_or_else(|| ApiError::not_found("project"))?;
        let current = current?;
        if let Some(other) = clash? {
            let p = path.as_str();
            return Err(ApiError::conflict(
                "path_conflict",
                if p.starts_with(&format!("{other}/")) {
                    format!("{other} is a file, so {p} cannot be inside it.")
                } else {
                    format!("{p} is a folder (it holds {other}), so it cannot be a file.")
                },
            ));
        }
        expect.check(path, current.as_ref().map(|m| m.sha256.as_str()))?;
        let old = current.as_ref().map_or(0, |m| m.size);
        let new_total = u64::try_from(project.total_bytes - old).unwrap_or(0) + size;
        if new_total > max_project {
            return Err(ApiError::too_large("project_too_large", format!("A project may hold at most {max_project} bytes in total.")));
        }
        let (written, recorded) = futures_util::future::join(
            files::write_over(sql, owner, project_id, path, &sha, content, current.as_ref()),
            audit::record(
                sql,
                ctx,
                owner,
                "file.write",
                Some(project_id),
                serde_json::json!({ "path": path.as_str(), "sha256": sha, "size": size, "by": actor.as_str() }),
            ),
        )
        .await;
        let (meta, is_new) = written?;
        recorded?;
        Ok((meta, is_new))
    })
    .await
}

/// Deletes one file of the owner's project; 404 when it does not exist.
pub async fn delete_file(
    ctx: &Ctx<'_>,
    owner: &str,
    project_id: &str,
    path: &ProjectPath,
    actor: Actor,
) -> ApiResult<()> {
    delete_file_if(ctx, owner, project_id, path, actor, Expect::Any).await
}

/// [`delete_file`], only when the file is still what `expect` says.
pub async fn delete_file_if(
    ctx: &Ctx<'_>,
    owner: &str,
    project_id: &str,
    path: &ProjectPath,
    actor: Actor,
    expect: Expect<'_>,
) -> ApiResult<()> {
    let sql = ctx.ports.sql.as_ref();
    // Three round trips, as a write's: the lock and the file; the delete
    // and its audit event; COMMIT.
    transaction(sql, async || {
        let (project, current) = futures_util::future::join(
            projects::lock(sql, owner, project_id),
            files::meta(sql, project_id, path),
        )
        .await;
        project?.ok_or_else(|| ApiError::not_found("project"))?;
        let current = current?;
        expect.check(path, current.as_ref().map(|m| m.sha256.as_str()))?;
        let current = current.ok_or_else(|| ApiError::not_found("file"))?;
        let (deleted, recorded) = futures_util::future::join(
            files::delete(sql, owner, project_id, path, &current),
            audit::record(
                sql,
                ctx,
                owner,
                "file.delete",
                Some(project_id),
                serde_json::json!({ "path": path.as_str(), "by": actor.as_str() }),
            ),
        )
        .await;
        deleted?;
        recorded?;
        Ok(())
    })
    .await
}

pub async fn list(ctx: &Ctx<'_>, req: &Request) -> ApiResult<Response> {
    let caller = authenticate(ctx, req).await?;
    let page = pagination::page(req, 1000, 1000)?;
    let sql = ctx.ports.sql.as_ref();
    let project = projects::get(sql, caller.id(), ctx.params.get("id"))
        .await?
        .ok_or_else(|| ApiError::not_found("project"))?;
    let rows = files::page(sql, &project.id, page.after.as_deref(), page.limit + 1).await?;
    let (items, next) = pagination::finish(rows, page.limit, |f| f.path.clone());
    Ok(ok(
        &serde_json::json!({ "items": items, "next_cursor": next }),
    ))
}

pub async fn get(ctx: &Ctx<'_>, req: &Request) -> ApiResult<Response> {
    let caller = authenticate(ctx, req).await?;
    let path = ProjectPath::from_url(ctx.params.get("path"))?;
    let (meta, content) = files::read(
        ctx.ports.sql.as_ref(),
        caller.id(),
        ctx.params.get("id"),
        &path,
    )
    .await?
    .ok_or_else(|| ApiError::not_found("file"))?;
    let etag = format!("\"{}\"", meta.sha256);
    let not_modified = req
        .headers()
        .get(http::header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        == Some(etag.as_str());
    let mut res = if not_modified {
        bytes(StatusCode::NOT_MODIFIED, path.content_type(), Vec::new())
    } else {
        bytes(StatusCode::OK, path.content_type(), content)
    };
    if let Ok(v) = HeaderValue::from_str(&etag) {
        res.headers_mut().insert(http::header::ETAG, v);
    }
    Ok(res)
}

pub async fn put(ctx: &Ctx<'_>, req: &Request) -> ApiResult<Response> {
    let caller = authenticate(ctx, req).await?;
    let path = ProjectPath::from_url(ctx.params.get("path"))?;
    let (meta, is_new) = write_file(
        ctx,
        caller.id(),
        ctx.params.get("id"),
        &path,
        req.body(),
        Actor::User,
    )
    .await?;
    Ok(if is_new { created(&meta) } else { ok(&meta) })
}

pub async fn delete(ctx: &Ctx<'_>, req: &Request) -> ApiResult<Response> {
    let caller = authenticate(ctx, req).await?;
    let path = ProjectPath::from_url(ctx.params.get("path"))?;
    delete_file(ctx, caller.id(), ctx.params.get("id"), &path, Actor::User).await?;
    Ok(no_content())
}
