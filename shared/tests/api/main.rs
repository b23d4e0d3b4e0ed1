//! In-process tests of the whole API: the router with in-memory KV and
//! clock and a real Postgres database per test (created from a migrated
//! template), as the platforms run it minus the platform.

mod accounts;
mod billing;
mod chat;
mod conformance;
mod files;
mod github;
mod helpers;
mod oidc;
mod preview;
mod projects;
mod sandbox;
mod service;
