//! The SQL executor port over a connected `tokio_postgres::Client`.
//! Used by the Worker (connection through Hyperdrive on a workerd socket, `pg_socket.rs` there)
//! and by host tools and tests (plain TCP). Each statement is sent with
//! typed parameters in one round trip (`query_typed`, an unnamed statement):
//! a connection that lives for one request has nothing to gain from naming
//! them. One that is kept for many ([`PgSql::naming`]) runs the statements it
//! was asked to prepare ([`PgSql::prepare`]) by name, so the server parses
//! each once per connection, not once per run; Hyperdrive keeps named
//! statements across its pool.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use tokio_postgres::types::{ToSql, Type};
use tokio_postgres::{Client, Statement};

use super::sql::{Row, Sql, SqlError, Value};

pub struct PgSql {
    client: Client,
    /// Only on a connection made with [`PgSql::naming`].
    named: Option<Named>,
}

/// A statement's text and the types of its parameters (as [`params`] sends
/// them): what a named statement is prepared for.
pub type Shape = (String, Vec<Type>);

/// At most this many statements are named on one connection (the core's
/// statements are a fixed set; a text built with values in it would not be).
const MAX_NAMED: usize = 128;

/// A statement named for these parameter types.
type Typed = (Vec<Type>, Statement);

/// The named statements of a connection, and the shapes it ran unnamed.
#[derive(Default)]
struct Named {
    /// By text, then by parameter types.
    ready: RefCell<HashMap<String, Vec<Typed>>>,
    /// Run unnamed since the last [`PgSql::take_unnamed`], each once.
    unnamed: RefCell<Vec<Shape>>,
    /// Named statements do not work here ([`PgSql::unnamed_instead`]).
    off: std::cell::Cell<bool>,
}

impl Named {
    fn get(&self, sql: &str, types: &[Type]) -> Option<Statement> {
        if self.off.get() {
            return None;
        }
        let ready = self.ready.borrow();
        let (_, statement) = ready.get(sql)?.iter().find(|(t, _)| t == types)?;
        Some(statement.clone())
    }

    /// How many statements are named here.
    fn count(&self) -> usize {
        self.ready.borrow().values().map(Vec::len).sum()
    }

    fn note_unnamed(&self, sql: &str, types: Vec<Type>) {
        let count = self.count();
        let mut unnamed = self.unnamed.borrow_mut();
        if !self.off.get()
            && count + unnamed.len() < MAX_NAMED
            && !unnamed.iter().any(|(s, t)| s == sql && *t == types)
        {
            unnamed.push((sql.to_owned(), types));
        }
    }
}

impl PgSql {
    pub fn new(client: Client) -> Self {
        Self {
            client,
            named: None,
        }
    }

    /// A connection that runs by name the statements prepared on it
    /// ([`PgSql::prepare`]) and notes the ones it ran unnamed
    /// ([`PgSql::take_unnamed`]): for a connection kept between requests.
    pub fn naming(client: Client) -> Self {
        Self {
            client,
            named: Some(Named::default()),
        }
    }

    /// Prepares the statements of `shapes` not named here yet, all in one
    /// round trip; one the server refuses stays unnamed (it fails again,
    /// with its error, when it is run). Does nothing on a connection made
    /// with [`PgSql::new`].
    pub async fn prepare(&self, shapes: &[Shape]) {
        let Some(named) = self.named.as_ref().filter(|n| !n.off.get()) else {
            return;
        };
        let wanted: Vec<&Shape> = shapes
            .iter()
            .filter(|(sql, types)| named.get(sql, types).is_none())
            .take(MAX_NAMED.saturating_sub(named.count()))
            .collect();
        let prepared = futures_util::future::join_all(
            wanted
                .iter()
                .map(|(sql, types)| self.client.prepare_typed(sql, types)),
        )
        .await;
        for ((sql, types), statement) in wanted.into_iter().zip(prepared) {
            let Ok(statement) = statement else { continue };
            if named.off.get() || named.count() >= MAX_NAMED {
                break;
            }
            let mut ready = named.ready.borrow_mut();
            let same_text = ready.entry(sql.clone()).or_default();
            if !same_text.iter().any(|(t, _)| t == types) {
                same_text.push((types.clone(), statement));
            }
        }
    }

    /// Whether this connection runs statements by name: made with
    /// [`PgSql::naming`], and the server kept what was prepared.
    pub fn names_statements(&self) -> bool {
        self.named.as_ref().is_some_and(|n| !n.off.get())
    }

