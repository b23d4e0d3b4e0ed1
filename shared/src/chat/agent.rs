//! The agent loop of one run: stream a model call, relay it as run events,
//! execute the tools it asks for, feed the results back, until the model
//! stops or a limit (steps, wall time, cancel) is reached. At the end the
//! assistant message, its usage and cost are persisted in one transaction.
//!
//! The loop never holds a connection open on its own: whoever drives it (a
//! Durable Object alarm, a Spin request) passes a [`RunSink`] that numbers,
//! stores and fans out each event.

use async_trait::async_trait;
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::events::{Event, EventBody};
use super::{pricing, prompt, tools};
use crate::config::Config;
use crate::db::chat as db;
use crate::error::{ApiError, ApiResult};
use crate::http::request::Meta;
use crate::ids;
use crate::llm::{
    Block, ChatRequest, Message, ModelError, ModelEvent, Provider, Role, Secret, StopReason, Usage,
};
use crate::ports::sql::transaction;
use crate::ports::Ports;
use crate::routes::{Ctx, Params};

/// Everything needed to drive a run; serialisable so it can be handed to a
/// room. The one secret it may carry, the caller's own key in the preload,
/// is a [`Secret`] (not shown by `Debug`) and never stored.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunSpec {
    pub run_id: String,
    pub session_id: String,
    pub project_id: String,
    pub owner_id: String,
    pub user_message_id: String,
    pub assistant_message_id: String,
    pub provider: String,
    pub model: String,
    /// The session's sequence number before this run's first event.
    pub first_seq: i64,
    pub started_ms: i64,
    /// The user's own provider key pays (its usage does not count against the budget).
    #[serde(default)]
    pub byok: bool,
    /// What the request that started the run already read. A room keeps it
    /// in memory only (it is taken out before the run is stored); without
    /// it the driver reads the same from Postgres.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preload: Option<Preload>,
}

impl RunSpec {
    /// The context of work done for the run (no request: its id is the run's).
    pub fn ctx<'a>(&'a self, ports: &'a Ports) -> Ctx<'a> {
        Ctx {
            ports,
            request_id: &self.run_id,
            meta: Meta::default(),
            params: Params::default(),
            rate: Default::default(),
        }
    }
}

/// The conversation and the tier's limits as the starting request saw them:
/// the first model call needs no database round trip (on a Worker the
/// room's own Postgres connection is opened while the model streams).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Preload {
    pub messages: Vec<Message>,
    pub limits: crate::billing::tiers::Limits,
    /// The first call's budget check (the one that counts runs started
    /// before this one, [`crate::billing::quota::check_model`]) passed
    /// after the run was stored.
    pub budget_checked: bool,
    /// The caller's own key for the run's provider when it pays (`byok`),
    /// as the starting request opened it: the first call reads no keys.
    /// It goes to the driver in memory only (a room takes the preload out
    /// before it stores the run).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub own_key: Option<Secret>,
    /// The first call, started while the run was being admitted
    /// ([`super::early`]): taken if it is the call the run would make.
    #[serde(skip)]
    pub early: super::early::EarlyHandle,
}

/// A model request of the agent: the system prompt, the tools and the
/// conversation so far.
pub fn model_request(provider: &Provider, messages: Vec<Message>, config: &Config) -> ChatRequest {
    ChatRequest {
        model: provider.model().to_owned(),
        system: prompt::SYSTEM.to_owned(),
        messages,
        tools: tools::specs(),
        max_tokens: config.agent_max_tokens,
    }
}

/// Where a run's events go. `emit` numbers the event and makes it visible
/// to every reader before returning.
#[async_trait(?Send)]
pub trait RunSink {
    async fn emit(&self, run_id: &str, body: EventBody) -> ApiResult<Event>;
    /// Whether the user asked to stop (checked between steps and every few deltas).
    async fn cancel_requested(&self) -> bool;
    /// A tool call that may take up to `secs` seconds is about to run, the
    /// run emitting nothing meanwhile. A host that finds lost runs by their
    /// silence (the inline driver's heartbeat) must not take it for lost
    /// until then; the call's result ends the announcement.
    async fn quiet_for(&self, _secs: i64) -> ApiResult<()> {
        Ok(())
    }
}

/// Besides a command's own time limit, what starting or waking the
/// sandbox and uploading the project may take before it runs.
const COMMAND_SETUP_SECS: i64 = 180;

/// The provider for a run and whether the user's own key pays: the one
/// asked for (the user's key first, else the server's), else the user's
/// first key, else the server's first, else the demo (only when the server
/// has no key at all).
pub fn resolve_provider(
    config: &Config,
    wanted: Option<&str>,
    own: &[(&str, String)],
) -> ApiResult<(Provider, bool)> {
    let server = |name: &str| match name {
        "anthropic" => config.anthropic.as_ref(),
        "openai" => config.openai.as_ref(),
        _ => None,
    };
    let default_base = |name: &str| {
        if name == "anthropic" {
            "https://api.anthropic.com"
        } else {
            "https://api.openai.com"
        }
    };
    let default_model = |name: &str| {
        if name == "anthropic" {
            "claude-sonnet-4-6"
        } else {
            "gpt-4o"
        }
    };
    let build = |name: &str, key: String, byok: bool| {
        let (base_url, model) = match server(name) {
            Some(c) => (c.base_url.clone(), c.model.clone()),
            None => (
                default_base(name).to_owned(),
                default_model(name).to_owned(),
            ),
        };
        let api_key = Secret::new(key);
        let p = if name == "anthropic" {
            Provider::Anthropic {
                base_url,
                api_key,
                model,
            }
        } else {
            Provider::OpenAi {
                base_url,
                api_key,
                model,
            }
        };
        (p, byok)
    };
    let pick = |name: &str| {
        if let Some((_, k)) = own.iter().find(|(p, _)| *p == name) {
            return Some(build(name, k.clone(), true));
        }
        server(name).map(|c| build(name, c.api_key.clone(), false))
    };
    match wanted {
        Some(name @ ("anthropic" | "openai")) => pick(name)
            .ok_or_else(|| ApiError::bad_request("provider_unavailable", format!("The provider {name} is not configured; add your own key with PUT /v1/keys/{name}."))),
        Some("demo") | None if own.is_empty() && config.anthropic.is_none() && config.openai.is_none() => Ok((Provider::Demo, false)),
        None => Ok(pick("anthropic").or_else(|| pick("openai")).unwrap_or((Provider::Demo, false))),
        Some(p) => Err(ApiError::bad_request("provider_unavailable", format!("The provider {p} is not available."))),
    }
}

