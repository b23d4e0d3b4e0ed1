//! The GitHub routes: link an App installation to the caller, connect a
//! project to a repository (an existing one, or a new one in an
//! organisation), push (a two-way sync), read and remove the link.

use http::StatusCode;
use serde::Deserialize;
use serde_json::json;

use super::api::{seg, Api, GhError};
use super::oauth;
use super::store;
use super::sync::{locked_sync, Mode, Report, Resolve};
use crate::auth::authenticate;
use crate::db::{audit, projects};
use crate::error::{ApiError, ApiResult};
use crate::http::request::{json_body, Request};
use crate::http::response::{created, no_content, ok, Response};
use crate::routes::Ctx;

/// How long a push asks waits for a running sync (a webhook) to finish.
const PUSH_WAIT_MS: u64 = 10_000;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LinkInstallation {
    /// The installation to link; without it, every installation of the
    /// App the code's GitHub user controls (an App installed already,
    /// authorized through `authorize_url`, whose redirect names none).
    #[serde(default)]
    installation_id: Option<i64>,
    /// The OAuth code GitHub gave the App's callback URL: it proves which
    /// GitHub account the caller is.
    code: String,
    /// The `state` of the same redirect: the caller's, from
    /// `POST /v1/github/link-state` (see `oauth`).
    state: Option<String>,
}

/// `POST /v1/github/link-state`: a state to send to GitHub with the App's
/// install link (`?state=`) or its authorization (`authorize_url`), and to
/// bring back with the code.
pub async fn link_state(ctx: &Ctx<'_>, req: &Request) -> ApiResult<Response> {
    let caller = authenticate(ctx, req).await?;
    let cfg = super::config(ctx)?;
    let client = oauth::client(cfg)?;
    let state = oauth::new_state(ctx.ports, caller.id())?;
    Ok(ok(&json!({
        "install_url": oauth::install_url(client, cfg.app_slug.as_deref(), &state),
        "authorize_url": oauth::authorize_url(client, &state),
        "state": state,
        "expires_in": oauth::STATE_TTL_SECS,
    })))
}

/// `POST /v1/github/installations`: the caller claims an installation of
/// the App (or, without `installation_id`, every one their GitHub account
/// controls). The OAuth code they bring must prove that their GitHub
/// account controls the installation's account (see `oauth`), and it must
/// not be held by another user.
pub async fn link_installation(ctx: &Ctx<'_>, req: &Request) -> ApiResult<Response> {
    let caller = authenticate(ctx, req).await?;
    let body: LinkInstallation = json_body(req)?;
    let cfg = super::config(ctx)?;
    if body.installation_id.is_some_and(|id| id <= 0) {
        return Err(ApiError::bad_request(
            "invalid_installation",
            "installation_id must be a positive integer.",
        ));
    }
    oauth::check_code(&body.code)?;
    let client = oauth::client(cfg)?;
    let state = oauth::check_state(ctx.ports, body.state.as_deref(), caller.id()).await?;
    let sql = ctx.ports.sql.as_ref();
    if let Some(id) = body.installation_id {
        if let Some(existing) = store::installation_by_id(sql, id).await? {
            if existing
                .owner_id
                .as_deref()
                .is_some_and(|o| o != caller.id())
            {
                return Err(ApiError::not_found("installation"));
            }
        }
    }
    let token = oauth::user_token(ctx.ports, client, &body.code).await?;
    let found =
        oauth::controlled_installations(ctx.ports, cfg, token.clone(), body.installation_id).await;
    // Its work done, the user's token is revoked (after the answer).
    let (ports, cfg_owned) = (ctx.ports.clone(), cfg.clone());
    ctx.ports
        .after_response(Box::pin(async move {
            if let Some(client) = cfg_owned.oauth.as_ref() {
                oauth::revoke(&ports, &cfg_owned, client, &token).await;
            }
        }))
        .await;
    let found = found?;
    if found.is_empty() {
        return Err(ApiError::forbidden(
            "github_installation_mismatch",
            if body.installation_id.is_some() {
                "That installation of the App is not on your GitHub account or on an organisation you administer."
            } else {
                "No installation of the App is on your GitHub account or on an organisation you administer: install it first."
            },
        ));
    }
    let mut linked = Vec::new();
    for inst in &found {
        if let Some(one) = claim(ctx, caller.id(), inst).await? {
            linked.push(one);
        }
    }
    // Each the caller's now, or held by another user (as a 404: which
    // installations others linked is not told).
    if linked.is_empty() {
        return Err(ApiError::not_found("installation"));
    }
    oauth::spend_state(ctx.ports, &state).await;
    let mut items: Vec<_> = linked.iter().map(store::Installation::json).collect();
    Ok(match body.installation_id {
        Some(_) => created(&items.remove(0)),
        None => created(&json!({ "items": items })),
    })
}

