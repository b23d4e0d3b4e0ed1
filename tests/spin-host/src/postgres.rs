//! `spin:postgres/postgres@4.0.0` over tokio-postgres, converting values the
//! way Spin's own host does: statements are prepared unnamed with the types
//! the server infers (`client.query(sql, params)`), parameters go out as the
//! Rust type of their WIT case (so `int64` only binds to `int8`, `str` to
//! text-like types), and `timestamp`/`timestamptz` columns are read as a
//! naive date-time (which tokio-postgres accepts for `timestamp` only).
//! Matching Spin here, quirks included, is the point: a query that fails
//! on this host fails on Spin.

use std::sync::Arc;

use tokio_postgres::types::{to_sql_checked, FromSql, IsNull, ToSql, Type};
use tokio_postgres::{NoTls, Row};
use wasmtime::component::Resource;

use crate::spin::postgres::postgres::{
    Column, DbDataType, DbError, DbValue, Error, Host, HostConnection, ParameterValue, QueryError,
    RowSet,
};
use crate::State;

pub struct PgConnection {
    client: Arc<tokio_postgres::Client>,
}

impl Host for State {}

impl HostConnection for State {
    async fn open(
        &mut self,
        address: String,
    ) -> wasmtime::Result<Result<Resource<PgConnection>, Error>> {
        let (client, connection) = match tokio_postgres::connect(&address, NoTls).await {
            Ok(c) => c,
            Err(e) => return Ok(Err(Error::ConnectionFailed(format!("{e:?}")))),
        };
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                eprintln!("spin-host: postgres connection: {e}");
            }
        });
        Ok(Ok(self.table.push(PgConnection {
            client: Arc::new(client),
        })?))
    }

    async fn query(
        &mut self,
        conn: Resource<PgConnection>,
        statement: String,
        params: Vec<ParameterValue>,
    ) -> wasmtime::Result<Result<RowSet, Error>> {
        let client = self.table.get(&conn)?.client.clone();
        let params = match params.iter().map(to_sql).collect::<Result<Vec<_>, _>>() {
            Ok(p) => p,
            Err(e) => return Ok(Err(Error::BadParameter(e))),
        };
        let refs: Vec<&(dyn ToSql + Sync)> = params
            .iter()
            .map(|p| p.as_ref() as &(dyn ToSql + Sync))
            .collect();
        let rows = match client.query(&statement, &refs).await {
            Ok(r) => r,
            Err(e) => return Ok(Err(query_failed(e))),
        };
        let Some(first) = rows.first() else {
            return Ok(Ok(RowSet {
                columns: vec![],
                rows: vec![],
            }));
        };
        let columns = first
            .columns()
            .iter()
            .map(|c| Column {
                name: c.name().to_owned(),
                data_type: data_type(c.type_()),
            })
            .collect();
        let mut out = Vec::with_capacity(rows.len());
        for row in &rows {
            match convert_row(row) {
                Ok(r) => out.push(r),
                Err(e) => return Ok(Err(Error::QueryFailed(QueryError::Text(e)))),
            }
        }
        Ok(Ok(RowSet { columns, rows: out }))
    }

    async fn execute(
        &mut self,
        conn: Resource<PgConnection>,
        statement: String,
        params: Vec<ParameterValue>,
    ) -> wasmtime::Result<Result<u64, Error>> {
        let client = self.table.get(&conn)?.client.clone();
        let params = match params.iter().map(to_sql).collect::<Result<Vec<_>, _>>() {
            Ok(p) => p,
            Err(e) => return Ok(Err(Error::ValueConversionFailed(e))),
        };
        let refs: Vec<&(dyn ToSql + Sync)> = params
            .iter()
            .map(|p| p.as_ref() as &(dyn ToSql + Sync))
            .collect();
        Ok(client
            .execute(&statement, &refs)
            .await
            .map_err(query_failed))
    }

    async fn drop(&mut self, conn: Resource<PgConnection>) -> wasmtime::Result<()> {
        self.table.delete(conn)?;
        Ok(())
    }
}

