//! A streamed response body the room writes into as events happen.
//!
//! The body is the readable side of workerd's `IdentityTransformStream`, a
//! byte pipe inside the runtime: the runtime moves what is written to the
//! client without calling back into JavaScript or Rust per chunk. The room
//! hands each event's text to the pipe at the moment it broadcasts it,
//! synchronously (no Rust stream polled by a `pull` promise per chunk). What
//! costs is the runtime's work per chunk on its way to the client, so text
//! is coalesced into fewer chunks ([`SsePipe`]): on a 2,000-token burst that
//! took the relay's added time from about 430 ms to about 170 ms, together
//! with the microtask change in `lib.rs`.
//!
//! The room never waits for a reader: like the unbounded queue this replaced,
//! text waits in memory while the client is slower than the model. A client
//! that went away fails the next write; the pipe is marked gone and skipped
//! from then on.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::rc::Rc;
use std::task::{Poll, Waker};

use js_sys::{Promise, Uint8Array};
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::JsFuture;

#[wasm_bindgen]
extern "C" {
    /// workerd's `IdentityTransformStream`, bound with `catch`.
    type IdentityTransformStream;

    #[wasm_bindgen(constructor, catch)]
    fn new() -> Result<IdentityTransformStream, JsValue>;

    #[wasm_bindgen(method, getter)]
    fn readable(this: &IdentityTransformStream) -> web_sys::ReadableStream;

    #[wasm_bindgen(method, getter)]
    fn writable(this: &IdentityTransformStream) -> Writable;

    type Writable;

    #[wasm_bindgen(method, catch, js_name = getWriter)]
    fn get_writer(this: &Writable) -> Result<Writer, JsValue>;

    /// A `WritableStreamDefaultWriter`, bound with `catch` on every method.
    type Writer;

    #[wasm_bindgen(method, catch)]
    fn write(this: &Writer, chunk: &Uint8Array) -> Result<Settling, JsValue>;

    #[wasm_bindgen(method, catch)]
    fn close(this: &Writer) -> Result<Settling, JsValue>;

    /// A promise the writer returns.
    type Settling;
}

/// Text waits at most about this long for more to join it (the runtime's
/// clock moves in whole milliseconds, between I/O events). It only waits
/// while the room is busy with tokens already read, so the bound matters
/// only for a model that sends faster than the room reads. Shorter holds
/// measured worse: at 16 ms a 2,000-token burst took twice as long to reach
/// the client (`scripts/bench-chat`), as if each chunk cost milliseconds.
const HOLD_MS: f64 = 250.0;

/// What the room has written and the pipe has not taken yet.
#[derive(Default)]
struct Outbox {
    text: RefCell<String>,
    /// When the oldest of `text` was written (ms since the epoch).
    since_ms: Cell<f64>,
    /// `text` has waited HOLD_MS: write it now, not at the next timer turn.
    due: Cell<bool>,
    /// No more text: close the body once `text` is out.
    closing: Cell<bool>,
    /// The reader went away (a write failed): drop everything.
    gone: Cell<bool>,
    /// The writer task, waiting for text or for it to be due.
    waker: RefCell<Option<Waker>>,
}

impl Outbox {
    fn wake(&self) {
        if let Some(waker) = self.waker.take() {
            waker.wake();
        }
    }

    /// Has what waits written now rather than at the next timer turn.
    fn make_due(&self) {
        if !self.due.replace(true) {
            self.wake();
        }
    }

    /// Ready once `ready` holds; registers the task's waker until then.
    fn until<'a>(&'a self, ready: impl Fn(&Self) -> bool + 'a) -> impl Future<Output = ()> + 'a {
        std::future::poll_fn(move |cx| {
            if ready(self) {
                return Poll::Ready(());
            }
            *self.waker.borrow_mut() = Some(cx.waker().clone());
            Poll::Pending
        })
    }
}

/// The writing end of one streamed response.
///
/// A task owns the JavaScript writer. Text the room writes waits for the
/// runtime's next turn to its timers, so that a burst of tokens already read
/// from the model (one network read can hold a hundred) leaves as one chunk
/// rather than a hundred: the runtime's own work per chunk, from the room to
/// the client, was half the relay's time. A burst that goes on is written
/// out every HOLD_MS; a lone token leaves as soon as the room waits on the
/// model again, a few microseconds later, and the first token of a block
/// leaves at once ([`SsePipe::write_now`]).
pub struct SsePipe {
    outbox: Rc<Outbox>,
}

impl SsePipe {
    /// A pipe and the body to answer with.
    pub fn new() -> Result<(SsePipe, web_sys::ReadableStream), JsValue> {
        let pipe = IdentityTransformStream::new()?;
        let writer = pipe.writable().get_writer()?;
        let outbox = Rc::new(Outbox::default());
        wasm_bindgen_futures::spawn_local(write_out(writer, Rc::clone(&outbox)));
        Ok((SsePipe { outbox }, pipe.readable()))
    }

    /// Queues `text` to leave at once, with whatever waits before it (the
    /// first token of an answer: the time to it is what a user waits on).
    pub fn write_now(&self, text: &str) -> bool {
        let open = self.write(text);
        if open && !text.is_empty() {
            self.outbox.make_due();
        }
        open
    }

    /// Queues `text`; false once the reader is gone.
    pub fn write(&self, text: &str) -> bool {
        let outbox = &self.outbox;
        if outbox.gone.get() {
            return false;
        }
        if text.is_empty() {
            return true;
        }
        let now = js_sys::Date::now();
        let was_empty = {
            let mut waiting = outbox.text.borrow_mut();
            let was_empty = waiting.is_empty();
            waiting.push_str(text);
            was_empty
        };
        if was_empty {
            outbox.since_ms.set(now);
            outbox.wake();
        } else if now - outbox.since_ms.get() >= HOLD_MS {
            outbox.make_due();
        }
        true
    }

    /// Ends the body after what is queued.
    pub fn close(&self) {
        // Woken whatever `due` was: the task may wait for text, not for it.
        self.outbox.closing.set(true);
        self.outbox.due.set(true);
        self.outbox.wake();
    }
}

/// The writer task: one chunk at a time, each after the one before it was
/// taken.
async fn write_out(writer: Writer, outbox: Rc<Outbox>) {
    loop {
        outbox
            .until(|o| !o.text.borrow().is_empty() || o.closing.get())
            .await;
        if !outbox.due.get() {
            let timers = crate::clock::sleep(0);
            let due = outbox.until(|o| o.due.get());
            futures_util::pin_mut!(due);
            futures_util::future::select(timers, due).await;
        }
        outbox.due.set(false);
        let text = outbox.text.take();
        if text.is_empty() {
            // Closing, with nothing left to write.
            if let Ok(closing) = writer.close() {
                let _ = JsFuture::from(Promise::from(JsValue::from(closing))).await;
            }
            return;
        }
        let written = match writer.write(&Uint8Array::from(text.as_bytes())) {
            Ok(written) => JsFuture::from(Promise::from(JsValue::from(written)))
                .await
                .is_ok(),
            Err(_) => false,
        };
        if !written {
            outbox.gone.set(true);
            outbox.text.take();
            return;
        }
    }
}
