//! The static preview: a project's files served as a website, the default
//! when no sandbox provider is configured.
//!
//! A browser frame cannot send a bearer token, so the preview URL carries a
//! capability: `/v1/projects/{id}/preview/~t.<expiry>.<hmac>/index.html`.
//! Relative links inside the site keep the token segment by themselves.
//! Responses carry `Content-Security-Policy: sandbox ...` without
//! `allow-same-origin`, so a previewed app runs in an opaque origin and
//! cannot act as the user (no access to the API's storage or cookies).

use hmac::{Hmac, Mac};
use http::{HeaderValue, StatusCode};
use sha2::Sha256;
use subtle::ConstantTimeEq;

use crate::auth::authenticate;
use crate::db::{files, projects};
use crate::error::{ApiError, ApiResult};
use crate::http::request::{bearer_token, Request};
use crate::http::response::{bytes, Response};
use crate::projects::handlers::hex;
use crate::projects::path::ProjectPath;
use crate::routes::Ctx;

pub const TOKEN_TTL_SECS: i64 = 12 * 3600;
const PREFIX: &str = "~t.";

fn sign(secret: &[u8], project: &str, exp: i64) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret)
        .unwrap_or_else(|_| unreachable!("HMAC takes any key length"));
    mac.update(format!("preview:{project}:{exp}").as_bytes());
    hex(&mac.finalize().into_bytes())
}

/// The preview URL path of a project, valid for `TOKEN_TTL_SECS`.
pub fn url(ctx: &Ctx<'_>, project: &str) -> ApiResult<String> {
    let config = ctx.ports.config()?;
    let exp = ctx.ports.clock.now_secs() + TOKEN_TTL_SECS;
    Ok(format!(
        "/v1/projects/{project}/preview/{PREFIX}{exp}.{}/",
        sign(&config.jwt_secret, project, exp)
    ))
}

/// Checks a `~t.<exp>.<sig>` segment for `project`.
fn token_ok(ctx: &Ctx<'_>, project: &str, segment: &str) -> ApiResult<bool> {
    let config = ctx.ports.config()?;
    let Some((exp, sig)) = segment.strip_prefix(PREFIX).and_then(|t| t.split_once('.')) else {
        return Ok(false);
    };
    let Ok(exp) = exp.parse::<i64>() else {
        return Ok(false);
    };
    if exp < ctx.ports.clock.now_secs() {
        return Ok(false);
    }
    Ok(bool::from(
        sign(&config.jwt_secret, project, exp)
            .as_bytes()
            .ct_eq(sig.as_bytes()),
    ))
}

pub async fn serve(ctx: &Ctx<'_>, req: &Request) -> ApiResult<Response> {
    let project_id = ctx.params.get("id");
    let raw = ctx.params.get("path");
    let sql = ctx.ports.sql.as_ref();
    // Either a capability segment first, or a bearer token.
    let (authorized, rest) = match raw.split_once('/') {
        Some((first, rest)) if first.starts_with(PREFIX) => {
            (token_ok(ctx, project_id, first)?, rest)
        }
        None if raw.starts_with(PREFIX) => (token_ok(ctx, project_id, raw)?, ""),
        _ => (false, raw),
    };
    let project = if authorized {
        sql.query_opt(
            "SELECT owner_id FROM projects WHERE id = $1",
            &[project_id.into()],
        )
        .await?
        .map(|r| r.text("owner_id"))
        .transpose()?
        .map(|owner| (owner, project_id.to_owned()))
    } else if bearer_token(req).is_some() {
        let caller = authenticate(ctx, req).await?;
        projects::get(sql, caller.id(), project_id)
            .await?
            .map(|p| (caller.id().to_owned(), p.id))
    } else {
        return Err(ApiError::unauthorized(
            "preview_token_invalid",
            "This preview link is invalid or expired; open the preview again from the app.",
        ));
    };
    let (owner, project) = project.ok_or_else(|| ApiError::not_found("project"))?;
    // A preview hit is activity on the project's sandbox (idle auto-stop).
    crate::sandbox::touch(ctx.ports, &project).await;
    let wanted = if rest.is_empty() || rest.ends_with('/') {
        format!("{rest}index.html")
    } else {
        rest.to_owned()
    };
    let path = ProjectPath::from_url(&wanted)?;
    let mut found = files::read(sql, &owner, &project, &path).await?;
    if found.is_none() && !path.as_str().contains('.') {
        // A directory without its trailing slash.
        let index = ProjectPath::parse(&format!("{}/index.html", path.as_str()))?;
        found = files::read(sql, &owner, &project, &index).await?;
        if found.is_some() {
            return Ok(redirect(&format!("{}/", last_segment(raw))));
        }
    }
    let (meta, content) = found.ok_or_else(|| ApiError::not_found("file"))?;
    let served = ProjectPath::parse(&meta.path)?;
    let mut res = bytes(StatusCode::OK, served.content_type(), content);
    let h = res.headers_mut();
    h.insert(
        "content-security-policy",
        HeaderValue::from_static(
            "sandbox allow-scripts allow-forms allow-modals allow-popups allow-downloads; default-src * data: blob: 'unsafe-inline' 'unsafe-eval'; frame-ancestors *",
        ),
    );
    h.insert("x-frame-options", HeaderValue::from_static("ALLOWALL"));
    h.insert("cache-control", HeaderValue::from_static("no-cache"));
    h.insert(
        "cross-origin-resource-policy",
        HeaderValue::from_static("cross-origin"),
    );
    if let Ok(v) = HeaderValue::from_str(&format!("\"{}\"", meta.sha256)) {
        h.insert(http::header::ETAG, v);
    }
    Ok(res)
}

fn last_segment(raw: &str) -> &str {
    raw.rsplit('/').next().unwrap_or(raw)
}

fn redirect(location: &str) -> Response {
    let mut res = bytes(
        StatusCode::MOVED_PERMANENTLY,
        "text/plain; charset=utf-8",
        Vec::new(),
    );
    if let Ok(v) = HeaderValue::from_str(location) {
        res.headers_mut().insert(http::header::LOCATION, v);
    }
    res
}
