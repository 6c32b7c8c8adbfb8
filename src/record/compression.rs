//! Batch compression: Kafka's four codecs, each behind its cargo feature.
//!
//! A compressed v2 batch keeps its 61-byte header in the clear; only the
//! records region is compressed, as one stream, with the framing the Java
//! client writes:
//!
//! | codec  | feature  | framing                                                        |
//! |--------|----------|----------------------------------------------------------------|
//! | gzip   | `gzip`   | gzip members (RFC 1952), level 6                               |
//! | snappy | `snappy` | xerial framing written (32 KiB blocks); raw snappy also read   |
//! | lz4    | `lz4`    | LZ4 frame, independent 64 KiB blocks, no checksums but the header's |
//! | zstd   | `zstd`   | one zstd frame, level 3                                        |
//!
//! Decompression never trusts a size a batch claims: output grows with the
//! bytes actually produced and stops at [`MAX_DECOMPRESSED_BATCH_BYTES`],
//! and zstd's window is capped, so a small batch cannot make the library
//! allocate gigabytes.

// Without any codec feature, the helpers the codecs share go unused.
#![cfg_attr(
    not(any(
        feature = "gzip",
        feature = "snappy",
        feature = "lz4",
        feature = "zstd"
    )),
    allow(dead_code, unused_variables)
)]

use super::Compression;
use crate::error::{Error, Result};

/// The most bytes the records of one compressed batch may decompress to
/// (64 MiB). Kafka's producer closes a batch at `batch_size` (16 KiB) of
/// records and refuses a request over `max_request_size` (1 MiB), so a real
/// batch stays far below this; a batch that inflates past it is refused as
/// corrupt instead of being allowed to exhaust memory.
pub const MAX_DECOMPRESSED_BATCH_BYTES: usize = 64 << 20;

/// The magic at the start of xerial-framed snappy (Java's `SnappyOutputStream`).
#[cfg(feature = "snappy")]
const XERIAL_MAGIC: [u8; 8] = [0x82, b'S', b'N', b'A', b'P', b'P', b'Y', 0];
/// Uncompressed bytes per xerial block, as Java writes them.
#[cfg(feature = "snappy")]
const XERIAL_BLOCK: usize = 32 * 1024;
/// zstd frames may use windows up to 8 MiB (level 19 on large input); a
/// frame claiming more is refused rather than allocated.
#[cfg(feature = "zstd")]
const ZSTD_WINDOW_LOG_MAX: u32 = 23;

impl Compression {
    /// Whether this build can compress and decompress with the codec (its
    /// cargo feature is on). [`Compression::None`] always is.
    pub fn is_enabled(self) -> bool {
        match self {
            Compression::None => true,
            Compression::Gzip => cfg!(feature = "gzip"),
            Compression::Snappy => cfg!(feature = "snappy"),
            Compression::Lz4 => cfg!(feature = "lz4"),
            Compression::Zstd => cfg!(feature = "zstd"),
        }
    }

    /// The cargo feature that enables the codec.
    pub fn feature(self) -> &'static str {
        match self {
            Compression::None => "(none needed)",
            other => other.name(),
        }
    }

    /// The codec for Kafka's `compression.type` name (`none`, `gzip`,
    /// `snappy`, `lz4`, `zstd`).
    pub fn from_name(name: &str) -> Option<Self> {
        Some(match name {
            "none" => Self::None,
            "gzip" => Self::Gzip,
            "snappy" => Self::Snappy,
            "lz4" => Self::Lz4,
            "zstd" => Self::Zstd,
            _ => return None,
        })
    }

    fn unsupported(self) -> Error {
        Error::UnsupportedCompression { codec: self.name() }
    }
}

fn corrupt(codec: Compression, what: impl std::fmt::Display) -> Error {
    Error::corrupt(format!(
        "{} batch does not decompress: {what}",
        codec.name()
    ))
}

fn failed(codec: Compression, e: impl std::fmt::Display) -> Error {
    Error::io(
        format_args!("{} compression", codec.name()),
        std::io::Error::other(e.to_string()),
    )
}

