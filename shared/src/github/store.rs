//! The GitHub tables: installations, project links, the per-file sync base
//! and webhook deliveries. Every query of a user-reachable row filters by
//! its owner; the webhook paths (no user) go by repository or installation.

use std::collections::HashMap;

use serde_json::Value as Json;

use crate::pagination::rfc3339;
use crate::ports::sql::{Row, Sql, SqlError, Value};

#[derive(Debug, Clone)]
pub struct Installation {
    pub installation_id: i64,
    pub owner_id: Option<String>,
    pub account_login: String,
    pub account_type: String,
    pub suspended: bool,
}

impl Installation {
    pub fn json(&self) -> Json {
        serde_json::json!({
            "installation_id": self.installation_id,
            "account": self.account_login,
            "account_type": self.account_type,
            "suspended": self.suspended,
        })
    }
}

fn installation(r: &Row) -> Result<Installation, SqlError> {
    Ok(Installation {
        installation_id: r.int("installation_id")?,
        owner_id: r.opt_text("owner_id")?,
        account_login: r.text("account_login")?,
        account_type: r.text("account_type")?,
        suspended: r.bool("suspended")?,
    })
}

const INSTALLATION_COLS: &str = "installation_id, owner_id, account_login, account_type, suspended";

pub async fn installation_by_id(sql: &dyn Sql, id: i64) -> Result<Option<Installation>, SqlError> {
    sql.query_opt(
        &format!("SELECT {INSTALLATION_COLS} FROM github_installations WHERE installation_id = $1"),
        &[Value::Int(id)],
    )
    .await?
    .as_ref()
    .map(installation)
    .transpose()
}

pub async fn installations_of(sql: &dyn Sql, owner: &str) -> Result<Vec<Installation>, SqlError> {
    sql.query(
        &format!("SELECT {INSTALLATION_COLS} FROM github_installations WHERE owner_id = $1 ORDER BY installation_id"),
        &[owner.into()],
    )
    .await?
    .iter()
    .map(installation)
    .collect()
}

/// Links the installation to `owner` unless another user holds it; returns
/// whether `owner` holds it now.
pub async fn claim_installation(
    sql: &dyn Sql,
    owner: &str,
    id: i64,
    login: &str,
    account_id: Option<i64>,
    account_type: &str,
    suspended: bool,
) -> Result<bool, SqlError> {
    let row = sql
        .query_opt(
            "INSERT INTO github_installations (installation_id, owner_id, account_login, account_id, account_type, suspended)
             VALUES ($1, $2, $3, $4::int8, $5, $6)
             ON CONFLICT (installation_id) DO UPDATE SET owner_id = EXCLUDED.owner_id,
                 account_login = EXCLUDED.account_login, account_id = EXCLUDED.account_id,
                 account_type = EXCLUDED.account_type, suspended = EXCLUDED.suspended, updated_at = now()
             WHERE github_installations.owner_id IS NULL OR github_installations.owner_id = EXCLUDED.owner_id
             RETURNING installation_id",
            &[Value::Int(id), owner.into(), login.into(), account_id.map(Value::Int).unwrap_or(Value::Null), account_type.into(), suspended.into()],
        )
        .await?;
    Ok(row.is_some())
}

/// An installation GitHub told us about (no owner until a user claims it).
pub async fn upsert_installation(
    sql: &dyn Sql,
    id: i64,
    login: &str,
    account_id: Option<i64>,
    account_type: &str,
    suspended: bool,
) -> Result<(), SqlError> {
    sql.execute(
        "INSERT INTO github_installations (installation_id, account_login, account_id, account_type, suspended)
         VALUES ($1, $2, $3::int8, $4, $5)
         ON CONFLICT (installation_id) DO UPDATE SET account_login = EXCLUDED.account_login,
             account_id = EXCLUDED.account_id, account_type = EXCLUDED.account_type,
             suspended = EXCLUDED.suspended, updated_at = now()",
        &[Value::Int(id), login.into(), account_id.map(Value::Int).unwrap_or(Value::Null), account_type.into(), suspended.into()],
    )
    .await?;
    Ok(())
}

pub async fn delete_installation(sql: &dyn Sql, id: i64) -> Result<(), SqlError> {
    sql.execute(
        "DELETE FROM github_installations WHERE installation_id = $1",
        &[Value::Int(id)],
    )
    .await?;
    Ok(())
}

