//! GET /v1/usage: the caller's tokens, cost and compute this month, by UTC
//! day, with the tier's limits. Sums are integer micro-dollars. Read from
//! the ledger's daily sums (`usage_days`, migration 0009), not its rows: a
//! heavy user's month holds 100,000 of them (`scripts/bench-usage`).

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
            "SELECT to_char(day, 'YYYY-MM-DD') AS day, kind,
                    sum(calls)::int8 AS calls,
                    sum(input_tokens)::int8 AS input_tokens,
                    sum(output_tokens)::int8 AS output_tokens,
                    sum(cache_read_tokens)::int8 AS cache_read_tokens,
                    sum(cache_write_tokens)::int8 AS cache_write_tokens,
                    sum(cost_micros)::int8 AS cost_micros,
                    sum(compute_seconds)::int8 AS compute_seconds,
                    COALESCE(sum(cost_micros) FILTER (WHERE byok), 0)::int8 AS byok_cost_micros,
                    COALESCE(sum(input_tokens + output_tokens + cache_read_tokens + cache_write_tokens) FILTER (WHERE NOT byok), 0)::int8 AS billable_tokens
             FROM usage_days
             WHERE owner_id = $1 AND day >= date_trunc('month', now() AT TIME ZONE 'UTC')::date
             GROUP BY 1, 2 HAVING sum(calls) > 0 ORDER BY 1, 2",
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
