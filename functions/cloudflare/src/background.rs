//! The `Background` port: work after the response, kept alive by the
//! request's `ctx.waitUntil` (at most 30 s after the response on Workers).

use everjust_core::ports::background::Background;
use futures_util::future::LocalBoxFuture;
use worker::Context;

pub struct WaitUntil(pub Context);

impl Background for WaitUntil {
    fn spawn(&self, work: LocalBoxFuture<'static, ()>) {
        self.0.wait_until(work);
    }
}
