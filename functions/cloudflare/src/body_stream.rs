//! A response body (a JavaScript `ReadableStream`) as a Rust stream that is
//! safe to drop anywhere.
//!
//! `worker::Response::stream()` reads through `wasm-streams`, whose reader
//! calls `releaseLock()` when dropped, through an import that does not
//! catch JavaScript exceptions. A body is often dropped outside any request
//! (the client went away and the runtime cancels our response stream
//! later), where the runtime refuses I/O with "Disallowed operation called
//! within global scope"; with `panic = "abort"` an uncaught exception there
//! is a "Critical error" that terminates the whole wasm instance, killing
//! every other request and room of the isolate. Here every call into the
//! stream catches, and a dropped reader cancels the body so its producer
//! (a Durable Object's SSE stream, a model provider) learns it is gone.

use bytes::Bytes;
use futures_util::stream::LocalBoxStream;
use futures_util::StreamExt;
use js_sys::{Promise, Reflect, Uint8Array};
use wasm_bindgen::prelude::*;
use wasm_bindgen::JsCast;
use wasm_bindgen_futures::JsFuture;

#[wasm_bindgen]
extern "C" {
    /// A `ReadableStream`, bound with `catch`.
    type Stream;

    #[wasm_bindgen(method, catch, js_name = getReader)]
    fn get_reader(this: &Stream) -> Result<Reader, JsValue>;

    /// A `ReadableStreamDefaultReader`, bound with `catch` on every method.
    type Reader;

    #[wasm_bindgen(method, catch)]
    fn read(this: &Reader) -> Result<Promise, JsValue>;

    #[wasm_bindgen(method, catch)]
    fn cancel(this: &Reader) -> Result<Cancelling, JsValue>;

    /// The promise `cancel()` returns.
    type Cancelling;

    #[wasm_bindgen(method, catch, js_name = catch)]
    fn on_reject(this: &Cancelling, handler: &JsValue) -> Result<JsValue, JsValue>;
}

/// Owns the reader; cancels the body when dropped before its end.
struct Body {
    reader: Reader,
    done: bool,
}

impl Drop for Body {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        if let Ok(promise) = self.reader.cancel() {
            // A rejected cancel (no request to run it in) is of no interest:
            // handle it so that it is not reported as unhandled.
            // `Boolean` is a built-in function that ignores what it gets;
            // a Rust closure would leak whenever it is never called.
            if let Ok(ignore) = Reflect::get(&js_sys::global(), &JsValue::from_str("Boolean")) {
                let _ = promise.on_reject(&ignore);
            }
        }
    }
}

impl Body {
    async fn next(&mut self) -> Option<Result<Bytes, String>> {
        if self.done {
            return None;
        }
        let chunk = match self.reader.read() {
            Ok(promise) => JsFuture::from(promise).await,
            Err(e) => Err(e),
        };
        let chunk = match chunk {
            Ok(chunk) => chunk,
            Err(e) => {
                self.done = true;
                return Some(Err(describe(&e)));
            }
        };
        let done = Reflect::get(&chunk, &JsValue::from_str("done"))
            .ok()
            .and_then(|d| d.as_bool())
            .unwrap_or(true);
        if done {
            self.done = true;
            return None;
        }
        let value = Reflect::get(&chunk, &JsValue::from_str("value")).unwrap_or(JsValue::UNDEFINED);
        match value.dyn_into::<Uint8Array>() {
            Ok(bytes) => Some(Ok(Bytes::from(bytes.to_vec()))),
            Err(_) => {
                self.done = true;
                Some(Err("the body yielded a chunk that is not bytes".into()))
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
    let reader = stream
        .unchecked_ref::<Stream>()
        .get_reader()
        .map_err(|e| describe(&e))?;
    let body = Body {
        reader,
        done: false,
    };
    Ok(futures_util::stream::unfold(body, |mut body| async move {
        let item = body.next().await?;
        Some((item, body))
    })
    .boxed_local())
}
