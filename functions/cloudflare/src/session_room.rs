//! The `SessionRoom` Durable Object: one per chat session (named by its
//! id). It drives the session's run in a task of its own, keeps the run's events
//! in its SQLite storage with their sequence numbers, and fans each event
//! out to the connected WebSockets (hibernation API) and SSE readers.
//!
//! Routes (from the Worker's `Rooms` port, `rooms.rs`; every request
//! carries `?session=<id>`):
//! - `POST /start?protocol=P` (a `RunSpec`): 409 when a run is active;
//!   else claims the room for it, starts driving it and answers `{"last_seq": N}`,
//!   or with `protocol` the run's events as `GET /events?after=N` would
//!   (N in the `x-everjust-last-seq` header).
//! - `GET /events?after=N&protocol=P`: SSE, the buffer after N, then the
//!   live events until the active run's `run_finished`.
//! - `POST /cancel`: asks the active run to stop.
//! - `POST /purge`: 204; the session was deleted: erases the storage (after
//!   the run this isolate drives, which it stops).
//! - `POST /prepare`: 204; sent when the session is created, so the object
//!   exists (storage opened, schema made, a Postgres connection opened)
//!   before the first run.
//! - `POST /v1/sessions/{id}/messages`: the API request itself, forwarded
//!   by the Worker (`rooms::forward`) and answered with the core's handler,
//!   on a Postgres connection the object keeps between requests
//!   (`sql::KeptPg`); the run it starts is begun here, as `/start` would.
//! - `GET /ws?user_id=&name=&after=N` with `Upgrade: websocket` and the
//!   ticket's hash: the WebSocket of one member (401 for a ticket seen
//!   before). It gets every buffered event after N (all when N is absent)
//!   as native JSON frames, then the live ones; presence goes to everyone
//!   on each join and leave. Client frames: `resume {after}` (the events
//!   after it again), `ack {seq}` (its presence cursor), `ping` (-> `pong`).
//!
//! Exact resume rests on one rule (ARCHITECTURE.md): appending an event and
//! broadcasting it happen with no `.await` between, and so do a joining
//! reader's replay and its registration. Storage here is synchronous, so
//! both are plain sequential code.
//!
//! Appending does not write each event on its own: a run emits one event per
//! token, and a storage write per token was most of the relay's cost. The
//! log keeps the newest events in memory and writes them in one statement
//! when 64 are waiting, when the oldest has waited 50 ms, when a run ends,
//! before any read (so a replay always reads storage alone), and from a
//! 50 ms ticker while a run is driven. What an isolate that dies takes with
//! it is at most those 50 ms of a run it was driving, which is lost anyway
//! (the run is marked incomplete).
//!
//! The run is driven by a task of the object's own, started by `/start`:
//! it outlives the starting request, and the model is called without
//! waiting for an alarm to be dispatched (3 ms under `wrangler dev`, which
//! was a quarter of the time to the first token). `/start` only claims the
//! room in memory; the task stores the run and arms its heartbeat alarm
//! with its first flush, because any storage write holds what the object
//! sends (the output gate) until it is durable, and the model call and the
//! first token would wait for it (`Room::store_claimed`). The Postgres
//! statements of the task wait for the run's start to be committed
//! (`db::AFTER_RUN_START`). The alarm keeps the object alive while the run
//! goes on: its handler waits for the driving task to end.
//!
//! A run whose isolate died (eviction, crash) is found by the next alarm
//! (a heartbeat alarm is kept armed while a run is active): a run that was
//! started and not finished is never re-run, it is marked `incomplete` with
//! its partial answer persisted.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::task::Waker;

use everjust_core::chat::agent::{self, blocks_from_events, RunSpec};
use everjust_core::chat::early::Lease;
use everjust_core::chat::encode::{Encoder, Protocol, KEEP_ALIVE, KEEP_ALIVE_MS};
use everjust_core::chat::events::{Event, EventBody};
use everjust_core::chat::room::{
    event_message, lost_run_end, presence_message, ClientMessage, Fanout, Presence, RoomLog,
    RoomSink,
};
use everjust_core::db::chat as db;
use everjust_core::llm::Usage;
use everjust_core::ports::rooms::{Member, RoomError, Rooms};
use everjust_core::ports::sql::SqlError;
use everjust_core::{Body, Ports};
use serde::{Deserialize, Serialize};
use wasm_bindgen::{JsCast, JsValue};
use worker::{
    durable_object, DurableObject, Env, Method, Request, Response, ResponseBuilder, SqlStorage,
    SqlStorageValue, State, WebSocket, WebSocketIncomingMessage, WebSocketPair,
};

use crate::rooms::TICKET_HEADER;
use crate::sse_pipe::SsePipe;

/// While a run is active an alarm is kept armed this far ahead: the
/// watchdog of a driver that died. (workerd does not start an object's
/// alarm while its previous one still runs, so under wrangler dev it fires
/// only after the driving alarm ended, normally replaced by then; should a
/// platform overlap them, the heartbeat branch re-arms it.)
const HEARTBEAT_MS: i64 = 20_000;
/// When marking a lost run fails (Postgres down), try again after this.
const RETRY_MS: i64 = 30_000;
/// Events are kept this long after they were written (the newest is kept
/// always: it holds the sequence number).
const KEEP_EVENTS_MS: i64 = 24 * 3600 * 1000;
/// Ticket hashes are kept this long (tickets live 60 s).
const KEEP_TICKETS_MS: i64 = 3600 * 1000;
/// Events read from storage per query when replaying.
const REPLAY_PAGE: usize = 1000;
/// Appended events wait in memory for at most this many ...
const FLUSH_EVENTS: usize = 64;
/// ... or this long before they are written (see the module docs).
const FLUSH_MS: i64 = 50;
/// A start waits this long for a run that is just finishing (its answer is
/// persisted a moment before its last event is written).
const START_WAIT_MS: u64 = 3000;
const START_POLL_MS: u64 = 100;

/// The active run, kept in storage under `meta.k = 'run'`.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct ActiveRun {
    spec: RunSpec,
    /// How many alarms started driving it (0: not yet; a second is never made).
    attempts: u32,
    cancel: bool,
}

