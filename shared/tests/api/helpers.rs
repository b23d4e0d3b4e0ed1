//! `TestApp`: one app with its own fresh database per test. Databases of
//! finished test processes are dropped when the next process starts.

use std::rc::Rc;
use std::sync::atomic::{AtomicU32, Ordering};

use bytes::Bytes;
use everjust_core::db::migrate::{apply, MIGRATIONS};
use everjust_core::ports::memory::{ManualClock, MemoryKv, SeededCrypto};
use everjust_core::ports::postgres::PgSql;
use everjust_core::ports::{HttpClient, Ports};
use everjust_core::{Body, Config, Meta};
use serde_json::Value;
use tokio::sync::OnceCell;

pub const PASSWORD: &str = "correct horse battery";

fn base_url() -> String {
    std::env::var("TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

fn url_for(db: &str) -> String {
    let base = base_url();
    let (head, _) = base
        .rsplit_once('/')
        .expect("TEST_DATABASE_URL has a database");
    format!("{head}/{db}")
}

async fn connect(url: &str) -> tokio_postgres::Client {
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap_or_else(|e| panic!("cannot connect to {url}: {e}; set TEST_DATABASE_URL"));
    tokio::spawn(async move {
        let _ = conn.await;
    });
    client
}

static TEMPLATE: OnceCell<String> = OnceCell::const_new();
static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A migrated template database, made once per test process.
async fn template() -> &'static str {
    TEMPLATE
        .get_or_init(|| async {
            let name = format!("ejt_tmpl_{}", std::process::id());
            let admin = connect(&base_url()).await;
            // Databases left by earlier test processes that have ended.
            let stale = admin
                .query(
                    "SELECT datname FROM pg_database WHERE datname LIKE 'ejt\\_%'",
                    &[],
                )
                .await
                .expect("list dbs");
            for row in stale {
                let db: String = row.get(0);
                let pid = db.split('_').find_map(|p| p.parse::<u32>().ok());
                if pid.is_some_and(|p| !std::path::Path::new(&format!("/proc/{p}")).exists()) {
                    let _ = admin
                        .batch_execute(&format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)"))
                        .await;
                }
            }
            admin
                .batch_execute(&format!("DROP DATABASE IF EXISTS {name}"))
                .await
                .expect("drop template");
            admin
                .batch_execute(&format!("CREATE DATABASE {name}"))
                .await
                .expect("create template");
            // A short-lived runtime-independent connection: it must be closed before the template is copied.
            let (client, conn) = tokio_postgres::connect(&url_for(&name), tokio_postgres::NoTls)
                .await
                .expect("connect template");
            let handle = std::thread::spawn(move || {
                tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("rt")
                    .block_on(async move {
                        let _ = conn.await;
                    })
            });
            let applied = apply(&PgSql::new(client), MIGRATIONS)
                .await
                .expect("migrations apply");
            assert_eq!(applied.len(), MIGRATIONS.len());
            handle.join().expect("template connection closed");
            name
        })
        .await
}

pub struct TestApp {
    pub ports: Ports,
    pub clock: Rc<ManualClock>,
    pub db: String,
    pub ip: String,
}

pub struct Res {
    pub status: u16,
    pub headers: http::HeaderMap,
    pub body: Bytes,
}

impl Res {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }
    /// Asserts a problem+json with `status` and `code`, and returns it.
    #[track_caller]
    pub fn problem(&self, status: u16, code: &str) -> Value {
        let j = self.json();
        assert_eq!(
            (self.status, j["code"].as_str()),
            (status, Some(code)),
            "body: {j}"
        );
        assert_eq!(self.headers["content-type"], "application/problem+json");
        for k in ["type", "title", "status", "detail", "request_id"] {
            assert!(!j[k].is_null(), "problem lacks {k}: {j}");
        }
        j
    }
}

/// Outbound HTTP answered from a script of canned provider responses, each
/// body cut into small chunks at odd places as a network would. Records the
/// requests it saw. (The end-to-end suite runs the same code against fakes
/// over real TCP.)
/// A canned response: status, headers, body.
pub type Canned = (u16, Vec<(String, String)>, String);

