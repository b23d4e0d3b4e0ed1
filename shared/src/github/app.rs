//! GitHub App auth: the app's own JWT (RS256, `iat` 60 s in the past, `exp`
//! 9 min ahead, `iss` = app id), exchanged for one-hour installation tokens
//! that are cached in KV until 5 minutes before they expire. Neither the key
//! nor a token is ever logged or put in an error.

use base64::Engine as _;
use chrono::{DateTime, Duration, Utc};
use jwt_compact::alg::{Rsa, RsaPrivateKey};
use jwt_compact::{AlgorithmExt, Claims, Header};
use rsa::pkcs1::DecodeRsaPrivateKey;
use rsa::pkcs8::DecodePrivateKey;
use serde::{Deserialize, Serialize};

use super::api::{Api, GhError};
use crate::config::GithubConfig;
use crate::error::{ApiError, ApiResult};
use crate::ports::Ports;

/// A cached installation token is used until this long before it expires.
pub const TOKEN_MARGIN_SECS: i64 = 5 * 60;

/// Parses the app's private key: PKCS#1 (`BEGIN RSA PRIVATE KEY`, what
/// GitHub hands out) or PKCS#8 (`BEGIN PRIVATE KEY`); text around the PEM
/// block is ignored.
pub fn parse_key(pem: &str) -> Result<RsaPrivateKey, &'static str> {
    let pem = pem.replace("\\n", "\n");
    let (label, body) = ["RSA PRIVATE KEY", "PRIVATE KEY"]
        .iter()
        .find_map(|label| {
            let begin = format!("-----BEGIN {label}-----");
            let end = format!("-----END {label}-----");
            let start = pem.find(&begin)? + begin.len();
            let stop = start + pem[start..].find(&end)?;
            Some((*label, &pem[start..stop]))
        })
        .ok_or("not a PEM private key")?;
    let b64: String = body.chars().filter(|c| !c.is_whitespace()).collect();
    let der = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .map_err(|_| "the PEM body is not base64")?;
    if label == "RSA PRIVATE KEY" {
        RsaPrivateKey::from_pkcs1_der(&der).map_err(|_| "not a PKCS#1 RSA key")
    } else {
        RsaPrivateKey::from_pkcs8_der(&der).map_err(|_| "not a PKCS#8 RSA key")
    }
}

#[derive(Serialize, Deserialize)]
struct AppClaims {
    iss: String,
}

/// The app's JWT at `now_ms`.
pub fn app_jwt(config: &GithubConfig, now_ms: i64) -> ApiResult<String> {
    let key = parse_key(&config.private_key_pem).map_err(|why| {
        crate::log::error("github_key_invalid", why);
        ApiError::unavailable(
            "github_misconfigured",
            "The GitHub App key of this server cannot be read.",
        )
    })?;
    let now = DateTime::<Utc>::from_timestamp_millis(now_ms).unwrap_or_default();
    let mut claims = Claims::new(AppClaims {
        iss: config.app_id.clone(),
    });
    // GitHub allows at most 10 minutes; keep a margin for clock skew.
    claims.expiration = Some(now + Duration::minutes(9));
    claims.issued_at = Some(now - Duration::seconds(60));
    Rsa::rs256()
        .token(&Header::empty(), &claims, &key)
        .map_err(|e| ApiError::internal(format!("app jwt: {e}")))
}

#[derive(Serialize, Deserialize)]
struct CachedToken {
    token: String,
    expires_ms: i64,
}

fn cache_key(installation: i64) -> String {
    format!("github:token:{installation}")
}

/// An installation token: from KV while it has more than 5 minutes left,
/// else a fresh one from `POST /app/installations/{id}/access_tokens`.
pub async fn installation_token(
    ports: &Ports,
    config: &GithubConfig,
    installation: i64,
) -> ApiResult<String> {
    let now = ports.clock.now_ms();
    let key = cache_key(installation);
    if let Some(raw) = ports.kv.get(&key).await.ok().flatten() {
        if let Ok(c) = serde_json::from_slice::<CachedToken>(&raw) {
            if c.expires_ms - TOKEN_MARGIN_SECS * 1000 > now {
                return Ok(c.token);
            }
        }
    }
    let api = Api::app(ports, config)?;
    let res = api
        .raw(
            http::Method::POST,
            &format!("/app/installations/{installation}/access_tokens"),
            Some(&serde_json::json!({})),
        )
        .await
        .map_err(|e| match e {
            GhError::Status { status: 404, .. } => ApiError::not_found("installation"),
            GhError::Status { status: 403, .. } => ApiError::forbidden(
                "github_installation_suspended",
                "The GitHub App installation is suspended or lacks access.",
            ),
            other => other.into_api(),
        })?;
    let token = res["token"]
        .as_str()
        .ok_or_else(|| ApiError::internal("installation token response without token"))?
        .to_owned();
    let expires_ms = res["expires_at"]
        .as_str()
        .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
        .map_or(now + 3_600_000, |d| d.timestamp_millis());
    let ttl = (expires_ms - now) / 1000 - TOKEN_MARGIN_SECS;
    if ttl >= 60 {
        let cached = serde_json::to_vec(&CachedToken {
            token: token.clone(),
            expires_ms,
        })
        .unwrap_or_default();
        // A cache: losing it costs one more exchange.
        let _ = ports
            .kv
            .put(&key, &cached, Some(u64::try_from(ttl).unwrap_or(60)))
            .await;
    }
    Ok(token)
}

/// Forgets a cached token GitHub refused.
pub async fn forget_token(ports: &Ports, installation: i64) {
    let _ = ports.kv.delete(&cache_key(installation)).await;
}
