//! The route table of the API and the dispatch from a matched route to its
//! handler. The same table generates the OpenAPI document.

use std::sync::OnceLock;

use http::{HeaderValue, Method, StatusCode};

use crate::error::ApiError;
use crate::http::request::{Meta, Request};
use crate::http::response::Response;
use crate::http::router::{Match, RouteDef, Router};
use crate::ports::Ports;
use crate::{account, auth, billing, chat, github, health, openapi, projects, sandbox};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    Health,
    Ready,
    OpenApi,
    Signup,
    Login,
    Refresh,
    Logout,
    OidcInfo,
    OidcCallback,
    Me,
    DeleteMe,
    ExportMe,
    Templates,
    CreateProject,
    ListProjects,
    GetProject,
    UpdateProject,
    DeleteProject,
    ListFiles,
    GetFile,
    PutFile,
    DeleteFile,
    Conformance,
    CreateSession,
    ListSessions,
    ListMessages,
    SendMessage,
    Events,
    WsTicket,
    WebSocket,
    Cancel,
    Usage,
    Preview,
    GithubConnect,
    GithubPush,
    GithubWebhook,
    GithubGet,
    GithubDisconnect,
    GithubLinkState,
    GithubLinkInstallation,
    GithubInstallations,
    SandboxCreate,
    SandboxGet,
    SandboxDelete,
    SandboxExec,
    DaytonaWebhook,
    SandboxIdleJob,
    GithubCatchupJob,
    ListKeys,
    PutKey,
    DeleteKey,
    Audit,
    AdminUsers,
    AdminUpdateUser,
}

macro_rules! route {
    ($m:ident $path:literal => $r:ident, $tag:literal, $auth:literal, $summary:literal) => {
        RouteDef {
            method: Method::$m,
            path: $path,
            route: Route::$r,
            summary: $summary,
            tag: $tag,
            auth: $auth,
        }
    };
}

