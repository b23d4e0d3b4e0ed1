//! Sessions, runs, messages, the run event log and the usage ledger.

use serde_json::Value as Json;

use crate::chat::events::Event;
use crate::http::request::jsonb_text;
use crate::ids;
use crate::llm::Usage;
use crate::pagination::rfc3339;
use crate::ports::sql::{Row, Sql, SqlError, Value};

#[derive(Debug, Clone, serde::Serialize)]
pub struct Session {
    pub id: String,
    pub project_id: String,
    pub title: String,
    pub last_seq: i64,
    pub created_at: String,
    pub updated_at: String,
}

const SESSION_COLUMNS: &str = "id, project_id, title, last_seq, created_at AT TIME ZONE 'UTC' AS created_at, updated_at AT TIME ZONE 'UTC' AS updated_at";

fn session(r: &Row) -> Result<Session, SqlError> {
    Ok(Session {
        id: r.text("id")?,
        project_id: r.text("project_id")?,
        title: r.text("title")?,
        last_seq: r.int("last_seq")?,
        created_at: rfc3339(r.int("created_at")?),
        updated_at: rfc3339(r.int("updated_at")?),
    })
}

pub async fn insert_session(
    sql: &dyn Sql,
    id: &str,
    project: &str,
    owner: &str,
    title: &str,
) -> Result<Session, SqlError> {
    let row = sql
        .query_opt(
            &format!("INSERT INTO sessions (id, project_id, owner_id, title) VALUES ($1, $2, $3, $4) RETURNING {SESSION_COLUMNS}"),
            &[id.into(), project.into(), owner.into(), title.into()],
        )
        .await?
        .ok_or_else(|| SqlError::Other("insert returned no row".into()))?;
    session(&row)
}

/// The owner's session (missing and foreign look the same).
pub async fn session_of(sql: &dyn Sql, owner: &str, id: &str) -> Result<Option<Session>, SqlError> {
    if !ids::is_valid(id, "ses") {
        return Ok(None);
    }
    sql.query_opt(
        &format!("SELECT {SESSION_COLUMNS} FROM sessions WHERE id = $1 AND owner_id = $2"),
        &[id.into(), owner.into()],
    )
    .await?
    .as_ref()
    .map(session)
    .transpose()
}

