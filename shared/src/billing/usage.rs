//! GET /v1/usage: the caller's tokens, cost and compute this month, by day,
//! with the tier's limits. Sums are integer micro-dollars.

use crate::auth::authenticate;
use crate::error::ApiResult;
use crate::http::request::Request;
use crate::http::response::{ok, Response};
use crate::ports::sql::Value;
use crate::routes::Ctx;

pub async fn get(ctx: &Ctx<'_>, req: &Request) -> ApiResult<Response> {
    let caller = authenticate(ctx, req).await?;
    let rows = ctx
        .ports
        .sql
        .query(
            "SELECT to_char(date_trunc('day', created_at), 'YYYY-MM-DD') AS day, kind,
                    count(*)::int8 AS calls,
                    COALESCE(sum(input_tokens), 0)::int8 AS input_tokens,
                    COALESCE(sum(output_tokens), 0)::int8 AS output_tokens,
                    COALESCE(sum(cache_read_tokens), 0)::int8 AS cache_read_tokens,
                    COALESCE(sum(cache_write_tokens), 0)::int8 AS cache_write_tokens,
                    COALESCE(sum(cost_micros), 0)::int8 AS cost_micros,
                    COALESCE(sum(compute_seconds), 0)::int8 AS compute_seconds,
                    COALESCE(sum(cost_micros) FILTER (WHERE byok), 0)::int8 AS byok_cost_micros,
                    COALESCE(sum(input_tokens + output_tokens + cache_read_tokens + cache_write_tokens) FILTER (WHERE NOT byok), 0)::int8 AS billable_tokens
             FROM usage_ledger
             WHERE owner_id = $1 AND created_at >= date_trunc('month', now())
             GROUP BY 1, 2 ORDER BY 1, 2",
            &[Value::from(caller.id())],
        )
        .await?;
    let mut by_day = Vec::new();
    let (mut tokens, mut cost, mut calls, mut billable, mut byok_cost) =
        (0i64, 0i64, 0i64, 0i64, 0i64);
    let mut compute_seconds = 0i64;
    for r in &rows {
        let t = r.int("input_tokens")?
            + r.int("output_tokens")?
            + r.int("cache_read_tokens")?
            + r.int("cache_write_tokens")?;
        tokens += t;
        cost += r.int("cost_micros")?;
        compute_seconds += r.int("compute_seconds")?;
        calls += r.int("calls")?;
        billable += r.int("billable_tokens")?;
        byok_cost += r.int("byok_cost_micros")?;
        by_day.push(serde_json::json!({
            "day": r.text("day")?, "kind": r.text("kind")?, "calls": r.int("calls")?,
            "input_tokens": r.int("input_tokens")?, "output_tokens": r.int("output_tokens")?,
            "cache_read_tokens": r.int("cache_read_tokens")?, "cache_write_tokens": r.int("cache_write_tokens")?,
            "cost_micros": r.int("cost_micros")?, "compute_seconds": r.int("compute_seconds")?,
        }));
    }
    Ok(ok(&serde_json::json!({
        "period": "month",
        "tier": caller.user.tier,
        "limits": caller.user.limits(),
        "totals": {
            "model_calls": calls, "tokens": tokens, "billable_tokens": billable,
            "cost_micros": cost, "byok_cost_micros": byok_cost, "compute_minutes": (compute_seconds + 59) / 60,
        },
        "by_day": by_day,
    })))
}
