//! The core's `RateLimiter` port over the `RateLimiter` Durable Object
//! (`rate_limiter.rs`): one object per key, named by the key. Exact (see
//! there); this is what the Worker plugs into `Ports.limiter`, so the API
//! request limits (per user, and per IP on anonymous routes) are exact on
//! Cloudflare. The failed-login throttle counts in KV and stays approximate.

use async_trait::async_trait;
use everjust_core::ports::kv::KvError;
use everjust_core::ports::ratelimit::{Decision, RateLimiter};
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

#[async_trait(?Send)]
impl RateLimiter for DurableLimiter {
    async fn hit(&self, key: &str, limit: u32, window_secs: u64) -> Result<Decision, KvError> {
        let namespace = self.namespace.as_ref().map_err(|e| KvError(e.clone()))?;
        let stub = namespace
            .id_from_name(key)
            .and_then(|id| id.get_stub())
            .map_err(err("stub"))?;
        let url = format!("{LIMITER_ORIGIN}/hit?limit={limit}&window={window_secs}");
        let mut init = RequestInit::new();
        init.with_method(Method::Post);
        let req = Request::new_with_init(&url, &init).map_err(err("request"))?;
        let mut res = stub.fetch_with_request(req).await.map_err(err("fetch"))?;
        if res.status_code() != 200 {
            let body = res.text().await.unwrap_or_default();
            return Err(KvError(format!(
                "rate limiter answered {}: {body}",
                res.status_code()
            )));
        }
        res.json::<Decision>().await.map_err(err("answer"))
    }

    fn exact(&self) -> bool {
        true
    }
}
