//! The life of a project's sandbox: create or start it (replacing a broken
//! one), wait for it within a bound, bring its files in step, stop or
//! archive it, and mirror every state change into Postgres (which closes
//! compute periods into the usage ledger). A start or stop holds the row's
//! lease so two requests never drive the same sandbox at once.

use std::rc::Rc;

use http::StatusCode;

use super::provider::{
    self, CreateSpec, Handle, ProviderError, Remote, Resources, SandboxProvider, Selected, State,
};
use super::store::{self, SandboxRow, ARCHIVE_AFTER_MINUTES};
use super::sync::{self, Report, SyncError};
use crate::billing::tiers::Limits;
use crate::error::{ApiError, ApiResult};
use crate::ids;
use crate::ports::sql::transaction;
use crate::ports::Ports;

/// Longest pause between two looks at a sandbox that is changing state.
const POLL_MAX_MS: u64 = 2_000;
const POLL_FIRST_MS: u64 = 100;
/// A cached preview link is renewed when it has less than this left.
const PREVIEW_MARGIN_MS: i64 = 5 * 60 * 1000;
/// The provider's own auto-stop trails our idle job by this much.
const AUTO_STOP_SLACK_MINUTES: i64 = 2;

/// The outcome of a start.
#[derive(Debug, Clone)]
pub struct Started {
    pub row: SandboxRow,
    /// It came back from an archive (slower).
    pub restoring: bool,
    /// Files sent when it became ready.
    pub synced: Option<Report>,
}

pub struct Lifecycle<'a> {
    pub ports: &'a Ports,
    pub provider: Rc<dyn SandboxProvider>,
    pub preview_port: u16,
}

fn sync_err(e: SyncError) -> ApiError {
    match e {
        SyncError::Sql(e) => e.into(),
        SyncError::Provider(e) => e.into(),
    }
}

fn failed(detail: Option<&str>) -> ApiError {
    if let Some(d) = detail {
        crate::log::event("warn", "sandbox_failed", serde_json::json!({ "reason": d }));
    }
    ApiError::new(
        StatusCode::BAD_GATEWAY,
        "sandbox_failed",
        "The sandbox failed. Start it again to get a fresh one; your project's files are safe.",
    )
}

/// The first instant of the month of `now` (UTC), unix ms.
pub fn month_start(now_ms: i64) -> i64 {
    use chrono::Datelike;
    chrono::DateTime::from_timestamp_millis(now_ms)
        .and_then(|d| d.date_naive().with_day(1))
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map_or(now_ms, |d| d.and_utc().timestamp_millis())
}

/// Seconds until the next month starts (UTC).
fn until_next_month(now_ms: i64) -> u64 {
    use chrono::Months;
    let next = chrono::DateTime::from_timestamp_millis(month_start(now_ms))
        .and_then(|d| d.checked_add_months(Months::new(1)))
        .map_or(now_ms, |d| d.timestamp_millis());
    u64::try_from((next - now_ms) / 1000).unwrap_or(0)
}

/// A label value naming this deployment (derived from its JWT secret, so
/// two deployments sharing one provider account never touch each other's
/// sandboxes).
pub fn deploy_label(ports: &Ports) -> ApiResult<String> {
    use sha2::{Digest, Sha256};
    let secret = &ports.config()?.jwt_secret;
    let digest = Sha256::new()
        .chain_update(b"everjust-sandbox-deploy:")
        .chain_update(secret)
        .finalize();
    Ok(crate::projects::handlers::hex(&digest[..8]))
}

