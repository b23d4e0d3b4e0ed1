//! "Log in with OIDC" for the web client: the authorization code flow with
//! PKCE, the code exchanged here (so a confidential client's secret never
//! reaches the browser), the ID token verified against the issuer's JWKS
//! with audience = our client id and the browser's nonce, and the answer our
//! own session, the same token pair as a password login.
//!
//! The issuer's endpoints come from its discovery document
//! (`<issuer>/.well-known/openid-configuration`), fetched through the `Http`
//! port and cached in KV for an hour.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use bytes::Bytes;
use serde::Deserialize;

use crate::auth::handlers::{limit_ip, token_response};
use crate::auth::oidc::{self, Expect};
use crate::config::{OidcClient, OidcConfig};
use crate::db::{audit, users};
use crate::error::{ApiError, ApiResult};
use crate::http::request::{json_body, Request};
use crate::http::response::{ok, Response};
use crate::routes::Ctx;

const DISCOVERY_TTL_SECS: u64 = 3600;
/// What the web client asks for: an identity and, when the issuer shares it, a verified email.
pub const SCOPES: &[&str] = &["openid", "email", "profile"];

/// An `application/x-www-form-urlencoded` field, escaped.
use crate::http::escape as form;

/// The parts of the discovery document this flow uses.
#[derive(Debug, Clone, Deserialize)]
struct Discovery {
    issuer: String,
    authorization_endpoint: String,
    token_endpoint: String,
    #[serde(default)]
    token_endpoint_auth_methods_supported: Option<Vec<String>>,
}

fn not_configured() -> ApiError {
    ApiError::new(
        http::StatusCode::NOT_FOUND,
        "oidc_not_configured",
        "Logging in with OIDC is not configured on this server.",
    )
}

fn unavailable() -> ApiError {
    ApiError::unavailable(
        "oidc_unavailable",
        "The identity provider cannot be reached. Try again later.",
    )
}

fn invalid_token() -> ApiError {
    ApiError::unauthorized(
        "invalid_token",
        "The identity provider's ID token is invalid.",
    )
}

/// The configured issuer and browser client, or 404 `oidc_not_configured`.
fn configured<'a>(ctx: &'a Ctx<'_>) -> ApiResult<(&'a OidcConfig, &'a OidcClient)> {
    let config = ctx.ports.config()?;
    let oidc = config.oidc.as_ref().ok_or_else(not_configured)?;
    let client = oidc.client.as_ref().ok_or_else(not_configured)?;
    Ok((oidc, client))
}

/// An http(s) URL with a host and no user info.
fn is_endpoint(url: &str) -> bool {
    url.parse::<http::Uri>().is_ok_and(|u| {
        matches!(u.scheme_str(), Some("https" | "http"))
            && u.authority().is_some_and(|a| !a.as_str().contains('@'))
    })
}

/// The issuer's discovery document, from KV or fetched (and then cached).
async fn discovery(ctx: &Ctx<'_>, oidc: &OidcConfig) -> ApiResult<Discovery> {
    let url = format!(
        "{}/.well-known/openid-configuration",
        oidc.issuer.trim_end_matches('/')
    );
    let cache_key = format!("oidc:discovery:{}", oidc.issuer);
    if let Some(cached) = ctx.ports.kv.get(&cache_key).await? {
        if let Ok(d) = serde_json::from_slice::<Discovery>(&cached) {
            return Ok(d);
        }
    }
    let req = http::Request::get(&url)
        .header("accept", "application/json")
        .body(Bytes::new())
        .map_err(ApiError::internal)?;
    let body = match ctx.ports.http.send(req).await {
        Ok(res) if res.status().is_success() => res.into_body(),
        Ok(res) => {
            crate::log::error("oidc_discovery", &format!("status {}", res.status()));
            return Err(unavailable());
        }
        Err(e) => {
            crate::log::error("oidc_discovery", &e.to_string());
            return Err(unavailable());
        }
    };
    let doc: Discovery = serde_json::from_slice(&body).map_err(|e| {
        crate::log::error("oidc_discovery", &format!("unreadable document: {e}"));
        unavailable()
    })?;
    // OpenID Connect Discovery 1.0, section 4.3: the document's issuer must be
    // exactly the one asked for.
    if doc.issuer != oidc.issuer
        || !is_endpoint(&doc.authorization_endpoint)
        || !is_endpoint(&doc.token_endpoint)
    {
        crate::log::error(
            "oidc_discovery",
            "the document names another issuer or unusable endpoints",
        );
        return Err(unavailable());
    }
    ctx.ports
        .kv
        .put(&cache_key, &body, Some(DISCOVERY_TTL_SECS))
        .await?;
    Ok(doc)
}

