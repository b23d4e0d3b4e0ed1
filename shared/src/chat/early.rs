//! A message's model call started while its admission is still under way.
//!
//! Admitting a message (the caller's row, keys, limits and budget read, the
//! run stored) is a round trip to Postgres, which production pays across
//! the distance to the database. The model's own time to its first token
//! is longer still, so the two are overlapped: a session's room that holds
//! a [`Lease`] for the caller starts the call at once, and the run takes its
//! answer only if the admission then passes and the run's first request is
//! exactly the one that was sent ([`EarlyCall::take_if`]). Anything else
//! (a refusal, another provider, another history) drops it, which aborts
//! the call. Nothing reaches the caller before the admission answers: its
//! answer and its errors are what they would be without this.
//!
//! A lease is granted when a session is made ([`grant`]) and again when
//! one of its runs ends ([`renew`]), to an owner whose tier allows the
//! model on the server's key, with budget and a free run slot at that
//! moment (never with a key of the owner's own); it holds the
//! session's messages so far, and is used once: a call made for a request
//! the admission refuses costs at most one per session made, or run ended,
//! by an owner who was within their limits.

use std::cell::RefCell;
use std::rc::Rc;

use futures_channel::oneshot;
use serde::{Deserialize, Serialize};

use crate::billing::quota::ModelUsage;
use crate::billing::tiers::Limits;
use crate::chat::agent::{self, RunSpec};
use crate::db::chat::StoredMessage;
use crate::llm::{ChatRequest, ModelError, ModelStream, Provider};
use crate::ports::Ports;
use crate::routes::Ctx;
use crate::{ApiResult, Config};

/// How long a session's lease lasts: a user types their first message.
pub const LEASE_MS: i64 = 10 * 60 * 1000;

/// What lets a session's room start its next message's model call: whose
/// message it may be and the session's messages before it, as read when
/// the session was made or its last run ended. The call goes to the
/// server's default provider on the server's key (the room's own
/// configuration: no key travels with a lease). Kept by the room in
/// memory; never stored.
#[derive(Clone, Serialize, Deserialize)]
pub struct Lease {
    pub owner_id: String,
    pub granted_ms: i64,
    /// The session's messages (none for a new session, whose lease comes
    /// to its room in a request: this is never sent).
    #[serde(skip)]
    pub history: Vec<StoredMessage>,
}

impl std::fmt::Debug for Lease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lease")
            .field("owner_id", &self.owner_id)
            .field("granted_ms", &self.granted_ms)
            .field("history", &self.history.len())
            .finish()
    }
}