#[derive(Default)]
pub struct ScriptedHttp {
    pub responses: std::cell::RefCell<std::collections::VecDeque<Canned>>,
    pub requests: std::cell::RefCell<Vec<(String, serde_json::Value)>>,
    /// The `x-api-key` each request sent (Anthropic's key header).
    pub api_keys: std::cell::RefCell<Vec<Option<String>>>,
}

impl ScriptedHttp {
    pub fn push(&self, status: u16, headers: &[(&str, &str)], body: impl Into<String>) {
        let headers = headers
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        self.responses
            .borrow_mut()
            .push_back((status, headers, body.into()));
    }
}

#[async_trait::async_trait(?Send)]
impl HttpClient for ScriptedHttp {
    async fn send(
        &self,
        req: http::Request<Bytes>,
    ) -> Result<http::Response<Bytes>, everjust_core::ports::http_client::HttpError> {
        let uri = req.uri().to_string();
        self.api_keys.borrow_mut().push(
            req.headers()
                .get("x-api-key")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned),
        );
        self.requests
            .borrow_mut()
            .push((uri, serde_json::from_slice(req.body()).unwrap_or_default()));
        let (status, headers, body) = self.responses.borrow_mut().pop_front().ok_or_else(|| {
            everjust_core::ports::http_client::HttpError(
                "connection refused: script exhausted".into(),
            )
        })?;
        let mut b = http::Response::builder().status(status);
        for (k, v) in headers {
            b = b.header(k, v);
        }
        Ok(b.body(Bytes::from(body)).expect("response"))
    }

    async fn send_streaming(
        &self,
        req: http::Request<Bytes>,
    ) -> Result<
        everjust_core::ports::http_client::StreamingResponse,
        everjust_core::ports::http_client::HttpError,
    > {
        use futures_util::StreamExt;
        let res = self.send(req).await?;
        let (parts, mut body) = res.into_parts();
        // A body ending in "!HANG" stalls there, the connection kept open.
        let hang = body.ends_with(b"!HANG");
        if hang {
            body.truncate(body.len() - 5);
        }
        // Odd chunk sizes so events and UTF-8 sequences are split.
        let mut chunks = Vec::new();
        let mut i = 0;
        let mut size = 7;
        while i < body.len() {
            let end = (i + size).min(body.len());
            chunks.push(Ok(body.slice(i..end)));
            i = end;
            size = size % 13 + 3;
        }
        // A body ending in "!CUT" simulates a connection dropped mid-stream.
        if body.ends_with(b"!CUT") {
            chunks.pop();
            chunks.push(Err(everjust_core::ports::http_client::HttpError(
                "connection reset".into(),
            )));
        }
        Ok(everjust_core::ports::http_client::StreamingResponse {
            status: parts.status,
            headers: parts.headers,
            body: if hang {
                futures_util::stream::iter(chunks)
                    .chain(futures_util::stream::pending())
                    .boxed_local()
            } else {
                futures_util::stream::iter(chunks).boxed_local()
            },
        })
    }
}

/// A room that holds no run (its cancel finds none) and keeps each run spec
/// it is handed, as JSON: what a Durable Object room receives.
#[derive(Default)]
pub struct SpecRoom(
    pub std::cell::RefCell<Vec<String>>,
    /// The sessions whose rooms were purged, in order.
    pub std::cell::RefCell<Vec<String>>,
);

impl SpecRoom {
    /// The last spec handed over: as it crossed (JSON), and as the room reads it.
    pub fn last(&self) -> (String, everjust_core::chat::agent::RunSpec) {
        let wire = self.0.borrow().last().cloned().expect("a run was started");
        let spec = serde_json::from_str(&wire).expect("the room reads the spec");
        (wire, spec)
    }
}