/// Rebuilds the conversation the model sees from stored messages: each
/// assistant message is split at its tool results into assistant / user
/// turns; a tool call that never got a result is dropped.
pub fn conversation(stored: &[db::StoredMessage]) -> Vec<Message> {
    let mut out: Vec<Message> = Vec::new();
    let mut push = |role: Role, content: Vec<Block>| {
        if content.is_empty() {
            return;
        }
        match out.last_mut() {
            Some(last) if last.role == role => last.content.extend(content),
            _ => out.push(Message { role, content }),
        }
    };
    for m in stored {
        let blocks: Vec<Block> = serde_json::from_value(m.content.clone()).unwrap_or_default();
        if m.role == "user" {
            push(Role::User, blocks);
            continue;
        }
        let answered: Vec<String> = blocks
            .iter()
            .filter_map(|b| {
                if let Block::ToolResult { tool_use_id, .. } = b {
                    Some(tool_use_id.clone())
                } else {
                    None
                }
            })
            .collect();
        let mut turn = Vec::new();
        let mut results = Vec::new();
        for b in blocks {
            match b {
                Block::ToolResult { .. } => results.push(b),
                Block::ToolUse { ref id, .. } if !answered.contains(id) => {}
                other => {
                    if !results.is_empty() {
                        push(Role::Assistant, std::mem::take(&mut turn));
                        push(Role::User, std::mem::take(&mut results));
                    }
                    turn.push(other);
                }
            }
        }
        push(Role::Assistant, turn);
        push(Role::User, results);
    }
    // The model must see the user speak last or answer a tool result; an
    // assistant turn at the end (an earlier run) is fine for Anthropic.
    out
}

/// The conversation a run gives the model: the session's newest messages
/// that fit `budget_tokens`, from a user's message on ([`window_start`]),
/// with a note in front when older ones are left out. Without a bound a
/// long session would outgrow the model's context window (the provider
/// refuses the call, and every later message of the session with it), and
/// each call would pay for all of it.
pub fn context(stored: &[db::StoredMessage], budget_tokens: u32) -> Vec<Message> {
    let start = window_start(stored, context_bytes(budget_tokens));
    let mut messages = conversation(&stored[start..]);
    if start > 0 {
        note_left_out(&mut messages, start);
    }
    messages
}

/// Tells the model, in front of its first message, that the session's
/// `count` earlier messages are left out (by [`context`] or
/// [`shed_history`]).
fn note_left_out(messages: &mut [Message], count: usize) {
    if let Some(first) = messages.first_mut() {
        first.content.insert(
            0,
            Block::Text {
                text: format!(
                    "[The session's {count} earlier messages are left out to fit the context window. \
                     The project's files are current: list and read them with the tools.]"
                ),
            },
        );
    }
}

/// The bytes of stored content `tokens` count for ([`BYTES_PER_TOKEN`]):
/// what [`db::recent_messages`] reads at most, before [`context`] picks.
pub fn context_bytes(tokens: u32) -> usize {
    usize::try_from(tokens)
        .unwrap_or(usize::MAX)
        .saturating_mul(BYTES_PER_TOKEN)
}

/// Leaves the session's earlier conversation (before `own_from`) out of
/// `messages` once the whole is larger than `budget` bytes: a run's tool
/// rounds add to what each call sends, and the earlier conversation is what
/// can go. The run's first message keeps its text and loses tool results
/// whose calls were left out, behind a note that says so.
fn shed_history(messages: &mut Vec<Message>, own_from: &mut usize, budget: usize) {
    if *own_from == 0 || json_len(&*messages) <= budget {
        return;
    }
    let left_out = messages.drain(..*own_from).count();
    *own_from = 0;
    if let Some(first) = messages.first_mut() {
        first
            .content
            .retain(|b| !matches!(b, Block::ToolResult { .. }));
    }
    note_left_out(messages, left_out);
}

/// Tool inputs and results shorter than this are never cleared
/// ([`clear_tool_io`]): the note that replaces them would be about as long.
const CLEAR_MIN_BYTES: usize = 256;

/// Clears the bulk of the run's older tool rounds once its messages are
/// still larger than `budget` bytes with the session's earlier
/// conversation gone ([`shed_history`]): oldest first, a tool result's
/// content and a tool call's long string inputs (a file written whole) are
/// replaced with a short note saying so, until the whole fits. The run's
/// first message (the user's request) and its newest (the latest results)
/// stay whole; what a tool wrote is still in the project, where the model
/// can read it again. Only what is sent changes: the stored answer keeps
/// every block as it was.
fn clear_tool_io(messages: &mut [Message], budget: usize) {
    let mut size = json_len(&*messages);
    if size <= budget || messages.len() < 3 {
        return;
    }
    let last = messages.len() - 1;
    let blocks = messages[1..last]
        .iter_mut()
        .flat_map(|m| m.content.iter_mut());
    for block in blocks {
        match block {
            Block::ToolResult { content, .. } if content.len() >= CLEAR_MIN_BYTES => {
                let note = format!(
                    "[Cleared to fit the context window: this result was {} bytes. \
                     Call the tool again if you need it.]",
                    content.len()
                );
                size = size.saturating_sub(json_len(content)) + json_len(&note);
                *content = note;
            }
            Block::ToolUse { input, .. } => {
                if let Some(fields) = input.as_object_mut() {
                    for value in fields.values_mut() {
                        let long = value
                            .as_str()
                            .map(str::len)
                            .filter(|n| *n >= CLEAR_MIN_BYTES);
                        if let Some(n) = long {
                            let note = Value::from(format!(
                                "[{n} bytes, cleared to fit the context window]"
                            ));
                            size = size.saturating_sub(json_len(value)) + json_len(&note);
                            *value = note;
                        }
                    }
                }
            }
            _ => {}
        }
        if size <= budget {
            return;
        }
    }
}

