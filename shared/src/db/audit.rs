//! The audit log: who did what to which resource, from where.

use crate::ids;
use crate::ports::sql::{Sql, SqlError, Value};
use crate::routes::Ctx;

/// Records one audit event for `user_id`.
pub async fn record(
    sql: &dyn Sql,
    ctx: &Ctx<'_>,
    user_id: &str,
    action: &str,
    target: Option<&str>,
    detail: serde_json::Value,
) -> Result<(), SqlError> {
    sql.execute(
        "INSERT INTO audit_events (id, user_id, action, target, detail, ip, request_id)
         VALUES ($1, $2, $3, $4, $5::text::jsonb, $6, $7)",
        &[
            ids::new_id(ctx.ports, "aud").into(),
            user_id.into(),
            action.into(),
            target.into(),
            crate::http::request::jsonb_text(detail.to_string()).into(),
            ctx.meta.client_ip.clone().into(),
            ctx.request_id.into(),
        ],
    )
    .await?;
    Ok(())
}

/// The user's audit events as JSON, oldest first.
pub async fn export(sql: &dyn Sql, user_id: &str) -> Result<Vec<serde_json::Value>, SqlError> {
    let rows = sql
        .query(
            "SELECT id, action, target, detail::text AS detail, ip, request_id, created_at AT TIME ZONE 'UTC' AS created_at
             FROM audit_events WHERE user_id = $1 ORDER BY id",
            &[Value::from(user_id)],
        )
        .await?;
    rows.iter()
        .map(|r| {
            Ok(serde_json::json!({
                "id": r.text("id")?,
                "action": r.text("action")?,
                "target": r.opt_text("target")?,
                "detail": serde_json::from_str::<serde_json::Value>(&r.text("detail")?).unwrap_or_default(),
                "ip": r.opt_text("ip")?,
                "request_id": r.opt_text("request_id")?,
                "created_at": crate::pagination::rfc3339(r.int("created_at")?),
            }))
        })
        .collect()
}