pub async fn set_suspended(sql: &dyn Sql, id: i64, suspended: bool) -> Result<(), SqlError> {
    sql.execute(
        "UPDATE github_installations SET suspended = $2, updated_at = now() WHERE installation_id = $1",
        &[Value::Int(id), suspended.into()],
    )
    .await?;
    Ok(())
}

/// A project's repository link.
#[derive(Debug, Clone)]
pub struct Link {
    pub project_id: String,
    pub owner_id: String,
    pub installation_id: i64,
    pub repo_id: Option<i64>,
    pub repo_owner: String,
    pub repo_name: String,
    pub branch: String,
    pub last_synced_sha: Option<String>,
    pub last_synced_tree: Option<String>,
    pub last_pushed_sha: Option<String>,
    pub snapshot_exact: bool,
    pub last_sync_at: Option<i64>,
    pub last_error: Option<String>,
    pub conflict: Option<Json>,
    pub last_report: Option<Json>,
    pub status: String,
    pub created_at: i64,
}

impl Link {
    /// What the API shows of a link.
    pub fn json(&self) -> Json {
        serde_json::json!({
            "project_id": self.project_id,
            "installation_id": self.installation_id,
            "repository": format!("{}/{}", self.repo_owner, self.repo_name),
            "owner": self.repo_owner,
            "name": self.repo_name,
            "branch": self.branch,
            "status": self.status,
            "last_synced_commit": self.last_synced_sha,
            "last_sync_at": self.last_sync_at.map(rfc3339),
            "last_error": self.last_error,
            "conflict": self.conflict,
            "last_report": self.last_report,
            "created_at": rfc3339(self.created_at),
        })
    }
}

const LINK_COLS: &str =
    "project_id, owner_id, installation_id, repo_id, repo_owner, repo_name, branch,
    last_synced_sha, last_synced_tree, last_pushed_sha, snapshot_exact, last_sync_at AT TIME ZONE 'UTC' AS last_sync_at, last_error,
    conflict::text AS conflict, last_report::text AS last_report, status, created_at AT TIME ZONE 'UTC' AS created_at";

fn link(r: &Row) -> Result<Link, SqlError> {
    Ok(Link {
        project_id: r.text("project_id")?,
        owner_id: r.text("owner_id")?,
        installation_id: r.int("installation_id")?,
        repo_id: r.opt_int("repo_id")?,
        repo_owner: r.text("repo_owner")?,
        repo_name: r.text("repo_name")?,
        branch: r.text("branch")?,
        last_synced_sha: r.opt_text("last_synced_sha")?,
        last_synced_tree: r.opt_text("last_synced_tree")?,
        last_pushed_sha: r.opt_text("last_pushed_sha")?,
        snapshot_exact: r.bool("snapshot_exact")?,
        last_sync_at: r.opt_int("last_sync_at")?,
        last_error: r.opt_text("last_error")?,
        conflict: r
            .opt_text("conflict")?
            .and_then(|t| serde_json::from_str(&t).ok()),
        last_report: r
            .opt_text("last_report")?
            .and_then(|t| serde_json::from_str(&t).ok()),
        status: r.text("status")?,
        created_at: r.int("created_at")?,
    })
}

/// The link of the owner's project.
pub async fn link_of(sql: &dyn Sql, owner: &str, project: &str) -> Result<Option<Link>, SqlError> {
    sql.query_opt(
        &format!("SELECT {LINK_COLS} FROM github_links WHERE project_id = $1 AND owner_id = $2"),
        &[project.into(), owner.into()],
    )
    .await?
    .as_ref()
    .map(link)
    .transpose()
}

/// Active links of a repository (by id, or by name for links made before the id was known).
pub async fn links_of_repo(
    sql: &dyn Sql,
    repo_id: Option<i64>,
    owner: &str,
    name: &str,
) -> Result<Vec<Link>, SqlError> {
    sql.query(
        &format!(
            "SELECT {LINK_COLS} FROM github_links
             WHERE ($1::int8 IS NOT NULL AND repo_id = $1::int8)
                OR (repo_id IS NULL AND lower(repo_owner) = lower($2) AND lower(repo_name) = lower($3))
             ORDER BY project_id"
        ),
        &[repo_id.map(Value::Int).unwrap_or(Value::Null), owner.into(), name.into()],
    )
    .await?
    .iter()
    .map(link)
    .collect()
}

