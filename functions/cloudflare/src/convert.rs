//! Requests and responses between workers-rs and the core's `http` types.
//! Streamed response bodies stay streams: each chunk the core yields is
//! handed to the client as it comes (chat SSE depends on it).

use bytes::{Bytes, BytesMut};
use everjust_core::Body;
use futures_util::StreamExt;
use http::HeaderMap;
use worker::{Headers, HttpRequest, ResponseBuilder};

/// The request with its whole body read.
pub async fn read_request(req: HttpRequest) -> worker::Result<http::Request<Bytes>> {
    let (parts, mut body) = req.into_parts();
    let mut buf = BytesMut::new();
    while let Some(chunk) = body.next().await {
        buf.extend_from_slice(&chunk?);
    }
    Ok(http::Request::from_parts(parts, buf.freeze()))
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
