//! GitHub's user-to-server OAuth, used once per installation link. An
//! installation id proves nothing (anyone can name one); the code GitHub
//! hands the App's callback URL after an install (with "Request user
//! authorization (OAuth) during installation") or an authorization does:
//! it is exchanged for the user's token, the installation must be among
//! those that token reaches (`GET /user/installations`), and the user must
//! control its account: be that account (`GET /user`) or an admin of that
//! organisation (`GET /user/memberships/orgs/{org}`). Reaching it is not
//! enough: an outside collaborator on one repository reaches the whole
//! installation, whose token then reads every repository in it. The token
//! is used for these reads, never stored, and revoked after the answer.
//!
//! A code proves who the GitHub user is, not that our caller is the one
//! who went through GitHub: a link to our callback with an attacker's own
//! code in it would link the attacker's installation to a victim, whose
//! projects would then be pushed into the attacker's repositories. So a
//! link also takes the `state` GitHub hands back unchanged: one we signed
//! for the caller when they started (`POST /v1/github/link-state`), good
//! for 20 minutes and for one link (a spent state is remembered in KV, so
//! that part is best effort across locations; the signature and the
//! caller's id are what hold).

use http::{Method, StatusCode};
use serde_json::{json, Value};

use super::api::{seg, Api, GhError};
use crate::auth::jwt::Scope;
use crate::config::{GithubConfig, GithubOauth};
use crate::error::{ApiError, ApiResult};
use crate::ports::Ports;

/// Installations read per page, and pages at most (a user reaching more
/// than 1,000 installations is not one we serve).
const PER_PAGE: usize = 100;
const MAX_PAGES: usize = 10;

/// How long a link state is good for: an install or an authorization at
/// GitHub takes minutes.
pub const STATE_TTL_SECS: i64 = 20 * 60;

/// A state for `user_id` to send to GitHub with an install or an
/// authorization, and to bring back with the code.
pub fn new_state(ports: &Ports, user_id: &str) -> ApiResult<String> {
    Ok(crate::auth::jwt::issue_scoped(
        ports.config()?,
        ports.clock.now_ms(),
        user_id,
        Scope::GithubLink,
        &crate::ids::new_id(ports, "gls"),
        STATE_TTL_SECS,
    ))
}

fn bad_state() -> ApiError {
    ApiError::bad_request(
        "invalid_github_state",
        "The state GitHub handed back is not one this account started in the last 20 minutes, or it linked an installation already. Start the link again (POST /v1/github/link-state) and send its state to GitHub.",
    )
}

/// Where a spent state is remembered.
fn spent_key(state: &str) -> String {
    use sha2::{Digest, Sha256};
    format!(
        "github-link-state:{}",
        crate::projects::handlers::hex(&Sha256::digest(state.as_bytes()))
    )
}

/// Checks that `state` was made for `user_id` by [`new_state`] in the
/// last 20 minutes and has not linked an installation yet; answers what
/// [`spend_state`] takes once it has.
pub async fn check_state(ports: &Ports, state: Option<&str>, user_id: &str) -> ApiResult<String> {
    let config = ports.config()?;
    let state = state.filter(|s| s.len() <= 1024).ok_or_else(bad_state)?;
    let now = ports.clock.now_ms();
    let ours = crate::auth::jwt::verify_scoped(config, now, state, Scope::GithubLink);
    if ours.as_deref() != Some(user_id) {
        return Err(bad_state());
    }
    let key = spent_key(state);
    // A store that cannot be read does not stop the link: the signature
    // and the caller's id are what hold.
    if matches!(ports.kv.get(&key).await, Ok(Some(_))) {
        return Err(bad_state());
    }
    Ok(key)
}

/// Remembers that the state of `key` ([`check_state`]) linked an
/// installation, for as long as it would be good.
pub async fn spend_state(ports: &Ports, key: &str) {
    let ttl = u64::try_from(STATE_TTL_SECS + 60).unwrap_or(3600);
    if let Err(e) = ports.kv.put(key, b"1", Some(ttl)).await {
        crate::log::error("github_link_state_not_spent", &e.to_string());
    }
}