pub static ROUTES: &[RouteDef<Route>] = &[
    route!(GET "/health" => Health, "health", false, "Liveness; touches no dependency"),
    route!(GET "/ready" => Ready, "health", false, "Readiness: Postgres and KV reachable, else 503 naming what is down"),
    route!(GET "/v1/openapi.json" => OpenApi, "health", false, "This OpenAPI 3.1 document"),
    route!(POST "/v1/auth/signup" => Signup, "auth", false, "Create an account; returns the user and tokens"),
    route!(POST "/v1/auth/login" => Login, "auth", false, "Exchange email and password for tokens"),
    route!(POST "/v1/auth/refresh" => Refresh, "auth", false, "Rotate a refresh token; a reused one revokes its family"),
    route!(POST "/v1/auth/logout" => Logout, "auth", false, "Revoke a refresh token"),
    route!(GET "/v1/auth/oidc" => OidcInfo, "auth", false, "How to log in with the configured OIDC provider (authorization endpoint, client id, scopes); 404 oidc_not_configured without OIDC_CLIENT_ID"),
    route!(POST "/v1/auth/oidc/callback" => OidcCallback, "auth", false, "Exchange an authorization code (PKCE) of the OIDC provider for our own tokens"),
    route!(GET "/v1/me" => Me, "account", true, "The caller, tier and limits"),
    route!(DELETE "/v1/me" => DeleteMe, "account", true, "Erase the account and all its data"),
    route!(GET "/v1/me/export" => ExportMe, "account", true, "All the caller's data as JSON"),
    route!(GET "/v1/templates" => Templates, "projects", false, "Built-in starter templates"),
    route!(POST "/v1/projects" => CreateProject, "projects", true, "Create a project, optionally from a template"),
    route!(GET "/v1/projects" => ListProjects, "projects", true, "List own projects"),
    route!(GET "/v1/projects/{id}" => GetProject, "projects", true, "One project"),
    route!(PATCH "/v1/projects/{id}" => UpdateProject, "projects", true, "Rename or describe a project"),
    route!(DELETE "/v1/projects/{id}" => DeleteProject, "projects", true, "Delete a project and its files"),
    route!(GET "/v1/projects/{id}/files" => ListFiles, "files", true, "List paths with size and sha256"),
    route!(GET "/v1/projects/{id}/files/{*path}" => GetFile, "files", true, "Read one file (raw body)"),
    route!(PUT "/v1/projects/{id}/files/{*path}" => PutFile, "files", true, "Create or replace one file (raw body)"),
    route!(DELETE "/v1/projects/{id}/files/{*path}" => DeleteFile, "files", true, "Delete one file"),
    route!(POST "/v1/projects/{id}/sessions" => CreateSession, "chat", true, "Start a chat session in a project"),
    route!(GET "/v1/projects/{id}/sessions" => ListSessions, "chat", true, "List the project's chat sessions"),
    route!(GET "/v1/sessions/{id}/messages" => ListMessages, "chat", true, "Message history of a session"),
    route!(POST "/v1/sessions/{id}/messages" => SendMessage, "chat", true, "Send a message and start a run; Accept: text/event-stream streams it (?protocol=native|ag-ui|ai-sdk), else 202"),
    route!(GET "/v1/sessions/{id}/events" => Events, "chat", true, "Run events as SSE: replay after Last-Event-ID or ?after=N, then live (?protocol=native|ag-ui|ai-sdk)"),
    route!(POST "/v1/sessions/{id}/ws-ticket" => WsTicket, "chat", true, "A single-use WebSocket ticket, valid 60 s"),
    route!(GET "/v1/sessions/{id}/ws" => WebSocket, "chat", false, "WebSocket to the session's live room (ticket in the query): events, presence, resume"),
    route!(POST "/v1/sessions/{id}/cancel" => Cancel, "chat", true, "Stop the running turn"),
    route!(GET "/v1/projects/{id}/preview/{*path}" => Preview, "sandbox", false, "Static preview of the project's files (bearer token, or the capability link from GET /v1/projects/{id}/sandbox)"),
    route!(POST "/v1/projects/{id}/github" => GithubConnect, "github", true, "Connect a repository of your GitHub App installation (create it if absent)"),
    route!(POST "/v1/projects/{id}/github/push" => GithubPush, "github", true, "Commit the project's files: one commit, many files"),
    route!(POST "/webhooks/github" => GithubWebhook, "webhooks", false, "GitHub deliveries (X-Hub-Signature-256; repeated delivery: 200, no change)"),
    route!(GET "/v1/projects/{id}/github" => GithubGet, "github", true, "The project's repository link and how its last sync went"),
    route!(DELETE "/v1/projects/{id}/github" => GithubDisconnect, "github", true, "Disconnect the repository (it stays on GitHub)"),
    route!(POST "/v1/github/link-state" => GithubLinkState, "github", true, "Start linking a GitHub App installation: a state for GitHub's install or authorization link, good for an hour"),
    route!(POST "/v1/github/installations" => GithubLinkInstallation, "github", true, "Link a GitHub App installation {installation_id, code, state} to your account (the OAuth code proves your GitHub account controls it; the state, that you started the link); without installation_id, every one your GitHub account controls"),
    route!(GET "/v1/github/installations" => GithubInstallations, "github", true, "Your linked GitHub App installations"),
    route!(POST "/v1/projects/{id}/sandbox" => SandboxCreate, "sandbox", true, "Create or start the project's sandbox"),
    route!(GET "/v1/projects/{id}/sandbox" => SandboxGet, "sandbox", true, "Sandbox state and preview URL"),
    route!(DELETE "/v1/projects/{id}/sandbox" => SandboxDelete, "sandbox", true, "Stop (or archive) the sandbox"),
    route!(POST "/v1/projects/{id}/sandbox/exec" => SandboxExec, "sandbox", true, "Run a command in the sandbox"),
    route!(POST "/webhooks/daytona" => DaytonaWebhook, "webhooks", false, "Daytona deliveries (Svix-signed; repeated delivery: 200, no change)"),
    route!(POST "/v1/_jobs/sandbox-idle" => SandboxIdleJob, "jobs", false, "Scheduled job: stop idle sandboxes, archive long-stopped ones (Authorization: Bearer <JOBS_SECRET>)"),
    route!(POST "/v1/_jobs/github-catchup" => GithubCatchupJob, "jobs", false, "Scheduled job: re-run GitHub syncs that failed after the answer (webhook pulls, pushes after agent runs), with backoff (Authorization: Bearer <JOBS_SECRET>)"),
    route!(GET "/v1/usage" => Usage, "billing", true, "Tokens, cost and compute this UTC month, by UTC day, with the tier's limits"),
    route!(GET "/v1/keys" => ListKeys, "billing", true, "Your provider keys: provider and last 4 characters only"),
    route!(PUT "/v1/keys/{provider}" => PutKey, "billing", true, "Store your own provider key {api_key} (validated, encrypted, never returned)"),
    route!(DELETE "/v1/keys/{provider}" => DeleteKey, "billing", true, "Remove your provider key"),
    route!(GET "/v1/audit" => Audit, "account", true, "Your own audit events"),
    route!(GET "/v1/admin/users" => AdminUsers, "admin", true, "Admin: list users with this month's cost"),
    route!(PATCH "/v1/admin/users/{id}" => AdminUpdateUser, "admin", true, "Admin: set a user's tier, role or limit overrides"),
    route!(GET "/v1/_conformance" => Conformance, "health", false, "Development only: run the port conformance suites in this runtime (?http=<echo server URL>: the outbound HTTP suite too)"),
];

