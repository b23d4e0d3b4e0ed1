//! The `Kv` port over a Workers KV namespace.

use async_trait::async_trait;
use everjust_core::ports::kv::{Kv, KvError};
use worker::KvStore;

/// Workers KV refuses expiration TTLs under 60 seconds.
const MIN_TTL_SECS: u64 = 60;

pub struct WorkersKv {
    store: Result<KvStore, String>,
}

impl WorkersKv {
    pub fn new(store: worker::Result<KvStore>) -> Self {
        Self {
            store: store.map_err(|e| format!("binding: {e}")),
        }
    }

    fn store(&self) -> Result<&KvStore, KvError> {
        self.store.as_ref().map_err(|e| KvError(e.clone()))
    }
}

fn err(e: worker::KvError) -> KvError {
    KvError(e.to_string())
}

#[async_trait(?Send)]
impl Kv for WorkersKv {
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, KvError> {
        self.store()?.get(key).bytes().await.map_err(err)
    }

    async fn put(&self, key: &str, value: &[u8], ttl_secs: Option<u64>) -> Result<(), KvError> {
        let mut put = self.store()?.put_bytes(key, value).map_err(err)?;
        if let Some(ttl) = ttl_secs {
            put = put.expiration_ttl(ttl.max(MIN_TTL_SECS));
        }
        put.execute().await.map_err(err)
    }

    async fn delete(&self, key: &str) -> Result<(), KvError> {
        self.store()?.delete(key).await.map_err(err)
    }
}
