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

/// A hit decided on the limit a limiter remembers for its key, made before
/// the caller's own limit is known ([`RateLimiter::hit_remembered`]).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct EarlyHit {
    /// The decision on the remembered limit (`decision.limit`); counted when allowed.
    pub decision: Decision,
    /// The window's estimate just before this hit.
    pub before: f64,
}

impl EarlyHit {
    /// The decision this hit gets on `limit`: allowed when the estimate
    /// before it leaves room for one more. Hits decide in the order they
    /// reached the limiter, so a burst judged again on another limit still
    /// lets exactly that many through.
    pub fn judged(&self, limit: u32) -> Decision {
        let allowed = self.before + 1.0 <= f64::from(limit);
        Decision {
            allowed,
            limit,
            remaining: if allowed {
                (f64::from(limit) - self.before - 1.0).floor().max(0.0) as u32
            } else {
                0
            },
            reset_secs: self.decision.reset_secs,
        }
    }
}

#[async_trait(?Send)]
pub trait RateLimiter {
    /// Counts one hit on `key` against `limit` per `window_secs` (sliding).
    /// An exact limiter remembers `limit` for [`RateLimiter::hit_remembered`].
    async fn hit(&self, key: &str, limit: u32, window_secs: u64) -> Result<Decision, KvError>;
    /// Counts one hit on `key` against the limit last given for it, so the
    /// hit can go out before the caller's limit is read: `None` (nothing
    /// counted) when no limit is remembered. The caller then judges the hit
    /// on its own limit and, when that refuses a counted hit, takes it back
    /// ([`RateLimiter::unhit`]); one refused on the remembered limit but
    /// allowed on its own it makes again with [`RateLimiter::hit`].
    async fn hit_remembered(
        &self,
        _key: &str,
        _window_secs: u64,
    ) -> Result<Option<EarlyHit>, KvError> {
        Ok(None)
    }
    /// Takes back a hit counted by [`RateLimiter::hit_remembered`] and
    /// remembers `limit` for the key.
    async fn unhit(&self, _key: &str, _limit: u32, _window_secs: u64) -> Result<(), KvError> {
        Ok(())
    }
    /// Whether this limiter is exact under concurrency (for the docs and headers).
    fn exact(&self) -> bool;
}

/// The sliding-window counter: the previous fixed window's count weighted by
/// how much of it still overlaps the sliding window, plus the current count.
pub fn decide(w: &mut WindowsState, now_ms: i64, limit: u32, window_secs: u64) -> Decision {
    decide_early(w, now_ms, limit, window_secs).decision
}

/// [`decide`], with the window's estimate before the hit.
pub fn decide_early(w: &mut WindowsState, now_ms: i64, limit: u32, window_secs: u64) -> EarlyHit {
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
    let mut hit = EarlyHit {
        decision: Decision {
            allowed: false,
            limit,
            remaining: 0,
            reset_secs,
        },
        before: estimate,
    };
    hit.decision = hit.judged(limit);
    if hit.decision.allowed {
        w.current += 1;
    }
    hit
}

/// Takes back one hit of the current window (see [`RateLimiter::unhit`]).
pub fn undo_hit(w: &mut WindowsState, now_ms: i64, window_secs: u64) {
    let window_ms = i64::try_from(window_secs).unwrap_or(60) * 1000;
    // A hit of a window that has since become the previous one stays.
    if w.start == now_ms - now_ms.rem_euclid(window_ms) {
        w.current = w.current.saturating_sub(1);
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

/// The conformance suite of a rate limiter, under a unique `prefix` so runs
/// never collide: every limiter counts, refuses over the limit with the
/// reset time, and keeps keys apart; an exact one (`exact()`) also lets
/// exactly `limit` of a concurrent burst through, an approximate one at
/// least `limit`.
pub async fn conformance_suite(
    limiter: &dyn RateLimiter,
    prefix: &str,
) -> Vec<super::conformance::Case> {
    let case = |name: &'static str, result: Result<(), String>| super::conformance::Case {
        name,
        ok: result.is_ok(),
        detail: result.err().unwrap_or_default(),
    };
    let hit = |key: String, limit: u32| async move {
        limiter
            .hit(&key, limit, 60)
            .await
            .map_err(|e| e.to_string())
    };
    let counts = async {
        for (i, remaining) in [2u32, 1, 0].into_iter().enumerate() {
            let d = hit(format!("{prefix}:a"), 3).await?;
            if !(d.allowed && d.limit == 3 && d.remaining == remaining) {
                return Err(format!("hit {}: {d:?}", i + 1));
            }
        }
        let d = hit(format!("{prefix}:a"), 3).await?;
        if d.allowed || d.remaining != 0 || !(1..=60).contains(&d.reset_secs) {
            return Err(format!("hit 4 over a limit of 3: {d:?}"));
        }
        Ok(())
    }
    .await;
    let apart = async {
        let d = hit(format!("{prefix}:b"), 3).await?;
        if !d.allowed || d.remaining != 2 {
            return Err(format!("a fresh key after another's limit: {d:?}"));
        }
        Ok(())
    }
    .await;
    let burst = async {
        let hits = (0..20).map(|_| hit(format!("{prefix}:c"), 5));
        let mut allowed = 0;
        for d in futures_util::future::join_all(hits).await {
            allowed += u32::from(d?.allowed);
        }
        let fine = if limiter.exact() {
            allowed == 5
        } else {
            (5..=20).contains(&allowed)
        };
        if !fine {
            return Err(format!(
                "{allowed} of 20 concurrent hits allowed, limit 5 (exact: {})",
                limiter.exact()
            ));
        }
        Ok(())
    }
    .await;
    vec![
        case("hits_count_down_then_refuse_with_a_reset", counts),
        case("keys_are_counted_apart", apart),
        case("a_concurrent_burst_gets_the_limit", burst),
    ]
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

    /// A burst counted on a remembered limit above the caller's, then each
    /// hit judged on the caller's and taken back when refused, lets exactly
    /// the caller's limit through and leaves the window as if the refused
    /// hits never came; on the same limit the judgement is the decision.
    #[test]
    fn a_burst_judged_again_on_a_lower_limit_lets_exactly_that_many_through() {
        let t0 = 1_000_000_000_000 - 1_000_000_000_000 % 60_000;
        let mut w = WindowsState::default();
        let hits: Vec<EarlyHit> = (0..20)
            .map(|i| decide_early(&mut w, t0 + i, 60, 60))
            .collect();
        assert!(hits.iter().all(|h| h.decision.allowed));
        assert!(hits.iter().all(|h| h.judged(60) == h.decision));
        let judged: Vec<Decision> = hits.iter().map(|h| h.judged(5)).collect();
        assert_eq!(judged.iter().filter(|d| d.allowed).count(), 5);
        assert_eq!(
            judged.iter().map(|d| d.remaining).collect::<Vec<_>>()[..6],
            [4, 3, 2, 1, 0, 0]
        );
        for d in &judged {
            if !d.allowed {
                undo_hit(&mut w, t0 + 30, 60);
            }
        }
        assert_eq!(w.current, 5);
        assert!(!decide(&mut w, t0 + 31, 5, 60).allowed);
        assert!(decide(&mut w, t0 + 32, 6, 60).allowed);
        // A hit of a window that has ended is not taken back from the next.
        undo_hit(&mut w, t0 + 60_001, 60);
        assert_eq!(w.current, 6);
    }
}
