//! The `Sql` port: the core's tokio-postgres executor over a connection
//! through Hyperdrive, opened on the first statement of a request (so
//! requests that need no database, like `/health`, never open one) and
//! closed when the request's ports are dropped. With `DATABASE_DIRECT_URL`
//! the connection goes to that Postgres itself instead (plain TCP with
//! `sslmode=disable`, else StartTLS): local runs use it, because wrangler's
//! local Hyperdrive is a Node pipe whose Nagle delays hold the second of two
//! pipelined answers for a delayed ACK (40 ms). A Durable Object, whose
//! sockets outlive its requests, keeps one connection between them instead
//! ([`KeptPg`]: the session room answering messages), on which the
//! statements it runs are named (prepared once per connection).

use std::cell::RefCell;
use std::rc::Rc;

use async_trait::async_trait;
use everjust_core::ports::postgres::{PgSql, Shape};
use everjust_core::ports::sql::{Row, Sql, SqlError, Value};
use futures_util::future::{LocalBoxFuture, Shared};
use futures_util::FutureExt;
use worker::Hyperdrive;

use crate::pg_socket::{PgSocket, StartTls, Transport};

type Connecting = Shared<LocalBoxFuture<'static, Result<Rc<PgSql>, String>>>;

#[derive(Clone)]
pub struct LazyPg {
    /// Runs once, on first poll; every statement awaits the same outcome.
    connection: Connecting,
}

