//! How event ids are remembered: as a fixed 64-bit hash, the same in every process and every
//! build, so that a snapshot written by one release de-duplicates the same way in the next.

/// FNV-1a (64 bits) of the id's UTF-8 bytes. Two different ids share a hash with probability
/// about n² / 2⁶⁵ among n ids remembered at once; the later one would then be taken for a
/// duplicate.
pub fn event_id_hash(id: &str) -> u64 {
    fnv1a([id.as_bytes()])
}

/// FNV-1a (64 bits) of the concatenated bytes.
pub fn fnv1a<const N: usize>(parts: [&[u8]; N]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in parts.iter().flat_map(|p| p.iter()) {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn is_fnv_1a_64() {
        // Published test vectors of FNV-1a 64.
        assert_eq!(event_id_hash(""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(event_id_hash("a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(event_id_hash("foobar"), 0x8594_4171_f739_67e8);
    }
}
