//! Outbound HTTP as a port, so tests point every outside service at a local
//! fake over real TCP and the same code path runs as in production.

use async_trait::async_trait;
use bytes::Bytes;

#[derive(Debug, thiserror::Error)]
#[error("outbound http: {0}")]
pub struct HttpError(pub String);

#[async_trait(?Send)]
pub trait HttpClient {
    /// Sends `req` and returns the whole response.
    async fn send(&self, req: http::Request<Bytes>) -> Result<http::Response<Bytes>, HttpError>;
}
