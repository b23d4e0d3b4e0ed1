//! The `sandboxes` and `sandbox_files` tables: one row per project with the
//! provider's state mirrored, the idle bookkeeping, and the hash of every
//! file as last uploaded. All times come from the clock port.

use crate::ports::sql::{Row, Sql, SqlError, Value};

use super::provider::State;

/// A stopped sandbox idle this long is archived.
pub const ARCHIVE_AFTER_MINUTES: i64 = 24 * 60;
/// A start or stop holds the row at most this long (a crashed one expires).
pub const LEASE_MS: i64 = 90_000;
/// Activity closer together than this is written once.
const TOUCH_DEBOUNCE_MS: i64 = 10_000;
/// The provider's idle timer is refreshed at most this often.
pub const KEEPALIVE_EVERY_MS: i64 = 60_000;

/// When the idle job must look at a sandbox next, from its own columns:
/// stop a started one after its idle minutes, archive a stopped one after
/// `ARCHIVE_AFTER_MINUTES`, re-check one stuck in a transition, never for
/// the rest.
fn due_expr() -> String {
    format!(
        "CASE WHEN state = 'started' THEN last_activity_at + make_interval(mins => idle_minutes)
              WHEN state = 'stopped' THEN last_activity_at + make_interval(mins => {ARCHIVE_AFTER_MINUTES})
              WHEN state IN ('creating', 'starting', 'restoring', 'stopping', 'archiving') THEN updated_at + interval '2 minutes'
              ELSE NULL END"
    )
}

const COLUMNS: &str = "project_id, owner_id, provider, external_id, generation, toolbox_url, state, error,
    preview_url, preview_token, preview_expires_at AT TIME ZONE 'UTC' AS preview_expires_at, idle_minutes,
    last_activity_at AT TIME ZONE 'UTC' AS last_activity_at, keepalive_at AT TIME ZONE 'UTC' AS keepalive_at, due_at AT TIME ZONE 'UTC' AS due_at,
    started_at AT TIME ZONE 'UTC' AS started_at, lease_until AT TIME ZONE 'UTC' AS lease_until,
    created_at AT TIME ZONE 'UTC' AS created_at, updated_at AT TIME ZONE 'UTC' AS updated_at";

#[derive(Debug, Clone, PartialEq)]
pub struct SandboxRow {
    pub project_id: String,
    pub owner_id: String,
    pub provider: String,
    pub external_id: Option<String>,
    pub generation: i64,
    pub toolbox_url: Option<String>,
    pub state: State,
    pub error: Option<String>,
    pub preview_url: Option<String>,
    pub preview_token: Option<String>,
    pub preview_expires_ms: Option<i64>,
    pub idle_minutes: i64,
    pub last_activity_ms: i64,
    pub keepalive_ms: Option<i64>,
    pub due_ms: Option<i64>,
    pub started_ms: Option<i64>,
    pub lease_until_ms: Option<i64>,
    pub created_ms: i64,
    pub updated_ms: i64,
}

fn from_row(r: &Row) -> Result<SandboxRow, SqlError> {
    Ok(SandboxRow {
        project_id: r.text("project_id")?,
        owner_id: r.text("owner_id")?,
        provider: r.text("provider")?,
        external_id: r.opt_text("external_id")?,
        generation: r.int("generation")?,
        toolbox_url: r.opt_text("toolbox_url")?,
        state: State::parse(&r.text("state")?),
        error: r.opt_text("error")?,
        preview_url: r.opt_text("preview_url")?,
        preview_token: r.opt_text("preview_token")?,
        preview_expires_ms: r.opt_int("preview_expires_at")?,
        idle_minutes: r.int("idle_minutes")?,
        last_activity_ms: r.int("last_activity_at")?,
        keepalive_ms: r.opt_int("keepalive_at")?,
        due_ms: r.opt_int("due_at")?,
        started_ms: r.opt_int("started_at")?,
        lease_until_ms: r.opt_int("lease_until")?,
        created_ms: r.int("created_at")?,
        updated_ms: r.int("updated_at")?,
    })
}

