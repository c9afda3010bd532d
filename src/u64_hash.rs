//! [`U64Hash`]: the hasher of tables keyed by a `u64` the guard made itself (a sequence
//! number, or a seeded hash of a caller's key). No caller chooses such a key, so no defence
//! against chosen keys is needed: one multiplication spreads it over the table's buckets and
//! tags.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

/// Hashes one `u64` with a multiplication and a rotation.
#[derive(Default)]
pub(crate) struct U64Hash(u64);

impl Hasher for U64Hash {
    fn finish(&self) -> u64 {
        self.0.wrapping_mul(0x9E37_79B9_7F4A_7C15).rotate_left(32)
    }
    fn write(&mut self, bytes: &[u8]) {
        // Only `u64` keys are hashed; fold anything else in for completeness.
        for b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*b);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

/// A map keyed by such a `u64`.
pub(crate) type U64Map<V> = HashMap<u64, V, BuildHasherDefault<U64Hash>>;