/// Stored content bytes counted as one token: fewer than English prose
/// takes (about 4), as code and JSON do, so the estimate errs on the
/// small side of the window.
const BYTES_PER_TOKEN: usize = 3;

/// Where the newest of `stored` that fit `budget` bytes of content begin:
/// at a user's message (a conversation starts with one), and never after
/// the last one, however large it is.
fn window_start(stored: &[db::StoredMessage], budget: usize) -> usize {
    let mut used = 0usize;
    let mut start = None;
    for (i, m) in stored.iter().enumerate().rev() {
        used = used.saturating_add(json_len(&m.content));
        if used > budget && start.is_some() {
            break;
        }
        if m.role == "user" {
            start = Some(i);
        }
    }
    start.unwrap_or(0)
}

/// The length of `v` as JSON, without building the text.
fn json_len(v: &(impl serde::Serialize + ?Sized)) -> usize {
    struct Count(usize);
    impl std::io::Write for Count {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 += buf.len();
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut count = Count(0);
    let _ = serde_json::to_writer(&mut count, v);
    count.0
}

/// How a run ended.
#[derive(Debug, Clone, PartialEq)]
pub struct RunOutcome {
    pub status: &'static str,
    pub stop_reason: String,
    pub usage: Usage,
    pub cost_micros: i64,
    /// The run changed files: the summary of its commit, for [`after_run`].
    pub changed: Option<String>,
}

/// What follows a run once its end is out and its session is free for the
/// next message: the commit of the files it changed, when the project is
/// connected to GitHub. A sync takes many API calls; a session waiting for
/// it would refuse the user's next message as a run still in progress.
pub async fn after_run(ports: &Ports, spec: &RunSpec, outcome: &RunOutcome) {
    if let Some(summary) = &outcome.changed {
        crate::github::after_run(
            ports,
            &spec.owner_id,
            &spec.project_id,
            &spec.run_id,
            summary,
        )
        .await;
    }
}

/// A model stream silent this long has stalled: a live one is never this
/// quiet (Anthropic sends `ping`s while it thinks).
const MODEL_IDLE_MS: i64 = 120_000;
/// How often a wait on the model (its next event, a `retry-after`) looks
/// at the run's cancel flag, the stream's silence and the wall time.
const WAIT_TICK_MS: u64 = 1_000;

/// How a model call began.
enum Start {
    Streaming(crate::llm::ModelStream),
    /// Stopped before any content: cancelled, stalled or out of time; with
    /// the usage reported so far when the provider had answered (the call
    /// may have cost something).
    Stopped(Next, Option<Usage>),
}

/// Calls the model, retrying (at most 3 times, after `retry-after` or a
/// growing pause) while it is busy before any content arrived: a 429/529
/// answer, or an overload the stream reports before its first block
/// (Anthropic's `overloaded_error` event right after `message_start`).
/// What came before the first block is replayed in front of the stream,
/// so the first token is not held back. Waits look at cancel, silence and
/// the wall time ([`Waiter`]).
async fn start_stream(
    provider: &Provider,
    req: &ChatRequest,
    waiter: &mut Waiter<'_>,
    mut early: Option<
        futures_channel::oneshot::Receiver<Result<crate::llm::ModelStream, ModelError>>,
    >,
) -> Result<Start, ModelError> {
    let mut attempt = 0u32;
    loop {
        waiter.heard();
        let http = waiter.ports.http.clone();
        let early = early.take();
        let call = async move {
            // The call made while the run was admitted; a new one if its
            // task ended without an answer.
            if let Some(Ok(answer)) = futures_util::future::OptionFuture::from(early).await {
                return answer;
            }
            provider.stream(http.as_ref(), req).await
        };
        let answer = match waiter.wait(call).await {
            Ok(answer) => answer,
            Err(stopped) => return Ok(Start::Stopped(stopped, None)),
        };
        let retry_after = match answer {
            Ok(mut stream) => {
                waiter.heard();
                let mut head = Vec::new();
                loop {
                    match waiter.next_event(&mut stream).await {
                        Next::Item(Err(ModelError::Busy { retry_after, .. })) if attempt < 3 => {
                            break retry_after;
                        }
                        Next::Item(Ok(ev @ ModelEvent::Usage(_))) => head.push(Ok(ev)),
                        Next::Item(Ok(ModelEvent::Alive)) => {}
                        Next::Item(item) => {
                            head.push(item);
                            return Ok(Start::Streaming(
                                futures_util::stream::iter(head).chain(stream).boxed_local(),
                            ));
                        }
                        Next::End => {
                            return Ok(Start::Streaming(
                                futures_util::stream::iter(head).boxed_local(),
                            ))
                        }
                        stopped => {
                            let usage = head.iter().rev().find_map(|ev| match ev {
                                Ok(ModelEvent::Usage(u)) => Some(*u),
                                _ => None,
                            });
                            return Ok(Start::Stopped(stopped, Some(usage.unwrap_or_default())));
                        }
                    }
                }
            }
            Err(ModelError::Busy { retry_after, .. }) if attempt < 3 => retry_after,
            Err(e) => return Err(e),
        };
        attempt += 1;
        let pause = retry_after.unwrap_or(1u64 << attempt).min(30);
        let (ports, sink) = (waiter.ports, waiter.sink);
        for _ in 0..pause * 1000 / WAIT_TICK_MS {
            ports.clock.sleep_ms(WAIT_TICK_MS).await;
            if sink.cancel_requested().await {
                return Ok(Start::Stopped(Next::Cancelled, None));
            }
            if ports.clock.now_ms() > waiter.deadline {
                return Ok(Start::Stopped(Next::TimeUp, None));
            }
        }
    }
}

fn stalled() -> ModelError {
    ModelError::Stream(format!(
        "the model sent nothing for {} s",
        MODEL_IDLE_MS / 1000
    ))
}

/// What waiting for the model's next event gave.
enum Next {
    Item(Result<ModelEvent, ModelError>),
    End,
    Cancelled,
    /// Silent for [`MODEL_IDLE_MS`].
    Stalled,
    /// The run's wall time is over.
    TimeUp,
}

/// The watch over one model call's waits (its answer's headers, each next
/// event): while nothing comes, every [`WAIT_TICK_MS`] a cancel, a stall
/// (nothing heard for [`MODEL_IDLE_MS`]) or the end of the run's wall time
/// stops the wait. One timer serves a whole call (`tick`), not one per
/// event.
struct Waiter<'a> {
    ports: &'a Ports,
    /// Asked whether the run was cancelled.
    sink: &'a dyn RunSink,
    tick: futures_util::future::LocalBoxFuture<'a, ()>,
    /// When the model last said something.
    last_event_ms: i64,
    /// The end of the run's wall time.
    deadline: i64,
}

