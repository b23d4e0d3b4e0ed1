//! Admin routes: list users with this month's cost, change a user's tier,
//! role or limits. Every change is audited on both sides.

use serde::Deserialize;

use super::tiers::TIERS;
use crate::auth::{authenticate, Caller};
use crate::db::{audit, users};
use crate::error::{ApiError, ApiResult};
use crate::http::request::{json_body, Request};
use crate::http::response::{ok, Response};
use crate::pagination;
use crate::routes::Ctx;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Update {
    #[serde(default)]
    tier: Option<String>,
    #[serde(default)]
    role: Option<String>,
    #[serde(default)]
    limits: Option<serde_json::Value>,
}

async fn admin(ctx: &Ctx<'_>, req: &Request) -> ApiResult<Caller> {
    let caller = authenticate(ctx, req).await?;
    if !caller.is_admin() {
        return Err(ApiError::forbidden(
            "forbidden",
            "This needs the admin role.",
        ));
    }
    Ok(caller)
}

pub async fn list(ctx: &Ctx<'_>, req: &Request) -> ApiResult<Response> {
    admin(ctx, req).await?;
    let page = pagination::page(req, 50, 200)?;
    let sql = ctx.ports.sql.as_ref();
    let rows = users::page_with_month_cost(sql, page.after.as_deref(), page.limit + 1).await?;
    let (rows, next) = pagination::finish(rows, page.limit, |(u, _)| u.id.clone());
    let mut items = Vec::new();
    for (u, cost) in rows {
        let mut doc = serde_json::to_value(&u).unwrap_or_default();
        doc["limits"] = serde_json::to_value(u.limits()).unwrap_or_default();
        doc["cost_micros_this_month"] = cost.into();
        items.push(doc);
    }
    Ok(ok(
        &serde_json::json!({ "items": items, "next_cursor": next }),
    ))
}

pub async fn update(ctx: &Ctx<'_>, req: &Request) -> ApiResult<Response> {
    let caller = admin(ctx, req).await?;
    let body: Update = json_body(req)?;
    if let Some(t) = &body.tier {
        if !TIERS.contains(&t.as_str()) {
            return Err(ApiError::bad_request(
                "invalid_tier",
                format!("tier must be one of {}.", TIERS.join(", ")),
            ));
        }
    }
    if let Some(r) = &body.role {
        if r != "user" && r != "admin" {
            return Err(ApiError::bad_request(
                "invalid_role",
                "role must be user or admin.",
            ));
        }
    }
    if let Some(limits) = &body.limits {
        crate::billing::tiers::check_overrides(limits)
            .map_err(|detail| ApiError::bad_request("invalid_limits", detail))?;
    }
    let id = ctx.params.get("id");
    let sql = ctx.ports.sql.as_ref();
    let user = users::update_admin(
        sql,
        id,
        body.tier.as_deref(),
        body.role.as_deref(),
        body.limits.as_ref(),
    )
    .await?
    .ok_or_else(|| ApiError::not_found("user"))?;
    let detail = serde_json::json!({ "tier": body.tier, "role": body.role, "limits": body.limits, "by": caller.id() });
    audit::record(
        sql,
        ctx,
        caller.id(),
        "admin.user_update",
        Some(id),
        detail.clone(),
    )
    .await?;
    if id != caller.id() {
        audit::record(sql, ctx, id, "account.changed_by_admin", Some(id), detail).await?;
    }
    let mut doc = serde_json::to_value(&user).unwrap_or_default();
    doc["limits"] = serde_json::to_value(user.limits()).unwrap_or_default();
    Ok(ok(&doc))
}