pub async fn sessions_page(
    sql: &dyn Sql,
    project: &str,
    after: Option<&str>,
    limit: usize,
) -> Result<Vec<Session>, SqlError> {
    let rows = sql
        .query(
            &format!("SELECT {SESSION_COLUMNS} FROM sessions WHERE project_id = $1 AND ($2::text IS NULL OR id > $2) ORDER BY id LIMIT $3"),
            &[project.into(), after.into(), Value::Int(i64::try_from(limit).unwrap_or(100))],
        )
        .await?;
    rows.iter().map(session).collect()
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct StoredMessage {
    pub id: String,
    pub run_id: Option<String>,
    pub role: String,
    pub content: Json,
    pub status: String,
    pub model: Option<String>,
    pub usage: Usage,
    pub cost_micros: i64,
    pub created_at: String,
}

const MESSAGE_COLUMNS: &str =
    "id, run_id, role, content::text AS content, status, model, input_tokens, output_tokens, \
     cache_read_tokens, cache_write_tokens, cost_micros, created_at AT TIME ZONE 'UTC' AS created_at";

fn message(r: &Row) -> Result<StoredMessage, SqlError> {
    Ok(StoredMessage {
        id: r.text("id")?,
        run_id: r.opt_text("run_id")?,
        role: r.text("role")?,
        content: serde_json::from_str(&r.text("content")?).unwrap_or(Json::Null),
        status: r.text("status")?,
        model: r.opt_text("model")?,
        usage: Usage {
            input_tokens: r.int("input_tokens")?,
            output_tokens: r.int("output_tokens")?,
            cache_read_tokens: r.int("cache_read_tokens")?,
            cache_write_tokens: r.int("cache_write_tokens")?,
        },
        cost_micros: r.int("cost_micros")?,
        created_at: rfc3339(r.int("created_at")?),
    })
}

pub async fn messages_page(
    sql: &dyn Sql,
    session: &str,
    after: Option<&str>,
    limit: usize,
) -> Result<Vec<StoredMessage>, SqlError> {
    let rows = sql
        .query(
            &format!("SELECT {MESSAGE_COLUMNS} FROM messages WHERE session_id = $1 AND ($2::text IS NULL OR id > $2) ORDER BY id LIMIT $3"),
            &[session.into(), after.into(), Value::Int(i64::try_from(limit).unwrap_or(100))],
        )
        .await?;
    rows.iter().map(message).collect()
}

/// The newest messages of a session (of `owner`'s, when given: none of a
/// session that is not theirs, for a read that goes out before the
/// session's owner is checked) that a run may give the model: those whose
/// newer messages' stored content fits `budget_bytes`, and the last user's
/// message with everything after it, oldest first. `chat::agent::context`
/// picks the window from these; as stored sizes are at most the content's
/// text (compressed above 2 KB), they hold all of it. A long session's
/// older messages are not read on the way to the first token.
pub async fn recent_messages(
    sql: &dyn Sql,
    session: &str,
    owner: Option<&str>,
    budget_bytes: usize,
) -> Result<Vec<StoredMessage>, SqlError> {
    let rows = sql
        .query(
            &format!(
                // One scan, windows over it (a CTE read twice and an `IN`
                // cost Postgres four times the planning, which every run's
                // start waited on).
                "SELECT {MESSAGE_COLUMNS} FROM (
                     SELECT *,
                            sum(pg_column_size(content)) OVER (ORDER BY id DESC) - pg_column_size(content) AS newer,
                            max(id) FILTER (WHERE role = 'user') OVER () AS last_user
                       FROM messages WHERE session_id = $1 AND ($2::text IS NULL OR owner_id = $2)) m
                  WHERE newer <= $3 OR id >= last_user
                  ORDER BY id"
            ),
            &[
                session.into(),
                owner.into(),
                Value::Int(i64::try_from(budget_bytes).unwrap_or(i64::MAX)),
            ],
        )
        .await?;
    rows.iter().map(message).collect()
}

#[allow(clippy::too_many_arguments)]
pub async fn insert_message(
    sql: &dyn Sql,
    id: &str,
    session: &str,
    owner: &str,
    run: Option<&str>,
    role: &str,
    content: &Json,
    status: &str,
    model: Option<&str>,
    usage: &Usage,
    cost: i64,
) -> Result<(), SqlError> {
    let m = NewMessage {
        id,
        session,
        owner,
        run,
        role,
        content,
        status,
        model,
        usage,
        cost,
    };
    insert(sql, &m, "").await.map(drop)
}

/// [`insert_message`] of a run's answer by its driver: only while the run
/// is still running. A run already ended (found lost by a reader, who
/// stored its partial answer) gets no second answer from a driver that
/// was only slow. Whether it was stored.
pub async fn insert_answer(sql: &dyn Sql, m: &NewMessage<'_>) -> Result<bool, SqlError> {
    Ok(insert(
        sql,
        m,
        // FOR UPDATE: a reader ending the run at this moment is waited
        // for, and the row read again after its commit.
        " WHERE EXISTS (SELECT 1 FROM runs WHERE id = $4 AND status = 'running' FOR UPDATE)",
    )
    .await?
        == 1)
}

/// How a run ended, as stored: its status and its error.
pub async fn run_end(
    sql: &dyn Sql,
    id: &str,
) -> Result<Option<(String, Option<String>)>, SqlError> {
    sql.query_opt("SELECT status, error FROM runs WHERE id = $1", &[id.into()])
        .await?
        .map(|r| Ok((r.text("status")?, r.opt_text("error")?)))
        .transpose()
}

