//! Sandboxes in-process: the real Daytona client against an in-memory fake
//! of Daytona's REST and toolbox APIs (state transitions, files, a tiny
//! shell), the lifecycle with file sync by hash, exec limits, error
//! replacement, outages, the idle job and its query, Svix webhooks, and
//! the agent's `run_command`.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;

use base64::Engine;
use bytes::Bytes;
use everjust_core::ports::http_client::HttpError;
use everjust_core::ports::sql::Value as SqlValue;
use everjust_core::ports::{Clock, HttpClient};
use everjust_core::sandbox::provider::State;
use everjust_core::sandbox::{store, webhook};
use serde_json::{json, Value};

use crate::helpers::{Res, ScriptedHttp, TestApp, PASSWORD};

const SECRET: &str = "whsec_c2FuZGJveC13ZWJob29rLXRlc3Qtc2VjcmV0";
const JOBS: &str = "jobs-secret-for-tests";
const DIR: &str = "/home/daytona/project";

fn vars() -> Vec<(&'static str, &'static str)> {
    vec![
        ("DAYTONA_API_URL", "http://daytona.test/api"),
        ("DAYTONA_API_KEY", "dtn_test"),
        ("DAYTONA_WEBHOOK_SECRET", SECRET),
        ("JOBS_SECRET", JOBS),
        ("ANTHROPIC_API_KEY", "sk-test"),
        ("ANTHROPIC_BASE_URL", "http://model.test"),
        ("ANTHROPIC_MODEL", "claude-sonnet-4-5"),
    ]
}

// ------------------------------------------------------------------ the fake

#[derive(Debug, Clone)]
struct Sb {
    id: String,
    name: String,
    state: String,
    labels: Value,
    /// (target state, GETs until it gets there)
    pending: Option<(String, u32)>,
    files: BTreeMap<String, Vec<u8>>,
    last_activity: Option<String>,
    auto_stop: i64,
    /// The snapshot it was made from (`None`: built from `image`, or Daytona's default).
    snapshot: Option<String>,
    /// The image of its build (`FROM <image>`), when it was built on create.
    image: Option<String>,
    /// (cpu, memory GiB, disk GiB) as asked on create; `None`: the snapshot's.
    resources: Option<(i64, i64, i64)>,
}

#[derive(Default)]
struct FakeState {
    sandboxes: BTreeMap<String, Sb>,
    next: u32,
    /// Answer the next N requests with 503.
    fail_next: u32,
    /// Answer every request with 503 until cleared.
    down: bool,
    log: Vec<String>,
    uploaded_files: usize,
    keepalives: usize,
    /// Process sessions by (sandbox, session id): their commands by id.
    sessions: BTreeMap<(String, String), BTreeMap<String, SessionCmd>>,
    next_cmd: u32,
}

/// A command run in a session: its output lines and its exit, each at a
/// time after its start (by the test clock).
#[derive(Debug, Clone)]
struct SessionCmd {
    started_ms: i64,
    lines: Vec<(i64, String)>,
    exit: (i64, i64),
}

impl SessionCmd {
    fn log(&self, now: i64) -> String {
        self.lines
            .iter()
            .filter(|(at, _)| now - self.started_ms >= *at)
            .map(|(_, l)| l.as_str())
            .collect()
    }
    fn exit_code(&self, now: i64) -> Option<i64> {
        (now - self.started_ms >= self.exit.0).then_some(self.exit.1)
    }
}

#[derive(Default)]
struct FakeDaytona {
    s: RefCell<FakeState>,
    /// The app's clock (commands in sessions take time by it).
    clock: RefCell<Option<Rc<everjust_core::ports::memory::ManualClock>>>,
}

fn sandbox_json(sb: &Sb) -> Value {
    let (cpu, memory, disk) = sb.resources.unwrap_or((1, 1, 3));
    json!({
        "id": sb.id, "name": sb.name, "organizationId": "org_test", "state": sb.state, "labels": sb.labels,
        "snapshot": sb.snapshot,
        "cpu": cpu, "gpu": 0, "memory": memory, "disk": disk, "env": {}, "public": false, "networkBlockAll": false,
        "target": "us", "user": "daytona", "autoStopInterval": sb.auto_stop,
        "toolboxProxyUrl": "http://daytona.test/toolbox",
        "lastActivityAt": sb.last_activity, "updatedAt": "2026-05-28T20:00:00.000Z",
    })
}

fn reply(status: u16, body: Value) -> http::Response<Bytes> {
    http::Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Bytes::from(body.to_string()))
        .expect("response")
}

fn query(uri: &http::Uri, name: &str) -> Option<String> {
    uri.query()?.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=')?;
        (k == name).then(|| {
            percent_encoding::percent_decode_str(v)
                .decode_utf8_lossy()
                .into_owned()
        })
    })
}

/// Splits a multipart body into (name, content) parts.
fn multipart(content_type: &str, body: &[u8]) -> Vec<(String, Vec<u8>)> {
    let boundary = format!(
        "--{}",
        content_type.split("boundary=").nth(1).expect("boundary")
    );
    let b = boundary.as_bytes();
    let mut parts = Vec::new();
    let mut positions = Vec::new();
    let mut i = 0;
    while i + b.len() <= body.len() {
        if &body[i..i + b.len()] == b {
            positions.push(i);
            i += b.len();
        } else {
            i += 1;
        }
    }
    for w in positions.windows(2) {
        let part = &body[w[0] + b.len() + 2..w[1] - 2];
        let split = part
            .windows(4)
            .position(|x| x == b"\r\n\r\n")
            .expect("part headers");
        let head = String::from_utf8_lossy(&part[..split]);
        let name = head
            .split("name=\"")
            .nth(1)
            .and_then(|r| r.split('"').next())
            .expect("name")
            .to_owned();
        parts.push((name, part[split + 4..].to_vec()));
    }
    parts
}

impl FakeDaytona {
    fn only(&self) -> Sb {
        let s = self.s.borrow();
        assert_eq!(s.sandboxes.len(), 1, "sandboxes: {:?}", s.sandboxes.keys());
        s.sandboxes.values().next().cloned().expect("one sandbox")
    }
    fn set_state(&self, id: &str, state: &str) {
        let mut s = self.s.borrow_mut();
        let sb = s.sandboxes.get_mut(id).expect("sandbox");
        sb.state = state.into();
        sb.pending = None;
    }
    fn count(&self, what: &str) -> usize {
        self.s
            .borrow()
            .log
            .iter()
            .filter(|l| l.contains(what))
            .count()
    }