fn query_failed(e: tokio_postgres::Error) -> Error {
    let text = format!("{e:?}");
    match e.as_db_error() {
        None => Error::QueryFailed(QueryError::Text(text)),
        Some(db) => {
            let mut extras = Vec::new();
            let mut extra = |k: &str, v: Option<&str>| {
                if let Some(v) = v {
                    extras.push((k.to_owned(), v.to_owned()));
                }
            };
            extra("column", db.column());
            extra("constraint", db.constraint());
            extra("routine", db.routine());
            extra("hint", db.hint());
            extra("table", db.table());
            extra("datatype", db.datatype());
            extra("schema", db.schema());
            Error::QueryFailed(QueryError::DbError(DbError {
                as_text: text,
                severity: db.severity().to_owned(),
                code: db.code().code().to_owned(),
                message: db.message().to_owned(),
                detail: db.detail().map(str::to_owned),
                extras,
            }))
        }
    }
}

/// NULL of whatever type the server expects, like Spin's `PgNull`.
#[derive(Debug)]
struct PgNull;

impl ToSql for PgNull {
    fn to_sql(
        &self,
        _: &Type,
        _: &mut bytes::BytesMut,
    ) -> Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        Ok(IsNull::Yes)
    }
    fn accepts(_: &Type) -> bool {
        true
    }
    to_sql_checked!();
}

type Param = Box<dyn ToSql + Send + Sync>;

fn to_sql(v: &ParameterValue) -> Result<Param, String> {
    use chrono::{NaiveDate, NaiveDateTime, NaiveTime};
    let date = |(y, m, d): (i32, u8, u8)| {
        NaiveDate::from_ymd_opt(y, m.into(), d.into()).ok_or(format!("invalid date {y}-{m}-{d}"))
    };
    let time = |(h, mi, s, ns): (u8, u8, u8, u32)| {
        NaiveTime::from_hms_nano_opt(h.into(), mi.into(), s.into(), ns)
            .ok_or(format!("invalid time {h}:{mi}:{s}.{ns}"))
    };
    Ok(match v {
        ParameterValue::Boolean(b) => Box::new(*b),
        ParameterValue::Int8(i) => Box::new(*i),
        ParameterValue::Int16(i) => Box::new(*i),
        ParameterValue::Int32(i) => Box::new(*i),
        ParameterValue::Int64(i) => Box::new(*i),
        ParameterValue::Floating32(f) => Box::new(*f),
        ParameterValue::Floating64(f) => Box::new(*f),
        ParameterValue::Str(s) => Box::new(s.clone()),
        ParameterValue::Binary(b) => Box::new(b.clone()),
        ParameterValue::Date(d) => Box::new(date(*d)?),
        ParameterValue::Time(t) => Box::new(time(*t)?),
        ParameterValue::Datetime((y, mo, d, h, mi, s, ns)) => Box::new(NaiveDateTime::new(
            date((*y, *mo, *d))?,
            time((*h, *mi, *s, *ns))?,
        )),
        // Unix seconds, as in Spin.
        ParameterValue::Timestamp(secs) => Box::new(
            chrono::DateTime::<chrono::Utc>::from_timestamp(*secs, 0)
                .ok_or(format!("invalid timestamp {secs}"))?,
        ),
        ParameterValue::Jsonb(b) => Box::new(
            serde_json::from_slice::<serde_json::Value>(b)
                .map_err(|e| format!("invalid JSON: {e}"))?,
        ),
        ParameterValue::ArrayInt32(v) => Box::new(v.clone()),
        ParameterValue::ArrayInt64(v) => Box::new(v.clone()),
        ParameterValue::ArrayStr(v) => Box::new(v.clone()),
        ParameterValue::DbNull => Box::new(PgNull),
        other => {
            return Err(format!(
                "this test host does not support {other:?} parameters"
            ))
        }
    })
}

