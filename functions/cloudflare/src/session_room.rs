//! The `SessionRoom` Durable Object: one per live chat session. It will
//! hold the live run buffer and fan events out to connected clients; until
//! chat lands it only answers 501.

use worker::{durable_object, DurableObject, Env, Request, Response, ResponseBuilder, State};

#[durable_object(fetch)]
pub struct SessionRoom {
    _state: State,
    _env: Env,
}

impl DurableObject for SessionRoom {
    fn new(state: State, env: Env) -> Self {
        Self {
            _state: state,
            _env: env,
        }
    }

    async fn fetch(&self, _req: Request) -> worker::Result<Response> {
        let problem = serde_json::json!({
            "type": "about:blank",
            "title": "Not Implemented",
            "status": 501,
            "detail": "Live sessions are not available yet.",
            "code": "not_implemented",
        });
        Ok(ResponseBuilder::new()
            .with_status(501)
            .with_header("content-type", "application/problem+json")?
            .fixed(problem.to_string().into_bytes()))
    }
}
