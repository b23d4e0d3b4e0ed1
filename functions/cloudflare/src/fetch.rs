//! The `HttpClient` port over the Workers `fetch`, whole or streamed.

use async_trait::async_trait;
use bytes::Bytes;
use everjust_core::ports::http_client::{HttpClient, HttpError, StreamingResponse};
use futures_util::StreamExt;
use worker::{AbortController, Fetch, Method, Request, RequestInit};

use crate::convert;

pub struct WorkerFetch;

fn err(e: worker::Error) -> HttpError {
    HttpError(e.to_string())
}

/// Aborts its fetch when dropped: a call given up before its answer ended
/// (a model call made early and not taken, a cancelled run) stops at the
/// other end too, instead of running on unread. After the answer was read
/// to its end this does nothing.
struct AbortOnDrop(Option<AbortController>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        if let Some(controller) = self.0.take() {
            controller.abort();
        }
    }
}

/// Sends `req`; resolves when the response headers have arrived, with what
/// aborts it.
async fn fetch(
    req: http::Request<Bytes>,
) -> Result<
    (
        http::StatusCode,
        http::HeaderMap,
        worker::Response,
        AbortOnDrop,
    ),
    HttpError,
> {
    let (parts, body) = req.into_parts();
    let mut init = RequestInit::new();
    init.with_method(Method::from(parts.method.as_str().to_owned()))
        .with_headers(convert::headers(&parts.headers).map_err(err)?);
    if !body.is_empty() {
        init.with_body(Some(js_sys::Uint8Array::from(body.as_ref()).into()));
    }
    let request = Request::new_with_init(&parts.uri.to_string(), &init).map_err(err)?;
    let controller = AbortController::default();
    let signal = controller.signal();
    let abort = AbortOnDrop(Some(controller));
    let res = Fetch::Request(request)
        .send_with_signal(&signal)
        .await
        .map_err(err)?;
    let status =
        http::StatusCode::from_u16(res.status_code()).map_err(|e| HttpError(e.to_string()))?;
    let headers = convert::header_map(res.headers());
    Ok((status, headers, res, abort))
}

#[async_trait(?Send)]
impl HttpClient for WorkerFetch {
    async fn send(&self, req: http::Request<Bytes>) -> Result<http::Response<Bytes>, HttpError> {
        let (status, headers, mut res, _abort) = fetch(req).await?;
        let body = res.bytes().await.map_err(err)?;
        let mut out = http::Response::new(Bytes::from(body));
        *out.status_mut() = status;
        *out.headers_mut() = headers;
        Ok(out)
    }

    async fn send_streaming(
        &self,
        req: http::Request<Bytes>,
    ) -> Result<StreamingResponse, HttpError> {
        let (status, headers, res, abort) = fetch(req).await?;
        // One turn of the event loop before the body is read: a burst of it
        // is read in microtasks, without a turn, and would hold back what
        // this isolate has to send meanwhile (a room's answer to the request
        // that started the run, which calls its model before it answers).
        // scripts/bench-chat, 60 streams each: added time to first token
        // p90/p95/max 10.9/11.2/14.6 ms with this turn, 13.2/14.1/28.3 ms
        // without; p50 7.3 and 7.2.
        crate::clock::sleep(0).await;
        // Not `res.stream()`: see `body_stream` (dropping it outside a
        // request would terminate the wasm instance). Read from its first
        // poll, not before: a model call made early (`chat::early`) is
        // answered while its run is still admitted, and a burst read then
        // (in microtasks, a few µs a chunk) would hold the admission's own
        // answers back; 2,000 deltas held it 50-100 ms (scripts/bench-chat).
        // Unread, the answer waits in the socket.
        let body = futures_util::stream::once(async move { crate::body_stream::of(&res) })
            .flat_map(|made| match made {
                Ok(body) => body.left_stream(),
                Err(e) => futures_util::stream::once(async move { Err(e) }).right_stream(),
            })
            .map(move |chunk| {
                // The body holds the abort: dropped with it.
                let _held = &abort;
                chunk.map_err(HttpError)
            })
            .boxed_local();
        Ok(StreamingResponse {
            status,
            headers,
            body,
        })
    }
}
