//! The room port: where a session's runs live when the platform has
//! something better than the request (a Durable Object per session on
//! Workers). Without it, runs are driven inline with the Postgres event log
//! as the room (see `chat::inline`).

use async_trait::async_trait;

use crate::chat::agent::RunSpec;
use crate::chat::early::Lease;
use crate::chat::encode::Protocol;
use crate::http::body::Body;

#[derive(Debug, thiserror::Error)]
pub enum RoomError {
    /// The room still has an active run (Postgres thought it had ended).
    #[error("room: a run is still active")]
    Busy,
    #[error("room: {0}")]
    Failed(String),
}

/// Who joins a room over a WebSocket (already authenticated by ticket).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Member {
    pub user_id: String,
    pub name: String,
}

#[async_trait(?Send)]
pub trait Rooms {
    /// Hands the run to its session's room, which drives it to its end even
    /// when every reader is gone. Returns the room's sequence number before
    /// the run's first event (readers of the run resume after it) and, when
    /// `stream` names a protocol, the run's events as [`Rooms::events`]
    /// after that number would give them (one call to the room, not two).
    async fn start(
        &self,
        spec: &RunSpec,
        stream: Option<Protocol>,
    ) -> Result<(i64, Option<Body>), RoomError>;

    /// The session's events after `after` in `protocol`, then the live tail
    /// until the running run ends (SSE bytes). A platform may answer with
    /// its own stream type (`Body::Native`) so the bytes pass through
    /// without being copied into and out of the core.
    async fn events(
        &self,
        session_id: &str,
        after: i64,
        protocol: Protocol,
    ) -> Result<Body, RoomError>;

    /// Gets the session's room ready ahead of its first run (a new Durable
    /// Object is created and its storage opened on its first request, which
    /// would otherwise be added to the first answer's time to first token).
    /// Best effort: a room that could not be prepared is made by `start`.
    /// With a lease, the room may start its first message's model call
    /// while that message is admitted ([`crate::chat::early`]).
    async fn prepare(&self, _session_id: &str, _lease: Option<Lease>) {}

    /// Takes the session's lease, if the room holds one for `owner_id`
    /// that has not expired; a lease is used once.
    fn take_lease(&self, _session_id: &str, _owner_id: &str) -> Option<Lease> {
        None
    }

    /// Erases what the session's room holds (its event log, its tickets):
    /// its session is gone with its project or its user's account. A run
    /// still going is stopped and erased once it ended. Without rooms the
    /// events live in Postgres and go with the session's rows.
    async fn purge(&self, _session_id: &str) -> Result<(), RoomError> {
        Ok(())
    }

    /// Asks the running run of the session to stop; whether the room holds
    /// a run (one it lost, with its isolate, before storing it, it does not).
    async fn cancel(&self, session_id: &str) -> Result<bool, RoomError>;

    /// Answers a WebSocket upgrade for `member` (the original request's
    /// upgrade headers are the adapter's to keep).
    async fn websocket(
        &self,
        session_id: &str,
        member: &Member,
        after: Option<i64>,
    ) -> Result<http::Response<Body>, RoomError>;
}
