//! Key-value store port: rate-limit windows, caches, one-time tickets.
//! Anything here may be lost; Postgres is the system of record.
//! Workers KV is eventually consistent across locations; callers that need
//! exactness must not rely on this port.

use async_trait::async_trait;

#[derive(Debug, thiserror::Error)]
#[error("key-value store: {0}")]
pub struct KvError(pub String);

#[async_trait(?Send)]
pub trait Kv {
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, KvError>;
    /// Stores `value`; with `ttl_secs` the entry expires after that many
    /// seconds (implementations may round up to their minimum, 60 s on Workers KV).
    async fn put(&self, key: &str, value: &[u8], ttl_secs: Option<u64>) -> Result<(), KvError>;
    async fn delete(&self, key: &str) -> Result<(), KvError>;
}