/// `GET /v1/auth/oidc`: what the web client needs to start the login.
pub async fn info(ctx: &Ctx<'_>, _req: &Request) -> ApiResult<Response> {
    limit_ip(ctx).await?;
    let (oidc, client) = configured(ctx)?;
    let doc = discovery(ctx, oidc).await?;
    Ok(ok(&serde_json::json!({
        "issuer": oidc.issuer,
        "authorization_endpoint": doc.authorization_endpoint,
        "client_id": client.client_id,
        "scopes": SCOPES,
    })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CallbackBody {
    code: String,
    code_verifier: String,
    redirect_uri: String,
    nonce: String,
}

impl CallbackBody {
    fn check(&self) -> ApiResult<()> {
        let bad = |detail: &str| Err(ApiError::bad_request("invalid_body", detail));
        if self.code.is_empty() || self.code.len() > 2048 {
            return bad("`code` must be the authorization code the identity provider returned.");
        }
        // RFC 7636, section 4.1: 43 to 128 unreserved characters.
        let v = &self.code_verifier;
        if !(43..=128).contains(&v.len())
            || !v
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-._~".contains(&b))
        {
            return bad("`code_verifier` must be 43 to 128 characters of [A-Za-z0-9-._~].");
        }
        if self.nonce.is_empty() || self.nonce.len() > 512 {
            return bad("`nonce` must be the nonce sent with the authorization request.");
        }
        Ok(())
    }
}

/// This server's origin, from an absolute request URI (Workers), else from
/// `Host` (Spin, the host tests), compared with `redirect_uri`'s.
fn redirect_uri_is_ours(req: &Request, redirect_uri: &str) -> bool {
    let Ok(uri) = redirect_uri.parse::<http::Uri>() else {
        return false;
    };
    let (Some(scheme), Some(authority)) = (uri.scheme_str(), uri.authority()) else {
        return false;
    };
    if authority.as_str().contains('@') {
        return false;
    }
    if let (Some(s), Some(a)) = (req.uri().scheme_str(), req.uri().authority()) {
        return s.eq_ignore_ascii_case(scheme)
            && a.as_str().eq_ignore_ascii_case(authority.as_str());
    }
    let Some(host) = req
        .headers()
        .get(http::header::HOST)
        .and_then(|h| h.to_str().ok())
    else {
        return false;
    };
    // Without the request's scheme: https, or plain http on this machine only.
    let loopback = matches!(authority.host(), "127.0.0.1" | "localhost" | "[::1]");
    host.eq_ignore_ascii_case(authority.as_str())
        && (scheme.eq_ignore_ascii_case("https")
            || (scheme.eq_ignore_ascii_case("http") && loopback))
}

/// Token endpoint answer; only the ID token is used (our own session replaces the rest).
#[derive(Deserialize)]
struct TokenAnswer {
    id_token: Option<String>,
}

/// Exchanges the code at the token endpoint; returns the ID token.
async fn exchange(
    ctx: &Ctx<'_>,
    doc: &Discovery,
    client: &OidcClient,
    body: &CallbackBody,
) -> ApiResult<String> {
    let mut fields = vec![
        ("grant_type", "authorization_code"),
        ("code", body.code.as_str()),
        ("redirect_uri", body.redirect_uri.as_str()),
        ("code_verifier", body.code_verifier.as_str()),
    ];
    let mut builder = http::Request::post(&doc.token_endpoint)
        .header("content-type", "application/x-www-form-urlencoded")
        .header("accept", "application/json");
    match &client.client_secret {
        None => fields.push(("client_id", client.client_id.as_str())),
        Some(secret) => {
            // client_secret_basic is the default (RFC 6749 2.3.1, OIDC
            // Discovery); client_secret_post only when it is all the issuer lists.
            let methods = doc
                .token_endpoint_auth_methods_supported
                .as_deref()
                .unwrap_or_default();
            let lists = |m: &str| methods.iter().any(|x| x == m);
            let basic = lists("client_secret_basic") || !lists("client_secret_post");
            if basic {
                let pair = format!("{}:{}", form(&client.client_id), form(secret));
                builder =
                    builder.header("authorization", format!("Basic {}", STANDARD.encode(pair)));
            } else {
                fields.push(("client_id", client.client_id.as_str()));
                fields.push(("client_secret", secret.as_str()));
            }
        }
    }
    let encoded = fields
        .iter()
        .map(|(k, v)| format!("{k}={}", form(v)))
        .collect::<Vec<_>>()
        .join("&");
    let req = builder
        .body(Bytes::from(encoded))
        .map_err(ApiError::internal)?;
    let res = match ctx.ports.http.send(req).await {
        Ok(res) => res,
        Err(e) => {
            crate::log::error("oidc_token", &e.to_string());
            return Err(unavailable());
        }
    };
    let status = res.status();
    if status.is_client_error() {
        // invalid_grant and friends (RFC 6749 5.2): a used, expired or
        // foreign code, a wrong verifier or redirect_uri.
        let error = serde_json::from_slice::<serde_json::Value>(res.body())
            .ok()
            .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(str::to_owned))
            .unwrap_or_default();
        crate::log::error("oidc_token", &format!("status {status} {error}"));
        return Err(ApiError::unauthorized(
            "oidc_code_rejected",
            "The identity provider refused the authorization code. Log in again.",
        ));
    }
    if !status.is_success() {
        crate::log::error("oidc_token", &format!("status {status}"));
        return Err(unavailable());
    }
    serde_json::from_slice::<TokenAnswer>(res.body())
        .ok()
        .and_then(|a| a.id_token)
        .ok_or_else(invalid_token)
}

/// `POST /v1/auth/oidc/callback`: the code, verifier, redirect URI and nonce
/// of the browser's login in, our own session out.
pub async fn callback(ctx: &Ctx<'_>, req: &Request) -> ApiResult<Response> {
    limit_ip(ctx).await?;
    let (oidc, client) = configured(ctx)?;
    let body: CallbackBody = json_body(req)?;
    body.check()?;
    if !redirect_uri_is_ours(req, &body.redirect_uri) {
        return Err(ApiError::bad_request(
            "invalid_redirect_uri",
            "`redirect_uri` must be on this server's origin.",
        ));
    }
    let doc = discovery(ctx, oidc).await?;
    let id_token = exchange(ctx, &doc, client, &body).await?;
    let expect = Expect {
        audience: &client.client_id,
        nonce: Some(&body.nonce),
    };
    let identity = oidc::verify_with(ctx, oidc, &id_token, expect)
        .await?
        .ok_or_else(invalid_token)?;
    let user = users::upsert_oidc(ctx, &identity).await?;
    audit::record(
        ctx.ports.sql.as_ref(),
        ctx,
        &user.id,
        "auth.oidc_login",
        Some(&identity.issuer),
        serde_json::json!({}),
    )
    .await?;
    Ok(ok(&token_response(ctx, &user, None, None).await?))
}