/// A WebSocket's member, kept as the socket's attachment so that it survives
/// hibernation.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Connection {
    connection_id: String,
    user_id: String,
    name: String,
    seen: i64,
}

impl From<Connection> for Presence {
    fn from(c: Connection) -> Self {
        Presence {
            connection_id: c.connection_id,
            user_id: c.user_id,
            name: c.name,
            seen: c.seen,
        }
    }
}

#[durable_object]
pub struct SessionRoom {
    /// Shared with the task that drives the active run.
    room: Rc<Room>,
}

impl std::ops::Deref for SessionRoom {
    type Target = Room;

    fn deref(&self) -> &Room {
        &self.room
    }
}

/// The object's state.
pub struct Room {
    state: State,
    env: Env,
    /// This isolate is driving the active run right now.
    driving: Cell<bool>,
    /// Who waits for the driving to end (the alarm's handler).
    driven: RefCell<Vec<Waker>>,
    /// The model has begun to answer the driven run (an event past its
    /// start), and who waits for that.
    answered: Cell<bool>,
    answered_waker: RefCell<Option<std::task::Waker>>,
    /// The active run's cancel flag (also in storage).
    cancel: Cell<bool>,
    /// The run `/start` began whose record is not stored yet (see
    /// `store_claimed`): the active run until then.
    claimed: RefCell<Option<ActiveRun>>,
    /// Live SSE readers of the active run.
    readers: RefCell<Vec<Reader>>,
    /// A text block or tool call began and its first delta is still to come.
    fresh_block: Cell<bool>,
    /// The event log's unwritten tail and cached sequence number.
    tail: Tail,
    /// The hibernatable WebSockets, read once per join or leave rather than
    /// once per event.
    sockets: RefCell<Option<Vec<WebSocket>>>,
    /// The Postgres connection kept for the API requests answered here.
    kept_pg: crate::sql::KeptPg,
    /// The storage's tables exist.
    schema_made: Cell<bool>,
    /// The session is gone (`/purge`): the storage is erased once no run
    /// of this isolate is being driven.
    erase: Cell<bool>,
    /// The lease for the session's next message (`everjust_core::chat::
    /// early`): brought by `/prepare` for the first, renewed as each run
    /// ends; the message takes it.
    lease: RefCell<Option<Lease>>,
}

/// A live SSE reader: its response body and how it encodes events.
struct Reader {
    pipe: SsePipe,
    encoder: Encoder,
}

impl Reader {
    /// Writes the stream's trailer and ends it.
    fn end(self) {
        self.pipe.write(&self.encoder.end());
        self.pipe.close();
    }
}

/// Events appended and not yet written, and the newest sequence number.
#[derive(Default)]
struct Tail {
    /// `[seq, run_id, body, created_ms]` rows, oldest first.
    rows: RefCell<Vec<serde_json::Value>>,
    /// When the oldest of `rows` was appended.
    since_ms: Cell<i64>,
    /// The newest sequence number (in `rows` or storage), once read.
    last_seq: Cell<Option<i64>>,
}

fn log_run(level: &str, event: &str, spec: &RunSpec) {
    everjust_core::log::event(
        level,
        event,
        serde_json::json!({ "session_id": spec.session_id, "run_id": spec.run_id }),
    );
}

fn now_ms() -> i64 {
    js_sys::Date::now() as i64
}

fn json_response(status: u16, body: &serde_json::Value) -> worker::Result<Response> {
    Ok(ResponseBuilder::new()
        .with_status(status)
        .with_header("content-type", "application/json")?
        .fixed(body.to_string().into_bytes()))
}

fn problem(status: u16, code: &str, detail: &str) -> worker::Result<Response> {
    let title = http::StatusCode::from_u16(status)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("Error");
    Ok(ResponseBuilder::new()
        .with_status(status)
        .with_header("content-type", "application/problem+json")?
        .fixed(
            serde_json::json!({
                "type": "about:blank", "title": title, "status": status,
                "detail": detail, "code": code,
            })
            .to_string()
            .into_bytes(),
        ))
}

/// Runs a statement and reads its rows.
fn rows<T: serde::de::DeserializeOwned>(
    sql: &SqlStorage,
    query: &str,
    binds: Vec<SqlStorageValue>,
) -> worker::Result<Vec<T>> {
    sql.exec(query, binds)?.to_array::<T>()
}

/// Runs a statement that returns no rows.
fn exec(sql: &SqlStorage, query: &str, binds: Vec<SqlStorageValue>) -> worker::Result<()> {
    rows::<serde_json::Value>(sql, query, binds).map(drop)
}

#[derive(Deserialize)]
struct TextRow {
    v: String,
}

#[derive(Deserialize)]
struct IntRow {
    n: Option<f64>,
}

/// The room's event buffer: the object's SQLite storage and its unwritten
/// tail.
struct SqlLog<'a> {
    sql: SqlStorage,
    tail: &'a Tail,
}

impl SqlLog<'_> {
    /// Writes the waiting events, all in one statement. On failure they stay
    /// waiting (and the append that asked fails, ending the run).
    fn flush(&self) -> Result<(), String> {
        let mut rows = self.tail.rows.borrow_mut();
        if rows.is_empty() {
            return Ok(());
        }
        let batch = serde_json::Value::Array(std::mem::take(&mut *rows));
        let written = exec(
            &self.sql,
            "INSERT INTO events (seq, run_id, body, created_ms) SELECT json_extract(value, '$[0]'), json_extract(value, '$[1]'), json_extract(value, '$[2]'), json_extract(value, '$[3]') FROM json_each(?)",
            vec![batch.to_string().into()],
        );
        if let Err(e) = written {
            if let serde_json::Value::Array(batch) = batch {
                *rows = batch;
            }
            return Err(format!("room append: {e}"));
        }
        Ok(())
    }

    /// The events of the run that event `seq` belongs to, up to `seq`: what a
    /// reader resuming after `seq` has seen of it (to prime its encoder).
    fn run_upto(&self, seq: i64) -> Result<Vec<Event>, String> {
        self.flush()?;
        rows::<TextRow>(
            &self.sql,
            "SELECT body AS v FROM events WHERE seq <= ? AND run_id = (SELECT run_id FROM events WHERE seq = ?) ORDER BY seq",
            vec![seq.into(), seq.into()],
        )
        .map_err(|e| format!("room read: {e}"))?
        .iter()
        .map(|r| serde_json::from_str(&r.v).map_err(|e| format!("room event: {e}")))
        .collect()
    }

    /// Every event after `after` (paged through storage).
    fn all_after(&self, mut after: i64) -> Result<Vec<Event>, String> {
        let mut out = Vec::new();
        loop {
            let page = self.after(after, REPLAY_PAGE)?;
            let full = page.len() == REPLAY_PAGE;
            if let Some(last) = page.last() {
                after = last.seq;
            }
            out.extend(page);
            if !full {
                return Ok(out);
            }
        }
    }
}

