//! Work that continues after the response (webhook processing): Workers'
//! `ctx.wait_until`. Where the platform has none, the work runs before the
//! response instead.

use futures_util::future::LocalBoxFuture;

pub trait Background {
    fn spawn(&self, work: LocalBoxFuture<'static, ()>);
}
