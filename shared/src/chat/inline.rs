//! Runs driven within the request that starts them, with the Postgres event
//! log as the room: used on Spin (no Durable Objects there) and wherever no
//! room port is configured. Events are appended in batches, not one round
//! trip per token; readers replay and tail the log. A run goes on when its
//! client leaves (the adapter reads its stream to the end); a run whose
//! request died (the process did) is found by its stale heartbeat, marked
//! `incomplete`, and its partial answer kept.

use std::cell::{Cell, RefCell};

use async_trait::async_trait;
use bytes::Bytes;
use futures_channel::mpsc;
use futures_util::stream::LocalBoxStream;
use futures_util::StreamExt;

use super::agent::{self, blocks_from_events, RunSink, RunSpec};
use super::encode::{Encoder, Protocol, KEEP_ALIVE, KEEP_ALIVE_MS};
use super::events::{Event, EventBody};
use super::room::lost_run_end;
use crate::db::chat as db;
use crate::error::ApiResult;
use crate::ids;
use crate::llm::Usage;
use crate::ports::sql::{transaction, SqlError};
use crate::ports::Ports;

/// Flush the batch after this many events or this many milliseconds.
const BATCH_EVENTS: usize = 48;
const BATCH_MS: i64 = 150;
/// A run whose log has not moved for this long lost its driver.
pub const STALE_SECS: i64 = 120;
const POLL_MS: u64 = 150;

pub struct PgLogSink {
    ports: Ports,
    session_id: String,
    run_id: String,
    seq: Cell<i64>,
    batch: RefCell<Vec<Event>>,
    last_flush: Cell<i64>,
    last_cancel_check: Cell<i64>,
    cancelled: Cell<bool>,
    /// The heartbeat was set ahead ([`RunSink::quiet_for`]): the next event
    /// is flushed at once, which brings it back to now.
    quiet: Cell<bool>,
    live: Option<mpsc::UnboundedSender<Event>>,
}

impl PgLogSink {
    pub fn new(ports: Ports, spec: &RunSpec, live: Option<mpsc::UnboundedSender<Event>>) -> Self {
        let now = ports.clock.now_ms();
        Self {
            ports,
            session_id: spec.session_id.clone(),
            run_id: spec.run_id.clone(),
            seq: Cell::new(spec.first_seq),
            batch: RefCell::default(),
            last_flush: Cell::new(now),
            last_cancel_check: Cell::new(now),
            cancelled: Cell::new(false),
            quiet: Cell::new(false),
            live,
        }
    }

    pub async fn flush(&self) -> ApiResult<()> {
        let batch = std::mem::take(&mut *self.batch.borrow_mut());
        self.last_flush.set(self.ports.clock.now_ms());
        db::append_events(
            self.ports.sql.as_ref(),
            &self.session_id,
            &self.run_id,
            &batch,
        )
        .await?;
        Ok(())
    }
}

#[async_trait(?Send)]
impl RunSink for PgLogSink {
    async fn emit(&self, run_id: &str, body: EventBody) -> ApiResult<Event> {
        let seq = self.seq.get() + 1;
        self.seq.set(seq);
        let boundary = !matches!(
            body,
            EventBody::TextDelta { .. } | EventBody::ToolCallDelta { .. }
        );
        let terminal = body.is_terminal();
        let ev = Event {
            seq,
            run_id: run_id.to_owned(),
            body,
        };
        self.batch.borrow_mut().push(ev.clone());
        if let Some(tx) = &self.live {
            // A reader that went away is not an error: the run goes on.
            let _ = tx.unbounded_send(ev.clone());
        }
        let due = self.batch.borrow().len() >= BATCH_EVENTS
            || self.ports.clock.now_ms() - self.last_flush.get() >= BATCH_MS;
        if terminal
            || (boundary && due)
            || self.quiet.replace(false)
            || self.batch.borrow().len() >= BATCH_EVENTS * 4
        {
            self.flush().await?;
        }
        Ok(ev)
    }