impl<'a> Lifecycle<'a> {
    /// `None` when the server uses the static provider.
    pub fn new(ports: &'a Ports) -> ApiResult<Option<Lifecycle<'a>>> {
        let preview_port = ports
            .config()?
            .daytona
            .as_ref()
            .map_or(3000, |d| d.preview_port);
        Ok(match provider::select(ports)? {
            Selected::Static => None,
            Selected::Remote(provider) => Some(Lifecycle {
                ports,
                provider,
                preview_port,
            }),
        })
    }

    fn now(&self) -> i64 {
        self.ports.clock.now_ms()
    }

    fn sql(&self) -> &dyn crate::ports::Sql {
        self.ports.sql.as_ref()
    }

    pub async fn load(&self, project: &str) -> ApiResult<Option<SandboxRow>> {
        Ok(store::load(self.sql(), project).await?)
    }

    /// Whether the project's sandbox is started (quotas apply only to a
    /// start that brings one up).
    async fn started(&self, project: &str) -> ApiResult<bool> {
        Ok(self
            .load(project)
            .await?
            .is_some_and(|r| r.state == State::Started))
    }

    /// Mirrors a state change (and closes a compute period when leaving `started`).
    pub async fn set_state(
        &self,
        project: &str,
        state: State,
        error: Option<&str>,
    ) -> ApiResult<()> {
        self.transition(project, state, error, None).await?;
        Ok(())
    }

    /// Applies a provider event's state, reported at `at` (provider time),
    /// unless something newer reached the row meanwhile (see
    /// [`store::transition`]); false then.
    pub async fn apply_event(
        &self,
        project: &str,
        state: State,
        error: Option<&str>,
        at: i64,
    ) -> ApiResult<bool> {
        let moved = self.transition(project, state, error, Some(at)).await?;
        Ok(moved.is_some())
    }

    async fn transition(
        &self,
        project: &str,
        state: State,
        error: Option<&str>,
        event_at: Option<i64>,
    ) -> ApiResult<Option<State>> {
        Ok(store::transition(
            self.sql(),
            project,
            state,
            error,
            self.now(),
            &ids::new_id(self.ports, "use"),
            event_at,
        )
        .await?)
    }

    /// Refuses a start when the month's compute minutes are used up.
    pub async fn check_quota(&self, owner: &str, limits: &Limits) -> ApiResult<()> {
        let now = self.now();
        let used = store::compute_seconds(self.sql(), owner, month_start(now), now).await?;
        if used >= limits.compute_minutes_month.saturating_mul(60) {
            let mut e = ApiError::new(
                StatusCode::PAYMENT_REQUIRED,
                "quota_compute_minutes",
                format!(
                    "The monthly budget of {} sandbox minutes is used up; it renews at the start of next month, or upgrade your plan.",
                    limits.compute_minutes_month
                ),
            );
            e.retry_after = Some(until_next_month(now));
            return Err(e.with_extra(serde_json::json!({
                "used_minutes": used / 60,
                "limit_minutes": limits.compute_minutes_month,
            })));
        }
        Ok(())
    }

    /// Refuses a start when the owner already has as many sandboxes running
    /// (or on their way up) as the tier allows; stopping one frees a slot.
    pub async fn check_running(
        &self,
        owner: &str,
        project: &str,
        limits: &Limits,
    ) -> ApiResult<()> {
        let running = store::running_elsewhere(self.sql(), owner, project, self.now()).await?;
        let count = i64::try_from(running.len()).unwrap_or(i64::MAX);
        if count >= limits.sandboxes_running {
            let e = ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "quota_sandboxes",
                format!(
                    "Your tier allows {} running sandbox(es) at a time; stop one of your other projects' sandboxes first, or upgrade your plan.",
                    limits.sandboxes_running
                ),
            );
            return Err(e.with_extra(serde_json::json!({
                "limit": limits.sandboxes_running,
                "running_projects": running,
            })));
        }
        Ok(())
    }

    /// Waits for the row's lease until `deadline`; false when it stayed
    /// taken. For a sandbox that is not running, the owner's running cap is
    /// checked in the same transaction as the lease is taken, under a lock
    /// on the owner's row: two starts of two projects racing for the last
    /// slot are decided one after the other, and the second sees the first
    /// (a leased row counts as running, see `store::running_elsewhere`). A
    /// refused start leaves no row behind.
    async fn lease(
        &self,
        owner: &str,
        project: &str,
        limits: &Limits,
        deadline: i64,
    ) -> ApiResult<bool> {
        let sql = self.sql();
        let mut pause = POLL_FIRST_MS;
        loop {
            let claimed = transaction(sql, async || {
                sql.execute(
                    "SELECT id FROM users WHERE id = $1 FOR UPDATE",
                    &[owner.into()],
                )
                .await?;
                if !self.started(project).await? {
                    self.check_running(owner, project, limits).await?;
                }
                store::ensure(
                    sql,
                    project,
                    owner,
                    self.provider.name(),
                    limits.sandbox_idle_minutes,
                    self.now(),
                )
                .await?;
                Ok::<_, ApiError>(store::claim(sql, project, self.now()).await?)
            })
            .await?;
            if claimed {
                return Ok(true);
            }
            if self.now() >= deadline {
                return Ok(false);
            }
            self.ports.clock.sleep_ms(pause).await;
            pause = (pause * 2).min(POLL_MAX_MS);
        }
    }

