//! A response body (a JavaScript `ReadableStream`) as a Rust stream that is
//! safe to drop anywhere and that takes what arrives in a burst as one
//! chunk.
//!
//! Reading: a small JavaScript pump ([`ReadAhead`]) reads the body chunk by
//! chunk as fast as the runtime hands chunks over and keeps them; the Rust
//! side takes everything waiting at once. A model's stream arrives as one
//! network chunk per event (two, the way workerd splits HTTP chunks), and
//! when Rust woke once per chunk, each wake (a promise, its callbacks, the
//! task's poll through the whole agent loop, an event emitted, stored and
//! broadcast per token) was most of the relay's CPU: a 2,000-token burst
//! cost about 70 µs per chunk, where a JavaScript loop that only reads
//! pays about 10. Now the consumer is woken:
//! - at once for a body's first [`EAGER_CHUNKS`] chunks (a model's answer
//!   opens with a few small events before its first token, which is what a
//!   user waits on);
//! - at once when a chunk ends a line that began after a quiet spell (no
//!   line ended in the [`HOLD_MS`] before it): a token that comes alone, a
//!   model writing at its own pace (workerd hands an SSE event over in two
//!   pieces, split inside its `data:` line, and the second ends it);
//! - at once when the oldest waiting chunk has waited [`HOLD_MS`];
//! - otherwise by a zero-delay timer, which workerd runs once no more I/O is
//!   ready: a burst that is already in the socket is read whole, then taken
//!   in one piece (the core merges its text deltas into one event,
//!   `llm::merge_deltas`). The timer is kept off the path of a paced
//!   stream: while the room writes to a hundred WebSockets the runtime has
//!   I/O ready for a while, and with every token waiting for the timer the
//!   fan-out's p99 (`scripts/bench-chat`) was 16-19 ms in three runs; it is
//!   5-14 ms without, as with the reader before this one.
//!
//! Dropping: `worker::Response::stream()` reads through `wasm-streams`,
//! whose reader calls `releaseLock()` when dropped, through an import that
//! does not catch JavaScript exceptions. A body is often dropped outside
//! any request (the client went away and the runtime cancels our response
//! stream later), where the runtime refuses I/O with "Disallowed operation
//! called within global scope"; with `panic = "abort"` an uncaught
//! exception there is a "Critical error" that terminates the whole wasm
//! instance, killing every other request and room of the isolate. Here
//! every call into the stream catches, and a dropped reader cancels the
//! body so its producer (a Durable Object's SSE stream, a model provider)
//! learns it is gone.

use std::cell::RefCell;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};

use bytes::Bytes;
use futures_util::stream::LocalBoxStream;
use futures_util::{Stream, StreamExt};
use js_sys::Uint8Array;
use wasm_bindgen::prelude::*;
use wasm_bindgen::JsCast;

/// A body's first chunks go on at once (see the module doc).
const EAGER_CHUNKS: u32 = 8;
/// A chunk waits at most this long for the ones after it (the runtime's
/// clock moves in whole milliseconds, between I/O events).
const HOLD_MS: u32 = 2;

