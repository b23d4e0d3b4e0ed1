//! The sandbox provider port: what the lifecycle needs from a service that
//! runs sandboxes. Two providers: `static` (no remote sandbox; the project's
//! files are served as a preview and commands cannot run) and `daytona`
//! (REST + toolbox API, `sandbox::daytona`).

use std::rc::Rc;

use async_trait::async_trait;

use crate::error::{ApiError, ApiResult};
use crate::ports::Ports;

/// Where the project's files live inside a sandbox, and where commands run.
pub const PROJECT_DIR: &str = "/home/daytona/project";

/// Our view of a sandbox's state; every provider maps its own onto it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// No remote sandbox exists (never created, or destroyed).
    None,
    Creating,
    Starting,
    /// Starting from an archive: works, only slower.
    Restoring,
    Started,
    Stopping,
    Stopped,
    Archiving,
    Archived,
    /// Broken; replaced by a new sandbox on the next start.
    Error,
    Destroyed,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            State::None => "none",
            State::Creating => "creating",
            State::Starting => "starting",
            State::Restoring => "restoring",
            State::Started => "started",
            State::Stopping => "stopping",
            State::Stopped => "stopped",
            State::Archiving => "archiving",
            State::Archived => "archived",
            State::Error => "error",
            State::Destroyed => "destroyed",
        }
    }

    /// Our own stored name back (unknown names read as `error`).
    pub fn parse(s: &str) -> State {
        match s {
            "none" => State::None,
            "creating" => State::Creating,
            "starting" => State::Starting,
            "restoring" => State::Restoring,
            "started" => State::Started,
            "stopping" => State::Stopping,
            "stopped" => State::Stopped,
            "archiving" => State::Archiving,
            "archived" => State::Archived,
            "destroyed" => State::Destroyed,
            _ => State::Error,
        }
    }

    /// Daytona's state names (`SandboxState` in its OpenAPI document);
    /// `None` for names that say nothing we act on (`unknown`, new ones).
    pub fn from_daytona(s: &str) -> Option<State> {
        Some(match s {
            "creating" | "pending_build" | "building_snapshot" | "pulling_snapshot" => {
                State::Creating
            }
            "starting" | "resuming" => State::Starting,
            "restoring" => State::Restoring,
            "started" | "resizing" | "snapshotting" | "forking" => State::Started,
            "stopping" | "pausing" => State::Stopping,
            "stopped" | "paused" => State::Stopped,
            "archiving" => State::Archiving,
            "archived" => State::Archived,
            "error" | "build_failed" => State::Error,
            "destroyed" | "destroying" => State::Destroyed,
            _ => return None,
        })
    }

    /// A state that changes by itself soon (the lifecycle polls it).
    pub fn is_transitional(self) -> bool {
        matches!(
            self,
            State::Creating
                | State::Starting
                | State::Restoring
                | State::Stopping
                | State::Archiving
        )
    }
}

/// A remote sandbox as the provider last described it.
#[derive(Debug, Clone, PartialEq)]
pub struct Remote {
    pub id: String,
    pub state: State,
    pub error: Option<String>,
    /// Base URL of the toolbox API of this sandbox (files, processes).
    pub toolbox_url: Option<String>,
    /// The provider's own last-activity time (its preview proxy sees
    /// traffic we do not), unix ms.
    pub last_activity_ms: Option<i64>,
    /// The project it was made for (our label), when it has one.
    pub project: Option<String>,
}

/// What a new sandbox is made with.
#[derive(Debug, Clone)]
pub struct CreateSpec {
    /// Unique per project and generation, so a retried create is idempotent.
    pub name: String,
    pub labels: Vec<(String, String)>,
    /// The provider's own auto-stop, a safety net behind our idle job.
    pub auto_stop_minutes: i64,
    pub auto_archive_minutes: i64,
    /// The owner's tier's size; a provider whose sandboxes come from a
    /// fixed-size template (a Daytona snapshot) leaves it out.
    pub resources: Resources,
}

/// The size of a sandbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Resources {
    pub cpu: i64,
    pub memory_gib: i64,
    pub disk_gib: i64,
}

/// The address of a sandbox for toolbox calls.
#[derive(Debug, Clone, Copy)]
pub struct Handle<'a> {
    pub id: &'a str,
    pub toolbox_url: Option<&'a str>,
}