/// Creates or replaces the project's link; a new repository or branch starts with an empty sync base.
#[allow(clippy::too_many_arguments)]
pub async fn put_link(
    sql: &dyn Sql,
    project: &str,
    owner: &str,
    installation: i64,
    repo_id: Option<i64>,
    repo_owner: &str,
    repo_name: &str,
    branch: &str,
) -> Result<(), SqlError> {
    sql.execute(
        "DELETE FROM github_links WHERE project_id = $1 AND NOT (installation_id = $2 AND repo_id IS NOT DISTINCT FROM $3::int8
             AND lower(repo_owner) = lower($4) AND lower(repo_name) = lower($5) AND branch = $6)",
        &[project.into(), Value::Int(installation), repo_id.map(Value::Int).unwrap_or(Value::Null), repo_owner.into(), repo_name.into(), branch.into()],
    )
    .await?;
    sql.execute(
        "INSERT INTO github_links (project_id, owner_id, installation_id, repo_id, repo_owner, repo_name, branch)
         VALUES ($1, $2, $3, $4::int8, $5, $6, $7)
         ON CONFLICT (project_id) DO UPDATE SET status = 'active', repo_owner = EXCLUDED.repo_owner,
             repo_name = EXCLUDED.repo_name, updated_at = now()",
        &[project.into(), owner.into(), Value::Int(installation), repo_id.map(Value::Int).unwrap_or(Value::Null), repo_owner.into(), repo_name.into(), branch.into()],
    )
    .await?;
    Ok(())
}

pub async fn delete_link(sql: &dyn Sql, owner: &str, project: &str) -> Result<bool, SqlError> {
    Ok(sql
        .execute(
            "DELETE FROM github_links WHERE project_id = $1 AND owner_id = $2",
            &[project.into(), owner.into()],
        )
        .await?
        > 0)
}

/// Takes the project's sync lease for `secs`; false while another sync holds it.
pub async fn try_lock(sql: &dyn Sql, project: &str, secs: i64) -> Result<bool, SqlError> {
    Ok(sql
        .execute(
            "UPDATE github_links SET sync_lock_until = now() + make_interval(secs => $2)
             WHERE project_id = $1 AND (sync_lock_until IS NULL OR sync_lock_until < now())",
            &[project.into(), Value::Float(secs as f64)],
        )
        .await?
        > 0)
}

pub async fn unlock(sql: &dyn Sql, project: &str) -> Result<(), SqlError> {
    sql.execute(
        "UPDATE github_links SET sync_lock_until = NULL WHERE project_id = $1",
        &[project.into()],
    )
    .await?;
    Ok(())
}

/// Re-reads a link (within a sync, after the lock).
pub async fn reload(sql: &dyn Sql, project: &str) -> Result<Option<Link>, SqlError> {
    sql.query_opt(
        &format!("SELECT {LINK_COLS} FROM github_links WHERE project_id = $1"),
        &[project.into()],
    )
    .await?
    .as_ref()
    .map(link)
    .transpose()
}

/// Records the commit we are about to move the branch to.
pub async fn set_pushed(sql: &dyn Sql, project: &str, sha: &str) -> Result<(), SqlError> {
    sql.execute(
        "UPDATE github_links SET last_pushed_sha = $2, snapshot_exact = false WHERE project_id = $1",
        &[project.into(), sha.into()],
    )
    .await?;
    Ok(())
}

/// Marks the base as being changed (a sync is under way).
pub async fn set_inexact(sql: &dyn Sql, project: &str) -> Result<(), SqlError> {
    sql.execute(
        "UPDATE github_links SET snapshot_exact = false WHERE project_id = $1",
        &[project.into()],
    )
    .await?;
    Ok(())
}