#[async_trait::async_trait(?Send)]
impl everjust_core::ports::rooms::Rooms for SpecRoom {
    async fn start(
        &self,
        spec: &everjust_core::chat::agent::RunSpec,
        _stream: Option<everjust_core::chat::encode::Protocol>,
    ) -> Result<(i64, Option<everjust_core::Body>), everjust_core::ports::rooms::RoomError> {
        self.0
            .borrow_mut()
            .push(serde_json::to_string(spec).expect("a spec serializes"));
        Ok((spec.first_seq, None))
    }
    async fn events(
        &self,
        _session_id: &str,
        _after: i64,
        _protocol: everjust_core::chat::encode::Protocol,
    ) -> Result<everjust_core::Body, everjust_core::ports::rooms::RoomError> {
        Err(everjust_core::ports::rooms::RoomError::Failed(
            "not in this test".into(),
        ))
    }
    async fn cancel(
        &self,
        _session_id: &str,
    ) -> Result<bool, everjust_core::ports::rooms::RoomError> {
        Ok(false)
    }
    async fn purge(&self, session_id: &str) -> Result<(), everjust_core::ports::rooms::RoomError> {
        self.1.borrow_mut().push(session_id.to_owned());
        Ok(())
    }
    async fn websocket(
        &self,
        _session_id: &str,
        _member: &everjust_core::ports::rooms::Member,
        _after: Option<i64>,
    ) -> Result<http::Response<everjust_core::Body>, everjust_core::ports::rooms::RoomError> {
        Err(everjust_core::ports::rooms::RoomError::Failed(
            "not in this test".into(),
        ))
    }
}

pub struct NoHttp;

#[async_trait::async_trait(?Send)]
impl HttpClient for NoHttp {
    async fn send(
        &self,
        _req: http::Request<Bytes>,
    ) -> Result<http::Response<Bytes>, everjust_core::ports::http_client::HttpError> {
        Err(everjust_core::ports::http_client::HttpError(
            "no outbound HTTP in these tests".into(),
        ))
    }
}

impl TestApp {
    pub async fn new() -> TestApp {
        Self::with_vars(&[]).await
    }

    pub async fn with_vars(vars: &[(&str, &str)]) -> TestApp {
        Self::build(vars, Rc::new(NoHttp)).await
    }

