//! The scheduled jobs: what a cron trigger runs each minute ([`scheduled`])
//! and the bearer check of their `POST /v1/_jobs/...` routes, for
//! schedulers without cron triggers.

use subtle::ConstantTimeEq;

use crate::error::{ApiError, ApiResult};
use crate::http::request::{bearer_token, Request};
use crate::ports::Ports;
use crate::routes::Ctx;

/// Lets a job route through only with `Authorization: Bearer <JOBS_SECRET>`;
/// without a secret configured the routes do not exist (404).
pub fn authorize(ctx: &Ctx<'_>, req: &Request) -> ApiResult<()> {
    let config = ctx.ports.config()?;
    let Some(secret) = config.jobs_secret.as_deref().filter(|s| !s.is_empty()) else {
        return Err(ApiError::not_found("route"));
    };
    let given = bearer_token(req).unwrap_or("");
    if !bool::from(given.as_bytes().ct_eq(secret.as_bytes())) {
        return Err(ApiError::unauthorized(
            "unauthorized",
            "Send Authorization: Bearer <JOBS_SECRET>.",
        ));
    }
    Ok(())
}

/// One tick of every scheduled job, each logged; a failing job does not
/// stop the next.
pub async fn scheduled(ports: &Ports) {
    match crate::sandbox::idle::run(ports).await {
        Ok(report) => crate::log::event(
            "info",
            "sandbox_idle_job",
            serde_json::to_value(&report).unwrap_or_default(),
        ),
        Err(e) => crate::log::error("sandbox_idle_job", &e.to_string()),
    }
    match crate::github::catchup::run(ports).await {
        Ok(report) => crate::log::event(
            "info",
            "github_catchup_job",
            serde_json::to_value(&report).unwrap_or_default(),
        ),
        Err(e) => crate::log::error("github_catchup_job", &e.to_string()),
    }
}