impl RoomLog for SqlLog<'_> {
    fn append(&self, ev: &Event, body: &str) -> Result<(), String> {
        let now = now_ms();
        let waiting = {
            let mut rows = self.tail.rows.borrow_mut();
            if rows.is_empty() {
                self.tail.since_ms.set(now);
            }
            rows.push(serde_json::json!([ev.seq, ev.run_id, body, now]));
            rows.len()
        };
        self.tail.last_seq.set(Some(ev.seq));
        if ev.body.is_terminal()
            || waiting >= FLUSH_EVENTS
            || now - self.tail.since_ms.get() >= FLUSH_MS
        {
            self.flush()?;
        }
        Ok(())
    }

    fn after(&self, after: i64, limit: usize) -> Result<Vec<Event>, String> {
        self.flush()?;
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        rows::<TextRow>(
            &self.sql,
            "SELECT body AS v FROM events WHERE seq > ? ORDER BY seq LIMIT ?",
            vec![after.into(), limit.into()],
        )
        .map_err(|e| format!("room read: {e}"))?
        .iter()
        .map(|r| serde_json::from_str(&r.v).map_err(|e| format!("room event: {e}")))
        .collect()
    }

    fn last_seq(&self) -> i64 {
        if let Some(seq) = self.tail.last_seq.get() {
            return seq;
        }
        match rows::<IntRow>(&self.sql, "SELECT MAX(seq) AS n FROM events", vec![]) {
            Ok(r) => {
                let seq = r.first().and_then(|r| r.n).map_or(0, |n| n as i64);
                self.tail.last_seq.set(Some(seq));
                seq
            }
            Err(e) => {
                // Numbering on from 0 would collide with stored events: the
                // append fails and the run ends instead.
                worker::console_error!("room last_seq: {e}");
                0
            }
        }
    }
}

/// Resets `driving` however the driving future ends, and wakes who waits
/// for that.
struct Driving<'a>(&'a Room);

impl Drop for Driving<'_> {
    fn drop(&mut self) {
        self.0.driving.set(false);
        for waker in self.0.driven.take() {
            waker.wake();
        }
    }
}

impl DurableObject for SessionRoom {
    fn new(state: State, env: Env) -> Self {
        // The schema is made on first use (`Room::sql`), not here: a room
        // asked for a session that is not its caller's (a forwarded message,
        // see `rooms::forward`) stores nothing.
        let made = rows::<TextRow>(
            &state.storage().sql(),
            "SELECT name AS v FROM sqlite_master WHERE type = 'table' AND name = 'meta'",
            vec![],
        )
        .is_ok_and(|found| !found.is_empty());
        let room = Room {
            state,
            env,
            driving: Cell::new(false),
            driven: RefCell::new(Vec::new()),
            answered: Cell::new(false),
            answered_waker: RefCell::new(None),
            cancel: Cell::new(false),
            claimed: RefCell::new(None),
            readers: RefCell::new(Vec::new()),
            fresh_block: Cell::new(false),
            tail: Tail::default(),
            sockets: RefCell::new(None),
            kept_pg: crate::sql::KeptPg::new(),
            schema_made: Cell::new(made),
            erase: Cell::new(false),
            lease: RefCell::new(None),
        };
        if made {
            if let Ok(Some(run)) = room.active() {
                room.cancel.set(run.cancel);
            }
        }
        Self {
            room: Rc::new(room),
        }
    }

