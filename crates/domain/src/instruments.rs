//! Instrument name → dense id, tuned for the per-trade lookup.
//!
//! Every trade looks its instrument up once, and that lookup was most of a trade's cost: hashing
//! the name byte by byte, loading a large map bucket, then following the key's heap pointer to
//! compare it with `memcmp`. Here a name of up to 23 bytes (every Deribit future and option, and
//! most combos) becomes a key of three words, hashed and compared in registers; a longer name
//! becomes its hash plus a marker and is then compared as a string. The table's slots hold only
//! part of the hash and the id (eight bytes, so the table stays in the closest cache); keys and
//! names are kept by id, as the caller keeps the instruments' state.

use std::hash::Hasher;

use hashbrown::HashTable;

use crate::fxhash::FxHasher;

/// Longest name packed into a key (the top byte of the last word holds the length).
const INLINE_MAX: usize = 23;

/// Top byte of a long name's key: no packed name has a length this large.
const LONG_MARK: u64 = 0xFF << 56;

/// A name's lookup form, three words compared in registers.
///
/// Names of up to 23 bytes are packed little-endian with their length in the top byte, so equal
/// keys mean equal names. Longer names become their hash, length and a marker; equal keys then
/// still need the stored name compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct NameKey([u64; 3]);

/// Bytes `at..at + 8` of `bytes` as a little-endian word, zero past the end.
///
/// Built in registers: copying into a byte buffer and reading it back as words stalls on
/// store-to-load forwarding, which cost more than the whole hash.
#[inline]
fn word_at(bytes: &[u8], at: usize) -> u64 {
    match bytes.get(at..at + 8) {
        Some(full) => {
            let mut word = [0u8; 8];
            word.copy_from_slice(full);
            u64::from_le_bytes(word)
        }
        None => bytes
            .get(at..)
            .unwrap_or_default()
            .iter()
            .rev()
            .fold(0, |word, &byte| (word << 8) | u64::from(byte)),
    }
}

impl NameKey {
    /// The key of `name`.
    #[inline]
    pub(crate) fn new(name: &str) -> Self {
        let bytes = name.as_bytes();
        let length = bytes.len() as u64;
        if bytes.len() <= INLINE_MAX {
            NameKey([
                word_at(bytes, 0),
                word_at(bytes, 8),
                word_at(bytes, 16) | (length << 56),
            ])
        } else {
            let mut hasher = FxHasher::default();
            hasher.write(bytes);
            NameKey([hasher.finish(), length, LONG_MARK])
        }
    }

    fn is_long(self) -> bool {
        self.0[2] & LONG_MARK == LONG_MARK
    }

    /// The table hash of this key.
    #[inline]
    pub(crate) fn hash(self) -> u64 {
        let mut hasher = FxHasher::default();
        for word in self.0 {
            hasher.write_u64(word);
        }
        hasher.finish()
    }
}

/// One table entry: eight bytes, so the table of a few thousand instruments stays in the
/// first-level cache. The key itself is compared from `keys`, a load that depends only on the
/// id and so overlaps with the caller's load of the instrument's state.
#[derive(Debug, Clone, Copy)]
struct Slot {
    /// High half of the key's hash: filters other keys in the probe sequence.
    hash_high: u32,
    id: u32,
}

impl Slot {
    #[allow(clippy::cast_possible_truncation)] // the high half, on purpose
    fn hash_high(hash: u64) -> u32 {
        (hash >> 32) as u32
    }
}

/// Instrument names with dense ids `0..len`, in order of first insertion.
#[derive(Debug, Clone, Default)]
pub(crate) struct InstrumentIds {
    table: HashTable<Slot>,
    /// By id: the key (hashes on rehash, comparisons on lookup) and the name.
    keys: Vec<NameKey>,
    names: Vec<Box<str>>,
}

impl InstrumentIds {
    /// The id of `name`, if it has one (`key` and `hash` are its lookup form).
    #[inline]
    pub(crate) fn find(&self, name: &str, key: NameKey, hash: u64) -> Option<usize> {
        let hash_high = Slot::hash_high(hash);
        self.table
            .find(hash, |slot| {
                let id = slot.id as usize;
                slot.hash_high == hash_high
                    && self.keys.get(id) == Some(&key)
                    && (!key.is_long() || self.name(id) == name)
            })
            .map(|slot| slot.id as usize)
    }

    /// The id of `name`, given one (the next free id) if it had none.
    pub(crate) fn find_or_insert(&mut self, name: &str) -> usize {
        let key = NameKey::new(name);
        let hash = key.hash();
        if let Some(id) = self.find(name, key, hash) {
            return id;
        }
        self.insert_new(name, key, hash)
    }

    /// Gives `name` (known to be absent) the next id.
    pub(crate) fn insert_new(&mut self, name: &str, key: NameKey, hash: u64) -> usize {
        let id = self.names.len();
        // Ids are u32 to keep slots small; four billion instruments on one partition would be
        // a broken feed long before memory runs out, so saturating there is acceptable.
        let slot_id = u32::try_from(id).unwrap_or(u32::MAX);
        let keys = &self.keys;
        self.table.insert_unique(
            hash,
            Slot {
                hash_high: Slot::hash_high(hash),
                id: slot_id,
            },
            |slot| keys.get(slot.id as usize).map_or(0, |key| key.hash()),
        );
        self.keys.push(key);
        self.names.push(name.into());
        id
    }

    /// The name of `id`.
    pub(crate) fn name(&self, id: usize) -> &str {
        self.names.get(id).map_or("", |name| name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_and_long_names_get_stable_dense_ids() {
        let mut ids = InstrumentIds::default();
        let names = [
            "BTC-PERPETUAL",
            "",
            "ETH_USDC-27DEC24-4000-C", // 23 bytes: the longest inline name
            "BTC-CS-27DEC24-60000_70000_80000", // heap
            "BTC-CS-27DEC24-60000_70000_80000x", // heap, shares a prefix
            "ETH_USDC-27DEC24-4000-P", // differs in the last inline byte
            "BTC-PERPETUAL\0",         // differs only by a trailing zero byte
        ];
        for (expected, name) in names.iter().enumerate() {
            assert_eq!(ids.find_or_insert(name), expected, "{name:?}");
        }
        for (expected, name) in names.iter().enumerate() {
            assert_eq!(ids.find_or_insert(name), expected, "{name:?}");
            assert_eq!(ids.name(expected), *name);
        }
        assert_eq!(ids.name(names.len()), "", "no name beyond the last id");
        let unknown = NameKey::new("BTC-PERPETUA");
        assert_eq!(ids.find("BTC-PERPETUA", unknown, unknown.hash()), None);
    }

    #[test]
    fn survives_growth() {
        let mut ids = InstrumentIds::default();
        for i in 0..10_000 {
            assert_eq!(ids.find_or_insert(&format!("BTC-{i}-C")), i);
        }
        for i in (0..10_000).rev() {
            let name = format!("BTC-{i}-C");
            let key = NameKey::new(&name);
            assert_eq!(ids.find(&name, key, key.hash()), Some(i));
        }
    }
}