    /// The sandbox ready for commands: a started one is only brought in step
    /// with the project's files; otherwise it is started (or made) first.
    pub async fn ready(
        &self,
        owner: &str,
        project: &str,
        limits: &Limits,
        wait_ms: u64,
    ) -> ApiResult<Started> {
        if let Some(row) = self.load(project).await? {
            let free = row.lease_until_ms.is_none_or(|l| l < self.now());
            if let (State::Started, Some(id), true) = (row.state, row.external_id.as_deref(), free)
            {
                let handle = Handle {
                    id,
                    toolbox_url: row.toolbox_url.as_deref(),
                };
                match sync::run(self.sql(), self.provider.as_ref(), project, handle).await {
                    Ok(report) => {
                        return Ok(Started {
                            row,
                            restoring: false,
                            synced: Some(report),
                        })
                    }
                    // Perhaps it stopped behind our back: look properly below.
                    Err(SyncError::Provider(_)) => {}
                    Err(SyncError::Sql(e)) => return Err(e.into()),
                }
            }
        }
        self.start(owner, project, limits, wait_ms).await
    }

    /// Creates or starts the project's sandbox and waits up to `wait_ms`
    /// for it; when it is up, uploads what changed and fetches its preview
    /// link. A sandbox in `error` (or gone) is replaced by a new one.
    pub async fn start(
        &self,
        owner: &str,
        project: &str,
        limits: &Limits,
        wait_ms: u64,
    ) -> ApiResult<Started> {
        let now = self.now();
        // Quotas first, so a refused start leaves no trace.
        if !self.started(project).await? {
            self.check_quota(owner, limits).await?;
        }
        let deadline = now + i64::try_from(wait_ms).unwrap_or(i64::MAX / 4);
        if !self.lease(owner, project, limits, deadline).await? {
            // Another request is starting or stopping it: report where it is.
            let row = self
                .load(project)
                .await?
                .ok_or_else(|| ApiError::not_found("sandbox"))?;
            return Ok(Started {
                restoring: row.state == State::Restoring,
                row,
                synced: None,
            });
        }
        let result = Box::pin(self.bring_up(owner, project, limits, deadline)).await;
        store::release(self.sql(), project).await?;
        result
    }