    async fn fetch(&self, mut req: Request) -> worker::Result<Response> {
        let url = req.url()?;
        let query = |name: &str| {
            url.query_pairs()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.into_owned())
        };
        let session = query("session").unwrap_or_default();
        match (req.method(), url.path()) {
            (Method::Post, "/start") => {
                let spec: RunSpec = match req.json().await {
                    Ok(spec) => spec,
                    Err(e) => return problem(400, "invalid_body", &e.to_string()),
                };
                let stream = match query("protocol").map(|p| Protocol::parse(Some(&p))) {
                    None => None,
                    Some(Ok(p)) => Some(p),
                    Some(Err(_)) => return problem(400, "invalid_protocol", "unknown protocol"),
                };
                Ok(match Room::begin(&self.room, spec, stream).await? {
                    Ok((last_seq, Some(mut res))) => {
                        res.headers_mut()
                            .set(crate::rooms::LAST_SEQ_HEADER, &last_seq.to_string())?;
                        res
                    }
                    Ok((last_seq, None)) => {
                        json_response(200, &serde_json::json!({ "last_seq": last_seq }))?
                    }
                    Err(refused) => refused,
                })
            }
            // A request of the API forwarded by the Worker (`rooms::forward`):
            // sending a message, answered here with the core's own handler.
            (Method::Post, path) if path.starts_with("/v1/") => Room::api(&self.room, req).await,
            (Method::Get, "/events") => {
                let after = query("after").and_then(|a| a.parse().ok()).unwrap_or(0);
                let protocol = match Protocol::parse(query("protocol").as_deref()) {
                    Ok(p) => p,
                    Err(_) => return problem(400, "invalid_protocol", "unknown protocol"),
                };
                self.events(&session, after, protocol)
            }
            (Method::Post, "/cancel") => self.request_cancel(),
            (Method::Post, "/purge") => self.purge().await,
            // Made by now (`new`); its tables are made and, its first message
            // being near, its Postgres connection opened.
            (Method::Post, "/prepare") => {
                let body = req.text().await?;
                if !body.is_empty() {
                    match serde_json::from_str::<Lease>(&body) {
                        Ok(lease) => *self.lease.borrow_mut() = Some(lease),
                        Err(e) => return problem(400, "invalid_body", &e.to_string()),
                    }
                }
                self.sql();
                self.kept_pg.warm(|| crate::sql_target(&self.env));
                Ok(Response::empty()?.with_status(204))
            }
            (Method::Get, "/ws") => {
                let upgrade = req.headers().get("upgrade")?.unwrap_or_default();
                if !upgrade.eq_ignore_ascii_case("websocket") {
                    return problem(426, "upgrade_required", "Connect with a WebSocket.");
                }
                let Some(ticket) = req.headers().get(TICKET_HEADER)? else {
                    return problem(401, "invalid_ticket", "The WebSocket ticket is missing.");
                };
                let member = Connection {
                    connection_id: self.connection_id(),
                    user_id: query("user_id").unwrap_or_default(),
                    name: query("name").unwrap_or_default(),
                    seen: query("after").and_then(|a| a.parse().ok()).unwrap_or(0),
                };
                self.join(&ticket, member)
            }
            _ => problem(404, "not_found", "No such room route."),
        }
    }

    async fn alarm(&self) -> worker::Result<Response> {
        let storage = self.state.storage();
        match self.active()? {
            // A heartbeat while this isolate drives the run: keep it armed,
            // and the object alive until the run ends.
            Some(run) if self.driving.get() => {
                log_run("debug", "room_heartbeat", &run.spec);
                storage.set_alarm(HEARTBEAT_MS).await?;
                self.until_driven().await;
            }
            Some(run) if run.attempts == 0 => self.drive(run).await?,
            // Started before and not driven by this isolate: its driver died.
            Some(run) => self.abandon(run).await?,
            None => self.clean_up().await?,
        }
        Response::ok("")
    }

    async fn websocket_message(
        &self,
        ws: WebSocket,
        message: WebSocketIncomingMessage,
    ) -> worker::Result<()> {
        let parsed = match message {
            WebSocketIncomingMessage::String(text) => ClientMessage::parse(&text),
            WebSocketIncomingMessage::Binary(_) => None,
        };
        match parsed {
            Some(ClientMessage::Resume { after }) => {
                let events = self
                    .log()
                    .all_after(after)
                    .map_err(worker::Error::RustError)?;
                for ev in &events {
                    ws.send_with_str(event_message(ev))?;
                }
            }
            Some(ClientMessage::Ack { seq }) => {
                if let Some(mut conn) = ws.deserialize_attachment::<Connection>()? {
                    conn.seen = conn.seen.max(seq);
                    ws.serialize_attachment(&conn)?;
                }
            }
            Some(ClientMessage::Ping) => ws.send_with_str(r#"{"type":"pong"}"#)?,
            None => ws.send_with_str(
                serde_json::json!({
                    "type": "error", "code": "invalid_message",
                    "message": "Send resume {after}, ack {seq} or ping.",
                })
                .to_string(),
            )?,
        }
        Ok(())
    }

    async fn websocket_close(
        &self,
        ws: WebSocket,
        _code: usize,
        _reason: String,
        _was_clean: bool,
    ) -> worker::Result<()> {
        // Completes the closing handshake (older compatibility dates do not
        // answer the client's close frame themselves); a socket already
        // closed refuses, which is fine.
        let _ = ws.close(Some(1000), Some("bye"));
        self.left(&ws);
        Ok(())
    }

    async fn websocket_error(&self, ws: WebSocket, error: worker::Error) -> worker::Result<()> {
        worker::console_warn!("room websocket error: {error}");
        self.left(&ws);
        Ok(())
    }
}

