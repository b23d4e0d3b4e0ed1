//! The `HttpClient` port over the Workers `fetch`.

use async_trait::async_trait;
use bytes::Bytes;
use everjust_core::ports::http_client::{HttpClient, HttpError};
use worker::{Fetch, Method, Request, RequestInit};

use crate::convert;

pub struct WorkerFetch;

fn err(e: worker::Error) -> HttpError {
    HttpError(e.to_string())
}

#[async_trait(?Send)]
impl HttpClient for WorkerFetch {
    async fn send(&self, req: http::Request<Bytes>) -> Result<http::Response<Bytes>, HttpError> {
        let (parts, body) = req.into_parts();
        let mut init = RequestInit::new();
        init.with_method(Method::from(parts.method.as_str().to_owned()))
            .with_headers(convert::headers(&parts.headers).map_err(err)?);
        if !body.is_empty() {
            init.with_body(Some(js_sys::Uint8Array::from(body.as_ref()).into()));
        }
        let request = Request::new_with_init(&parts.uri.to_string(), &init).map_err(err)?;
        let mut res = Fetch::Request(request).send().await.map_err(err)?;
        let status = http::StatusCode::from_u16(res.status_code()).map_err(|e| HttpError(e.to_string()))?;
        let headers = convert::header_map(res.headers());
        let body = res.bytes().await.map_err(err)?;
        let mut out = http::Response::new(Bytes::from(body));
        *out.status_mut() = status;
        *out.headers_mut() = headers;
        Ok(out)
    }
}
