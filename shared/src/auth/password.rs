//! Password rules and hashing. Hashes are PBKDF2-HMAC-SHA256 with a
//! per-user random salt, computed through the `Crypto` port (Web Crypto on
//! Workers) and stored as `pbkdf2-sha256$<iterations>$<salt>$<hash>` so the
//! cost can be raised later without breaking old hashes.

use base64::engine::general_purpose::STANDARD_NO_PAD as B64;
use base64::Engine;
use subtle::ConstantTimeEq;

use crate::error::ApiError;
use crate::ports::Crypto;

pub const MIN_LENGTH: usize = 10;
pub const MAX_BYTES: usize = 1024;

/// Common passwords that meet the length rule (lower-case).
const COMMON: &[&str] = &[
    "password123",
    "password1234",
    "password12345",
    "1234567890",
    "12345678910",
    "0123456789",
    "qwertyuiop",
    "qwerty12345",
    "qwerty123456",
    "1q2w3e4r5t",
    "1qaz2wsx3edc",
    "iloveyou123",
    "letmein123",
    "welcome123",
    "adminadmin",
    "administrator",
    "passw0rd123",
    "abcdefghij",
    "abc1234567",
    "aaaaaaaaaa",
    "1111111111",
    "0000000000",
    "football123",
    "baseball123",
    "princess123",
    "sunshine123",
    "starwars123",
    "monkey12345",
    "dragon12345",
    "superman123",
    "trustno1234",
    "changeme123",
    "qwertyuiop123",
    "asdfghjkl123",
    "zxcvbnm123",
    "passwordpassword",
    "mypassword",
    "mypassword1",
    "secret1234",
    "whatever123",
];

/// Checks the password rules; `email` is used to refuse the address itself.
pub fn check_strength(password: &str, email_normalized: &str) -> Result<(), ApiError> {
    let weak = |detail: &str| ApiError::bad_request("weak_password", detail);
    if password.chars().count() < MIN_LENGTH {
        return Err(weak("Use a password of at least 10 characters."));
    }
    if password.len() > MAX_BYTES {
        return Err(weak("Use a password of at most 1024 bytes."));
    }
    let lower = password.to_lowercase();
    let local = email_normalized.split('@').next().unwrap_or_default();
    if COMMON.contains(&lower.as_str())
        || lower == email_normalized
        || (!local.is_empty() && lower == local)
    {
        return Err(weak(
            "This password is too common or too easy to guess; choose another.",
        ));
    }
    if lower
        .chars()
        .all(|c| c == lower.chars().next().unwrap_or(' '))
    {
        return Err(weak("This password is too easy to guess; choose another."));
    }
    Ok(())
}

/// Hashes `password` with a new random salt.
pub async fn hash(crypto: &dyn Crypto, password: &str, iterations: u32) -> String {
    let mut salt = [0u8; 16];
    crypto.fill_random(&mut salt);
    let out = crypto
        .pbkdf2_sha256(password.as_bytes(), &salt, iterations)
        .await;
    format!(
        "pbkdf2-sha256${iterations}${}${}",
        B64.encode(salt),
        B64.encode(out)
    )
}

/// Checks `password` against a stored hash in constant time.
pub async fn verify(crypto: &dyn Crypto, password: &str, stored: &str) -> bool {
    let mut parts = stored.split('$');
    let (Some("pbkdf2-sha256"), Some(iter), Some(salt), Some(expected), None) = (
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
    ) else {
        return false;
    };
    let (Ok(iterations), Ok(salt), Ok(expected)) =
        (iter.parse::<u32>(), B64.decode(salt), B64.decode(expected))
    else {
        return false;
    };
    let out = crypto
        .pbkdf2_sha256(password.as_bytes(), &salt, iterations)
        .await;
    out.ct_eq(expected.as_slice()).into()
}

/// A hash of nothing, verified against when the account does not exist so
/// that unknown emails cost the same time as wrong passwords.
pub fn dummy_hash(iterations: u32) -> String {
    format!("pbkdf2-sha256${iterations}$AAAAAAAAAAAAAAAAAAAAAA$AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ports::memory::SeededCrypto;

    #[test]
    fn short_common_and_self_passwords_are_weak() {
        assert!(check_strength("short", "a@b.co").is_err());
        assert!(check_strength("Password123", "a@b.co").is_err());
        assert!(check_strength("zzzzzzzzzzzz", "a@b.co").is_err());
        assert!(check_strength("ada.lovelace", "ada.lovelace@b.co").is_err());
        assert!(check_strength("correct horse battery", "a@b.co").is_ok());
    }

    #[tokio::test]
    async fn hash_verifies_only_the_same_password() {
        let c = SeededCrypto::new(7);
        let h = hash(&c, "correct horse battery", 1000).await;
        assert!(h.starts_with("pbkdf2-sha256$1000$"));
        assert!(verify(&c, "correct horse battery", &h).await);
        assert!(!verify(&c, "correct horse batterY", &h).await);
        assert!(!verify(&c, "x", &dummy_hash(1000)).await);
        assert!(!verify(&c, "x", "garbage").await);
    }

    #[tokio::test]
    async fn two_hashes_of_one_password_differ_by_salt() {
        let c = SeededCrypto::new(9);
        assert_ne!(
            hash(&c, "correct horse battery", 1000).await,
            hash(&c, "correct horse battery", 1000).await
        );
    }
}