impl Room {
    /// Ready once no task of this isolate drives a run.
    fn until_driven(&self) -> impl std::future::Future<Output = ()> + '_ {
        futures_util::future::poll_fn(move |cx| {
            if !self.driving.get() {
                return std::task::Poll::Ready(());
            }
            self.driven.borrow_mut().push(cx.waker().clone());
            std::task::Poll::Pending
        })
    }

    /// The object's SQL storage, its tables made on first use.
    fn sql(&self) -> SqlStorage {
        let sql = self.state.storage().sql();
        if !self.schema_made.get() {
            for ddl in [
                "CREATE TABLE IF NOT EXISTS events (seq INTEGER PRIMARY KEY, run_id TEXT NOT NULL, body TEXT NOT NULL, created_ms INTEGER NOT NULL)",
                "CREATE INDEX IF NOT EXISTS events_created ON events (created_ms)",
                "CREATE TABLE IF NOT EXISTS meta (k TEXT PRIMARY KEY, v TEXT NOT NULL)",
                "CREATE TABLE IF NOT EXISTS tickets (hash TEXT PRIMARY KEY, created_ms INTEGER NOT NULL)",
            ] {
                if let Err(e) = exec(&sql, ddl, vec![]) {
                    worker::console_error!("room schema: {e}");
                    return sql;
                }
            }
            self.schema_made.set(true);
        }
        sql
    }

    fn log(&self) -> SqlLog<'_> {
        SqlLog {
            sql: self.sql(),
            tail: &self.tail,
        }
    }

    /// Sends a frame to every connected WebSocket. The sockets are read
    /// from the runtime once per join or leave, not once per event; the
    /// frame crosses into JavaScript once, not once per socket, and only
    /// when someone is connected.
    fn send_all(&self, frame: &str) {
        let mut sockets = self.sockets.borrow_mut();
        let sockets = sockets.get_or_insert_with(|| self.state.get_websockets());
        let Some(first) = sockets.first() else {
            return;
        };
        let text = JsValue::from_str(frame);
        let send = js_sys::Reflect::get(first.as_ref(), &JsValue::from_str("send"))
            .ok()
            .and_then(|f| f.dyn_into::<js_sys::Function>().ok());
        for ws in sockets.iter() {
            // A socket closing right now refuses; its close handler follows.
            let _ = match &send {
                Some(send) => send.call1(ws.as_ref(), &text).map(drop),
                None => ws
                    .send_with_str(frame)
                    .map_err(|e| JsValue::from_str(&e.to_string())),
            };
        }
    }

    fn active(&self) -> worker::Result<Option<ActiveRun>> {
        if let Some(run) = self.claimed.borrow().as_ref() {
            return Ok(Some(run.clone()));
        }
        let found = rows::<TextRow>(&self.sql(), "SELECT v FROM meta WHERE k = 'run'", vec![])?;
        match found.first() {
            None => Ok(None),
            Some(row) => serde_json::from_str(&row.v)
                .map(Some)
                .map_err(|e| worker::Error::RustError(format!("room run: {e}"))),
        }
    }

    fn save_active(&self, run: &ActiveRun) -> worker::Result<()> {
        let doc =
            serde_json::to_string(run).map_err(|e| worker::Error::RustError(e.to_string()))?;
        exec(
            &self.sql(),
            "INSERT INTO meta (k, v) VALUES ('run', ?) ON CONFLICT (k) DO UPDATE SET v = excluded.v",
            vec![doc.into()],
        )
    }

    fn clear_active(&self) -> worker::Result<()> {
        self.claimed.take();
        exec(&self.sql(), "DELETE FROM meta WHERE k = 'run'", vec![])
    }

    fn connection_id(&self) -> String {
        let mut raw = [0u8; 9];
        use everjust_core::ports::Crypto;
        crate::crypto::WebCrypto.fill_random(&mut raw);
        let hex: String = raw.iter().map(|b| format!("{b:02x}")).collect();
        format!("con_{hex}")
    }

    /// Claims the room for `spec` and starts driving it: the room's
    /// sequence number before the run and, with `stream`, the run's events
    /// as `/events` after that number would answer them; or the refusal.
    async fn begin(
        room: &Rc<Room>,
        spec: RunSpec,
        stream: Option<Protocol>,
    ) -> worker::Result<Result<(i64, Option<Response>), Response>> {
        let session = spec.session_id.clone();
        let (last_seq, run) = match room.start(spec).await? {
            Ok(started) => started,
            Err(refused) => return Ok(Err(refused)),
        };
        // The reader first, then the task: it first runs once this
        // request waits, so the reader misses nothing.
        let events = match stream {
            Some(protocol) => Some(room.events(&session, last_seq, protocol)?),
            None => None,
        };
        let driver = Rc::clone(room);
        wasm_bindgen_futures::spawn_local(async move {
            if let Err(e) = driver.drive_claimed(run).await {
                // Stored as driven (from its first flush): the
                // heartbeat alarm ends it.
                worker::console_error!("room drive: {e}");
            }
        });
        Ok(Ok((last_seq, events)))
    }

    /// Answers a request of the API here, with the core's handler: the
    /// admission of a message runs on this object's kept Postgres
    /// connection (no connection opened on the way to the first token) and
    /// the run starts in this room without another request.
    async fn api(self: &Rc<Self>, req: Request) -> worker::Result<Response> {
        // The Worker forwards only to the room named by the session in the
        // path (`rooms::forwarded_session`).
        let path = req.path();
        let Some(session_id) = crate::rooms::messages_session(&path).map(str::to_owned) else {
            return problem(404, "not_found", "No such room route.");
        };
        let req = crate::convert::read_request(Clone::clone(req.inner())).await?;
        let meta = crate::convert::meta(&req);
        let mut ports = self.ports();
        ports.sql = self.kept_pg.lend(|| crate::sql_target(&self.env));
        ports.rooms = Some(Rc::new(HereRooms {
            room: Rc::clone(self),
            session_id,
        }));
        ports.background = Some(Rc::new(Spawned));
        let res = everjust_core::handle(&ports, req, meta).await;
        crate::convert::write_response(res)
    }

    /// The ports of a run: the Worker's, without rooms (the room is here).
    fn ports(&self) -> Ports {
        crate::base_ports(&self.env)
    }

    /// Claims the room for the run (its first attempt, driven by this
    /// isolate; stored by [`Room::store_claimed`] once it is under way):
    /// the room's sequence number before it and the run for
    /// [`Room::drive_claimed`], or the refusal to answer. Should the isolate
    /// die before the record is stored, the starting request fails and ends
    /// the run in Postgres.
    async fn start(&self, mut spec: RunSpec) -> worker::Result<Result<(i64, ActiveRun), Response>> {
        let mut waited = 0;
        while let Some(run) = self.active()? {
            if waited >= START_WAIT_MS {
                return problem(
                    409,
                    "run_in_progress",
                    &format!("The run {} is still active in this room.", run.spec.run_id),
                )
                .map(Err);
            }
            crate::clock::sleep(START_POLL_MS).await;
            waited += START_POLL_MS;
        }
        // From the check above to the store below there is no `.await`: two
        // starts cannot both pass.
        let last_seq = self.log().last_seq();
        spec.first_seq = last_seq;
        // What the starting request read for the run is not stored: it goes
        // to the driving task in memory (a run driven again after its
        // isolate died reads it anew).
        let preload = spec.preload.take();
        let mut run = ActiveRun {
            spec,
            attempts: 1,
            cancel: false,
        };
        *self.claimed.borrow_mut() = Some(run.clone());
        run.spec.preload = preload;
        self.cancel.set(false);
        Ok(Ok((last_seq, run)))
    }

    /// Stores the run [`Room::start`] claimed, if a run is still claimed (one
    /// that ended already was cleared), as driven by this isolate, and arms
    /// the heartbeat alarm. Its driver does this a flush interval into the
    /// run, not before the model call: a storage write holds everything the
    /// object sends (the output gate) until it is durable, about a
    /// millisecond here (scripts/bench-chat), and made before the call it
    /// held the call; made right after it, it held the first token.
    async fn store_claimed(&self) -> worker::Result<()> {
        let Some(run) = self.claimed.take() else {
            return Ok(());
        };
        self.save_active(&run)?;
        self.state.storage().set_alarm(HEARTBEAT_MS).await
    }

    /// The session was deleted (with its project or its user's account):
    /// its run is stopped, its readers and sockets are ended, and what the
    /// room stored (events, tickets, the run's record) is erased, now or,
    /// when this isolate drives the run, once that run has ended.
    async fn purge(&self) -> worker::Result<Response> {
        self.erase.set(true);
        self.lease.take();
        self.cancel_active()?;
        self.end_readers();
        for ws in self.state.get_websockets() {
            let _ = ws.close(Some(1000), Some("session deleted"));
        }
        self.sockets.take();
        if !self.driving.get() {
            self.erase_now().await?;
        }
        Ok(Response::empty()?.with_status(204))
    }

    async fn erase_now(&self) -> worker::Result<()> {
        self.claimed.take();
        self.tail.rows.borrow_mut().clear();
        self.tail.last_seq.set(None);
        let storage = self.state.storage();
        storage.delete_alarm().await?;
        storage.delete_all().await?;
        self.schema_made.set(false);
        Ok(())
    }

    fn request_cancel(&self) -> worker::Result<Response> {
        let active = self.cancel_active()?;
        json_response(200, &serde_json::json!({ "active": active }))
    }

    /// Asks the active run to stop: whether there is one.
    fn cancel_active(&self) -> worker::Result<bool> {
        if let Some(run) = self.claimed.borrow_mut().as_mut() {
            // Stored with the flag by `store_claimed`.
            run.cancel = true;
            self.cancel.set(true);
            return Ok(true);
        }
        Ok(match self.active()? {
            Some(mut run) => {
                run.cancel = true;
                self.save_active(&run)?;
                self.cancel.set(true);
                true
            }
            None => false,
        })
    }

    /// Replay and registration with no `.await` between: the reader misses
    /// nothing and sees nothing twice.
    fn events(&self, session: &str, after: i64, protocol: Protocol) -> worker::Result<Response> {
        let replay = self
            .log()
            .all_after(after)
            .map_err(worker::Error::RustError)?;
        let mut encoder = Encoder::new(protocol, session);
        if after > 0 {
            // A mid-run join: the encoder opens what is still open at `after`.
            encoder.prime(
                &self
                    .log()
                    .run_upto(after)
                    .map_err(worker::Error::RustError)?,
            );
        }
        let mut text: String = replay.iter().map(|e| encoder.encode(e)).collect();
        let mut builder = ResponseBuilder::new()
            .with_header("content-type", "text/event-stream; charset=utf-8")?
            .with_header("cache-control", "no-cache, no-transform")?;
        for (k, v) in protocol.headers() {
            builder = builder.with_header(k, v)?;
        }
        if self.active()?.is_none() {
            text.push_str(&encoder.end());
            return Ok(builder.fixed(text.into_bytes()));
        }
        // Live: the replay, then each event as `broadcast` writes it.
        let (pipe, body) = SsePipe::new().map_err(worker::Error::from)?;
        pipe.write(&text);
        self.readers.borrow_mut().push(Reader { pipe, encoder });
        Ok(builder.stream(body))
    }

    /// Ends every live SSE reader's stream.
    fn end_readers(&self) {
        for reader in self.readers.take() {
            reader.end();
        }
    }

    /// A member joins: refuse a ticket seen before, accept the socket, send
    /// it the events after its resume point, then presence to everyone. No
    /// `.await` from accepting to the end of the replay.
    fn join(&self, ticket_sha256: &str, member: Connection) -> worker::Result<Response> {
        let sql = self.sql();
        let now = now_ms();
        let seen = rows::<TextRow>(
            &sql,
            "SELECT hash AS v FROM tickets WHERE hash = ?",
            vec![ticket_sha256.into()],
        )?;
        if !seen.is_empty() {
            return problem(
                401,
                "invalid_ticket",
                "The WebSocket ticket is missing, expired or already used.",
            );
        }
        exec(
            &sql,
            "INSERT INTO tickets (hash, created_ms) VALUES (?, ?)",
            vec![ticket_sha256.into(), now.into()],
        )?;
        let replay = self
            .log()
            .all_after(member.seen)
            .map_err(worker::Error::RustError)?;
        let pair = WebSocketPair::new()?;
        self.state.accept_web_socket(&pair.server);
        self.sockets.replace(None);
        pair.server.serialize_attachment(&member)?;
        for ev in &replay {
            pair.server.send_with_str(event_message(ev))?;
        }
        self.send_presence(None);
        Response::from_websocket(pair.client)
    }

    /// Presence to every member but `leaving`.
    fn send_presence(&self, leaving: Option<&str>) {
        let sockets = self.state.get_websockets();
        let members: Vec<Presence> = sockets
            .iter()
            .filter_map(|ws| ws.deserialize_attachment::<Connection>().ok().flatten())
            .filter(|c| Some(c.connection_id.as_str()) != leaving)
            .map(Presence::from)
            .collect();
        let message = presence_message(&members);
        for ws in &sockets {
            let own = ws
                .deserialize_attachment::<Connection>()
                .ok()
                .flatten()
                .map(|c| c.connection_id);
            if own.is_some() && own.as_deref() == leaving {
                continue;
            }
            let _ = ws.send_with_str(&message);
        }
    }

    fn left(&self, ws: &WebSocket) {
        self.sockets.replace(None);
        let id = ws
            .deserialize_attachment::<Connection>()
            .ok()
            .flatten()
            .map(|c| c.connection_id);
        if let Some(id) = id {
            self.send_presence(Some(&id));
        }
    }

    /// Drives a stored run that no isolate drove yet (from the alarm: a run
    /// stored with no attempt, as an earlier version of `/start` did).
    async fn drive(&self, mut run: ActiveRun) -> worker::Result<()> {
        run.attempts += 1;
        self.save_active(&run)?;
        self.state.storage().set_alarm(HEARTBEAT_MS).await?;
        self.drive_claimed(run).await
    }

    /// Drives the active run to its end, once it is stored as driven by
    /// this isolate and the heartbeat alarm is armed.
    async fn drive_claimed(&self, run: ActiveRun) -> worker::Result<()> {
        self.driving.set(true);
        let _driving = Driving(self);
        self.cancel.set(run.cancel);
        // The run came before its start's commit was answered: its
        // statements wait for that commit (`db::AFTER_RUN_START`).
        let ports = crate::gated_ports(
            &self.env,
            Some((db::AFTER_RUN_START, vec![run.spec.owner_id.as_str().into()])),
        );
        let log = self.log();
        let sink = RoomSink {
            log: &log,
            fanout: self,
            cancel: &self.cancel,
        };
        log_run("info", "room_run_started", &run.spec);
        // Events a paused run appended reach storage within FLUSH_MS.
        // It also keeps the SSE readers' connections from looking idle
        // during a long tool call: a comment every KEEP_ALIVE_MS.
        let ticker = async {
            let mut ticks = 0u64;
            let mut stored = false;
            loop {
                crate::clock::sleep(FLUSH_MS as u64).await;
                if !stored {
                    stored = true;
                    // The run's record, with the first flush: see `store_claimed`.
                    if let Err(e) = self.store_claimed().await {
                        worker::console_error!("room: storing the run: {e}");
                    }
                }
                if let Err(e) = log.flush() {
                    worker::console_error!("room flush: {e}");
                }
                ticks += 1;
                if ticks * FLUSH_MS as u64 >= KEEP_ALIVE_MS {
                    ticks = 0;
                    self.readers
                        .borrow_mut()
                        .retain(|r| r.pipe.write(KEEP_ALIVE));
                }
            }
        };
        // With the run's reads preloaded the model is called first; the
        // Postgres connection the run ends with opens once the model has
        // begun to answer (opening it sooner slows the call it waits on:
        // both run on this one thread), and passes the gate then.
        self.answered.set(false);
        let warm = ports.sql.clone();
        let preloaded = run.spec.preload.is_some();
        let driven = async {
            let warm = async {
                futures_util::future::poll_fn(|cx| {
                    if self.answered.get() {
                        return std::task::Poll::Ready(());
                    }
                    *self.answered_waker.borrow_mut() = Some(cx.waker().clone());
                    std::task::Poll::Pending
                })
                .await;
                if preloaded {
                    let _ = warm.query_opt("SELECT 1", &[]).await;
                }
            };
            futures_util::pin_mut!(warm);
            let run_it = agent::run(&ports, &run.spec, &sink);
            futures_util::pin_mut!(run_it);
            match futures_util::future::select(run_it, warm).await {
                futures_util::future::Either::Left((outcome, _)) => outcome,
                futures_util::future::Either::Right(((), run_it)) => run_it.await,
            }
        };
        futures_util::pin_mut!(ticker, driven);
        let outcome = match futures_util::future::select(driven, ticker).await {
            futures_util::future::Either::Left((outcome, _)) => outcome,
            futures_util::future::Either::Right(((), driven)) => driven.await,
        };
        // `run` emitted run_finished just now, without yielding since.
        self.clear_active()?;
        self.end_readers();
        drop(_driving);
        // The run persists its own answer; should that have failed, the
        // session must not stay blocked by a run Postgres thinks is running.
        let sql = ports.sql.as_ref();
        if let Ok(Some(status)) = db::run_status(sql, &run.spec.run_id).await {
            if status == "running" {
                if let Err(e) = db::finish_run(
                    sql,
                    &run.spec.run_id,
                    outcome.status,
                    Some("persist_failed"),
                )
                .await
                {
                    worker::console_error!("room: finishing run {}: {e}", run.spec.run_id);
                }
            }
        }
        let last_seq = log.last_seq();
        let ((), lease) = futures_util::future::join(
            record_last_seq(&ports, &run.spec.session_id, last_seq),
            everjust_core::chat::early::renew(&ports, &run.spec),
        )
        .await;
        // The next message's lease, unless another run began meanwhile
        // (its history would be this run's) or the session is gone.
        let idle = self.claimed.borrow().is_none() && matches!(self.active(), Ok(None));
        if idle && !self.erase.get() && log.last_seq() == last_seq {
            *self.lease.borrow_mut() = lease;
        }
        let armed = if self.erase.get() {
            self.erase_now().await
        } else {
            self.arm_clean_up().await
        };
        // Last: the session takes its next message while the run's files
        // are committed (a commit that fails is owed; the cron retries it).
        agent::after_run(&ports, &run.spec, &outcome).await;
        armed
    }

    /// A run whose driver died: persist what it said as an incomplete
    /// answer, end it in Postgres and in the buffer.
    async fn abandon(&self, run: ActiveRun) -> worker::Result<()> {
        let spec = &run.spec;
        let log = self.log();
        let events: Vec<Event> = log
            .all_after(spec.first_seq)
            .map_err(worker::Error::RustError)?
            .into_iter()
            .filter(|e| e.run_id == spec.run_id)
            .collect();
        if events.iter().any(|e| e.body.is_terminal()) {
            // It did finish; only the bookkeeping was lost.
            self.clear_active()?;
            return self.arm_clean_up().await;
        }
        log_run("warn", "room_run_lost", spec);
        let ports = self.ports();
        if let Err(e) = persist_incomplete(&ports, spec, &events).await {
            worker::console_error!("room: marking lost run {} incomplete: {e}", spec.run_id);
            return self.state.storage().set_alarm(RETRY_MS).await;
        }
        // Numbered past what its readers may have seen of it unwritten (the
        // isolate died with them): see `lost_run_end`.
        let end = lost_run_end(&spec.run_id, log.last_seq());
        let json = event_message(&end);
        let ended = log
            .append(&end, &json)
            .map(|()| self.broadcast(&end, &json));
        if let Err(e) = ended {
            worker::console_error!("room: ending lost run {}: {e}", spec.run_id);
        }
        self.clear_active()?;
        self.end_readers();
        record_last_seq(&ports, &spec.session_id, log.last_seq()).await;
        self.arm_clean_up().await
    }

    /// Drops events older than a day (keeping the newest, which holds the
    /// sequence number) and old ticket hashes; re-arms for the next ones.
    async fn clean_up(&self) -> worker::Result<()> {
        let sql = self.sql();
        let now = now_ms();
        exec(
            &sql,
            "DELETE FROM events WHERE created_ms < ? AND seq < (SELECT MAX(seq) FROM events)",
            vec![(now - KEEP_EVENTS_MS).into()],
        )?;
        exec(
            &sql,
            "DELETE FROM tickets WHERE created_ms < ?",
            vec![(now - KEEP_TICKETS_MS).into()],
        )?;
        self.arm_clean_up().await
    }

    /// The alarm for the next clean-up, if anything is left to clean.
    async fn arm_clean_up(&self) -> worker::Result<()> {
        let sql = self.sql();
        let oldest = |query: &str| -> worker::Result<Option<i64>> {
            Ok(rows::<IntRow>(&sql, query, vec![])?
                .first()
                .and_then(|r| r.n)
                .map(|n| n as i64))
        };
        let events = oldest(
            "SELECT MIN(created_ms) AS n FROM events WHERE seq < (SELECT MAX(seq) FROM events)",
        )?
        .map(|t| t + KEEP_EVENTS_MS);
        let tickets =
            oldest("SELECT MIN(created_ms) AS n FROM tickets")?.map(|t| t + KEEP_TICKETS_MS);
        let storage = self.state.storage();
        match events.into_iter().chain(tickets).min() {
            Some(at) => storage.set_alarm((at - now_ms()).max(0) + 1000).await,
            None => storage.delete_alarm().await,
        }
    }
}

