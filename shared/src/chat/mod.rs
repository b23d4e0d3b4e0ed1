//! Chat: sessions and messages, the agent loop with its tools, run events
//! and their three wire encodings, and how runs reach live readers (a
//! Durable Object room on Workers, the Postgres event log elsewhere).

pub mod agent;
pub mod encode;
pub mod events;
pub mod handlers;
pub mod inline;
pub mod pricing;
pub mod prompt;
pub mod room;
pub mod tools;