fn data_type(t: &Type) -> DbDataType {
    match *t {
        Type::BOOL => DbDataType::Boolean,
        Type::BYTEA => DbDataType::Binary,
        Type::FLOAT4 => DbDataType::Floating32,
        Type::FLOAT8 => DbDataType::Floating64,
        Type::INT2 => DbDataType::Int16,
        Type::INT4 => DbDataType::Int32,
        Type::INT8 => DbDataType::Int64,
        Type::TEXT | Type::VARCHAR | Type::BPCHAR => DbDataType::Str,
        Type::TIMESTAMP | Type::TIMESTAMPTZ => DbDataType::Datetime,
        Type::DATE => DbDataType::Date,
        Type::TIME => DbDataType::Time,
        Type::JSONB => DbDataType::Jsonb,
        Type::INT4_ARRAY => DbDataType::ArrayInt32,
        Type::INT8_ARRAY => DbDataType::ArrayInt64,
        Type::TEXT_ARRAY | Type::VARCHAR_ARRAY | Type::BPCHAR_ARRAY => DbDataType::ArrayStr,
        ref other => DbDataType::Other(other.name().to_owned()),
    }
}

/// The raw bytes of a value of a type without a WIT case (Spin's `unsupported`).
struct Raw(Vec<u8>);

impl<'a> FromSql<'a> for Raw {
    fn from_sql(_: &Type, raw: &'a [u8]) -> Result<Self, Box<dyn std::error::Error + Sync + Send>> {
        Ok(Raw(raw.to_vec()))
    }
    fn accepts(_: &Type) -> bool {
        true
    }
}

fn convert_row(row: &Row) -> Result<Vec<DbValue>, String> {
    (0..row.len()).map(|i| convert_entry(row, i)).collect()
}

fn convert_entry(row: &Row, i: usize) -> Result<DbValue, String> {
    use chrono::{Datelike, NaiveDate, NaiveTime, Timelike};
    fn get<'a, T: FromSql<'a>, F: FnOnce(T) -> DbValue>(
        row: &'a Row,
        i: usize,
        f: F,
    ) -> Result<DbValue, String> {
        let v: Option<T> = row.try_get(i).map_err(|e| format!("{e:?}"))?;
        Ok(v.map_or(DbValue::DbNull, f))
    }
    let col = &row.columns()[i];
    match *col.type_() {
        Type::BOOL => get(row, i, DbValue::Boolean),
        Type::BYTEA => get(row, i, DbValue::Binary),
        Type::FLOAT4 => get(row, i, DbValue::Floating32),
        Type::FLOAT8 => get(row, i, DbValue::Floating64),
        Type::INT2 => get(row, i, DbValue::Int16),
        Type::INT4 => get(row, i, DbValue::Int32),
        Type::INT8 => get(row, i, DbValue::Int64),
        Type::TEXT | Type::VARCHAR | Type::BPCHAR => get(row, i, DbValue::Str),
        // Spin reads both as chrono::NaiveDateTime, which only accepts `timestamp`.
        Type::TIMESTAMP | Type::TIMESTAMPTZ => get(row, i, datetime),
        Type::DATE => get(row, i, |d: NaiveDate| {
            DbValue::Date((d.year(), d.month() as u8, d.day() as u8))
        }),
        Type::TIME => get(row, i, |t: NaiveTime| {
            DbValue::Time((
                t.hour() as u8,
                t.minute() as u8,
                t.second() as u8,
                t.nanosecond(),
            ))
        }),
        Type::JSONB => {
            let v: Option<serde_json::Value> = row.try_get(i).map_err(|e| format!("{e:?}"))?;
            match v {
                None => Ok(DbValue::DbNull),
                Some(v) => serde_json::to_vec(&v)
                    .map(DbValue::Jsonb)
                    .map_err(|e| e.to_string()),
            }
        }
        Type::INT4_ARRAY => get(row, i, DbValue::ArrayInt32),
        Type::INT8_ARRAY => get(row, i, DbValue::ArrayInt64),
        Type::TEXT_ARRAY | Type::VARCHAR_ARRAY | Type::BPCHAR_ARRAY => {
            get(row, i, DbValue::ArrayStr)
        }
        _ => get(row, i, |r: Raw| DbValue::Unsupported(r.0)),
    }
}

fn datetime(v: chrono::NaiveDateTime) -> DbValue {
    use chrono::{Datelike, Timelike};
    let (d, t) = (v.date(), v.time());
    DbValue::Datetime((
        d.year(),
        d.month() as u8,
        d.day() as u8,
        t.hour() as u8,
        t.minute() as u8,
        t.second() as u8,
        t.nanosecond(),
    ))
}