/// Where to send the user to authorize the App and come back with a code
/// and `state` (when the App was installed at GitHub, not from here).
pub fn authorize_url(oauth: &GithubOauth, state: &str) -> String {
    use crate::http::escape;
    format!(
        "{}/login/oauth/authorize?client_id={}&state={}",
        oauth.url,
        escape(&oauth.client_id),
        escape(state)
    )
}

/// The App's install page with `state` (GitHub hands it back to the App's
/// callback URL with `installation_id` and a `code`), when the App's slug
/// is configured.
pub fn install_url(oauth: &GithubOauth, slug: Option<&str>, state: &str) -> Option<String> {
    use crate::http::escape;
    Some(format!(
        "{}/apps/{}/installations/new?state={}",
        oauth.url,
        escape(slug?),
        escape(state)
    ))
}

fn bad_code() -> ApiError {
    ApiError::bad_request(
        "invalid_github_code",
        "GitHub did not accept that authorization code (wrong, used, or older than 10 minutes). Authorize the GitHub App again and use the new code.",
    )
}

/// The OAuth client, or why installations cannot be linked here.
pub fn client(config: &GithubConfig) -> ApiResult<&GithubOauth> {
    config.oauth.as_ref().ok_or_else(|| {
        ApiError::unavailable(
            "github_oauth_not_configured",
            "Linking GitHub installations needs the GitHub App's OAuth client on this server (GITHUB_CLIENT_ID, GITHUB_CLIENT_SECRET).",
        )
    })
}

/// Checks the shape of a code before GitHub sees it (GitHub's are 20 hex
/// characters; anything long or not plain ASCII is not one).
pub fn check_code(code: &str) -> ApiResult<()> {
    if code.is_empty() || code.len() > 256 || !code.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(bad_code());
    }
    Ok(())
}

/// Exchanges `code` for the user's token (`POST /login/oauth/access_token`).
pub async fn user_token(ports: &Ports, oauth: &GithubOauth, code: &str) -> ApiResult<String> {
    let body = json!({
        "client_id": oauth.client_id,
        "client_secret": oauth.client_secret,
        "code": code,
    });
    let req = http::Request::builder()
        .method(Method::POST)
        .uri(format!("{}/login/oauth/access_token", oauth.url))
        .header("accept", "application/json")
        .header("content-type", "application/json")
        .header("user-agent", "everjust")
        .body(bytes::Bytes::from(body.to_string()))
        .map_err(|e| ApiError::internal(e.to_string()))?;
    let res = ports
        .http
        .send(req)
        .await
        .map_err(|e| GhError::Unavailable(e.0).into_api())?;
    let status = res.status();
    if status == StatusCode::TOO_MANY_REQUESTS || status == StatusCode::FORBIDDEN {
        let retry_after = res
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .unwrap_or(60);
        return Err(GhError::RateLimited { retry_after }.into_api());
    }
    let answer: Option<Value> = serde_json::from_slice(res.body()).ok();
    let Some(answer) = answer.filter(|_| !status.is_server_error()) else {
        // GitHub down or answering with a page, not JSON: try again later.
        return Err(GhError::Unavailable(format!("oauth token exchange: {status}")).into_api());
    };
    if let Some(token) = answer["access_token"].as_str().filter(|t| !t.is_empty()) {
        return Ok(token.to_owned());
    }
    // GitHub answers 200 with an `error` field for a refused exchange.
    match answer["error"].as_str() {
        Some("bad_verification_code") => Err(bad_code()),
        other => {
            crate::log::event(
                "error",
                "github_oauth_refused",
                json!({ "status": status.as_u16(), "error": other }),
            );
            Err(ApiError::new(
                StatusCode::BAD_GATEWAY,
                "github_oauth_refused",
                "GitHub refused this server's OAuth client (check GITHUB_CLIENT_ID and GITHUB_CLIENT_SECRET).",
            ))
        }
    }
}