pub async fn load(sql: &dyn Sql, project: &str) -> Result<Option<SandboxRow>, SqlError> {
    sql.query_opt(
        &format!("SELECT {COLUMNS} FROM sandboxes WHERE project_id = $1"),
        &[project.into()],
    )
    .await?
    .as_ref()
    .map(from_row)
    .transpose()
}

/// The row of the project, made (state `none`) if it has none.
pub async fn ensure(
    sql: &dyn Sql,
    project: &str,
    owner: &str,
    provider: &str,
    idle_minutes: i64,
    now: i64,
) -> Result<SandboxRow, SqlError> {
    sql.execute(
        "INSERT INTO sandboxes (project_id, owner_id, provider, state, idle_minutes, last_activity_at, created_at, updated_at)
         VALUES ($1, $2, $3, 'none', $4::int8::int4, $5, $5, $5) ON CONFLICT (project_id) DO NOTHING",
        &[project.into(), owner.into(), provider.into(), Value::Int(idle_minutes), Value::Timestamp(now)],
    )
    .await?;
    load(sql, project)
        .await?
        .ok_or_else(|| SqlError::Other("sandbox row vanished".into()))
}

/// Takes the row's lease for a start or stop; false when another holds it.
pub async fn claim(sql: &dyn Sql, project: &str, now: i64) -> Result<bool, SqlError> {
    Ok(sql
        .execute(
            "UPDATE sandboxes SET lease_until = $2 WHERE project_id = $1 AND (lease_until IS NULL OR lease_until < $3)",
            &[project.into(), Value::Timestamp(now + LEASE_MS), Value::Timestamp(now)],
        )
        .await?
        == 1)
}

pub async fn release(sql: &dyn Sql, project: &str) -> Result<(), SqlError> {
    sql.execute(
        "UPDATE sandboxes SET lease_until = NULL WHERE project_id = $1",
        &[project.into()],
    )
    .await?;
    Ok(())
}

/// Records the remote sandbox now serving the project.
pub async fn set_remote(
    sql: &dyn Sql,
    project: &str,
    external_id: &str,
    toolbox_url: Option<&str>,
    idle_minutes: i64,
) -> Result<(), SqlError> {
    sql.execute(
        "UPDATE sandboxes SET external_id = $2, toolbox_url = COALESCE($3, toolbox_url), idle_minutes = $4::int8::int4 WHERE project_id = $1",
        &[project.into(), external_id.into(), toolbox_url.into(), Value::Int(idle_minutes)],
    )
    .await?;
    Ok(())
}

/// Forgets the remote sandbox (broken or gone): the next start makes a new
/// one under the next generation and uploads every file again.
pub async fn forget_remote(sql: &dyn Sql, project: &str) -> Result<(), SqlError> {
    sql.execute(
        "UPDATE sandboxes SET external_id = NULL, toolbox_url = NULL, preview_url = NULL, preview_token = NULL,
             preview_expires_at = NULL, generation = generation + 1 WHERE project_id = $1",
        &[project.into()],
    )
    .await?;
    sql.execute(
        "DELETE FROM sandbox_files WHERE project_id = $1",
        &[project.into()],
    )
    .await?;
    Ok(())
}