/// Tells Postgres the room's sequence number after a run, so that the
/// session's `last_seq` (where clients resume from) is not left at 0.
///
/// Workaround in the adapter: the core updates `sessions.last_seq` only in
/// `db::chat::append_events` (the inline log); the wanted core change is a
/// `db::chat` function for it, called by the room.
async fn record_last_seq(ports: &Ports, session_id: &str, seq: i64) {
    let updated = ports
        .sql
        .execute(
            "UPDATE sessions SET last_seq = GREATEST(last_seq, $2), updated_at = now() WHERE id = $1",
            &[session_id.into(), everjust_core::ports::sql::Value::Int(seq)],
        )
        .await;
    if let Err(e) = updated {
        worker::console_error!("room: recording last_seq of {session_id}: {e}");
    }
}

/// The partial answer of a lost run, as an incomplete assistant message,
/// and the run ended in Postgres. Safe to repeat.
async fn persist_incomplete(
    ports: &Ports,
    spec: &RunSpec,
    events: &[Event],
) -> Result<(), SqlError> {
    let sql = ports.sql.as_ref();
    let blocks = blocks_from_events(events);
    let inserted = db::insert_message(
        sql,
        &spec.assistant_message_id,
        &spec.session_id,
        &spec.owner_id,
        Some(&spec.run_id),
        "assistant",
        &serde_json::to_value(&blocks).unwrap_or_default(),
        "incomplete",
        Some(&spec.model),
        &Usage::default(),
        0,
    )
    .await;
    match inserted {
        // Inserted by an earlier attempt (or by the run itself).
        Ok(()) | Err(SqlError::Unique(_)) => {}
        Err(e) => return Err(e),
    }
    db::finish_run(sql, &spec.run_id, "incomplete", Some("driver_lost")).await
}

