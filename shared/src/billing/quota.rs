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
//! are read from the Postgres ledger (exact as of the last settled call),
//! with runs in flight holding a reservation (see [`check_model`]): runs
//! racing for the last unit of budget overdraw it by at most one call.

use http::HeaderValue;

use super::tiers::Limits;
use crate::error::{ApiError, ApiResult};
use crate::ports::ratelimit::{Decision, EarlyHit};
use crate::ports::sql::Value;
use crate::routes::Ctx;

/// Counts one request of `key` against `per_minute`; 429 over it. The
/// decision is kept for the response's RateLimit-* headers.
pub async fn rate_limit(ctx: &Ctx<'_>, key: &str, per_minute: u32) -> ApiResult<()> {
    let d = ctx.ports.rate_hit(key, per_minute, 60).await?;
    settle(ctx, d)
}

/// A hit on the limit the limiter remembers for `key` (`None`: nothing
/// counted), made before the caller's limit is known (alongside its
/// lookup); [`rate_limit_settled`] judges it once the limit is known.
pub async fn rate_hit_early(ctx: &Ctx<'_>, key: &str) -> Option<EarlyHit> {
    // A limiter that cannot be reached now is asked again, in line.
    ctx.ports.rate_hit_remembered(key, 60).await.ok().flatten()
}

/// [`rate_limit`] for a request whose hit went out early: the early hit
/// judged on `per_minute` (taken back when that refuses it), or a hit made
/// now when there was none or the remembered limit refused one this limit
/// allows.
pub async fn rate_limit_settled(
    ctx: &Ctx<'_>,
    key: &str,
    per_minute: u32,
    early: Option<EarlyHit>,
) -> ApiResult<()> {
    let Some(early) = early else {
        return rate_limit(ctx, key, per_minute).await;
    };
    let d = early.judged(per_minute);
    match (early.decision.allowed, d.allowed) {
        (false, true) => rate_limit(ctx, key, per_minute).await,
        (true, false) => {
            ctx.ports.rate_unhit(key, per_minute, 60).await?;
            settle(ctx, d)
        }
        _ => settle(ctx, d),
    }
}

/// Keeps the decision for the response's headers; 429 when it refuses.
fn settle(ctx: &Ctx<'_>, d: Decision) -> ApiResult<()> {
    ctx.rate.decision.set(Some(d));
    if !d.allowed {
        return Err(ApiError::too_many(
            "rate_limited",
            format!("Too many requests: the limit is {} a minute.", d.limit),
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
///
/// Runs in flight hold a reservation: each running run of the owner that
/// started before the caller's (the agent's `Ctx` carries its run id as
/// `request_id`; all of them when the caller is not a run, i.e. a request
/// about to start one) counts as one more call and as one
/// call's estimate of tokens (`AGENT_MAX_TOKENS`), since its usage is not
/// settled yet. So when runs race for the last unit of budget only the
/// earliest goes on, and the budget is overdrawn by at most that run's
/// call. (Runs are ordered by `started_at`, then id; two inserts that
/// commit in the other order than they began could both pass, a window of
/// one INSERT statement.)
pub async fn check_model(ctx: &Ctx<'_>, owner: &str, limits: &Limits) -> ApiResult<()> {
    judge_model(ctx, &model_usage(ctx, owner).await?, limits)
}

/// What [`check_model`] weighs: the owner's model use today and this month,
/// and their runs in flight (each counted at the largest answer it may get).
#[derive(Debug, Clone)]
pub struct ModelUsage {
    calls_today: i64,
    tokens_month: i64,
    in_flight: i64,
    day_left: i64,
    month_left: i64,
}

/// Reads the owner's [`ModelUsage`] (one statement; it needs no limits, so
/// it can go out before the owner's row is read). Days and months are UTC.
/// The totals come from `usage_days` (migration 0009: the ledger summed by
/// UTC day, kind and payer), at most 31 rows here, not from the month's
/// ledger rows: this read is on the way to every run's first token, and
/// the ledger grows with every model call (`scripts/bench-usage`).
/// `usage_daily` (0008), which it read before, was dropped in 0010.
pub async fn model_usage(ctx: &Ctx<'_>, owner: &str) -> ApiResult<ModelUsage> {
    let row = ctx
        .ports
        .sql
        .query_opt(
            "SELECT
                COALESCE(sum(calls) FILTER (WHERE day = (now() AT TIME ZONE 'UTC')::date), 0)::int8 AS calls_today,
                COALESCE(sum(input_tokens + output_tokens + cache_read_tokens + cache_write_tokens), 0)::int8 AS tokens_month,
                EXTRACT(EPOCH FROM (date_trunc('day', now() AT TIME ZONE 'UTC') + interval '1 day' - now() AT TIME ZONE 'UTC'))::int8 AS day_left,
                EXTRACT(EPOCH FROM (date_trunc('month', now() AT TIME ZONE 'UTC') + interval '1 month' - now() AT TIME ZONE 'UTC'))::int8 AS month_left,
                (SELECT count(*) FROM runs r
                  WHERE r.owner_id = $1 AND r.status = 'running' AND r.id <> $2
                    AND (NOT EXISTS (SELECT 1 FROM runs m WHERE m.id = $2 AND m.owner_id = $1)
                         OR (r.started_at, r.id) < (SELECT m.started_at, m.id FROM runs m WHERE m.id = $2)))::int8 AS in_flight
             FROM usage_days
             WHERE owner_id = $1 AND kind = 'model' AND NOT byok
               AND day >= date_trunc('month', now() AT TIME ZONE 'UTC')::date",
            &[Value::from(owner), Value::from(ctx.request_id)],
        )
        .await?
        .ok_or_else(|| ApiError::internal("usage query returned no row"))?;
    Ok(ModelUsage {
        calls_today: row.int("calls_today")?,
        tokens_month: row.int("tokens_month")?,
        in_flight: row.int("in_flight")?,
        day_left: row.int("day_left")?,
        month_left: row.int("month_left")?,
    })
}

impl ModelUsage {
    /// The owner's runs in progress started before this request's run
    /// (all of them, when the request stored none).
    pub fn in_flight(&self) -> i64 {
        self.in_flight
    }
}

/// [`check_model`]'s verdict on usage already read.
pub fn judge_model(ctx: &Ctx<'_>, usage: &ModelUsage, limits: &Limits) -> ApiResult<()> {
    let estimate = i64::from(ctx.ports.config()?.agent_max_tokens);
    let in_flight = usage.in_flight;
    if usage.calls_today + in_flight >= limits.model_calls_day {
        let mut e = ApiError::new(
            http::StatusCode::PAYMENT_REQUIRED,
            "quota_model_calls",
            format!("The daily limit of {} model calls is used up; add your own provider key or upgrade.", limits.model_calls_day),
        );
        e.retry_after = u64::try_from(usage.day_left).ok();
        return Err(e);
    }
    if usage.tokens_month + in_flight.saturating_mul(estimate) >= limits.model_tokens_month {
        let mut e = ApiError::new(
            http::StatusCode::PAYMENT_REQUIRED,
            "quota_model_tokens",
            format!("The monthly budget of {} model tokens is used up; add your own provider key or upgrade.", limits.model_tokens_month),
        );
        e.retry_after = u64::try_from(usage.month_left).ok();
        return Err(e);
    }
    Ok(())
}
