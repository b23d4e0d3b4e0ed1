//! External OIDC (Auth0 and others): RS256 / ES256 tokens verified against
//! the issuer's JWKS. The JWKS is cached in KV for an hour and refetched on
//! an unknown `kid` at most once a minute. The accepted algorithms come from
//! configuration; the token's `alg` only has to be one of them and match
//! the key type, so `none` and HS256-with-the-public-key fail.

use bytes::Bytes;
use chrono::{DateTime, Duration};
use jwt_compact::alg::{Es256, Rsa, RsaPublicKey};
use jwt_compact::jwk::JsonWebKey;
use jwt_compact::{Algorithm, AlgorithmExt, Claims, TimeOptions, UntrustedToken};
use serde::Deserialize;
use subtle::ConstantTimeEq;

use crate::config::{OidcAlg, OidcConfig};
use crate::error::ApiResult;
use crate::routes::Ctx;

const JWKS_TTL_SECS: u64 = 3600;
const REFETCH_INTERVAL_SECS: u64 = 60;
const LEEWAY_SECS: i64 = 60;

/// A verified external identity.
#[derive(Debug, Clone)]
pub struct Identity {
    pub issuer: String,
    pub subject: String,
    pub email: Option<String>,
}

#[derive(Clone, Deserialize)]
#[serde(untagged)]
enum Audience {
    One(String),
    Many(Vec<String>),
}

#[derive(Clone, Deserialize)]
struct OidcClaims {
    iss: String,
    sub: String,
    aud: Audience,
    email: Option<String>,
    email_verified: Option<bool>,
    nonce: Option<String>,
    azp: Option<String>,
}

/// What a token must carry besides the configured issuer and a valid signature.
#[derive(Debug, Clone, Copy)]
pub struct Expect<'a> {
    /// The `aud` (one of them when it is a list).
    pub audience: &'a str,
    /// An ID token of our own login: its `nonce` must be this one, and an
    /// `azp`, when present, must be the audience (our client id).
    pub nonce: Option<&'a str>,
}

/// Verifies a bearer `token` (audience `OIDC_AUDIENCE`); `Ok(None)` when it is not acceptable.
pub async fn verify(ctx: &Ctx<'_>, token: &str) -> ApiResult<Option<Identity>> {
    let config = ctx.ports.config()?;
    let Some(oidc) = &config.oidc else {
        return Ok(None);
    };
    let expect = Expect {
        audience: &oidc.audience,
        nonce: None,
    };
    verify_with(ctx, oidc, token, expect).await
}

/// Verifies `token` of the configured issuer against its JWKS and `expect`.
pub async fn verify_with(
    ctx: &Ctx<'_>,
    oidc: &OidcConfig,
    token: &str,
    expect: Expect<'_>,
) -> ApiResult<Option<Identity>> {
    let Ok(untrusted) = UntrustedToken::new(token) else {
        return Ok(None);
    };
    let alg = match untrusted.algorithm() {
        "RS256" => OidcAlg::Rs256,
        "ES256" => OidcAlg::Es256,
        _ => return Ok(None),
    };
    if !oidc.algorithms.contains(&alg) {
        return Ok(None);
    }
    let Some(kid) = untrusted.header().key_id.clone() else {
        return Ok(None);
    };
    let Some(raw) = find_key(ctx, oidc, &kid).await? else {
        return Ok(None);
    };
    let Ok(jwk) = serde_json::from_value::<JsonWebKey<'_>>(raw) else {
        return Ok(None);
    };
    let claims = match alg {
        OidcAlg::Rs256 => {
            let Ok(key) = RsaPublicKey::try_from(&jwk) else {
                return Ok(None);
            };
            validate(&Rsa::rs256(), &key, &untrusted)
        }
        OidcAlg::Es256 => {
            let Ok(key) = <Es256 as Algorithm>::VerifyingKey::try_from(&jwk) else {
                return Ok(None);
            };
            validate(&Es256, &key, &untrusted)
        }
    };
    let Some(claims) = claims else {
        return Ok(None);
    };
    let now = DateTime::from_timestamp_millis(ctx.ports.clock.now_ms()).unwrap_or_default();
    let time = TimeOptions::new(Duration::seconds(LEEWAY_SECS), move || now);
    if claims.expiration.is_none()
        || claims.validate_expiration(&time).is_err()
        // Auth0 and Google send no `nbf`: check it only when present.
        || (claims.not_before.is_some() && claims.validate_maturity(&time).is_err())
    {
        return Ok(None);
    }
    let c = claims.custom;
    let aud_ok = match &c.aud {
        Audience::One(a) => a == expect.audience,
        Audience::Many(v) => v.iter().any(|a| a == expect.audience),
    };
    if c.iss != oidc.issuer || !aud_ok || c.sub.is_empty() {
        return Ok(None);
    }
    if let Some(nonce) = expect.nonce {
        let nonce_ok = c
            .nonce
            .as_deref()
            .is_some_and(|n| bool::from(n.as_bytes().ct_eq(nonce.as_bytes())));
        let azp_ok = c.azp.as_deref().is_none_or(|a| a == expect.audience);
        if !nonce_ok || !azp_ok {
            return Ok(None);
        }
    }
    let email = c.email.filter(|_| c.email_verified.unwrap_or(false));
    Ok(Some(Identity {
        issuer: c.iss,
        subject: c.sub,
        email,
    }))
}

fn validate<A: Algorithm>(
    alg: &A,
    key: &A::VerifyingKey,
    token: &UntrustedToken<'_>,
) -> Option<Claims<OidcClaims>> {
    alg.validator::<OidcClaims>(key)
        .validate(token)
        .ok()
        .map(|t| t.claims().clone())
}

/// The JWK with `kid`, from the cached set or, if absent, a rate-limited refetch.
async fn find_key(
    ctx: &Ctx<'_>,
    oidc: &OidcConfig,
    kid: &str,
) -> ApiResult<Option<serde_json::Value>> {
    let cache_key = format!("oidc:jwks:{}", oidc.jwks_url);
    if let Some(cached) = ctx.ports.kv.get(&cache_key).await? {
        if let Some(k) = select(&cached, kid) {
            return Ok(Some(k));
        }
    }
    let gate = format!("oidc:jwks-refetch:{}", oidc.jwks_url);
    if ctx.ports.kv.get(&gate).await?.is_some() {
        return Ok(None);
    }
    ctx.ports
        .kv
        .put(&gate, b"1", Some(REFETCH_INTERVAL_SECS))
        .await?;
    let req = http::Request::get(&oidc.jwks_url)
        .header("accept", "application/json")
        .body(Bytes::new())
        .map_err(crate::error::ApiError::internal)?;
    let body = match ctx.ports.http.send(req).await {
        Ok(res) if res.status().is_success() => res.into_body(),
        Ok(res) => {
            crate::log::error("oidc_jwks_fetch", &format!("status {}", res.status()));
            return Ok(None);
        }
        Err(e) => {
            crate::log::error("oidc_jwks_fetch", &e.to_string());
            return Ok(None);
        }
    };
    ctx.ports
        .kv
        .put(&cache_key, &body, Some(JWKS_TTL_SECS))
        .await?;
    Ok(select(&body, kid))
}

fn select(jwks: &[u8], kid: &str) -> Option<serde_json::Value> {
    let doc: serde_json::Value = serde_json::from_slice(jwks).ok()?;
    doc.get("keys")?
        .as_array()?
        .iter()
        .find(|k| k.get("kid").and_then(|v| v.as_str()) == Some(kid))
        .cloned()
}
