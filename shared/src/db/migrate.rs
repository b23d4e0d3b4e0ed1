//! Schema migrations: numbered SQL files in `migrations/`, embedded here and
//! applied in order, each in its own transaction, recorded in
//! `schema_migrations`. Re-running applies nothing twice. The same code runs
//! from `scripts/migrate` (host) and in tests.

use crate::ports::sql::{transaction, Sql, SqlError, Value};

pub struct Migration {
    pub version: i64,
    pub name: &'static str,
    pub sql: &'static str,
}

pub const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "0001_foundation",
        sql: include_str!("../../../migrations/0001_foundation.sql"),
    },
    Migration {
        version: 2,
        name: "0002_chat",
        sql: include_str!("../../../migrations/0002_chat.sql"),
    },
    Migration {
        version: 3,
        name: "0003_tiers_keys",
        sql: include_str!("../../../migrations/0003_tiers_keys.sql"),
    },
    Migration {
        version: 4,
        name: "0004_github",
        sql: include_str!("../../../migrations/0004_github.sql"),
    },
    Migration {
        version: 5,
        name: "0005_sandboxes",
        sql: include_str!("../../../migrations/0005_sandboxes.sql"),
    },
    Migration {
        version: 6,
        name: "0006_github_catchup",
        sql: include_str!("../../../migrations/0006_github_catchup.sql"),
    },
    Migration {
        version: 7,
        name: "0007_sandbox_quota",
        sql: include_str!("../../../migrations/0007_sandbox_quota.sql"),
    },
    Migration {
        version: 8,
        name: "0008_usage_daily",
        sql: include_str!("../../../migrations/0008_usage_daily.sql"),
    },
    Migration {
        version: 9,
        name: "0009_usage_days",
        sql: include_str!("../../../migrations/0009_usage_days.sql"),
    },
    Migration {
        version: 10,
        name: "0010_drop_usage_daily",
        sql: include_str!("../../../migrations/0010_drop_usage_daily.sql"),
    },
    Migration {
        version: 11,
        name: "0011_files_blob_fk_no_cascade",
        sql: include_str!("../../../migrations/0011_files_blob_fk_no_cascade.sql"),
    },
    Migration {
        version: 12,
        name: "0012_usage_estimated",
        sql: include_str!("../../../migrations/0012_usage_estimated.sql"),
    },
];

/// A fixed key for the advisory lock that serialises concurrent migrators.
const LOCK_KEY: i64 = 0x6576_6572_6a75;

/// Applies every migration not yet recorded; returns the names applied.
pub async fn apply(sql: &dyn Sql, migrations: &[Migration]) -> Result<Vec<&'static str>, SqlError> {
    sql.batch(
        "CREATE TABLE IF NOT EXISTS schema_migrations (
            version    bigint PRIMARY KEY,
            name       text NOT NULL,
            applied_at timestamptz NOT NULL DEFAULT now()
        )",
    )
    .await?;
    sql.batch(&format!("SELECT pg_advisory_lock({LOCK_KEY})"))
        .await?;
    let result = apply_locked(sql, migrations).await;
    let unlock = sql
        .batch(&format!("SELECT pg_advisory_unlock({LOCK_KEY})"))
        .await;
    let applied = result?;
    unlock?;
    Ok(applied)
}

async fn apply_locked(
    sql: &dyn Sql,
    migrations: &[Migration],
) -> Result<Vec<&'static str>, SqlError> {
    let done: Vec<i64> = sql
        .query(
            "SELECT version FROM schema_migrations ORDER BY version",
            &[],
        )
        .await?
        .iter()
        .map(|r| r.int("version"))
        .collect::<Result<_, _>>()?;
    let mut applied = Vec::new();
    for m in migrations.iter().filter(|m| !done.contains(&m.version)) {
        transaction(sql, async || {
            sql.batch(m.sql).await?;
            sql.execute(
                "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)",
                &[Value::Int(m.version), m.name.into()],
            )
            .await
        })
        .await?;
        applied.push(m.name);
    }
    Ok(applied)
}