impl<'a> Waiter<'a> {
    fn new(ports: &'a Ports, sink: &'a dyn RunSink, deadline: i64) -> Self {
        Self {
            ports,
            sink,
            tick: ports.clock.sleep_ms(WAIT_TICK_MS),
            last_event_ms: ports.clock.now_ms(),
            deadline,
        }
    }

    /// The model said something now.
    fn heard(&mut self) {
        self.last_event_ms = self.ports.clock.now_ms();
    }

    /// `fut`'s output, or why the wait for it stopped.
    async fn wait<T>(&mut self, fut: impl std::future::Future<Output = T>) -> Result<T, Next> {
        use futures_util::future::{select, Either};
        let mut fut = std::pin::pin!(fut);
        loop {
            match select(fut.as_mut(), self.tick.as_mut()).await {
                Either::Left((v, _)) => return Ok(v),
                Either::Right(((), _)) => {
                    self.tick = self.ports.clock.sleep_ms(WAIT_TICK_MS);
                    let now = self.ports.clock.now_ms();
                    if self.sink.cancel_requested().await {
                        return Err(Next::Cancelled);
                    }
                    if now - self.last_event_ms >= MODEL_IDLE_MS {
                        return Err(Next::Stalled);
                    }
                    if now > self.deadline {
                        return Err(Next::TimeUp);
                    }
                }
            }
        }
    }

    /// The stream's next event, or why the wait for it stopped.
    async fn next_event(&mut self, stream: &mut crate::llm::ModelStream) -> Next {
        match self.wait(stream.next()).await {
            Ok(Some(item)) => {
                self.heard();
                Next::Item(item)
            }
            Ok(None) => Next::End,
            Err(stopped) => stopped,
        }
    }
}

/// What a run has produced so far: its finished steps' blocks, and the
/// usage and cost of its model calls.
#[derive(Default)]
struct Progress {
    blocks: Vec<Block>,
    usage: Usage,
    cost: i64,
}

/// Drives one run to its end and persists it. Never fails: every failure
/// ends the run with a status and leaves the session usable.
pub async fn run(ports: &Ports, spec: &RunSpec, sink: &dyn RunSink) -> RunOutcome {
    let changed = std::cell::Cell::new(false);
    let unrecorded = std::cell::RefCell::new(None);
    let mut progress = Progress::default();
    let outcome = drive(ports, spec, sink, &changed, &unrecorded, &mut progress).await;
    // A run that failed midway (a storage or database error) keeps what
    // its finished steps said and what their calls cost.
    let outcome = outcome.unwrap_or_else(|e| RunOutcome {
        status: "error",
        stop_reason: e.code.to_owned(),
        usage: progress.usage,
        cost_micros: progress.cost,
        changed: None,
    });
    let blocks = progress.blocks;
    // The last call's usage goes out first, on its own (its row does not
    // depend on the answer's transaction), with the answer and the run's end.
    let (recorded, persisted) = futures_util::future::join(
        record_usage(ports, spec, unrecorded.take()),
        persist(ports, spec, &outcome, &blocks),
    )
    .await;
    if let Err(e) = recorded {
        crate::log::error("run_usage_failed", &e.to_string());
    }
    // A run someone else ended first (a reader that took it for lost)
    // ends as it was stored: its readers were told that end.
    let outcome = match persisted {
        Ok(None) => outcome,
        Ok(Some((status, error))) => RunOutcome {
            status: stored_status(&status),
            stop_reason: error.unwrap_or_default(),
            ..outcome
        },
        Err(e) => {
            crate::log::error("run_persist_failed", &e.to_string());
            outcome
        }
    };
    let _ = sink
        .emit(
            &spec.run_id,
            EventBody::RunFinished {
                status: outcome.status.to_owned(),
                stop_reason: outcome.stop_reason.clone(),
                usage: outcome.usage,
                cost_micros: outcome.cost_micros,
            },
        )
        .await;
    // The run changed files: they are committed by [`after_run`].
    let changed = changed.get().then(|| {
        blocks
            .iter()
            .rev()
            .find_map(|b| match b {
                Block::Text { text } => Some(text.clone()),
                _ => None,
            })
            .unwrap_or_default()
    });
    RunOutcome { changed, ..outcome }
}

/// A stored run status as the one [`RunOutcome`] names.
fn stored_status(status: &str) -> &'static str {
    match status {
        "complete" => "complete",
        "incomplete" => "incomplete",
        "cancelled" => "cancelled",
        _ => "error",
    }
}

/// Stores the run's answer and its end; `Some` end (status, error) when
/// the run had already been ended by someone else, who stored its answer.
async fn persist(
    ports: &Ports,
    spec: &RunSpec,
    outcome: &RunOutcome,
    blocks: &[Block],
) -> ApiResult<Option<(String, Option<String>)>> {
    let sql = ports.sql.as_ref();
    let content = serde_json::to_value(blocks).unwrap_or(Value::Array(vec![]));
    // The answer and the run's end go out together (with BEGIN): one round
    // trip, then COMMIT.
    transaction(sql, async || {
        let (inserted, finished) = futures_util::future::join(
            db::insert_answer(
                sql,
                &db::NewMessage {
                    id: &spec.assistant_message_id,
                    session: &spec.session_id,
                    owner: &spec.owner_id,
                    run: Some(&spec.run_id),
                    role: "assistant",
                    content: &content,
                    status: if outcome.status == "error" && !blocks.is_empty() {
                        "incomplete"
                    } else {
                        outcome.status
                    },
                    model: Some(&spec.model),
                    usage: &outcome.usage,
                    cost: outcome.cost_micros,
                },
            ),
            db::finish_run(
                sql,
                &spec.run_id,
                outcome.status,
                Some(&outcome.stop_reason)
                    .filter(|_| outcome.status != "complete")
                    .map(String::as_str),
            ),
        )
        .await;
        finished?;
        if inserted? {
            return Ok::<_, ApiError>(None);
        }
        Ok(db::run_end(sql, &spec.run_id).await?)
    })
    .await
}

