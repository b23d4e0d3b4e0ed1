//! Rotating refresh tokens, stored hashed. A token is `<id>.<secret>`; using
//! one marks it rotated and issues the next of its family. Presenting a
//! rotated token again means it leaked: the whole family is revoked.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::error::{ApiError, ApiResult};
use crate::ids;
use crate::ports::sql::{transaction, Value};
use crate::routes::Ctx;

pub const REFRESH_TTL_SECS: i64 = 30 * 24 * 3600;

fn hash(secret: &str) -> Vec<u8> {
    Sha256::digest(secret.as_bytes()).to_vec()
}

/// Creates a token in `family` (a new family when `None`); returns the token.
pub async fn issue(ctx: &Ctx<'_>, user_id: &str, family: Option<&str>) -> ApiResult<String> {
    let id = ids::new_id(ctx.ports, "rt");
    let family = family.map_or_else(|| ids::new_id(ctx.ports, "rtf"), str::to_owned);
    let mut raw = [0u8; 32];
    ctx.ports.crypto.fill_random(&mut raw);
    let secret = URL_SAFE_NO_PAD.encode(raw);
    ctx.ports
        .sql
        .execute(
            "INSERT INTO refresh_tokens (id, user_id, family_id, token_hash, expires_at)
             VALUES ($1, $2, $3, $4, now() + make_interval(secs => $5))",
            &[
                id.clone().into(),
                user_id.into(),
                family.into(),
                hash(&secret).into(),
                Value::Float(REFRESH_TTL_SECS as f64),
            ],
        )
        .await?;
    Ok(format!("{id}.{secret}"))
}

fn invalid() -> ApiError {
    ApiError::unauthorized(
        "invalid_refresh_token",
        "The refresh token is invalid, expired or already used. Log in again.",
    )
}

/// Rotates `token`: returns the user id and the next token of its family.
pub async fn rotate(ctx: &Ctx<'_>, token: &str) -> ApiResult<(String, String)> {
    let sql = ctx.ports.sql.as_ref();
    let (id, secret) = token.split_once('.').ok_or_else(invalid)?;
    if !ids::is_valid(id, "rt") {
        return Err(invalid());
    }
    let row = sql
        .query_opt(
            "SELECT user_id, family_id, token_hash, rotated_at IS NOT NULL AS rotated,
                    revoked_at IS NOT NULL AS revoked, expires_at < now() AS expired
             FROM refresh_tokens WHERE id = $1",
            &[id.into()],
        )
        .await?
        .ok_or_else(invalid)?;
    let stored = row.bytes("token_hash")?;
    if !bool::from(stored.ct_eq(&hash(secret))) {
        return Err(invalid());
    }
    let user_id = row.text("user_id")?;
    let family = row.text("family_id")?;
    if row.bool("revoked")? || row.bool("expired")? {
        return Err(invalid());
    }
    let reused = || async {
        revoke_family(ctx, &family).await?;
        crate::db::audit::record(
            sql,
            ctx,
            &user_id,
            "auth.refresh_reuse",
            Some(&family),
            serde_json::json!({}),
        )
        .await?;
        Err::<(String, String), ApiError>(ApiError::unauthorized(
            "refresh_token_reused",
            "This refresh token was already used; every session of this login was signed out.",
        ))
    };
    if row.bool("rotated")? {
        return reused().await;
    }
    let next = transaction(sql, async || {
        let claimed = sql
            .execute(
                "UPDATE refresh_tokens SET rotated_at = now() WHERE id = $1 AND rotated_at IS NULL AND revoked_at IS NULL",
                &[id.into()],
            )
            .await?;
        if claimed == 0 {
            return Ok(None);
        }
        issue(ctx, &user_id, Some(&family)).await.map(Some)
    })
    .await?;
    match next {
        Some(next) => Ok((user_id, next)),
        // Another request rotated it between our read and our claim: that is reuse too.
        None => reused().await,
    }
}

pub async fn revoke_family(ctx: &Ctx<'_>, family: &str) -> ApiResult<()> {
    ctx.ports
        .sql
        .execute(
            "UPDATE refresh_tokens SET revoked_at = now() WHERE family_id = $1 AND revoked_at IS NULL",
            &[family.into()],
        )
        .await?;
    Ok(())
}

/// Revokes the family of `token` if the token is genuine; unknown tokens are ignored.
pub async fn revoke(ctx: &Ctx<'_>, token: &str) -> ApiResult<Option<String>> {
    let Some((id, secret)) = token.split_once('.') else {
        return Ok(None);
    };
    if !ids::is_valid(id, "rt") {
        return Ok(None);
    }
    let Some(row) = ctx
        .ports
        .sql
        .query_opt(
            "SELECT user_id, family_id, token_hash FROM refresh_tokens WHERE id = $1",
            &[id.into()],
        )
        .await?
    else {
        return Ok(None);
    };
    if !bool::from(row.bytes("token_hash")?.ct_eq(&hash(secret))) {
        return Ok(None);
    }
    revoke_family(ctx, &row.text("family_id")?).await?;
    Ok(Some(row.text("user_id")?))
}