/// The App's installations the user behind `token` reaches and controls
/// (see the module docs), all of them or only `only`.
pub async fn controlled_installations(
    ports: &Ports,
    config: &GithubConfig,
    token: String,
    only: Option<i64>,
) -> ApiResult<Vec<Value>> {
    let api = Api::user(ports, config, token);
    let refused = |e: GhError| match e {
        // The token was refused (revoked at once): as a bad code.
        GhError::Status { status: 401, .. } => bad_code(),
        GhError::Status { status, .. } if status != 404 => ApiError::new(
            StatusCode::BAD_GATEWAY,
            "github_error",
            format!("GitHub refused to tell which installations your account reaches ({status})."),
        ),
        other => other.into_api(),
    };
    let mut reached = Vec::new();
    for page in 1..=MAX_PAGES {
        let answer = api
            .get(&format!(
                "/user/installations?per_page={PER_PAGE}&page={page}"
            ))
            .await
            .map_err(refused)?;
        let Some(list) = answer["installations"].as_array() else {
            return Err(
                GhError::Invalid("GET /user/installations: no installations".into()).into_api(),
            );
        };
        reached.extend(
            list.iter()
                .filter(|i| only.is_none_or(|id| i["id"].as_i64() == Some(id)))
                .cloned(),
        );
        let found = only.is_some() && !reached.is_empty();
        if found || list.len() < PER_PAGE {
            break;
        }
    }
    // Who the user is, asked once and only when an installation is on a
    // User account.
    let mut me: Option<Value> = None;
    let mut controlled = Vec::new();
    for inst in reached {
        let account = &inst["account"];
        let login = account["login"].as_str().unwrap_or_default();
        let controls = if account["type"] == "Organization" {
            match api.get(&format!("/user/memberships/orgs/{}", seg(login))).await {
                Ok(m) => m["state"] == "active" && m["role"] == "admin",
                Err(GhError::Status { status: 404, .. }) => false,
                Err(GhError::Status { status: 403, .. }) => {
                    return Err(ApiError::forbidden(
                        "github_installation_mismatch",
                        "Could not confirm that you administer that organisation: the GitHub App needs the Organization permission Members (read).",
                    ))
                }
                Err(e) => return Err(refused(e)),
            }
        } else {
            if me.is_none() {
                me = Some(api.get("/user").await.map_err(refused)?);
            }
            let my_id = me.as_ref().and_then(|m| m["id"].as_i64());
            // Only a User account can be the caller's own (an Enterprise
            // account's id is of another numbering).
            account["type"] == "User" && my_id.is_some() && account["id"].as_i64() == my_id
        };
        if controls {
            controlled.push(inst);
        }
    }
    Ok(controlled)
}

/// Revokes the user's token (`DELETE /applications/{client_id}/token`,
/// the App's client credentials as Basic auth). Best effort: a token left
/// would expire within 8 hours; a failure is logged, without the token.
pub async fn revoke(ports: &Ports, config: &GithubConfig, oauth: &GithubOauth, token: &str) {
    use base64::Engine;
    let basic = base64::engine::general_purpose::STANDARD
        .encode(format!("{}:{}", oauth.client_id, oauth.client_secret));
    let req = http::Request::builder()
        .method(Method::DELETE)
        .uri(format!(
            "{}/applications/{}/token",
            config.api_url,
            seg(&oauth.client_id)
        ))
        .header("accept", "application/vnd.github+json")
        .header("x-github-api-version", "2022-11-28")
        .header("content-type", "application/json")
        .header("user-agent", "everjust")
        .header("authorization", format!("Basic {basic}"))
        .body(bytes::Bytes::from(
            json!({ "access_token": token }).to_string(),
        ));
    let status = match req {
        Ok(req) => ports.http.send(req).await.map(|r| r.status().as_u16()),
        Err(e) => Err(crate::ports::http_client::HttpError(e.to_string())),
    };
    if !matches!(status, Ok(204 | 404)) {
        crate::log::event(
            "warn",
            "github_token_revoke_failed",
            json!({ "status": status.as_ref().ok(), "error": status.as_ref().err().map(|e| e.0.clone()) }),
        );
    }
}