    /// The statements run here unnamed since the last call, each once.
    pub fn take_unnamed(&self) -> Vec<Shape> {
        self.named
            .as_ref()
            .map(|n| n.unnamed.take())
            .unwrap_or_default()
    }

    /// Whether `e` says that `statement` cannot run by name, in which case
    /// nothing ran and the caller runs it unnamed instead:
    /// - a migration changed what it returns (SQLSTATE 0A000 "cached plan
    ///   must not change result type"): it is prepared again later;
    /// - the server does not have it (26000): a pooler between us shares
    ///   server connections and does not keep named statements (pgbouncer
    ///   before 1.21 in transaction mode), so this connection names none.
    fn unnamed_instead(&self, sql: &str, statement: &Statement, e: &tokio_postgres::Error) -> bool {
        use tokio_postgres::error::SqlState;
        let (Some(named), Some(db)) = (&self.named, e.as_db_error()) else {
            return false;
        };
        if *db.code() == SqlState::INVALID_SQL_STATEMENT_NAME {
            named.off.set(true);
            named.ready.borrow_mut().clear();
            named.unnamed.borrow_mut().clear();
            return true;
        }
        let stale =
            *db.code() == SqlState::FEATURE_NOT_SUPPORTED && db.message().contains("cached plan");
        if stale {
            if let Some(same_text) = named.ready.borrow_mut().get_mut(sql) {
                same_text.retain(|(types, _)| types != statement.params());
            }
            // To be prepared again, for what it returns now.
            named.note_unnamed(sql, statement.params().to_vec());
        }
        stale
    }

    /// The named statement for `sql` with these parameters, or none (then
    /// noted as run unnamed).
    fn statement(&self, sql: &str, owned: &[(Box<dyn ToSql + Sync>, Type)]) -> Option<Statement> {
        let named = self.named.as_ref()?;
        let types: Vec<Type> = owned.iter().map(|(_, t)| t.clone()).collect();
        let found = named.get(sql, &types);
        if found.is_none() {
            named.note_unnamed(sql, types);
        }
        found
    }

    /// The connection is gone (the server closed it, or it broke).
    pub fn is_closed(&self) -> bool {
        self.client.is_closed()
    }
}

fn map_err(e: tokio_postgres::Error) -> SqlError {
    if let Some(db) = e.as_db_error() {
        let constraint = db.constraint().unwrap_or_default().to_owned();
        match db.code().code() {
            "23505" => return SqlError::Unique(constraint),
            "23503" => return SqlError::ForeignKey(constraint),
            _ => return SqlError::Other(format!("{}: {}", db.code().code(), db.message())),
        }
    }
    SqlError::Other(e.to_string())
}

fn params(values: &[Value]) -> Vec<(Box<dyn ToSql + Sync>, Type)> {
    values
        .iter()
        .map(|v| -> (Box<dyn ToSql + Sync>, Type) {
            match v {
                Value::Null => (Box::new(Option::<String>::None), Type::TEXT),
                Value::Bool(b) => (Box::new(*b), Type::BOOL),
                Value::Int(i) => (Box::new(*i), Type::INT8),
                Value::Float(f) => (Box::new(*f), Type::FLOAT8),
                Value::Text(s) => (Box::new(s.clone()), Type::TEXT),
                Value::Bytes(b) => (Box::new(b.clone()), Type::BYTEA),
                Value::Timestamp(ms) => {
                    let t = UNIX_EPOCH + Duration::from_millis(u64::try_from(*ms).unwrap_or(0));
                    (Box::new(t), Type::TIMESTAMPTZ)
                }
            }
        })
        .collect()
}