    async fn bring_up(
        &self,
        owner: &str,
        project: &str,
        limits: &Limits,
        deadline: i64,
    ) -> ApiResult<Started> {
        let row = self
            .load(project)
            .await?
            .ok_or_else(|| ApiError::not_found("sandbox"))?;
        let mut current = row.state;
        let mut remote = match row.external_id.as_deref() {
            Some(id) => match self.provider.get(id).await {
                Ok(r) => Some(r),
                Err(ProviderError::NotFound) => None,
                Err(e) => return Err(e.into()),
            },
            None => None,
        };
        if let Some(r) = &remote {
            if matches!(r.state, State::Error | State::Destroyed) {
                crate::log::event(
                    "info",
                    "sandbox_replaced",
                    serde_json::json!({ "project": project, "sandbox": r.id, "state": r.state.as_str(), "reason": r.error }),
                );
                if r.state == State::Error {
                    // Best effort: a broken sandbox left behind is swept later.
                    let _ = self.provider.destroy(&r.id).await;
                }
                remote = None;
            }
        }
        let remote = match remote {
            Some(r) => r,
            None => {
                if row.external_id.is_some() {
                    store::forget_remote(self.sql(), project).await?;
                }
                let generation = self
                    .load(project)
                    .await?
                    .map_or(row.generation, |r| r.generation);
                self.set_state(project, State::Creating, None).await?;
                current = State::Creating;
                let spec = CreateSpec {
                    name: format!("ej-{project}-{generation}"),
                    labels: vec![
                        ("everjust".into(), "1".into()),
                        ("everjust_deploy".into(), deploy_label(self.ports)?),
                        ("everjust_project".into(), project.into()),
                        ("everjust_owner".into(), owner.into()),
                    ],
                    auto_stop_minutes: limits.sandbox_idle_minutes.max(1) + AUTO_STOP_SLACK_MINUTES,
                    auto_archive_minutes: ARCHIVE_AFTER_MINUTES,
                    resources: Resources {
                        cpu: limits.sandbox_cpu,
                        memory_gib: limits.sandbox_memory_gib,
                        disk_gib: limits.sandbox_disk_gib,
                    },
                };
                let created = self.provider.create(&spec).await;
                let created = match created {
                    Ok(r) => r,
                    Err(e) => {
                        self.set_state(project, State::None, None).await?;
                        return Err(e.into());
                    }
                };
                store::set_remote(
                    self.sql(),
                    project,
                    &created.id,
                    created.toolbox_url.as_deref(),
                    limits.sandbox_idle_minutes,
                )
                .await?;
                created
            }
        };
        if row.external_id.as_deref() == Some(remote.id.as_str())
            && (remote.toolbox_url.is_some() && remote.toolbox_url != row.toolbox_url
                || row.idle_minutes != limits.sandbox_idle_minutes)
        {
            if row.idle_minutes != limits.sandbox_idle_minutes {
                // The tier changed since the last start.
                let _ = self
                    .provider
                    .set_auto_stop(
                        &remote.id,
                        limits.sandbox_idle_minutes.max(1) + AUTO_STOP_SLACK_MINUTES,
                    )
                    .await;
            }
            store::set_remote(
                self.sql(),
                project,
                &remote.id,
                remote.toolbox_url.as_deref(),
                limits.sandbox_idle_minutes,
            )
            .await?;
        }
        let id = remote.id.clone();
        let mut state = remote.state;
        let mut restoring = false;
        let mut pause = POLL_FIRST_MS;
        loop {
            if state != current {
                self.set_state(project, state, None).await?;
                current = state;
            }
            match state {
                State::Started => break,
                State::Stopped | State::Archived => {
                    restoring = state == State::Archived;
                    match self.provider.start(&id).await {
                        Ok(()) | Err(ProviderError::Conflict(_) | ProviderError::Rejected(..)) => {}
                        Err(e) => return Err(e.into()),
                    }
                    state = if restoring {
                        State::Restoring
                    } else {
                        State::Starting
                    };
                    continue;
                }
                State::Error | State::Destroyed => {
                    return Err(failed(Some("the sandbox failed while starting")));
                }
                State::Restoring => restoring = true,
                _ => {}
            }
            if self.now() >= deadline {
                break;
            }
            self.ports.clock.sleep_ms(pause).await;
            pause = (pause * 2).min(POLL_MAX_MS);
            let r: Remote = self.provider.get(&id).await?;
            state = r.state;
        }
        let mut synced = None;
        if state == State::Started {
            let row = self
                .load(project)
                .await?
                .ok_or_else(|| ApiError::not_found("sandbox"))?;
            let handle = Handle {
                id: &id,
                toolbox_url: row.toolbox_url.as_deref(),
            };
            synced = Some(
                sync::run(self.sql(), self.provider.as_ref(), project, handle)
                    .await
                    .map_err(sync_err)?,
            );
            if let Err(e) = self.preview(&row).await {
                // The sandbox works without its link; the next read retries.
                crate::log::event(
                    "warn",
                    "sandbox_preview_failed",
                    serde_json::json!({ "project": project, "error": e.to_string() }),
                );
            }
        }
        let row = self
            .load(project)
            .await?
            .ok_or_else(|| ApiError::not_found("sandbox"))?;
        Ok(Started {
            row,
            restoring,
            synced,
        })
    }

    /// The preview link of another port of a started sandbox (not cached:
    /// only the app's own port is).
    pub async fn preview_of(
        &self,
        row: &SandboxRow,
        port: u16,
    ) -> ApiResult<Option<(String, Option<String>)>> {
        if port == self.preview_port {
            return self.preview(row).await;
        }
        let (State::Started, Some(id)) = (row.state, row.external_id.as_deref()) else {
            return Ok(None);
        };
        let p = self.provider.preview(id, port).await?;
        Ok(Some((p.url, p.token)))
    }

