//! The logic of a live session room (one per session), independent of its
//! host: the Durable Object on Workers supplies a synchronous event log (its
//! SQLite storage) and a fan-out to connected sockets and SSE readers.
//!
//! Replay without gap or duplicate rests on one rule: appending an event and
//! broadcasting it happen with no `.await` between, and so do a joining
//! reader's replay and its registration for live events.

use std::cell::Cell;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use super::agent::RunSink;
use super::events::{Event, EventBody};
use crate::error::{ApiError, ApiResult};

/// More events than any driver publishes before they are stored (a room
/// holds at most 63 unwritten, the inline driver 191, see their flush
/// rules). A reader may have seen events of a run whose driver then died
/// before storing them.
pub const UNSTORED_MAX: i64 = 256;

/// The end (`run_finished`, incomplete, `driver_lost`) of the run `run_id`
/// whose driver died, when the session's last stored event is
/// `last_stored`. It is numbered past every number a reader may have seen,
/// so a reader resuming from any of them gets the end, and the next run's
/// events, instead of skipping them. (Numbers are increasing, not dense.)
pub fn lost_run_end(run_id: &str, last_stored: i64) -> Event {
    Event {
        seq: last_stored + UNSTORED_MAX + 1,
        run_id: run_id.to_owned(),
        body: EventBody::RunFinished {
            status: "incomplete".into(),
            stop_reason: "driver_lost".into(),
            usage: crate::llm::Usage::default(),
            cost_micros: 0,
        },
    }
}

/// The room's buffer of events: synchronous, strongly consistent storage.
pub trait RoomLog {
    /// Appends `ev`, whose native JSON ([`event_message`]) is `json`.
    fn append(&self, ev: &Event, json: &str) -> Result<(), String>;
    /// Events with `seq > after`, oldest first, at most `limit`.
    fn after(&self, after: i64, limit: usize) -> Result<Vec<Event>, String>;
    fn last_seq(&self) -> i64;
}

/// The room's live readers.
pub trait Fanout {
    /// Delivers `ev`, whose native JSON ([`event_message`]) is `json`.
    fn broadcast(&self, ev: &Event, json: &str);
}

/// A [`RunSink`] writing to a room: number, append, broadcast, all without
/// yielding. Each event is serialized once, for its storage, the WebSocket
/// frame and the native SSE event alike.
pub struct RoomSink<'a> {
    pub log: &'a dyn RoomLog,
    pub fanout: &'a dyn Fanout,
    pub cancel: &'a Cell<bool>,
}

#[async_trait(?Send)]
impl RunSink for RoomSink<'_> {
    async fn emit(&self, run_id: &str, body: EventBody) -> ApiResult<Event> {
        let ev = Event {
            seq: self.log.last_seq() + 1,
            run_id: run_id.to_owned(),
            body,
        };
        let json = event_message(&ev);
        self.log.append(&ev, &json).map_err(ApiError::internal)?;
        self.fanout.broadcast(&ev, &json);
        Ok(ev)
    }

    async fn cancel_requested(&self) -> bool {
        self.cancel.get()
    }
}

/// What a WebSocket client may send.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ClientMessage {
    /// Send me every event after `after`, then keep me live.
    Resume {
        after: i64,
    },
    /// I have seen everything up to `seq` (for presence cursors).
    Ack {
        seq: i64,
    },
    Ping,
}

impl ClientMessage {
    pub fn parse(text: &str) -> Option<ClientMessage> {
        if text.len() > 4096 {
            return None;
        }
        serde_json::from_str(text).ok()
    }
}

/// One connected member, as shown to the others.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Presence {
    pub connection_id: String,
    pub user_id: String,
    pub name: String,
    /// Last sequence number this connection has acknowledged.
    pub seen: i64,
}

/// The presence message sent to every socket when someone joins or leaves.
pub fn presence_message(members: &[Presence]) -> String {
    serde_json::json!({ "type": "presence", "seq": 0, "users": members }).to_string()
}

/// A WebSocket frame for one event (the native encoding).
pub fn event_message(ev: &Event) -> String {
    serde_json::to_string(ev).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;

    use super::*;

    #[derive(Default)]
    struct VecLog(RefCell<Vec<Event>>);
    impl RoomLog for VecLog {
        fn append(&self, ev: &Event, json: &str) -> Result<(), String> {
            assert_eq!(json, event_message(ev));
            self.0.borrow_mut().push(ev.clone());
            Ok(())
        }
        fn after(&self, after: i64, limit: usize) -> Result<Vec<Event>, String> {
            Ok(self
                .0
                .borrow()
                .iter()
                .filter(|e| e.seq > after)
                .take(limit)
                .cloned()
                .collect())
        }
        fn last_seq(&self) -> i64 {
            self.0.borrow().last().map_or(0, |e| e.seq)
        }
    }
    #[derive(Default)]
    struct Seen(RefCell<Vec<i64>>);
    impl Fanout for Seen {
        fn broadcast(&self, ev: &Event, json: &str) {
            assert_eq!(json, event_message(ev));
            self.0.borrow_mut().push(ev.seq);
        }
    }

    #[tokio::test]
    async fn sink_numbers_appends_and_broadcasts_in_order() {
        let (log, seen, cancel) = (VecLog::default(), Seen::default(), Cell::new(false));
        let sink = RoomSink {
            log: &log,
            fanout: &seen,
            cancel: &cancel,
        };
        for i in 0..3 {
            sink.emit("run_1", EventBody::StepStarted { step: i })
                .await
                .expect("emit");
        }
        assert_eq!(*seen.0.borrow(), vec![1, 2, 3]);
        assert_eq!(log.after(1, 10).expect("after").len(), 2);
        assert!(!sink.cancel_requested().await);
        cancel.set(true);
        assert!(sink.cancel_requested().await);
    }

    #[test]
    fn client_messages_parse_strictly() {
        assert_eq!(
            ClientMessage::parse(r#"{"type":"resume","after":5}"#),
            Some(ClientMessage::Resume { after: 5 })
        );
        assert_eq!(
            ClientMessage::parse(r#"{"type":"ping"}"#),
            Some(ClientMessage::Ping)
        );
        assert_eq!(ClientMessage::parse(r#"{"type":"resume"}"#), None);
        assert_eq!(ClientMessage::parse("garbage"), None);
    }
}
