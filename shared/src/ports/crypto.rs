//! Randomness and the one expensive primitive (password hashing) as a port,
//! so each platform can use its fastest implementation (Web Crypto on
//! Workers) while everything else stays pure Rust in the core.

use async_trait::async_trait;

#[async_trait(?Send)]
pub trait Crypto {
    /// Fills `buf` with cryptographically secure random bytes.
    fn fill_random(&self, buf: &mut [u8]);

    /// PBKDF2-HMAC-SHA256 of `password` with `salt`, 32 bytes out.
    async fn pbkdf2_sha256(&self, password: &[u8], salt: &[u8], iterations: u32) -> [u8; 32] {
        pbkdf2_sha256_pure(password, salt, iterations)
    }
}

/// The portable PBKDF2 used where the platform offers nothing faster.
pub fn pbkdf2_sha256_pure(password: &[u8], salt: &[u8], iterations: u32) -> [u8; 32] {
    let mut out = [0u8; 32];
    pbkdf2::pbkdf2_hmac::<sha2::Sha256>(password, salt, iterations, &mut out);
    out
}

/// `n` random bytes.
pub fn random_vec(crypto: &dyn Crypto, n: usize) -> Vec<u8> {
    let mut v = vec![0u8; n];
    crypto.fill_random(&mut v);
    v
}
