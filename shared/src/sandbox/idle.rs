//! The scheduled idle job: stops sandboxes idle longer than their owner's
//! tier allows, archives ones stopped for long, re-checks ones stuck in a
//! transition, and (at most hourly) destroys provider sandboxes whose
//! project is gone. Workers run it from a cron trigger
//! (`everjust_core::sandbox::idle::run(&ports)`); elsewhere a scheduler
//! calls `POST /v1/_jobs/sandbox-idle` with `Authorization: Bearer
//! <JOBS_SECRET>`.

use serde::Serialize;

use super::lifecycle::Lifecycle;
use super::provider::{ProviderError, State};
use super::store::{self, SandboxRow};
use crate::error::ApiResult;
use crate::http::request::Request;
use crate::http::response::{ok, Response};
use crate::ports::sql::Value;
use crate::ports::Ports;
use crate::routes::Ctx;

/// Sandboxes handled per run at most (each costs a few provider calls).
pub const BATCH: i64 = 50;
/// Orphans destroyed per sweep at most.
const SWEEP_BATCH: usize = 20;
/// The sweep runs at most once per this many seconds.
const SWEEP_EVERY_SECS: u64 = 3600;
const SWEEP_KEY: &str = "sandbox:idle:sweep";

#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize)]
pub struct IdleReport {
    /// Due sandboxes looked at.
    pub checked: usize,
    pub stopped: usize,
    pub archived: usize,
    /// Activity seen at the provider (its preview proxy) kept them running.
    pub kept: usize,
    /// Transitional ones whose state was re-read.
    pub refreshed: usize,
    pub failed: usize,
    /// Provider sandboxes without a project, destroyed.
    pub swept: usize,
    pub duration_ms: i64,
}

enum Outcome {
    Stopped,
    Archived,
    Kept,
    Refreshed,
}

/// One run of the job. Fails only when the database does; a provider
/// failure on one sandbox counts in `failed` and leaves it for next time.
pub async fn run(ports: &Ports) -> ApiResult<IdleReport> {
    let started = ports.clock.now_ms();
    let mut report = IdleReport::default();
    let Some(lc) = Lifecycle::new(ports)? else {
        return Ok(report);
    };
    let sql = ports.sql.as_ref();
    for row in store::due(sql, started, BATCH).await? {
        report.checked += 1;
        if !store::claim(sql, &row.project_id, ports.clock.now_ms()).await? {
            continue;
        }
        let result = Box::pin(handle_due(&lc, &row)).await;
        store::release(sql, &row.project_id).await?;
        match result {
            Ok(Outcome::Stopped) => report.stopped += 1,
            Ok(Outcome::Archived) => report.archived += 1,
            Ok(Outcome::Kept) => report.kept += 1,
            Ok(Outcome::Refreshed) => report.refreshed += 1,
            Err(e) => {
                report.failed += 1;
                crate::log::event(
                    "warn",
                    "sandbox_idle_failed",
                    serde_json::json!({ "project": row.project_id, "error": e.to_string() }),
                );
            }
        }
    }
    report.swept = Box::pin(sweep(&lc)).await.unwrap_or_else(|e| {
        crate::log::event(
            "warn",
            "sandbox_sweep_failed",
            serde_json::json!({ "error": e.to_string() }),
        );
        0
    });
    report.duration_ms = ports.clock.now_ms() - started;
    crate::log::event(
        "info",
        "sandbox_idle_run",
        serde_json::to_value(&report).unwrap_or_default(),
    );
    Ok(report)
}

