//! Project routes: create (optionally from a template), list, get, update, delete.

use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::auth::{authenticate, authenticate_and};
use crate::db::{audit, files, projects};
use crate::error::{ApiError, ApiResult};
use crate::http::request::{json_body, Request};
use crate::http::response::{created, no_content, ok, Response};
use crate::ids;
use crate::pagination;
use crate::ports::sql::transaction;
use crate::projects::path::ProjectPath;
use crate::projects::templates;
use crate::routes::Ctx;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateBody {
    name: String,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    template: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UpdateBody {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    description: Option<String>,
}

fn parse_name(raw: &str) -> ApiResult<String> {
    let name = raw.trim();
    if name.is_empty() || name.chars().count() > 100 || name.chars().any(char::is_control) {
        return Err(ApiError::bad_request(
            "invalid_name",
            "A project name has 1 to 100 characters and no control characters.",
        ));
    }
    Ok(name.to_owned())
}

fn parse_description(raw: &str) -> ApiResult<String> {
    if raw.chars().count() > 2000 {
        return Err(ApiError::bad_request(
            "invalid_description",
            "A description has at most 2000 characters.",
        ));
    }
    Ok(raw.to_owned())
}

pub async fn create(ctx: &Ctx<'_>, req: &Request) -> ApiResult<Response> {
    let caller = authenticate(ctx, req).await?;
    let body: CreateBody = json_body(req)?;
    let name = parse_name(&body.name)?;
    let description = parse_description(body.description.as_deref().unwrap_or(""))?;
    let template_id = body.template.as_deref().unwrap_or("blank");
    let template = templates::find(template_id).ok_or_else(|| {
        ApiError::bad_request(
            "unknown_template",
            format!("Unknown template {template_id:?}; see GET /v1/templates."),
        )
    })?;
    let sql = ctx.ports.sql.as_ref();
    let id = ids::new_id(ctx.ports, "prj");
    let max_projects = caller.user.limits().projects;
    let paths = template
        .files
        .iter()
        .map(|(path, content)| {
            Ok((
                ProjectPath::parse(path)?,
                hex(&Sha256::digest(content.as_bytes())),
                *content,
            ))
        })
        .collect::<ApiResult<Vec<_>>>()?;
    // Three round trips whatever the template: the lock and the count
    // (with BEGIN); the project, its files, the audit event and the read
    // back; COMMIT.
    let project = transaction(sql, async || {
        // Serialise this user's creations so two at once cannot both pass the count.
        let (locked, count) = futures_util::future::join(
            sql.execute(
                "SELECT 1 FROM users WHERE id = $1 FOR UPDATE",
                &[caller.id().into()],
            ),
            sql.query_opt(
                "SELECT count(*)::int8 AS n FROM projects WHERE owner_id = $1",
                &[caller.id().into()],
            ),
        )
        .await;
        locked?;
        let count = count?.map(|r| r.int("n")).transpose()?.unwrap_or(0);
        if count >= max_projects {
            return Err(ApiError::new(
                http::StatusCode::PAYMENT_REQUIRED,
                "quota_projects",
                format!("Your tier allows {max_projects} projects; delete one or upgrade."),
            ));
        }
        // A new project has no file yet: each is written over nothing.
        let (inserted, written, recorded, project) = futures_util::future::join4(
            projects::insert(sql, &id, caller.id(), &name, &description, template.id),
            futures_util::future::join_all(paths.iter().map(|(path, sha, content)| {
                files::write_over(sql, caller.id(), &id, path, sha, content.as_bytes(), None)
            })),
            audit::record(
                sql,
                ctx,
                caller.id(),
                "project.create",
                Some(&id),
                serde_json::json!({ "template": template.id }),
            ),
            projects::get(sql, caller.id(), &id),
        )
        .await;
        inserted?;
        for file in written {
            file?;
        }
        recorded?;
        project?.ok_or_else(|| ApiError::internal("project vanished"))
    })
    .await?;
    Ok(created(&project))
}

pub async fn list(ctx: &Ctx<'_>, req: &Request) -> ApiResult<Response> {
    // A bad page is refused after authentication, as before any read.
    let page = pagination::page(req, 20, 100);
    let (_, (page, rows)) = authenticate_and(ctx, req, |user_id| async move {
        let page = page?;
        let rows = projects::page(
            ctx.ports.sql.as_ref(),
            &user_id,
            page.after.as_deref(),
            page.limit + 1,
        )
        .await?;
        Ok((page, rows))
    })
    .await?;
    let (items, next) = pagination::finish(rows, page.limit, |p| p.id.clone());
    Ok(ok(
        &serde_json::json!({ "items": items, "next_cursor": next }),
    ))
}

pub async fn get(ctx: &Ctx<'_>, req: &Request) -> ApiResult<Response> {
    let (_, project) = authenticate_and(ctx, req, |user_id| async move {
        Ok(projects::get(ctx.ports.sql.as_ref(), &user_id, ctx.params.get("id")).await?)
    })
    .await?;
    let project = project.ok_or_else(|| ApiError::not_found("project"))?;
    Ok(ok(&project))
}

pub async fn update(ctx: &Ctx<'_>, req: &Request) -> ApiResult<Response> {
    let caller = authenticate(ctx, req).await?;
    let body: UpdateBody = json_body(req)?;
    let name = body.name.as_deref().map(parse_name).transpose()?;
    let description = body
        .description
        .as_deref()
        .map(parse_description)
        .transpose()?;
    let sql = ctx.ports.sql.as_ref();
    let id = ctx.params.get("id");
    let project = transaction(sql, async || {
        let p = projects::update(
            sql,
            caller.id(),
            id,
            name.as_deref(),
            description.as_deref(),
        )
        .await?
        .ok_or_else(|| ApiError::not_found("project"))?;
        audit::record(
            sql,
            ctx,
            caller.id(),
            "project.update",
            Some(id),
            serde_json::json!({ "name": name }),
        )
        .await?;
        Ok::<_, ApiError>(p)
    })
    .await?;
    Ok(ok(&project))
}

pub async fn delete(ctx: &Ctx<'_>, req: &Request) -> ApiResult<Response> {
    let caller = authenticate(ctx, req).await?;
    let sql = ctx.ports.sql.as_ref();
    let id = ctx.params.get("id");
    let sessions = transaction(sql, async || {
        // Read first: the delete's cascade takes them with it.
        let sessions = crate::db::chat::session_ids(sql, caller.id(), Some(id)).await?;
        if !projects::delete(sql, caller.id(), id).await? {
            return Err(ApiError::not_found("project"));
        }
        audit::record(
            sql,
            ctx,
            caller.id(),
            "project.delete",
            Some(id),
            serde_json::json!({}),
        )
        .await?;
        Ok(sessions)
    })
    .await?;
    crate::chat::purge_rooms(ctx.ports, sessions).await;
    Ok(no_content())
}

pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}