pub struct NewMessage<'a> {
    pub id: &'a str,
    pub session: &'a str,
    pub owner: &'a str,
    pub run: Option<&'a str>,
    pub role: &'a str,
    pub content: &'a Json,
    pub status: &'a str,
    pub model: Option<&'a str>,
    pub usage: &'a Usage,
    pub cost: i64,
}

async fn insert(sql: &dyn Sql, m: &NewMessage<'_>, guard: &str) -> Result<u64, SqlError> {
    sql.execute(
        &format!(
            "INSERT INTO messages (id, session_id, owner_id, run_id, role, content, status, model,
                 input_tokens, output_tokens, cache_read_tokens, cache_write_tokens, cost_micros)
             SELECT $1, $2, $3, $4, $5, $6::text::jsonb, $7, $8, $9, $10, $11, $12, $13{guard}"
        ),
        &[
            m.id.into(),
            m.session.into(),
            m.owner.into(),
            m.run.into(),
            m.role.into(),
            jsonb_text(m.content.to_string()).into(),
            m.status.into(),
            m.model.into(),
            Value::Int(m.usage.input_tokens),
            Value::Int(m.usage.output_tokens),
            Value::Int(m.usage.cache_read_tokens),
            Value::Int(m.usage.cache_write_tokens),
            Value::Int(m.cost),
        ],
    )
    .await
}

/// What [`start_run`] writes: the run, the user's message that starts it
/// and the audit event of the start.
pub struct RunStart<'a> {
    pub run_id: &'a str,
    pub session_id: &'a str,
    pub owner_id: &'a str,
    pub provider: &'a str,
    pub model: &'a str,
    pub message_id: &'a str,
    pub content: &'a Json,
    pub audit_id: &'a str,
    pub audit_detail: &'a Json,
    pub ip: Option<&'a str>,
    pub request_id: &'a str,
}

/// Starts a run: the run, its user message and its audit event in one
/// statement (atomic without a transaction, one round trip); the session's
/// sequence number before the run, or `None` when the session already has
/// an active run or is not the owner's (then nothing is written). Statements sent after it on the
/// same connection see what it wrote.
///
/// Run starts of one owner are serialized: the statement first takes a
/// lock on the owner that its transaction holds until it ends, and the
/// run's `started_at` is read after it. So when the start is in a
/// transaction with reads after it (`chat::handlers::admit`), a concurrent
/// start of the same owner waits for that transaction's end, and its own
/// reads see this run, started before it, the way they would if each
/// start committed on its own.
pub async fn start_run(sql: &dyn Sql, s: &RunStart<'_>) -> Result<Option<i64>, SqlError> {
    let r = sql
        .query_opt(
            "WITH owner_lock AS (
                 -- The same lock as AFTER_RUN_START's.
                 SELECT pg_advisory_xact_lock(hashtextextended('everjust.runs:' || $3, 0))
             ), run AS (
                 INSERT INTO runs (id, session_id, owner_id, provider, model, first_seq, started_at)
                 SELECT $1, $2, $3, $4, $5, last_seq, clock_timestamp() FROM owner_lock, sessions WHERE id = $2 AND owner_id = $3
                 ON CONFLICT DO NOTHING RETURNING first_seq
             ), message AS (
                 INSERT INTO messages (id, session_id, owner_id, run_id, role, content, status)
                 SELECT $6, $2, $3, $1, 'user', $7::text::jsonb, 'complete' FROM run
             ), audit AS (
                 INSERT INTO audit_events (id, user_id, action, target, detail, ip, request_id)
                 SELECT $8, $3, 'chat.run', $2, $9::text::jsonb, $10, $11 FROM run
             )
             SELECT first_seq FROM run",
            &[
                s.run_id.into(),
                s.session_id.into(),
                s.owner_id.into(),
                s.provider.into(),
                s.model.into(),
                s.message_id.into(),
                s.content.to_string().into(),
                s.audit_id.into(),
                s.audit_detail.to_string().into(),
                s.ip.into(),
                s.request_id.into(),
            ],
        )
        .await;
    r?.map(|r| r.int("first_seq")).transpose()
}