/// The lease of a session its owner just made, if they may run the model
/// now: a paid provider their tier allows, with budget and a run slot free
/// (the admission of the message checks all of it again). Only on the
/// server's key: a key of the owner's own that they delete must never be
/// used again, and a room cannot hear of that. The demo provider answers
/// at once and needs none.
pub fn grant(
    ctx: &Ctx<'_>,
    owner_id: &str,
    limits: &Limits,
    keys: ApiResult<Vec<(&'static str, String)>>,
    usage: ApiResult<ModelUsage>,
) -> Option<Lease> {
    let config = ctx.ports.config().ok()?;
    let (provider, byok) = agent::resolve_provider(config, None, &keys.ok()?).ok()?;
    let usage = usage.ok()?;
    let allowed = !byok
        && provider.name() != "demo"
        && limits.allows_model(provider.model())
        && usage.in_flight() < limits.concurrent_runs
        && crate::billing::quota::judge_model(ctx, &usage, limits).is_ok();
    allowed.then(|| Lease {
        owner_id: owner_id.to_owned(),
        granted_ms: ctx.ports.clock.now_ms(),
        history: Vec::new(),
    })
}

/// The lease for the message after `spec`'s run, which just ended, if its
/// owner may still run the model: what [`grant`] checks, read again with
/// the session's messages as the next message's admission will read them
/// (one round trip, after the run; nothing waits for it).
pub async fn renew(ports: &Ports, spec: &RunSpec) -> Option<Lease> {
    let config = ports.config().ok()?;
    let ctx = spec.ctx(ports);
    let (sql, owner) = (ports.sql.as_ref(), spec.owner_id.as_str());
    let (user, keys, usage, history) = futures_util::future::join4(
        crate::db::users::by_id(sql, owner),
        crate::billing::keys::user_keys(&ctx, owner),
        crate::billing::quota::model_usage(&ctx, owner),
        crate::db::chat::recent_messages(
            sql,
            &spec.session_id,
            Some(owner),
            agent::context_bytes(config.agent_context_tokens),
        ),
    )
    .await;
    let limits = user.ok()??.limits();
    let mut lease = grant(&ctx, owner, &limits, keys, usage)?;
    lease.history = history.ok()?;
    Some(lease)
}

/// The user's message as the run's history holds it.
pub fn user_message(id: &str, run_id: &str, content: serde_json::Value) -> StoredMessage {
    StoredMessage {
        id: id.to_owned(),
        run_id: Some(run_id.to_owned()),
        role: "user".into(),
        content,
        status: "complete".into(),
        model: None,
        usage: Default::default(),
        cost_micros: 0,
        created_at: String::new(),
    }
}

type Answer = Result<ModelStream, ModelError>;

/// A model call started before its run was admitted.
pub struct EarlyCall {
    provider: Provider,
    request: ChatRequest,
    answer: oneshot::Receiver<Answer>,
}

impl EarlyCall {
    /// Starts the first call of the run of `message`, the session's next,
    /// as the lease says it would be made, in the background of this
    /// request (the call goes on while the admission runs); not when the
    /// message names another provider (`wanted`) than the server's default.
    /// Dropping the result aborts the call.
    pub fn start(
        ports: &Ports,
        config: &Config,
        lease: Lease,
        message: StoredMessage,
        wanted: Option<&str>,
    ) -> Option<EarlyCall> {
        let background = ports.background.clone()?;
        // With no keys of the owner's: the server's default, on its key.
        let (provider, _) = agent::resolve_provider(config, None, &[]).ok()?;
        if wanted.is_some_and(|w| w != provider.name()) {
            return None;
        }
        let mut history = lease.history;
        history.push(message);
        let messages = agent::context(&history, config.agent_context_tokens);
        let request = agent::model_request(&provider, messages, config);
        let (tx, answer) = oneshot::channel::<Answer>();
        let (http, calling, sent) = (ports.http.clone(), provider.clone(), request.clone());
        background.spawn(Box::pin(async move {
            let mut tx = tx;
            let call = calling.stream(http.as_ref(), &sent);
            let dropped = futures_util::future::poll_fn(|cx| tx.poll_canceled(cx));
            let answered = match futures_util::future::select(Box::pin(call), dropped).await {
                futures_util::future::Either::Left((answer, _)) => Some(answer),
                // Nobody will take it: the call is dropped, and so aborted.
                futures_util::future::Either::Right(_) => None,
            };
            if let Some(answer) = answered {
                // A receiver gone meanwhile drops the answer (aborting it).
                let _ = tx.send(answer);
            }
        }));
        Some(EarlyCall {
            provider,
            request,
            answer,
        })
    }

    /// The call's answer, if it was made with `provider` and `request`
    /// exactly; otherwise `None`, and the call is aborted.
    pub fn take_if(
        self,
        provider: &Provider,
        request: &ChatRequest,
    ) -> Option<oneshot::Receiver<Answer>> {
        (self.provider == *provider && self.request == *request).then_some(self.answer)
    }
}

/// An [`EarlyCall`] on its way to the run's driver, which may take it once
/// (a run's spec is cloned on the way; the call is not).
#[derive(Clone, Default)]
pub struct EarlyHandle(Rc<RefCell<Option<EarlyCall>>>);

impl EarlyHandle {
    pub fn new(call: Option<EarlyCall>) -> Self {
        Self(Rc::new(RefCell::new(call)))
    }

    pub fn take(&self) -> Option<EarlyCall> {
        self.0.borrow_mut().take()
    }
}

impl std::fmt::Debug for EarlyHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let held = self.0.try_borrow().map(|c| c.is_some()).unwrap_or(true);
        write!(f, "EarlyHandle({})", if held { "a call" } else { "none" })
    }
}