/// Links one installation GitHub said the caller controls, unless another
/// user holds it: the stored installation, or `None`.
async fn claim(
    ctx: &Ctx<'_>,
    user_id: &str,
    inst: &serde_json::Value,
) -> ApiResult<Option<store::Installation>> {
    let sql = ctx.ports.sql.as_ref();
    let (Some(id), Some(login)) = (
        inst["id"].as_i64(),
        inst["account"]["login"].as_str().filter(|l| !l.is_empty()),
    ) else {
        return Err(super::api::GhError::Invalid(
            "installation without an id or an account".into(),
        )
        .into_api());
    };
    let account_type = inst["account"]["type"].as_str().unwrap_or("User");
    let suspended = !inst["suspended_at"].is_null();
    if !store::claim_installation(
        sql,
        user_id,
        id,
        login,
        inst["account"]["id"].as_i64(),
        account_type,
        suspended,
    )
    .await?
    {
        return Ok(None);
    }
    audit::record(
        sql,
        ctx,
        user_id,
        "github.installation.link",
        None,
        json!({ "installation_id": id, "account": login }),
    )
    .await?;
    store::installation_by_id(sql, id).await.map_err(Into::into)
}

/// `GET /v1/github/installations`: the caller's installations.
pub async fn list_installations(ctx: &Ctx<'_>, req: &Request) -> ApiResult<Response> {
    let caller = authenticate(ctx, req).await?;
    let items: Vec<_> = store::installations_of(ctx.ports.sql.as_ref(), caller.id())
        .await?
        .iter()
        .map(store::Installation::json)
        .collect();
    Ok(ok(&json!({ "items": items })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Connect {
    installation_id: i64,
    /// `owner/name`, or `name` for a repository on the installation's account.
    repository: String,
    branch: Option<String>,
    /// Create the repository when it does not exist (default true).
    create: Option<bool>,
    /// Visibility of a created repository (default private).
    private: Option<bool>,
}

fn valid_name(s: &str, max: usize) -> bool {
    !s.is_empty()
        && s.len() <= max
        && s != "."
        && s != ".."
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
}

/// A branch name git accepts (the common rules of `git check-ref-format`).
fn valid_branch(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 200
        && !s.starts_with(['/', '-', '.'])
        && !s.ends_with(['/', '.'])
        && !s.ends_with(".lock")
        && !s.contains("..")
        && !s.contains("//")
        && !s.contains("@{")
        && s.bytes()
            .all(|b| b > 0x20 && b != 0x7f && !b"~^:?*[\\".contains(&b))
}

/// `POST /v1/projects/{id}/github`: links the project to a repository of
/// one of the caller's installations, creating it in an organisation when
/// absent, then runs the first sync.
pub async fn connect(ctx: &Ctx<'_>, req: &Request) -> ApiResult<Response> {
    let caller = authenticate(ctx, req).await?;
    let body: Connect = json_body(req)?;
    let sql = ctx.ports.sql.as_ref();
    let project = projects::get(sql, caller.id(), ctx.params.get("id"))
        .await?
        .ok_or_else(|| ApiError::not_found("project"))?;
    let cfg = super::config(ctx)?;
    let inst = store::installation_by_id(sql, body.installation_id)
        .await?
        .filter(|i| i.owner_id.as_deref() == Some(caller.id()))
        .ok_or_else(|| ApiError::not_found("installation"))?;
    if inst.suspended {
        return Err(ApiError::conflict(
            "github_installation_suspended",
            "The GitHub App installation is suspended.",
        ));
    }
    let (owner, name) = match body.repository.trim().split_once('/') {
        Some((o, n)) => (o.to_owned(), n.to_owned()),
        None => (
            inst.account_login.clone(),
            body.repository.trim().to_owned(),
        ),
    };
    let name = name.strip_suffix(".git").unwrap_or(&name).to_owned();
    if !valid_name(&owner, 39) || !valid_name(&name, 100) {
        return Err(ApiError::bad_request(
            "invalid_repository",
            "repository must be `owner/name` or `name` (letters, digits, - _ .).",
        ));
    }
    if let Some(b) = &body.branch {
        if !valid_branch(b) {
            return Err(ApiError::bad_request(
                "invalid_branch",
                "That is not a valid branch name.",
            ));
        }
    }
    let api = Api::installation(ctx.ports, cfg, inst.installation_id).await?;
    let repo = match api
        .get(&format!("/repos/{}/{}", seg(&owner), seg(&name)))
        .await
    {
        Ok(r) => r,
        Err(GhError::Status { status: 404, .. }) if body.create.unwrap_or(true) => {
            if !owner.eq_ignore_ascii_case(&inst.account_login) {
                return Err(GhError::Status {
                    status: 404,
                    message: String::new(),
                }
                .into_api());
            }
            if inst.account_type != "Organization" {
                return Err(ApiError::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "github_cannot_create",
                    format!("A GitHub App cannot create repositories on a personal account. Create {owner}/{name} on GitHub (empty is fine), give the App's installation access to it, then connect again."),
                ));
            }
            api.post(
                &format!("/orgs/{}/repos", seg(&owner)),
                &json!({
                    "name": name,
                    "private": body.private.unwrap_or(true),
                    "auto_init": false,
                    "description": project.description,
                }),
            )
            .await?
        }
        Err(e) => return Err(e.into_api()),
    };
    let repo_owner = repo["owner"]["login"].as_str().unwrap_or(&owner).to_owned();
    let repo_name = repo["name"].as_str().unwrap_or(&name).to_owned();
    let branch = body
        .branch
        .clone()
        .or_else(|| repo["default_branch"].as_str().map(str::to_owned))
        .unwrap_or_else(|| "main".into());
    store::put_link(
        sql,
        &project.id,
        caller.id(),
        inst.installation_id,
        repo["id"].as_i64(),
        &repo_owner,
        &repo_name,
        &branch,
    )
    .await?;
    audit::record(
        sql,
        ctx,
        caller.id(),
        "github.connect",
        Some(&project.id),
        json!({ "repository": format!("{repo_owner}/{repo_name}"), "branch": branch, "installation_id": inst.installation_id }),
    )
    .await?;
    let link = store::link_of(sql, caller.id(), &project.id)
        .await?
        .ok_or_else(|| ApiError::internal("link vanished"))?;
    let mode = Mode::Both {
        message: format!("EverJust: connect project {}", project.name),
        resolve: Resolve::None,
    };
    let sync = match locked_sync(ctx, &link, &mode, "user", PUSH_WAIT_MS).await {
        Ok(r) => sync_json(&r),
        Err(e) => json!({ "status": "failed", "code": e.code, "detail": e.detail }),
    };
    let link = store::link_of(sql, caller.id(), &project.id)
        .await?
        .ok_or_else(|| ApiError::internal("link vanished"))?;
    let mut out = link.json();
    out["sync"] = sync;
    Ok(created(&out))
}

fn sync_json(r: &Report) -> serde_json::Value {
    let mut v = serde_json::to_value(r).unwrap_or_default();
    v["status"] = json!(if r.conflicts.is_empty() {
        "ok"
    } else {
        "conflict"
    });
    v
}

async fn own_link(ctx: &Ctx<'_>, req: &Request) -> ApiResult<(String, store::Link)> {
    let caller = authenticate(ctx, req).await?;
    let sql = ctx.ports.sql.as_ref();
    let project = projects::get(sql, caller.id(), ctx.params.get("id"))
        .await?
        .ok_or_else(|| ApiError::not_found("project"))?;
    let link = store::link_of(sql, caller.id(), &project.id)
        .await?
        .ok_or_else(not_connected)?;
    Ok((caller.id().to_owned(), link))
}

fn not_connected() -> ApiError {
    ApiError::conflict(
        "github_not_connected",
        "This project is not connected to a GitHub repository; POST /v1/projects/{id}/github first.",
    )
}

/// `GET /v1/projects/{id}/github`: the link and how the last sync went.
pub async fn get(ctx: &Ctx<'_>, req: &Request) -> ApiResult<Response> {
    let (_, link) = own_link(ctx, req).await.map_err(|e| {
        if e.code == "github_not_connected" {
            ApiError::new(StatusCode::NOT_FOUND, "github_not_connected", e.detail)
        } else {
            e
        }
    })?;
    Ok(ok(&link.json()))
}

/// `DELETE /v1/projects/{id}/github`: forgets the link (the repository stays).
pub async fn disconnect(ctx: &Ctx<'_>, req: &Request) -> ApiResult<Response> {
    let (owner, link) = own_link(ctx, req).await?;
    store::delete_link(ctx.ports.sql.as_ref(), &owner, &link.project_id).await?;
    audit::record(
        ctx.ports.sql.as_ref(),
        ctx,
        &owner,
        "github.disconnect",
        Some(&link.project_id),
        json!({ "repository": format!("{}/{}", link.repo_owner, link.repo_name) }),
    )
    .await?;
    Ok(no_content())
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct PushBody {
    message: Option<String>,
    resolve: Option<Resolve>,
}

/// `POST /v1/projects/{id}/github/push`: one commit with every change of
/// the project (their changes pulled first). A conflict answers 409
/// `github_conflict` naming the branch that holds our side.
pub async fn push(ctx: &Ctx<'_>, req: &Request) -> ApiResult<Response> {
    let (_, link) = own_link(ctx, req).await?;
    let body: PushBody = if req.body().iter().all(u8::is_ascii_whitespace) {
        PushBody::default()
    } else {
        json_body(req)?
    };
    let message = body
        .message
        .map(|m| m.trim().chars().take(10_000).collect::<String>())
        .filter(|m| !m.is_empty())
        .unwrap_or_else(|| "EverJust: update project files".into());
    let mode = Mode::Both {
        message,
        resolve: body.resolve.unwrap_or(Resolve::None),
    };
    let since = ctx.ports.clock.now_ms();
    let report = locked_sync(ctx, &link, &mode, "user", PUSH_WAIT_MS).await?;
    // It pulled and pushed: whatever the catch-up job still owed is done.
    super::catchup::settled(ctx, &link.project_id, &mode, since).await;
    if !report.conflicts.is_empty() {
        return Err(ApiError::conflict(
            "github_conflict",
            format!(
                "{} file(s) changed both here and on GitHub; our version is on the branch {}. Merge it, change the files to agree, or push again with resolve: ours|theirs.",
                report.conflicts.len(),
                report.conflict_branch.as_deref().unwrap_or("(none)")
            ),
        )
        .with_extra(sync_json(&report)));
    }
    Ok(ok(&sync_json(&report)))
}
