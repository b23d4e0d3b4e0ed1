//! The SQL executor port. Repositories are written once against it; it is
//! implemented by tokio-postgres (Workers over Hyperdrive, host tools and
//! tests) and by Spin's PostgreSQL interface.
//!
//! Parameters travel as one of the wire types of [`Value`]; SQL casts
//! explicitly where a column has another type (`$1::text::jsonb`: Spin binds
//! a text value only to text). Result columns are decoded the same way:
//! `jsonb` is selected as `::text`, and a `timestamptz` column as
//! `col AT TIME ZONE 'UTC' AS col` (a `timestamp` in UTC, whatever the
//! session's TimeZone), because Spin's PostgreSQL host cannot decode
//! `timestamptz`. Both adapters refuse a `timestamptz` result column.
//! Timestamps come back as Unix milliseconds.

use async_trait::async_trait;

#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Text(String),
    Bytes(Vec<u8>),
    /// A point in time, as milliseconds since the Unix epoch. As a
    /// parameter it binds to `timestamptz`; as a result it is read from a
    /// `timestamp` column holding UTC (`col AT TIME ZONE 'UTC' AS col`).
    Timestamp(i64),
}

impl From<&str> for Value {
    fn from(v: &str) -> Self {
        Value::Text(v.to_owned())
    }
}
impl From<String> for Value {
    fn from(v: String) -> Self {
        Value::Text(v)
    }
}
impl From<&String> for Value {
    fn from(v: &String) -> Self {
        Value::Text(v.clone())
    }
}
impl From<i64> for Value {
    fn from(v: i64) -> Self {
        Value::Int(v)
    }
}
impl From<bool> for Value {
    fn from(v: bool) -> Self {
        Value::Bool(v)
    }
}
impl From<&[u8]> for Value {
    fn from(v: &[u8]) -> Self {
        Value::Bytes(v.to_vec())
    }
}
impl From<Vec<u8>> for Value {
    fn from(v: Vec<u8>) -> Self {
        Value::Bytes(v)
    }
}
impl<T: Into<Value>> From<Option<T>> for Value {
    fn from(v: Option<T>) -> Self {
        v.map_or(Value::Null, Into::into)
    }
}

/// One result row: column names and values in select order.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub columns: std::rc::Rc<[String]>,
    pub values: Vec<Value>,
}

#[derive(Debug, thiserror::Error)]
pub enum SqlError {
    /// A unique constraint was violated (SQLSTATE 23505); carries the constraint name.
    #[error("unique violation on {0}")]
    Unique(String),
    /// A foreign key was violated (SQLSTATE 23503).
    #[error("foreign key violation on {0}")]
    ForeignKey(String),
    #[error("unexpected column type: {0}")]
    Decode(String),
    /// Connection, syntax or any other database failure.
    #[error("database: {0}")]
    Other(String),
}

impl Row {
    fn index(&self, name: &str) -> Result<usize, SqlError> {
        self.columns
            .iter()
            .position(|c| c == name)
            .ok_or_else(|| SqlError::Decode(format!("no column {name}")))
    }

    pub fn value(&self, name: &str) -> Result<&Value, SqlError> {
        Ok(&self.values[self.index(name)?])
    }

    pub fn text(&self, name: &str) -> Result<String, SqlError> {
        match self.value(name)? {
            Value::Text(s) => Ok(s.clone()),
            other => Err(SqlError::Decode(format!(
                "{name}: want text, got {other:?}"
            ))),
        }
    }

    pub fn opt_text(&self, name: &str) -> Result<Option<String>, SqlError> {
        match self.value(name)? {
            Value::Null => Ok(None),
            _ => self.text(name).map(Some),
        }
    }

    pub fn int(&self, name: &str) -> Result<i64, SqlError> {
        match self.value(name)? {
            Value::Int(i) | Value::Timestamp(i) => Ok(*i),
            other => Err(SqlError::Decode(format!("{name}: want int, got {other:?}"))),
        }
    }

    pub fn opt_int(&self, name: &str) -> Result<Option<i64>, SqlError> {
        match self.value(name)? {
            Value::Null => Ok(None),
            _ => self.int(name).map(Some),
        }
    }