/// The end of a good sync; its report replaces the last one when it did something.
#[allow(clippy::too_many_arguments)]
pub async fn finish_sync(
    sql: &dyn Sql,
    project: &str,
    head: Option<&str>,
    tree: Option<&str>,
    exact: bool,
    conflict: Option<&Json>,
    report: &Json,
    did_something: bool,
) -> Result<(), SqlError> {
    sql.execute(
        "UPDATE github_links SET last_synced_sha = $2, last_synced_tree = $3, snapshot_exact = $4,
             conflict = $5::text::jsonb, last_report = CASE WHEN $7 THEN $6::text::jsonb ELSE last_report END,
             last_error = NULL, last_sync_at = now(), updated_at = now()
         WHERE project_id = $1",
        &[
            project.into(),
            head.into(),
            tree.into(),
            exact.into(),
            conflict.map(Json::to_string).into(),
            report.to_string().into(),
            did_something.into(),
        ],
    )
    .await?;
    Ok(())
}

pub async fn set_error(sql: &dyn Sql, project: &str, error: &str) -> Result<(), SqlError> {
    sql.execute(
        "UPDATE github_links SET last_error = $2, updated_at = now() WHERE project_id = $1",
        &[project.into(), error.into()],
    )
    .await?;
    Ok(())
}

pub async fn set_status_for_installation(
    sql: &dyn Sql,
    installation: i64,
    from: &[&str],
    to: &str,
) -> Result<u64, SqlError> {
    sql.execute(
        "UPDATE github_links SET status = $3, updated_at = now()
         WHERE installation_id = $1 AND status IN (SELECT jsonb_array_elements_text($2::text::jsonb))",
        &[
            Value::Int(installation),
            serde_json::json!(from).to_string().into(),
            to.into(),
        ],
    )
    .await
}

pub async fn set_status_for_repos(
    sql: &dyn Sql,
    installation: i64,
    repo_ids: &[i64],
    from: &[&str],
    to: &str,
) -> Result<u64, SqlError> {
    sql.execute(
        "UPDATE github_links SET status = $4, updated_at = now()
         WHERE installation_id = $1 AND repo_id IN (SELECT (jsonb_array_elements_text($2::text::jsonb))::int8)
           AND status IN (SELECT jsonb_array_elements_text($3::text::jsonb))",
        &[Value::Int(installation), serde_json::json!(repo_ids).to_string().into(), serde_json::json!(from).to_string().into(), to.into()],
    )
    .await
}

pub async fn rename_repo(
    sql: &dyn Sql,
    repo_id: i64,
    owner: &str,
    name: &str,
) -> Result<u64, SqlError> {
    sql.execute(
        "UPDATE github_links SET repo_owner = $2, repo_name = $3, updated_at = now() WHERE repo_id = $1",
        &[Value::Int(repo_id), owner.into(), name.into()],
    )
    .await
}

pub async fn set_status_for_repo(sql: &dyn Sql, repo_id: i64, to: &str) -> Result<u64, SqlError> {
    sql.execute(
        "UPDATE github_links SET status = $2, updated_at = now() WHERE repo_id = $1",
        &[Value::Int(repo_id), to.into()],
    )
    .await
}

/// A file of the sync base.
#[derive(Debug, Clone, PartialEq)]
pub struct Base {
    pub git_sha: String,
    /// `None`: a repository file the project does not hold.
    pub sha256: Option<String>,
    /// The git file mode (`100644`, `100755`, ...).
    pub mode: String,
}

pub async fn base(sql: &dyn Sql, project: &str) -> Result<HashMap<String, Base>, SqlError> {
    let rows = sql
        .query(
            "SELECT path, git_sha, sha256, mode FROM github_synced_files WHERE project_id = $1",
            &[project.into()],
        )
        .await?;
    rows.iter()
        .map(|r| {
            Ok((
                r.text("path")?,
                Base {
                    git_sha: r.text("git_sha")?,
                    sha256: r.opt_text("sha256")?,
                    mode: r.text("mode")?,
                },
            ))
        })
        .collect()
}