/// A statement (with its parameter, the run's owner) that a run's room
/// runs on its connection before any other: it is answered once no start
/// of a run of the owner is still uncommitted (it waits for the lock
/// [`start_run`] takes to be released). The request that starts a run
/// hands it to its room before its transaction's commit is answered
/// (`chat::handlers::admit`), so the room's first statements could
/// otherwise miss the run's row, or the message they store could find no
/// run to refer to.
pub const AFTER_RUN_START: &str =
    // The same lock as start_run's.
    "SELECT pg_advisory_xact_lock_shared(hashtextextended('everjust.runs:' || $1, 0))";

/// Removes what [`start_run`] stored, for a start refused after it: the
/// run, its user message and its audit event (nothing else refers to a run
/// that never started).
pub async fn undo_run_start(
    sql: &dyn Sql,
    run: &str,
    message: &str,
    audit: &str,
) -> Result<(), SqlError> {
    sql.execute(
        "WITH message AS (DELETE FROM messages WHERE id = $2 AND run_id = $1),
              audit AS (DELETE FROM audit_events WHERE id = $3)
         DELETE FROM runs WHERE id = $1 AND status = 'running'",
        &[run.into(), message.into(), audit.into()],
    )
    .await?;
    Ok(())
}

/// Records another provider for a started run, and in its audit event.
pub async fn set_run_provider(
    sql: &dyn Sql,
    run: &str,
    audit: &str,
    provider: &str,
    model: &str,
    detail: &Json,
) -> Result<(), SqlError> {
    sql.execute(
        "WITH audit AS (UPDATE audit_events SET detail = $5::text::jsonb WHERE id = $2)
         UPDATE runs SET provider = $3, model = $4 WHERE id = $1",
        &[
            run.into(),
            audit.into(),
            provider.into(),
            model.into(),
            detail.to_string().into(),
        ],
    )
    .await?;
    Ok(())
}

pub async fn finish_run(
    sql: &dyn Sql,
    id: &str,
    status: &str,
    error: Option<&str>,
) -> Result<(), SqlError> {
    sql.execute(
        "UPDATE runs SET status = $2, error = $3, finished_at = now() WHERE id = $1 AND status = 'running'",
        &[id.into(), status.into(), error.into()],
    )
    .await?;
    Ok(())
}

pub async fn request_cancel(sql: &dyn Sql, session: &str) -> Result<Option<String>, SqlError> {
    sql
        .query_opt(
            "UPDATE runs SET cancel_requested = true WHERE session_id = $1 AND status = 'running' RETURNING id",
            &[session.into()],
        )
        .await?
        .map(|r| r.text("id"))
        .transpose()
}

/// Ends a run that is still running in Postgres but was lost on its way to
/// its room, once it is older than `min_age_secs`; whether it did.
pub async fn end_lost_run(sql: &dyn Sql, run: &str, min_age_secs: i64) -> Result<bool, SqlError> {
    Ok(sql
        .query_opt(
            "UPDATE runs SET status = 'cancelled', error = 'room_lost', finished_at = now()
             WHERE id = $1 AND status = 'running' AND started_at < now() - make_interval(secs => $2::float8)
             RETURNING id",
            &[run.into(), min_age_secs.into()],
        )
        .await?
        .is_some())
}

pub async fn cancel_requested(sql: &dyn Sql, run: &str) -> Result<bool, SqlError> {
    Ok(sql
        .query_opt(
            // A run no longer running (ended by a reader that found it
            // lost) is stopped like a cancelled one. The driver that asks
            // is alive: the heartbeat moves (never back from an announced
            // silence), so a long wait on the model is not taken for lost.
            "UPDATE runs SET heartbeat_at = GREATEST(heartbeat_at, now()) WHERE id = $1
             RETURNING cancel_requested OR status <> 'running' AS cancel_requested",
            &[run.into()],
        )
        .await?
        .map(|r| r.bool("cancel_requested"))
        .transpose()?
        .unwrap_or(false))
}

