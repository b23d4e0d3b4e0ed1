//! Repositories: all SQL of the product, written once against the
//! [`Sql`](crate::ports::Sql) port. Every query that reads user data filters
//! by its owner.

pub mod audit;
pub mod chat;
pub mod files;
pub mod migrate;
pub mod projects;
pub mod users;