impl Fanout for Room {
    fn broadcast(&self, ev: &Event, json: &str) {
        if !self.answered.get()
            && !matches!(
                ev.body,
                EventBody::RunStarted { .. } | EventBody::StepStarted { .. }
            )
        {
            self.answered.set(true);
            if let Some(waker) = self.answered_waker.borrow_mut().take() {
                waker.wake();
            }
        }
        self.send_all(json);
        // The first delta of a block is a first token: it is not held back
        // for more to join it.
        let first_token = match ev.body {
            EventBody::TextStart { .. } | EventBody::ToolCallStart { .. } => {
                self.fresh_block.set(true);
                false
            }
            EventBody::TextDelta { .. } | EventBody::ToolCallDelta { .. } => {
                self.fresh_block.replace(false)
            }
            _ => false,
        };
        self.readers.borrow_mut().retain_mut(|r| {
            let text = r.encoder.encode_json(ev, json);
            if first_token {
                r.pipe.write_now(&text)
            } else {
                r.pipe.write(&text)
            }
        });
        if ev.body.is_terminal() {
            self.end_readers();
        }
    }
}

/// The rooms of an API request answered in a room: this one, for the
/// session it was asked for (the core asks for no other when sending a
/// message; another session's room is refused, never this one's served).
struct HereRooms {
    room: Rc<Room>,
    session_id: String,
}

