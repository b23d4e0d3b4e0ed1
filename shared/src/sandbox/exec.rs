//! Running a command in the project's sandbox: the exec route and the
//! agent's `run_command` share this path. The sandbox is started and its
//! files brought in step first; the command is killed at the tier's time
//! limit; output over the size limit is cut in the middle with a marker.

use serde::Deserialize;

use super::lifecycle::Lifecycle;
use super::provider::{ExecSpec, Handle, ProviderError, State, PROJECT_DIR};
use crate::billing::tiers::Limits;
use crate::error::{ApiError, ApiResult};
use crate::projects::path::ProjectPath;

/// Output returned by the exec route at most.
pub const MAX_OUTPUT_BYTES: usize = 64 * 1024;
/// Output shown to the model at most.
pub const MODEL_OUTPUT_BYTES: usize = 16 * 1024;
/// Longest command text.
pub const MAX_COMMAND_BYTES: usize = 16 * 1024;
/// How long an exec waits for its sandbox to start.
pub const START_WAIT_MS: u64 = 45_000;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExecRequest {
    pub command: String,
    /// A directory of the project (relative), default its root.
    #[serde(default)]
    pub cwd: Option<String>,
    /// At most the tier's `command_timeout_secs`, which is the default.
    #[serde(default)]
    pub timeout_secs: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct ExecOutcome {
    pub exit_code: i64,
    pub output: String,
    pub truncated: bool,
    pub timed_out: bool,
    pub timeout_secs: u32,
    pub duration_ms: i64,
    /// Files uploaded to the sandbox before the command ran.
    pub uploaded_files: usize,
}

/// Cuts `s` to at most `max` bytes (plus the marker), keeping its start
/// and, larger, its end (where errors usually are).
pub fn cut(s: &str, max: usize) -> (String, bool) {
    if s.len() <= max {
        return (s.to_owned(), false);
    }
    let mut head = max / 4;
    while !s.is_char_boundary(head) {
        head -= 1;
    }
    let mut tail = s.len() - (max - head);
    while !s.is_char_boundary(tail) {
        tail += 1;
    }
    let cut_bytes = tail - head;
    (
        format!(
            "{}\n[... {cut_bytes} bytes of output cut ({} in total) ...]\n{}",
            &s[..head],
            s.len(),
            &s[tail..]
        ),
        true,
    )
}

/// The sandbox directory for a `cwd` given relative to the project.
pub fn sandbox_cwd(cwd: Option<&str>) -> ApiResult<String> {
    match cwd.map(|c| c.trim_matches('/')) {
        None | Some("" | ".") => Ok(PROJECT_DIR.to_owned()),
        Some(c) => Ok(format!("{PROJECT_DIR}/{}", ProjectPath::parse(c)?.as_str())),
    }
}

/// The request's own checks (command and working directory), made before
/// anything runs and before a streamed answer's 200.
pub fn check(req: &ExecRequest) -> ApiResult<()> {
    check_command(&req.command)?;
    sandbox_cwd(req.cwd.as_deref()).map(drop)
}

fn check_command(command: &str) -> ApiResult<()> {
    if command.trim().is_empty() {
        return Err(ApiError::bad_request(
            "invalid_command",
            "The command is empty.",
        ));
    }
    if command.len() > MAX_COMMAND_BYTES || command.contains('\0') {
        return Err(ApiError::bad_request(
            "invalid_command",
            format!("A command is at most {MAX_COMMAND_BYTES} bytes, without NUL characters."),
        ));
    }
    Ok(())
}

fn not_ready(restoring: bool, state: State) -> ApiError {
    let mut e = ApiError::unavailable(
        "sandbox_starting",
        if restoring {
            "The sandbox is being restored from its archive, which takes a while; try again in a moment."
        } else {
            "The sandbox is still starting; try again in a moment."
        },
    );
    e.retry_after = Some(5);
    e.with_extra(serde_json::json!({ "state": state.as_str(), "retryable": true }))
}

/// The time limit of a command: the tier's, or less when asked.
pub fn time_limit(limits: &Limits, asked: Option<u32>) -> u32 {
    let tier = u32::try_from(limits.command_timeout_secs.max(1)).unwrap_or(u32::MAX);
    asked.map_or(tier, |a| a.clamp(1, tier))
}

/// Streamed output under the size limit: the first three quarters of the
/// limit go out as they come; after that only the last quarter is kept, and
/// goes out at the end, after the same marker as `cut` when some was cut.
#[derive(Debug, Default)]
pub struct Relay {
    max: usize,
    /// Bytes sent as they came.
    live: usize,
    /// Kept for the end (at most `max / 4` once something was cut).
    held: String,
    total: usize,
    cut: bool,
    /// The last text sent or held ends a line (or there is none).
    at_line_start: bool,
}

impl Relay {
    pub fn new(max: usize) -> Self {
        Relay {
            max,
            at_line_start: true,
            ..Relay::default()
        }
    }

    /// Nothing came yet.
    pub fn is_empty(&self) -> bool {
        self.total == 0
    }

    pub fn push(&mut self, text: &str, sink: &mut dyn FnMut(String)) {
        if text.is_empty() {
            return;
        }
        self.total += text.len();
        self.at_line_start = text.ends_with('\n');
        let budget = self.max - self.max / 4;
        let mut rest = text;
        if self.live < budget {
            let mut n = (budget - self.live).min(rest.len());
            while !rest.is_char_boundary(n) {
                n -= 1;
            }
            if n > 0 {
                sink(rest[..n].to_owned());
                self.live += n;
            }
            rest = &rest[n..];
        }
        if rest.is_empty() {
            return;
        }
        self.held.push_str(rest);
        let keep = self.max / 4;
        if self.held.len() > keep {
            let mut from = self.held.len() - keep;
            while !self.held.is_char_boundary(from) {
                from += 1;
            }
            self.held.drain(..from);
            self.cut = true;
        }
    }

    /// What is left to send at the end, and whether some output was cut.
    pub fn finish(self) -> (String, bool) {
        if !self.cut {
            return (self.held, false);
        }
        let cut_bytes = self.total - self.live - self.held.len();
        (
            format!(
                "\n[... {cut_bytes} bytes of output cut ({} in total) ...]\n{}",
                self.total, self.held
            ),
            true,
        )
    }
}

/// Runs `req` in the project's sandbox (started first when needed).
pub async fn run(
    lc: &Lifecycle<'_>,
    owner: &str,
    project: &str,
    limits: &Limits,
    req: &ExecRequest,
) -> ApiResult<ExecOutcome> {
    run_with(lc, owner, project, limits, req, None).await
}

/// Runs `req` like `run`, handing its output to `sink` as it grows (cut
/// like `run`'s at `MAX_OUTPUT_BYTES`, the kill notice last); the outcome's
/// `output` is then empty.
pub async fn run_streaming(
    lc: &Lifecycle<'_>,
    owner: &str,
    project: &str,
    limits: &Limits,
    req: &ExecRequest,
    sink: &mut dyn FnMut(String),
) -> ApiResult<ExecOutcome> {
    run_with(lc, owner, project, limits, req, Some(sink)).await
}

async fn run_with(
    lc: &Lifecycle<'_>,
    owner: &str,
    project: &str,
    limits: &Limits,
    req: &ExecRequest,
    mut sink: Option<&mut dyn FnMut(String)>,
) -> ApiResult<ExecOutcome> {
    check_command(&req.command)?;
    let cwd = sandbox_cwd(req.cwd.as_deref())?;
    let mut ready = lc.ready(owner, project, limits, START_WAIT_MS).await?;
    let mut uploaded = ready.synced.map_or(0, |s| s.uploaded);
    let timeout_secs = time_limit(limits, req.timeout_secs);
    let mut retried = false;
    let mut relay = Relay::new(MAX_OUTPUT_BYTES);
    let (result, started) = loop {
        let row = &ready.row;
        let (State::Started, Some(id)) = (row.state, row.external_id.as_deref()) else {
            return Err(not_ready(
                ready.restoring || row.state == State::Restoring,
                row.state,
            ));
        };
        super::touch(lc.ports, project).await;
        let started = lc.ports.clock.now_ms();
        let handle = Handle {
            id,
            toolbox_url: row.toolbox_url.as_deref(),
        };
        let spec = ExecSpec {
            command: req.command.clone(),
            cwd: cwd.clone(),
            timeout_secs,
            session: crate::ids::new_id(lc.ports, "exec"),
        };
        let done = match sink.as_deref_mut() {
            None => lc.provider.exec(handle, &spec).await,
            Some(sink) => {
                let mut relayed = |text: &str| relay.push(text, &mut *sink);
                lc.provider
                    .exec_streaming(handle, &spec, &mut relayed)
                    .await
            }
        };
        let err = match done {
            Ok(r) => break (r, started),
            Err(e) => e,
        };
        // Output already shown means the command ran: never run it again.
        if retried || !relay.is_empty() {
            return Err(err.into());
        }
        // Did the command run? Only a sandbox that is not running (stopped
        // behind our back) certainly did not: then start it and try once more.
        let remote = match lc.provider.get(id).await {
            Ok(r) if r.state != State::Started => Some(r.state),
            Err(ProviderError::NotFound) => Some(State::Destroyed),
            _ => None,
        };
        let Some(actual) = remote else {
            return Err(err.into());
        };
        lc.set_state(project, actual, None).await?;
        ready = lc.start(owner, project, limits, START_WAIT_MS).await?;
        uploaded += ready.synced.map_or(0, |s| s.uploaded);
        retried = true;
    };
    let duration_ms = lc.ports.clock.now_ms() - started;
    crate::log::event(
        "info",
        "sandbox_exec",
        serde_json::json!({ "project": project, "exit_code": result.exit_code, "timed_out": result.timed_out, "duration_ms": duration_ms }),
    );
    let killed =
        format!("[killed: the command ran longer than its time limit of {timeout_secs} s]");
    let (output, truncated) = match sink {
        None => {
            let (mut output, truncated) = cut(&result.output, MAX_OUTPUT_BYTES);
            if result.timed_out {
                if !output.is_empty() && !output.ends_with('\n') {
                    output.push('\n');
                }
                output.push_str(&killed);
            }
            (output, truncated)
        }
        Some(sink) => {
            let at_line_start = relay.at_line_start;
            let (mut rest, truncated) = relay.finish();
            if result.timed_out {
                if !at_line_start {
                    rest.push('\n');
                }
                rest.push_str(&killed);
            }
            if !rest.is_empty() {
                sink(rest);
            }
            (String::new(), truncated)
        }
    };
    Ok(ExecOutcome {
        exit_code: result.exit_code,
        output,
        truncated,
        timed_out: result.timed_out,
        timeout_secs,
        duration_ms,
        uploaded_files: uploaded,
    })
}

/// The text the model reads for a command's outcome.
pub fn for_model(o: &ExecOutcome) -> String {
    let (output, _) = cut(&o.output, MODEL_OUTPUT_BYTES);
    let head = if o.timed_out {
        format!(
            "The command was killed after {} s (the time limit).",
            o.timeout_secs
        )
    } else {
        format!("Exit code: {}", o.exit_code)
    };
    if output.trim().is_empty() {
        format!("{head}\n(no output)")
    } else {
        format!("{head}\nOutput:\n{output}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_output_is_kept_whole() {
        assert_eq!(cut("hello", 10), ("hello".to_owned(), false));
    }

    #[test]
    fn long_output_keeps_its_start_and_end_around_a_marker() {
        let s: String = (0..1000).map(|i| format!("line {i}\n")).collect();
        let (out, truncated) = cut(&s, 400);
        assert!(truncated);
        assert!(out.starts_with("line 0\n"));
        assert!(out.ends_with("line 999\n"));
        assert!(out.contains("bytes of output cut"));
        assert!(out.len() < 400 + 80);
    }

    #[test]
    fn cutting_never_splits_a_character() {
        let s = "é".repeat(1000);
        let (out, _) = cut(&s, 101);
        assert!(out.starts_with('é') && out.ends_with('é'));
    }

    #[test]
    fn streamed_output_goes_out_live_and_is_cut_with_the_same_marker() {
        let mut sent = Vec::new();
        let mut relay = Relay::new(400);
        for i in 0..1000 {
            relay.push(&format!("line {i}\n"), &mut |s| sent.push(s));
        }
        assert!(sent.len() > 1, "output went out as it came");
        let live: String = sent.concat();
        assert!(live.starts_with("line 0\nline 1\n") && live.len() == 300);
        let (rest, truncated) = relay.finish();
        assert!(truncated);
        assert!(rest.contains("bytes of output cut (") && rest.ends_with("line 999\n"));
        assert!(live.len() + rest.len() < 400 + 80);
        let mut small = Relay::new(400);
        let mut out = String::new();
        small.push("hi\n", &mut |s| out.push_str(&s));
        assert_eq!(
            (out.as_str(), small.finish()),
            ("hi\n", (String::new(), false))
        );
    }

    #[test]
    fn working_directories_stay_inside_the_project() {
        assert_eq!(sandbox_cwd(None).ok().as_deref(), Some(PROJECT_DIR));
        assert_eq!(sandbox_cwd(Some("./")).ok().as_deref(), Some(PROJECT_DIR));
        assert_eq!(
            sandbox_cwd(Some("src/app/")).ok(),
            Some(format!("{PROJECT_DIR}/src/app"))
        );
        for bad in ["../etc", "src/../../x", "a\\b", "a/./b"] {
            assert!(sandbox_cwd(Some(bad)).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_time_limit_is_the_tiers_at_most() {
        let mut l = crate::billing::tiers::defaults("free");
        l.command_timeout_secs = 60;
        assert_eq!(time_limit(&l, None), 60);
        assert_eq!(time_limit(&l, Some(5)), 5);
        assert_eq!(time_limit(&l, Some(600)), 60);
        assert_eq!(time_limit(&l, Some(0)), 1);
    }

    #[test]
    fn the_model_reads_exit_code_and_output() {
        let o = ExecOutcome {
            exit_code: 2,
            output: "boom\n".into(),
            truncated: false,
            timed_out: false,
            timeout_secs: 60,
            duration_ms: 5,
            uploaded_files: 0,
        };
        assert_eq!(for_model(&o), "Exit code: 2\nOutput:\nboom\n");
        let killed = ExecOutcome {
            timed_out: true,
            output: String::new(),
            ..o
        };
        assert!(for_model(&killed).starts_with("The command was killed after 60 s"));
    }
}