    /// The preview link of a started sandbox: cached, renewed when it is
    /// about to expire.
    pub async fn preview(&self, row: &SandboxRow) -> ApiResult<Option<(String, Option<String>)>> {
        let (State::Started, Some(id)) = (row.state, row.external_id.as_deref()) else {
            return Ok(None);
        };
        if let Some(url) = &row.preview_url {
            if row
                .preview_expires_ms
                .is_none_or(|e| e > self.now() + PREVIEW_MARGIN_MS)
            {
                return Ok(Some((url.clone(), row.preview_token.clone())));
            }
        }
        let p = self.provider.preview(id, self.preview_port).await?;
        store::set_preview(
            self.sql(),
            &row.project_id,
            &p.url,
            p.token.as_deref(),
            p.expires_ms,
        )
        .await?;
        Ok(Some((p.url, p.token)))
    }

    /// Asks the provider where a changing sandbox is now (for reads); a
    /// sandbox that became ready gets its files.
    pub async fn refresh(&self, row: SandboxRow) -> ApiResult<SandboxRow> {
        let (true, Some(id)) = (row.state.is_transitional(), row.external_id.clone()) else {
            return Ok(row);
        };
        if !store::claim(self.sql(), &row.project_id, self.now()).await? {
            return Ok(row);
        }
        let result = Box::pin(self.refresh_held(&row, &id)).await;
        store::release(self.sql(), &row.project_id).await?;
        result?;
        Ok(self.load(&row.project_id).await?.unwrap_or(row))
    }

    async fn refresh_held(&self, row: &SandboxRow, id: &str) -> ApiResult<()> {
        let project = row.project_id.as_str();
        let remote = match self.provider.get(id).await {
            Ok(r) => r,
            Err(ProviderError::NotFound) => {
                self.set_state(project, State::Destroyed, None).await?;
                return Ok(());
            }
            Err(e) => return Err(e.into()),
        };
        // Always written: a sandbox still changing is looked at again later.
        self.set_state(project, remote.state, remote.error.as_deref())
            .await?;
        if remote.state == State::Started {
            let handle = Handle {
                id,
                toolbox_url: row.toolbox_url.as_deref(),
            };
            sync::run(self.sql(), self.provider.as_ref(), project, handle)
                .await
                .map_err(sync_err)?;
        }
        Ok(())
    }

    /// Stops (or archives) the project's sandbox without waiting for it.
    pub async fn stop(&self, project: &str, archive: bool) -> ApiResult<Option<SandboxRow>> {
        let Some(row) = self.load(project).await? else {
            return Ok(None);
        };
        if !store::claim(self.sql(), project, self.now()).await? {
            let mut e = ApiError::conflict(
                "sandbox_busy",
                "The sandbox is starting or stopping right now; try again in a moment.",
            );
            e.retry_after = Some(2);
            return Err(e);
        }
        let result = Box::pin(self.stop_held(&row, archive)).await;
        store::release(self.sql(), project).await?;
        result?;
        self.load(project).await
    }

    /// Stops or archives with the lease held (also the idle job's path).
    pub async fn stop_held(&self, row: &SandboxRow, archive: bool) -> ApiResult<State> {
        let project = row.project_id.as_str();
        let Some(id) = row.external_id.as_deref() else {
            return Ok(row.state);
        };
        let remote = match self.provider.get(id).await {
            Ok(r) => r,
            Err(ProviderError::NotFound) => {
                self.set_state(project, State::Destroyed, None).await?;
                return Ok(State::Destroyed);
            }
            Err(e) => return Err(e.into()),
        };
        let next = match (remote.state, archive) {
            (State::Started | State::Starting | State::Restoring | State::Creating, _) => {
                self.provider.stop(id).await?;
                State::Stopping
            }
            (State::Stopped, true) => {
                self.provider.archive(id).await?;
                State::Archiving
            }
            (other, _) => other,
        };
        self.set_state(project, next, remote.error.as_deref())
            .await?;
        Ok(next)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn months_start_at_midnight_utc_on_the_first() {
        // 2026-05-28T20:26:40Z
        let now = 1_780_000_000_000;
        assert_eq!(month_start(now), 1_777_593_600_000); // 2026-05-01T00:00:00Z
        assert_eq!(
            until_next_month(now),
            (1_780_272_000_000 - now) as u64 / 1000
        ); // 2026-06-01
    }
}
