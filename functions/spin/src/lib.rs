//! EverJust as a Fermyon Spin component (spin-sdk 5.2, `wasm32-wasip2`).
//!
//! This crate only translates: Spin's HTTP request into an `http::Request`
//! for [`everjust_core::handle`], the core's response (whole or streamed)
//! back out, and the core's ports onto Spin's interfaces (PostgreSQL v4,
//! key-value, outbound HTTP, variables, WASI random). Business logic lives in
//! the core.
//!
//! The pure helpers (`codec`) build on every target so their unit tests run
//! on the host with `cargo test -p everjust-spin`; everything that touches
//! spin-sdk exists on WASI only, so the host workspace builds.

pub mod codec;

#[cfg(target_os = "wasi")]
mod component;
#[cfg(target_os = "wasi")]
mod ports;
#[cfg(target_os = "wasi")]
mod wake;