/// A model call's usage-ledger row not stored yet (see [`drive`]).
struct LedgerRow {
    id: String,
    provider: String,
    model: String,
    usage: Usage,
    cost_micros: i64,
    byok: bool,
    /// The usage is [`estimate_unreported`]'s.
    estimated: bool,
}

/// Stores a model call's ledger row, if there is one.
async fn record_usage(
    ports: &Ports,
    spec: &RunSpec,
    row: Option<LedgerRow>,
) -> Result<(), crate::ports::sql::SqlError> {
    let Some(row) = row else {
        return Ok(());
    };
    db::insert_usage(
        ports.sql.as_ref(),
        &row.id,
        &spec.owner_id,
        &spec.session_id,
        &spec.run_id,
        &row.provider,
        &row.model,
        &row.usage,
        row.cost_micros,
        row.byok,
        row.estimated,
    )
    .await
}

/// What a model call's stream showed of its cost (see [`estimate_unreported`]).
#[derive(Default)]
struct CallSeen {
    /// The provider answered: the call may have cost something.
    answered: bool,
    /// Bytes of output streamed: text, thinking and tool input.
    out_bytes: usize,
    /// The provider sent its count of the whole call.
    counted: bool,
    /// The call was ended by us: a cancel, a stall, the time limit.
    ended_by_us: bool,
}

/// Tokens of about this many bytes of text or JSON: about four bytes a
/// token, what the providers' own guides give for English text and code.
fn estimate_tokens(bytes: usize) -> i64 {
    i64::try_from(bytes.div_ceil(4)).unwrap_or(i64::MAX)
}

/// Fills in what a model call's provider did not report, and says whether
/// it did. Providers report output tokens only at a stream's end (and
/// OpenAI-compatible ones all their usage), so a stream cut short (a
/// cancel, a stall, a broken connection, the time limit) would otherwise
/// have made its output free, and a server that sends no usage every call.
/// The estimate counts what was streamed (`seen.out_bytes`: text, thinking
/// and tool input) and what was sent (`req`), never less than was reported.
/// The provider's count of the whole call (`seen.counted`:
/// [`ModelEvent::FinalUsage`]) stands, however the stream ended after it.
/// Input is estimated only for a call that got as far as output, or that
/// we ended (a cancel, a stall, the time limit): one that failed on the
/// provider's side before any output most likely cost nothing.
fn estimate_unreported(usage: &mut Usage, seen: &CallSeen, req: &ChatRequest) -> bool {
    let mut estimated = false;
    let unreported =
        usage.input_tokens == 0 && usage.cache_read_tokens == 0 && usage.cache_write_tokens == 0;
    if unreported && (seen.out_bytes > 0 || seen.ended_by_us) {
        let sent = req.system.len() + json_len(&req.messages) + json_len(&req.tools);
        usage.input_tokens = estimate_tokens(sent);
        estimated = true;
    }
    let streamed = estimate_tokens(seen.out_bytes);
    if !seen.counted && streamed > usage.output_tokens {
        usage.output_tokens = streamed;
        estimated = true;
    }
    estimated
}

