//! A native test host for the EverJust Spin component: what `spin up` would
//! give it, minus the manifest. HTTP in (with Spin's `spin-*` headers),
//! `wasi:http` out, `fermyon:spin/key-value` in memory (the `default` store,
//! kept for the life of the process), `spin:postgres/postgres@4.0.0` forwarded
//! to a real database through tokio-postgres the way Spin does it (server
//! inferred parameter types, the same value conversions), and
//! `fermyon:spin/variables` from `SPIN_VARIABLE_<NAME>` environment variables.
//!
//! Usage: everjust-spin-host <component.wasm> [--listen 127.0.0.1:3000]
//! Prints `listening on http://ADDR` once it accepts connections.

mod postgres;

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use anyhow::{bail, Context};
use hyper::server::conn::http1;
use tokio::net::TcpListener;
use wasmtime::component::{Component, HasSelf, Linker, Resource, ResourceTable};
use wasmtime::{Engine, Store};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::io::TokioIo;
use wasmtime_wasi_http::p2::bindings::http::types::Scheme;
use wasmtime_wasi_http::p2::bindings::ProxyPre;
use wasmtime_wasi_http::p2::body::HyperOutgoingBody;
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

wasmtime::component::bindgen!({
    path: "wit",
    world: "everjust:spin-host/host",
    imports: { default: async | trappable },
    with: {
        "fermyon:spin/key-value.store": KvStore,
        "spin:postgres/postgres.connection": postgres::PgConnection,
    },
});

use fermyon::spin::{key_value, variables};

/// An open handle on the one in-memory store.
pub struct KvStore;

/// What every request shares: the key-value data and the variables.
struct Shared {
    kv: Mutex<HashMap<String, Vec<u8>>>,
    variables: HashMap<String, String>,
}

/// Per-request state, one `Store` per request like Spin.
pub struct State {
    wasi: WasiCtx,
    http: WasiHttpCtx,
    table: ResourceTable,
    shared: Arc<Shared>,
}

impl WasiView for State {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl WasiHttpView for State {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: Default::default(),
        }
    }
}

impl key_value::Host for State {}

impl key_value::HostStore for State {
    async fn open(
        &mut self,
        label: String,
    ) -> wasmtime::Result<Result<Resource<KvStore>, key_value::Error>> {
        if label != "default" {
            return Ok(Err(key_value::Error::NoSuchStore));
        }
        Ok(Ok(self.table.push(KvStore)?))
    }

    async fn get(
        &mut self,
        _: Resource<KvStore>,
        key: String,
    ) -> wasmtime::Result<Result<Option<Vec<u8>>, key_value::Error>> {
        Ok(Ok(self.kv().get(&key).cloned()))
    }

    async fn set(
        &mut self,
        _: Resource<KvStore>,
        key: String,
        value: Vec<u8>,
    ) -> wasmtime::Result<Result<(), key_value::Error>> {
        self.kv().insert(key, value);
        Ok(Ok(()))
    }

    async fn delete(
        &mut self,
        _: Resource<KvStore>,
        key: String,
    ) -> wasmtime::Result<Result<(), key_value::Error>> {
        self.kv().remove(&key);
        Ok(Ok(()))
    }

    async fn exists(
        &mut self,
        _: Resource<KvStore>,
        key: String,
    ) -> wasmtime::Result<Result<bool, key_value::Error>> {
        Ok(Ok(self.kv().contains_key(&key)))
    }

    async fn get_keys(
        &mut self,
        _: Resource<KvStore>,
    ) -> wasmtime::Result<Result<Vec<String>, key_value::Error>> {
        Ok(Ok(self.kv().keys().cloned().collect()))
    }

    async fn drop(&mut self, store: Resource<KvStore>) -> wasmtime::Result<()> {
        self.table.delete(store)?;
        Ok(())
    }
}