#[derive(Debug, Clone)]
pub struct ExecSpec {
    pub command: String,
    /// Absolute directory inside the sandbox.
    pub cwd: String,
    pub timeout_secs: u32,
    /// A name for a process session of this one command (streamed exec),
    /// unique within the sandbox.
    pub session: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ExecResult {
    pub exit_code: i64,
    pub output: String,
    /// Killed at the time limit (the output may be lost).
    pub timed_out: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Preview {
    pub url: String,
    /// A token the client sends as `x-daytona-preview-token` when the URL is not signed.
    pub token: Option<String>,
    pub expires_ms: Option<i64>,
}

/// One file to put into the sandbox.
#[derive(Debug, Clone)]
pub struct Upload {
    /// Absolute path inside the sandbox.
    pub path: String,
    pub content: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ProviderError {
    /// 5xx, 429, timeouts, connection failures: worth retrying later.
    #[error("sandbox provider unavailable: {0}")]
    Unavailable(String),
    #[error("sandbox not found at the provider")]
    NotFound,
    #[error("sandbox provider conflict: {0}")]
    Conflict(String),
    /// Any other refusal (4xx) with the provider's message.
    #[error("sandbox provider refused ({0}): {1}")]
    Rejected(u16, String),
}

impl From<ProviderError> for ApiError {
    fn from(e: ProviderError) -> Self {
        match e {
            ProviderError::Unavailable(cause) => unavailable(&cause),
            other => {
                crate::log::event(
                    "warn",
                    "sandbox_provider_error",
                    serde_json::json!({ "error": other.to_string() }),
                );
                ApiError::new(
                    http::StatusCode::BAD_GATEWAY,
                    "sandbox_provider_error",
                    "The sandbox provider refused the request. Try again; if it keeps failing, stop and start the sandbox.",
                )
            }
        }
    }
}

/// Seconds a client should wait before retrying a sandbox call.
pub const RETRY_AFTER_SECS: u64 = 5;

/// The problem for a provider outage: retryable, with Retry-After.
pub fn unavailable(cause: &str) -> ApiError {
    crate::log::event(
        "warn",
        "sandbox_unavailable",
        serde_json::json!({ "cause": cause }),
    );
    let mut e = ApiError::unavailable(
        "sandbox_unavailable",
        "The sandbox service is not answering right now. Your project's files are safe; try again shortly.",
    );
    e.retry_after = Some(RETRY_AFTER_SECS);
    e.with_extra(serde_json::json!({ "retryable": true }))
}

#[async_trait(?Send)]
pub trait SandboxProvider {
    fn name(&self) -> &'static str;
    async fn create(&self, spec: &CreateSpec) -> Result<Remote, ProviderError>;
    async fn get(&self, id: &str) -> Result<Remote, ProviderError>;
    async fn start(&self, id: &str) -> Result<(), ProviderError>;
    async fn stop(&self, id: &str) -> Result<(), ProviderError>;
    async fn archive(&self, id: &str) -> Result<(), ProviderError>;
    async fn destroy(&self, id: &str) -> Result<(), ProviderError>;
    /// Refreshes the provider's idle timer.
    async fn keep_alive(&self, id: &str) -> Result<(), ProviderError>;
    async fn set_auto_stop(&self, id: &str, minutes: i64) -> Result<(), ProviderError>;
    /// Every sandbox carrying all of `labels` (all pages, bounded).
    async fn list(&self, labels: &[(String, String)]) -> Result<Vec<Remote>, ProviderError>;
    async fn upload(&self, h: Handle<'_>, files: &[Upload]) -> Result<(), ProviderError>;
    async fn remove(&self, h: Handle<'_>, path: &str) -> Result<(), ProviderError>;
    /// Creates a directory (and its parents) if it does not exist.
    async fn make_dir(&self, h: Handle<'_>, path: &str) -> Result<(), ProviderError>;
    /// Runs a command; a command over its time limit comes back
    /// `timed_out`, not as an error.
    async fn exec(&self, h: Handle<'_>, spec: &ExecSpec) -> Result<ExecResult, ProviderError>;
    /// Runs a command and hands its output to `on_output` as it grows; the
    /// result's `output` is empty (all of it went to `on_output`). A command
    /// over its time limit is killed and comes back `timed_out`. Without a
    /// way to follow output, the whole output is handed over at the end.
    async fn exec_streaming(
        &self,
        h: Handle<'_>,
        spec: &ExecSpec,
        on_output: &mut dyn for<'t> FnMut(&'t str),
    ) -> Result<ExecResult, ProviderError> {
        let r = self.exec(h, spec).await?;
        if !r.output.is_empty() {
            on_output(&r.output);
        }
        Ok(ExecResult {
            output: String::new(),
            ..r
        })
    }
    async fn preview(&self, id: &str, port: u16) -> Result<Preview, ProviderError>;
}

/// Which provider this server uses.
pub enum Selected {
    Static,
    Remote(Rc<dyn SandboxProvider>),
}

/// Daytona when `DAYTONA_API_URL` and `DAYTONA_API_KEY` are set, else static.
pub fn select(ports: &Ports) -> ApiResult<Selected> {
    let config = ports.config()?;
    Ok(match &config.daytona {
        Some(d) => Selected::Remote(Rc::new(super::daytona::Daytona::new(
            ports.http.clone(),
            ports.clock.clone(),
            d,
        ))),
        None => Selected::Static,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_state_survives_its_stored_name() {
        for s in [
            State::None,
            State::Creating,
            State::Starting,
            State::Restoring,
            State::Started,
            State::Stopping,
            State::Stopped,
            State::Archiving,
            State::Archived,
            State::Error,
            State::Destroyed,
        ] {
            assert_eq!(State::parse(s.as_str()), s);
        }
    }

    #[test]
    fn daytona_states_map_onto_ours_and_unknown_ones_are_ignored() {
        assert_eq!(State::from_daytona("started"), Some(State::Started));
        assert_eq!(State::from_daytona("build_failed"), Some(State::Error));
        assert_eq!(State::from_daytona("restoring"), Some(State::Restoring));
        assert_eq!(State::from_daytona("paused"), Some(State::Stopped));
        assert_eq!(State::from_daytona("unknown"), None);
        assert_eq!(State::from_daytona("teleporting"), None);
    }
}
