//! The core's ports on Spin's interfaces.

use std::cell::{OnceCell, RefCell};
use std::rc::Rc;

use async_trait::async_trait;
use bytes::Bytes;
use everjust_core::ports::http_client::{HttpError, StreamingResponse};
use everjust_core::ports::kv::KvError;
use everjust_core::ports::sql::{Row, SqlError, Value};
use everjust_core::ports::{Clock, Crypto, HttpClient, Kv, Sql};
use futures_util::StreamExt;
use spin_sdk::http::IncomingResponse;
use spin_sdk::key_value::Store;
use spin_sdk::pg4::{self, Connection, DbValue, ParameterValue};

use crate::codec;

/// PostgreSQL through `spin:postgres/postgres@4.0.0`. The connection opens on
/// first use, so requests that never touch the database never connect, and
/// stays open for the request: `BEGIN` .. `COMMIT` run on one session.
pub struct SpinSql {
    url: Option<String>,
    conn: OnceCell<Connection>,
}

impl SpinSql {
    pub fn new(url: Option<String>) -> Self {
        Self {
            url,
            conn: OnceCell::new(),
        }
    }

    fn conn(&self) -> Result<&Connection, SqlError> {
        if let Some(c) = self.conn.get() {
            return Ok(c);
        }
        let url = self
            .url
            .as_deref()
            .ok_or_else(|| SqlError::Other("the Spin variable database_url is not set".into()))?;
        let mut attempt = 0;
        let c = loop {
            match Connection::open(url) {
                Ok(c) => break c,
                // A server out of connections (53300: each Spin request opens
                // its own) is asked again after 50, 100, 200, 400 ms.
                Err(pg4::PgError::ConnectionFailed(t))
                    if attempt < CONNECT_RETRIES && t.contains("too many clients") =>
                {
                    std::thread::sleep(std::time::Duration::from_millis(50 << attempt));
                    attempt += 1;
                }
                Err(e) => return Err(map_err(e)),
            }
        };
        Ok(self.conn.get_or_init(|| c))
    }
}

const CONNECT_RETRIES: u32 = 4;

/// Parameters go out as the wire types the core promises. Spin lets the
/// server infer each parameter's type, so the SQL must cast where a column
/// has another type. Timestamps travel as whole seconds (the interface's
/// `timestamp` is Unix seconds); sub-second precision is lost.
fn param(v: &Value) -> ParameterValue {
    match v {
        Value::Null => ParameterValue::DbNull,
        Value::Bool(b) => ParameterValue::Boolean(*b),
        Value::Int(i) => ParameterValue::Int64(*i),
        Value::Float(f) => ParameterValue::Floating64(*f),
        Value::Text(s) => ParameterValue::Str(s.clone()),
        Value::Bytes(b) => ParameterValue::Binary(b.clone()),
        Value::Timestamp(ms) => ParameterValue::Timestamp(ms.div_euclid(1000)),
    }
}

fn decode(v: DbValue, column: &str) -> Result<Value, SqlError> {
    Ok(match v {
        DbValue::DbNull => Value::Null,
        DbValue::Boolean(b) => Value::Bool(b),
        DbValue::Int8(i) => Value::Int(i.into()),
        DbValue::Int16(i) => Value::Int(i.into()),
        DbValue::Int32(i) => Value::Int(i.into()),
        DbValue::Int64(i) => Value::Int(i),
        DbValue::Floating32(f) => Value::Float(f.into()),
        DbValue::Floating64(f) => Value::Float(f),
        DbValue::Str(s) => Value::Text(s),
        DbValue::Binary(b) => Value::Bytes(b),
        // A `timestamp` column holding UTC (`col AT TIME ZONE 'UTC' AS col`):
        // Spin cannot read `timestamptz`, see `everjust_core::ports::sql`.
        DbValue::Datetime((y, mo, d, h, mi, s, ns)) => {
            Value::Timestamp(codec::civil_to_unix_ms(y, mo, d, h, mi, s, ns))
        }
        DbValue::Timestamp(secs) => Value::Timestamp(secs.saturating_mul(1000)),
        other => {
            let kind = format!("{other:?}");
            let kind = kind.split('(').next().unwrap_or("?");
            return Err(SqlError::Decode(format!(
                "{column}: unsupported type {kind}; cast it in SQL"
            )));
        }
    })
}

