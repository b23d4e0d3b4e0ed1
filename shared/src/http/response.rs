//! Building responses: JSON, empty, raw bytes.

use http::{HeaderValue, StatusCode};
use serde::Serialize;

use super::body::Body;

pub type Response = http::Response<Body>;

pub fn json<T: Serialize>(status: StatusCode, value: &T) -> Response {
    let body = serde_json::to_vec(value).unwrap_or_else(|_| b"null".to_vec());
    let mut res = http::Response::new(Body::from(body));
    *res.status_mut() = status;
    res.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    res
}

pub fn ok<T: Serialize>(value: &T) -> Response {
    json(StatusCode::OK, value)
}

pub fn created<T: Serialize>(value: &T) -> Response {
    json(StatusCode::CREATED, value)
}

pub fn no_content() -> Response {
    let mut res = http::Response::new(Body::empty());
    *res.status_mut() = StatusCode::NO_CONTENT;
    res
}

pub fn bytes(status: StatusCode, content_type: &str, data: Vec<u8>) -> Response {
    let mut res = http::Response::new(Body::from(data));
    *res.status_mut() = status;
    if let Ok(v) = HeaderValue::from_str(content_type) {
        res.headers_mut().insert(http::header::CONTENT_TYPE, v);
    }
    res
}
