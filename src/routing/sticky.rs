//! Sticky bucketing: a user's key → a bucket in `0..10000` → an arm.
//!
//! `bucket = murmur3_x86_32(salt + ":" + key, seed 0) mod 10000`, and the key
//! is in the canary iff `bucket < weight in basis points`. Because the
//! comparison is a plain threshold, raising the weight only ever adds buckets
//! to the canary; the hash makes the arm stable across requests, restarts and
//! replicas. The hash is streamed over the three pieces, so nothing is
//! allocated on the request path.

use crate::domain::CanaryWeight;

/// Number of buckets: one per basis point of weight.
pub const BUCKETS: u16 = 10_000;

/// The bucket of `key` under `salt`: `murmur3_x86_32(salt ":" key, 0) % 10000`.
#[inline]
pub fn bucket(salt: &str, key: &[u8]) -> u16 {
    let mut h = Murmur3::new(0);
    h.write(salt.as_bytes());
    h.write(b":");
    h.write(key);
    // The remainder is below 10000, so it always fits in a u16.
    (h.finish() % u32::from(BUCKETS)) as u16
}

/// Whether a key in `bucket` goes to the canary at weight `w`.
pub fn in_canary(bucket: u16, w: CanaryWeight) -> bool {
    bucket < w.basis_points()
}

/// The smallest weight, in percent, at which `bucket` is in the canary:
/// `(bucket + 1) / 100`.
pub fn canary_from_percent(bucket: u16) -> f64 {
    (f64::from(bucket) + 1.0) / 100.0
}

/// Streaming MurmurHash3 x86_32 (Austin Appleby's reference algorithm).
///
/// The `murmur3` crate hashes through `std::io::Read`, four bytes per call;
/// this is the same function over byte slices, which lets [`bucket`] feed
/// salt, separator and key without concatenating them. Tests pin it against
/// the crate.
#[derive(Debug, Clone)]
pub struct Murmur3 {
    h: u32,
    /// Bytes of an unfinished block, little-endian, kept in a register:
    /// joining pieces in a memory buffer and reading it back as `u32`s
    /// stalls on store forwarding and made `bucket` 3× slower.
    carry: u32,
    carry_len: u32,
    total: u32,
}

const C1: u32 = 0xcc9e_2d51;
const C2: u32 = 0x1b87_3593;

#[inline(always)]
fn mix_k(k: u32) -> u32 {
    k.wrapping_mul(C1).rotate_left(15).wrapping_mul(C2)
}

#[inline(always)]
fn mix_h(h: u32, k: u32) -> u32 {
    (h ^ mix_k(k))
        .rotate_left(13)
        .wrapping_mul(5)
        .wrapping_add(0xe654_6b64)
}

impl Murmur3 {
    /// A hasher with the given seed.
    #[inline]
    pub fn new(seed: u32) -> Murmur3 {
        Murmur3 {
            h: seed,
            carry: 0,
            carry_len: 0,
            total: 0,
        }
    }

    /// Feeds more bytes; `write(a); write(b)` hashes the same as `write(a ++ b)`.
    #[inline(always)]
    pub fn write(&mut self, mut bytes: &[u8]) {
        // The reference algorithm takes the length mod 2^32.
        self.total = self.total.wrapping_add(bytes.len() as u32);
        while self.carry_len > 0 {
            let Some((first, rest)) = bytes.split_first() else {
                return;
            };
            self.carry |= u32::from(*first) << (8 * self.carry_len);
            self.carry_len += 1;
            bytes = rest;
            if self.carry_len == 4 {
                self.h = mix_h(self.h, self.carry);
                self.carry = 0;
                self.carry_len = 0;
            }
        }
        let mut blocks = bytes.chunks_exact(4);
        for block in &mut blocks {
            let k = u32::from_le_bytes([block[0], block[1], block[2], block[3]]);
            self.h = mix_h(self.h, k);
        }
        for (i, b) in blocks.remainder().iter().enumerate() {
            self.carry |= u32::from(*b) << (8 * i);
        }
        self.carry_len = blocks.remainder().len() as u32;
    }