/// Moves the row to `state`. Leaving `started` closes the running period
/// into `usage_ledger` (kind `sandbox`), exactly once even when a webhook
/// and a request report the same stop. Returns the state it left, or `None`
/// when the row does not exist.
///
/// With `event_at` (a provider event's time), the move is made only if
/// nothing newer reached the row since the event passed
/// [`event_is_newer`]: the check and the move are one statement, so a
/// request that saw the sandbox in a later state between the two (its
/// move sets `provider_updated_at` to its own time) is not undone by the
/// older event; `None` then too. An event's move stamps the event's time,
/// not ours: events processed late stay ordered by when they happened.
pub async fn transition(
    sql: &dyn Sql,
    project: &str,
    state: State,
    error: Option<&str>,
    now: i64,
    usage_id: &str,
    event_at: Option<i64>,
) -> Result<Option<State>, SqlError> {
    let Some(row) = sql
        .query_opt(
            "WITH old AS (SELECT project_id, state, started_at FROM sandboxes WHERE project_id = $1
                             AND ($5::timestamptz IS NULL OR provider_updated_at IS NULL OR provider_updated_at <= $5::timestamptz)
                           FOR UPDATE)
             UPDATE sandboxes s SET
                 state = $2::text,
                 error = $3::text,
                 started_at = CASE WHEN $2::text = 'started' THEN COALESCE(s.started_at, $4) ELSE NULL END,
                 last_activity_at = CASE WHEN $2::text = 'started' AND s.state <> 'started'
                                         THEN GREATEST(s.last_activity_at, $4) ELSE s.last_activity_at END,
                 preview_url = CASE WHEN $2::text = 'started' THEN s.preview_url ELSE NULL END,
                 preview_expires_at = CASE WHEN $2::text = 'started' THEN s.preview_expires_at ELSE NULL END,
                 provider_updated_at = GREATEST(s.provider_updated_at, COALESCE($5::timestamptz, $4)),
                 updated_at = $4
             FROM old WHERE s.project_id = old.project_id
             RETURNING old.state AS old_state, old.started_at AT TIME ZONE 'UTC' AS was_started, s.owner_id, s.provider",
            &[
                project.into(),
                state.as_str().into(),
                error.into(),
                Value::Timestamp(now),
                event_at.map_or(Value::Null, Value::Timestamp),
            ],
        )
        .await?
    else {
        return Ok(None);
    };
    refresh_due(sql, project).await?;
    if let (Some(started), true) = (row.opt_int("was_started")?, state != State::Started) {
        let secs = (now - started).max(0) / 1000;
        sql.execute(
            "INSERT INTO usage_ledger (id, owner_id, kind, provider, model, compute_seconds, created_at)
             VALUES ($1, $2, 'sandbox', $3, 'sandbox', $4, $5)",
            &[
                usage_id.into(),
                row.text("owner_id")?.into(),
                row.text("provider")?.into(),
                Value::Int(secs),
                Value::Timestamp(now),
            ],
        )
        .await?;
    }
    Ok(Some(State::parse(&row.text("old_state")?)))
}

async fn refresh_due(sql: &dyn Sql, project: &str) -> Result<(), SqlError> {
    sql.execute(
        &format!(
            "UPDATE sandboxes SET due_at = {} WHERE project_id = $1",
            due_expr()
        ),
        &[project.into()],
    )
    .await?;
    Ok(())
}

/// Applies a provider event unless a newer one was applied already.
/// Returns false for an event older than the row's newest.
pub async fn event_is_newer(sql: &dyn Sql, project: &str, at: i64) -> Result<bool, SqlError> {
    Ok(sql
        .execute(
            "UPDATE sandboxes SET provider_updated_at = $2 WHERE project_id = $1
             AND (provider_updated_at IS NULL OR provider_updated_at <= $2)",
            &[project.into(), Value::Timestamp(at)],
        )
        .await?
        == 1)
}

/// The project of a remote sandbox.
pub async fn by_external(
    sql: &dyn Sql,
    provider: &str,
    external_id: &str,
) -> Result<Option<SandboxRow>, SqlError> {
    sql.query_opt(
        &format!("SELECT {COLUMNS} FROM sandboxes WHERE provider = $1 AND external_id = $2"),
        &[provider.into(), external_id.into()],
    )
    .await?
    .as_ref()
    .map(from_row)
    .transpose()
}

pub async fn set_preview(
    sql: &dyn Sql,
    project: &str,
    url: &str,
    token: Option<&str>,
    expires_ms: Option<i64>,
) -> Result<(), SqlError> {
    sql.execute(
        "UPDATE sandboxes SET preview_url = $2, preview_token = $3, preview_expires_at = $4 WHERE project_id = $1",
        &[project.into(), url.into(), token.into(), expires_ms.map(Value::Timestamp).unwrap_or(Value::Null)],
    )
    .await?;
    Ok(())
}

