//! Chat: sessions and messages, the agent loop with its tools, run events
//! and their three wire encodings, and how runs reach live readers (a
//! Durable Object room on Workers, the Postgres event log elsewhere).

pub mod agent;
pub mod early;
pub mod encode;
pub mod events;
pub mod handlers;
pub mod inline;
pub mod pricing;
pub mod prompt;
pub mod room;
pub mod tools;

/// Erases the rooms of sessions whose rows were deleted (with their
/// project or their user's account), after the answer: a room keeps the
/// session's events in its own storage, which no Postgres cascade reaches.
/// A room that cannot be reached is logged.
pub async fn purge_rooms(ports: &crate::ports::Ports, sessions: Vec<String>) {
    let Some(rooms) = ports.rooms.clone() else {
        return;
    };
    if sessions.is_empty() {
        return;
    }
    ports
        .after_response(Box::pin(async move {
            let done =
                futures_util::future::join_all(sessions.iter().map(|s| rooms.purge(s))).await;
            for (session, result) in sessions.iter().zip(done) {
                if let Err(e) = result {
                    crate::log::event(
                        "error",
                        "room_purge_failed",
                        serde_json::json!({ "session_id": session, "error": e.to_string() }),
                    );
                }
            }
        }))
        .await;
}