impl HereRooms {
    fn here(&self, session_id: &str) -> Result<&Rc<Room>, RoomError> {
        if session_id == self.session_id {
            Ok(&self.room)
        } else {
            Err(RoomError::Failed(format!(
                "the room of {} was asked for {session_id}",
                self.session_id
            )))
        }
    }
}

#[async_trait::async_trait(?Send)]
impl Rooms for HereRooms {
    async fn start(
        &self,
        spec: &RunSpec,
        stream: Option<Protocol>,
    ) -> Result<(i64, Option<Body>), RoomError> {
        let failed = |e: worker::Error| RoomError::Failed(format!("start: {e}"));
        match Room::begin(self.here(&spec.session_id)?, spec.clone(), stream)
            .await
            .map_err(failed)?
        {
            Ok((last_seq, events)) => Ok((
                last_seq,
                events.as_ref().map(crate::convert::PassThrough::body_of),
            )),
            Err(refused) if refused.status_code() == 409 => Err(RoomError::Busy),
            Err(refused) => Err(RoomError::Failed(format!(
                "start: refused with {}",
                refused.status_code()
            ))),
        }
    }

    async fn events(
        &self,
        session_id: &str,
        after: i64,
        protocol: Protocol,
    ) -> Result<Body, RoomError> {
        self.here(session_id)?
            .events(session_id, after, protocol)
            .map(|res| crate::convert::PassThrough::body_of(&res))
            .map_err(|e| RoomError::Failed(format!("events: {e}")))
    }

    fn take_lease(&self, session_id: &str, owner_id: &str) -> Option<Lease> {
        let room = self.here(session_id).ok()?;
        let mut held = room.lease.borrow_mut();
        // Another caller's message leaves the owner's lease in place.
        if held.as_ref()?.owner_id != owner_id {
            return None;
        }
        held.take()
            .filter(|l| now_ms() - l.granted_ms < everjust_core::chat::early::LEASE_MS)
    }

    async fn cancel(&self, session_id: &str) -> Result<bool, RoomError> {
        self.here(session_id)?
            .cancel_active()
            .map_err(|e| RoomError::Failed(format!("cancel: {e}")))
    }

    async fn websocket(
        &self,
        _session_id: &str,
        _member: &Member,
        _after: Option<i64>,
    ) -> Result<http::Response<Body>, RoomError> {
        Err(RoomError::Failed(
            "websocket: upgrades are not forwarded to rooms".into(),
        ))
    }
}

/// Work after an API answer given here: the object lives on while it runs.
struct Spawned;

impl everjust_core::ports::background::Background for Spawned {
    fn spawn(&self, work: futures_util::future::LocalBoxFuture<'static, ()>) {
        wasm_bindgen_futures::spawn_local(work);
    }
}
