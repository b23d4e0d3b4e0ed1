//! The `Clock` port: the JavaScript clock and timers. Inside Workers the
//! clock advances only across I/O, which is the platform's
//! (Spectre-hardening) behaviour.
//!
//! Timers are [`sleep`], not `worker::Delay`: a `Delay` keeps the waker of
//! its first poll, so when a later poll comes from another task (each pull
//! of a streamed response body is a task of its own) its timeout wakes the
//! finished task and the sleep is only noticed when something else wakes
//! the stream. A streamed exec's 250 ms poll waited 15 s that way.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};

use async_trait::async_trait;
use everjust_core::ports::Clock;
use wasm_bindgen::prelude::Closure;
use wasm_bindgen::JsCast;

pub struct DateClock;

#[async_trait(?Send)]
impl Clock for DateClock {
    fn now_ms(&self) -> i64 {
        // Date.now() is an integral f64 of milliseconds.
        js_sys::Date::now() as i64
    }

    async fn sleep_ms(&self, ms: u64) {
        sleep(ms).await;
    }
}

/// Waits `ms` milliseconds (a `setTimeout`), waking whichever task polled
/// it last; dropping it clears the timeout.
pub fn sleep(ms: u64) -> Sleep {
    Sleep {
        ms,
        shared: Rc::new(Shared::default()),
        timer: None,
    }
}

#[derive(Default)]
struct Shared {
    fired: Cell<bool>,
    waker: RefCell<Option<Waker>>,
}

pub struct Sleep {
    ms: u64,
    shared: Rc<Shared>,
    /// The timeout's id and its callback (kept alive until it runs).
    timer: Option<(i32, Closure<dyn FnMut()>)>,
}

fn scope() -> web_sys::WorkerGlobalScope {
    js_sys::global().unchecked_into()
}

impl Future for Sleep {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.shared.fired.get() {
            return Poll::Ready(());
        }
        {
            let mut waker = self.shared.waker.borrow_mut();
            match waker.as_ref() {
                Some(w) if w.will_wake(cx.waker()) => {}
                _ => *waker = Some(cx.waker().clone()),
            }
        }
        if self.timer.is_none() {
            let shared = self.shared.clone();
            let callback = Closure::wrap(Box::new(move || {
                shared.fired.set(true);
                if let Some(w) = shared.waker.borrow_mut().take() {
                    w.wake();
                }
            }) as Box<dyn FnMut()>);
            let ms = i32::try_from(self.ms).unwrap_or(i32::MAX);
            match scope().set_timeout_with_callback_and_timeout_and_arguments_0(
                callback.as_ref().unchecked_ref(),
                ms,
            ) {
                Ok(id) => self.timer = Some((id, callback)),
                // No timer to be had: do not hang, end the wait now.
                Err(_) => return Poll::Ready(()),
            }
        }
        Poll::Pending
    }
}

impl Drop for Sleep {
    fn drop(&mut self) {
        if let Some((id, _)) = self.timer.take() {
            if !self.shared.fired.get() {
                scope().clear_timeout_with_handle(id);
            }
        }
    }
}
