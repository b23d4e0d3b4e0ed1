//! The `Rooms` port over the `SessionRoom` Durable Object: one object per
//! session (named by the session id), reached over internal HTTP. The
//! routes are the object's own (see `session_room`): POST /start,
//! GET /events, POST /cancel, GET /ws.

use async_trait::async_trait;
use bytes::Bytes;
use everjust_core::chat::agent::RunSpec;
use everjust_core::chat::early::Lease;
use everjust_core::chat::encode::Protocol;
use everjust_core::ports::rooms::{Member, RoomError, Rooms};
use everjust_core::Body;
use sha2::{Digest, Sha256};
use wasm_bindgen::JsValue;
use worker::{Headers, Method, ObjectNamespace, Request, RequestInit, Stub, Url};

/// The origin of requests to a room; only the path and query matter.
const ROOM_ORIGIN: &str = "https://session-room.internal";

/// Request headers the room reads.
pub const TICKET_HEADER: &str = "x-everjust-ticket-sha256";
/// On a streamed start, the room's sequence number before the run.
pub const LAST_SEQ_HEADER: &str = "x-everjust-last-seq";

/// What the adapter keeps of a WebSocket upgrade request for the room: the
/// core hands the port only the session, the member and the resume point.
pub struct Upgrade {
    /// SHA-256 (hex) of the single-use ticket, so the room can refuse one it
    /// has seen (Workers KV, where tickets live, is eventually consistent).
    ticket_sha256: Option<String>,
    protocols: Option<String>,
}

