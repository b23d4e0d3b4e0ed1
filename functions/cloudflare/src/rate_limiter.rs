//! The `RateLimiter` Durable Object: the exact sliding-window counter of one
//! rate-limit key (one object per key, `id_from_name("user:<id>")` or
//! `"ip:<address>"`), reached through the `RateLimiter` port
//! (`durable_limiter.rs`). Routes: `POST /hit?limit=L&window=S` answers the
//! core's `Decision` as JSON and remembers L; `POST /hit?window=S` decides
//! on the remembered limit and answers the core's `EarlyHit`, or `null`
//! (nothing counted) when none is remembered, so a hit can go out before
//! the caller's limit is read; `POST /unhit?limit=L&window=S` takes back
//! such a hit that L refuses, and remembers L.
//!
//! Exact: an object handles its events one at a time and a hit is decided
//! by `everjust_core::ports::ratelimit::decide_early` on the window held in
//! memory, with no `.await` between reading and updating it, so N
//! concurrent requests against a limit L get exactly L successes, whichever
//! isolate or location they arrive at.
//!
//! Cheap: after an object's first hit (which loads the window from storage
//! once and arms the clean-up alarm) a hit is one in-memory decision. The
//! window is written behind: at most once per `SAVE_EVERY_MS`, the latest
//! state, by a timer the first changed hit sets, with `allowUnconfirmed`, so
//! no answer waits for a write (and a busy key costs one storage write a
//! second, not one per request: writes are what Durable Object storage
//! bills). That is safe because storage is not what makes the counter
//! correct: memory is. Storage only lets the window outlive an eviction,
//! and an object is evicted only after it has been idle for a while, long
//! after its last write; a crash can lose at most the hits of the last
//! second, an under-count within one window.
//!
//! An alarm deletes the object's storage once its window has been idle for
//! two windows, so a key that stops being used (an IP address) costs
//! nothing.

use std::cell::{Cell, RefCell};
use std::rc::Rc;

use everjust_core::ports::ratelimit::{decide_early, undo_hit, WindowsState};
use serde::{Deserialize, Serialize};
use wasm_bindgen::{JsCast, JsValue};
use worker::{durable_object, DurableObject, Env, Method, Request, Response, State};

/// The storage key of the saved window.
const KEY: &str = "w";
/// The alarm fires this long after the window went quiet for two windows.
const ALARM_SLACK_MS: i64 = 1000;
/// A changed window is written at most this often.
const SAVE_EVERY_MS: u64 = 1000;

/// The window as saved, with its length (the alarm needs it after an eviction).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Saved {
    w: WindowsState,
    window_secs: u64,
    /// The limit of the last hit that named one.
    #[serde(default)]
    limit: Option<u32>,
}

impl Saved {
    /// When the window stops mattering: two windows after its current one began.
    fn stale_at_ms(&self) -> i64 {
        let window_ms = i64::try_from(self.window_secs).unwrap_or(60) * 1000;
        self.w.start + 2 * window_ms
    }
}

#[durable_object]
pub struct RateLimiter {
    state: State,
    /// The window, once loaded from storage (`None` before the first hit);
    /// shared with the write-behind timer.
    saved: Rc<RefCell<Option<Saved>>>,
    /// A write of the window is waiting for its timer.
    save_pending: Rc<Cell<bool>>,
    /// The clean-up alarm was armed by this instance.
    armed: Cell<bool>,
}

fn now_ms() -> i64 {
    js_sys::Date::now() as i64
}

impl RateLimiter {
    /// The saved window, read from storage on the first hit of this instance.
    async fn load(&self) -> worker::Result<()> {
        if self.saved.borrow().is_some() {
            return Ok(());
        }
        let stored = match self.state.storage().get::<String>(KEY).await {
            Ok(Some(json)) => serde_json::from_str::<Saved>(&json).unwrap_or_default(),
            Ok(None) => Saved::default(),
            Err(e) => {
                worker::console_warn!("rate limiter: reading the window: {e}");
                Saved::default()
            }
        };
        // Another hit may have loaded it while this one waited.
        let mut saved = self.saved.borrow_mut();
        if saved.is_none() {
            *saved = Some(stored);
        }
        Ok(())
    }

    /// Writes the window behind: unless a write is already waiting, in
    /// `SAVE_EVERY_MS` the state of that moment is written without holding
    /// any response for durability (`put(key, value, { allowUnconfirmed:
    /// true })`).
    fn save_behind(&self) {
        if self.save_pending.replace(true) {
            return;
        }
        let storage: Result<JsValue, JsValue> = self.state.as_raw().storage().map(Into::into);
        let (saved, pending) = (self.saved.clone(), self.save_pending.clone());
        wasm_bindgen_futures::spawn_local(async move {
            crate::clock::sleep(SAVE_EVERY_MS).await;
            pending.set(false);
            // Nothing to keep (the clean-up alarm may have emptied it).
            let Some(json) = saved
                .borrow()
                .as_ref()
                .filter(|s| s.w != WindowsState::default())
                .map(|s| serde_json::to_string(s).unwrap_or_default())
            else {
                return;
            };
            let put = (|| -> Result<js_sys::Promise, JsValue> {
                let storage = storage?;
                let put: js_sys::Function =
                    js_sys::Reflect::get(&storage, &"put".into())?.dyn_into()?;
                let options = js_sys::Object::new();
                js_sys::Reflect::set(&options, &"allowUnconfirmed".into(), &JsValue::TRUE)?;
                put.call3(&storage, &KEY.into(), &json.into(), &options)?
                    .dyn_into::<js_sys::Promise>()
            })();
            let written = match put {
                Ok(promise) => wasm_bindgen_futures::JsFuture::from(promise)
                    .await
                    .map(drop),
                Err(e) => Err(e),
            };
            if let Err(e) = written {
                worker::console_warn!("rate limiter: saving the window: {e:?}");
            }
        });
    }