fn map_err(e: pg4::PgError) -> SqlError {
    match e {
        pg4::PgError::QueryFailed(pg4::QueryError::DbError(db)) => {
            let constraint = || {
                db.extras
                    .iter()
                    .find(|(k, _)| k == "constraint")
                    .map(|(_, v)| v.clone())
                    .unwrap_or_default()
            };
            match db.code.as_str() {
                "23505" => SqlError::Unique(constraint()),
                "23503" => SqlError::ForeignKey(constraint()),
                code => SqlError::Other(format!("{code}: {}", db.message)),
            }
        }
        pg4::PgError::QueryFailed(pg4::QueryError::Text(t)) => SqlError::Other(t),
        pg4::PgError::ConnectionFailed(t) => SqlError::Other(format!("connection failed: {t}")),
        pg4::PgError::BadParameter(t) => SqlError::Other(format!("bad parameter: {t}")),
        pg4::PgError::ValueConversionFailed(t) => SqlError::Decode(t),
        pg4::PgError::Other(t) => SqlError::Other(t),
    }
}

#[async_trait(?Send)]
impl Sql for SpinSql {
    async fn query(&self, sql: &str, params: &[Value]) -> Result<Vec<Row>, SqlError> {
        let params: Vec<ParameterValue> = params.iter().map(param).collect();
        let set = self.conn()?.query(sql, &params).map_err(map_err)?;
        let columns: Rc<[String]> = set.columns.iter().map(|c| c.name.clone()).collect();
        set.rows
            .into_iter()
            .map(|row| {
                let values = row
                    .into_iter()
                    .zip(columns.iter())
                    .map(|(v, name)| decode(v, name))
                    .collect::<Result<Vec<_>, _>>()?;
                Ok(Row {
                    columns: columns.clone(),
                    values,
                })
            })
            .collect()
    }

    async fn execute(&self, sql: &str, params: &[Value]) -> Result<u64, SqlError> {
        let params: Vec<ParameterValue> = params.iter().map(param).collect();
        self.conn()?.execute(sql, &params).map_err(map_err)
    }

    async fn batch(&self, sql: &str) -> Result<(), SqlError> {
        let conn = self.conn()?;
        for statement in codec::split_statements(sql) {
            conn.execute(statement, &[]).map_err(map_err)?;
        }
        Ok(())
    }
}

/// Spin key-value (`default` store). Spin has no TTL: values carry their
/// expiry (see [`codec::seal`]) and expired entries read as missing and are
/// deleted on read.
pub struct SpinKv {
    store: OnceCell<Store>,
    clock: Rc<dyn Clock>,
}

impl SpinKv {
    pub fn new(clock: Rc<dyn Clock>) -> Self {
        Self {
            store: OnceCell::new(),
            clock,
        }
    }

    fn store(&self) -> Result<&Store, KvError> {
        if let Some(s) = self.store.get() {
            return Ok(s);
        }
        let s = Store::open_default().map_err(|e| KvError(format!("open default store: {e}")))?;
        Ok(self.store.get_or_init(|| s))
    }
}

#[async_trait(?Send)]
impl Kv for SpinKv {
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, KvError> {
        let store = self.store()?;
        let Some(stored) = store.get(key).map_err(|e| KvError(e.to_string()))? else {
            return Ok(None);
        };
        match codec::open(&stored, self.clock.now_ms()) {
            codec::Opened::Live(v) => Ok(Some(v.to_vec())),
            codec::Opened::Expired => {
                store.delete(key).map_err(|e| KvError(e.to_string()))?;
                Ok(None)
            }
            codec::Opened::Foreign => Ok(None),
        }
    }

    async fn put(&self, key: &str, value: &[u8], ttl_secs: Option<u64>) -> Result<(), KvError> {
        let expires = ttl_secs.map(|t| {
            let ms = i64::try_from(t).unwrap_or(i64::MAX).saturating_mul(1000);
            self.clock.now_ms().saturating_add(ms)
        });
        self.store()?
            .set(key, &codec::seal(value, expires))
            .map_err(|e| KvError(e.to_string()))
    }

    async fn delete(&self, key: &str) -> Result<(), KvError> {
        self.store()?
            .delete(key)
            .map_err(|e| KvError(e.to_string()))
    }
}

/// Outbound HTTP through `wasi:http/outgoing-handler`; the host checks each
/// destination against `allowed_outbound_hosts`. Response bodies are read
/// here (spin-sdk's own conversion panics when a body is cut off).
pub struct SpinHttp;

