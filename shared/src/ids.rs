//! Identifiers: a type prefix and a time-ordered random part (48-bit
//! milliseconds then 80 random bits, Crockford base32), so ids sort by
//! creation time and serve directly as pagination keys.

use crate::ports::Ports;

const ALPHABET: &[u8; 32] = b"0123456789abcdefghjkmnpqrstvwxyz";

pub fn new_id(ports: &Ports, prefix: &str) -> String {
    let mut rand = [0u8; 10];
    ports.crypto.fill_random(&mut rand);
    encode(prefix, ports.clock.now_ms(), rand)
}

pub fn encode(prefix: &str, ms: i64, rand: [u8; 10]) -> String {
    let mut n: u128 = u128::from(u64::try_from(ms).unwrap_or(0) & 0xFFFF_FFFF_FFFF) << 80;
    for (i, b) in rand.iter().enumerate() {
        n |= u128::from(*b) << (8 * (9 - i));
    }
    let mut out = String::with_capacity(prefix.len() + 27);
    out.push_str(prefix);
    out.push('_');
    for i in (0..26).rev() {
        out.push(ALPHABET[((n >> (i * 5)) & 31) as usize] as char);
    }
    out
}

/// Whether `s` looks like an id of this kind; anything else is not found.
pub fn is_valid(s: &str, prefix: &str) -> bool {
    s.strip_prefix(prefix)
        .and_then(|r| r.strip_prefix('_'))
        .is_some_and(|r| r.len() == 26 && r.bytes().all(|b| ALPHABET.contains(&b)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_sort_by_time() {
        let a = encode("prj", 1_000, [255; 10]);
        let b = encode("prj", 1_001, [0; 10]);
        assert!(a < b);
        assert!(is_valid(&a, "prj"));
        assert!(!is_valid(&a, "usr"));
        assert!(!is_valid("prj_../../etc", "prj"));
    }
}