    /// Arms the clean-up alarm for `ALARM_SLACK_MS` after `stale_at` (a
    /// date; `set_alarm` takes a time from now, and given a date it armed
    /// the alarm decades ahead).
    async fn arm_clean_up(&self, stale_at: i64, now: i64) -> worker::Result<()> {
        self.state
            .storage()
            .set_alarm((stale_at + ALARM_SLACK_MS - now).max(1))
            .await
    }

    /// A hit on `limit`, or on the remembered limit (`None`); answers the
    /// `Decision`, or for a hit on the remembered limit the `EarlyHit` (or
    /// `null` when none is remembered).
    async fn hit(&self, limit: Option<u32>, window_secs: u64) -> worker::Result<Response> {
        self.load().await?;
        // From here to the decision there is no `.await`: this is what makes
        // the count exact.
        let now = now_ms();
        let (answer, changed) = {
            let mut slot = self.saved.borrow_mut();
            let saved = slot.get_or_insert_with(Saved::default);
            let (before, known) = (saved.w.clone(), saved.limit);
            let Some(decide_on) = limit.or(known) else {
                return Response::from_json(&serde_json::Value::Null);
            };
            saved.window_secs = window_secs;
            saved.limit = Some(decide_on);
            let hit = decide_early(&mut saved.w, now, decide_on, window_secs);
            let answer = match limit {
                Some(_) => serde_json::to_value(hit.decision),
                None => serde_json::to_value(hit),
            }
            .map_err(|e| worker::Error::RustError(e.to_string()))?;
            (answer, saved.w != before || known != Some(decide_on))
        };
        if changed {
            self.save_behind();
        }
        if !self.armed.get() {
            self.armed.set(true);
            let stale_at = if changed {
                self.saved
                    .borrow()
                    .as_ref()
                    .map_or(now + 2 * 1000 * 60, Saved::stale_at_ms)
            } else {
                now + 2 * 1000 * 60
            };
            if let Err(e) = self.arm_clean_up(stale_at, now).await {
                worker::console_warn!("rate limiter: arming the clean-up alarm: {e}");
                self.armed.set(false);
            }
        }
        Response::from_json(&answer)
    }

    /// Takes back a hit made on the remembered limit, which `limit` refuses.
    async fn unhit(&self, limit: u32, window_secs: u64) -> worker::Result<Response> {
        self.load().await?;
        if let Some(saved) = self.saved.borrow_mut().as_mut() {
            undo_hit(&mut saved.w, now_ms(), window_secs);
            saved.limit = Some(limit);
        }
        self.save_behind();
        Ok(Response::empty()?.with_status(204))
    }
}

impl DurableObject for RateLimiter {
    fn new(state: State, _env: Env) -> Self {
        Self {
            state,
            saved: Rc::new(RefCell::new(None)),
            save_pending: Rc::new(Cell::new(false)),
            armed: Cell::new(false),
        }
    }

    async fn fetch(&self, req: Request) -> worker::Result<Response> {
        let url = req.url()?;
        let query = |name: &str| {
            url.query_pairs()
                .find(|(k, _)| k == name)
                .and_then(|(_, v)| v.parse::<u64>().ok())
        };
        let limit = query("limit").map(|l| u32::try_from(l).unwrap_or(u32::MAX));
        let Some(window) = query("window").map(|w| w.max(1)) else {
            return Response::error("window is required", 400);
        };
        match (req.method(), url.path(), limit) {
            (Method::Post, "/hit", limit) => self.hit(limit, window).await,
            (Method::Post, "/unhit", Some(limit)) => self.unhit(limit, window).await,
            (Method::Post, "/unhit", None) => Response::error("limit is required", 400),
            _ => Response::error("not found", 404),
        }
    }

    /// Deletes the storage of a window that no longer matters, else re-arms.
    async fn alarm(&self) -> worker::Result<Response> {
        self.load().await?;
        let stale_at = self.saved.borrow().as_ref().map_or(0, Saved::stale_at_ms);
        let now = now_ms();
        if now >= stale_at {
            self.state.storage().delete_all().await?;
            *self.saved.borrow_mut() = Some(Saved::default());
            self.armed.set(false);
        } else {
            self.arm_clean_up(stale_at, now).await?;
            self.armed.set(true);
        }
        Response::ok("")
    }
}
