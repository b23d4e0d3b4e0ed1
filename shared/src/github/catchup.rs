//! The GitHub catch-up job. A sync the server owes a project (a webhook's
//! pull, the push after an agent run) is marked on its link before it
//! runs ([`owe`]) and cleared when a sync covering it succeeds
//! ([`settled`]). One that failed (GitHub down or rate-limited, the project
//! busy) or was cut off (the platform stopped the work after the response)
//! stays marked, and [`run`] re-runs it under the project's lease: first
//! [`FIRST_RETRY_MS`] after the mark, then with doubling backoff (a rate
//! limit's reset is waited for and not counted), until [`MAX_ATTEMPTS`]
//! failed retries, when `last_error` says it stopped. Workers run it from
//! the cron trigger with the other jobs ([`crate::jobs::scheduled`]);
//! elsewhere a scheduler calls `POST /v1/_jobs/github-catchup` with
//! `Authorization: Bearer <JOBS_SECRET>`.

use serde::Serialize;

use super::store::{self, Link, Owed};
use super::sync::{locked_sync, Mode, Report, Resolve};
use crate::error::ApiResult;
use crate::http::request::{Meta, Request};
use crate::http::response::{ok, Response};
use crate::ports::Ports;
use crate::routes::{Ctx, Params};

/// Links retried per run at most (each sync costs a few GitHub calls and
/// may hold its project's lease for a while).
pub const BATCH: i64 = 5;
/// Failed retries after which the job leaves a link alone (a new webhook
/// or agent run marks it again; a push by hand settles it).
pub const MAX_ATTEMPTS: i64 = 8;
/// The first retry comes this long after the mark.
pub const FIRST_RETRY_MS: i64 = 2 * 60_000;
/// The longest wait between retries.
const MAX_BACKOFF_MS: i64 = 60 * 60_000;

/// The wait before the next retry after `failed` failed retries.
pub fn backoff_ms(failed: i64) -> i64 {
    let doublings = u32::try_from(failed.clamp(0, 16)).unwrap_or(16);
    FIRST_RETRY_MS
        .saturating_mul(1_i64 << doublings)
        .min(MAX_BACKOFF_MS)
}

#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize)]
pub struct CatchupReport {
    /// Due links looked at.
    pub checked: usize,
    /// Synced; nothing owed any more.
    pub synced: usize,
    /// Another sync held the project's lease: due again next run.
    pub busy: usize,
    /// Failed again; retried later.
    pub failed: usize,
    /// Failed for the last time ([`MAX_ATTEMPTS`]).
    pub gave_up: usize,
    pub duration_ms: i64,
}

/// What a successful sync in `mode` covers.
fn covers(mode: &Mode) -> Owed {
    match mode {
        Mode::Pull => Owed::Pull,
        Mode::Both { .. } => Owed::Push,
    }
}

/// Marks the sync `mode` as owed to the link's project before it runs;
/// returns the mark's time for [`settled`].
pub async fn owe(ctx: &Ctx<'_>, link: &Link, mode: &Mode, who: &str) -> ApiResult<i64> {
    let now = ctx.ports.clock.now_ms();
    let message = match mode {
        Mode::Pull => None,
        Mode::Both { message, .. } => Some(message.as_str()),
    };
    store::owe(
        ctx.ports.sql.as_ref(),
        &link.project_id,
        covers(mode),
        message,
        who,
        now,
        now + FIRST_RETRY_MS,
    )
    .await?;
    Ok(now)
}

/// A sync in `mode` that started at `since` succeeded: what it covers is
/// no longer owed. Never fails the caller (at worst the job syncs once more
/// for nothing).
pub async fn settled(ctx: &Ctx<'_>, project: &str, mode: &Mode, since: i64) {
    if let Err(e) = store::settle(ctx.ports.sql.as_ref(), project, covers(mode), since).await {
        crate::log::event(
            "warn",
            "github_catchup_settle_failed",
            serde_json::json!({ "project": project, "error": e.to_string() }),
        );
    }
}