impl State {
    fn kv(&self) -> std::sync::MutexGuard<'_, HashMap<String, Vec<u8>>> {
        self.shared.kv.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl variables::Host for State {
    async fn get(&mut self, name: String) -> wasmtime::Result<Result<String, variables::Error>> {
        if name.is_empty()
            || !name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        {
            return Ok(Err(variables::Error::InvalidName(name)));
        }
        Ok(self
            .shared
            .variables
            .get(&name)
            .cloned()
            .ok_or(variables::Error::Undefined(name)))
    }
}

/// `SPIN_VARIABLE_JWT_SECRET=x` -> `jwt_secret = x`; `DATABASE_URL` stands in
/// for `database_url` when that is not given.
fn variables_from_env() -> HashMap<String, String> {
    let mut vars: HashMap<String, String> = std::env::vars()
        .filter_map(|(k, v)| {
            k.strip_prefix("SPIN_VARIABLE_")
                .map(|n| (n.to_ascii_lowercase(), v))
        })
        .collect();
    if let Ok(url) = std::env::var("DATABASE_URL") {
        vars.entry("database_url".to_owned()).or_insert(url);
    }
    vars
}

/// Compiles the component, or loads the machine code compiled for these
/// exact bytes by an earlier run (cached beside the system temp dir).
fn load_component(engine: &Engine, path: &Path) -> anyhow::Result<Component> {
    let bytes = std::fs::read(path).with_context(|| format!("read {}", path.display()))?;
    let mut h = std::collections::hash_map::DefaultHasher::new();
    bytes.hash(&mut h);
    env!("CARGO_PKG_VERSION").hash(&mut h);
    let cache: PathBuf =
        std::env::temp_dir().join(format!("everjust-spin-host-{:016x}.cwasm", h.finish()));
    if cache.exists() {
        // SAFETY: the file was written by `precompile_component` of this same
        // binary for these same bytes (the name is their hash); a stale or
        // foreign file is rejected by wasmtime's header check and recompiled.
        #[allow(unsafe_code)]
        match unsafe { Component::deserialize_file(engine, &cache) } {
            Ok(c) => return Ok(c),
            Err(e) => eprintln!(
                "spin-host: ignoring compiled cache {}: {e}",
                cache.display()
            ),
        }
    }
    let compiled = engine
        .precompile_component(&bytes)
        .map_err(|e| anyhow::anyhow!("compile component: {e:?}"))?;
    let tmp = cache.with_extension(format!("tmp{}", std::process::id()));
    if std::fs::write(&tmp, &compiled).is_ok() {
        let _ = std::fs::rename(&tmp, &cache);
    }
    // SAFETY: `compiled` was produced just now by this engine.
    #[allow(unsafe_code)]
    let component = unsafe { Component::deserialize(engine, &compiled) };
    component.map_err(|e| anyhow::anyhow!("load compiled component: {e:?}"))
}

struct Server {
    pre: ProxyPre<State>,
    shared: Arc<Shared>,
}

impl Server {
    async fn handle(
        &self,
        mut req: hyper::Request<hyper::body::Incoming>,
        client: SocketAddr,
        local: SocketAddr,
    ) -> anyhow::Result<hyper::Response<HyperOutgoingBody>> {
        let path_and_query = req
            .uri()
            .path_and_query()
            .map_or("/".to_owned(), |p| p.as_str().to_owned());
        let path = req.uri().path().to_owned();
        let host = req
            .headers()
            .get(hyper::header::HOST)
            .and_then(|h| h.to_str().ok())
            .map_or_else(|| local.to_string(), str::to_owned);
        // Like Spin: the spin-* headers come from the host, never the client.
        let headers = req.headers_mut();
        let client_set: Vec<_> = headers
            .keys()
            .filter(|k| k.as_str().starts_with("spin-"))
            .cloned()
            .collect();
        for k in client_set {
            headers.remove(k);
        }
        let mut set = |name: &'static str, value: String| -> anyhow::Result<()> {
            headers.insert(name, value.parse()?);
            Ok(())
        };
        set("spin-full-url", format!("http://{host}{path_and_query}"))?;
        set("spin-path-info", path)?;
        set("spin-matched-route", "/...".to_owned())?;
        set("spin-raw-component-route", "/...".to_owned())?;
        set("spin-component-route", String::new())?;
        set("spin-base-path", "/".to_owned())?;
        set("spin-client-addr", client.to_string())?;
        // wasi:http wants an absolute URI (scheme and authority) on the request.
        let uri = format!("http://{host}{path_and_query}");
        *req.uri_mut() = uri.parse().context("request URI")?;

        let req_line = (req.method().clone(), path_and_query.clone());
        let mut store = Store::new(
            self.pre.engine(),
            State {
                wasi: WasiCtx::builder().inherit_stdout().inherit_stderr().build(),
                http: WasiHttpCtx::new(),
                table: ResourceTable::new(),
                shared: self.shared.clone(),
            },
        );
        let (sender, receiver) = tokio::sync::oneshot::channel();
        let req = store
            .data_mut()
            .http()
            .new_incoming_request(Scheme::Http, req)?;
        let out = store.data_mut().http().new_response_outparam(sender)?;
        let pre = self.pre.clone();
        // The guest keeps running after it sets the response: it streams the body.
        let what = format!("{} {}", req_line.0, req_line.1);
        let started = Instant::now();
        let task = tokio::task::spawn(async move {
            let proxy = pre.instantiate_async(&mut store).await?;
            let r = proxy
                .wasi_http_incoming_handler()
                .call_handle(&mut store, req, out)
                .await;
            // A trap after the response started is otherwise invisible.
            match &r {
                Err(e) => eprintln!(
                    "spin-host: {what}: the guest trapped after {} ms: {e:?}",
                    started.elapsed().as_millis()
                ),
                Ok(()) if log_requests() => eprintln!(
                    "spin-host: {what}: done in {} ms",
                    started.elapsed().as_millis()
                ),
                Ok(()) => {}
            }
            r
        });
        match receiver.await {
            Ok(Ok(resp)) => Ok(resp),
            Ok(Err(e)) => Err(anyhow::anyhow!("guest answered with an error: {e:?}")),
            Err(_) => {
                let why = match task.await {
                    Ok(Ok(())) => "it returned without one".to_owned(),
                    Ok(Err(e)) => format!("{e:?}"),
                    Err(e) => format!("{e:?}"),
                };
                bail!("the guest set no response: {why}")
            }
        }
    }
}

