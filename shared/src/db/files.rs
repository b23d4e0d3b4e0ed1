//! Project files: metadata per path, contents stored once per owner and
//! sha256. Callers hold the project row lock (see `projects::lock`) while
//! writing, so the project's byte total stays exact.

use crate::pagination::rfc3339;
use crate::ports::sql::{Row, Sql, SqlError, Value};
use crate::projects::path::ProjectPath;

#[derive(Debug, Clone, serde::Serialize)]
pub struct FileMeta {
    pub path: String,
    pub size: i64,
    pub sha256: String,
    pub updated_at: String,
}

fn from_row(r: &Row) -> Result<FileMeta, SqlError> {
    Ok(FileMeta {
        path: r.text("path")?,
        size: r.int("size")?,
        sha256: r.text("sha256")?,
        updated_at: rfc3339(r.int("updated_at")?),
    })
}

pub async fn page(
    sql: &dyn Sql,
    project: &str,
    after: Option<&str>,
    limit: usize,
) -> Result<Vec<FileMeta>, SqlError> {
    let rows = sql
        .query(
            "SELECT path, size, sha256, updated_at AT TIME ZONE 'UTC' AS updated_at FROM files
             WHERE project_id = $1 AND ($2::text IS NULL OR path > $2) ORDER BY path LIMIT $3",
            &[
                project.into(),
                after.into(),
                Value::Int(i64::try_from(limit).unwrap_or(1000)),
            ],
        )
        .await?;
    rows.iter().map(from_row).collect()
}

pub async fn meta(
    sql: &dyn Sql,
    project: &str,
    path: &ProjectPath,
) -> Result<Option<FileMeta>, SqlError> {
    sql.query_opt(
        "SELECT path, size, sha256, updated_at AT TIME ZONE 'UTC' AS updated_at FROM files WHERE project_id = $1 AND path = $2",
        &[project.into(), path.as_str().into()],
    )
    .await?
    .as_ref()
    .map(from_row)
    .transpose()
}

/// A file of the project that `path` cannot stand beside: one at a folder
/// of `path` (`a` for `a/b`), or one inside `path` as a folder (`a/b` for
/// `a`). A project's files are a tree; a Git tree, a sandbox's disk and a
/// preview hold no name as both.
pub async fn clash(
    sql: &dyn Sql,
    project: &str,
    path: &ProjectPath,
) -> Result<Option<String>, SqlError> {
    let p = path.as_str();
    let folders: Vec<&str> = p.match_indices('/').map(|(i, _)| &p[..i]).collect();
    let row = sql
        .query_opt(
            "SELECT path FROM files WHERE project_id = $1
               AND (path IN (SELECT jsonb_array_elements_text($2::text::jsonb)) OR starts_with(path, $3))
             LIMIT 1",
            &[
                project.into(),
                serde_json::Value::from(folders).to_string().into(),
                format!("{p}/").into(),
            ],
        )
        .await?;
    row.map(|r| r.text("path")).transpose()
}

/// The file's metadata and content, read through its owner.
pub async fn read(
    sql: &dyn Sql,
    owner: &str,
    project: &str,
    path: &ProjectPath,
) -> Result<Option<(FileMeta, Vec<u8>)>, SqlError> {
    let row = sql
        .query_opt(
            "SELECT f.path, f.size, f.sha256, f.updated_at AT TIME ZONE 'UTC' AS updated_at, b.content
             FROM files f JOIN projects p ON p.id = f.project_id
             JOIN blobs b ON b.owner_id = f.owner_id AND b.sha256 = f.sha256
             WHERE f.project_id = $1 AND f.path = $2 AND p.owner_id = $3",
            &[project.into(), path.as_str().into(), owner.into()],
        )
        .await?;
    row.map(|r| Ok((from_row(&r)?, r.bytes("content")?)))
        .transpose()
}

