//! Cluster ids for test brokers.

use std::sync::OnceLock;

/// A Kafka cluster id: 16 random bytes, URL-safe base64 without padding, never starting with
/// `-` (the storage tool would read it as an option; Kafka's own ids avoid it the same way).
pub(super) fn random_cluster_id() -> String {
    use std::hash::{BuildHasher, Hasher};
    static SEED: OnceLock<std::collections::hash_map::RandomState> = OnceLock::new();
    let state = SEED.get_or_init(std::collections::hash_map::RandomState::new);
    let word = |salt: u64| {
        let mut h = state.build_hasher();
        h.write_u64(salt);
        h.write_u128(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos()),
        );
        h.finish()
    };
    let mut salt = 0;
    loop {
        let mut bytes = [0u8; 16];
        bytes[..8].copy_from_slice(&word(salt).to_le_bytes());
        bytes[8..].copy_from_slice(&word(salt + 1).to_le_bytes());
        let id = base64_url(&bytes);
        if !id.starts_with('-') {
            return id;
        }
        salt += 2;
    }
}

fn base64_url(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |acc, (i, b)| acc | u32::from(*b) << (16 - 8 * i));
        for i in 0..=chunk.len() {
            out.push(char::from(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize]));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cluster_id_is_22_url_safe_characters_never_led_by_a_dash() {
        // One id in 64 would start with '-' if nothing prevented it.
        for _ in 0..2_000 {
            let id = random_cluster_id();
            assert_eq!(id.len(), 22, "{id}");
            assert!(!id.starts_with('-'), "{id}");
            assert!(
                id.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            );
        }
        assert_eq!(base64_url(&[0xfb, 0xff]), "-_8");
    }
}
