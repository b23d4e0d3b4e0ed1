//! Users and their credentials.

use crate::auth::oidc::Identity;
use crate::error::{ApiError, ApiResult};
use crate::ids;
use crate::pagination::rfc3339;
use crate::ports::sql::{Row, Sql, SqlError};
use crate::routes::Ctx;

#[derive(Debug, Clone, serde::Serialize)]
pub struct User {
    pub id: String,
    pub email: Option<String>,
    pub role: String,
    pub tier: String,
    pub created_at: String,
    /// Limits an admin set over the tier's (see `billing::tiers`).
    #[serde(skip)]
    pub limits_override: serde_json::Value,
}

const COLUMNS: &str = "id, email, role, tier, created_at AT TIME ZONE 'UTC' AS created_at, limits_override::text AS limits_override";

fn from_row(r: &Row) -> Result<User, SqlError> {
    Ok(User {
        id: r.text("id")?,
        email: r.opt_text("email")?,
        role: r.text("role")?,
        tier: r.text("tier")?,
        created_at: rfc3339(r.int("created_at")?),
        limits_override: serde_json::from_str(&r.text("limits_override")?).unwrap_or_default(),
    })
}

impl User {
    pub fn limits(&self) -> crate::billing::tiers::Limits {
        crate::billing::tiers::effective(&self.tier, &self.limits_override)
    }
}

/// One page of all users (admin), oldest first, each with its model cost
/// since the start of the month (micro-USD), read in the same statement.
pub async fn page_with_month_cost(
    sql: &dyn Sql,
    after: Option<&str>,
    limit: usize,
) -> Result<Vec<(User, i64)>, SqlError> {
    sql.query(
        &format!(
            "SELECT {COLUMNS},
                 (SELECT COALESCE(sum(d.cost_micros), 0)::int8 FROM usage_days d
                  WHERE d.owner_id = users.id
                    AND d.day >= date_trunc('month', now() AT TIME ZONE 'UTC')::date) AS month_cost
             FROM users WHERE ($1::text IS NULL OR id > $1) ORDER BY id LIMIT $2"
        ),
        &[
            after.into(),
            crate::ports::sql::Value::Int(i64::try_from(limit).unwrap_or(100)),
        ],
    )
    .await?
    .iter()
    .map(|r| Ok((from_row(r)?, r.int("month_cost")?)))
    .collect()
}

/// Sets tier, role and limit overrides (each when given); the updated user.
pub async fn update_admin(
    sql: &dyn Sql,
    id: &str,
    tier: Option<&str>,
    role: Option<&str>,
    limits: Option<&serde_json::Value>,
) -> Result<Option<User>, SqlError> {
    if !ids::is_valid(id, "usr") {
        return Ok(None);
    }
    sql.query_opt(
        &format!(
            "UPDATE users SET tier = COALESCE($2, tier), role = COALESCE($3, role),
                 limits_override = COALESCE($4::text::jsonb, limits_override), updated_at = now()
             WHERE id = $1 RETURNING {COLUMNS}"
        ),
        &[
            id.into(),
            tier.into(),
            role.into(),
            limits.map(|l| l.to_string()).into(),
        ],
    )
    .await?
    .as_ref()
    .map(from_row)
    .transpose()
}

pub async fn by_id(sql: &dyn Sql, id: &str) -> Result<Option<User>, SqlError> {
    if !ids::is_valid(id, "usr") {
        return Ok(None);
    }
    sql.query_opt(
        &format!("SELECT {COLUMNS} FROM users WHERE id = $1"),
        &[id.into()],
    )
    .await?
    .as_ref()
    .map(from_row)
    .transpose()
}

/// The user and password hash for a login, if the account has a password.
pub async fn credentials_by_email(
    sql: &dyn Sql,
    email_normalized: &str,
) -> Result<Option<(User, String)>, SqlError> {
    let row = sql
        .query_opt(
            "SELECT u.id, u.email, u.role, u.tier, u.created_at AT TIME ZONE 'UTC' AS created_at, u.limits_override::text AS limits_override, c.password_hash
             FROM users u JOIN credentials c ON c.user_id = u.id WHERE u.email_normalized = $1",
            &[email_normalized.into()],
        )
        .await?;
    row.map(|r| Ok((from_row(&r)?, r.text("password_hash")?)))
        .transpose()
}

/// Creates a password account; `email_taken` when the address is in use.
pub async fn create_with_password(
    sql: &dyn Sql,
    id: &str,
    display: &str,
    normalized: &str,
    hash: &str,
    role: &str,
) -> ApiResult<User> {
    let row = sql
        .query_opt(
            &format!("INSERT INTO users (id, email, email_normalized, role) VALUES ($1, $2, $3, $4) RETURNING {COLUMNS}"),
            &[id.into(), display.into(), normalized.into(), role.into()],
        )
        .await
        .map_err(|e| match e {
            SqlError::Unique(_) => ApiError::conflict("email_taken", "An account with this email already exists."),
            e => ApiError::from(e),
        })?
        .ok_or_else(|| ApiError::internal("insert returned no row"))?;
    sql.execute(
        "INSERT INTO credentials (user_id, password_hash) VALUES ($1, $2)",
        &[id.into(), hash.into()],
    )
    .await?;
    Ok(from_row(&row)?)
}

/// Finds or creates the user of an external identity. The email is kept
/// only when no other account holds it (an unverified OIDC email must never
/// take over a password account).
pub async fn upsert_oidc(ctx: &Ctx<'_>, identity: &Identity) -> ApiResult<User> {
    let sql = ctx.ports.sql.as_ref();
    let subject = format!("{}|{}", identity.issuer, identity.subject);
    let select = format!("SELECT {COLUMNS} FROM users WHERE oidc_subject = $1");
    if let Some(r) = sql.query_opt(&select, &[subject.clone().into()]).await? {
        return Ok(from_row(&r)?);
    }
    let id = ids::new_id(ctx.ports, "usr");
    let insert = "INSERT INTO users (id, email, email_normalized, oidc_subject, role)
                  VALUES ($1, $2, $3, $4, $5) ON CONFLICT (oidc_subject) DO NOTHING";
    // The identity's email is one its issuer verified (`oidc::verify` keeps
    // no other): on it, ADMIN_EMAILS makes the new user an admin.
    let email = identity.email.clone();
    let normalized = email.as_ref().map(|e| e.to_lowercase());
    let admin = normalized
        .as_ref()
        .is_some_and(|e| ctx.ports.config().is_ok_and(|c| c.admin_emails.contains(e)));
    let role = if admin { "admin" } else { "user" };
    let first = sql
        .execute(
            insert,
            &[
                id.clone().into(),
                email.into(),
                normalized.into(),
                subject.clone().into(),
                role.into(),
            ],
        )
        .await;
    match first {
        Ok(_) => {}
        Err(SqlError::Unique(_)) => {
            sql.execute(
                insert,
                &[
                    id.clone().into(),
                    crate::ports::sql::Value::Null,
                    crate::ports::sql::Value::Null,
                    subject.clone().into(),
                    "user".into(),
                ],
            )
            .await?;
        }
        Err(e) => return Err(e.into()),
    }
    let row = sql
        .query_opt(&select, &[subject.into()])
        .await?
        .ok_or_else(|| ApiError::internal("oidc user vanished"))?;
    let user = from_row(&row)?;
    if user.id == id {
        crate::db::audit::record(
            sql,
            ctx,
            &user.id,
            "auth.oidc_user_created",
            Some(&identity.issuer),
            serde_json::json!({}),
        )
        .await?;
    }
    Ok(user)
}
