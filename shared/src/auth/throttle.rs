//! Login throttling: failed attempts counted per account and per client IP
//! in fixed windows in the KV store. Workers KV is eventually consistent, so
//! this limit is approximate across locations (a burst spread over many
//! edge locations may get a few extra tries); it exists to stop password
//! guessing, which it does at any such error margin.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::{ApiError, ApiResult};
use crate::routes::Ctx;

pub const WINDOW_SECS: i64 = 15 * 60;
pub const MAX_PER_ACCOUNT: u32 = 5;
pub const MAX_PER_IP: u32 = 20;

#[derive(Serialize, Deserialize, Default)]
struct Window {
    count: u32,
    start_ms: i64,
}

fn keys(ctx: &Ctx<'_>, email_normalized: &str) -> Vec<(String, u32)> {
    let digest = Sha256::digest(email_normalized.as_bytes());
    let mut keys = vec![(
        format!(
            "login:acct:{}",
            crate::projects::handlers::hex(&digest[..16])
        ),
        MAX_PER_ACCOUNT,
    )];
    if let Some(ip) = &ctx.meta.client_ip {
        keys.push((format!("login:ip:{ip}"), MAX_PER_IP));
    }
    keys
}

async fn read(ctx: &Ctx<'_>, key: &str, now: i64) -> ApiResult<Window> {
    let w = ctx
        .ports
        .kv
        .get(key)
        .await?
        .and_then(|b| serde_json::from_slice::<Window>(&b).ok())
        .unwrap_or_default();
    Ok(if now - w.start_ms >= WINDOW_SECS * 1000 {
        Window {
            count: 0,
            start_ms: now,
        }
    } else {
        w
    })
}

/// Refuses with 429 while the account or the IP is over its limit.
pub async fn check(ctx: &Ctx<'_>, email_normalized: &str) -> ApiResult<()> {
    let now = ctx.ports.clock.now_ms();
    for (key, max) in keys(ctx, email_normalized) {
        let w = read(ctx, &key, now).await?;
        if w.count >= max {
            let retry = ((w.start_ms + WINDOW_SECS * 1000 - now) / 1000).max(1);
            return Err(ApiError::too_many(
                "too_many_attempts",
                "Too many failed login attempts. Wait before trying again.",
                u64::try_from(retry).unwrap_or(1),
            ));
        }
    }
    Ok(())
}

/// Counts one failed attempt against the account and the IP.
pub async fn failed(ctx: &Ctx<'_>, email_normalized: &str) -> ApiResult<()> {
    let now = ctx.ports.clock.now_ms();
    for (key, _) in keys(ctx, email_normalized) {
        let mut w = read(ctx, &key, now).await?;
        w.count += 1;
        let ttl = u64::try_from((w.start_ms + WINDOW_SECS * 1000 - now) / 1000)
            .unwrap_or(0)
            .max(60);
        let bytes = serde_json::to_vec(&w).unwrap_or_default();
        ctx.ports.kv.put(&key, &bytes, Some(ttl)).await?;
    }
    Ok(())
}

/// Clears the account's counter after a successful login.
pub async fn succeeded(ctx: &Ctx<'_>, email_normalized: &str) -> ApiResult<()> {
    if let Some((key, _)) = keys(ctx, email_normalized).into_iter().next() {
        ctx.ports.kv.delete(&key).await?;
    }
    Ok(())
}
