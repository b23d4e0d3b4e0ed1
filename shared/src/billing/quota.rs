//! Enforcement of the tier's limits: API rate limit per user (and per IP
//! for anonymous routes), model quotas before a model call.
//!
//! Exactness: on Cloudflare the API request limits (per user, and per IP on
//! anonymous routes) go through the `RateLimiter` Durable Object and are
//! exact: one object per key decides every hit in its memory, so N
//! concurrent requests over a limit of L get exactly L successes. With the
//! KV-backed limiter (Spin, the host tests) they are approximate under
//! bursts. The failed-login throttle (`auth::throttle`) counts in KV
//! directly and stays approximate everywhere. Model quotas
//! are read from the Postgres ledger (exact as of the last settled call; a
//! run in flight may overdraw by at most its own calls).

use http::HeaderValue;

use super::tiers::Limits;
use crate::error::{ApiError, ApiResult};
use crate::ports::ratelimit::Decision;
use crate::ports::sql::Value;
use crate::routes::Ctx;

/// Counts one request of `key` against `per_minute`; 429 over it. The
/// decision is kept for the response's RateLimit-* headers.
pub async fn rate_limit(ctx: &Ctx<'_>, key: &str, per_minute: u32) -> ApiResult<()> {
    let d = ctx.ports.rate_hit(key, per_minute, 60).await?;
    ctx.rate.decision.set(Some(d));
    if !d.allowed {
        return Err(ApiError::too_many(
            "rate_limited",
            format!("Too many requests: the limit is {per_minute} a minute."),
            d.reset_secs,
        ));
    }
    Ok(())
}

/// RateLimit-* headers (IETF draft) for a decision.
pub fn headers(d: &Decision, h: &mut http::HeaderMap) {
    h.insert("ratelimit-limit", HeaderValue::from(d.limit));
    h.insert("ratelimit-remaining", HeaderValue::from(d.remaining));
    h.insert("ratelimit-reset", HeaderValue::from(d.reset_secs));
}

/// Refuses a model call over the day's call count or the month's tokens
/// (only usage paid by our keys counts).
pub async fn check_model(ctx: &Ctx<'_>, owner: &str, limits: &Limits) -> ApiResult<()> {
    let row = ctx
        .ports
        .sql
        .query_opt(
            "SELECT
                count(*) FILTER (WHERE created_at >= date_trunc('day', now()))::int8 AS calls_today,
                COALESCE(sum(input_tokens + output_tokens + cache_read_tokens + cache_write_tokens), 0)::int8 AS tokens_month,
                EXTRACT(EPOCH FROM (date_trunc('day', now()) + interval '1 day' - now()))::int8 AS day_left,
                EXTRACT(EPOCH FROM (date_trunc('month', now()) + interval '1 month' - now()))::int8 AS month_left
             FROM usage_ledger
             WHERE owner_id = $1 AND kind = 'model' AND NOT byok AND created_at >= date_trunc('month', now())",
            &[Value::from(owner)],
        )
        .await?
        .ok_or_else(|| ApiError::internal("usage query returned no row"))?;
    if row.int("calls_today")? >= limits.model_calls_day {
        let mut e = ApiError::new(
            http::StatusCode::PAYMENT_REQUIRED,
            "quota_model_calls",
            format!("The daily limit of {} model calls is used up; add your own provider key or upgrade.", limits.model_calls_day),
        );
        e.retry_after = u64::try_from(row.int("day_left")?).ok();
        return Err(e);
    }
    if row.int("tokens_month")? >= limits.model_tokens_month {
        let mut e = ApiError::new(
            http::StatusCode::PAYMENT_REQUIRED,
            "quota_model_tokens",
            format!("The monthly budget of {} model tokens is used up; add your own provider key or upgrade.", limits.model_tokens_month),
        );
        e.retry_after = u64::try_from(row.int("month_left")?).ok();
        return Err(e);
    }
    Ok(())
}