    fn handle(&self, req: &http::Request<Bytes>) -> http::Response<Bytes> {
        let now = self.clock.borrow().as_ref().map_or(0, |c| c.now_ms());
        let mut s = self.s.borrow_mut();
        let path = req.uri().path().to_owned();
        s.log.push(format!("{} {}", req.method(), path));
        if s.down || s.fail_next > 0 {
            s.fail_next = s.fail_next.saturating_sub(1);
            return reply(
                503,
                json!({"statusCode": 503, "message": "Service Unavailable"}),
            );
        }
        assert_eq!(
            req.headers()["authorization"],
            "Bearer dtn_test",
            "every call carries the API key"
        );
        let seg: Vec<&str> = path.trim_start_matches('/').split('/').collect();
        let method = req.method().as_str();
        match (method, seg.as_slice()) {
            ("POST", ["api", "sandbox"]) => {
                let body: Value = serde_json::from_slice(req.body()).expect("json");
                let name = body["name"].as_str().unwrap_or("").to_owned();
                // As Daytona checks a create: a build has no snapshot; a snapshot (named or the
                // default one) fixes the size, so resources with it are refused.
                let sized = ["cpu", "gpu", "memory", "disk"]
                    .iter()
                    .any(|k| body.get(*k).is_some_and(|v| !v.is_null() && v != 0));
                let image = body["buildInfo"]["dockerfileContent"]
                    .as_str()
                    .map(|d| d.trim().trim_start_matches("FROM ").to_owned());
                let snapshot = body["snapshot"].as_str().map(str::to_owned);
                let bad = |msg: &str| reply(400, json!({"statusCode": 400, "message": msg}));
                if image.is_some() && snapshot.is_some() {
                    return bad("Cannot specify a snapshot when using a build info entry");
                }
                if image.is_none() && sized {
                    return bad("Cannot specify Sandbox resources when using a snapshot");
                }
                let resources = image.as_ref().map(|_| {
                    let n = |k: &str, d: i64| body[k].as_i64().unwrap_or(d);
                    (n("cpu", 1), n("memory", 1), n("disk", 3))
                });
                if s.sandboxes.values().any(|x| x.name == name) {
                    return reply(409, json!({"statusCode": 409, "message": "name taken"}));
                }
                s.next += 1;
                let id = format!("sb{}", s.next);
                let sb = Sb {
                    id: id.clone(),
                    name,
                    state: "creating".into(),
                    labels: body["labels"].clone(),
                    pending: Some(("started".into(), 1)),
                    files: BTreeMap::new(),
                    last_activity: None,
                    auto_stop: body["autoStopInterval"].as_i64().unwrap_or(15),
                    snapshot,
                    image,
                    resources,
                };
                let out = sandbox_json(&sb);
                s.sandboxes.insert(id, sb);
                reply(200, out)
            }
            ("GET", ["api", "sandbox"]) => {
                let want: Value =
                    serde_json::from_str(&query(req.uri(), "labels").unwrap_or("{}".into()))
                        .expect("labels");
                let items: Vec<Value> = s
                    .sandboxes
                    .values()
                    .filter(|x| {
                        want.as_object()
                            .is_none_or(|w| w.iter().all(|(k, v)| &x.labels[k] == v))
                    })
                    .map(sandbox_json)
                    .collect();
                reply(200, json!({"items": items, "nextCursor": null}))
            }
            (m, ["api", "sandbox", id, rest @ ..]) => {
                let key = s
                    .sandboxes
                    .values()
                    .find(|x| x.id == *id || x.name == *id)
                    .map(|x| x.id.clone());
                let Some(key) = key else {
                    return reply(
                        404,
                        json!({"statusCode": 404, "message": "Sandbox not found"}),
                    );
                };
                if m == "DELETE" && rest.is_empty() {
                    let sb = s.sandboxes.remove(&key).expect("sb");
                    return reply(200, sandbox_json(&sb));
                }
                let sb = s.sandboxes.get_mut(&key).expect("sb");
                let bad = |msg: &str| reply(400, json!({"statusCode": 400, "message": msg}));
                match (m, rest) {
                    ("GET", []) => {
                        if let Some((target, left)) = sb.pending.take() {
                            if left <= 1 {
                                sb.state = target;
                            } else {
                                sb.pending = Some((target, left - 1));
                            }
                        }
                        reply(200, sandbox_json(sb))
                    }
                    ("POST", ["start"]) => match sb.state.as_str() {
                        "stopped" => {
                            sb.state = "starting".into();
                            sb.pending = Some(("started".into(), 1));
                            reply(200, sandbox_json(sb))
                        }
                        "archived" => {
                            sb.state = "restoring".into();
                            sb.pending = Some(("started".into(), 3));
                            reply(200, sandbox_json(sb))
                        }
                        other => bad(&format!("cannot start a sandbox that is {other}")),
                    },
                    ("POST", ["stop"]) => {
                        if sb.state != "started" {
                            return bad("not started");
                        }
                        sb.state = "stopping".into();
                        sb.pending = Some(("stopped".into(), 1));
                        reply(200, sandbox_json(sb))
                    }
                    ("POST", ["archive"]) => {
                        if sb.state != "stopped" {
                            return bad("not stopped");
                        }
                        sb.state = "archiving".into();
                        sb.pending = Some(("archived".into(), 1));
                        reply(200, sandbox_json(sb))
                    }
                    ("POST", ["last-activity"]) => {
                        s.keepalives += 1;
                        reply(201, json!({}))
                    }
                    ("POST", ["autostop", minutes]) => {
                        sb.auto_stop = minutes.parse().unwrap_or(0);
                        reply(200, sandbox_json(sb))
                    }
                    ("GET", ["ports", port, "signed-preview-url"]) => reply(
                        200,
                        json!({"sandboxId": sb.id, "port": port.parse::<u16>().unwrap_or(0),
                               "token": "tok", "url": format!("https://{port}-tok-{}.preview.test", sb.id)}),
                    ),
                    _ => reply(404, json!({"statusCode": 404, "message": "no route"})),
                }
            }
            (m, ["toolbox", id, rest @ ..]) => {
                let Some(sb) = s.sandboxes.get(*id).cloned() else {
                    return reply(404, json!({"message": "sandbox not found"}));
                };
                if sb.state != "started" {
                    return reply(400, json!({"message": "sandbox is not running"}));
                }
                match (m, rest) {
                    ("POST", ["files", "bulk-upload"]) => {
                        let ct = req.headers()["content-type"]
                            .to_str()
                            .expect("ct")
                            .to_owned();
                        let parts = multipart(&ct, req.body());
                        let mut paths = BTreeMap::new();
                        let mut n = 0;
                        for (name, content) in parts {
                            let idx = name
                                .trim_start_matches("files[")
                                .split(']')
                                .next()
                                .unwrap_or("")
                                .to_owned();
                            if name.ends_with(".path") {
                                paths.insert(idx, String::from_utf8(content).expect("path"));
                            } else {
                                let p = paths.get(&idx).expect("path before file").clone();
                                s.sandboxes
                                    .get_mut(*id)
                                    .expect("sb")
                                    .files
                                    .insert(p, content);
                                n += 1;
                            }
                        }
                        s.uploaded_files += n;
                        reply(200, json!({"files": []}))
                    }
                    ("POST", ["files", "folder"]) => {
                        let p = query(req.uri(), "path").expect("path");
                        s.log.push(format!("mkdir {p}"));
                        reply(200, json!({}))
                    }
                    ("DELETE", ["files"]) => {
                        let p = query(req.uri(), "path").expect("path");
                        s.sandboxes.get_mut(*id).expect("sb").files.remove(&p);
                        reply(204, json!(null))
                    }
                    ("POST", ["process", "execute"]) => {
                        let body: Value = serde_json::from_slice(req.body()).expect("json");
                        let cwd = body["cwd"].as_str().unwrap_or("/").to_owned();
                        let cmd = body["command"].as_str().unwrap_or("");
                        let timeout = body["timeout"].as_i64().unwrap_or(10);
                        let (code, out) = shell(&sb, &cwd, cmd);
                        if code == -408
                            || (cmd.starts_with("sleep ")
                                && out.parse::<i64>().unwrap_or(0) > timeout)
                        {
                            return reply(
                                408,
                                json!({"statusCode": 408, "message": "command execution timeout"}),
                            );
                        }
                        reply(200, json!({"exitCode": code, "result": out}))
                    }
                    ("POST", ["process", "session"]) => {
                        let body: Value = serde_json::from_slice(req.body()).expect("json");
                        let key = (
                            sb.id.clone(),
                            body["sessionId"].as_str().expect("sessionId").to_owned(),
                        );
                        if s.sessions.contains_key(&key) {
                            return reply(409, json!({"message": "session already exists"}));
                        }
                        s.sessions.insert(key, BTreeMap::new());
                        reply(201, json!(null))
                    }
                    (m, ["process", "session", sid, more @ ..]) => {
                        let key = (sb.id.clone(), (*sid).to_owned());
                        if m == "DELETE" && more.is_empty() {
                            return match s.sessions.remove(&key) {
                                Some(_) => reply(204, json!(null)),
                                None => reply(404, json!({"message": "session not found"})),
                            };
                        }
                        s.next_cmd += 1;
                        let next = format!("cmd{}", s.next_cmd);
                        let Some(cmds) = s.sessions.get_mut(&key) else {
                            return reply(404, json!({"message": "session not found"}));
                        };
                        match (m, more) {
                            ("POST", ["exec"]) => {
                                let body: Value = serde_json::from_slice(req.body()).expect("json");
                                assert_eq!(body["runAsync"], true);
                                let full = body["command"].as_str().expect("command");
                                // `cd '<dir>' && (\n<command>\n)`
                                let (cwd, cmd) = full
                                    .strip_prefix("cd '")
                                    .and_then(|r| r.split_once("' && (\n"))
                                    .expect("cd then a subshell");
                                let cmd = cmd.strip_suffix("\n)").expect("subshell");
                                let words: Vec<&str> = cmd.split_whitespace().collect();
                                let run = match words.as_slice() {
                                    ["slow-echo", n, ms] => {
                                        let (n, ms) = (
                                            n.parse::<i64>().expect("n"),
                                            ms.parse::<i64>().expect("ms"),
                                        );
                                        SessionCmd {
                                            started_ms: now,
                                            lines: (1..=n)
                                                .map(|k| ((k - 1) * ms, format!("line {k}\n")))
                                                .collect(),
                                            exit: ((n - 1) * ms, 0),
                                        }
                                    }
                                    ["sleep", n] => SessionCmd {
                                        started_ms: now,
                                        lines: vec![],
                                        exit: (n.parse::<i64>().expect("n") * 1000, 0),
                                    },
                                    _ => {
                                        let (code, out) = shell(&sb, cwd, cmd);
                                        SessionCmd {
                                            started_ms: now,
                                            lines: vec![(0, out)],
                                            exit: (0, code),
                                        }
                                    }
                                };
                                cmds.insert(next.clone(), run);
                                reply(
                                    200,
                                    json!({"cmdId": next, "output": null, "exitCode": null}),
                                )
                            }
                            ("GET", ["command", cid]) => match cmds.get(*cid) {
                                Some(c) => reply(
                                    200,
                                    json!({"id": cid, "command": "", "exitCode": c.exit_code(now)}),
                                ),
                                None => reply(404, json!({"message": "command not found"})),
                            },
                            ("GET", ["command", cid, "logs"]) => match cmds.get(*cid) {
                                Some(c) => http::Response::builder()
                                    .status(200)
                                    .header("content-type", "text/plain; charset=utf-8")
                                    .body(Bytes::from(c.log(now)))
                                    .expect("response"),
                                None => reply(404, json!({"message": "command not found"})),
                            },
                            _ => reply(404, json!({"message": "no route"})),
                        }
                    }
                    _ => reply(404, json!({"message": "no route"})),
                }
            }
            _ => reply(404, json!({"message": "no route"})),
        }
    }
}