/// The largest body any route but file uploads accepts.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

fn router() -> &'static Router<Route> {
    static R: OnceLock<Router<Route>> = OnceLock::new();
    R.get_or_init(|| Router::new(ROUTES))
}

/// Path parameters of the matched route.
#[derive(Debug, Default)]
pub struct Params(pub Vec<(String, String)>);

impl Params {
    pub fn get(&self, name: &str) -> &str {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map_or("", |(_, v)| v.as_str())
    }
}

/// What a handler gets besides the request.
pub struct Ctx<'a> {
    pub ports: &'a Ports,
    pub request_id: &'a str,
    pub meta: Meta,
    pub params: Params,
    /// What the request learned on its way (its rate-limit decision, its
    /// caller), for the response headers and the access log.
    pub rate: Notes,
}

/// What a request learned on its way through the handlers.
#[derive(Debug, Default)]
pub struct Notes {
    /// The rate-limit decision, for the RateLimit-* headers.
    pub decision: std::cell::Cell<Option<crate::ports::ratelimit::Decision>>,
    /// The authenticated caller's id, for the access log.
    pub user_id: std::cell::RefCell<Option<String>>,
}

/// What the access log says of a request besides its status.
#[derive(Debug, Default)]
pub struct Access {
    /// The matched route's template (`/v1/projects/{id}`), never the raw path.
    pub route: Option<&'static str>,
    pub user_id: Option<String>,
}