/// A statement a connection runs before any other (with its parameters).
pub type Gate = (&'static str, Vec<Value>);

/// Where the connection goes.
pub enum Target {
    /// The Hyperdrive binding (production: Hyperdrive's pool).
    Hyperdrive(worker::Result<Hyperdrive>),
    /// A Postgres URL reached over a socket of its own (`DATABASE_DIRECT_URL`).
    Direct(String),
}

impl LazyPg {
    /// A connection to `target`, whose statements go out once `gate`, if
    /// any, has been answered (a gate that fails is logged and lets them
    /// through).
    pub fn new(target: Target, gate: Option<Gate>) -> Self {
        Self::open(target, gate, false)
    }

    /// A connection to keep: the statements kept connections of this
    /// isolate ran before are prepared on it before any other goes out, and
    /// the ones it runs unnamed are prepared once it is returned
    /// ([`LazyPg::name_unnamed`]).
    fn kept(target: Target) -> Self {
        Self::open(target, None, true)
    }

    fn open(target: Target, gate: Option<Gate>, naming: bool) -> Self {
        let connecting = async move {
            let endpoint = match target {
                Target::Hyperdrive(hyperdrive) => {
                    let h = hyperdrive.map_err(|e| format!("binding: {e}"))?;
                    Endpoint {
                        config: h
                            .connection_string()
                            .parse()
                            .map_err(|e| format!("connection string: {e}"))?,
                        host: h.host(),
                        port: h.port(),
                        transport: Transport::StartTls,
                    }
                }
                Target::Direct(url) => Endpoint::direct(&url)?,
            };
            let naming = naming && NAMING.get();
            let pg = connect(&endpoint, naming).await?;
            if naming {
                pg.prepare(&KEPT_SHAPES.with_borrow(Clone::clone)).await;
            }
            if let Some((sql, params)) = gate {
                if let Err(e) = pg.execute(sql, &params).await {
                    worker::console_warn!("postgres: gate: {e}");
                }
            }
            Ok(pg)
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

/// What a connection is opened to.
struct Endpoint {
    config: tokio_postgres::Config,
    host: String,
    port: u16,
    transport: Transport,
}

impl Endpoint {
    fn direct(url: &str) -> Result<Self, String> {
        let config: tokio_postgres::Config = url
            .parse()
            .map_err(|e| format!("DATABASE_DIRECT_URL: {e}"))?;
        let host = match config.get_hosts().first() {
            Some(tokio_postgres::config::Host::Tcp(h)) => h.clone(),
            _ => return Err("DATABASE_DIRECT_URL: needs a TCP host".into()),
        };
        let port = config.get_ports().first().copied().unwrap_or(5432);
        let transport = match config.get_ssl_mode() {
            tokio_postgres::config::SslMode::Disable => Transport::Off,
            _ => Transport::StartTls,
        };
        Ok(Self {
            config,
            host,
            port,
            transport,
        })
    }
}

async fn connect(endpoint: &Endpoint, naming: bool) -> Result<Rc<PgSql>, String> {
    let mut attempt = 0;
    loop {
        match connect_once(endpoint, naming).await {
            Err(Refused::TooMany(e)) if attempt < CONNECT_RETRIES => {
                worker::console_warn!("postgres: {e}; connecting again");
                crate::clock::sleep(50 << attempt).await;
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

async fn connect_once(endpoint: &Endpoint, naming: bool) -> Result<Rc<PgSql>, Refused> {
    let socket = PgSocket::connect(&endpoint.host, endpoint.port, endpoint.transport)
        .map_err(|e| Refused::Other(format!("socket: {e}")))?;
    let (client, connection) = endpoint
        .config
        .connect_raw(socket, StartTls)
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
    Ok(Rc::new(if naming {
        PgSql::naming(client)
    } else {
        PgSql::new(client)
    }))
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

/// How long a kept connection may wait idle for the next request before it
/// is closed (a chat's next message usually comes sooner; a Postgres
/// backend is not held for a room nobody uses).
const KEPT_IDLE_MS: u64 = 30_000;

/// At most this many statements are remembered for kept connections.
const MAX_KEPT_SHAPES: usize = 64;

thread_local! {
    /// The statements run on kept connections of this isolate, first seen
    /// first: a connection opened to be kept prepares them, so even a new
    /// room's first message runs its statements by name.
    static KEPT_SHAPES: RefCell<Vec<Shape>> = const { RefCell::new(Vec::new()) };
    /// Cleared once a connection found that the server lost its named
    /// statements (a pooler that does not keep them): later connections of
    /// this isolate name none.
    static NAMING: std::cell::Cell<bool> = const { std::cell::Cell::new(true) };
}

/// One connection a Durable Object keeps between its requests: a Worker's
/// sockets end with the request that opened them, an object's live on. A
/// request lends it ([`KeptPg::lend`]), even while it is still being opened
/// ([`KeptPg::warm`]), or, when it is lent already, opens one of its own,
/// kept after it if none is. It comes back once the last of the request's
/// ports is dropped (its after-answer work included), unless a transaction
/// it began was not seen to end (a request cut off inside one): that
/// connection is closed, so no later request runs inside it. It is closed
/// after [`KEPT_IDLE_MS`] unused.
pub struct KeptPg {
    slot: Rc<Slot>,
}

#[derive(Default)]
struct Slot {
    idle: std::cell::RefCell<Option<LazyPg>>,
    /// Counts returns, so an idle timer closes only the connection it was
    /// started for.
    returns: std::cell::Cell<u64>,
}

impl Slot {
    /// Keeps `pg` unless one is kept already (whether it did); closes it
    /// after [`KEPT_IDLE_MS`] unless it was lent since.
    fn keep(self: &Rc<Self>, pg: LazyPg) -> bool {
        if self.idle.borrow().is_some() {
            return false;
        }
        *self.idle.borrow_mut() = Some(pg);
        let returned = self.returns.get() + 1;
        self.returns.set(returned);
        let slot = Rc::clone(self);
        wasm_bindgen_futures::spawn_local(async move {
            crate::clock::sleep(KEPT_IDLE_MS).await;
            if slot.returns.get() == returned {
                slot.idle.take();
            }
        });
        true
    }
}

impl KeptPg {
    pub fn new() -> Self {
        Self {
            slot: Rc::new(Slot::default()),
        }
    }

    /// The kept connection, or a new one to `target` that may be kept after.
    pub fn lend(&self, target: impl FnOnce() -> Target) -> Rc<dyn Sql> {
        let kept = self.slot.idle.take().filter(LazyPg::usable);
        Rc::new(Borrowed {
            pg: kept.unwrap_or_else(|| LazyPg::kept(target())),
            slot: Rc::clone(&self.slot),
            in_transaction: std::cell::Cell::new(false),
        })
    }

    /// Starts opening a connection to keep, unless one is kept: the next
    /// request then waits at most for what is left of its opening.
    pub fn warm(&self, target: impl FnOnce() -> Target) {
        if self.slot.idle.borrow().as_ref().is_some_and(LazyPg::usable) {
            return;
        }
        let opening = LazyPg::kept(target());
        // Polled here so it opens now; one that fails is not lent
        // (`LazyPg::usable`).
        let connecting = opening.clone();
        wasm_bindgen_futures::spawn_local(async move {
            let _ = connecting.client().await;
        });
        self.slot.keep(opening);
    }
}

impl LazyPg {
    /// Remembers the statements this connection ran unnamed for the next
    /// kept connection and, if it is `kept` itself, prepares them on it in
    /// the background.
    fn name_unnamed(&self, kept: bool) {
        let Some(Ok(pg)) = self.connection.peek() else {
            return;
        };
        if !pg.names_statements() {
            // It was made naming unless NAMING was cleared before.
            NAMING.set(false);
            return;
        }
        let unnamed = pg.take_unnamed();
        if unnamed.is_empty() {
            return;
        }
        KEPT_SHAPES.with_borrow_mut(|shapes| {
            for shape in &unnamed {
                if shapes.len() < MAX_KEPT_SHAPES && !shapes.contains(shape) {
                    shapes.push(shape.clone());
                }
            }
        });
        if kept {
            let pg = Rc::clone(pg);
            wasm_bindgen_futures::spawn_local(async move { pg.prepare(&unnamed).await });
        }
    }

    /// Not known to be broken: still opening, or open and not closed since.
    fn usable(&self) -> bool {
        match self.connection.peek() {
            None => true,
            Some(Ok(pg)) => !pg.is_closed(),
            Some(Err(_)) => false,
        }
    }
}

/// A [`KeptPg`] connection lent to one request: it runs the request's
/// statements and goes back to the slot when dropped.
struct Borrowed {
    pg: LazyPg,
    slot: Rc<Slot>,
    /// A `BEGIN` went out and no `COMMIT` or `ROLLBACK` was answered since
    /// (every transaction of the core is made of those `batch` statements).
    in_transaction: std::cell::Cell<bool>,
}

impl Drop for Borrowed {
    fn drop(&mut self) {
        if !self.in_transaction.get() && self.pg.usable() {
            let kept = self.slot.keep(self.pg.clone());
            self.pg.name_unnamed(kept);
        }
    }
}

#[async_trait(?Send)]
impl Sql for Borrowed {
    async fn query(&self, sql: &str, params: &[Value]) -> Result<Vec<Row>, SqlError> {
        self.pg.query(sql, params).await
    }

    async fn execute(&self, sql: &str, params: &[Value]) -> Result<u64, SqlError> {
        self.pg.execute(sql, params).await
    }

    async fn batch(&self, sql: &str) -> Result<(), SqlError> {
        let statement = sql.trim().trim_end_matches(';');
        let ends = ["COMMIT", "ROLLBACK"]
            .iter()
            .any(|end| statement.eq_ignore_ascii_case(end));
        if statement.eq_ignore_ascii_case("BEGIN") {
            self.in_transaction.set(true);
        }
        let done = self.pg.batch(sql).await;
        // Answered, even with an error, the transaction is over (Postgres
        // rolls back one whose COMMIT fails); a connection that broke
        // instead is not kept anyway.
        if ends {
            self.in_transaction.set(false);
        }
        done
    }
}