/// What `touch` found: the remote sandbox to keep alive, if it is time to.
#[derive(Debug, Clone, PartialEq)]
pub struct Touched {
    pub external_id: String,
}

/// Records activity on the project's sandbox (debounced) and moves its idle
/// deadline. Returns the remote sandbox whose own idle timer is due for a
/// refresh (and marks it refreshed).
pub async fn touch(sql: &dyn Sql, project: &str, now: i64) -> Result<Option<Touched>, SqlError> {
    let row = sql
        .query_opt(
            &format!(
                "UPDATE sandboxes SET last_activity_at = $2,
                     due_at = CASE WHEN state = 'started' THEN $2 + make_interval(mins => idle_minutes)
                                   WHEN state = 'stopped' THEN $2 + make_interval(mins => {ARCHIVE_AFTER_MINUTES})
                                   ELSE due_at END,
                     keepalive_at = CASE WHEN state = 'started' AND external_id IS NOT NULL
                                          AND (keepalive_at IS NULL OR keepalive_at < $3) THEN $2 ELSE keepalive_at END
                 WHERE project_id = $1 AND last_activity_at < $4
                 RETURNING external_id, (keepalive_at = $2) AS keepalive"
            ),
            &[
                project.into(),
                Value::Timestamp(now),
                Value::Timestamp(now - KEEPALIVE_EVERY_MS),
                Value::Timestamp(now - TOUCH_DEBOUNCE_MS),
            ],
        )
        .await?;
    let Some(row) = row else { return Ok(None) };
    Ok(
        match (row.opt_text("external_id")?, row.value("keepalive")?) {
            (Some(id), Value::Bool(true)) => Some(Touched { external_id: id }),
            _ => None,
        },
    )
}

/// Moves the activity time forward to what the provider saw (its preview
/// proxy counts visits we never see).
pub async fn activity_at_least(sql: &dyn Sql, project: &str, at: i64) -> Result<(), SqlError> {
    sql.execute(
        "UPDATE sandboxes SET last_activity_at = $2 WHERE project_id = $1 AND last_activity_at < $2",
        &[project.into(), Value::Timestamp(at)],
    )
    .await?;
    refresh_due(sql, project).await
}

/// The idle job's query: sandboxes due for a look, earliest first, that no
/// start or stop holds. One range scan of the partial index `sandboxes_due`
/// (ordered by the table's column, not its UTC output alias, so the index
/// gives the order).
pub const DUE_QUERY: &str = "SELECT project_id, owner_id, provider, external_id, generation, toolbox_url, state, error,
    preview_url, preview_token, preview_expires_at AT TIME ZONE 'UTC' AS preview_expires_at, idle_minutes,
    last_activity_at AT TIME ZONE 'UTC' AS last_activity_at, keepalive_at AT TIME ZONE 'UTC' AS keepalive_at, due_at AT TIME ZONE 'UTC' AS due_at,
    started_at AT TIME ZONE 'UTC' AS started_at, lease_until AT TIME ZONE 'UTC' AS lease_until,
    created_at AT TIME ZONE 'UTC' AS created_at, updated_at AT TIME ZONE 'UTC' AS updated_at
    FROM sandboxes WHERE due_at IS NOT NULL AND due_at <= $1 AND (lease_until IS NULL OR lease_until < $1)
    ORDER BY sandboxes.due_at LIMIT $2";

pub async fn due(sql: &dyn Sql, now: i64, limit: i64) -> Result<Vec<SandboxRow>, SqlError> {
    sql.query(DUE_QUERY, &[Value::Timestamp(now), Value::Int(limit)])
        .await?
        .iter()
        .map(from_row)
        .collect()
}

