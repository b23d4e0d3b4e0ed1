//! The `Sql` port: the core's tokio-postgres executor over a connection
//! through Hyperdrive, opened on the first statement of a request (so
//! requests that need no database, like `/health`, never open one) and
//! closed when the request's ports are dropped.

use std::rc::Rc;

use async_trait::async_trait;
use everjust_core::ports::postgres::PgSql;
use everjust_core::ports::sql::{Row, Sql, SqlError, Value};
use futures_util::future::{LocalBoxFuture, Shared};
use futures_util::FutureExt;
use worker::postgres_tls::PassthroughTls;
use worker::{Hyperdrive, SecureTransport, Socket};

type Connecting = Shared<LocalBoxFuture<'static, Result<Rc<PgSql>, String>>>;

pub struct LazyPg {
    /// Runs once, on first poll; every statement awaits the same outcome.
    connection: Connecting,
}

impl LazyPg {
    pub fn new(hyperdrive: worker::Result<Hyperdrive>) -> Self {
        let connecting = async move {
            let hyperdrive = hyperdrive.map_err(|e| format!("binding: {e}"))?;
            connect(&hyperdrive).await
        };
        Self {
            connection: connecting.boxed_local().shared(),
        }
    }

    async fn client(&self) -> Result<Rc<PgSql>, SqlError> {
        self.connection.clone().await.map_err(SqlError::Other)
    }
}

/// A server refusing a connection because it has too many (SQLSTATE 53300,
/// e.g. a local Postgres behind `wrangler dev`, where Hyperdrive does not
/// pool) is asked again this many times, after 50, 100, 200 ... ms.
const CONNECT_RETRIES: u32 = 4;

async fn connect(hyperdrive: &Hyperdrive) -> Result<Rc<PgSql>, String> {
    let mut attempt = 0;
    loop {
        match connect_once(hyperdrive).await {
            Err(Refused::TooMany(e)) if attempt < CONNECT_RETRIES => {
                worker::console_warn!("postgres: {e}; connecting again");
                worker::Delay::from(std::time::Duration::from_millis(50 << attempt)).await;
                attempt += 1;
            }
            Err(Refused::TooMany(e) | Refused::Other(e)) => return Err(e),
            Ok(pg) => return Ok(pg),
        }
    }
}

enum Refused {
    TooMany(String),
    Other(String),
}

async fn connect_once(hyperdrive: &Hyperdrive) -> Result<Rc<PgSql>, Refused> {
    let config: tokio_postgres::Config = hyperdrive
        .connection_string()
        .parse()
        .map_err(|e| Refused::Other(format!("connection string: {e}")))?;
    let socket = Socket::builder()
        .secure_transport(SecureTransport::StartTls)
        .connect(hyperdrive.host(), hyperdrive.port())
        .map_err(|e| Refused::Other(format!("socket: {e}")))?;
    let (client, connection) = config
        .connect_raw(socket, PassthroughTls)
        .await
        .map_err(|e| {
            let too_many = e.as_db_error().is_some_and(|db| {
                db.code() == &tokio_postgres::error::SqlState::TOO_MANY_CONNECTIONS
            });
            let message = match e.as_db_error() {
                Some(db) => format!("connect: {}: {}", db.code().code(), db.message()),
                None => format!("connect: {e}"),
            };
            if too_many {
                Refused::TooMany(message)
            } else {
                Refused::Other(message)
            }
        })?;
    wasm_bindgen_futures::spawn_local(async move {
        if let Err(e) = connection.await {
            worker::console_error!("postgres connection: {e}");
        }
    });
    Ok(Rc::new(PgSql::new(client)))
}

#[async_trait(?Send)]
impl Sql for LazyPg {
    async fn query(&self, sql: &str, params: &[Value]) -> Result<Vec<Row>, SqlError> {
        self.client().await?.query(sql, params).await
    }

    async fn execute(&self, sql: &str, params: &[Value]) -> Result<u64, SqlError> {
        self.client().await?.execute(sql, params).await
    }

    async fn batch(&self, sql: &str) -> Result<(), SqlError> {
        self.client().await?.batch(sql).await
    }
}