/// The run's steps. Each model call's usage row is stored before the
/// run goes on to its tools; the last call's is left in `unrecorded`, for
/// [`run`] to store beside the run's end (one round trip fewer before
/// `run_finished`), whichever way the steps ended.
async fn drive(
    ports: &Ports,
    spec: &RunSpec,
    sink: &dyn RunSink,
    changed: &std::cell::Cell<bool>,
    unrecorded: &std::cell::RefCell<Option<LedgerRow>>,
    progress: &mut Progress,
) -> ApiResult<RunOutcome> {
    let config = ports.config()?;
    let sql = ports.sql.as_ref();
    let ctx = spec.ctx(ports);
    // What the run needs before its first model call, read together: each
    // round trip here is added to the time to the first token.
    let preloaded_key = spec
        .preload
        .as_ref()
        .and_then(|p| p.own_key.as_ref())
        .and_then(|key| {
            let provider = crate::billing::keys::PROVIDERS
                .iter()
                .find(|p| **p == spec.provider)?;
            Some(vec![(*provider, key.expose().to_owned())])
        });
    let keys = async {
        if !spec.byok {
            return Ok(Vec::new());
        }
        match preloaded_key {
            Some(own) => Ok(own),
            None => crate::billing::keys::user_keys(&ctx, &spec.owner_id).await,
        }
    };
    let (own, (limits, mut messages)) = match &spec.preload {
        Some(p) => (keys.await?, (p.limits.clone(), p.messages.clone())),
        None => {
            let read = async {
                let (user, history) = futures_util::future::try_join(
                    crate::db::users::by_id(sql, &spec.owner_id),
                    db::recent_messages(
                        sql,
                        &spec.session_id,
                        None,
                        context_bytes(config.agent_context_tokens),
                    ),
                )
                .await?;
                let limits = user
                    .map(|u| u.limits())
                    .unwrap_or_else(|| crate::billing::tiers::defaults("free"));
                Ok::<_, ApiError>((limits, context(&history, config.agent_context_tokens)))
            };
            futures_util::future::try_join(keys, read).await?
        }
    };
    let (provider, byok) = resolve_provider(config, Some(&spec.provider), &own)?;
    sink.emit(
        &spec.run_id,
        EventBody::RunStarted {
            provider: provider.name().to_owned(),
            model: provider.model().to_owned(),
            message_id: spec.assistant_message_id.clone(),
            user_message_id: spec.user_message_id.clone(),
        },
    )
    .await?;
    let deadline = spec.started_ms + i64::from(config.agent_max_secs) * 1000;
    let Progress {
        blocks: all_blocks,
        usage: total,
        cost,
    } = progress;
    let mut block_n = 0u32;
    let finish = |status: &'static str, reason: &str, usage: Usage, cost: i64| RunOutcome {
        status,
        stop_reason: reason.to_owned(),
        usage,
        cost_micros: cost,
        changed: None,
    };
    // Where this run's own messages begin (its user's message): what comes
    // before is the session's earlier conversation, left out as the run
    // grows past the context budget (`shed_history`).
    let mut own_from = messages.len().saturating_sub(1);
    for step in 1..=config.agent_max_steps {
        if step > 1 {
            let budget = context_bytes(config.agent_context_tokens);
            shed_history(&mut messages, &mut own_from, budget);
            clear_tool_io(&mut messages[own_from..], budget);
        }
        if sink.cancel_requested().await {
            return Ok(finish("cancelled", "cancelled", *total, *cost));
        }
        if ports.clock.now_ms() > deadline {
            return Ok(finish("incomplete", "time_limit", *total, *cost));
        }
        // The budget is checked before each model call and settled after it
        // (the first one's check was the starting request's, when preloaded).
        let checked = step == 1 && spec.preload.as_ref().is_some_and(|p| p.budget_checked);
        if !byok && provider.name() != "demo" && !checked {
            if let Err(e) = crate::billing::quota::check_model(&ctx, &spec.owner_id, &limits).await
            {
                sink.emit(
                    &spec.run_id,
                    EventBody::RunError {
                        code: e.code.to_owned(),
                        message: e.detail.clone(),
                    },
                )
                .await?;
                return Ok(finish("incomplete", e.code, *total, *cost));
            }
        }
        sink.emit(&spec.run_id, EventBody::StepStarted { step })
            .await?;
        let req = model_request(&provider, messages.clone(), config);
        // The first call may have been made already, while the run was
        // admitted: it is used if it is exactly this one.
        let early = match &spec.preload {
            Some(p) if step == 1 => p.early.take().and_then(|c| c.take_if(&provider, &req)),
            _ => None,
        };
        let mut step_blocks: Vec<Block> = Vec::new();
        let mut text: Option<(String, String)> = None; // (block id, text so far)
        let mut tool_json: Vec<(String, String, String)> = Vec::new(); // (id, name, json)
        let mut invalid_inputs: Vec<String> = Vec::new();
        let mut call_usage = Usage::default();
        let mut stop = StopReason::EndTurn;
        let mut failure: Option<ModelError> = None;
        let mut seen = 0u32;
        let mut call = CallSeen::default();
        // The model went silent past MODEL_IDLE_MS (a `failure` of ours).
        let mut stalled_out = false;
        let mut cancelled = false;
        let mut time_up = false;
        let mut waiter = Waiter::new(ports, sink, deadline);
        let started = start_stream(&provider, &req, &mut waiter, early).await;
        call.answered = matches!(started, Ok(Start::Streaming(_)));
        let mut stream = match started {
            Ok(Start::Streaming(s)) => s,
            Ok(Start::Stopped(stopped, reported)) => {
                // Nothing streamed: the checks after the stream end it. A
                // provider that answered may have counted the input.
                if let Some(usage) = reported {
                    call.answered = true;
                    call_usage = usage;
                }
                match stopped {
                    Next::Cancelled => cancelled = true,
                    Next::TimeUp => time_up = true,
                    _ => {
                        failure = Some(stalled());
                        stalled_out = true;
                    }
                }
                futures_util::stream::empty().boxed_local()
            }
            Err(e) => {
                sink.emit(
                    &spec.run_id,
                    EventBody::RunError {
                        code: "upstream_unavailable".into(),
                        message: e.to_string(),
                    },
                )
                .await?;
                let status = if all_blocks.is_empty() {
                    "error"
                } else {
                    "incomplete"
                };
                return Ok(finish(status, "upstream_unavailable", *total, *cost));
            }
        };
        // A failed emit (the run's storage failing) ends the stream here;
        // what the call said and cost is still counted below.
        let relayed = async {
            loop {
                let item = match waiter.next_event(&mut stream).await {
                    Next::Item(item) => item,
                    Next::End => break,
                    Next::Cancelled => {
                        cancelled = true;
                        break;
                    }
                    Next::Stalled => {
                        failure = Some(stalled());
                        stalled_out = true;
                        break;
                    }
                    Next::TimeUp => {
                        time_up = true;
                        break;
                    }
                };
                seen += 1;
                if seen.is_multiple_of(64) && sink.cancel_requested().await {
                    cancelled = true;
                    break;
                }
                match item {
                    Ok(ev @ (ModelEvent::TextStart | ModelEvent::TextDelta(_))) => {
                        // A block starts with its start, or with a delta
                        // that comes without one.
                        if text.is_none() || matches!(ev, ModelEvent::TextStart) {
                            block_n += 1;
                            let id = format!("{}-{block_n}", spec.assistant_message_id);
                            sink.emit(
                                &spec.run_id,
                                EventBody::TextStart {
                                    block_id: id.clone(),
                                },
                            )
                            .await?;
                            text = Some((id, String::new()));
                        }
                        let ModelEvent::TextDelta(d) = ev else {
                            continue;
                        };
                        call.out_bytes += d.len();
                        if let Some((id, t)) = text.as_mut() {
                            // The answer keeps the text its readers were sent.
                            let sent = t.len();
                            t.push_str(&d);
                            let emitted = sink
                                .emit(
                                    &spec.run_id,
                                    EventBody::TextDelta {
                                        block_id: id.clone(),
                                        delta: d,
                                    },
                                )
                                .await;
                            if let Err(e) = emitted {
                                t.truncate(sent);
                                return Err(e);
                            }
                        }
                    }
                    Ok(ModelEvent::TextEnd) => {
                        if let Some((id, t)) = text.take() {
                            step_blocks.push(Block::Text { text: t });
                            sink.emit(&spec.run_id, EventBody::TextEnd { block_id: id })
                                .await?;
                        }
                    }
                    Ok(ModelEvent::ToolStart { id, name }) => {
                        sink.emit(
                            &spec.run_id,
                            EventBody::ToolCallStart {
                                tool_call_id: id.clone(),
                                name: name.clone(),
                            },
                        )
                        .await?;
                        tool_json.push((id, name, String::new()));
                    }
                    Ok(ModelEvent::ToolDelta { id, partial_json }) => {
                        call.out_bytes += partial_json.len();
                        if let Some(t) = tool_json.iter_mut().find(|t| t.0 == id) {
                            t.2.push_str(&partial_json);
                        }
                        sink.emit(
                            &spec.run_id,
                            EventBody::ToolCallDelta {
                                tool_call_id: id,
                                delta: partial_json,
                            },
                        )
                        .await?;
                    }
                    Ok(ModelEvent::ToolEnd { id }) => {
                        if let Some((_, name, json)) = tool_json.iter().find(|t| t.0 == id) {
                            let input = if json.trim().is_empty() {
                                Some(Value::Object(Default::default()))
                            } else {
                                serde_json::from_str::<Value>(json).ok()
                            };
                            sink.emit(
                                &spec.run_id,
                                EventBody::ToolCallEnd {
                                    tool_call_id: id.clone(),
                                    name: name.clone(),
                                    input: input.clone().unwrap_or(Value::Null),
                                },
                            )
                            .await?;
                            if input.is_none() {
                                invalid_inputs.push(id.clone());
                            }
                            // The model must get an object back in its history, even
                            // for input that was not JSON (the tool result says so).
                            step_blocks.push(Block::ToolUse {
                                id: id.clone(),
                                name: name.clone(),
                                input: input.unwrap_or_else(|| Value::Object(Default::default())),
                            });
                        }
                    }
                    Ok(ModelEvent::Thinking {
                        thinking,
                        signature,
                    }) => {
                        // Its bytes were counted as they streamed.
                        step_blocks.push(Block::Thinking {
                            thinking,
                            signature,
                        });
                    }
                    Ok(ModelEvent::ThinkingDelta(n)) => call.out_bytes += n,
                    Ok(ModelEvent::Usage(u)) => call_usage = u,
                    Ok(ModelEvent::FinalUsage(u)) => {
                        call.counted = true;
                        call_usage = u;
                    }
                    Ok(ModelEvent::Alive) => {}
                    Ok(ModelEvent::Stop(r)) => stop = r,
                    Err(e) => {
                        failure = Some(e);
                        break;
                    }
                }
            }
            Ok::<(), ApiError>(())
        }
        .await;
        // Keep whatever text arrived, even when the stream broke mid-block.
        let open_block = text.take().map(|(id, t)| {
            if !t.is_empty() {
                step_blocks.push(Block::Text { text: t });
            }
            id
        });
        call.ended_by_us = cancelled || time_up || stalled_out;
        // What the call cost counts however its stream ended (the demo
        // model costs nothing and reports no usage).
        let estimated = call.answered
            && provider.name() != "demo"
            && estimate_unreported(&mut call_usage, &call, &req);
        let call_cost = pricing::cost_micros(provider.model(), &call_usage);
        total.add(&call_usage);
        *cost += call_cost;
        *unrecorded.borrow_mut() = Some(LedgerRow {
            id: ids::new_id(ports, "use"),
            provider: provider.name().to_owned(),
            model: provider.model().to_owned(),
            usage: call_usage,
            cost_micros: call_cost,
            byok,
            estimated,
        });
        let told = match (relayed, open_block) {
            (Ok(()), Some(id)) => sink
                .emit(&spec.run_id, EventBody::TextEnd { block_id: id })
                .await
                .map(drop),
            (relayed, _) => relayed,
        };
        if let Err(e) = told {
            // The run's storage failed mid-stream: the answer keeps this
            // step's text (its unfinished tool calls never ran).
            step_blocks.retain(|b| !matches!(b, Block::ToolUse { .. }));
            all_blocks.extend(step_blocks);
            return Err(e);
        }
        if let Some(e) = failure {
            // Unfinished tool calls are dropped: the model never saw them complete.
            step_blocks.retain(|b| !matches!(b, Block::ToolUse { .. }));
            all_blocks.extend(step_blocks);
            sink.emit(&spec.run_id, EventBody::StepFinished { step })
                .await?;
            sink.emit(
                &spec.run_id,
                EventBody::RunError {
                    code: "upstream_failed".into(),
                    message: e.to_string(),
                },
            )
            .await?;
            return Ok(finish("incomplete", "upstream_failed", *total, *cost));
        }
        // Stopped while it streamed, or once it ended with calls to make:
        // no tool runs after a cancel (a `write_file` the user stopped must
        // not land), and the calls are dropped, as the model never saw them
        // answered. A stop at the token limit may have cut a call's input:
        // none runs, and the answer is incomplete.
        let cancelled = cancelled
            || (stop == StopReason::ToolUse
                && step_blocks
                    .iter()
                    .any(|b| matches!(b, Block::ToolUse { .. }))
                && sink.cancel_requested().await);
        if cancelled || time_up || stop == StopReason::MaxTokens {
            step_blocks.retain(|b| !matches!(b, Block::ToolUse { .. }));
            all_blocks.extend(step_blocks);
            sink.emit(&spec.run_id, EventBody::StepFinished { step })
                .await?;
            let (status, reason) = if cancelled {
                ("cancelled", "cancelled")
            } else if time_up {
                ("incomplete", "time_limit")
            } else {
                ("incomplete", "max_tokens")
            };
            return Ok(finish(status, reason, *total, *cost));
        }
        let calls: Vec<(String, String, Value)> = step_blocks
            .iter()
            .filter_map(|b| {
                if let Block::ToolUse { id, name, input } = b {
                    Some((id.clone(), name.clone(), input.clone()))
                } else {
                    None
                }
            })
            .collect();
        all_blocks.extend(step_blocks.iter().cloned());
        messages.push(Message {
            role: Role::Assistant,
            content: step_blocks,
        });
        sink.emit(&spec.run_id, EventBody::StepFinished { step })
            .await?;
        if stop != StopReason::ToolUse || calls.is_empty() {
            let reason = match stop {
                StopReason::EndTurn => "end_turn".to_owned(),
                StopReason::ToolUse => "tool_use".to_owned(),
                // Handled above.
                StopReason::MaxTokens => "max_tokens".to_owned(),
                StopReason::Other(o) => o,
            };
            return Ok(finish("complete", &reason, *total, *cost));
        }
        // The run goes on: this call's usage is stored before its tools run.
        record_usage(ports, spec, unrecorded.take()).await?;
        let mut results = Vec::new();
        for (id, name, input) in calls {
            let input = Some(&input).filter(|_| !invalid_inputs.contains(&id));
            if name == "run_command" && input.is_some() {
                // Each command announces its own silence: the result of
                // the call before brought the heartbeat back to now.
                sink.quiet_for(limits.command_timeout_secs.max(1) + COMMAND_SETUP_SECS)
                    .await?;
            }
            let out = tools::execute(&ctx, &spec.owner_id, &spec.project_id, &name, input).await;
            if out.changed_files {
                changed.set(true);
            }
            sink.emit(
                &spec.run_id,
                EventBody::ToolResult {
                    tool_call_id: id.clone(),
                    output: out.output.clone(),
                    is_error: out.is_error,
                },
            )
            .await?;
            results.push(Block::ToolResult {
                tool_use_id: id,
                content: out.output,
                is_error: out.is_error,
            });
        }
        all_blocks.extend(results.iter().cloned());
        messages.push(Message {
            role: Role::User,
            content: results,
        });
    }
    Ok(finish("incomplete", "max_steps", *total, *cost))
}