/// Paths and hashes as last uploaded to the project's sandbox.
pub async fn uploaded(sql: &dyn Sql, project: &str) -> Result<Vec<(String, String)>, SqlError> {
    sql.query(
        "SELECT path, sha256 FROM sandbox_files WHERE project_id = $1 ORDER BY path",
        &[project.into()],
    )
    .await?
    .iter()
    .map(|r| Ok((r.text("path")?, r.text("sha256")?)))
    .collect()
}

pub async fn record_uploaded(
    sql: &dyn Sql,
    project: &str,
    files: &[(String, String)],
) -> Result<(), SqlError> {
    if files.is_empty() {
        return Ok(());
    }
    let doc = serde_json::Value::Array(
        files
            .iter()
            .map(|(p, h)| serde_json::json!([p, h]))
            .collect(),
    );
    sql.execute(
        "INSERT INTO sandbox_files (project_id, path, sha256)
         SELECT $1, x->>0, x->>1 FROM json_array_elements($2::text::json) x
         ON CONFLICT (project_id, path) DO UPDATE SET sha256 = EXCLUDED.sha256",
        &[project.into(), doc.to_string().into()],
    )
    .await?;
    Ok(())
}

pub async fn forget_uploaded(sql: &dyn Sql, project: &str, path: &str) -> Result<(), SqlError> {
    sql.execute(
        "DELETE FROM sandbox_files WHERE project_id = $1 AND path = $2",
        &[project.into(), path.into()],
    )
    .await?;
    Ok(())
}

/// Contents of the given files of a project (with the hash read), for upload.
pub async fn contents(
    sql: &dyn Sql,
    project: &str,
    paths: &[String],
) -> Result<Vec<(String, String, Vec<u8>)>, SqlError> {
    let doc = serde_json::to_string(paths).map_err(|e| SqlError::Other(e.to_string()))?;
    sql.query(
        "SELECT f.path, f.sha256, b.content FROM files f
         JOIN blobs b ON b.owner_id = f.owner_id AND b.sha256 = f.sha256
         WHERE f.project_id = $1 AND f.path IN (SELECT json_array_elements_text($2::text::json))
         ORDER BY f.path",
        &[project.into(), doc.into()],
    )
    .await?
    .iter()
    .map(|r| Ok((r.text("path")?, r.text("sha256")?, r.bytes("content")?)))
    .collect()
}

/// Compute seconds of `owner` since `since`: closed periods plus the
/// running ones up to `now`.
pub async fn compute_seconds(
    sql: &dyn Sql,
    owner: &str,
    since: i64,
    now: i64,
) -> Result<i64, SqlError> {
    let row = sql
        .query_opt(
            "SELECT
               (SELECT COALESCE(sum(compute_seconds), 0)::int8 FROM usage_ledger
                 WHERE owner_id = $1 AND kind = 'sandbox' AND created_at >= $2) +
               (SELECT COALESCE(sum(EXTRACT(EPOCH FROM ($3 - GREATEST(started_at, $2)))), 0)::int8 FROM sandboxes
                 WHERE owner_id = $1 AND started_at IS NOT NULL) AS secs",
            &[owner.into(), Value::Timestamp(since), Value::Timestamp(now)],
        )
        .await?;
    row.map_or(Ok(0), |r| r.int("secs"))
}

/// The owner's other projects whose sandbox is running or on its way up
/// (the `sandboxes_owner_active` index), or leased by a start or stop in
/// progress (which may be about to make it run), oldest activity first.
pub async fn running_elsewhere(
    sql: &dyn Sql,
    owner: &str,
    project: &str,
    now: i64,
) -> Result<Vec<String>, SqlError> {
    sql.query(
        "SELECT project_id FROM sandboxes
          WHERE owner_id = $1 AND project_id <> $2
            AND (state IN ('creating', 'starting', 'restoring', 'started') OR lease_until > $3)
          ORDER BY last_activity_at, project_id",
        &[owner.into(), project.into(), Value::Timestamp(now)],
    )
    .await?
    .iter()
    .map(|r| r.text("project_id"))
    .collect()
}
