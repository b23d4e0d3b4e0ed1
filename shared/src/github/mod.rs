//! GitHub: a repository per project through a GitHub App, agent changes
//! committed with the Git Data API, pushes synced back by webhook.

use crate::error::{ApiError, ApiResult};
use crate::http::request::Request;
use crate::http::response::Response;
use crate::routes::Ctx;

fn not_yet() -> ApiError {
    ApiError::new(
        http::StatusCode::NOT_IMPLEMENTED,
        "not_implemented",
        "GitHub sync is not available on this server yet.",
    )
}

pub async fn connect(_ctx: &Ctx<'_>, _req: &Request) -> ApiResult<Response> {
    Err(not_yet())
}

pub async fn push(_ctx: &Ctx<'_>, _req: &Request) -> ApiResult<Response> {
    Err(not_yet())
}

pub async fn webhook(_ctx: &Ctx<'_>, _req: &Request) -> ApiResult<Response> {
    Err(not_yet())
}
