//! What turns a demo into a service: tiers and limits, rate limits, model
//! quotas, the usage and cost ledger, bring-your-own keys, admin.

pub mod admin;
pub mod keys;
pub mod quota;
pub mod tiers;
pub mod usage;