/// A tiny shell over the sandbox's files.
fn shell(sb: &Sb, cwd: &str, cmd: &str) -> (i64, String) {
    let words: Vec<&str> = cmd.split_whitespace().collect();
    match words.as_slice() {
        ["echo", rest @ ..] => (0, format!("{}\n", rest.join(" "))),
        ["pwd"] => (0, format!("{cwd}\n")),
        ["node", "--version"] => (0, "v20.11.1\n".into()),
        ["cat", file] => match sb.files.get(&format!("{cwd}/{file}")) {
            Some(c) => (0, String::from_utf8_lossy(c).into_owned()),
            None => (1, format!("cat: {file}: No such file or directory\n")),
        },
        ["ls"] => {
            let prefix = format!("{cwd}/");
            let mut names: Vec<String> = sb
                .files
                .keys()
                .filter_map(|p| p.strip_prefix(&prefix))
                .map(|p| p.split('/').next().unwrap_or(p).to_owned())
                .collect();
            names.dedup();
            (0, names.iter().map(|n| format!("{n}\n")).collect())
        }
        ["seq", n] => (
            0,
            (1..=n.parse::<u64>().unwrap_or(0))
                .map(|i| format!("{i}\n"))
                .collect(),
        ),
        ["sleep", n] => (0, (*n).to_owned()),
        ["false"] => (1, String::new()),
        [other, ..] => (127, format!("sh: {other}: command not found\n")),
        [] => (0, String::new()),
    }
}

/// Routes outbound calls: the model host to a script, Daytona to the fake.
struct Net {
    daytona: Rc<FakeDaytona>,
    model: Rc<ScriptedHttp>,
}

#[async_trait::async_trait(?Send)]
impl HttpClient for Net {
    async fn send(&self, req: http::Request<Bytes>) -> Result<http::Response<Bytes>, HttpError> {
        match req.uri().host() {
            Some("daytona.test") => Ok(self.daytona.handle(&req)),
            Some("model.test") => self.model.send(req).await,
            other => Err(HttpError(format!("no route to {other:?}"))),
        }
    }

    async fn send_streaming(
        &self,
        req: http::Request<Bytes>,
    ) -> Result<everjust_core::ports::http_client::StreamingResponse, HttpError> {
        match req.uri().host() {
            Some("model.test") => self.model.send_streaming(req).await,
            _ => {
                use futures_util::StreamExt;
                let res = self.send(req).await?;
                let (parts, body) = res.into_parts();
                Ok(everjust_core::ports::http_client::StreamingResponse {
                    status: parts.status,
                    headers: parts.headers,
                    body: futures_util::stream::once(async move { Ok(body) }).boxed_local(),
                })
            }
        }
    }
}

struct World {
    app: TestApp,
    fake: Rc<FakeDaytona>,
    model: Rc<ScriptedHttp>,
    token: String,
    user: String,
    project: String,
}