    pub fn bool(&self, name: &str) -> Result<bool, SqlError> {
        match self.value(name)? {
            Value::Bool(b) => Ok(*b),
            other => Err(SqlError::Decode(format!(
                "{name}: want bool, got {other:?}"
            ))),
        }
    }

    pub fn bytes(&self, name: &str) -> Result<Vec<u8>, SqlError> {
        match self.value(name)? {
            Value::Bytes(b) => Ok(b.clone()),
            other => Err(SqlError::Decode(format!(
                "{name}: want bytes, got {other:?}"
            ))),
        }
    }
}

#[async_trait(?Send)]
pub trait Sql {
    /// Runs a statement that returns rows.
    async fn query(&self, sql: &str, params: &[Value]) -> Result<Vec<Row>, SqlError>;

    /// Runs a statement and returns the number of rows it affected.
    async fn execute(&self, sql: &str, params: &[Value]) -> Result<u64, SqlError>;

    /// Runs several statements without parameters (migrations, BEGIN/COMMIT).
    async fn batch(&self, sql: &str) -> Result<(), SqlError>;

    async fn query_opt(&self, sql: &str, params: &[Value]) -> Result<Option<Row>, SqlError> {
        Ok(self.query(sql, params).await?.into_iter().next())
    }
}

/// Runs `body` inside a transaction on `sql`: committed when it returns
/// `Ok`, rolled back otherwise.
///
/// `BEGIN` is not waited for: it goes out with the body's first statements
/// (pipelined on the connection, run in order), a round trip saved. It
/// fails only where the server takes no statement at all (a broken
/// connection, a shutdown), and then the body's fail with it.
pub async fn transaction<T, E, F>(sql: &dyn Sql, body: F) -> Result<T, E>
where
    F: AsyncFnOnce() -> Result<T, E>,
    E: From<SqlError>,
{
    let (begun, outcome) = futures_util::future::join(sql.batch("BEGIN"), body()).await;
    match (begun, outcome) {
        (Ok(()), Ok(v)) => {
            sql.batch("COMMIT").await?;
            Ok(v)
        }
        (begun, outcome) => {
            // The original error matters more than a failed rollback.
            let _ = sql.batch("ROLLBACK").await;
            Err(match outcome {
                Err(e) => e,
                Ok(_) => begun.err().map(E::from).expect("one of the two failed"),
            })
        }
    }
}

/// A `COMMIT` already sent, whose answer is still to come (see
/// [`commit_behind`]).
pub enum Commit {
    /// No transaction was opened: nothing to wait for.
    None,
    Pending(futures_util::future::LocalBoxFuture<'static, Result<(), SqlError>>),
    Done(Result<(), SqlError>),
}

impl Commit {
    /// Waits for the commit's answer: `Ok` once what the transaction wrote
    /// is durable.
    pub async fn wait(self) -> Result<(), SqlError> {
        match self {
            Commit::None => Ok(()),
            Commit::Pending(f) => f.await,
            Commit::Done(r) => r,
        }
    }
}

/// Runs `body`, statements in a transaction (its `BEGIN` first, sent on
/// its first poll, as a join of them is), and sends a `COMMIT` right behind
/// them (pipelined on the connection, in the same round trip) without
/// waiting for its answer: what `body` read can be used while the commit,
/// and the server's flush of its log to disk, are still under way. The
/// returned [`Commit`] (which holds the connection) tells whether it
/// succeeded.
pub async fn commit_behind<T>(
    sql: &std::rc::Rc<dyn Sql>,
    body: impl std::future::Future<Output = T>,
) -> (T, Commit) {
    use std::task::Poll;
    let mut body = std::pin::pin!(body);
    let on = sql.clone();
    let mut commit = Commit::Pending(Box::pin(async move { on.batch("COMMIT").await }));
    // The commit is polled after `body` on every poll until `body` is done,
    // so it goes out behind `body`'s statements.
    let out = std::future::poll_fn(|cx| {
        let out = body.as_mut().poll(cx);
        if let Commit::Pending(f) = &mut commit {
            if let Poll::Ready(r) = f.as_mut().poll(cx) {
                commit = Commit::Done(r);
            }
        }
        out
    })
    .await;
    (out, commit)
}
