//! The core's `RateLimiter` port over the `RateLimiter` Durable Object
//! (`rate_limiter.rs`): one object per key, named by the key. Exact (see
//! there); this is what the Worker plugs into `Ports.limiter`, so the API
//! request limits (per user, and per IP on anonymous routes) are exact on
//! Cloudflare. The failed-login throttle counts in KV and stays approximate.

use async_trait::async_trait;
use everjust_core::ports::kv::KvError;
use everjust_core::ports::ratelimit::{Decision, EarlyHit, RateLimiter};
use worker::{Method, ObjectNamespace, Request, RequestInit};

/// The origin of requests to a limiter object; only the path and query matter.
const LIMITER_ORIGIN: &str = "https://rate-limiter.internal";

pub struct DurableLimiter {
    namespace: Result<ObjectNamespace, String>,
}

impl DurableLimiter {
    pub fn new(namespace: worker::Result<ObjectNamespace>) -> Self {
        Self {
            namespace: namespace.map_err(|e| format!("binding: {e}")),
        }
    }
}

fn err(context: &str) -> impl Fn(worker::Error) -> KvError + '_ {
    move |e| KvError(format!("rate limiter {context}: {e}"))
}

impl DurableLimiter {
    /// `POST {path}` to the object of `key`; its answer when 200 or 204.
    async fn call(&self, key: &str, path: &str) -> Result<worker::Response, KvError> {
        let namespace = self.namespace.as_ref().map_err(|e| KvError(e.clone()))?;
        let stub = namespace
            .id_from_name(key)
            .and_then(|id| id.get_stub())
            .map_err(err("stub"))?;
        let mut init = RequestInit::new();
        init.with_method(Method::Post);
        let req = Request::new_with_init(&format!("{LIMITER_ORIGIN}{path}"), &init)
            .map_err(err("request"))?;
        let mut res = stub.fetch_with_request(req).await.map_err(err("fetch"))?;
        if !matches!(res.status_code(), 200 | 204) {
            let body = res.text().await.unwrap_or_default();
            return Err(KvError(format!(
                "rate limiter answered {}: {body}",
                res.status_code()
            )));
        }
        Ok(res)
    }
}

#[async_trait(?Send)]
impl RateLimiter for DurableLimiter {
    async fn hit(&self, key: &str, limit: u32, window_secs: u64) -> Result<Decision, KvError> {
        let path = format!("/hit?limit={limit}&window={window_secs}");
        let mut res = self.call(key, &path).await?;
        res.json::<Decision>().await.map_err(err("answer"))
    }

    async fn hit_remembered(
        &self,
        key: &str,
        window_secs: u64,
    ) -> Result<Option<EarlyHit>, KvError> {
        let mut res = self
            .call(key, &format!("/hit?window={window_secs}"))
            .await?;
        res.json::<Option<EarlyHit>>().await.map_err(err("answer"))
    }

    async fn unhit(&self, key: &str, limit: u32, window_secs: u64) -> Result<(), KvError> {
        let path = format!("/unhit?limit={limit}&window={window_secs}");
        self.call(key, &path).await.map(drop)
    }

    fn exact(&self) -> bool {
        true
    }
}
