//! Bring-your-own model provider keys: validated with a cheap call to the
//! provider, sealed with AES-256-GCM under `KEYS_ENCRYPTION_KEY` (tagged
//! with its key id so keys rotate: rows sealed by an older key are opened
//! with it and re-sealed under the current one), never returned or logged;
//! only the last four characters are shown.

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use bytes::Bytes;
use serde::Deserialize;

use crate::auth::authenticate;
use crate::config::Config;
use crate::db::audit;
use crate::error::{ApiError, ApiResult};
use crate::http::request::{json_body, Request};
use crate::http::response::{no_content, ok, Response};
use crate::routes::Ctx;

pub const PROVIDERS: &[&str] = &["anthropic", "openai"];

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PutKey {
    api_key: String,
}

fn cipher(key: &[u8; 32]) -> Aes256Gcm {
    Aes256Gcm::new(key.into())
}

/// The associated data binds a ciphertext to its owner and provider, so a
/// row copied onto another user's does not open.
fn aad(owner: &str, provider: &str) -> Vec<u8> {
    format!("everjust-key:{owner}:{provider}").into_bytes()
}

pub fn seal(
    config: &Config,
    random: [u8; 12],
    owner: &str,
    provider: &str,
    plaintext: &str,
) -> ApiResult<(String, Vec<u8>, Vec<u8>)> {
    let (id, key) = config.encryption_keys.first().ok_or_else(|| {
        ApiError::unavailable(
            "keys_unavailable",
            "Storing provider keys needs KEYS_ENCRYPTION_KEY on the server.",
        )
    })?;
    let ct = cipher(key)
        .encrypt(
            &Nonce::from(random),
            Payload {
                msg: plaintext.as_bytes(),
                aad: &aad(owner, provider),
            },
        )
        .map_err(|_| ApiError::internal("encryption failed"))?;
    Ok((id.clone(), random.to_vec(), ct))
}

pub fn open(
    config: &Config,
    key_id: &str,
    nonce: &[u8],
    ct: &[u8],
    owner: &str,
    provider: &str,
) -> ApiResult<String> {
    let unreadable = || {
        ApiError::new(
            http::StatusCode::CONFLICT,
            "key_unreadable",
            "The stored provider key cannot be decrypted; set it again.",
        )
    };
    let (_, key) = config
        .encryption_keys
        .iter()
        .find(|(id, _)| id == key_id)
        .ok_or_else(unreadable)?;
    let nonce: [u8; 12] = nonce.try_into().map_err(|_| unreadable())?;
    let pt = cipher(key)
        .decrypt(
            &Nonce::from(nonce),
            Payload {
                msg: ct,
                aad: &aad(owner, provider),
            },
        )
        .map_err(|_| unreadable())?;
    String::from_utf8(pt).map_err(|_| unreadable())
}

fn provider_param(ctx: &Ctx<'_>) -> ApiResult<&'static str> {
    let p = ctx.params.get("provider");
    PROVIDERS
        .iter()
        .copied()
        .find(|x| *x == p)
        .ok_or_else(|| ApiError::not_found("provider"))
}

fn last4(key: &str) -> String {
    let chars: Vec<char> = key.chars().collect();
    chars[chars.len().saturating_sub(4)..].iter().collect()
}

/// Checks the key with the provider's cheapest authenticated call.
async fn validate(ctx: &Ctx<'_>, provider: &str, key: &str) -> ApiResult<()> {
    let config = ctx.ports.config()?;
    let base = match provider {
        "anthropic" => config
            .anthropic
            .as_ref()
            .map_or("https://api.anthropic.com", |c| c.base_url.as_str()),
        _ => config
            .openai
            .as_ref()
            .map_or("https://api.openai.com", |c| c.base_url.as_str()),
    };
    let mut b = http::Request::get(format!("{}/v1/models", base.trim_end_matches('/')));
    b = if provider == "anthropic" {
        b.header("x-api-key", key)
            .header("anthropic-version", crate::llm::anthropic::VERSION)
    } else {
        b.header("authorization", format!("Bearer {key}"))
    };
    let req = b.body(Bytes::new()).map_err(|_| {
        ApiError::bad_request("key_rejected", "The key is not a valid header value.")
    })?;
    match ctx.ports.http.send(req).await {
        Ok(res) if res.status().is_success() => Ok(()),
        Ok(res) if res.status() == 401 || res.status() == 403 => Err(ApiError::bad_request(
            "key_rejected",
            format!("{provider} rejected this key."),
        )),
        Ok(res) => Err(ApiError::unavailable(
            "provider_unavailable",
            format!(
                "{provider} answered {} while checking the key; try again.",
                res.status().as_u16()
            ),
        )),
        Err(_) => Err(ApiError::unavailable(
            "provider_unavailable",
            format!("{provider} could not be reached to check the key; try again."),
        )),
    }
}

pub async fn put(ctx: &Ctx<'_>, req: &Request) -> ApiResult<Response> {
    let caller = authenticate(ctx, req).await?;
    let provider = provider_param(ctx)?;
    let body: PutKey = json_body(req)?;
    let key = body.api_key.trim();
    // Keys are visible ASCII: one goes in a header, which a Worker's fetch
    // refuses beyond Latin-1 (it would read as the provider being down).
    if key.len() < 8 || key.len() > 512 || !key.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(ApiError::bad_request(
            "invalid_key",
            "That does not look like an API key.",
        ));
    }
    let config = ctx.ports.config()?;
    if config.encryption_keys.is_empty() {
        return Err(ApiError::unavailable(
            "keys_unavailable",
            "Storing provider keys needs KEYS_ENCRYPTION_KEY on the server.",
        ));
    }
    validate(ctx, provider, key).await?;
    let mut nonce = [0u8; 12];
    ctx.ports.crypto.fill_random(&mut nonce);
    let (key_id, nonce, ct) = seal(config, nonce, caller.id(), provider, key)?;
    let sql = ctx.ports.sql.as_ref();
    sql.execute(
        "INSERT INTO provider_keys (owner_id, provider, key_id, nonce, ciphertext, last4) VALUES ($1, $2, $3, $4, $5, $6)
         ON CONFLICT (owner_id, provider) DO UPDATE SET key_id = EXCLUDED.key_id, nonce = EXCLUDED.nonce,
             ciphertext = EXCLUDED.ciphertext, last4 = EXCLUDED.last4, updated_at = now()",
        &[caller.id().into(), provider.into(), key_id.into(), nonce.into(), ct.into(), last4(key).into()],
    )
    .await?;
    audit::record(
        sql,
        ctx,
        caller.id(),
        "key.set",
        Some(provider),
        serde_json::json!({ "last4": last4(key) }),
    )
    .await?;
    Ok(ok(
        &serde_json::json!({ "provider": provider, "last4": last4(key) }),
    ))
}