impl SpinHttp {
    async fn start(
        req: http::Request<Bytes>,
    ) -> Result<(http::response::Parts, BodyStream), HttpError> {
        let res: IncomingResponse = spin_sdk::http::send(req)
            .await
            .map_err(|e| HttpError(e.to_string()))?;
        let mut head = http::Response::builder().status(res.status());
        for (name, value) in res.headers().entries() {
            head = head.header(name, value);
        }
        let (parts, ()) = head
            .body(())
            .map_err(|e| HttpError(e.to_string()))?
            .into_parts();
        let chunks = res.take_body_stream();
        // The response must outlive its body stream (dropping it cancels the request).
        let body = chunks
            .map(move |chunk| {
                let _keep = &res;
                chunk.map(Bytes::from).map_err(|e| {
                    HttpError(format!(
                        "reading the response body: {}",
                        e.to_debug_string()
                    ))
                })
            })
            .boxed_local();
        Ok((parts, body))
    }
}

type BodyStream = futures_util::stream::LocalBoxStream<'static, Result<Bytes, HttpError>>;

#[async_trait(?Send)]
impl HttpClient for SpinHttp {
    async fn send(&self, req: http::Request<Bytes>) -> Result<http::Response<Bytes>, HttpError> {
        let (parts, mut body) = Self::start(req).await?;
        let mut all = Vec::new();
        while let Some(chunk) = body.next().await {
            all.extend_from_slice(&chunk?);
        }
        Ok(http::Response::from_parts(parts, Bytes::from(all)))
    }

    async fn send_streaming(
        &self,
        req: http::Request<Bytes>,
    ) -> Result<StreamingResponse, HttpError> {
        let (parts, body) = Self::start(req).await?;
        Ok(StreamingResponse {
            status: parts.status,
            headers: parts.headers,
            body,
        })
    }
}

pub struct SystemClock;

#[async_trait(?Send)]
impl Clock for SystemClock {
    /// Waits on a `wasi:clocks/monotonic-clock` deadline, yielding to the
    /// executor so streams and other futures of the request keep running.
    async fn sleep_ms(&self, ms: u64) {
        let now = wasi::clocks::monotonic_clock::now();
        Sleep {
            deadline: now.saturating_add(ms.saturating_mul(1_000_000)),
            registration: None,
        }
        .await
    }

    fn now_ms(&self) -> i64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
            .unwrap_or(0)
    }
}

/// Randomness from `wasi:random/random`, the host's CSPRNG.
pub struct WasiCrypto;

#[async_trait(?Send)]
impl Crypto for WasiCrypto {
    fn fill_random(&self, buf: &mut [u8]) {
        let mut filled = 0;
        while filled < buf.len() {
            let want = (buf.len() - filled) as u64;
            let bytes = wasi::random::random::get_random_bytes(want);
            let n = bytes.len().min(buf.len() - filled);
            // Never hand out unfilled bytes as if they were random.
            assert!(n > 0, "wasi:random returned no bytes");
            buf[filled..filled + n].copy_from_slice(&bytes[..n]);
            filled += n;
        }
    }
}

/// Work the core hands off until after the response: queued here and run
/// by the handler once the response body is finished, before the guest
/// returns to Spin (which keeps the instance until then).
#[derive(Default)]
pub struct AfterResponse {
    queue: RefCell<Vec<futures_util::future::LocalBoxFuture<'static, ()>>>,
}

impl AfterResponse {
    pub async fn run(&self) {
        loop {
            // Work may queue more work; never hold the borrow across `.await`.
            let batch = std::mem::take(&mut *self.queue.borrow_mut());
            if batch.is_empty() {
                return;
            }
            futures_util::future::join_all(batch).await;
        }
    }
}

impl everjust_core::ports::background::Background for AfterResponse {
    fn spawn(&self, work: futures_util::future::LocalBoxFuture<'static, ()>) {
        self.queue.borrow_mut().push(work);
    }
}

/// Waits for a `wasi:clocks/monotonic-clock` instant. Dropped early (the
/// losing side of a select), its registration goes with it, so the executor
/// stops waiting on that deadline.
struct Sleep {
    deadline: u64,
    registration: Option<spin_executor::CancelOnDropToken>,
}

impl std::future::Future for Sleep {
    type Output = ();

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<()> {
        use wasi::clocks::monotonic_clock;
        if monotonic_clock::now() >= self.deadline {
            self.registration = None;
            return std::task::Poll::Ready(());
        }
        let pollable = monotonic_clock::subscribe_instant(self.deadline);
        self.registration =
            Some(spin_executor::push_waker_and_get_token(pollable, cx.waker().clone()).into());
        std::task::Poll::Pending
    }
}