/// Writes the file over `old`, the file as it is now (read under the
/// project's lock; `None` in a new project): content stored once per owner
/// and hash, `projects.total_bytes` kept exact. Its statements go out
/// together (pipelined on one connection, run in this order), one round
/// trip. Returns the file's metadata and whether it was new.
pub async fn write_over(
    sql: &dyn Sql,
    owner: &str,
    project: &str,
    path: &ProjectPath,
    sha256: &str,
    content: &[u8],
    old: Option<&FileMeta>,
) -> Result<(FileMeta, bool), SqlError> {
    let size = i64::try_from(content.len()).unwrap_or(i64::MAX);
    let delta = size - old.map_or(0, |o| o.size);
    // The old content is collected after the file no longer names it.
    let replaced = old.map(|o| o.sha256.as_str()).filter(|o| *o != sha256);
    let (blob, row, total, collected) = futures_util::future::join4(
        sql.execute(
            "INSERT INTO blobs (owner_id, sha256, size, content) VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
            &[owner.into(), sha256.into(), Value::Int(size), content.into()],
        ),
        sql.query_opt(
            "INSERT INTO files (project_id, path, owner_id, sha256, size) VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (project_id, path) DO UPDATE SET sha256 = EXCLUDED.sha256, size = EXCLUDED.size, updated_at = now()
             RETURNING path, size, sha256, updated_at AT TIME ZONE 'UTC' AS updated_at",
            &[project.into(), path.as_str().into(), owner.into(), sha256.into(), Value::Int(size)],
        ),
        sql.execute(
            "UPDATE projects SET total_bytes = total_bytes + $2, updated_at = now() WHERE id = $1",
            &[project.into(), Value::Int(delta)],
        ),
        async {
            match replaced {
                Some(old_sha) => collect_blob(sql, owner, old_sha).await,
                None => Ok(()),
            }
        },
    )
    .await;
    blob?;
    let row = row?.ok_or_else(|| SqlError::Other("upsert returned no row".into()))?;
    total?;
    collected?;
    Ok((from_row(&row)?, old.is_none()))
}

/// Deletes the file `current` describes.
pub async fn delete(
    sql: &dyn Sql,
    owner: &str,
    project: &str,
    path: &ProjectPath,
    current: &FileMeta,
) -> Result<(), SqlError> {
    // `current` is the file as read under the project's lock: the project's
    // total and the content's collection need not wait for the delete's
    // answer, and go out with it (one round trip).
    let (deleted, total, collected) = futures_util::future::join3(
        sql.execute(
            "DELETE FROM files WHERE project_id = $1 AND path = $2",
            &[project.into(), path.as_str().into()],
        ),
        sql.execute(
            "UPDATE projects SET total_bytes = total_bytes - $2, updated_at = now() WHERE id = $1",
            &[project.into(), Value::Int(current.size)],
        ),
        collect_blob(sql, owner, &current.sha256),
    )
    .await;
    if deleted? != 1 {
        return Err(SqlError::Other(format!(
            "{} was not there to delete",
            path.as_str()
        )));
    }
    total?;
    collected?;
    Ok(())
}

/// Removes a blob that no file of its owner references any more.
async fn collect_blob(sql: &dyn Sql, owner: &str, sha256: &str) -> Result<(), SqlError> {
    sql.execute(
        "DELETE FROM blobs b WHERE b.owner_id = $1 AND b.sha256 = $2
         AND NOT EXISTS (SELECT 1 FROM files f WHERE f.owner_id = $1 AND f.sha256 = $2)",
        &[owner.into(), sha256.into()],
    )
    .await?;
    Ok(())
}

/// Every file of every project of `owner`, with its bytes: (project id,
/// file, bytes), by project, then path.
pub async fn export_all(
    sql: &dyn Sql,
    owner: &str,
) -> Result<Vec<(String, FileMeta, Vec<u8>)>, SqlError> {
    let rows = sql
        .query(
            "SELECT f.project_id, f.path, f.size, f.sha256, f.updated_at AT TIME ZONE 'UTC' AS updated_at, b.content FROM files f
             JOIN blobs b ON b.owner_id = f.owner_id AND b.sha256 = f.sha256
             WHERE f.owner_id = $1 ORDER BY f.project_id, f.path",
            &[owner.into()],
        )
        .await?;
    rows.iter()
        .map(|r| Ok((r.text("project_id")?, from_row(r)?, r.bytes("content")?)))
        .collect()
}
