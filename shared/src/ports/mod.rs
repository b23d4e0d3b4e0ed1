//! Ports: the only ways the core reaches the world. Each platform adapter
//! implements them; `memory` holds the in-process implementations used by
//! tests and local tools, and `conformance` the one behaviour suite every
//! implementation must pass.

pub mod background;
pub mod clock;
pub mod conformance;
pub mod crypto;
pub mod http_client;
pub mod kv;
pub mod memory;
pub mod ratelimit;
pub mod rooms;
pub mod sql;

#[cfg(feature = "postgres")]
pub mod postgres;

use std::rc::Rc;

pub use clock::Clock;
pub use crypto::Crypto;
pub use http_client::HttpClient;
pub use kv::Kv;
pub use rooms::Rooms;
pub use sql::Sql;

use crate::config::{Config, ConfigError};
use crate::error::{ApiError, ApiResult};

/// Everything a request handler may touch, built per request by the adapter.
///
/// The core is single-threaded (wasm32 futures are not `Send`), so ports are
/// shared with `Rc`.
#[derive(Clone)]
pub struct Ports {
    pub sql: Rc<dyn Sql>,
    pub kv: Rc<dyn Kv>,
    pub http: Rc<dyn HttpClient>,
    pub clock: Rc<dyn Clock>,
    pub crypto: Rc<dyn Crypto>,
    /// Live session rooms; `None` drives runs inline (Spin, tests).
    pub rooms: Option<Rc<dyn Rooms>>,
    /// An exact rate limiter (the Worker's Durable Object one); `None` uses
    /// the approximate KV one (Spin, tests).
    pub limiter: Option<Rc<dyn ratelimit::RateLimiter>>,
    /// Work after the response; `None` runs it before the response.
    pub background: Option<Rc<dyn background::Background>>,
    /// The configuration, or why it is unusable (then every route but
    /// `/health` answers 503 `misconfigured`).
    pub config: Rc<Result<Config, ConfigError>>,
}

impl Ports {
    /// Runs `work` after the response when the platform can, else now.
    pub async fn after_response(&self, work: futures_util::future::LocalBoxFuture<'static, ()>) {
        match &self.background {
            Some(b) => b.spawn(work),
            None => work.await,
        }
    }

    /// Counts one hit of `key` on the rate limiter: the platform's exact
    /// one when it has one, else the approximate KV-backed one (built in
    /// place: two reference-count bumps, no allocation).
    pub async fn rate_hit(
        &self,
        key: &str,
        limit: u32,
        window_secs: u64,
    ) -> Result<ratelimit::Decision, kv::KvError> {
        use ratelimit::RateLimiter as _;
        match &self.limiter {
            Some(l) => l.hit(key, limit, window_secs).await,
            None => {
                ratelimit::KvRateLimiter {
                    kv: self.kv.clone(),
                    clock: self.clock.clone(),
                }
                .hit(key, limit, window_secs)
                .await
            }
        }
    }

    /// [`ratelimit::RateLimiter::hit_remembered`] on the platform's limiter
    /// (the KV one remembers nothing).
    pub async fn rate_hit_remembered(
        &self,
        key: &str,
        window_secs: u64,
    ) -> Result<Option<ratelimit::EarlyHit>, kv::KvError> {
        match &self.limiter {
            Some(l) => l.hit_remembered(key, window_secs).await,
            None => Ok(None),
        }
    }

    /// [`ratelimit::RateLimiter::unhit`] on the platform's limiter.
    pub async fn rate_unhit(
        &self,
        key: &str,
        limit: u32,
        window_secs: u64,
    ) -> Result<(), kv::KvError> {
        match &self.limiter {
            Some(l) => l.unhit(key, limit, window_secs).await,
            None => Ok(()),
        }
    }

    pub fn config(&self) -> ApiResult<&Config> {
        self.config.as_ref().as_ref().map_err(|e| {
            ApiError::unavailable(
                "misconfigured",
                format!("The service is misconfigured: {e}."),
            )
        })
    }
}