pub async fn dispatch(
    ports: &Ports,
    req: Request,
    meta: Meta,
    request_id: &str,
) -> (Response, Access) {
    let path = req.uri().path().to_owned();
    let (route, params) = match router().find(req.method(), &path) {
        Match::Found(r, p) => (r, p),
        Match::NotFound => {
            return (
                ApiError::not_found("route").into_response(request_id),
                Access::default(),
            )
        }
        Match::MethodNotAllowed(allowed) => {
            let mut res = ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "Method not allowed on this path.",
            )
            .into_response(request_id);
            let list = allowed
                .iter()
                .map(Method::as_str)
                .collect::<Vec<_>>()
                .join(", ");
            if let Ok(v) = HeaderValue::from_str(&list) {
                res.headers_mut().insert(http::header::ALLOW, v);
            }
            return (res, Access::default());
        }
    };
    let template = ROUTES.iter().find(|d| d.route == route).map(|d| d.path);
    if route != Route::PutFile && req.body().len() > MAX_BODY_BYTES {
        let res = ApiError::too_large("body_too_large", "The request body is larger than 1 MiB.")
            .into_response(request_id);
        let access = Access {
            route: template,
            user_id: None,
        };
        return (res, access);
    }
    let ctx = Ctx {
        ports,
        request_id,
        meta,
        params: Params(params),
        rate: Default::default(),
    };
    let result = match route {
        Route::Health => Ok(health::health()),
        Route::Ready => health::ready(&ctx).await,
        Route::OpenApi => Ok(openapi::document()),
        Route::Conformance => health::conformance(&ctx, &req).await,
        Route::Signup => auth::handlers::signup(&ctx, &req).await,
        Route::Login => auth::handlers::login(&ctx, &req).await,
        Route::Refresh => auth::handlers::refresh(&ctx, &req).await,
        Route::Logout => auth::handlers::logout(&ctx, &req).await,
        Route::OidcInfo => auth::oidc_login::info(&ctx, &req).await,
        Route::OidcCallback => auth::oidc_login::callback(&ctx, &req).await,
        Route::Me => account::me(&ctx, &req).await,
        Route::DeleteMe => account::delete_me(&ctx, &req).await,
        Route::ExportMe => account::export(&ctx, &req).await,
        Route::Templates => Ok(projects::templates::list()),
        Route::CreateProject => projects::handlers::create(&ctx, &req).await,
        Route::ListProjects => projects::handlers::list(&ctx, &req).await,
        Route::GetProject => projects::handlers::get(&ctx, &req).await,
        Route::UpdateProject => projects::handlers::update(&ctx, &req).await,
        Route::DeleteProject => projects::handlers::delete(&ctx, &req).await,
        Route::ListFiles => projects::files::list(&ctx, &req).await,
        Route::GetFile => projects::files::get(&ctx, &req).await,
        Route::PutFile => projects::files::put(&ctx, &req).await,
        Route::DeleteFile => projects::files::delete(&ctx, &req).await,
        Route::CreateSession => chat::handlers::create_session(&ctx, &req).await,
        Route::ListSessions => chat::handlers::list_sessions(&ctx, &req).await,
        Route::ListMessages => chat::handlers::list_messages(&ctx, &req).await,
        Route::SendMessage => chat::handlers::send_message(&ctx, &req).await,
        Route::Events => chat::handlers::events(&ctx, &req).await,
        Route::WsTicket => chat::handlers::ws_ticket(&ctx, &req).await,
        Route::WebSocket => chat::handlers::websocket(&ctx, &req).await,
        Route::Cancel => chat::handlers::cancel(&ctx, &req).await,
        Route::Usage => billing::usage::get(&ctx, &req).await,
        Route::Preview => projects::preview::serve(&ctx, &req).await,
        Route::GithubConnect => github::connect(&ctx, &req).await,
        Route::GithubPush => github::push(&ctx, &req).await,
        Route::GithubWebhook => github::webhook(&ctx, &req).await,
        Route::GithubGet => github::handlers::get(&ctx, &req).await,
        Route::GithubDisconnect => github::handlers::disconnect(&ctx, &req).await,
        Route::GithubLinkState => github::handlers::link_state(&ctx, &req).await,
        Route::GithubLinkInstallation => github::handlers::link_installation(&ctx, &req).await,
        Route::GithubInstallations => github::handlers::list_installations(&ctx, &req).await,
        Route::SandboxCreate => sandbox::create(&ctx, &req).await,
        Route::SandboxGet => sandbox::get(&ctx, &req).await,
        Route::SandboxDelete => sandbox::delete(&ctx, &req).await,
        Route::SandboxExec => sandbox::exec(&ctx, &req).await,
        Route::DaytonaWebhook => sandbox::webhook(&ctx, &req).await,
        Route::SandboxIdleJob => sandbox::idle_job(&ctx, &req).await,
        Route::GithubCatchupJob => github::catchup_job(&ctx, &req).await,
        Route::ListKeys => billing::keys::list(&ctx, &req).await,
        Route::PutKey => billing::keys::put(&ctx, &req).await,
        Route::DeleteKey => billing::keys::delete(&ctx, &req).await,
        Route::Audit => account::audit(&ctx, &req).await,
        Route::AdminUsers => billing::admin::list(&ctx, &req).await,
        Route::AdminUpdateUser => billing::admin::update(&ctx, &req).await,
    };
    let mut res = result.unwrap_or_else(|e| e.into_response(request_id));
    if let Some(d) = ctx.rate.decision.get() {
        billing::quota::headers(&d, res.headers_mut());
    }
    if req.method() == Method::HEAD {
        *res.body_mut() = crate::Body::empty();
    }
    let access = Access {
        route: template,
        user_id: ctx.rate.user_id.take(),
    };
    (res, access)
}
