//! Time as a port, so tests can move it.

use async_trait::async_trait;

/// Wall-clock time in milliseconds since the Unix epoch, and waiting.
#[async_trait(?Send)]
pub trait Clock {
    fn now_ms(&self) -> i64;

    fn now_secs(&self) -> i64 {
        self.now_ms().div_euclid(1000)
    }

    /// Waits `ms` milliseconds (a manual clock just moves).
    async fn sleep_ms(&self, ms: u64);
}