pub async fn delete(ctx: &Ctx<'_>, req: &Request) -> ApiResult<Response> {
    let caller = authenticate(ctx, req).await?;
    let provider = provider_param(ctx)?;
    let sql = ctx.ports.sql.as_ref();
    let n = sql
        .execute(
            "DELETE FROM provider_keys WHERE owner_id = $1 AND provider = $2",
            &[caller.id().into(), provider.into()],
        )
        .await?;
    if n == 0 {
        return Err(ApiError::not_found("key"));
    }
    audit::record(
        sql,
        ctx,
        caller.id(),
        "key.delete",
        Some(provider),
        serde_json::json!({}),
    )
    .await?;
    Ok(no_content())
}

pub async fn list(ctx: &Ctx<'_>, req: &Request) -> ApiResult<Response> {
    let caller = authenticate(ctx, req).await?;
    let rows = ctx
        .ports
        .sql
        .query("SELECT provider, last4, updated_at AT TIME ZONE 'UTC' AS updated_at FROM provider_keys WHERE owner_id = $1 ORDER BY provider", &[caller.id().into()])
        .await?;
    let items: Vec<_> = rows
        .iter()
        .map(|r| {
            Ok(serde_json::json!({
                "provider": r.text("provider")?, "last4": r.text("last4")?,
                "updated_at": crate::pagination::rfc3339(r.int("updated_at")?),
            }))
        })
        .collect::<Result<_, crate::ports::sql::SqlError>>()?;
    Ok(ok(
        &serde_json::json!({ "items": items, "next_cursor": null }),
    ))
}

/// The user's own keys, opened, with their providers: one statement for
/// all of them, on the way to every run's first token. A key an older
/// encryption key sealed is re-sealed under the current one.
pub async fn user_keys(ctx: &Ctx<'_>, owner: &str) -> ApiResult<Vec<(&'static str, String)>> {
    let rows = ctx
        .ports
        .sql
        .query(
            "SELECT provider, key_id, nonce, ciphertext FROM provider_keys WHERE owner_id = $1",
            &[owner.into()],
        )
        .await?;
    let mut keys = Vec::new();
    for row in &rows {
        let stored = row.text("provider")?;
        // A provider no longer offered is left out.
        if let Some(provider) = PROVIDERS.iter().find(|p| **p == stored) {
            keys.push((*provider, open_row(ctx, owner, provider, row).await?));
        }
    }
    Ok(keys)
}

/// A stored key's row, opened (and re-sealed when an older key sealed it).
async fn open_row(
    ctx: &Ctx<'_>,
    owner: &str,
    provider: &str,
    row: &crate::ports::sql::Row,
) -> ApiResult<String> {
    let sql = ctx.ports.sql.as_ref();
    let config = ctx.ports.config()?;
    let key_id = row.text("key_id")?;
    let plain = open(
        config,
        &key_id,
        &row.bytes("nonce")?,
        &row.bytes("ciphertext")?,
        owner,
        provider,
    )?;
    if config
        .encryption_keys
        .first()
        .is_some_and(|(current, _)| *current != key_id)
    {
        let mut nonce = [0u8; 12];
        ctx.ports.crypto.fill_random(&mut nonce);
        let (id, nonce, ct) = seal(config, nonce, owner, provider, &plain)?;
        sql.execute(
            "UPDATE provider_keys SET key_id = $3, nonce = $4, ciphertext = $5, updated_at = now() WHERE owner_id = $1 AND provider = $2",
            &[owner.into(), provider.into(), id.into(), nonce.into(), ct.into()],
        )
        .await?;
    }
    Ok(plain)
}