/// `SPIN_HOST_LOG=1`: one line per finished request.
fn log_requests() -> bool {
    static L: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *L.get_or_init(|| std::env::var("SPIN_HOST_LOG").is_ok_and(|v| v == "1"))
}

fn error_response(e: &anyhow::Error) -> hyper::Response<HyperOutgoingBody> {
    use http_body_util::BodyExt;
    eprintln!("spin-host: request failed: {e:#}");
    let body = http_body_util::Full::new(hyper::body::Bytes::from(
        "spin-host: the component failed\n",
    ))
    .map_err(|never| match never {})
    .boxed_unsync();
    let mut res = hyper::Response::new(body);
    *res.status_mut() = hyper::StatusCode::INTERNAL_SERVER_ERROR;
    res
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let started = Instant::now();
    let mut args = std::env::args().skip(1);
    let mut wasm = None;
    let mut listen =
        std::env::var("SPIN_HOST_LISTEN").unwrap_or_else(|_| "127.0.0.1:3000".to_owned());
    while let Some(a) = args.next() {
        match a.as_str() {
            "--listen" => listen = args.next().context("--listen needs ADDR:PORT")?,
            "-h" | "--help" => {
                println!("usage: everjust-spin-host <component.wasm> [--listen 127.0.0.1:3000]");
                return Ok(());
            }
            _ if wasm.is_none() => wasm = Some(PathBuf::from(a)),
            _ => bail!("unexpected argument {a}"),
        }
    }
    let wasm =
        wasm.context("usage: everjust-spin-host <component.wasm> [--listen 127.0.0.1:3000]")?;

    let engine = Engine::default();
    let component = load_component(&engine, &wasm)?;
    let mut linker: Linker<State> = Linker::new(&engine);
    let link =
        |r: wasmtime::Result<()>, what: &str| r.map_err(|e| anyhow::anyhow!("link {what}: {e:?}"));
    link(wasmtime_wasi::p2::add_to_linker_async(&mut linker), "wasi")?;
    link(
        wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker),
        "wasi:http",
    )?;
    link(
        key_value::add_to_linker::<_, HasSelf<_>>(&mut linker, |s| s),
        "key-value",
    )?;
    link(
        variables::add_to_linker::<_, HasSelf<_>>(&mut linker, |s| s),
        "variables",
    )?;
    link(
        spin::postgres::postgres::add_to_linker::<_, HasSelf<_>>(&mut linker, |s| s),
        "postgres",
    )?;
    let pre = linker
        .instantiate_pre(&component)
        .map_err(|e| anyhow::anyhow!("the component needs an import this host lacks: {e:?}"))?;
    let pre =
        ProxyPre::new(pre).map_err(|e| anyhow::anyhow!("not a wasi:http component: {e:?}"))?;

    let shared = Arc::new(Shared {
        kv: Mutex::default(),
        variables: variables_from_env(),
    });
    let server = Arc::new(Server { pre, shared });
    let listener = TcpListener::bind(&listen)
        .await
        .with_context(|| format!("bind {listen}"))?;
    let local = listener.local_addr()?;
    println!(
        "listening on http://{local} (ready in {} ms)",
        started.elapsed().as_millis()
    );

    loop {
        let (socket, client) = listener.accept().await?;
        let server = server.clone();
        tokio::task::spawn(async move {
            let service = hyper::service::service_fn(move |req| {
                let server = server.clone();
                async move {
                    // The component never upgrades (wasi:http strips `upgrade`): close
                    // such a connection after the answer, as clients wait for that.
                    let upgrade = req.headers().contains_key(hyper::header::UPGRADE);
                    let mut res = match server.handle(req, client, local).await {
                        Ok(r) => r,
                        Err(e) => error_response(&e),
                    };
                    if upgrade {
                        res.headers_mut().insert(
                            hyper::header::CONNECTION,
                            hyper::header::HeaderValue::from_static("close"),
                        );
                    }
                    Ok::<_, std::convert::Infallible>(res)
                }
            });
            if let Err(e) = http1::Builder::new()
                .keep_alive(true)
                .serve_connection(TokioIo::new(socket), service)
                .await
            {
                eprintln!("spin-host: connection from {client}: {e}");
            }
        });
    }
}