async fn handle_due(lc: &Lifecycle<'_>, row: &SandboxRow) -> ApiResult<Outcome> {
    let project = row.project_id.as_str();
    let Some(id) = row.external_id.as_deref() else {
        // Never made it to the provider: nothing runs.
        lc.set_state(project, State::None, None).await?;
        return Ok(Outcome::Refreshed);
    };
    let remote = match lc.provider.get(id).await {
        Ok(r) => r,
        Err(ProviderError::NotFound) => {
            lc.set_state(project, State::Destroyed, None).await?;
            return Ok(Outcome::Refreshed);
        }
        Err(e) => return Err(e.into()),
    };
    let now = lc.ports.clock.now_ms();
    match (row.state, remote.state) {
        (State::Started, State::Started) => {
            // Visits through the provider's preview proxy count as activity.
            if let Some(seen) = remote.last_activity_ms {
                if seen > row.last_activity_ms && seen + row.idle_minutes * 60_000 > now {
                    store::activity_at_least(lc.ports.sql.as_ref(), project, seen).await?;
                    return Ok(Outcome::Kept);
                }
            }
            lc.stop_held(row, false).await?;
            Ok(Outcome::Stopped)
        }
        (State::Stopped, State::Stopped) => {
            lc.stop_held(row, true).await?;
            Ok(Outcome::Archived)
        }
        (_, actual) => {
            // Always written, so one still changing comes due again later.
            lc.set_state(project, actual, remote.error.as_deref())
                .await?;
            Ok(Outcome::Refreshed)
        }
    }
}

/// Destroys provider sandboxes of ours that no project row claims (the
/// project or account was deleted, or a replaced sandbox outlived its
/// replacement). At most hourly; bounded per run.
async fn sweep(lc: &Lifecycle<'_>) -> ApiResult<usize> {
    let kv = lc.ports.kv.as_ref();
    if kv.get(SWEEP_KEY).await?.is_some() {
        return Ok(0);
    }
    kv.put(SWEEP_KEY, b"1", Some(SWEEP_EVERY_SECS)).await?;
    let remotes = lc
        .provider
        .list(&[
            ("everjust".into(), "1".into()),
            (
                "everjust_deploy".into(),
                super::lifecycle::deploy_label(lc.ports)?,
            ),
        ])
        .await?;
    if remotes.is_empty() {
        return Ok(0);
    }
    let ids: Vec<&str> = remotes.iter().map(|r| r.id.as_str()).collect();
    let projects: Vec<&str> = remotes
        .iter()
        .filter_map(|r| r.project.as_deref())
        .collect();
    let now = lc.ports.clock.now_ms();
    let sql = lc.ports.sql.as_ref();
    let column = |rows: Vec<crate::ports::sql::Row>, name: &str| -> ApiResult<Vec<String>> {
        Ok(rows
            .iter()
            .map(|r| r.text(name))
            .collect::<Result<_, _>>()?)
    };
    // Sandboxes a project row points at are in use.
    let known = column(
        sql.query(
            "SELECT external_id FROM sandboxes WHERE provider = $1 AND external_id IN (SELECT json_array_elements_text($2::text::json))",
            &[lc.provider.name().into(), json_list(&ids).into()],
        )
        .await?,
        "external_id",
    )?;
    // A project mid-start may have made a sandbox it has not recorded yet: leave those alone.
    let busy = column(
        sql.query(
            "SELECT project_id FROM sandboxes WHERE lease_until >= $1 AND project_id IN (SELECT json_array_elements_text($2::text::json))",
            &[Value::Timestamp(now), json_list(&projects).into()],
        )
        .await?,
        "project_id",
    )?;
    let orphan = |r: &&super::provider::Remote| {
        !known.contains(&r.id) && r.project.as_ref().is_none_or(|p| !busy.contains(p))
    };
    let mut swept = 0;
    for r in remotes.iter().filter(orphan).take(SWEEP_BATCH) {
        if lc.provider.destroy(&r.id).await.is_ok() {
            swept += 1;
            crate::log::event(
                "info",
                "sandbox_orphan_destroyed",
                serde_json::json!({ "sandbox": r.id }),
            );
        }
    }
    Ok(swept)
}

fn json_list(items: &[&str]) -> String {
    serde_json::to_string(items).unwrap_or_else(|_| "[]".into())
}

/// `POST /v1/_jobs/sandbox-idle`, for schedulers without cron triggers.
pub async fn route(ctx: &Ctx<'_>, req: &Request) -> ApiResult<Response> {
    crate::jobs::authorize(ctx, req)?;
    Ok(ok(&run(ctx.ports).await?))
}
