//! The `Clock` port: the JavaScript clock. Inside Workers it advances only
//! across I/O, which is the platform's (Spectre-hardening) behaviour.

use everjust_core::ports::Clock;

pub struct DateClock;

impl Clock for DateClock {
    fn now_ms(&self) -> i64 {
        // Date.now() is an integral f64 of milliseconds.
        js_sys::Date::now() as i64
    }
}