/// Sets base entries (`Some`) and removes others (`None`), in one statement each.
pub async fn put_base(
    sql: &dyn Sql,
    project: &str,
    entries: &[(String, Option<Base>)],
) -> Result<(), SqlError> {
    let (set, gone): (Vec<_>, Vec<_>) = entries.iter().partition(|(_, b)| b.is_some());
    if !set.is_empty() {
        let rows: Vec<Json> = set
            .iter()
            .filter_map(|(p, b)| {
                b.as_ref().map(
                    |b| serde_json::json!({"path": p, "git_sha": b.git_sha, "sha256": b.sha256, "mode": b.mode}),
                )
            })
            .collect();
        sql.execute(
            "INSERT INTO github_synced_files (project_id, path, git_sha, sha256, mode)
             SELECT $1, x.path, x.git_sha, x.sha256, x.mode FROM jsonb_to_recordset($2::text::jsonb) AS x(path text, git_sha text, sha256 text, mode text)
             ON CONFLICT (project_id, path) DO UPDATE SET git_sha = EXCLUDED.git_sha, sha256 = EXCLUDED.sha256, mode = EXCLUDED.mode",
            &[project.into(), Json::Array(rows).to_string().into()],
        )
        .await?;
    }
    if !gone.is_empty() {
        let paths: Vec<&str> = gone.iter().map(|(p, _)| p.as_str()).collect();
        sql.execute(
            "DELETE FROM github_synced_files WHERE project_id = $1 AND path IN (SELECT jsonb_array_elements_text($2::text::jsonb))",
            &[project.into(), serde_json::json!(paths).to_string().into()],
        )
        .await?;
    }
    Ok(())
}

pub async fn clear_base(sql: &dyn Sql, project: &str) -> Result<(), SqlError> {
    sql.execute(
        "DELETE FROM github_synced_files WHERE project_id = $1",
        &[project.into()],
    )
    .await?;
    Ok(())
}

/// Path -> (sha256, size) of every file of the project.
pub async fn local_files(
    sql: &dyn Sql,
    project: &str,
) -> Result<HashMap<String, (String, i64)>, SqlError> {
    let rows = sql
        .query(
            "SELECT path, sha256, size FROM files WHERE project_id = $1",
            &[project.into()],
        )
        .await?;
    rows.iter()
        .map(|r| Ok((r.text("path")?, (r.text("sha256")?, r.int("size")?))))
        .collect()
}

/// The contents of these files of the owner's project.
pub async fn local_contents(
    sql: &dyn Sql,
    owner: &str,
    project: &str,
    paths: &[&str],
) -> Result<Vec<(String, String, Vec<u8>)>, SqlError> {
    if paths.is_empty() {
        return Ok(Vec::new());
    }
    let rows = sql
        .query(
            "SELECT f.path, f.sha256, b.content FROM files f
             JOIN blobs b ON b.owner_id = f.owner_id AND b.sha256 = f.sha256
             WHERE f.project_id = $1 AND f.owner_id = $2
               AND f.path IN (SELECT jsonb_array_elements_text($3::text::jsonb))",
            &[
                project.into(),
                owner.into(),
                serde_json::json!(paths).to_string().into(),
            ],
        )
        .await?;
    rows.iter()
        .map(|r| Ok((r.text("path")?, r.text("sha256")?, r.bytes("content")?)))
        .collect()
}

/// Records a delivery; `true` when it is new, or when its earlier attempt
/// failed or never finished (10 minutes without a result): then it runs again.
pub async fn begin_delivery(sql: &dyn Sql, id: &str, event: &str) -> Result<bool, SqlError> {
    let fresh = sql
        .execute(
            "INSERT INTO webhook_deliveries (source, delivery_id, event) VALUES ('github', $1, $2)
             ON CONFLICT (source, delivery_id) DO NOTHING",
            &[id.into(), event.into()],
        )
        .await?;
    if fresh > 0 {
        return Ok(true);
    }
    Ok(sql
        .execute(
            "UPDATE webhook_deliveries SET result = NULL, processed_at = NULL, received_at = now()
             WHERE source = 'github' AND delivery_id = $1
               AND (result LIKE 'failed%' OR (result IS NULL AND received_at < now() - interval '10 minutes'))",
            &[id.into()],
        )
        .await?
        > 0)
}

pub async fn finish_delivery(sql: &dyn Sql, id: &str, result: &str) -> Result<(), SqlError> {
    sql.execute(
        "UPDATE webhook_deliveries SET processed_at = now(), result = $2 WHERE source = 'github' AND delivery_id = $1",
        &[id.into(), result.into()],
    )
    .await?;
    Ok(())
}

/// What a link is owed by the catch-up job (`github_links.catchup`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Owed {
    /// The branch into the project (a webhook's pull).
    Pull,
    /// Both ways, committing ours (an agent run's push); covers a pull.
    Push,
}

impl Owed {
    pub fn as_str(self) -> &'static str {
        match self {
            Owed::Pull => "pull",
            Owed::Push => "push",
        }
    }
}

