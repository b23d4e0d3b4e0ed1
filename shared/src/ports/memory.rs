//! In-process implementations of the ports: for unit tests, the conformance
//! suites and single-process tools. They are real implementations, not
//! mocks: the in-memory KV honours TTLs against its clock.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;

use async_trait::async_trait;

use super::clock::Clock;
use super::crypto::Crypto;
use super::kv::{Kv, KvError};

/// A clock that only moves when told to.
#[derive(Debug)]
pub struct ManualClock(Cell<i64>);

impl ManualClock {
    pub fn new(start_ms: i64) -> Self {
        Self(Cell::new(start_ms))
    }
    pub fn advance_ms(&self, ms: i64) {
        self.0.set(self.0.get() + ms);
    }
}

#[async_trait(?Send)]
impl Clock for ManualClock {
    fn now_ms(&self) -> i64 {
        self.0.get()
    }

    async fn sleep_ms(&self, ms: u64) {
        self.advance_ms(i64::try_from(ms).unwrap_or(i64::MAX / 2));
    }
}

/// The host's system clock.
#[derive(Debug, Default)]
pub struct SystemClock;

#[async_trait(?Send)]
impl Clock for SystemClock {
    /// Blocks the thread: for single-purpose host tools only.
    async fn sleep_ms(&self, ms: u64) {
        std::thread::sleep(std::time::Duration::from_millis(ms));
    }

    fn now_ms(&self) -> i64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
            .unwrap_or(0)
    }
}

/// Deterministic randomness from a seed (xorshift*); for tests only, where
/// reproducible ids matter more than unpredictability.
#[derive(Debug)]
pub struct SeededCrypto(Cell<u64>);

impl SeededCrypto {
    pub fn new(seed: u64) -> Self {
        Self(Cell::new(seed.max(1)))
    }
}

#[async_trait(?Send)]
impl Crypto for SeededCrypto {
    fn fill_random(&self, buf: &mut [u8]) {
        for b in buf.iter_mut() {
            let mut x = self.0.get();
            x ^= x >> 12;
            x ^= x << 25;
            x ^= x >> 27;
            self.0.set(x);
            *b = (x.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 56) as u8;
        }
    }
}

/// A value and its expiry (Unix ms).
type Entry = (Vec<u8>, Option<i64>);

/// Workers-KV-like store in memory, expiring entries by its clock.
pub struct MemoryKv {
    clock: Rc<dyn Clock>,
    map: RefCell<HashMap<String, Entry>>,
}

impl MemoryKv {
    pub fn new(clock: Rc<dyn Clock>) -> Self {
        Self {
            clock,
            map: RefCell::default(),
        }
    }
}

#[async_trait(?Send)]
impl Kv for MemoryKv {
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, KvError> {
        let now = self.clock.now_ms();
        let mut map = self.map.borrow_mut();
        match map.get(key) {
            Some((_, Some(exp))) if *exp <= now => {
                map.remove(key);
                Ok(None)
            }
            Some((v, _)) => Ok(Some(v.clone())),
            None => Ok(None),
        }
    }

    async fn put(&self, key: &str, value: &[u8], ttl_secs: Option<u64>) -> Result<(), KvError> {
        let exp = ttl_secs
            .map(|t| self.clock.now_ms() + i64::try_from(t).unwrap_or(i64::MAX / 2_000) * 1000);
        self.map
            .borrow_mut()
            .insert(key.to_owned(), (value.to_vec(), exp));
        Ok(())
    }

    async fn delete(&self, key: &str) -> Result<(), KvError> {
        self.map.borrow_mut().remove(key);
        Ok(())
    }
}
