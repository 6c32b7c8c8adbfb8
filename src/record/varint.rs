//! Kafka's zig-zag variable-length integers (protobuf style), used inside v2
//! records for lengths, deltas and counts.

use crate::error::{Error, Result};

/// Bytes needed to encode `v` as a zig-zag varint.
#[inline]
pub(crate) fn varint_len(v: i32) -> usize {
    varlong_len(v as i64)
}

/// Bytes needed to encode `v` as a zig-zag varlong.
#[inline]
pub(crate) fn varlong_len(v: i64) -> usize {
    let mut z = zigzag(v);
    let mut n = 1;
    while z >= 0x80 {
        z >>= 7;
        n += 1;
    }
    n
}

#[inline]
fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

/// Appends `v` as a zig-zag varlong.
#[inline]
pub(crate) fn put_varlong(buf: &mut Vec<u8>, v: i64) {
    let mut z = zigzag(v);
    while z >= 0x80 {
        buf.push((z as u8) | 0x80);
        z >>= 7;
    }
    buf.push(z as u8);
}

/// Appends `v` as a zig-zag varint.
#[inline]
pub(crate) fn put_varint(buf: &mut Vec<u8>, v: i32) {
    put_varlong(buf, v as i64)
}

/// Reads a zig-zag varlong from `buf` at `*pos`, advancing `*pos`.
#[inline]
pub(crate) fn get_varlong(buf: &[u8], pos: &mut usize) -> Result<i64> {
    let mut z: u64 = 0;
    let mut shift = 0u32;
    loop {
        let Some(&b) = buf.get(*pos) else {
            return Err(Error::corrupt("varint runs past the end of the record"));
        };
        *pos += 1;
        if shift == 63 && b > 1 {
            return Err(Error::corrupt("varlong longer than 64 bits"));
        }
        z |= u64::from(b & 0x7f) << shift;
        if b < 0x80 {
            return Ok(((z >> 1) as i64) ^ -((z & 1) as i64));
        }
        shift += 7;
        if shift > 63 {
            return Err(Error::corrupt("varlong longer than 10 bytes"));
        }
    }
}

/// Reads a zig-zag varint (must fit in 32 bits) from `buf` at `*pos`.
#[inline]
pub(crate) fn get_varint(buf: &[u8], pos: &mut usize) -> Result<i32> {
    // Fast path: one byte covers -64..=63, the common case for lengths and deltas.
    if let Some(&b) = buf.get(*pos)
        && b < 0x80
    {
        *pos += 1;
        return Ok(((b >> 1) as i32) ^ -((b & 1) as i32));
    }
    let v = get_varlong(buf, pos)?;
    i32::try_from(v).map_err(|_| Error::corrupt("varint does not fit in 32 bits"))
}

/// [`get_varlong`] for hot loops: `None` wherever `get_varlong` would fail
/// (and also for a 10-byte encoding, which `get_varlong` may accept), so a
/// caller can retry with it for the precise error. Small enough to stay in
/// registers, unlike a `Result` carrying an [`Error`].
#[inline(always)]
pub(crate) fn varlong_fast(buf: &[u8], pos: &mut usize) -> Option<i64> {
    let mut z: u64 = 0;
    let mut shift = 0u32;
    loop {
        let b = *buf.get(*pos)?;
        *pos += 1;
        z |= u64::from(b & 0x7f) << shift;
        if b < 0x80 {
            return Some(((z >> 1) as i64) ^ -((z & 1) as i64));
        }
        shift += 7;
        if shift >= 63 {
            return None;
        }
    }
}

/// [`get_varint`] for hot loops; `None` where it would fail (see
/// [`varlong_fast`]).
#[inline(always)]
pub(crate) fn varint_fast(buf: &[u8], pos: &mut usize) -> Option<i32> {
    i32::try_from(varlong_fast(buf, pos)?).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn varlong_round_trips(v in any::<i64>()) {
            let mut buf = Vec::new();
            put_varlong(&mut buf, v);
            prop_assert_eq!(buf.len(), varlong_len(v));
            let mut pos = 0;
            prop_assert_eq!(get_varlong(&buf, &mut pos).unwrap(), v);
            prop_assert_eq!(pos, buf.len());
        }

        #[test]
        fn the_fast_decoders_agree_with_the_checked_ones(bytes in proptest::collection::vec(any::<u8>(), 0..12)) {
            let (mut a, mut b) = (0, 0);
            if let Some(v) = varlong_fast(&bytes, &mut a) {
                prop_assert_eq!(get_varlong(&bytes, &mut b).ok(), Some(v));
                prop_assert_eq!(a, b);
            }
            let (mut a, mut b) = (0, 0);
            if let Some(v) = varint_fast(&bytes, &mut a) {
                prop_assert_eq!(get_varint(&bytes, &mut b).ok(), Some(v));
                prop_assert_eq!(a, b);
            }
        }

        #[test]
        fn varint_round_trips(v in any::<i32>()) {
            let mut buf = Vec::new();
            put_varint(&mut buf, v);
            prop_assert_eq!(buf.len(), varint_len(v));
            let mut pos = 0;
            prop_assert_eq!(get_varint(&buf, &mut pos).unwrap(), v);
        }

        #[test]
        fn decoding_garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..16)) {
            let mut pos = 0;
            let _ = get_varlong(&bytes, &mut pos);
            let mut pos = 0;
            let _ = get_varint(&bytes, &mut pos);
        }
    }

    #[test]
    fn known_encodings() {
        let cases: [(i64, &[u8]); 5] = [
            (0, &[0]),
            (-1, &[1]),
            (1, &[2]),
            (63, &[0x7e]),
            (-65, &[0x81, 0x01]),
        ];
        for (v, bytes) in cases {
            let mut buf = Vec::new();
            put_varlong(&mut buf, v);
            assert_eq!(buf, bytes, "{v}");
        }
    }

    #[test]
    fn truncated_and_overlong_are_errors() {
        let mut pos = 0;
        assert!(get_varlong(&[0x80], &mut pos).is_err());
        let mut pos = 0;
        assert!(get_varlong(&[0xff; 11], &mut pos).is_err());
        let mut pos = 0;
        let mut big = Vec::new();
        put_varlong(&mut big, i64::from(i32::MAX) + 1);
        assert!(get_varint(&big, &mut pos).is_err());
    }
}
