//! EverJust on Cloudflare Workers. The Worker only converts between
//! workers-rs and `http` types, builds the core's ports from its bindings
//! and calls `everjust_core::handle`; every decision lives in the core.
//! Live chat sessions run in the `SessionRoom` Durable Object, reached
//! through the `Rooms` port; API rate limits are counted exactly by the
//! `RateLimiter` Durable Object (one per key), through the `RateLimiter` port.
#![cfg(target_arch = "wasm32")]

mod background;
mod body_stream;
mod clock;
mod config;
mod convert;
mod crypto;
mod durable_limiter;
mod fetch;
mod kv;
mod pg_socket;
mod rate_limiter;
mod rooms;
mod session_room;
mod sql;
mod sse_pipe;

use std::rc::Rc;

use everjust_core::ports::background::Background;
use everjust_core::Ports;
use worker::{event, Context, Env};

pub use rate_limiter::RateLimiter;
pub use session_room::SessionRoom;

/// Binding names, as declared in `wrangler.toml`.
const KV_BINDING: &str = "KV";
const HYPERDRIVE_BINDING: &str = "HYPERDRIVE";
const ROOMS_BINDING: &str = "ROOMS";
const LIMITER_BINDING: &str = "LIMITER";
/// Connect to this Postgres URL instead of through the Hyperdrive binding
/// (see `sql`).
const DIRECT_DATABASE_VAR: &str = "DATABASE_DIRECT_URL";

#[event(start)]
fn start() {
    // Panics and the core's log lines would otherwise vanish:
    // wasm32-unknown-unknown has no stderr.
    std::panic::set_hook(Box::new(|info| worker::console_error!("panic: {info}")));
    everjust_core::log::set_sink(|line| worker::console_log!("{line}"));
    microtasks_by_promise();
}

/// Has Rust's futures scheduled through a resolved promise's `then` rather
/// than workerd's `queueMicrotask`.
///
/// wasm-bindgen-futures wakes every task through the global
/// `queueMicrotask` (looked up at each call). workerd implements it in C++:
/// each call wraps its callback in a new persistent handle and crosses from
/// JavaScript to C++ and back, about a tenth of the runtime's CPU in a
/// streamed chat (seen with perf), where a task wakes once or twice per
/// token. `Promise.prototype.then` bound to a resolved promise queues the
/// same callback as a microtask inside V8. The one difference: a callback
/// that throws becomes a rejected promise rather than an error event, and
/// both are only logged.
fn microtasks_by_promise() {
    use wasm_bindgen::{JsCast, JsValue};
    let global = js_sys::global();
    let resolved = js_sys::Promise::resolve(&JsValue::UNDEFINED);
    let bound = js_sys::Reflect::get(&resolved, &JsValue::from_str("then"))
        .ok()
        .and_then(|then| then.dyn_into::<js_sys::Function>().ok())
        .map(|then| then.bind0(&resolved));
    if let Some(queue) = bound {
        let _ = js_sys::Reflect::set(&global, &JsValue::from_str("queueMicrotask"), &queue);
    }
}

#[event(fetch)]
async fn fetch(req: web_sys::Request, env: Env, ctx: Context) -> worker::Result<worker::Response> {
    if let Some(session) = rooms::forwarded_session(&req, &env) {
        // Its headers, for an answer of our own should the room fail.
        let head = convert::request_head(&req)?;
        return match rooms::forward(env.durable_object(ROOMS_BINDING), &session, req).await {
            Ok(res) => Ok(res),
            Err(e) => convert::write_response(everjust_core::failed(
                &base_ports(&env),
                &head,
                everjust_core::ApiError::internal(format!("session room: {e}")),
            )),
        };
    }
    let req = convert::read_request(req).await?;
    let meta = convert::meta(&req);
    let upgrade = rooms::Upgrade::of(&req);
    let mut ports = base_ports(&env);
    let background = Rc::new(background::WaitUntil(ctx));
    ports.background = Some(background.clone());
    ports.rooms = Some(Rc::new(rooms::DurableRooms::new(
        env.durable_object(ROOMS_BINDING),
        upgrade,
    )));
    let res = everjust_core::handle(&ports, req, meta).await;
    // The request's Postgres connection is closed once the answer is on its
    // way (a timer turn later), not before it: closing a socket is I/O the
    // answer would otherwise wait behind.
    background.spawn(Box::pin(async move {
        clock::sleep(0).await;
        drop(ports);
    }));
    convert::write_response(res)
}

/// The cron trigger (`[triggers] crons` in wrangler.toml): the scheduled
/// jobs (sandbox idle: stop idle sandboxes, archive long-stopped ones, sweep
/// orphans; GitHub catch-up: re-run syncs that failed after the answer).
#[event(scheduled)]
async fn scheduled(_event: worker::ScheduledEvent, env: Env, _ctx: worker::ScheduleContext) {
    everjust_core::jobs::scheduled(&base_ports(&env)).await;
}

/// The ports of one request or one room, without rooms or background work. Nothing here
/// touches the network: Postgres is connected on the first query.
pub(crate) fn base_ports(env: &Env) -> Ports {
    gated_ports(env, None)
}

/// Where Postgres connections go: `DATABASE_DIRECT_URL`, else Hyperdrive.
pub(crate) fn sql_target(env: &Env) -> sql::Target {
    match env.var(DIRECT_DATABASE_VAR) {
        Ok(url) if !url.to_string().is_empty() => sql::Target::Direct(url.to_string()),
        _ => sql::Target::Hyperdrive(env.hyperdrive(HYPERDRIVE_BINDING)),
    }
}

/// [`base_ports`] whose database connection runs `gate` first.
pub(crate) fn gated_ports(env: &Env, gate: Option<sql::Gate>) -> Ports {
    Ports {
        sql: Rc::new(sql::LazyPg::new(sql_target(env), gate)),
        kv: Rc::new(kv::WorkersKv::new(env.kv(KV_BINDING))),
        http: Rc::new(fetch::WorkerFetch),
        clock: Rc::new(clock::DateClock),
        crypto: Rc::new(crypto::WebCrypto),
        rooms: None,
        // Exact API rate limits (see `rate_limiter`); without the binding
        // every rate-limited request fails, so a missing one shows at once.
        limiter: Some(Rc::new(durable_limiter::DurableLimiter::new(
            env.durable_object(LIMITER_BINDING),
        ))),
        // Without a request to wait on (a room's alarm), work runs in line.
        background: None,
        config: config::load(env),
    }
}