async fn world_with(extra: &[(&'static str, &'static str)]) -> World {
    let fake = Rc::new(FakeDaytona::default());
    let model = Rc::new(ScriptedHttp::default());
    let mut v = vars();
    v.extend_from_slice(extra);
    let app = TestApp::build(
        &v,
        Rc::new(Net {
            daytona: fake.clone(),
            model: model.clone(),
        }),
    )
    .await;
    fake.clock.replace(Some(app.clock.clone()));
    let (token, _, user) = app.signup("ada@example.com").await;
    let r = app
        .json(
            "POST",
            "/v1/projects",
            Some(&token),
            json!({"name": "site", "template": "static-html"}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.json());
    let project = r.json()["id"].as_str().expect("id").to_owned();
    World {
        app,
        fake,
        model,
        token,
        user,
        project,
    }
}

async fn world() -> World {
    world_with(&[]).await
}

impl World {
    /// A fresh access token (they live 15 minutes; these tests move the clock further).
    async fn relogin(&mut self) {
        let r = self
            .app
            .json(
                "POST",
                "/v1/auth/login",
                None,
                json!({"email": "ada@example.com", "password": PASSWORD}),
            )
            .await;
        assert_eq!(r.status, 200, "{}", r.json());
        self.token = r.json()["access_token"].as_str().expect("token").to_owned();
    }
    fn path(&self, rest: &str) -> String {
        format!("/v1/projects/{}/sandbox{rest}", self.project)
    }
    async fn start(&self) -> Res {
        self.app
            .request(
                "POST",
                &self.path(""),
                Some(&self.token),
                None,
                Bytes::new(),
            )
            .await
    }
    async fn exec(&self, body: Value) -> Res {
        self.app
            .json("POST", &self.path("/exec"), Some(&self.token), body)
            .await
    }
    async fn put(&self, path: &str, content: &str) {
        let r = self
            .app
            .request(
                "PUT",
                &format!("/v1/projects/{}/files/{path}", self.project),
                Some(&self.token),
                Some("text/plain"),
                content.to_owned(),
            )
            .await;
        assert!(r.status == 200 || r.status == 201, "{}", r.json());
    }
    async fn row(&self) -> store::SandboxRow {
        store::load(self.app.ports.sql.as_ref(), &self.project)
            .await
            .expect("load")
            .expect("row")
    }
    async fn limits(&self, overrides: Value) {
        self.app
            .ports
            .sql
            .execute(
                "UPDATE users SET limits_override = $2::jsonb WHERE id = $1",
                &[self.user.as_str().into(), overrides.to_string().into()],
            )
            .await
            .expect("override");
    }
    async fn job(&self) -> Value {
        let r = self
            .app
            .request(
                "POST",
                "/v1/_jobs/sandbox-idle",
                Some(JOBS),
                None,
                Bytes::new(),
            )
            .await;
        assert_eq!(r.status, 200, "{}", r.json());
        r.json()
    }
    async fn webhook(&self, id: &str, ts: i64, body: &Value, sig: Option<String>) -> Res {
        let raw = body.to_string();
        let key = webhook::secret_key(SECRET).expect("key");
        let sig = sig.unwrap_or_else(|| {
            format!(
                "v1,{}",
                webhook::sign(&key, id, &ts.to_string(), raw.as_bytes())
            )
        });
        let req = http::Request::post("/webhooks/daytona")
            .header("content-type", "application/json")
            .header("svix-id", id)
            .header("svix-timestamp", ts.to_string())
            .header("svix-signature", sig)
            .body(Bytes::from(raw))
            .expect("req");
        let res = everjust_core::handle(&self.app.ports, req, everjust_core::Meta::default()).await;
        let (parts, body) = res.into_parts();
        Res {
            status: parts.status.as_u16(),
            headers: parts.headers,
            body: body.as_bytes().cloned().unwrap_or_default(),
        }
    }
}

// ------------------------------------------------------------------ tests

#[tokio::test]
async fn starting_uploads_every_file_once_and_an_unchanged_restart_uploads_nothing() {
    let w = world().await;
    let r = w.start().await;
    assert_eq!(r.status, 200, "{}", r.json());
    let doc = r.json();
    assert_eq!(
        (doc["provider"].as_str(), doc["state"].as_str()),
        (Some("daytona"), Some("started"))
    );
    assert_eq!(doc["uploaded_files"], 3);
    assert_eq!(doc["sandbox_preview"], true);
    assert!(doc["preview_url"]
        .as_str()
        .expect("url")
        .starts_with("https://3000-tok-"));
    assert!(doc["static_preview_url"]
        .as_str()
        .expect("static")
        .contains("/preview/~t."));
    let sb = w.fake.only();
    assert_eq!(sb.labels["everjust_project"], w.project.as_str());
    assert!(sb.files.contains_key(&format!("{DIR}/index.html")));
    assert_eq!(
        sb.auto_stop,
        10 + 2,
        "the provider's own auto-stop trails the tier's idle minutes"
    );

    let stop = w
        .app
        .request("DELETE", &w.path(""), Some(&w.token), None, Bytes::new())
        .await;
    assert_eq!(stop.status, 202, "{}", stop.json());
    assert_eq!(stop.json()["state"], "stopping");
    let again = w.start().await;
    assert_eq!(again.status, 200, "{}", again.json());
    assert_eq!(again.json()["uploaded_files"], 0);
    assert_eq!(
        w.fake.s.borrow().uploaded_files,
        3,
        "an unchanged project uploads nothing"
    );

    // One changed file and one deleted file: exactly that goes over.
    w.put("app.js", "console.log('changed');").await;
    let del = w
        .app
        .request(
            "DELETE",
            &format!("/v1/projects/{}/files/style.css", w.project),
            Some(&w.token),
            None,
            Bytes::new(),
        )
        .await;
    assert_eq!(del.status, 204);
    let r = w.exec(json!({"command": "cat app.js"})).await;
    assert_eq!(r.status, 200, "{}", r.json());
    assert_eq!(r.json()["output"], "console.log('changed');");
    assert_eq!(r.json()["uploaded_files"], 1);
    assert_eq!(w.fake.s.borrow().uploaded_files, 4);
    assert!(!w
        .fake
        .only()
        .files
        .contains_key(&format!("{DIR}/style.css")));
}

#[tokio::test]
async fn exec_runs_in_the_project_and_reports_exit_code_and_output() {
    let w = world().await;
    let r = w.exec(json!({"command": "pwd"})).await;
    assert_eq!(r.status, 200, "{}", r.json());
    let j = r.json();
    assert_eq!(
        (j["exit_code"].as_i64(), j["output"].as_str()),
        (Some(0), Some("/home/daytona/project\n"))
    );
    assert_eq!(j["timed_out"], false);
    let r = w.exec(json!({"command": "cat missing.txt"})).await.json();
    assert_eq!(r["exit_code"], 1);
    let r = w.exec(json!({"command": "ls", "cwd": "."})).await.json();
    assert_eq!(r["output"], "app.js\nindex.html\nstyle.css\n");
    let r = w.exec(json!({"command": "node --version"})).await.json();
    assert_eq!(r["output"], "v20.11.1\n");
    // Bad input.
    w.exec(json!({"command": "  "}))
        .await
        .problem(400, "invalid_command");
    w.exec(json!({"command": "ls", "cwd": "../.."}))
        .await
        .problem(400, "invalid_path");
    w.exec(json!({"command": "ls", "shell": "bash"}))
        .await
        .problem(400, "invalid_body");
    w.exec(json!({"command": "x".repeat(20_000)}))
        .await
        .problem(400, "invalid_command");
    // Asked for as a stream, the same refusals are problem+json, not a 200
    // stream whose first event is an error.
    for (body, code) in [
        (json!({"command": "  "}), "invalid_command"),
        (json!({"command": "ls", "cwd": "../.."}), "invalid_path"),
    ] {
        let req = http::Request::post(w.path("/exec"))
            .header("authorization", format!("Bearer {}", w.token))
            .header("content-type", "application/json")
            .header("accept", "text/event-stream")
            .body(Bytes::from(body.to_string()))
            .expect("req");
        let res = everjust_core::handle(&w.app.ports, req, everjust_core::Meta::default()).await;
        let (parts, body) = res.into_parts();
        let everjust_core::Body::Full(body) = body else {
            panic!("{code}: a streamed answer to bad input");
        };
        Res {
            status: parts.status.as_u16(),
            headers: parts.headers,
            body,
        }
        .problem(400, code);
    }
}

#[tokio::test]
async fn exec_and_sandbox_routes_on_another_users_project_are_not_found() {
    let w = world().await;
    let (eve, _, _) = w.app.signup("eve@example.com").await;
    for (m, p) in [("POST", ""), ("GET", ""), ("DELETE", ""), ("POST", "/exec")] {
        let r = w
            .app
            .request(
                m,
                &w.path(p),
                Some(&eve),
                Some("application/json"),
                json!({"command": "ls"}).to_string(),
            )
            .await;
        r.problem(404, "not_found");
    }
    assert!(
        w.fake.s.borrow().sandboxes.is_empty(),
        "nothing was created"
    );
    let r = w
        .app
        .request(
            "POST",
            &w.path("/exec"),
            None,
            Some("application/json"),
            "{}",
        )
        .await;
    r.problem(401, "unauthorized");
}

#[tokio::test]
async fn commands_over_the_time_limit_are_killed_and_reported() {
    let w = world().await;
    let r = w
        .exec(json!({"command": "sleep 5", "timeout_secs": 2}))
        .await;
    assert_eq!(r.status, 200, "{}", r.json());
    let j = r.json();
    assert_eq!(
        (
            j["timed_out"].as_bool(),
            j["exit_code"].as_i64(),
            j["timeout_secs"].as_i64()
        ),
        (Some(true), Some(124), Some(2))
    );
    assert!(j["output"]
        .as_str()
        .expect("out")
        .contains("[killed: the command ran longer than its time limit of 2 s]"));
    // The tier's limit caps what a request asks for.
    w.limits(json!({"command_timeout_secs": 3})).await;
    let j = w
        .exec(json!({"command": "sleep 4", "timeout_secs": 600}))
        .await
        .json();
    assert_eq!(
        (j["timed_out"].as_bool(), j["timeout_secs"].as_i64()),
        (Some(true), Some(3))
    );
    let j = w.exec(json!({"command": "sleep 2"})).await.json();
    assert_eq!(j["timed_out"], false);
}

#[tokio::test]
async fn long_output_is_cut_with_a_marker() {
    let w = world().await;
    let j = w.exec(json!({"command": "seq 100000"})).await.json();
    assert_eq!(j["truncated"], true);
    let out = j["output"].as_str().expect("out");
    assert!(
        out.starts_with("1\n2\n") && out.ends_with("99999\n100000\n"),
        "{}",
        &out[..50]
    );
    assert!(out.contains("bytes of output cut"));
    assert!(out.len() < 64 * 1024 + 200);
}

#[tokio::test]
async fn a_sandbox_in_error_is_replaced_on_next_start_and_gets_every_file() {
    let w = world().await;
    assert_eq!(w.start().await.status, 200);
    let old = w.fake.only();
    w.fake.set_state(&old.id, "error");
    let r = w.get_state().await;
    assert_eq!(
        r["state"], "started",
        "a read of a started sandbox trusts the mirror"
    );
    let r = w.start().await;
    assert_eq!(r.status, 200, "{}", r.json());
    assert_eq!(r.json()["uploaded_files"], 3);
    let new = w.fake.only();
    assert_ne!(new.id, old.id, "the broken sandbox was destroyed");
    assert!(new.name.ends_with("-1"), "{}", new.name);
    assert_eq!(w.row().await.generation, 1);
}

impl World {
    async fn get_state(&self) -> Value {
        let r = self.app.get(&self.path(""), Some(&self.token)).await;
        assert_eq!(r.status, 200, "{}", r.json());
        r.json()
    }
}

#[tokio::test]
async fn a_sandbox_that_failed_while_stopped_is_replaced_too() {
    let w = world().await;
    assert_eq!(w.start().await.status, 200);
    let old = w.fake.only();
    // The webhook tells us it broke.
    let now = w.app.clock.now_secs();
    let r = w
        .webhook("msg_err", now, &json!({"event": "sandbox.state.updated", "id": old.id, "oldState": "started",
            "newState": "error", "updatedAt": "2026-05-28T21:00:00.000Z", "errorReason": "disk full"}), None)
        .await;
    assert_eq!(r.status, 200);
    let doc = w.get_state().await;
    assert_eq!(
        (doc["state"].as_str(), doc["error"].as_str()),
        (Some("error"), Some("disk full"))
    );
    w.fake.set_state(&old.id, "error");
    assert_eq!(w.start().await.status, 200);
    assert_ne!(w.fake.only().id, old.id);
}

#[tokio::test]
async fn outages_give_a_retryable_problem_and_lose_no_files() {
    let w = world().await;
    w.fake.s.borrow_mut().down = true;
    let r = w.start().await;
    let p = r.problem(503, "sandbox_unavailable");
    assert_eq!(p["retryable"], true);
    assert_eq!(r.headers["retry-after"], "5");
    assert!(
        w.fake.count("POST /api/sandbox") >= 3,
        "create is retried: {:?}",
        w.fake.s.borrow().log
    );
    // The files are untouched and still served.
    let files = w
        .app
        .get(&format!("/v1/projects/{}/files", w.project), Some(&w.token))
        .await
        .json();
    assert_eq!(files["items"].as_array().map(Vec::len), Some(3));
    w.exec(json!({"command": "ls"}))
        .await
        .problem(503, "sandbox_unavailable");
    // Back up: it works, and a short blip is absorbed by the retries.
    w.fake.s.borrow_mut().down = false;
    assert_eq!(w.start().await.status, 200);
    w.fake.s.borrow_mut().fail_next = 1;
    let r = w
        .app
        .request("DELETE", &w.path(""), Some(&w.token), None, Bytes::new())
        .await;
    assert_eq!(
        (r.status, r.json()["state"].as_str()),
        (202, Some("stopping")),
        "{}",
        r.json()
    );
}

#[tokio::test]
async fn a_sandbox_stopped_behind_our_back_is_started_again_before_the_command_runs() {
    let w = world().await;
    assert_eq!(w.start().await.status, 200);
    // Stopped at the provider, no webhook: our mirror still says started.
    let id = w.fake.only().id;
    w.fake.set_state(&id, "stopped");
    let r = w.exec(json!({"command": "echo back"})).await;
    assert_eq!(
        (r.status, r.json()["output"].as_str()),
        (200, Some("back\n")),
        "{}",
        r.json()
    );
    assert_eq!(
        w.fake.count("/process/execute"),
        2,
        "the first attempt never ran; it was sent again once"
    );
    assert_eq!(w.fake.count("/start"), 1);
    assert_eq!(w.row().await.state.as_str(), "started");
}

#[tokio::test]
async fn an_empty_project_gets_its_directory_so_commands_can_run() {
    let w = world().await;
    let r = w
        .app
        .json(
            "POST",
            "/v1/projects",
            Some(&w.token),
            json!({"name": "empty"}),
        )
        .await;
    let empty = r.json()["id"].as_str().expect("id").to_owned();
    let r = w
        .app
        .json(
            "POST",
            &format!("/v1/projects/{empty}/sandbox/exec"),
            Some(&w.token),
            json!({"command": "pwd"}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.json());
    assert_eq!(w.fake.count(&format!("mkdir {DIR}")), 1);
}

#[tokio::test]
async fn exec_is_never_sent_twice() {
    let w = world().await;
    assert_eq!(w.start().await.status, 200);
    let before = w.fake.count("/process/execute");
    // Sync finds nothing to upload, so the first request is the command itself.
    w.fake.s.borrow_mut().fail_next = 1;
    w.exec(json!({"command": "echo once"}))
        .await
        .problem(503, "sandbox_unavailable");
    assert_eq!(w.fake.count("/process/execute") - before, 1);
}

#[tokio::test]
async fn an_archived_sandbox_restores_slower_and_says_so() {
    let w = world().await;
    assert_eq!(w.start().await.status, 200);
    let id = w.fake.only().id;
    w.fake.set_state(&id, "archived");
    w.app
        .ports
        .sql
        .execute(
            "UPDATE sandboxes SET state = 'archived' WHERE project_id = $1",
            &[w.project.as_str().into()],
        )
        .await
        .expect("archived");
    let r = w
        .app
        .request(
            "POST",
            &w.path("?wait=0"),
            Some(&w.token),
            None,
            Bytes::new(),
        )
        .await;
    assert_eq!(r.status, 202, "{}", r.json());
    assert_eq!(r.headers["retry-after"], "3");
    let j = r.json();
    assert_eq!(
        (j["state"].as_str(), j["restoring"].as_bool()),
        (Some("restoring"), Some(true))
    );
    assert!(j["message"].as_str().expect("message").contains("archive"));
    assert!(
        j["preview_url"]
            .as_str()
            .expect("url")
            .contains("/preview/~t."),
        "the static preview meanwhile"
    );
    // Reads follow it until it runs.
    let mut state = String::new();
    for _ in 0..5 {
        state = w.get_state().await["state"]
            .as_str()
            .unwrap_or("")
            .to_owned();
        if state == "started" {
            break;
        }
    }
    assert_eq!(state, "started");
    w.app
        .request(
            "POST",
            &w.path("?wait=99"),
            Some(&w.token),
            None,
            Bytes::new(),
        )
        .await
        .problem(400, "invalid_wait");
}

#[tokio::test]
async fn the_idle_job_stops_idle_sandboxes_archives_long_stopped_ones_and_bills_the_minutes() {
    let mut w = world().await;
    assert_eq!(w.start().await.status, 200);
    assert_eq!(w.job().await["stopped"], 0, "not idle yet");
    w.app.clock.advance_ms(11 * 60_000);
    let r = w.job().await;
    assert_eq!(
        (r["checked"].as_i64(), r["stopped"].as_i64()),
        (Some(1), Some(1)),
        "{r}"
    );
    assert_eq!(w.row().await.state.as_str(), "stopping");
    let usage = w
        .app
        .ports
        .sql
        .query(
            "SELECT compute_seconds, provider FROM usage_ledger WHERE kind = 'sandbox'",
            &[],
        )
        .await
        .expect("usage");
    assert_eq!(usage.len(), 1);
    assert_eq!(usage[0].int("compute_seconds").expect("secs"), 660);
    // The stop finishes (the fake reports it on the next read), then a day later it is archived.
    assert_eq!(w.get_state().await["state"], "stopped");
    w.app.clock.advance_ms(25 * 3_600_000);
    let r = w.job().await;
    assert_eq!(r["archived"], 1, "{r}");
    w.relogin().await;
    assert_eq!(w.get_state().await["state"], "archived");
    assert_eq!(
        w.app.count("usage_ledger").await,
        1,
        "a stopped sandbox costs nothing more"
    );
    // Starting it again works (restoring).
    let r = w.start().await;
    assert_eq!(r.status, 200, "{}", r.json());
    assert_eq!(r.json()["restoring"], true);
}

#[tokio::test]
async fn activity_keeps_a_sandbox_running() {
    let mut w = world().await;
    let doc = w.start().await.json();
    let preview = doc["static_preview_url"]
        .as_str()
        .expect("static")
        .to_owned();
    w.app.clock.advance_ms(8 * 60_000);
    // A preview hit counts, and refreshes the provider's own idle timer.
    let keepalives = w.fake.s.borrow().keepalives;
    let hit = w.app.get(&preview, None).await;
    assert_eq!(hit.status, 200, "{preview}: {}", hit.json());
    assert_eq!(w.fake.s.borrow().keepalives, keepalives + 1);
    w.app.clock.advance_ms(4 * 60_000);
    assert_eq!(w.job().await["stopped"], 0);
    // An exec counts too.
    w.app.clock.advance_ms(5 * 60_000);
    w.relogin().await;
    assert_eq!(w.exec(json!({"command": "echo hi"})).await.status, 200);
    w.app.clock.advance_ms(6 * 60_000);
    assert_eq!(w.job().await["stopped"], 0);
    w.app.clock.advance_ms(5 * 60_000);
    assert_eq!(w.job().await["stopped"], 1);
}

#[tokio::test]
async fn visits_the_provider_saw_keep_a_sandbox_running() {
    let w = world().await;
    assert_eq!(w.start().await.status, 200);
    w.app.clock.advance_ms(11 * 60_000);
    let seen =
        chrono::DateTime::from_timestamp_millis(w.app.clock.now_ms() - 60_000).expect("time");
    let id = w.fake.only().id;
    w.fake
        .s
        .borrow_mut()
        .sandboxes
        .get_mut(&id)
        .expect("sb")
        .last_activity = Some(seen.to_rfc3339_opts(chrono::SecondsFormat::Millis, true));
    let r = w.job().await;
    assert_eq!(
        (r["kept"].as_i64(), r["stopped"].as_i64()),
        (Some(1), Some(0)),
        "{r}"
    );
    w.app.clock.advance_ms(10 * 60_000);
    assert_eq!(w.job().await["stopped"], 1);
}

#[tokio::test]
async fn the_idle_job_destroys_sandboxes_whose_project_is_gone_and_only_ours() {
    let w = world().await;
    assert_eq!(w.start().await.status, 200);
    let ours = w.fake.only();
    // Another deployment's sandbox in the same Daytona account.
    let mut foreign = ours.clone();
    foreign.id = "sb-foreign".into();
    foreign.name = "someone-else".into();
    foreign.labels["everjust_deploy"] = json!("0000000000000000");
    w.fake
        .s
        .borrow_mut()
        .sandboxes
        .insert(foreign.id.clone(), foreign);
    let r = w
        .app
        .request(
            "DELETE",
            &format!("/v1/projects/{}", w.project),
            Some(&w.token),
            None,
            Bytes::new(),
        )
        .await;
    assert_eq!(r.status, 204);
    let report = w.job().await;
    assert_eq!(report["swept"], 1, "{report}");
    let left: Vec<String> = w.fake.s.borrow().sandboxes.keys().cloned().collect();
    assert_eq!(left, ["sb-foreign"]);
    // At most hourly.
    assert_eq!(w.job().await["swept"], 0);
}

#[tokio::test]
async fn the_idle_job_route_needs_the_jobs_secret() {
    let w = world().await;
    let r = w
        .app
        .request("POST", "/v1/_jobs/sandbox-idle", None, None, Bytes::new())
        .await;
    r.problem(401, "unauthorized");
    let r = w
        .app
        .request(
            "POST",
            "/v1/_jobs/sandbox-idle",
            Some("wrong"),
            None,
            Bytes::new(),
        )
        .await;
    r.problem(401, "unauthorized");
    let r = w
        .app
        .request(
            "POST",
            "/v1/_jobs/sandbox-idle",
            Some(&w.token),
            None,
            Bytes::new(),
        )
        .await;
    r.problem(401, "unauthorized");
    let plain = TestApp::new().await;
    plain
        .request(
            "POST",
            "/v1/_jobs/sandbox-idle",
            Some(JOBS),
            None,
            Bytes::new(),
        )
        .await
        .problem(404, "not_found");
}

#[tokio::test]
async fn the_idle_query_is_one_range_scan_of_its_index_over_ten_thousand_rows() {
    let w = world().await;
    let sql = w.app.ports.sql.as_ref();
    sql.batch(
        "INSERT INTO projects (id, owner_id, name) SELECT 'prj_bulk' || g, (SELECT id FROM users LIMIT 1), 'p' || g FROM generate_series(1, 10000) g;
         INSERT INTO sandboxes (project_id, owner_id, provider, external_id, state, last_activity_at, due_at)
         SELECT 'prj_bulk' || g, (SELECT id FROM users LIMIT 1), 'daytona', 'ext' || g,
                CASE WHEN g % 10 = 0 THEN 'stopped' WHEN g % 3 = 0 THEN 'archived' ELSE 'started' END,
                now() - g * interval '1 minute',
                CASE WHEN g % 3 = 0 AND g % 10 <> 0 THEN NULL ELSE now() + (5000 - g) * interval '1 minute' END
         FROM generate_series(1, 10000) g;
         ANALYZE sandboxes;",
    )
    .await
    .expect("bulk");
    let now = i64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("time")
            .as_millis(),
    )
    .expect("ms");
    let due = store::due(sql, now, 50).await.expect("due");
    assert_eq!(due.len(), 50);
    assert!(
        due.windows(2).all(|p| p[0].due_ms <= p[1].due_ms),
        "earliest first"
    );
    assert!(due.iter().all(|r| r.due_ms.is_some_and(|d| d <= now)));
    let plan = sql
        .query(
            &format!("EXPLAIN {}", store::DUE_QUERY),
            &[SqlValue::Timestamp(now), SqlValue::Int(50)],
        )
        .await
        .expect("explain");
    let plan: Vec<String> = plan
        .iter()
        .map(|r| r.text("QUERY PLAN").expect("plan"))
        .collect();
    assert!(
        plan.iter().any(|l| l.contains("sandboxes_due")),
        "{plan:#?}"
    );
    assert!(!plan.iter().any(|l| l.contains("Seq Scan")), "{plan:#?}");
}

#[tokio::test]
async fn a_signed_webhook_updates_the_state_once_and_bad_ones_change_nothing() {
    let w = world().await;
    assert_eq!(w.start().await.status, 200);
    let id = w.fake.only().id;
    let now = w.app.clock.now_secs();
    let stopped = json!({"event": "sandbox.state.updated", "timestamp": "2026-05-28T21:00:00.000Z", "id": id,
        "organizationId": "org_test", "oldState": "started", "newState": "stopped", "updatedAt": "2026-05-28T21:00:00.000Z"});
    // Forged, stale, unsigned: 401, nothing changes.
    w.webhook("msg_1", now, &stopped, Some("v1,Zm9yZ2Vk".into()))
        .await
        .problem(401, "invalid_signature");
    w.webhook("msg_1", now - 301, &stopped, None)
        .await
        .problem(401, "invalid_signature");
    w.webhook("msg_1", now + 301, &stopped, None)
        .await
        .problem(401, "invalid_signature");
    let unsigned = http::Request::post("/webhooks/daytona")
        .header("content-type", "application/json")
        .body(Bytes::from(stopped.to_string()))
        .expect("req");
    let res = everjust_core::handle(&w.app.ports, unsigned, everjust_core::Meta::default()).await;
    assert_eq!(res.status(), 401);
    assert_eq!(w.row().await.state.as_str(), "started");
    assert_eq!(w.app.count("webhook_deliveries").await, 0);
    // Signed: applied once; a replay is a no-op.
    let r = w.webhook("msg_1", now, &stopped, None).await;
    assert_eq!(
        (r.status, r.json()["status"].as_str()),
        (200, Some("applied"))
    );
    assert_eq!(w.row().await.state.as_str(), "stopped");
    assert_eq!(
        w.app.count("usage_ledger").await,
        1,
        "the running period was billed"
    );
    w.app
        .ports
        .sql
        .execute(
            "UPDATE sandboxes SET state = 'started' WHERE project_id = $1",
            &[w.project.as_str().into()],
        )
        .await
        .expect("reset");
    let r = w.webhook("msg_1", now, &stopped, None).await;
    assert_eq!(
        (r.status, r.json()["status"].as_str()),
        (200, Some("duplicate"))
    );
    assert_eq!(
        w.row().await.state.as_str(),
        "started",
        "a replay changes nothing"
    );
    // A delivery whose processing never finished is processed when it comes again.
    w.app
        .ports
        .sql
        .execute(
            "INSERT INTO webhook_deliveries (source, delivery_id, event) VALUES ('daytona', 'msg_half', 'sandbox.state.updated')",
            &[],
        )
        .await
        .expect("half");
    let r = w.webhook("msg_half", now, &stopped, None).await;
    assert_eq!(r.json()["status"], "applied");
    assert_eq!(w.row().await.state.as_str(), "stopped");
    w.app
        .ports
        .sql
        .execute(
            "UPDATE sandboxes SET state = 'started' WHERE project_id = $1",
            &[w.project.as_str().into()],
        )
        .await
        .expect("reset");
    // An older event than the newest applied is ignored.
    let older = json!({"event": "sandbox.state.updated", "id": id, "oldState": "stopped", "newState": "archived", "updatedAt": "2026-05-28T20:59:00.000Z"});
    let r = w.webhook("msg_2", now, &older, None).await;
    assert_eq!(r.json()["status"], "stale");
    // Unknown events, unknown sandboxes and unknown states are accepted and ignored.
    for (n, body) in [
        json!({"event": "snapshot.created", "id": "snap1"}),
        json!({"event": "sandbox.state.updated", "id": "not-ours", "newState": "stopped"}),
        json!({"event": "sandbox.state.updated", "id": id, "newState": "levitating"}),
    ]
    .iter()
    .enumerate()
    {
        let r = w.webhook(&format!("msg_x{n}"), now, body, None).await;
        assert_eq!(r.status, 200, "{}", r.json());
    }
    assert_eq!(w.row().await.state.as_str(), "started");
    // Signed garbage is a 400.
    let key = webhook::secret_key(SECRET).expect("key");
    let sig = format!(
        "v1,{}",
        webhook::sign(&key, "msg_bad", &now.to_string(), b"not json")
    );
    let req = http::Request::post("/webhooks/daytona")
        .header("svix-id", "msg_bad")
        .header("svix-timestamp", now.to_string())
        .header("svix-signature", sig)
        .body(Bytes::from_static(b"not json"))
        .expect("req");
    let res = everjust_core::handle(&w.app.ports, req, everjust_core::Meta::default()).await;
    assert_eq!(res.status(), 400);
}

/// Provider events that arrive late (Svix retries, a queue behind) are
/// ordered by the provider's own time, not by when we processed them: the
/// user stopped the sandbox and started it again a second later, both
/// events reach us ten seconds on, and the sandbox is running. (An event's
/// move once stamped the row with our clock, so the second event, older
/// than that stamp, was dropped as stale and the row said `stopped`.)
#[tokio::test]
async fn late_events_are_ordered_by_the_providers_time_not_by_our_clock() {
    let w = world().await;
    assert_eq!(w.start().await.status, 200);
    let id = w.fake.only().id;
    let t0 = w.app.clock.now_ms();
    let at = |ms: i64| {
        chrono::DateTime::from_timestamp_millis(t0 + ms)
            .expect("time")
            .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
    };
    let event = |old: &str, new: &str, ms: i64| {
        json!({"event": "sandbox.state.updated", "id": id, "organizationId": "org_test",
            "oldState": old, "newState": new, "updatedAt": at(ms)})
    };
    w.app.clock.advance_ms(10_000);
    let now = w.app.clock.now_secs();
    let r = w
        .webhook("msg_late_1", now, &event("started", "stopped", 1_000), None)
        .await;
    assert_eq!(r.json()["status"], "applied", "{}", r.json());
    assert_eq!(w.row().await.state, State::Stopped);
    let r = w
        .webhook("msg_late_2", now, &event("stopped", "started", 2_000), None)
        .await;
    assert_eq!(r.json()["status"], "applied", "{}", r.json());
    assert_eq!(w.row().await.state, State::Started);
    // The first event, delivered again under another id, is still older.
    let r = w
        .webhook("msg_late_3", now, &event("started", "stopped", 1_000), None)
        .await;
    assert_eq!(r.json()["status"], "stale", "{}", r.json());
    assert_eq!(w.row().await.state, State::Started);
}

/// A provider event that passed its staleness check is not applied over a
/// state a request saw after it (the check and the move are one
/// statement). Under load, Daytona's `creating` event was applied after the
/// start's own poll had seen `started`, and the start answered 202
/// `creating` for a running sandbox.
#[tokio::test]
async fn an_older_provider_event_does_not_undo_a_state_seen_after_it() {
    let w = world().await;
    assert_eq!(w.start().await.status, 200);
    let sql = w.app.ports.sql.as_ref();
    let now = w.app.clock.now_ms();
    // The event's time is before the start saw the sandbox running.
    let older = store::transition(
        sql,
        &w.project,
        State::Creating,
        None,
        now,
        "use_older",
        Some(now - 60_000),
    )
    .await
    .expect("transition");
    assert!(older.is_none(), "an older event moved the row: {older:?}");
    assert_eq!(w.row().await.state, State::Started);
    assert_eq!(w.app.count("usage_ledger").await, 0, "nothing was billed");
    // A newer event moves it, and closes the running period.
    let newer = store::transition(
        sql,
        &w.project,
        State::Stopped,
        None,
        now,
        "use_newer",
        Some(now + 60_000),
    )
    .await
    .expect("transition");
    assert_eq!(newer, Some(State::Started));
    assert_eq!(w.row().await.state, State::Stopped);
    assert_eq!(w.app.count("usage_ledger").await, 1);
}

#[tokio::test]
async fn a_start_over_the_months_compute_minutes_is_refused_clearly() {
    let w = world().await;
    w.limits(json!({"compute_minutes_month": 0})).await;
    let r = w.start().await;
    let p = r.problem(402, "quota_compute_minutes");
    assert_eq!(p["limit_minutes"], 0);
    assert!(r.headers.contains_key("retry-after"));
    assert!(w.fake.s.borrow().sandboxes.is_empty());
    // Minutes used up while running: the next start is refused, the running sandbox is not cut.
    w.limits(json!({"compute_minutes_month": 5})).await;
    assert_eq!(w.start().await.status, 200);
    w.app.clock.advance_ms(6 * 60_000);
    assert_eq!(w.exec(json!({"command": "echo still"})).await.status, 200);
    w.app
        .request("DELETE", &w.path(""), Some(&w.token), None, Bytes::new())
        .await;
    w.start().await.problem(402, "quota_compute_minutes");
}

/// Another project of the world's user; its id.
async fn new_project(w: &World, token: &str, name: &str) -> String {
    let r = w
        .app
        .json(
            "POST",
            "/v1/projects",
            Some(token),
            json!({"name": name, "template": "static-html"}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.json());
    r.json()["id"].as_str().expect("id").to_owned()
}

async fn start_project(w: &World, token: &str, project: &str) -> Res {
    w.app
        .request(
            "POST",
            &format!("/v1/projects/{project}/sandbox"),
            Some(token),
            None,
            Bytes::new(),
        )
        .await
}

/// The resources the fake was asked for when it made the project's sandbox.
fn resources_of(w: &World, project: &str) -> Option<(i64, i64, i64)> {
    let s = w.fake.s.borrow();
    s.sandboxes
        .values()
        .find(|sb| sb.labels["everjust_project"] == project)
        .expect("the project's sandbox")
        .resources
}

#[tokio::test]
async fn an_image_sandbox_is_sized_by_its_owners_tier_and_an_admin_override_changes_it() {
    let w = world_with(&[
        ("DAYTONA_IMAGE", "node:22-bookworm"),
        ("ADMIN_EMAILS", "root@example.com"),
    ])
    .await;
    let (admin, _, _) = w.app.signup("root@example.com").await;
    assert_eq!(w.start().await.status, 200);
    let sb = w.fake.only();
    assert_eq!(sb.image.as_deref(), Some("node:22-bookworm"));
    assert_eq!(sb.snapshot, None);
    assert_eq!(
        resources_of(&w, &w.project),
        Some((1, 1, 3)),
        "free: 1 CPU, 1 GiB, 3 GiB"
    );

    let (pro, _, pro_id) = w.app.signup("bo@example.com").await;
    let r = w
        .app
        .json(
            "PATCH",
            &format!("/v1/admin/users/{pro_id}"),
            Some(&admin),
            json!({"tier": "pro"}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.json());
    let bo_site = new_project(&w, &pro, "bo-site").await;
    assert_eq!(start_project(&w, &pro, &bo_site).await.status, 200);
    assert_eq!(
        resources_of(&w, &bo_site),
        Some((2, 4, 10)),
        "pro: 2 CPUs, 4 GiB, 10 GiB"
    );

    let r = w
        .app
        .json(
            "PATCH",
            &format!("/v1/admin/users/{pro_id}"),
            Some(&admin),
            json!({"limits": {"sandbox_cpu": 4, "sandbox_memory_gib": 8}}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.json());
    assert_eq!(r.json()["limits"]["sandbox_cpu"], 4);
    let bo_api = new_project(&w, &pro, "bo-api").await;
    assert_eq!(start_project(&w, &pro, &bo_api).await.status, 200);
    assert_eq!(resources_of(&w, &bo_api), Some((4, 8, 10)));
}

#[tokio::test]
async fn a_snapshot_sandbox_is_made_without_resources() {
    for (extra, snapshot) in [
        (
            vec![("DAYTONA_SNAPSHOT", "everjust-node")],
            Some("everjust-node"),
        ),
        (vec![], None),
    ] {
        let w = world_with(&extra).await;
        let r = w.start().await;
        assert_eq!(r.status, 200, "{}", r.json());
        let sb = w.fake.only();
        assert_eq!(sb.snapshot.as_deref(), snapshot);
        assert_eq!(
            (sb.image, sb.resources),
            (None, None),
            "Daytona refuses resources with a snapshot"
        );
    }
}

#[test]
fn both_a_snapshot_and_an_image_is_a_configuration_error() {
    let mut v = vars();
    v.extend([
        ("JWT_SECRET", "test-secret-test-secret-test-secret-0123"),
        ("DAYTONA_SNAPSHOT", "s"),
        ("DAYTONA_IMAGE", "node:22"),
    ]);
    let vars: std::collections::HashMap<String, String> = v
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    let e = everjust_core::config::Config::from_vars(|k| vars.get(k).cloned())
        .expect_err("both refused");
    assert_eq!(e.name, "DAYTONA_IMAGE");
}

#[tokio::test]
async fn a_start_over_the_running_sandboxes_quota_is_refused_and_stopping_one_frees_a_slot() {
    let w = world().await;
    assert_eq!(w.start().await.status, 200);
    let other = new_project(&w, &w.token, "second").await;
    let r = start_project(&w, &w.token, &other).await;
    let p = r.problem(429, "quota_sandboxes");
    assert_eq!(p["limit"], 1);
    assert_eq!(p["running_projects"], json!([w.project]));
    assert!(p["detail"].as_str().expect("detail").contains("1 running"));
    let exec = w
        .app
        .json(
            "POST",
            &format!("/v1/projects/{other}/sandbox/exec"),
            Some(&w.token),
            json!({"command": "ls"}),
        )
        .await;
    exec.problem(429, "quota_sandboxes");
    assert_eq!(w.fake.s.borrow().sandboxes.len(), 1, "no sandbox was made");
    assert!(store::load(w.app.ports.sql.as_ref(), &other)
        .await
        .expect("load")
        .is_none());
    // The running one keeps working.
    assert_eq!(w.exec(json!({"command": "pwd"})).await.status, 200);

    let stop = w
        .app
        .request("DELETE", &w.path(""), Some(&w.token), None, Bytes::new())
        .await;
    assert_eq!(stop.status, 202, "{}", stop.json());
    let r = start_project(&w, &w.token, &other).await;
    assert_eq!(r.status, 200, "{}", r.json());
    // And now the first one waits for a slot; a higher cap lets both run.
    w.start().await.problem(429, "quota_sandboxes");
    w.limits(json!({"sandboxes_running": 2})).await;
    assert_eq!(w.start().await.status, 200);
}

#[tokio::test]
async fn two_starts_racing_for_the_last_running_slot_let_exactly_one_through() {
    let w = world().await;
    let other = new_project(&w, &w.token, "second").await;
    // Each start on a connection of its own, so their transactions really interleave.
    let (a, b) = (
        w.app.on_own_connection().await,
        w.app.on_own_connection().await,
    );
    let path_a = format!("/v1/projects/{}/sandbox", w.project);
    let path_b = format!("/v1/projects/{other}/sandbox");
    let (ra, rb) = futures_util::future::join(
        Box::pin(a.request("POST", &path_a, Some(&w.token), None, Bytes::new())),
        Box::pin(b.request("POST", &path_b, Some(&w.token), None, Bytes::new())),
    )
    .await;
    let mut statuses = [ra.status, rb.status];
    statuses.sort_unstable();
    assert_eq!(
        statuses,
        [200, 429],
        "one start wins the slot, the other is refused: {} / {}",
        ra.json(),
        rb.json()
    );
    let loser = if ra.status == 429 { &ra } else { &rb };
    loser.problem(429, "quota_sandboxes");
    assert_eq!(w.fake.s.borrow().sandboxes.len(), 1, "one sandbox was made");
    let running = w
        .app
        .ports
        .sql
        .query(
            "SELECT count(*)::int8 AS n FROM sandboxes WHERE owner_id = $1 AND state = 'started'",
            &[w.user.as_str().into()],
        )
        .await
        .expect("count")[0]
        .int("n")
        .expect("n");
    assert_eq!(running, 1);
}

#[tokio::test]
async fn a_preview_link_of_another_port_is_given_and_bad_ports_are_refused() {
    let w = world().await;
    assert_eq!(w.start().await.status, 200);
    let get = |q: &'static str| {
        let path = w.path(q);
        let token = w.token.clone();
        let app = &w.app;
        async move { app.get(&path, Some(&token)).await }
    };
    let r = get("?port=5173").await;
    assert_eq!(r.status, 200, "{}", r.json());
    let doc = r.json();
    assert_eq!(doc["preview_port"], 5173);
    assert!(doc["preview_url"]
        .as_str()
        .expect("url")
        .starts_with("https://5173-tok-"));
    // The app's own link stays as it was.
    let doc = get("").await.json();
    assert_eq!(doc["preview_port"], 3000);
    assert!(doc["preview_url"]
        .as_str()
        .expect("url")
        .starts_with("https://3000-tok-"));
    for bad in [
        "?port=80",
        "?port=0",
        "?port=65536",
        "?port=abc",
        "?port=",
        "?port=-3000",
    ] {
        get(bad).await.problem(400, "invalid_port");
    }
    assert_eq!(
        w.row()
            .await
            .preview_url
            .as_deref()
            .map(|u| u.starts_with("https://3000-")),
        Some(true)
    );
}

#[tokio::test]
async fn without_daytona_the_static_provider_answers_and_commands_cannot_run() {
    let app = TestApp::new().await;
    let (t, _, _) = app.signup("ada@example.com").await;
    let p = app.project(&t, "site").await;
    let r = app
        .request(
            "POST",
            &format!("/v1/projects/{p}/sandbox"),
            Some(&t),
            None,
            Bytes::new(),
        )
        .await;
    assert_eq!(
        (r.status, r.json()["provider"].as_str()),
        (200, Some("static"))
    );
    let r = app
        .json(
            "POST",
            &format!("/v1/projects/{p}/sandbox/exec"),
            Some(&t),
            json!({"command": "ls"}),
        )
        .await;
    r.problem(409, "no_sandbox");
    let r = app
        .request(
            "DELETE",
            &format!("/v1/projects/{p}/sandbox"),
            Some(&t),
            None,
            Bytes::new(),
        )
        .await;
    assert_eq!(r.status, 204);
}

impl World {
    /// A streamed exec: its events in order, (name, data). Logs in again
    /// after (the manual clock's keep-alive ticks move it a lot).
    async fn exec_events(&mut self, body: Value) -> Vec<(String, Value)> {
        let req = http::Request::post(self.path("/exec"))
            .header("authorization", format!("Bearer {}", self.token))
            .header("content-type", "application/json")
            .header("accept", "text/event-stream")
            .body(Bytes::from(body.to_string()))
            .expect("req");
        let res = everjust_core::handle(&self.app.ports, req, everjust_core::Meta::default()).await;
        assert_eq!(
            res.headers()["content-type"],
            "text/event-stream; charset=utf-8"
        );
        let body = match res.into_body() {
            everjust_core::Body::Stream(mut s) => {
                use futures_util::StreamExt;
                let mut out = Vec::new();
                while let Some(chunk) = s.next().await {
                    out.extend_from_slice(&chunk);
                    // The manual clock makes keep-alive ticks instant: let the database connection run.
                    tokio::task::yield_now().await;
                }
                String::from_utf8(out).expect("utf8")
            }
            other => panic!("not a stream: {other:?}"),
        };
        self.relogin().await;
        body.split("\n\n")
            .filter_map(|block| {
                let name = block.lines().find_map(|l| l.strip_prefix("event: "))?;
                let data = block.lines().find_map(|l| l.strip_prefix("data: "))?;
                Some((name.to_owned(), serde_json::from_str(data).expect("data")))
            })
            .collect()
    }
}

fn names(events: &[(String, Value)]) -> Vec<&str> {
    events.iter().map(|(n, _)| n.as_str()).collect()
}

fn streamed_text(events: &[(String, Value)]) -> String {
    events
        .iter()
        .filter(|(n, _)| n == "output")
        .map(|(_, d)| d["text"].as_str().expect("text"))
        .collect()
}

#[tokio::test]
async fn streamed_exec_sends_start_then_output_and_exit() {
    let mut w = world().await;
    // Started first: the manual clock's instant keep-alive ticks would outrun a start's deadline.
    assert_eq!(w.start().await.status, 200);
    let events = w.exec_events(json!({"command": "echo streamed"})).await;
    assert_eq!(names(&events), ["start", "output", "exit"], "{events:?}");
    assert_eq!(events[1].1, json!({"text": "streamed\n"}));
    assert_eq!(events[2].1["exit_code"], 0);
    // In the project's directory, with the command's exit code.
    let events = w.exec_events(json!({"command": "pwd"})).await;
    assert_eq!(streamed_text(&events), format!("{DIR}\n"));
    let events = w.exec_events(json!({"command": "cat missing.txt"})).await;
    assert_eq!(events.last().expect("exit").1["exit_code"], 1, "{events:?}");
    // Each command had a session of its own, deleted after it.
    assert!(w.fake.s.borrow().sessions.is_empty());
    assert_eq!(
        w.fake.count("/process/execute"),
        0,
        "no synchronous execute"
    );
}

#[tokio::test]
async fn streamed_output_arrives_as_the_command_prints_it_before_its_exit() {
    let mut w = world().await;
    assert_eq!(w.start().await.status, 200);
    let events = w.exec_events(json!({"command": "slow-echo 4 1000"})).await;
    let n = names(&events);
    assert_eq!(n.first(), Some(&"start"), "{events:?}");
    assert_eq!(n.last(), Some(&"exit"), "{events:?}");
    let outputs = n.iter().filter(|e| **e == "output").count();
    assert!(outputs >= 4, "a line per read at least: {events:?}");
    assert!(
        n[1..n.len() - 1].iter().all(|e| *e == "output"),
        "{events:?}"
    );
    // The first line went out alone, long before the last was printed.
    assert_eq!(events[1].1["text"], "line 1\n");
    assert_eq!(streamed_text(&events), "line 1\nline 2\nline 3\nline 4\n");
    let exit = &events.last().expect("exit").1;
    assert_eq!(
        (exit["exit_code"].as_i64(), exit["timed_out"].as_bool()),
        (Some(0), Some(false))
    );
    assert!(w.fake.s.borrow().sessions.is_empty(), "session deleted");
}

#[tokio::test]
async fn a_streamed_command_over_the_time_limit_is_killed_by_deleting_its_session() {
    let mut w = world().await;
    assert_eq!(w.start().await.status, 200);
    let events = w
        .exec_events(json!({"command": "slow-echo 100 1000", "timeout_secs": 2}))
        .await;
    let exit = &events.last().expect("exit").1;
    assert_eq!(events.last().expect("exit").0, "exit", "{events:?}");
    assert_eq!(
        (
            exit["timed_out"].as_bool(),
            exit["exit_code"].as_i64(),
            exit["timeout_secs"].as_i64()
        ),
        (Some(true), Some(124), Some(2))
    );
    let text = streamed_text(&events);
    assert!(text.starts_with("line 1\nline 2\n"), "{text}");
    assert!(!text.contains("line 5\n"), "{text}");
    assert!(
        text.ends_with("\n[killed: the command ran longer than its time limit of 2 s]"),
        "{text}"
    );
    assert!(w.fake.s.borrow().sessions.is_empty(), "session deleted");
    assert_eq!(w.fake.count("DELETE /toolbox/sb1/process/session/"), 1);
    // The tier's limit caps what a request asks for, here too.
    w.limits(json!({"command_timeout_secs": 3})).await;
    let events = w
        .exec_events(json!({"command": "sleep 4", "timeout_secs": 600}))
        .await;
    let exit = &events.last().expect("exit").1;
    assert_eq!(
        (exit["timed_out"].as_bool(), exit["timeout_secs"].as_i64()),
        (Some(true), Some(3))
    );
}

#[tokio::test]
async fn streamed_output_over_the_size_limit_is_cut_with_the_marker() {
    let mut w = world().await;
    assert_eq!(w.start().await.status, 200);
    let events = w.exec_events(json!({"command": "seq 100000"})).await;
    let text = streamed_text(&events);
    assert!(text.starts_with("1\n2\n") && text.ends_with("99999\n100000\n"));
    assert!(text.contains("bytes of output cut ("), "marker");
    assert!(text.len() < 64 * 1024 + 200);
    assert_eq!(events.last().expect("exit").1["truncated"], true);
}

#[tokio::test]
async fn a_streamed_exec_during_an_outage_ends_with_a_retryable_error_event() {
    let mut w = world().await;
    assert_eq!(w.start().await.status, 200);
    w.fake.s.borrow_mut().down = true;
    let events = w.exec_events(json!({"command": "echo hi"})).await;
    w.fake.s.borrow_mut().down = false;
    assert_eq!(names(&events), ["start", "error"], "{events:?}");
    assert_eq!(events[1].1["code"], "sandbox_unavailable");
    assert_eq!(events[1].1["status"], 503);
}

// ------------------------------------------------------------------ the agent

fn ev(name: &str, data: Value) -> String {
    format!("event: {name}\ndata: {data}\n\n")
}

/// An Anthropic stream with text and tool calls.
fn turn(text: &str, tools: &[(&str, &str, Value)]) -> String {
    let mut s = ev(
        "message_start",
        json!({"type":"message_start","message":{"id":"msg_x","type":"message","role":"assistant","model":"claude-sonnet-4-5","content":[],"usage":{"input_tokens":10,"output_tokens":1}}}),
    );
    s += &ev(
        "content_block_start",
        json!({"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}),
    );
    s += &ev(
        "content_block_delta",
        json!({"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":text}}),
    );
    s += &ev(
        "content_block_stop",
        json!({"type":"content_block_stop","index":0}),
    );
    for (i, (id, name, input)) in tools.iter().enumerate() {
        let index = i + 1;
        s += &ev(
            "content_block_start",
            json!({"type":"content_block_start","index":index,"content_block":{"type":"tool_use","id":id,"name":name,"input":{}}}),
        );
        s += &ev(
            "content_block_delta",
            json!({"type":"content_block_delta","index":index,"delta":{"type":"input_json_delta","partial_json":input.to_string()}}),
        );
        s += &ev(
            "content_block_stop",
            json!({"type":"content_block_stop","index":index}),
        );
    }
    let stop = if tools.is_empty() {
        "end_turn"
    } else {
        "tool_use"
    };
    s += &ev(
        "message_delta",
        json!({"type":"message_delta","delta":{"stop_reason":stop},"usage":{"output_tokens":5}}),
    );
    s += &ev("message_stop", json!({"type":"message_stop"}));
    s
}

#[tokio::test]
async fn the_agent_writes_a_file_runs_a_command_and_reads_its_output() {
    let w = world().await;
    let sse = [("content-type", "text/event-stream")];
    w.model.push(
        200,
        &sse,
        turn(
            "Writing and running.",
            &[
                (
                    "tu_1",
                    "write_file",
                    json!({"path": "hello.txt", "content": "hello from the agent"}),
                ),
                ("tu_2", "run_command", json!({"command": "cat hello.txt"})),
            ],
        ),
    );
    w.model.push(200, &sse, turn("It printed the file.", &[]));
    let session = w.app.session(&w.token, &w.project).await;
    let r = w
        .app
        .json(
            "POST",
            &format!("/v1/sessions/{session}/messages"),
            Some(&w.token),
            json!({"content": "make and run"}),
        )
        .await;
    assert!(r.status == 202 || r.status == 200, "{}", r.json());
    let requests = w.model.requests.borrow();
    assert_eq!(requests.len(), 2, "two model calls");
    let second = &requests[1].1;
    let results: Vec<&Value> = second["messages"]
        .as_array()
        .expect("messages")
        .iter()
        .flat_map(|m| m["content"].as_array().into_iter().flatten())
        .filter(|b| b["type"] == "tool_result")
        .collect();
    let run = results
        .iter()
        .find(|b| b["tool_use_id"] == "tu_2")
        .expect("run_command result");
    let text = run["content"].to_string();
    assert!(
        text.contains("Exit code: 0") && text.contains("hello from the agent"),
        "{text}"
    );
    assert!(run["is_error"].as_bool() != Some(true), "{run}");
    // The sandbox holds the file the agent wrote.
    assert!(w
        .fake
        .only()
        .files
        .contains_key(&format!("{DIR}/hello.txt")));
}

#[tokio::test]
async fn without_a_sandbox_run_command_tells_the_model_so() {
    let model = Rc::new(ScriptedHttp::default());
    let app = TestApp::build(&vars()[4..], model.clone()).await;
    let (t, _, _) = app.signup("ada@example.com").await;
    let p = app.project(&t, "site").await;
    let sse = [("content-type", "text/event-stream")];
    model.push(
        200,
        &sse,
        turn(
            "Running.",
            &[("tu_1", "run_command", json!({"command": "ls"}))],
        ),
    );
    model.push(200, &sse, turn("No sandbox.", &[]));
    let session = app.session(&t, &p).await;
    app.send_message(&t, &session, "run").await;
    let requests = model.requests.borrow();
    let text = requests[1].1.to_string();
    assert!(text.contains("No sandbox is configured"), "{text}");
}

#[test]
fn the_test_secret_is_valid_base64() {
    let b64 = SECRET.trim_start_matches("whsec_");
    assert!(base64::engine::general_purpose::STANDARD
        .decode(b64)
        .is_ok());
}
