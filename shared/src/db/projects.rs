//! Projects, always read and written through their owner.

use crate::ids;
use crate::pagination::rfc3339;
use crate::ports::sql::{Row, Sql, SqlError, Value};

#[derive(Debug, Clone, serde::Serialize)]
pub struct Project {
    pub id: String,
    pub name: String,
    pub description: String,
    pub template: String,
    pub total_bytes: i64,
    pub created_at: String,
    pub updated_at: String,
}

const COLUMNS: &str = "id, name, description, template, total_bytes, created_at AT TIME ZONE 'UTC' AS created_at, updated_at AT TIME ZONE 'UTC' AS updated_at";

fn from_row(r: &Row) -> Result<Project, SqlError> {
    Ok(Project {
        id: r.text("id")?,
        name: r.text("name")?,
        description: r.text("description")?,
        template: r.text("template")?,
        total_bytes: r.int("total_bytes")?,
        created_at: rfc3339(r.int("created_at")?),
        updated_at: rfc3339(r.int("updated_at")?),
    })
}

pub async fn insert(
    sql: &dyn Sql,
    id: &str,
    owner: &str,
    name: &str,
    description: &str,
    template: &str,
) -> Result<Project, SqlError> {
    let row = sql
        .query_opt(
            &format!(
                "INSERT INTO projects (id, owner_id, name, description, template) VALUES ($1, $2, $3, $4, $5) RETURNING {COLUMNS}"
            ),
            &[id.into(), owner.into(), name.into(), description.into(), template.into()],
        )
        .await?
        .ok_or_else(|| SqlError::Other("insert returned no row".into()))?;
    from_row(&row)
}

/// The owner's project, or `None` (missing and foreign look the same).
pub async fn get(sql: &dyn Sql, owner: &str, id: &str) -> Result<Option<Project>, SqlError> {
    if !ids::is_valid(id, "prj") {
        return Ok(None);
    }
    sql.query_opt(
        &format!("SELECT {COLUMNS} FROM projects WHERE id = $1 AND owner_id = $2"),
        &[id.into(), owner.into()],
    )
    .await?
    .as_ref()
    .map(from_row)
    .transpose()
}

/// Locks the owner's project row for the rest of the transaction.
pub async fn lock(sql: &dyn Sql, owner: &str, id: &str) -> Result<Option<Project>, SqlError> {
    if !ids::is_valid(id, "prj") {
        return Ok(None);
    }
    sql.query_opt(
        &format!("SELECT {COLUMNS} FROM projects WHERE id = $1 AND owner_id = $2 FOR UPDATE"),
        &[id.into(), owner.into()],
    )
    .await?
    .as_ref()
    .map(from_row)
    .transpose()
}

/// One page of the owner's projects after `after`, newest id last.
pub async fn page(
    sql: &dyn Sql,
    owner: &str,
    after: Option<&str>,
    limit: usize,
) -> Result<Vec<Project>, SqlError> {
    let rows = sql
        .query(
            &format!(
                "SELECT {COLUMNS} FROM projects WHERE owner_id = $1 AND ($2::text IS NULL OR id > $2)
                 ORDER BY id LIMIT $3"
            ),
            &[owner.into(), after.into(), Value::Int(i64::try_from(limit).unwrap_or(100))],
        )
        .await?;
    rows.iter().map(from_row).collect()
}

pub async fn all_for_owner(sql: &dyn Sql, owner: &str) -> Result<Vec<Project>, SqlError> {
    let rows = sql
        .query(
            &format!("SELECT {COLUMNS} FROM projects WHERE owner_id = $1 ORDER BY id"),
            &[owner.into()],
        )
        .await?;
    rows.iter().map(from_row).collect()
}

pub async fn update(
    sql: &dyn Sql,
    owner: &str,
    id: &str,
    name: Option<&str>,
    description: Option<&str>,
) -> Result<Option<Project>, SqlError> {
    if !ids::is_valid(id, "prj") {
        return Ok(None);
    }
    sql.query_opt(
        &format!(
            "UPDATE projects SET name = COALESCE($3, name), description = COALESCE($4, description), updated_at = now()
             WHERE id = $1 AND owner_id = $2 RETURNING {COLUMNS}"
        ),
        &[id.into(), owner.into(), name.into(), description.into()],
    )
    .await?
    .as_ref()
    .map(from_row)
    .transpose()
}

/// Deletes the project, its files and blobs no other file of the owner uses.
pub async fn delete(sql: &dyn Sql, owner: &str, id: &str) -> Result<bool, SqlError> {
    if !ids::is_valid(id, "prj") {
        return Ok(false);
    }
    let n = sql
        .execute(
            "DELETE FROM projects WHERE id = $1 AND owner_id = $2",
            &[id.into(), owner.into()],
        )
        .await?;
    if n > 0 {
        sql.execute(
            "DELETE FROM blobs b WHERE b.owner_id = $1
             AND NOT EXISTS (SELECT 1 FROM files f WHERE f.owner_id = b.owner_id AND f.sha256 = b.sha256)",
            &[owner.into()],
        )
        .await?;
    }
    Ok(n > 0)
}