    pub async fn build(vars: &[(&str, &str)], http: Rc<dyn HttpClient>) -> TestApp {
        let tmpl = template().await;
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let db = format!("ejt_{}_{n}", std::process::id());
        let admin = connect(&base_url()).await;
        admin
            .batch_execute(&format!("CREATE DATABASE {db} TEMPLATE {tmpl}"))
            .await
            .expect("create test db");
        let client = connect(&url_for(&db)).await;
        let clock = Rc::new(ManualClock::new(1_780_000_000_000));
        let owned: Vec<(String, String)> = vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        let config = Config::from_vars(|name| {
            owned
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.clone())
                .or_else(|| match name {
                    "JWT_SECRET" => Some("test-secret-test-secret-test-secret-0123".into()),
                    "PASSWORD_ITERATIONS" => Some("1000".into()),
                    "EVERJUST_ENV" => Some("test".into()),
                    _ => None,
                })
        });
        let ports = Ports {
            sql: Rc::new(PgSql::new(client)),
            kv: Rc::new(MemoryKv::new(clock.clone())),
            http,
            clock: clock.clone(),
            crypto: Rc::new(SeededCrypto::new(u64::from(n) + 1)),
            rooms: None,
            limiter: None,
            background: None,
            config: Rc::new(config),
        };
        TestApp {
            ports,
            clock,
            db,
            ip: "203.0.113.7".into(),
        }
    }

    /// The same app (database, clock, KV, outbound HTTP) on a Postgres
    /// connection of its own, for requests that must really run side by
    /// side: on one connection their transactions would share one session.
    pub async fn on_own_connection(&self) -> TestApp {
        let mut ports = self.ports.clone();
        ports.sql = Rc::new(PgSql::new(connect(&url_for(&self.db)).await));
        TestApp {
            ports,
            clock: self.clock.clone(),
            db: self.db.clone(),
            ip: self.ip.clone(),
        }
    }

    /// Puts the app on a Postgres connection of its own that names the
    /// statements it is asked to prepare, as the Worker's session room
    /// keeps one between messages; returns it.
    pub async fn on_naming_connection(&mut self) -> Rc<PgSql> {
        let pg = Rc::new(PgSql::naming(connect(&url_for(&self.db)).await));
        self.ports.sql = pg.clone();
        pg
    }

    pub async fn request(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        content_type: Option<&str>,
        body: impl Into<Bytes>,
    ) -> Res {
        let mut b = http::Request::builder().method(method).uri(path);
        if let Some(t) = token {
            b = b.header("authorization", format!("Bearer {t}"));
        }
        if let Some(ct) = content_type {
            b = b.header("content-type", ct);
        }
        let req = b.body(body.into()).expect("request");
        let res = everjust_core::handle(
            &self.ports,
            req,
            Meta {
                client_ip: Some(self.ip.clone()),
            },
        )
        .await;
        let (parts, body) = res.into_parts();
        let body = match body {
            Body::Full(b) => b,
            Body::Stream(s) => {
                use futures_util::StreamExt;
                let chunks: Vec<Bytes> = s.collect().await;
                Bytes::from(chunks.concat())
            }
            Body::Native(_) => panic!("no native bodies without a platform"),
        };
        Res {
            status: parts.status.as_u16(),
            headers: parts.headers,
            body,
        }
    }

    pub async fn get(&self, path: &str, token: Option<&str>) -> Res {
        self.request("GET", path, token, None, Bytes::new()).await
    }

    pub async fn json(&self, method: &str, path: &str, token: Option<&str>, body: Value) -> Res {
        self.request(
            method,
            path,
            token,
            Some("application/json"),
            body.to_string(),
        )
        .await
    }

    /// Signs up a new user; returns (access token, refresh token, user id).
    pub async fn signup(&self, email: &str) -> (String, String, String) {
        let r = self
            .json(
                "POST",
                "/v1/auth/signup",
                None,
                serde_json::json!({"email": email, "password": PASSWORD}),
            )
            .await;
        assert_eq!(r.status, 201, "{}", r.json());
        let j = r.json();
        (
            j["access_token"].as_str().expect("access").to_owned(),
            j["refresh_token"].as_str().expect("refresh").to_owned(),
            j["user"]["id"].as_str().expect("id").to_owned(),
        )
    }

    /// Starts a chat session in `project`; returns its id.
    /// Sends a message to a session, not streamed: 202 (without rooms, once
    /// the run has ended).
    pub async fn send_message(&self, token: &str, session: &str, content: &str) -> Res {
        self.json(
            "POST",
            &format!("/v1/sessions/{session}/messages"),
            Some(token),
            serde_json::json!({ "content": content }),
        )
        .await
    }

    pub async fn session(&self, token: &str, project: &str) -> String {
        let r = self
            .json(
                "POST",
                &format!("/v1/projects/{project}/sessions"),
                Some(token),
                serde_json::json!({}),
            )
            .await;
        assert_eq!(r.status, 201, "{}", r.json());
        r.json()["id"].as_str().expect("session id").to_owned()
    }

    pub async fn project(&self, token: &str, name: &str) -> String {
        let r = self
            .json(
                "POST",
                "/v1/projects",
                Some(token),
                serde_json::json!({"name": name}),
            )
            .await;
        assert_eq!(r.status, 201, "{}", r.json());
        r.json()["id"].as_str().expect("id").to_owned()
    }

    /// Moves a user to another tier straight in the database.
    pub async fn set_tier(&self, user_id: &str, tier: &str) {
        self.ports
            .sql
            .execute(
                "UPDATE users SET tier = $2 WHERE id = $1",
                &[user_id.into(), tier.into()],
            )
            .await
            .expect("set tier");
    }

    /// Counts rows of `table` straight from the database.
    pub async fn count(&self, table: &str) -> i64 {
        let rows = self
            .ports
            .sql
            .query(&format!("SELECT count(*)::int8 AS n FROM {table}"), &[])
            .await
            .expect("count");
        rows[0].int("n").expect("n")
    }
}
