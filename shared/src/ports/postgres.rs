//! The SQL executor port over a connected `tokio_postgres::Client`.
//! Used by the Worker (connection through Hyperdrive on a workerd socket, `pg_socket.rs` there)
//! and by host tools and tests (plain TCP). Each statement is sent with
//! typed parameters in one round trip (`query_typed`, no named prepare), which
//! is what poolers such as Hyperdrive handle best.

use std::rc::Rc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use tokio_postgres::types::{ToSql, Type};
use tokio_postgres::Client;

use super::sql::{Row, Sql, SqlError, Value};

pub struct PgSql {
    client: Client,
}

impl PgSql {
    pub fn new(client: Client) -> Self {
        Self { client }
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
        let refs: Vec<(&(dyn ToSql + Sync), Type)> =
            owned.iter().map(|(v, t)| (v.as_ref(), t.clone())).collect();
        let rows = self.client.query_typed(sql, &refs).await.map_err(map_err)?;
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
        let refs: Vec<(&(dyn ToSql + Sync), Type)> =
            owned.iter().map(|(v, t)| (v.as_ref(), t.clone())).collect();
        // query_typed returns rows; count them for RETURNING-less statements via execute_typed is not
        // available, so run through the simple row stream and read the command tag.
        let stream = self
            .client
            .query_typed_raw(sql, refs)
            .await
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