#[derive(Debug, Clone)]
pub struct RunRow {
    pub id: String,
    pub status: String,
    pub first_seq: i64,
}

pub async fn active_run(sql: &dyn Sql, session: &str) -> Result<Option<RunRow>, SqlError> {
    sql.query_opt(
        "SELECT id, status, first_seq FROM runs WHERE session_id = $1 AND status = 'running'",
        &[session.into()],
    )
    .await?
    .map(|r| {
        Ok(RunRow {
            id: r.text("id")?,
            status: r.text("status")?,
            first_seq: r.int("first_seq")?,
        })
    })
    .transpose()
}

/// Sets the run's heartbeat `secs` ahead of now: its driver is alive but
/// will be silent (a long tool call); the next flush brings it back to now.
pub async fn heartbeat_ahead(sql: &dyn Sql, run: &str, secs: i64) -> Result<(), SqlError> {
    sql.execute(
        "UPDATE runs SET heartbeat_at = now() + make_interval(secs => $2::float8) WHERE id = $1",
        &[run.into(), Value::Float(secs as f64)],
    )
    .await?;
    Ok(())
}

/// Takes the stale run `run` for recovery: ends it as `incomplete` when it
/// is still running and still stale, in one statement, so of two readers
/// that found it stale (or a driver that woke up meanwhile) one wins.
pub async fn claim_stale_run(
    sql: &dyn Sql,
    run: &str,
    older_than_secs: i64,
) -> Result<bool, SqlError> {
    let n = sql
        .execute(
            "UPDATE runs SET status = 'incomplete', error = 'driver_lost', finished_at = now()
             WHERE id = $1 AND status = 'running'
             AND heartbeat_at < now() - make_interval(secs => $2::float8)",
            &[run.into(), Value::Float(older_than_secs as f64)],
        )
        .await?;
    Ok(n == 1)
}

/// Runs whose driver stopped sending heartbeats (its request died).
pub async fn stale_runs(
    sql: &dyn Sql,
    session: &str,
    older_than_secs: i64,
) -> Result<Vec<RunRow>, SqlError> {
    sql.query(
        "SELECT id, status, first_seq FROM runs WHERE session_id = $1 AND status = 'running'
         AND heartbeat_at < now() - make_interval(secs => $2::float8)",
        &[session.into(), Value::Float(older_than_secs as f64)],
    )
    .await?
    .iter()
    .map(|r| {
        Ok(RunRow {
            id: r.text("id")?,
            status: r.text("status")?,
            first_seq: r.int("first_seq")?,
        })
    })
    .collect()
}

/// Appends events to the log and advances the session's sequence and the run's heartbeat.
pub async fn append_events(
    sql: &dyn Sql,
    session: &str,
    run: &str,
    events: &[Event],
) -> Result<(), SqlError> {
    let Some(last) = events.last() else {
        return Ok(());
    };
    let docs: Vec<Json> = events
        .iter()
        .map(|e| serde_json::to_value(e).unwrap_or_default())
        .collect();
    sql.execute(
        "INSERT INTO run_events (session_id, seq, run_id, event)
         SELECT $1, (e->>'seq')::int8, $2, e FROM jsonb_array_elements($3::text::jsonb) AS e",
        &[
            session.into(),
            run.into(),
            jsonb_text(Json::Array(docs).to_string()).into(),
        ],
    )
    .await?;
    sql.execute(
        "UPDATE sessions SET last_seq = GREATEST(last_seq, $2), updated_at = now() WHERE id = $1",
        &[session.into(), Value::Int(last.seq)],
    )
    .await?;
    sql.execute(
        "UPDATE runs SET heartbeat_at = now() WHERE id = $1",
        &[run.into()],
    )
    .await?;
    Ok(())
}

