//! Sandboxes per project: the `static` provider (the project's files served
//! as a preview; no commands) and Daytona. The project store is the truth;
//! a sandbox is a cache of it.

use crate::auth::authenticate;
use crate::chat::tools::ToolOutcome;
use crate::db::projects;
use crate::error::{ApiError, ApiResult};
use crate::http::request::Request;
use crate::http::response::{no_content, ok, Response};
use crate::routes::Ctx;

/// What GET /v1/projects/{id}/sandbox answers for the static provider.
async fn static_state(ctx: &Ctx<'_>, req: &Request) -> ApiResult<serde_json::Value> {
    let caller = authenticate(ctx, req).await?;
    let project = projects::get(ctx.ports.sql.as_ref(), caller.id(), ctx.params.get("id"))
        .await?
        .ok_or_else(|| ApiError::not_found("project"))?;
    Ok(serde_json::json!({
        "provider": "static",
        "state": "started",
        "preview_url": crate::projects::preview::url(ctx, &project.id)?,
        "commands": false,
    }))
}

pub async fn create(ctx: &Ctx<'_>, req: &Request) -> ApiResult<Response> {
    Ok(ok(&static_state(ctx, req).await?))
}

pub async fn get(ctx: &Ctx<'_>, req: &Request) -> ApiResult<Response> {
    Ok(ok(&static_state(ctx, req).await?))
}

pub async fn delete(ctx: &Ctx<'_>, req: &Request) -> ApiResult<Response> {
    static_state(ctx, req).await?;
    Ok(no_content())
}

pub async fn exec(ctx: &Ctx<'_>, req: &Request) -> ApiResult<Response> {
    static_state(ctx, req).await?;
    Err(ApiError::conflict("no_sandbox", "No sandbox provider is configured, so commands cannot run; the static preview serves the files."))
}

pub async fn webhook(_ctx: &Ctx<'_>, _req: &Request) -> ApiResult<Response> {
    Err(ApiError::new(
        http::StatusCode::NOT_IMPLEMENTED,
        "not_implemented",
        "Daytona webhooks are not available on this server yet.",
    ))
}

/// The agent's `run_command` tool.
pub async fn run_command(
    _ctx: &Ctx<'_>,
    _owner: &str,
    _project: &str,
    _command: &str,
) -> ToolOutcome {
    ToolOutcome {
        output: "No sandbox is configured for this project, so commands cannot run. Write files instead; the static preview shows index.html.".into(),
        is_error: true,
        changed_files: false,
    }
}