fn decode(row: &tokio_postgres::Row, columns: &Rc<[String]>) -> Result<Row, SqlError> {
    let mut values = Vec::with_capacity(row.len());
    for (i, col) in row.columns().iter().enumerate() {
        let ty = col.type_();
        let err = |e: Box<dyn std::error::Error + Sync + Send>| {
            SqlError::Decode(format!("{}: {e}", col.name()))
        };
        let v = match *ty {
            Type::BOOL => row
                .try_get::<_, Option<bool>>(i)
                .map_err(|e| err(e.into()))?
                .map(Value::Bool),
            Type::INT2 => row
                .try_get::<_, Option<i16>>(i)
                .map_err(|e| err(e.into()))?
                .map(|x| Value::Int(x.into())),
            Type::INT4 => row
                .try_get::<_, Option<i32>>(i)
                .map_err(|e| err(e.into()))?
                .map(|x| Value::Int(x.into())),
            Type::INT8 => row
                .try_get::<_, Option<i64>>(i)
                .map_err(|e| err(e.into()))?
                .map(Value::Int),
            Type::FLOAT4 => row
                .try_get::<_, Option<f32>>(i)
                .map_err(|e| err(e.into()))?
                .map(|x| Value::Float(x.into())),
            Type::FLOAT8 => row
                .try_get::<_, Option<f64>>(i)
                .map_err(|e| err(e.into()))?
                .map(Value::Float),
            Type::TEXT | Type::VARCHAR | Type::BPCHAR | Type::NAME => row
                .try_get::<_, Option<String>>(i)
                .map_err(|e| err(e.into()))?
                .map(Value::Text),
            Type::BYTEA => row
                .try_get::<_, Option<Vec<u8>>>(i)
                .map_err(|e| err(e.into()))?
                .map(Value::Bytes),
            // Spin's pg4 host decodes date-times as a naive date-time, which
            // only accepts `timestamp`: refuse `timestamptz` here too, so a
            // query that would fail on Spin fails in every test.
            Type::TIMESTAMPTZ => {
                let name = col.name();
                return Err(SqlError::Decode(format!(
                    "{name}: Spin cannot read timestamptz; select `{name} AT TIME ZONE 'UTC'`"
                )));
            }
            // A `timestamp` is UTC wall time (`col AT TIME ZONE 'UTC'`).
            Type::TIMESTAMP => row
                .try_get::<_, Option<SystemTime>>(i)
                .map_err(|e| err(e.into()))?
                .map(|t| {
                    let ms = match t.duration_since(UNIX_EPOCH) {
                        Ok(d) => i64::try_from(d.as_millis()).unwrap_or(i64::MAX),
                        Err(e) => -i64::try_from(e.duration().as_millis()).unwrap_or(i64::MAX),
                    };
                    Value::Timestamp(ms)
                }),
            ref other => {
                return Err(SqlError::Decode(format!(
                    "{}: unsupported type {other}; cast it in SQL",
                    col.name()
                )))
            }
        };
        values.push(v.unwrap_or(Value::Null));
    }
    Ok(Row {
        columns: columns.clone(),
        values,
    })
}

#[async_trait(?Send)]
impl Sql for PgSql {
    async fn query(&self, sql: &str, values: &[Value]) -> Result<Vec<Row>, SqlError> {
        let owned = params(values);
        let unnamed = || {
            let refs: Vec<(&(dyn ToSql + Sync), Type)> =
                owned.iter().map(|(v, t)| (v.as_ref(), t.clone())).collect();
            async move { self.client.query_typed(sql, &refs).await }
        };
        let rows = match self.statement(sql, &owned) {
            Some(statement) => {
                let refs: Vec<&(dyn ToSql + Sync)> =
                    owned.iter().map(|(v, _)| v.as_ref()).collect();
                match self.client.query(&statement, &refs).await {
                    Err(e) if self.unnamed_instead(sql, &statement, &e) => unnamed().await,
                    done => done,
                }
            }
            None => unnamed().await,
        }
        .map_err(map_err)?;
        let Some(first) = rows.first() else {
            return Ok(Vec::new());
        };
        let columns: Rc<[String]> = first
            .columns()
            .iter()
            .map(|c| c.name().to_owned())
            .collect();
        rows.iter().map(|r| decode(r, &columns)).collect()
    }

    async fn execute(&self, sql: &str, values: &[Value]) -> Result<u64, SqlError> {
        let owned = params(values);
        // There is no execute_typed: the rows are read through and the
        // command tag gives the count.
        let unnamed = || {
            let refs = owned
                .iter()
                .map(|(v, t)| (v.as_ref() as &(dyn ToSql + Sync), t.clone()));
            self.client.query_typed_raw(sql, refs)
        };
        let stream = match self.statement(sql, &owned) {
            Some(statement) => {
                let refs = owned.iter().map(|(v, _)| v.as_ref() as &(dyn ToSql + Sync));
                match self.client.query_raw(&statement, refs).await {
                    Err(e) if self.unnamed_instead(sql, &statement, &e) => unnamed().await,
                    done => done,
                }
            }
            None => unnamed().await,
        }
        .map_err(map_err)?;
        futures_util::pin_mut!(stream);
        use futures_util::StreamExt;
        while let Some(r) = stream.next().await {
            r.map_err(map_err)?;
        }
        Ok(stream.rows_affected().unwrap_or(0))
    }

    async fn batch(&self, sql: &str) -> Result<(), SqlError> {
        self.client.batch_execute(sql).await.map_err(map_err)
    }
}