/// Appends `input` compressed with `codec` to `out`.
pub(crate) fn compress(codec: Compression, input: &[u8], out: &mut Vec<u8>) -> Result<()> {
    match codec {
        Compression::None => {
            out.extend_from_slice(input);
            Ok(())
        }
        #[cfg(feature = "gzip")]
        Compression::Gzip => {
            use std::io::Write;
            let mut encoder = flate2::write::GzEncoder::new(out, flate2::Compression::new(6));
            encoder
                .write_all(input)
                .and_then(|()| encoder.try_finish())
                .map_err(|e| failed(codec, e))
        }
        #[cfg(feature = "snappy")]
        Compression::Snappy => {
            out.extend_from_slice(&XERIAL_MAGIC);
            out.extend_from_slice(&1i32.to_be_bytes()); // version
            out.extend_from_slice(&1i32.to_be_bytes()); // compatible version
            let mut encoder = snap::raw::Encoder::new();
            for block in input.chunks(XERIAL_BLOCK) {
                let at = out.len();
                out.extend_from_slice(&[0; 4]);
                out.resize(at + 4 + snap::raw::max_compress_len(block.len()), 0);
                let n = encoder
                    .compress(block, &mut out[at + 4..])
                    .map_err(|e| failed(codec, e))?;
                out.truncate(at + 4 + n);
                out[at..at + 4].copy_from_slice(&(n as i32).to_be_bytes());
            }
            Ok(())
        }
        #[cfg(feature = "lz4")]
        Compression::Lz4 => {
            use std::io::Write;
            let info = lz4_flex::frame::FrameInfo::new()
                .block_size(lz4_flex::frame::BlockSize::Max64KB)
                .block_mode(lz4_flex::frame::BlockMode::Independent);
            let mut encoder = lz4_flex::frame::FrameEncoder::with_frame_info(info, out);
            encoder.write_all(input).map_err(|e| failed(codec, e))?;
            encoder.finish().map(drop).map_err(|e| failed(codec, e))
        }
        #[cfg(feature = "zstd")]
        Compression::Zstd => {
            let compressed = zstd::bulk::compress(input, 3).map_err(|e| failed(codec, e))?;
            out.extend_from_slice(&compressed);
            Ok(())
        }
        #[allow(unreachable_patterns)]
        other => Err(other.unsupported()),
    }
}

/// The records region of a `codec` batch, decompressed: at most
/// [`MAX_DECOMPRESSED_BATCH_BYTES`].
pub(crate) fn decompress(codec: Compression, input: &[u8]) -> Result<Vec<u8>> {
    decompress_at_most(codec, input, MAX_DECOMPRESSED_BATCH_BYTES)
}

fn decompress_at_most(codec: Compression, input: &[u8], limit: usize) -> Result<Vec<u8>> {
    match codec {
        Compression::None => Ok(input.to_vec()),
        #[cfg(feature = "gzip")]
        Compression::Gzip => read_at_most(codec, flate2::read::MultiGzDecoder::new(input), limit),
        #[cfg(feature = "snappy")]
        Compression::Snappy => {
            if input.starts_with(&XERIAL_MAGIC) {
                unframe_xerial(input, limit)
            } else {
                let mut out = Vec::new();
                raw_snappy(input, limit, &mut out)?;
                Ok(out)
            }
        }
        #[cfg(feature = "lz4")]
        Compression::Lz4 => read_at_most(codec, lz4_flex::frame::FrameDecoder::new(input), limit),
        #[cfg(feature = "zstd")]
        Compression::Zstd => {
            let mut decoder =
                zstd::stream::read::Decoder::with_buffer(input).map_err(|e| corrupt(codec, e))?;
            decoder
                .window_log_max(ZSTD_WINDOW_LOG_MAX)
                .map_err(|e| corrupt(codec, e))?;
            read_at_most(codec, decoder, limit)
        }
        #[allow(unreachable_patterns)]
        other => Err(other.unsupported()),
    }
}

/// Reads a decoder to its end, refusing output past `limit`.
#[cfg(any(feature = "gzip", feature = "lz4", feature = "zstd"))]
fn read_at_most(codec: Compression, reader: impl std::io::Read, limit: usize) -> Result<Vec<u8>> {
    use std::io::Read;
    let mut out = Vec::new();
    reader
        .take(limit as u64 + 1)
        .read_to_end(&mut out)
        .map_err(|e| corrupt(codec, e))?;
    if out.len() > limit {
        return Err(corrupt(
            codec,
            format!("its records inflate past {limit} bytes"),
        ));
    }
    Ok(out)
}

