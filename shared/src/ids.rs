//! Identifiers: a type prefix and a time-ordered random part (48-bit
//! milliseconds then 80 random bits, Crockford base32), so ids sort by
//! creation time and serve directly as pagination keys. Within one
//! millisecond an isolate increments the random part (ULID's monotonic
//! rule), so its ids stay ordered by creation.

use std::cell::Cell;

use crate::ports::Ports;

const ALPHABET: &[u8; 32] = b"0123456789abcdefghjkmnpqrstvwxyz";

thread_local! {
    static LAST: Cell<(i64, u128)> = const { Cell::new((i64::MIN, 0)) };
}

pub fn new_id(ports: &Ports, prefix: &str) -> String {
    let now = ports.clock.now_ms();
    let (ms, rand) = LAST.with(|last| {
        let (last_ms, last_rand) = last.get();
        let next = if now <= last_ms && last_rand < (1u128 << 80) - 1 {
            (last_ms, last_rand + 1)
        } else {
            let mut bytes = [0u8; 16];
            ports.crypto.fill_random(&mut bytes[6..]);
            (now, u128::from_be_bytes(bytes))
        };
        last.set(next);
        next
    });
    let bytes = rand.to_be_bytes();
    let mut rand10 = [0u8; 10];
    rand10.copy_from_slice(&bytes[6..]);
    encode(prefix, ms, rand10)
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