impl Upgrade {
    /// `Some` when `req` asks for a WebSocket.
    pub fn of<B>(req: &http::Request<B>) -> Option<Upgrade> {
        let header = |name: &str| {
            req.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        if !header("upgrade").is_some_and(|v| v.eq_ignore_ascii_case("websocket")) {
            return None;
        }
        let ticket = req.uri().query().and_then(|q| {
            Url::parse(&format!("{ROOM_ORIGIN}/?{q}"))
                .ok()?
                .query_pairs()
                .find(|(k, _)| k == "ticket")
                .map(|(_, v)| v.into_owned())
        });
        Some(Upgrade {
            ticket_sha256: ticket.map(|t| hex(&Sha256::digest(t.as_bytes()))),
            protocols: header("sec-websocket-protocol"),
        })
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

pub struct DurableRooms {
    namespace: Result<ObjectNamespace, String>,
    upgrade: Option<Upgrade>,
}

fn room_err(context: &str) -> impl Fn(worker::Error) -> RoomError + '_ {
    move |e| RoomError::Failed(format!("{context}: {e}"))
}

impl DurableRooms {
    pub fn new(namespace: worker::Result<ObjectNamespace>, upgrade: Option<Upgrade>) -> Self {
        Self {
            namespace: namespace.map_err(|e| format!("binding: {e}")),
            upgrade,
        }
    }

    fn stub(&self, session_id: &str) -> Result<Stub, RoomError> {
        let namespace = self
            .namespace
            .as_ref()
            .map_err(|e| RoomError::Failed(e.clone()))?;
        namespace
            .id_from_name(session_id)
            .and_then(|id| id.get_stub())
            .map_err(room_err("stub"))
    }

    /// One request to the session's room.
    async fn call(
        &self,
        session_id: &str,
        method: Method,
        path: &str,
        query: &[(&str, &str)],
        headers: Headers,
        body: Option<String>,
    ) -> Result<worker::Response, RoomError> {
        let mut url = Url::parse(ROOM_ORIGIN)
            .and_then(|u| u.join(path))
            .map_err(|e| RoomError::Failed(format!("url: {e}")))?;
        url.query_pairs_mut()
            .append_pair("session", session_id)
            .extend_pairs(query);
        let mut init = RequestInit::new();
        init.with_method(method).with_headers(headers);
        if let Some(body) = body {
            init.with_body(Some(JsValue::from_str(&body)));
        }
        let req = Request::new_with_init(url.as_str(), &init).map_err(room_err("request"))?;
        self.stub(session_id)?
            .fetch_with_request(req)
            .await
            .map_err(room_err(path))
    }
}

/// The room's answer as an error, when it is not a success.
async fn refused(what: &str, mut res: worker::Response) -> RoomError {
    let status = res.status_code();
    let body = res.text().await.unwrap_or_default();
    RoomError::Failed(format!("{what}: the room answered {status}: {body}"))
}

#[async_trait(?Send)]
impl Rooms for DurableRooms {
    async fn start(
        &self,
        spec: &RunSpec,
        stream: Option<Protocol>,
    ) -> Result<(i64, Option<Body>), RoomError> {
        let body = serde_json::to_string(spec).map_err(|e| RoomError::Failed(e.to_string()))?;
        let headers = Headers::new();
        headers
            .set("content-type", "application/json")
            .map_err(room_err("headers"))?;
        let mut res = self
            .call(
                &spec.session_id,
                Method::Post,
                "/start",
                &stream
                    .map(|p| vec![("protocol", p.as_str())])
                    .unwrap_or_default(),
                headers,
                Some(body),
            )
            .await?;
        match res.status_code() {
            200 => {}
            409 => return Err(RoomError::Busy),
            _ => return Err(refused("start", res).await),
        }
        if stream.is_some() {
            // The run's events, after the number in the header.
            let last_seq = res
                .headers()
                .get(LAST_SEQ_HEADER)
                .map_err(room_err("start answer"))?
                .and_then(|v| v.parse().ok())
                .ok_or_else(|| RoomError::Failed("start answer: no last seq".into()))?;
            return Ok((last_seq, Some(crate::convert::PassThrough::body_of(&res))));
        }
        #[derive(serde::Deserialize)]
        struct Started {
            last_seq: i64,
        }
        let started: Started = res.json().await.map_err(room_err("start answer"))?;
        Ok((started.last_seq, None))
    }

    async fn prepare(&self, session_id: &str, lease: Option<Lease>) {
        // The lease goes to the room in this request's body; the room keeps
        // it in memory.
        let body = match lease.as_ref().map(serde_json::to_string).transpose() {
            Ok(body) => body,
            Err(e) => {
                worker::console_warn!("room prepare: lease: {e}");
                None
            }
        };
        match self
            .call(
                session_id,
                Method::Post,
                "/prepare",
                &[],
                Headers::new(),
                body,
            )
            .await
        {
            Ok(res) if res.status_code() == 204 => {}
            Ok(res) => worker::console_warn!("room prepare: {}", refused("prepare", res).await),
            Err(e) => worker::console_warn!("room prepare: {e}"),
        }
    }

    async fn events(
        &self,
        session_id: &str,
        after: i64,
        protocol: Protocol,
    ) -> Result<Body, RoomError> {
        let after = after.to_string();
        let res = self
            .call(
                session_id,
                Method::Get,
                "/events",
                &[("after", &after), ("protocol", protocol.as_str())],
                Headers::new(),
                None,
            )
            .await?;
        if res.status_code() != 200 {
            return Err(refused("events", res).await);
        }
        // The room's stream goes to the client as it is: each chunk would
        // otherwise cross into the core and back. Should it break, the
        // client resumes with Last-Event-ID.
        Ok(crate::convert::PassThrough::body_of(&res))
    }

    async fn purge(&self, session_id: &str) -> Result<(), RoomError> {
        let res = self
            .call(
                session_id,
                Method::Post,
                "/purge",
                &[],
                Headers::new(),
                None,
            )
            .await?;
        if res.status_code() != 204 {
            return Err(refused("purge", res).await);
        }
        Ok(())
    }

    async fn cancel(&self, session_id: &str) -> Result<bool, RoomError> {
        let mut res = self
            .call(
                session_id,
                Method::Post,
                "/cancel",
                &[],
                Headers::new(),
                None,
            )
            .await?;
        if res.status_code() != 200 {
            return Err(refused("cancel", res).await);
        }
        #[derive(serde::Deserialize)]
        struct Cancelled {
            active: bool,
        }
        res.json::<Cancelled>()
            .await
            .map(|c| c.active)
            .map_err(|e| RoomError::Failed(format!("cancel: {e}")))
    }

    async fn websocket(
        &self,
        session_id: &str,
        member: &Member,
        after: Option<i64>,
    ) -> Result<http::Response<Body>, RoomError> {
        let upgrade = self.upgrade.as_ref().ok_or_else(|| {
            RoomError::Failed("websocket: the request is no WebSocket upgrade".into())
        })?;
        let headers = Headers::new();
        headers
            .set("upgrade", "websocket")
            .map_err(room_err("headers"))?;
        if let Some(hash) = &upgrade.ticket_sha256 {
            headers
                .set(TICKET_HEADER, hash)
                .map_err(room_err("headers"))?;
        }
        if let Some(p) = &upgrade.protocols {
            headers
                .set("sec-websocket-protocol", p)
                .map_err(room_err("headers"))?;
        }
        let after = after.map(|a| a.to_string());
        let mut query = vec![
            ("user_id", member.user_id.as_str()),
            ("name", member.name.as_str()),
        ];
        if let Some(a) = &after {
            query.push(("after", a));
        }
        let mut res = self
            .call(session_id, Method::Get, "/ws", &query, headers, None)
            .await?;
        let status = res.status_code();
        if status == 101 {
            let mut out = http::Response::new(Body::Native(Box::new(res)));
            *out.status_mut() = http::StatusCode::SWITCHING_PROTOCOLS;
            return Ok(out);
        }
        // A refusal (a ticket already used) goes back as the room wrote it.
        let content_type = res
            .headers()
            .get("content-type")
            .ok()
            .flatten()
            .unwrap_or_else(|| "application/problem+json".into());
        let body = res.bytes().await.map_err(room_err("ws answer"))?;
        let status = http::StatusCode::from_u16(status)
            .map_err(|e| RoomError::Failed(format!("ws answer: {e}")))?;
        if !status.is_client_error() {
            return Err(RoomError::Failed(format!(
                "ws: the room answered {status}: {}",
                String::from_utf8_lossy(&body)
            )));
        }
        let mut out = http::Response::new(Body::Full(Bytes::from(body)));
        *out.status_mut() = status;
        if let Ok(v) = http::HeaderValue::from_str(&content_type) {
            out.headers_mut().insert(http::header::CONTENT_TYPE, v);
        }
        Ok(out)
    }
}

/// The session of a request the Worker hands to that session's room as it
/// is (`forward`), to be answered there: sending a message, by a caller
/// with a valid access token of ours. The room keeps a Postgres
/// connection between requests, which a Worker cannot, so the message's
/// admission opens none, and the run starts in the room without a second
/// request to it. Other callers (an OIDC token, none, an invalid one) are
/// answered by the Worker as before: a room is made only for a signed-in
/// user's request, which the room's handler then checks in full.
pub fn forwarded_session(req: &web_sys::Request, env: &worker::Env) -> Option<String> {
    if req.method() != "POST" {
        return None;
    }
    let url = req.url();
    let path = url.split_once("://")?.1;
    let id = messages_session(&path[path.find('/')?..])?;
    let authorization = req.headers().get("authorization").ok()??;
    let (scheme, token) = authorization.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    let config = crate::config::load(env);
    let config = config.as_ref().as_ref().ok()?;
    use everjust_core::ports::Clock;
    everjust_core::auth::jwt::verify_access(
        config,
        crate::clock::DateClock.now_ms(),
        token.trim(),
    )?;
    Some(id.to_owned())
}

/// The session of a path (its query may follow) that sends it a message,
/// `/v1/sessions/{id}/messages`, when the id is one a session could have.
pub fn messages_session(path: &str) -> Option<&str> {
    let path = path.split(['?', '#']).next()?;
    let id = path
        .strip_prefix("/v1/sessions/")?
        .strip_suffix("/messages")?;
    let id_ok = !id.is_empty()
        && id.len() <= 64
        && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
    id_ok.then_some(id)
}

/// Hands `req` to the session's room, whose answer is the Worker's.
pub async fn forward(
    namespace: worker::Result<ObjectNamespace>,
    session_id: &str,
    req: web_sys::Request,
) -> worker::Result<worker::Response> {
    namespace?
        .id_from_name(session_id)?
        .get_stub()?
        .fetch_with_request(Request::from(req))
        .await
}
