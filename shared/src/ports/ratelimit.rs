//! Rate limiting as a port. The default implementation (here) keeps a
//! sliding-window counter in the KV store: on Workers KV that is
//! approximate (eventually consistent across locations, last write wins;
//! even within one isolate two requests may read the same count before
//! either writes), fine for abuse protection. Where exactness matters a
//! platform supplies a strongly consistent one: on Workers the
//! `RateLimiter` Durable Object (one object per key, the window in its
//! memory), which runs this same [`decide`].

use std::rc::Rc;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use super::clock::Clock;
use super::kv::{Kv, KvError};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Decision {
    pub allowed: bool,
    pub limit: u32,
    pub remaining: u32,
    /// Seconds until the window has room again.
    pub reset_secs: u64,
}

#[async_trait(?Send)]
pub trait RateLimiter {
    /// Counts one hit on `key` against `limit` per `window_secs` (sliding).
    async fn hit(&self, key: &str, limit: u32, window_secs: u64) -> Result<Decision, KvError>;
    /// Whether this limiter is exact under concurrency (for the docs and headers).
    fn exact(&self) -> bool;
}

/// The sliding-window counter: the previous fixed window's count weighted by
/// how much of it still overlaps the sliding window, plus the current count.
pub fn decide(w: &mut WindowsState, now_ms: i64, limit: u32, window_secs: u64) -> Decision {
    let window_ms = i64::try_from(window_secs).unwrap_or(60) * 1000;
    let start = now_ms - now_ms.rem_euclid(window_ms);
    if start != w.start {
        w.previous = if start - w.start == window_ms {
            w.current
        } else {
            0
        };
        w.current = 0;
        w.start = start;
    }
    let elapsed = now_ms - start;
    let weight = (window_ms - elapsed) as f64 / window_ms as f64;
    let estimate = f64::from(w.previous) * weight + f64::from(w.current);
    let reset_secs = u64::try_from((window_ms - elapsed + 999) / 1000)
        .unwrap_or(1)
        .max(1);
    if estimate + 1.0 > f64::from(limit) {
        return Decision {
            allowed: false,
            limit,
            remaining: 0,
            reset_secs,
        };
    }
    w.current += 1;
    let remaining = (f64::from(limit) - estimate - 1.0).floor().max(0.0) as u32;
    Decision {
        allowed: true,
        limit,
        remaining,
        reset_secs,
    }
}

/// The two fixed windows a sliding-window counter keeps (shared by every limiter).
#[derive(Debug, Clone, Serialize, Deserialize, Default, PartialEq, Eq)]
pub struct WindowsState {
    pub start: i64,
    pub current: u32,
    pub previous: u32,
}

pub struct KvRateLimiter {
    pub kv: Rc<dyn Kv>,
    pub clock: Rc<dyn Clock>,
}

#[async_trait(?Send)]
impl RateLimiter for KvRateLimiter {
    async fn hit(&self, key: &str, limit: u32, window_secs: u64) -> Result<Decision, KvError> {
        let k = format!("rl:{key}");
        let mut w: WindowsState = self
            .kv
            .get(&k)
            .await?
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
        let d = decide(&mut w, self.clock.now_ms(), limit, window_secs);
        if d.allowed {
            let bytes = serde_json::to_vec(&w).unwrap_or_default();
            self.kv
                .put(&k, &bytes, Some((window_secs * 2).max(60)))
                .await?;
        }
        Ok(d)
    }

    fn exact(&self) -> bool {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_window_refuses_until_it_slides() {
        let mut w = WindowsState::default();
        let t0 = 1_000_000_000_000 - 1_000_000_000_000 % 60_000;
        for i in 0..10 {
            assert!(decide(&mut w, t0 + i, 10, 60).allowed, "hit {i}");
        }
        let d = decide(&mut w, t0 + 10, 10, 60);
        assert!(!d.allowed);
        assert!(d.reset_secs >= 59);
        // Half-way into the next window half of the old count still weighs in.
        assert!(decide(&mut w, t0 + 90_000, 10, 60).allowed);
        let mut allowed = 1;
        while decide(&mut w, t0 + 90_001, 10, 60).allowed {
            allowed += 1;
        }
        assert_eq!(allowed, 5);
    }
}