/// A link with a sync owed, as the catch-up job sees it.
#[derive(Debug, Clone)]
pub struct Due {
    pub link: Link,
    pub owed: Owed,
    pub message: Option<String>,
    pub by: Option<String>,
    pub attempts: i64,
}

/// Marks a sync as owed before it runs, retried from `after` unless a sync
/// covering it succeeds first. A push owed stays a push (it covers a pull);
/// a new mark starts the retry count again.
pub async fn owe(
    sql: &dyn Sql,
    project: &str,
    owed: Owed,
    message: Option<&str>,
    by: &str,
    now: i64,
    after: i64,
) -> Result<(), SqlError> {
    sql.execute(
        "UPDATE github_links SET
             catchup = CASE WHEN catchup = 'push' OR $2 = 'push' THEN 'push' ELSE 'pull' END,
             catchup_message = CASE WHEN $2 = 'push' THEN $3 ELSE catchup_message END,
             catchup_by = CASE WHEN $2 = 'push' OR catchup IS DISTINCT FROM 'push' THEN $4 ELSE catchup_by END,
             catchup_since = $5, catchup_after = $6, catchup_attempts = 0
         WHERE project_id = $1",
        &[
            project.into(),
            owed.as_str().into(),
            message.into(),
            by.into(),
            Value::Timestamp(now),
            Value::Timestamp(after),
        ],
    )
    .await?;
    Ok(())
}

/// A sync of kind `done` that started at `started` succeeded: what it
/// covers is no longer owed (a pull does not cover an owed push; a mark made
/// after it started stays).
pub async fn settle(
    sql: &dyn Sql,
    project: &str,
    done: Owed,
    started: i64,
) -> Result<bool, SqlError> {
    Ok(sql
        .execute(
            "UPDATE github_links SET catchup = NULL, catchup_message = NULL, catchup_by = NULL,
                 catchup_since = NULL, catchup_after = NULL, catchup_attempts = 0
             WHERE project_id = $1 AND catchup IS NOT NULL AND catchup_since <= $3
               AND ($2 = 'push' OR catchup = 'pull')",
            &[
                project.into(),
                done.as_str().into(),
                Value::Timestamp(started),
            ],
        )
        .await?
        > 0)
}

/// Active links owing a sync that is due at `now`, fewer than `max_attempts`
/// retries in, oldest first.
pub async fn due(
    sql: &dyn Sql,
    now: i64,
    max_attempts: i64,
    limit: i64,
) -> Result<Vec<Due>, SqlError> {
    sql.query(
        &format!(
            "SELECT {LINK_COLS}, catchup, catchup_message, catchup_by, catchup_attempts FROM github_links
             WHERE catchup IS NOT NULL AND status = 'active' AND catchup_after <= $1 AND catchup_attempts < $2
             ORDER BY catchup_after, project_id LIMIT $3"
        ),
        &[Value::Timestamp(now), Value::Int(max_attempts), Value::Int(limit)],
    )
    .await?
    .iter()
    .map(|r| {
        Ok(Due {
            link: link(r)?,
            owed: if r.text("catchup")? == "push" {
                Owed::Push
            } else {
                Owed::Pull
            },
            message: r.opt_text("catchup_message")?,
            by: r.opt_text("catchup_by")?,
            attempts: r.int("catchup_attempts")?,
        })
    })
    .collect()
}

/// A retry failed: the next one not before `after`; `counted` retries are
/// added (a rate limit is not the link's fault). `gave_up` notes on
/// `last_error` that the job stops here.
pub async fn retry_later(
    sql: &dyn Sql,
    project: &str,
    after: i64,
    counted: bool,
    gave_up: Option<&str>,
) -> Result<(), SqlError> {
    sql.execute(
        "UPDATE github_links SET catchup_after = $2,
             catchup_attempts = catchup_attempts + CASE WHEN $3 THEN 1 ELSE 0 END,
             last_error = CASE WHEN $4::text IS NULL THEN last_error ELSE concat_ws(' ', last_error, $4::text) END
         WHERE project_id = $1 AND catchup IS NOT NULL",
        &[
            project.into(),
            Value::Timestamp(after),
            counted.into(),
            gave_up.into(),
        ],
    )
    .await?;
    Ok(())
}