/// Appends one raw snappy block of `input` to `out`, after checking the
/// length it claims against `limit` and against what `input` can hold (a
/// snappy byte never expands past 64 bytes), so a claim is never allocated.
#[cfg(feature = "snappy")]
fn raw_snappy(input: &[u8], limit: usize, out: &mut Vec<u8>) -> Result<()> {
    let codec = Compression::Snappy;
    let claimed = snap::raw::decompress_len(input).map_err(|e| corrupt(codec, e))?;
    if claimed > limit.saturating_sub(out.len()) || claimed > input.len().saturating_mul(64) {
        return Err(corrupt(
            codec,
            format!(
                "a block claims {claimed} bytes from {} compressed",
                input.len()
            ),
        ));
    }
    let at = out.len();
    out.resize(at + claimed, 0);
    let n = snap::raw::Decoder::new()
        .decompress(input, &mut out[at..])
        .map_err(|e| corrupt(codec, e))?;
    out.truncate(at + n);
    Ok(())
}

/// Xerial framing: the 8-byte magic, two 4-byte versions, then blocks of a
/// 4-byte big-endian length and that many bytes of raw snappy.
#[cfg(feature = "snappy")]
fn unframe_xerial(input: &[u8], limit: usize) -> Result<Vec<u8>> {
    let codec = Compression::Snappy;
    let mut rest = input
        .get(16..)
        .ok_or_else(|| corrupt(codec, "xerial header cut short"))?;
    let mut out = Vec::new();
    while !rest.is_empty() {
        let len = rest
            .get(..4)
            .map(|b| i32::from_be_bytes([b[0], b[1], b[2], b[3]]))
            .ok_or_else(|| corrupt(codec, "xerial block length cut short"))?;
        let block = usize::try_from(len)
            .ok()
            .and_then(|len| rest.get(4..4 + len))
            .ok_or_else(|| {
                corrupt(
                    codec,
                    format!("xerial block of {len} bytes runs past the batch"),
                )
            })?;
        raw_snappy(block, limit, &mut out)?;
        rest = &rest[4 + block.len()..];
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: [Compression; 4] = [
        Compression::Gzip,
        Compression::Snappy,
        Compression::Lz4,
        Compression::Zstd,
    ];

    fn sample(len: usize) -> Vec<u8> {
        (0..len)
            .map(|i| b"{\"user\":\"ada\",\"clicks\":12}"[i % 26] ^ (i / 1000) as u8)
            .collect()
    }

    #[test]
    fn every_codec_round_trips_empty_small_and_multi_block_input() {
        for codec in ALL {
            assert!(codec.is_enabled(), "{codec:?} (tests run with every codec)");
            for len in [0, 1, 100, 70_000, 300_000] {
                let input = sample(len);
                let mut out = Vec::new();
                compress(codec, &input, &mut out).unwrap();
                if len >= 70_000 {
                    assert!(out.len() < input.len() / 4, "{codec:?} compresses text");
                }
                assert_eq!(decompress(codec, &out).unwrap(), input, "{codec:?} {len}");
            }
        }
    }

    #[test]
    fn inflating_past_the_limit_is_refused() {
        let zeros = vec![0u8; 1 << 20];
        for codec in ALL {
            let mut out = Vec::new();
            compress(codec, &zeros, &mut out).unwrap();
            let err = decompress_at_most(codec, &out, 1000).unwrap_err();
            assert!(
                matches!(&err, Error::CorruptRecord { .. }),
                "{codec:?}: {err}"
            );
        }
    }

    #[test]
    fn a_raw_snappy_block_claiming_more_than_it_can_hold_is_refused_unallocated() {
        // A varint claiming ~2 GiB, followed by three bytes.
        let claim = [0xff, 0xff, 0xff, 0xff, 0x07, 0, 0, 0];
        let err = decompress(Compression::Snappy, &claim).unwrap_err();
        assert!(err.to_string().contains("claims"), "{err}");
        // Raw (unframed) snappy, as librdkafka may write, is read too.
        let raw = snap::raw::Encoder::new()
            .compress_vec(b"hello hello")
            .unwrap();
        assert_eq!(
            decompress(Compression::Snappy, &raw).unwrap(),
            b"hello hello"
        );
    }

    proptest::proptest! {
        #[test]
        fn garbage_never_panics(codec in 0usize..4, bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..200)) {
            let _ = decompress(ALL[codec], &bytes);
        }

        #[test]
        fn any_input_round_trips(codec in 0usize..4, bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..3000)) {
            let mut out = Vec::new();
            compress(ALL[codec], &bytes, &mut out).unwrap();
            proptest::prop_assert_eq!(decompress(ALL[codec], &out).unwrap(), bytes);
        }
    }
}
