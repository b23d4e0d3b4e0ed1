//! Requests and responses between workers-rs and the core's `http` types.
//! Streamed response bodies stay streams: each chunk the core yields is
//! handed to the client as it comes (chat SSE depends on it).

use bytes::Bytes;
use everjust_core::Body;
use futures_util::StreamExt;
use http::HeaderMap;
use wasm_bindgen_futures::JsFuture;
use worker::{Headers, ResponseBuilder};

/// The request's method, URL and headers, without its body.
pub fn request_head(req: &web_sys::Request) -> worker::Result<http::Request<()>> {
    let mut builder = http::Request::builder()
        .method(req.method().as_str())
        .uri(req.url());
    if let Some(headers) = builder.headers_mut() {
        *headers = header_map(&Headers(req.headers()));
    }
    builder
        .body(())
        .map_err(|e| worker::Error::RustError(format!("request: {e}")))
}

/// The request with its whole body read, in one `arrayBuffer()` rather than
/// through workers-rs's body stream (its code leaves the wasm: 3.7 KB
/// gzipped; no faster or slower, measured in pairs under `wrangler dev`).
pub async fn read_request(req: web_sys::Request) -> worker::Result<http::Request<Bytes>> {
    let head = request_head(&req)?;
    let body = match req.body() {
        Some(_) => {
            let buf = JsFuture::from(req.array_buffer()?).await?;
            Bytes::from(js_sys::Uint8Array::new(&buf).to_vec())
        }
        None => Bytes::new(),
    };
    Ok(head.map(|()| body))
}

/// What the core is told about a request beside it: the client's address,
/// as Cloudflare gives it (`cf-connecting-ip`).
pub fn meta<B>(req: &http::Request<B>) -> everjust_core::Meta {
    let client_ip = req
        .headers()
        .get("cf-connecting-ip")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    everjust_core::Meta { client_ip }
}

/// A body made by the platform (a room's SSE stream), handed to the client
/// without passing its bytes through the core.
pub struct PassThrough(pub worker::ResponseBody);

impl PassThrough {
    /// `res`'s body as the core's response body, passed through untouched.
    pub fn body_of(res: &worker::Response) -> Body {
        Body::Native(Box::new(PassThrough(res.body().clone())))
    }
}

pub fn write_response(res: http::Response<Body>) -> worker::Result<worker::Response> {
    let (parts, body) = res.into_parts();
    let builder = ResponseBuilder::new()
        .with_status(parts.status.as_u16())
        .with_headers(headers(&parts.headers)?);
    match body {
        Body::Full(bytes) if bytes.is_empty() => Ok(builder.empty()),
        Body::Full(bytes) => Ok(builder.fixed(bytes.to_vec())),
        Body::Stream(stream) => {
            builder.from_stream(stream.map(|chunk| Ok::<_, worker::Error>(chunk.to_vec())))
        }
        // Made by this adapter's own ports: a Durable Object's WebSocket
        // upgrade is returned as it is; a room's event stream goes out
        // under the core's status and headers.
        Body::Native(native) => match native.downcast::<worker::Response>() {
            Ok(res) => Ok(*res),
            Err(native) => match native.downcast::<PassThrough>() {
                Ok(body) => Ok(builder.body(body.0)),
                Err(_) => Err(worker::Error::RustError(
                    "Body::Native holds neither a Response nor a PassThrough".into(),
                )),
            },
        },
    }
}

/// JavaScript `Headers` from an `http` map, keeping repeated names.
/// Values that are not visible ASCII are passed on lossily rather than
/// failing the response.
pub fn headers(map: &HeaderMap) -> worker::Result<Headers> {
    let out = Headers::new();
    for (name, value) in map {
        let value = String::from_utf8_lossy(value.as_bytes());
        out.append(name.as_str(), &value)?;
    }
    Ok(out)
}

/// An `http` map from JavaScript `Headers`, skipping what `http` rejects.
pub fn header_map(headers: &Headers) -> HeaderMap {
    let mut map = HeaderMap::new();
    for (name, value) in headers.entries() {
        if let (Ok(name), Ok(value)) = (
            http::HeaderName::from_bytes(name.as_bytes()),
            http::HeaderValue::from_str(&value),
        ) {
            map.append(name, value);
        }
    }
    map
}
