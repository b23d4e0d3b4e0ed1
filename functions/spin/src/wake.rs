//! In-memory wake-ups under Spin's executor.
//!
//! `spin_sdk::http::run` polls the handler with a waker that does nothing and
//! then blocks on the WASI pollables registered by the futures inside; it
//! panics when the handler is pending with none registered. Futures that are
//! woken by other futures of the same request (a channel between the agent
//! loop and the response stream, a cooperative yield) register no pollable.
//! [`WakeAware`] notices such a wake during a poll and registers an
//! already-ready pollable, so the executor polls again at once.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};

struct Flag(AtomicBool);

impl Wake for Flag {
    fn wake(self: Arc<Self>) {
        self.0.store(true, Ordering::Relaxed);
    }
    fn wake_by_ref(self: &Arc<Self>) {
        self.0.store(true, Ordering::Relaxed);
    }
}

pub struct WakeAware<F> {
    inner: Pin<Box<F>>,
    flag: Arc<Flag>,
    waker: Waker,
}

impl<F: Future> WakeAware<F> {
    pub fn new(inner: F) -> Self {
        let flag = Arc::new(Flag(AtomicBool::new(false)));
        Self {
            inner: Box::pin(inner),
            waker: Waker::from(flag.clone()),
            flag,
        }
    }
}

impl<F: Future> Future for WakeAware<F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        // One waker for every poll: a future that kept an earlier clone still reaches the flag.
        self.flag.0.store(false, Ordering::Relaxed);
        let waker = self.waker.clone();
        let poll = self.inner.as_mut().poll(&mut Context::from_waker(&waker));
        if poll.is_pending() && self.flag.0.load(Ordering::Relaxed) {
            let now = wasi::clocks::monotonic_clock::subscribe_duration(0);
            spin_executor::push_waker(now, cx.waker().clone());
        }
        poll
    }
}