    /// The hash of everything written so far.
    #[inline(always)]
    pub fn finish(&self) -> u32 {
        let mut h = self.h;
        if self.carry_len > 0 {
            h ^= mix_k(self.carry);
        }
        h ^= self.total;
        h ^= h >> 16;
        h = h.wrapping_mul(0x85eb_ca6b);
        h ^= h >> 13;
        h = h.wrapping_mul(0xc2b2_ae35);
        h ^ (h >> 16)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use proptest::prelude::*;
    use std::io::Cursor;

    fn crate_hash(bytes: &[u8]) -> u32 {
        murmur3::murmur3_32(&mut Cursor::new(bytes), 0).unwrap()
    }

    fn our_hash(bytes: &[u8]) -> u32 {
        let mut h = Murmur3::new(0);
        h.write(bytes);
        h.finish()
    }

    #[test]
    fn contract_vectors() {
        // The documented known-answer vectors: these two must never change.
        assert_eq!(our_hash("reco-v2:user-1".as_bytes()), 1_816_724_851);
        assert_eq!(crate_hash("reco-v2:user-1".as_bytes()), 1_816_724_851);
        assert_eq!(bucket("reco-v2", b"user-1"), 4851);
        assert_eq!(our_hash("reco-v2:Müller".as_bytes()), 806_325_567);
        assert_eq!(crate_hash("reco-v2:Müller".as_bytes()), 806_325_567);
        assert_eq!(bucket("reco-v2", "Müller".as_bytes()), 5567);
    }

    #[test]
    fn reference_vectors() {
        // Published MurmurHash3_x86_32 test vectors (seed 0 unless noted).
        assert_eq!(our_hash(b""), 0);
        let mut seeded = Murmur3::new(1);
        seeded.write(b"");
        assert_eq!(seeded.finish(), 0x514e_28b7);
        assert_eq!(our_hash(b"test"), 0xba6b_d213);
        assert_eq!(our_hash(b"Hello, world!"), 0xc036_3e43);
        assert_eq!(
            our_hash(b"The quick brown fox jumps over the lazy dog"),
            0x2e4f_f723
        );
    }

    #[test]
    fn in_canary_is_a_threshold() {
        assert!(!in_canary(0, CanaryWeight::ZERO));
        assert!(in_canary(0, CanaryWeight::from_basis_points(1)));
        assert!(!in_canary(1, CanaryWeight::from_basis_points(1)));
        assert!(in_canary(9999, CanaryWeight::FULL));
        assert!(!in_canary(4851, CanaryWeight::from_basis_points(4851)));
        assert!(in_canary(4851, CanaryWeight::from_basis_points(4852)));
    }

    #[test]
    fn canary_from_percent_is_the_smallest_weight() {
        assert_eq!(canary_from_percent(4851), 48.52);
        assert_eq!(canary_from_percent(0), 0.01);
        assert_eq!(canary_from_percent(9999), 100.0);
        for b in [0u16, 1, 4851, 5567, 9999] {
            let w = CanaryWeight::from_percent(canary_from_percent(b)).unwrap();
            assert!(in_canary(b, w));
            assert!(!in_canary(
                b,
                CanaryWeight::from_basis_points(w.basis_points() - 1)
            ));
        }
    }

    proptest! {
        #[test]
        fn streaming_matches_the_crate(
            salt in ".{0,40}",
            key in proptest::collection::vec(any::<u8>(), 0..80),
            split in 0usize..200,
        ) {
            let mut joined = salt.as_bytes().to_vec();
            joined.push(b':');
            joined.extend_from_slice(&key);
            let expected = crate_hash(&joined);
            prop_assert_eq!(our_hash(&joined), expected);
            prop_assert_eq!(u32::from(bucket(&salt, &key)), expected % 10_000);
            // Any split into two writes hashes the same.
            let at = split.min(joined.len());
            let mut h = Murmur3::new(0);
            h.write(&joined[..at]);
            h.write(&joined[at..]);
            prop_assert_eq!(h.finish(), expected);
        }

        #[test]
        fn raising_the_weight_never_moves_a_key_to_stable(
            salt in ".{0,20}",
            key in proptest::collection::vec(any::<u8>(), 0..40),
            lo in 0u16..=10_000,
            hi in 0u16..=10_000,
        ) {
            let (lo, hi) = (lo.min(hi), lo.max(hi));
            let b = bucket(&salt, &key);
            prop_assert!(b < BUCKETS);
            if in_canary(b, CanaryWeight::from_basis_points(lo)) {
                prop_assert!(in_canary(b, CanaryWeight::from_basis_points(hi)));
            }
        }
    }
}
