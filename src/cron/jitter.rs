//! Deterministic per-job jitter: the same job name always gets the same
//! offset, on every node and in every version.
//!
//! The offset comes from a hash written here (FNV-1a over the name's bytes,
//! then the 64-bit finaliser of MurmurHash3 to spread similar names), not
//! from `DefaultHasher`, whose output may change between Rust releases.

use std::time::Duration;

/// FNV-1a (64-bit) of `bytes`.
pub fn fnv1a64(bytes: &[u8]) -> u64 {
    const OFFSET_BASIS: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    bytes.iter().fold(OFFSET_BASIS, |hash, b| {
        (hash ^ u64::from(*b)).wrapping_mul(PRIME)
    })
}

/// MurmurHash3's 64-bit finaliser: every input bit flips about half of the
/// output bits, so `job-1` and `job-2` land far apart.
fn fmix64(mut h: u64) -> u64 {
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^ (h >> 33)
}

/// The offset of `job` within `[0, jitter)`, in whole milliseconds (zero
/// when `jitter` is under a millisecond). A pure function of its inputs.
pub fn jitter_offset(job: &str, jitter: Duration) -> Duration {
    let span = jitter.as_millis();
    if span == 0 {
        return Duration::ZERO;
    }
    let ms = u128::from(fmix64(fnv1a64(job.as_bytes()))) % span;
    // `ms < span <= u64::MAX` milliseconds for any `Duration`.
    Duration::from_millis(u64::try_from(ms).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv1a_matches_the_published_test_vectors() {
        assert_eq!(fnv1a64(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a64(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a64(b"foobar"), 0x8594_4171_f739_67e8);
    }
}