pub async fn events_after(
    sql: &dyn Sql,
    session: &str,
    after: i64,
    limit: i64,
) -> Result<Vec<Event>, SqlError> {
    sql.query(
        "SELECT event::text AS event FROM run_events WHERE session_id = $1 AND seq > $2 ORDER BY seq LIMIT $3",
        &[session.into(), Value::Int(after), Value::Int(limit)],
    )
    .await?
    .iter()
    .map(|r| serde_json::from_str(&r.text("event")?).map_err(|e| SqlError::Decode(e.to_string())))
    .collect()
}

pub async fn run_status(sql: &dyn Sql, run: &str) -> Result<Option<String>, SqlError> {
    sql.query_opt("SELECT status FROM runs WHERE id = $1", &[run.into()])
        .await?
        .map(|r| r.text("status"))
        .transpose()
}

#[allow(clippy::too_many_arguments)]
pub async fn insert_usage(
    sql: &dyn Sql,
    id: &str,
    owner: &str,
    session: &str,
    run: &str,
    provider: &str,
    model: &str,
    usage: &Usage,
    cost: i64,
    byok: bool,
    estimated: bool,
) -> Result<(), SqlError> {
    sql.execute(
        "INSERT INTO usage_ledger (id, owner_id, session_id, run_id, kind, provider, model, input_tokens, output_tokens,
             cache_read_tokens, cache_write_tokens, cost_micros, byok, estimated)
         VALUES ($1, $2, $3, $4, 'model', $5, $6, $7, $8, $9, $10, $11, $12, $13)",
        &[
            id.into(),
            owner.into(),
            session.into(),
            run.into(),
            provider.into(),
            model.into(),
            Value::Int(usage.input_tokens),
            Value::Int(usage.output_tokens),
            Value::Int(usage.cache_read_tokens),
            Value::Int(usage.cache_write_tokens),
            Value::Int(cost),
            byok.into(),
            estimated.into(),
        ],
    )
    .await?;
    Ok(())
}

/// Whether the session's latest run has ended (or is running) without its
/// terminal event in the log yet: its driver is about to write it.
pub async fn terminal_event_pending(sql: &dyn Sql, session: &str) -> Result<bool, SqlError> {
    Ok(sql
        .query_opt(
            "SELECT NOT EXISTS (SELECT 1 FROM run_events e WHERE e.session_id = r.session_id AND e.run_id = r.id
                                AND e.event->>'type' = 'run_finished')
                    AND (r.status = 'running' OR r.finished_at > now() - interval '5 seconds') AS pending
             FROM runs r WHERE r.session_id = $1 ORDER BY r.id DESC LIMIT 1",
            &[session.into()],
        )
        .await?
        .map(|r| r.bool("pending"))
        .transpose()?
        .unwrap_or(false))
}

/// The events of the run that event `seq` belongs to, up to and including it
/// (what a reader resuming after `seq` has already seen of that run).
pub async fn run_events_upto(
    sql: &dyn Sql,
    session: &str,
    seq: i64,
) -> Result<Vec<Event>, SqlError> {
    sql.query(
        "SELECT event::text AS event FROM run_events
         WHERE session_id = $1 AND seq <= $2
           AND run_id = (SELECT run_id FROM run_events WHERE session_id = $1 AND seq = $2)
         ORDER BY seq",
        &[session.into(), Value::Int(seq)],
    )
    .await?
    .iter()
    .map(|r| serde_json::from_str(&r.text("event")?).map_err(|e| SqlError::Decode(e.to_string())))
    .collect()
}

/// The ids of `owner`'s sessions, of one project or of all: read before a
/// delete whose cascade takes them (their rooms are purged after it).
pub async fn session_ids(
    sql: &dyn Sql,
    owner: &str,
    project: Option<&str>,
) -> Result<Vec<String>, SqlError> {
    sql.query(
        "SELECT id FROM sessions WHERE owner_id = $1 AND ($2::text IS NULL OR project_id = $2)",
        &[owner.into(), project.into()],
    )
    .await?
    .iter()
    .map(|r| r.text("id"))
    .collect()
}
