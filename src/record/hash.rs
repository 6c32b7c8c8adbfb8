//! Kafka's murmur2 hash of record keys: the default partitioner uses it, and
//! so does replica placement.

/// Kafka's 32-bit murmur2 hash of `data` (seed `0x9747b28c`), as the Java
/// client computes it, returned as the same signed `i32`.
///
/// ```
/// use ferrolog::record::murmur2;
/// assert_eq!(murmur2(b""), 275_646_681);
/// assert_eq!(murmur2(b"a"), -1_563_381_124);
/// ```
pub fn murmur2(data: &[u8]) -> i32 {
    const SEED: u32 = 0x9747_b28c;
    const M: u32 = 0x5bd1_e995;
    const R: u32 = 24;
    let mut h = SEED ^ data.len() as u32;
    let mut chunks = data.chunks_exact(4);
    for chunk in &mut chunks {
        let mut k = u32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> R;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M);
        h ^= k;
    }
    let tail = chunks.remainder();
    if !tail.is_empty() {
        for (i, &b) in tail.iter().enumerate().rev() {
            h ^= u32::from(b) << (8 * i);
        }
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    h as i32
}