/// [`locked_sync`] of a sync the server owes the project: marked first,
/// cleared when it succeeds, left to the job when it does not.
pub async fn owed_sync(
    ctx: &Ctx<'_>,
    link: &Link,
    mode: &Mode,
    who: &str,
    wait_ms: u64,
) -> ApiResult<Report> {
    let since = owe(ctx, link, mode, who).await?;
    let report = locked_sync(ctx, link, mode, who, wait_ms).await?;
    settled(ctx, &link.project_id, mode, since).await;
    Ok(report)
}

/// One run of the job. Fails only when the database does; a sync that
/// fails again counts in `failed` and is retried later.
pub async fn run(ports: &Ports) -> ApiResult<CatchupReport> {
    let started = ports.clock.now_ms();
    let mut report = CatchupReport::default();
    if !matches!(ports.config.as_ref(), Ok(c) if c.github.is_some()) {
        return Ok(report);
    }
    let ctx = Ctx {
        ports,
        request_id: "job:github-catchup",
        meta: Meta::default(),
        params: Params::default(),
        rate: Default::default(),
    };
    let sql = ports.sql.as_ref();
    for due in store::due(sql, started, MAX_ATTEMPTS, BATCH).await? {
        report.checked += 1;
        let project = due.link.project_id.as_str();
        let mode = match due.owed {
            Owed::Pull => Mode::Pull,
            Owed::Push => Mode::Both {
                message: due
                    .message
                    .clone()
                    .unwrap_or_else(|| "EverJust: update project files".into()),
                resolve: Resolve::None,
            },
        };
        let who = due.by.as_deref().unwrap_or("catchup");
        let since = ports.clock.now_ms();
        match locked_sync(&ctx, &due.link, &mode, who, 0).await {
            Ok(r) => {
                settled(&ctx, project, &mode, since).await;
                report.synced += 1;
                crate::log::event(
                    "info",
                    "github_catchup_synced",
                    serde_json::json!({
                        "project": project, "owed": due.owed.as_str(), "commit": r.commit,
                        "pushed": r.pushed.len(), "pulled": r.pulled.len(),
                        "conflicts": r.conflicts.len(), "api_calls": r.api_calls,
                    }),
                );
            }
            Err(e) if e.code == "github_busy" => report.busy += 1,
            Err(e) => {
                // A rate limit is GitHub's budget, not this link's fault: wait for its reset.
                let rate_limited = e.code == "github_rate_limited";
                let failed = due.attempts + i64::from(!rate_limited);
                let wait_ms = backoff_ms(failed).max(
                    i64::try_from(e.retry_after.unwrap_or(0))
                        .unwrap_or(i64::MAX / 2_000)
                        .saturating_mul(1000),
                );
                let gave_up = failed >= MAX_ATTEMPTS;
                let note = format!("(automatic retries stopped after {failed} attempts)");
                store::retry_later(
                    sql,
                    project,
                    ports.clock.now_ms().saturating_add(wait_ms),
                    !rate_limited,
                    gave_up.then_some(note.as_str()),
                )
                .await?;
                report.failed += 1;
                report.gave_up += usize::from(gave_up);
                crate::log::event(
                    "warn",
                    "github_catchup_failed",
                    serde_json::json!({
                        "project": project, "owed": due.owed.as_str(), "code": e.code,
                        "attempts": failed, "retry_in_ms": wait_ms, "gave_up": gave_up,
                    }),
                );
            }
        }
    }
    report.duration_ms = ports.clock.now_ms() - started;
    Ok(report)
}

/// `POST /v1/_jobs/github-catchup`, for schedulers without cron triggers.
pub async fn route(ctx: &Ctx<'_>, req: &Request) -> ApiResult<Response> {
    crate::jobs::authorize(ctx, req)?;
    Ok(ok(&run(ctx.ports).await?))
}