    /// Readers get every event so far now, and the heartbeat is set ahead
    /// by `secs`: a reader finds the run lost only if it is still silent
    /// [`STALE_SECS`] after that.
    async fn quiet_for(&self, secs: i64) -> ApiResult<()> {
        self.flush().await?;
        db::heartbeat_ahead(self.ports.sql.as_ref(), &self.run_id, secs).await?;
        self.quiet.set(true);
        Ok(())
    }

    async fn cancel_requested(&self) -> bool {
        let now = self.ports.clock.now_ms();
        if !self.cancelled.get() && now - self.last_cancel_check.get() >= 500 {
            self.last_cancel_check.set(now);
            self.cancelled.set(
                db::cancel_requested(self.ports.sql.as_ref(), &self.run_id)
                    .await
                    .unwrap_or(false),
            );
        }
        self.cancelled.get()
    }
}

/// Runs `spec` while streaming its events in `protocol`. The response that
/// carries it is marked [`DrivesWork`](crate::http::body::DrivesWork): when
/// the reader goes away the adapter reads on to the run's end (Spin), and
/// the run is stored whole. Where the stream is dropped instead, the run
/// stops with it, and a later reader finds it stale and marks it
/// incomplete.
pub fn stream_run(
    ports: Ports,
    spec: RunSpec,
    protocol: Protocol,
) -> LocalBoxStream<'static, Bytes> {
    let (tx, rx) = mpsc::unbounded();
    let session = spec.session_id.clone();
    let driver = async move {
        let sink = PgLogSink::new(ports.clone(), &spec, Some(tx));
        let outcome = agent::run(&ports, &spec, &sink).await;
        if let Err(e) = sink.flush().await {
            crate::log::error("run_log_flush", &e.to_string());
        }
        // The reader gets the stream's end now; the commit is made after
        // the answer (or, where there is no work after it, before the body
        // ends).
        drop(sink);
        after_answer(&ports, spec, outcome).await;
    };
    let driver = futures_util::stream::once(driver).filter_map(|()| async { None::<Bytes> });
    let mut encoder = Encoder::new(protocol, &session);
    // Events already waiting go out in one chunk: no added latency, far
    // fewer writes when the model streams faster than the client reads.
    let events = rx
        .ready_chunks(256)
        .map(move |evs| Bytes::from(evs.iter().map(|ev| encoder.encode(ev)).collect::<String>()))
        .chain(futures_util::stream::once(async move {
            Bytes::from(Encoder::new(protocol, "").end())
        }));
    futures_util::stream::select(driver, events)
        .filter(|b| futures_util::future::ready(!b.is_empty()))
        .boxed_local()
}

/// Runs `spec` to the end without a reader.
pub async fn run_detached(ports: &Ports, spec: &RunSpec) -> agent::RunOutcome {
    let sink = PgLogSink::new(ports.clone(), spec, None);
    let outcome = agent::run(ports, spec, &sink).await;
    let _ = sink.flush().await;
    after_answer(ports, spec.clone(), outcome.clone()).await;
    outcome
}

/// [`agent::after_run`] (the commit of the run's files) after the answer.
async fn after_answer(ports: &Ports, spec: RunSpec, outcome: agent::RunOutcome) {
    let after = ports.clone();
    ports
        .after_response(Box::pin(async move {
            agent::after_run(&after, &spec, &outcome).await;
        }))
        .await;
}

