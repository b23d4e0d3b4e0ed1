//! Outbound HTTP as a port, so tests point every outside service at a local
//! fake over real TCP and the same code path runs as in production.

use async_trait::async_trait;
use bytes::Bytes;
use futures_util::stream::LocalBoxStream;
use futures_util::StreamExt;

#[derive(Debug, thiserror::Error)]
#[error("outbound http: {0}")]
pub struct HttpError(pub String);

/// A response whose body arrives as a stream of chunks.
pub struct StreamingResponse {
    pub status: http::StatusCode,
    pub headers: http::HeaderMap,
    pub body: LocalBoxStream<'static, Result<Bytes, HttpError>>,
}

#[async_trait(?Send)]
pub trait HttpClient {
    /// Sends `req` and returns the whole response.
    async fn send(&self, req: http::Request<Bytes>) -> Result<http::Response<Bytes>, HttpError>;

    /// Sends `req` and returns as soon as the headers arrive; the body
    /// streams. Implementations that cannot stream fall back to buffering.
    async fn send_streaming(
        &self,
        req: http::Request<Bytes>,
    ) -> Result<StreamingResponse, HttpError> {
        let res = self.send(req).await?;
        let (parts, body) = res.into_parts();
        Ok(StreamingResponse {
            status: parts.status,
            headers: parts.headers,
            body: futures_util::stream::once(async move { Ok(body) }).boxed_local(),
        })
    }
}
