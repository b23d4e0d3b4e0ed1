//! Account routes: signup, login, refresh, logout.

use serde::Deserialize;

use crate::auth::{email::Email, jwt, password, refresh, throttle};
use crate::db::{audit, users};
use crate::error::{ApiError, ApiResult};
use crate::http::request::{json_body, Request};
use crate::http::response::{created, no_content, ok, Response};
use crate::ids;
use crate::ports::sql::transaction;
use crate::routes::Ctx;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Credentials {
    email: String,
    password: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RefreshBody {
    refresh_token: String,
}

/// Anonymous routes are limited per client IP.
pub(crate) async fn limit_ip(ctx: &Ctx<'_>) -> ApiResult<()> {
    match &ctx.meta.client_ip {
        Some(ip) => {
            let per_minute = ctx.ports.config()?.anonymous_per_minute;
            crate::billing::quota::rate_limit(ctx, &format!("ip:{ip}"), per_minute).await
        }
        None => Ok(()),
    }
}

/// The token pair answered by signup, login and refresh.
pub(crate) async fn token_response(
    ctx: &Ctx<'_>,
    user: &users::User,
    family: Option<&str>,
    refresh_token: Option<String>,
) -> ApiResult<serde_json::Value> {
    let config = ctx.ports.config()?;
    let refresh_token = match refresh_token {
        Some(t) => t,
        None => refresh::issue(ctx, &user.id, family).await?,
    };
    Ok(serde_json::json!({
        "user": user,
        "access_token": jwt::issue_access(config, ctx.ports.clock.now_ms(), &user.id, &user.role),
        "refresh_token": refresh_token,
        "token_type": "Bearer",
        "expires_in": jwt::ACCESS_TTL_SECS,
    }))
}

pub async fn signup(ctx: &Ctx<'_>, req: &Request) -> ApiResult<Response> {
    limit_ip(ctx).await?;
    let config = ctx.ports.config()?;
    let body: Credentials = json_body(req)?;
    let email = Email::parse(&body.email)?;
    password::check_strength(&body.password, &email.normalized)?;
    let hash = password::hash(
        ctx.ports.crypto.as_ref(),
        &body.password,
        config.password_iterations,
    )
    .await;
    let sql = ctx.ports.sql.as_ref();
    // Nobody has proven to own the address of a password sign-up (there is
    // no mail round trip), so ADMIN_EMAILS makes it an admin only in a
    // development or test deployment; in production an admin is made by an
    // OIDC sign-in with a verified email, or by another admin.
    let role = if config.development && config.admin_emails.contains(&email.normalized) {
        "admin"
    } else {
        "user"
    };
    let user = transaction(sql, async || {
        let user = users::create_with_password(
            sql,
            &ids::new_id(ctx.ports, "usr"),
            &email.display,
            &email.normalized,
            &hash,
            role,
        )
        .await?;
        audit::record(
            sql,
            ctx,
            &user.id,
            "auth.signup",
            None,
            serde_json::json!({}),
        )
        .await?;
        Ok::<_, ApiError>(user)
    })
    .await?;
    Ok(created(&token_response(ctx, &user, None, None).await?))
}

pub async fn login(ctx: &Ctx<'_>, req: &Request) -> ApiResult<Response> {
    limit_ip(ctx).await?;
    let config = ctx.ports.config()?;
    let body: Credentials = json_body(req)?;
    let invalid =
        || ApiError::unauthorized("invalid_credentials", "The email or password is incorrect.");
    // A malformed address cannot belong to an account: same answer as a wrong password.
    let Ok(email) = Email::parse(&body.email) else {
        return Err(invalid());
    };
    throttle::check(ctx, &email.normalized).await?;
    let found = users::credentials_by_email(ctx.ports.sql.as_ref(), &email.normalized).await?;
    let crypto = ctx.ports.crypto.as_ref();
    let user = match found {
        Some((user, hash)) if password::verify(crypto, &body.password, &hash).await => user,
        Some((user, _)) => {
            throttle::failed(ctx, &email.normalized).await?;
            audit::record(
                ctx.ports.sql.as_ref(),
                ctx,
                &user.id,
                "auth.login_failed",
                None,
                serde_json::json!({}),
            )
            .await?;
            return Err(invalid());
        }
        None => {
            // Spend the same time as a real check so unknown emails do not stand out.
            password::verify(
                crypto,
                &body.password,
                &password::dummy_hash(config.password_iterations),
            )
            .await;
            throttle::failed(ctx, &email.normalized).await?;
            return Err(invalid());
        }
    };
    throttle::succeeded(ctx, &email.normalized).await?;
    audit::record(
        ctx.ports.sql.as_ref(),
        ctx,
        &user.id,
        "auth.login",
        None,
        serde_json::json!({}),
    )
    .await?;
    Ok(ok(&token_response(ctx, &user, None, None).await?))
}

pub async fn refresh(ctx: &Ctx<'_>, req: &Request) -> ApiResult<Response> {
    limit_ip(ctx).await?;
    let body: RefreshBody = json_body(req)?;
    let (user_id, next) = refresh::rotate(ctx, &body.refresh_token).await?;
    let user = users::by_id(ctx.ports.sql.as_ref(), &user_id)
        .await?
        .ok_or_else(|| {
            ApiError::unauthorized("invalid_refresh_token", "The account no longer exists.")
        })?;
    Ok(ok(&token_response(ctx, &user, None, Some(next)).await?))
}

pub async fn logout(ctx: &Ctx<'_>, req: &Request) -> ApiResult<Response> {
    limit_ip(ctx).await?;
    let body: RefreshBody = json_body(req)?;
    if let Some(user_id) = refresh::revoke(ctx, &body.refresh_token).await? {
        audit::record(
            ctx.ports.sql.as_ref(),
            ctx,
            &user_id,
            "auth.logout",
            None,
            serde_json::json!({}),
        )
        .await?;
    }
    Ok(no_content())
}
