//! Identity: own accounts (password, access JWT, rotating refresh tokens),
//! external OIDC via JWKS, and resolving a bearer token to a [`Caller`].

pub mod email;
pub mod handlers;
pub mod jwt;
pub mod oidc;
pub mod oidc_login;
pub mod password;
pub mod refresh;
pub mod throttle;

use crate::db::users::{self, User};
use crate::error::{ApiError, ApiResult};
use crate::http::request::{bearer_token, Request};
use crate::routes::Ctx;

/// The authenticated user of a request.
#[derive(Debug, Clone)]
pub struct Caller {
    pub user: User,
}

impl Caller {
    pub fn id(&self) -> &str {
        &self.user.id
    }
    pub fn is_admin(&self) -> bool {
        self.user.role == "admin"
    }
}

/// Resolves the bearer token of `req`: our own HS256 access token, or an
/// external OIDC token when OIDC is configured. A user that no longer exists
/// is not authenticated.
pub async fn authenticate(ctx: &Ctx<'_>, req: &Request) -> ApiResult<Caller> {
    authenticate_and(ctx, req, |_| async { Ok(()) })
        .await
        .map(|(caller, ())| caller)
}

/// The API rate-limit key of a user.
fn rate_key(user_id: &str) -> String {
    format!("user:{user_id}")
}

/// [`authenticate`], and a read made for the caller: `read(user_id)`.
/// With our own access token the user id is known once the signature is
/// checked, so the read goes out with the user's lookup, in the same round
/// trip, beside the rate-limit hit (on the limit the limiter remembers for
/// the user, judged on the user's own once it is read). Its answer is used
/// only when the caller is authenticated and within the rate limit, so the
/// read changes nothing, or its caller undoes what it wrote when this
/// fails (sending a chat message). An authentication or rate-limit error
/// wins over the read's error.
pub async fn authenticate_and<T, Fut>(
    ctx: &Ctx<'_>,
    req: &Request,
    read: impl FnOnce(String) -> Fut,
) -> ApiResult<(Caller, T)>
where
    Fut: std::future::Future<Output = ApiResult<T>>,
{
    /// The read: made with the user's lookup, or still to make.
    enum Read<T, F> {
        Made(ApiResult<T>),
        Later(F),
    }
    let config = ctx.ports.config()?;
    let token = bearer_token(req).ok_or_else(|| {
        ApiError::unauthorized("unauthorized", "Send Authorization: Bearer <token>.")
    })?;
    let invalid =
        || ApiError::unauthorized("invalid_token", "The access token is invalid or expired.");
    let issuer = jwt::peek_issuer(token).ok_or_else(invalid)?;
    let (user, read, early_hit) = if issuer == jwt::ISSUER {
        let claims =
            jwt::verify_access(config, ctx.ports.clock.now_ms(), token).ok_or_else(invalid)?;
        // The rate-limit hit goes out with the lookup too, on the limit the
        // limiter remembers for the user; it is judged on the user's own
        // once that is read.
        let key = rate_key(&claims.sub);
        let (user, data, hit) = futures_util::future::join3(
            users::by_id(ctx.ports.sql.as_ref(), &claims.sub),
            read(claims.sub.clone()),
            crate::billing::quota::rate_hit_early(ctx, &key),
        )
        .await;
        (user?, Read::Made(data), hit)
    } else if config.oidc.as_ref().is_some_and(|o| o.issuer == issuer) {
        let identity = oidc::verify(ctx, token).await?.ok_or_else(invalid)?;
        (
            Some(users::upsert_oidc(ctx, &identity).await?),
            Read::Later(read),
            None,
        )
    } else {
        (None, Read::Later(read), None)
    };
    let caller = user.map(|user| Caller { user }).ok_or_else(invalid)?;
    *ctx.rate.user_id.borrow_mut() = Some(caller.id().to_owned());
    // A negative limit (an admin's override, e.g. for a service account)
    // means no API rate limit at all: no check, no RateLimit-* headers.
    let per_minute = caller.user.limits().api_requests_minute;
    if per_minute >= 0 {
        let per_minute = u32::try_from(per_minute).unwrap_or(u32::MAX);
        crate::billing::quota::rate_limit_settled(
            ctx,
            &rate_key(caller.id()),
            per_minute,
            early_hit,
        )
        .await?;
    }
    let data = match read {
        Read::Made(data) => data?,
        Read::Later(read) => read(caller.id().to_owned()).await?,
    };
    Ok((caller, data))
}
