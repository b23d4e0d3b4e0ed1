//! The `Clock` port: the JavaScript clock and timers. Inside Workers the
//! clock advances only across I/O, which is the platform's
//! (Spectre-hardening) behaviour.

use std::time::Duration;

use async_trait::async_trait;
use everjust_core::ports::Clock;

pub struct DateClock;

#[async_trait(?Send)]
impl Clock for DateClock {
    fn now_ms(&self) -> i64 {
        // Date.now() is an integral f64 of milliseconds.
        js_sys::Date::now() as i64
    }

    async fn sleep_ms(&self, ms: u64) {
        worker::Delay::from(Duration::from_millis(ms)).await;
    }
}
