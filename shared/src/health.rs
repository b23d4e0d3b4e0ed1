//! Liveness, readiness and the in-runtime port conformance route.

use crate::error::{ApiError, ApiResult};
use crate::http::request::{query_param, Request};
use crate::http::response::{ok, Response};
use crate::ports::conformance;
use crate::routes::Ctx;

pub fn health() -> Response {
    ok(&serde_json::json!({ "status": "ok" }))
}

/// 200 when Postgres and KV answer, else 503 naming what is down. The
/// answer also says whether the API rate limits are exact.
pub async fn ready(ctx: &Ctx<'_>) -> ApiResult<Response> {
    let pg = ctx.ports.sql.query("SELECT 1 AS one", &[]).await;
    let kv = ctx.ports.kv.get("ready:probe").await;
    let mut failing = Vec::new();
    if let Err(e) = &pg {
        crate::log::error("ready_postgres", &e.to_string());
        failing.push("postgres");
    }
    if let Err(e) = &kv {
        crate::log::error("ready_kv", &e.to_string());
        failing.push("kv");
    }
    if failing.is_empty() {
        // Whether the API rate limits are exact here (the Worker's Durable
        // Object limiter) or approximate (KV), for operators and tests.
        let exact = ctx.ports.limiter.as_ref().is_some_and(|l| l.exact());
        Ok(ok(&serde_json::json!({
            "status": "ready",
            "checks": { "postgres": "ok", "kv": "ok" },
            "rate_limiter": if exact { "exact" } else { "approximate" },
        })))
    } else {
        Err(ApiError::unavailable(
            "not_ready",
            format!("Not ready: {} unreachable.", failing.join(" and ")),
        )
        .with_extra(serde_json::json!({ "failing": failing })))
    }
}

/// Runs the port conformance suites inside this runtime (development only);
/// with `?http=<echo server URL>` the outbound HTTP suite too.
pub async fn conformance(ctx: &Ctx<'_>, req: &Request) -> ApiResult<Response> {
    if !ctx.ports.config()?.development {
        return Err(ApiError::not_found("route"));
    }
    let prefix = crate::ids::new_id(ctx.ports, "conf");
    let kv = conformance::kv_suite(ctx.ports.kv.as_ref(), &prefix).await;
    let sql = conformance::sql_suite(ctx.ports.sql.as_ref(), &prefix).await;
    let kv_limiter = crate::ports::ratelimit::KvRateLimiter {
        kv: ctx.ports.kv.clone(),
        clock: ctx.ports.clock.clone(),
    };
    let limiter: &dyn crate::ports::ratelimit::RateLimiter = match &ctx.ports.limiter {
        Some(l) => l.as_ref(),
        None => &kv_limiter,
    };
    let ratelimit = crate::ports::ratelimit::conformance_suite(limiter, &prefix).await;
    let crypto = conformance::crypto_suite(ctx.ports.crypto.as_ref()).await;
    let clock = conformance::clock_suite(ctx.ports.clock.as_ref()).await;
    let http = match query_param(req, "http") {
        Some(echo) => Some(conformance::http_suite(ctx.ports.http.as_ref(), &echo).await),
        None => None,
    };
    let all_ok = [&kv, &sql, &ratelimit, &crypto, &clock]
        .into_iter()
        .chain(http.as_ref())
        .all(|suite| suite.iter().all(|c| c.ok));
    let mut answer = serde_json::json!({
        "ok": all_ok,
        "kv": kv,
        "sql": sql,
        "ratelimit": ratelimit,
        "crypto": crypto,
        "clock": clock,
    });
    if let Some(http) = http {
        answer["http"] = serde_json::json!(http);
    }
    Ok(ok(&answer))
}
