//! GitHub: a repository per project through a GitHub App, the project's
//! changes committed with the Git Data API (by hand or at the end of every
//! agent run that changed files), pushes synced back by webhook.
//!
//! - [`app`]: the App's JWT and cached installation tokens
//! - [`api`]: the REST client (rate limits, errors)
//! - [`commit`]: Git Data API calls
//! - [`sync`]: the three-way sync of project and branch
//! - [`store`]: the tables
//! - [`webhook`], [`handlers`]: the routes
//! - [`catchup`]: the scheduled job that re-runs syncs that failed after the answer
//!
//! A GitHub App cannot create repositories on a personal account (only in
//! an organisation it is installed on): a personal user creates the
//! repository on GitHub (empty is fine), grants the installation access to
//! it, and connects it.

pub mod api;
pub mod app;
pub mod catchup;
pub mod commit;
pub mod handlers;
pub mod oauth;
pub mod store;
pub mod sync;
pub mod webhook;

use crate::config::GithubConfig;
use crate::error::{ApiError, ApiResult};
use crate::http::request::{Meta, Request};
use crate::http::response::Response;
use crate::ports::Ports;
use crate::routes::{Ctx, Params};

/// The App settings, or 503 `github_not_configured`.
pub fn config<'a>(ctx: &Ctx<'a>) -> ApiResult<&'a GithubConfig> {
    ctx.ports.config()?.github.as_ref().ok_or_else(|| {
        ApiError::unavailable(
            "github_not_configured",
            "GitHub is not configured on this server (GITHUB_APP_ID, GITHUB_APP_PRIVATE_KEY, GITHUB_WEBHOOK_SECRET).",
        )
    })
}

pub async fn connect(ctx: &Ctx<'_>, req: &Request) -> ApiResult<Response> {
    handlers::connect(ctx, req).await
}

pub async fn push(ctx: &Ctx<'_>, req: &Request) -> ApiResult<Response> {
    handlers::push(ctx, req).await
}

pub async fn webhook(ctx: &Ctx<'_>, req: &Request) -> ApiResult<Response> {
    webhook::receive(ctx, req).await
}

/// `POST /v1/_jobs/github-catchup`.
pub async fn catchup_job(ctx: &Ctx<'_>, req: &Request) -> ApiResult<Response> {
    catchup::route(ctx, req).await
}

/// The commit message for an agent run: its final summary, else a default.
pub fn run_message(summary: &str, run_id: &str) -> String {
    let summary = summary.trim();
    let mut subject: String = summary
        .lines()
        .next()
        .unwrap_or("")
        .chars()
        .take(72)
        .collect();
    if subject.is_empty() {
        subject = "EverJust agent: update project files".into();
    }
    let body: String = summary.chars().take(4000).collect();
    if body.is_empty() || body == subject {
        format!("{subject}\n\nEverJust-Run: {run_id}")
    } else {
        format!("{subject}\n\n{body}\n\nEverJust-Run: {run_id}")
    }
}

/// Called at the end of an agent run that changed files: commits them when
/// the project is connected. Never fails the run; a failure is logged and
/// kept on the link (`last_error`) and the push is owed: the catch-up job
/// retries it ([`catchup`]).
pub async fn after_run(ports: &Ports, owner: &str, project: &str, run_id: &str, summary: &str) {
    if !matches!(ports.config.as_ref(), Ok(c) if c.github.is_some()) {
        return;
    }
    let ctx = Ctx {
        ports,
        request_id: run_id,
        meta: Meta::default(),
        params: Params::default(),
        rate: Default::default(),
    };
    let link = match store::link_of(ports.sql.as_ref(), owner, project).await {
        Ok(Some(l)) if l.status == "active" => l,
        Ok(_) => return,
        Err(e) => {
            crate::log::error("github_auto_push_failed", &e.to_string());
            return;
        }
    };
    let mode = sync::Mode::Both {
        message: run_message(summary, run_id),
        resolve: sync::Resolve::None,
    };
    match catchup::owed_sync(&ctx, &link, &mode, "agent", 30_000).await {
        Ok(r) => crate::log::event(
            "info",
            "github_auto_push",
            serde_json::json!({
                "project": project, "run": run_id, "commit": r.commit, "pushed": r.pushed.len(),
                "removed": r.removed.len(), "pulled": r.pulled.len(), "conflicts": r.conflicts.len(),
                "api_calls": r.api_calls,
            }),
        ),
        Err(e) => crate::log::event(
            "warn",
            "github_auto_push_failed",
            serde_json::json!({ "project": project, "run": run_id, "code": e.code }),
        ),
    }
}
