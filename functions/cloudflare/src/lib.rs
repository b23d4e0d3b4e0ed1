//! EverJust on Cloudflare Workers. The Worker only converts between
//! workers-rs and `http` types, builds the core's ports from its bindings
//! and calls `everjust_core::handle`; every decision lives in the core.
#![cfg(target_arch = "wasm32")]

mod clock;
mod config;
mod convert;
mod crypto;
mod fetch;
mod kv;
mod session_room;
mod sql;

use std::rc::Rc;

use everjust_core::{Meta, Ports};
use worker::{event, Context, Env, HttpRequest};

pub use session_room::SessionRoom;

/// Binding names, as declared in `wrangler.toml`.
const KV_BINDING: &str = "KV";
const HYPERDRIVE_BINDING: &str = "HYPERDRIVE";

#[event(start)]
fn start() {
    // Panics would otherwise vanish: wasm32-unknown-unknown has no stderr.
    std::panic::set_hook(Box::new(|info| worker::console_error!("panic: {info}")));
}

#[event(fetch)]
async fn fetch(req: HttpRequest, env: Env, _ctx: Context) -> worker::Result<worker::Response> {
    let client_ip = req
        .headers()
        .get("cf-connecting-ip")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let req = convert::read_request(req).await?;
    let ports = ports(&env);
    let res = everjust_core::handle(&ports, req, Meta { client_ip }).await;
    convert::write_response(res)
}

/// The ports of one request. Nothing here touches the network: Postgres is
/// connected on the first query.
fn ports(env: &Env) -> Ports {
    Ports {
        sql: Rc::new(sql::LazyPg::new(env.hyperdrive(HYPERDRIVE_BINDING))),
        kv: Rc::new(kv::WorkersKv::new(env.kv(KV_BINDING))),
        http: Rc::new(fetch::WorkerFetch),
        clock: Rc::new(clock::DateClock),
        crypto: Rc::new(crypto::WebCrypto),
        rooms: None,
        config: config::load(env),
    }
}