#[wasm_bindgen(inline_js = r#"
export class ReadAhead {
  constructor(stream, eager, holdMs) {
    this.reader = stream.getReader();
    this.eager = eager;
    this.holdMs = holdMs;
    this.chunks = [];
    this.since = 0;
    this.lineEndAt = 0;
    this.lineOpen = false;
    this.lineQuiet = true;
    this.ended = false;
    this.error = undefined;
    this.onReady = null;
    this.timer = null;
    this.pump();
  }
  async pump() {
    try {
      for (;;) {
        const { done, value } = await this.reader.read();
        if (done) break;
        if (!(value instanceof Uint8Array)) throw new Error('the body yielded a chunk that is not bytes');
        const now = Date.now();
        if (this.chunks.length === 0) this.since = now;
        this.chunks.push(value);
        if (!this.lineOpen) {
          this.lineOpen = true;
          this.lineQuiet = now - this.lineEndAt >= this.holdMs;
        }
        let quietLine = false;
        if (value.length > 0 && value[value.length - 1] === 10) {
          this.lineOpen = false;
          this.lineEndAt = now;
          quietLine = this.lineQuiet;
        }
        if (this.onReady === null) continue;
        if (this.eager > 0 || quietLine || now - this.since >= this.holdMs) this.wake();
        else if (this.timer === null) this.timer = setTimeout(() => { this.timer = null; this.wake(); }, 0);
      }
    } catch (e) {
      this.error = e instanceof Error ? e.message : String(e);
    }
    this.ended = true;
    this.wake();
  }
  stopTimer() {
    if (this.timer !== null) { clearTimeout(this.timer); this.timer = null; }
  }
  wake() {
    this.stopTimer();
    const f = this.onReady;
    this.onReady = null;
    if (f !== null) f();
  }
  take() {
    const chunks = this.chunks;
    if (chunks.length === 0) return undefined;
    this.chunks = [];
    this.eager = Math.max(0, this.eager - chunks.length);
    if (chunks.length === 1) return chunks[0];
    let size = 0;
    for (const c of chunks) size += c.byteLength;
    const all = new Uint8Array(size);
    let at = 0;
    for (const c of chunks) { all.set(c, at); at += c.byteLength; }
    return all;
  }
  wait(f) {
    if (this.chunks.length > 0 || this.ended) return false;
    this.onReady = f;
    return true;
  }
  close() {
    this.onReady = null;
    this.stopTimer();
    if (this.ended) return;
    this.ended = true;
    try {
      this.reader.cancel().catch(() => {});
    } catch (e) {}
  }
}
"#)]
extern "C" {
    /// The pump: reads the body ahead of the consumer.
    type ReadAhead;

    #[wasm_bindgen(constructor, catch)]
    fn new(stream: &JsValue, eager: u32, hold_ms: u32) -> Result<ReadAhead, JsValue>;

    /// Every chunk read since the last call, as one array; `undefined`
    /// when none waits.
    #[wasm_bindgen(method)]
    fn take(this: &ReadAhead) -> JsValue;

    /// Calls `f` once there is something to take or the body ended; false
    /// (and no call) when there already is.
    #[wasm_bindgen(method)]
    fn wait(this: &ReadAhead, f: &Closure<dyn FnMut()>) -> bool;

    #[wasm_bindgen(method, getter)]
    fn ended(this: &ReadAhead) -> bool;

    /// Why reading failed, once it did.
    #[wasm_bindgen(method, getter)]
    fn error(this: &ReadAhead) -> Option<String>;

    /// Stops: no more calls of the waiting `f`; cancels the body unless it
    /// ended.
    #[wasm_bindgen(method)]
    fn close(this: &ReadAhead);
}

/// The body as a stream of the chunks that waited at each poll.
struct Body {
    ahead: ReadAhead,
    waker: Rc<RefCell<Option<Waker>>>,
    /// Wakes the consumer; made once per body, not once per chunk.
    on_ready: Closure<dyn FnMut()>,
    done: bool,
}

impl Drop for Body {
    fn drop(&mut self) {
        // Before `on_ready` is freed: the pump must not call it after.
        self.ahead.close();
    }
}

impl Stream for Body {
    type Item = Result<Bytes, String>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        loop {
            if this.done {
                return Poll::Ready(None);
            }
            if let Some(chunk) = this.ahead.take().dyn_ref::<Uint8Array>() {
                return Poll::Ready(Some(Ok(Bytes::from(chunk.to_vec()))));
            }
            if this.ahead.ended() {
                this.done = true;
                return Poll::Ready(this.ahead.error().map(Err));
            }
            *this.waker.borrow_mut() = Some(cx.waker().clone());
            if this.ahead.wait(&this.on_ready) {
                return Poll::Pending;
            }
        }
    }
}

/// A JavaScript exception's message (an `Error`'s, a thrown string, else
/// its debug form).
pub(crate) fn describe(e: &JsValue) -> String {
    e.dyn_ref::<js_sys::Error>()
        .map(|e| String::from(e.message()))
        .or_else(|| e.as_string())
        .unwrap_or_else(|| format!("{e:?}"))
}

/// The chunks of `res`'s body; empty when it has none.
pub fn of(
    res: &worker::Response,
) -> Result<LocalBoxStream<'static, Result<Bytes, String>>, String> {
    let stream = match res.body() {
        worker::ResponseBody::Stream(stream) => stream.clone(),
        worker::ResponseBody::Empty => return Ok(futures_util::stream::empty().boxed_local()),
        worker::ResponseBody::Body(bytes) => {
            let bytes = Bytes::from(bytes.clone());
            return Ok(futures_util::stream::once(async move { Ok(bytes) }).boxed_local());
        }
    };
    let ahead = ReadAhead::new(stream.as_ref(), EAGER_CHUNKS, HOLD_MS).map_err(|e| describe(&e))?;
    let waker: Rc<RefCell<Option<Waker>>> = Rc::default();
    let on_ready = {
        let waker = Rc::clone(&waker);
        Closure::new(move || {
            if let Some(w) = waker.borrow_mut().take() {
                w.wake();
            }
        })
    };
    Ok(Body {
        ahead,
        waker,
        on_ready,
        done: false,
    }
    .boxed_local())
}