/// Rebuilds the blocks of a run from its events (for a run whose driver died).
pub fn blocks_from_events(events: &[Event]) -> Vec<Block> {
    let mut blocks = Vec::new();
    let mut text: Option<String> = None;
    for e in events {
        match &e.body {
            EventBody::TextStart { .. } => text = Some(String::new()),
            EventBody::TextDelta { delta, .. } => {
                text.get_or_insert_with(String::new).push_str(delta)
            }
            EventBody::TextEnd { .. } => {
                if let Some(t) = text.take().filter(|t| !t.is_empty()) {
                    blocks.push(Block::Text { text: t });
                }
            }
            EventBody::ToolCallEnd {
                tool_call_id,
                name,
                input,
            } => blocks.push(Block::ToolUse {
                id: tool_call_id.clone(),
                name: name.clone(),
                input: if input.is_object() {
                    input.clone()
                } else {
                    Value::Object(Default::default())
                },
            }),
            EventBody::ToolResult {
                tool_call_id,
                output,
                is_error,
            } => blocks.push(Block::ToolResult {
                tool_use_id: tool_call_id.clone(),
                content: output.clone(),
                is_error: *is_error,
            }),
            _ => {}
        }
    }
    if let Some(t) = text.filter(|t| !t.is_empty()) {
        blocks.push(Block::Text { text: t });
    }
    // A tool call without its result is dropped (see `conversation`).
    blocks
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stored(role: &str, text: &str) -> db::StoredMessage {
        db::StoredMessage {
            id: String::new(),
            run_id: None,
            role: role.into(),
            content: serde_json::json!([{ "type": "text", "text": text }]),
            status: "complete".into(),
            model: None,
            usage: Default::default(),
            cost_micros: 0,
            created_at: String::new(),
        }
    }

    #[test]
    fn the_window_starts_at_a_users_message_and_keeps_the_last_one() {
        let big = "x".repeat(1_000);
        let history = [
            stored("user", "a"),
            stored("assistant", &big),
            stored("user", "b"),
            stored("assistant", "c"),
            stored("user", &big),
        ];
        // Everything fits: from the start.
        assert_eq!(window_start(&history, 10_000), 0);
        // The last two turns fit, not the first one's big answer: from "b",
        // never from the assistant's answer before it.
        assert_eq!(window_start(&history, 1_200), 2);
        // Not even the last message fits: it is still sent.
        assert_eq!(window_start(&history, 10), 4);
        // No user's message at all: from the start.
        assert_eq!(window_start(&history[1..2], 10), 0);
        assert_eq!(
            json_len(&history[0].content),
            history[0].content.to_string().len()
        );
    }

    #[test]
    fn clearing_takes_the_oldest_tool_rounds_first_and_keeps_the_ends_whole() {
        let big = |c: &str| c.repeat(1_000);
        let call = |id: &str, content: String| Message {
            role: Role::Assistant,
            content: vec![Block::ToolUse {
                id: id.into(),
                name: "write_file".into(),
                input: serde_json::json!({ "path": "a.html", "content": content }),
            }],
        };
        let result = |id: &str, content: String| Message {
            role: Role::User,
            content: vec![Block::ToolResult {
                tool_use_id: id.into(),
                content,
                is_error: false,
            }],
        };
        let run = vec![
            Message {
                role: Role::User,
                content: vec![Block::Text { text: big("u") }],
            },
            call("1", big("a")),
            result("1", "ok".into()),
            call("2", big("b")),
            result("2", big("c")),
        ];
        let input = |m: &[Message], i: usize| match &m[i].content[0] {
            Block::ToolUse { input, .. } => {
                input["content"].as_str().unwrap_or_default().to_owned()
            }
            _ => String::new(),
        };
        // It fits: nothing changes.
        let mut m = run.clone();
        clear_tool_io(&mut m, 10_000);
        assert_eq!(json_len(&m), json_len(&run));
        // One round's bulk over: only the oldest call is cleared.
        let mut m = run.clone();
        clear_tool_io(&mut m, json_len(&run) - 500);
        assert!(input(&m, 1).contains("cleared to fit the context window"));
        assert_eq!(input(&m, 3), big("b"));
        // Far over: every middle round goes; the user's request and the newest results stay.
        let mut m = run.clone();
        clear_tool_io(&mut m, 100);
        assert!(input(&m, 3).contains("cleared"));
        assert!(matches!(&m[0].content[0], Block::Text { text } if *text == big("u")));
        assert!(
            matches!(&m[4].content[0], Block::ToolResult { content, .. } if *content == big("c"))
        );
        // A short result is never replaced by a longer note.
        assert!(matches!(&m[2].content[0], Block::ToolResult { content, .. } if content == "ok"));
    }
}