/// Marks runs of the session whose driver died as incomplete, keeping the
/// partial answer rebuilt from their stored events. Each is claimed in the
/// transaction that stores its answer and its end, so two readers that
/// find it stale at once end it once. The end is numbered past whatever a
/// reader of the dead driver may have seen ([`lost_run_end`]).
pub async fn recover_stale(ports: &Ports, session_id: &str, owner_id: &str) -> ApiResult<()> {
    let sql = ports.sql.as_ref();
    for run in db::stale_runs(sql, session_id, STALE_SECS).await? {
        let events: Vec<Event> = db::events_after(sql, session_id, run.first_seq, 100_000)
            .await?
            .into_iter()
            .filter(|e| e.run_id == run.id)
            .collect();
        let blocks = blocks_from_events(&events);
        let end = lost_run_end(&run.id, events.last().map_or(run.first_seq, |e| e.seq));
        let message_id = ids::new_id(ports, "msg");
        transaction(sql, async || {
            if !db::claim_stale_run(sql, &run.id, STALE_SECS).await? {
                return Ok::<_, SqlError>(());
            }
            db::insert_message(
                sql,
                &message_id,
                session_id,
                owner_id,
                Some(&run.id),
                "assistant",
                &serde_json::to_value(&blocks).unwrap_or_default(),
                "incomplete",
                None,
                &Usage::default(),
                0,
            )
            .await?;
            db::append_events(sql, session_id, &run.id, std::slice::from_ref(&end)).await
        })
        .await?;
    }
    Ok(())
}

/// Replays the session's events after `after`, then tails the log while a
/// run is active, then ends. A reader joining mid-run first gets the starts
/// of what is open (see `Encoder::prime`); while waiting it also notices a
/// run whose driver died (and marks it incomplete), so it never hangs.
pub fn tail(
    ports: Ports,
    session_id: String,
    owner_id: String,
    after: i64,
    protocol: Protocol,
) -> LocalBoxStream<'static, Bytes> {
    struct Tail {
        ports: Ports,
        session: String,
        owner: String,
        after: i64,
        encoder: Encoder,
        primed: bool,
        done: bool,
    }
    let state = Tail {
        encoder: Encoder::new(protocol, &session_id),
        ports,
        session: session_id,
        owner: owner_id,
        after,
        primed: false,
        done: false,
    };
    futures_util::stream::unfold(state, |mut t| async move {
        if t.done {
            return None;
        }
        let sql = t.ports.sql.as_ref();
        if !t.primed {
            t.primed = true;
            if t.after > 0 {
                match db::run_events_upto(sql, &t.session, t.after).await {
                    Ok(before) => t.encoder.prime(&before),
                    Err(e) => crate::log::error("tail_prime", &e.to_string()),
                }
            }
        }
        let mut polls = 0u32;
        loop {
            let events = match db::events_after(sql, &t.session, t.after, 500).await {
                Ok(e) => e,
                Err(e) => {
                    crate::log::error("tail_read", &e.to_string());
                    t.done = true;
                    return Some((Bytes::from(t.encoder.end()), t));
                }
            };
            if let Some(last) = events.last() {
                t.after = last.seq;
                let text: String = events.iter().map(|e| t.encoder.encode(e)).collect();
                return Some((Bytes::from(text), t));
            }
            if !db::terminal_event_pending(sql, &t.session)
                .await
                .unwrap_or(false)
            {
                // The run may have committed its last events (and its end)
                // between the read above and this check: read once more.
                if let Ok(events) = db::events_after(sql, &t.session, t.after, 500).await {
                    if let Some(last) = events.last() {
                        t.after = last.seq;
                        let text: String = events.iter().map(|e| t.encoder.encode(e)).collect();
                        return Some((Bytes::from(text), t));
                    }
                }
                t.done = true;
                return Some((Bytes::from(t.encoder.end()), t));
            }
            polls += 1;
            if polls.is_multiple_of(64) {
                if let Err(e) = recover_stale(&t.ports, &t.session, &t.owner).await {
                    crate::log::error("tail_recover", &e.to_string());
                }
            }
            t.ports.clock.sleep_ms(POLL_MS).await;
            if u64::from(polls) * POLL_MS >= KEEP_ALIVE_MS {
                return Some((Bytes::from_static(KEEP_ALIVE.as_bytes()), t));
            }
        }
    })
    .filter(|b| futures_util::future::ready(!b.is_empty()))
    .boxed_local()
}
