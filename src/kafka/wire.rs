//! Kafka's request framing and the primitives of its request bodies, read
//! with every length checked against the bytes actually received.
//!
//! Requests are decoded here rather than by `kafka-protocol`'s decoders:
//! those reserve `Vec` capacity for an array from the element count a peer
//! writes, before reading any element (a few bytes claiming 2³¹ elements
//! would make the process abort on the allocation). Here an array's count
//! is refused when it exceeds the bytes left in the frame (every element
//! takes at least one byte), so nothing is allocated that the frame does
//! not hold. Responses are encoded with `kafka-protocol`'s types.

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, ResponseHeader};
use kafka_protocol::protocol::Encodable;

/// Why a request could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Malformed(pub(super) String);

impl Malformed {
    fn at(what: &str) -> Self {
        Malformed(format!("truncated or invalid {what}"))
    }
}

pub(super) type Read<T> = std::result::Result<T, Malformed>;

/// A checked reader over one request body.
pub(super) struct Reader {
    buf: Bytes,
    /// Whether the request version is flexible (compact strings and arrays,
    /// tagged fields).
    flexible: bool,
}

impl Reader {
    pub(super) fn new(buf: Bytes, flexible: bool) -> Self {
        Self { buf, flexible }
    }

    #[cfg(test)]
    fn remaining(&self) -> usize {
        self.buf.len()
    }

    fn take(&mut self, n: usize, what: &str) -> Read<Bytes> {
        if self.buf.len() < n {
            return Err(Malformed::at(what));
        }
        Ok(self.buf.split_to(n))
    }

    pub(super) fn i8(&mut self, what: &str) -> Read<i8> {
        Ok(self.take(1, what)?[0] as i8)
    }

    pub(super) fn bool(&mut self, what: &str) -> Read<bool> {
        Ok(self.i8(what)? != 0)
    }

    pub(super) fn i16(&mut self, what: &str) -> Read<i16> {
        let b = self.take(2, what)?;
        Ok(i16::from_be_bytes([b[0], b[1]]))
    }

    pub(super) fn i32(&mut self, what: &str) -> Read<i32> {
        let b = self.take(4, what)?;
        Ok(i32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    pub(super) fn i64(&mut self, what: &str) -> Read<i64> {
        let b = self.take(8, what)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(&b);
        Ok(i64::from_be_bytes(a))
    }

    pub(super) fn uuid(&mut self, what: &str) -> Read<[u8; 16]> {
        let b = self.take(16, what)?;
        let mut a = [0u8; 16];
        a.copy_from_slice(&b);
        Ok(a)
    }

    /// An unsigned varint (at most 5 bytes, as Kafka writes them).
    pub(super) fn uvarint(&mut self, what: &str) -> Read<u32> {
        let mut value: u32 = 0;
        for i in 0..5 {
            let byte = self.take(1, what)?[0];
            value |= u32::from(byte & 0x7f) << (7 * i);
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(Malformed::at(what))
    }

    /// A length prefix: `None` for null; refused when it claims more than
    /// the frame holds (each element at least `min_each` bytes).
    fn length(&mut self, what: &str, min_each: usize) -> Read<Option<usize>> {
        let n: i64 = if self.flexible {
            i64::from(self.uvarint(what)?) - 1
        } else {
            i64::from(self.i32(what)?)
        };
        if n < 0 {
            return if n == -1 {
                Ok(None)
            } else {
                Err(Malformed(format!("negative length {n} for {what}")))
            };
        }
        let n = n as usize;
        if n.saturating_mul(min_each.max(1)) > self.buf.len() {
            return Err(Malformed(format!(
                "{what} claims {n} elements, more than the {} bytes left",
                self.buf.len()
            )));
        }
        Ok(Some(n))
    }

    /// A string whose length prefix is 16-bit in non-flexible versions.
    pub(super) fn nullable_string(&mut self, what: &str) -> Read<Option<String>> {
        let n = if self.flexible {
            match self.length(what, 1)? {
                Some(n) => n,
                None => return Ok(None),
            }
        } else {
            match self.i16(what)? {
                -1 => return Ok(None),
                n if n < 0 => return Err(Malformed(format!("negative length {n} for {what}"))),
                n => n as usize,
            }
        };
        let bytes = self.take(n, what)?;
        String::from_utf8(bytes.to_vec())
            .map(Some)
            .map_err(|_| Malformed(format!("{what} is not UTF-8")))
    }

    pub(super) fn string(&mut self, what: &str) -> Read<String> {
        self.nullable_string(what)?
            .ok_or_else(|| Malformed(format!("{what} is null")))
    }

    /// Bytes with a 32-bit (or, flexible, varint) length: a slice of the
    /// frame, not a copy. `None` for null.
    pub(super) fn nullable_bytes(&mut self, what: &str) -> Read<Option<Bytes>> {
        match self.length(what, 1)? {
            Some(n) => self.take(n, what).map(Some),
            None => Ok(None),
        }
    }

    /// An array: `None` for null. `each` reads one element.
    pub(super) fn array<T>(
        &mut self,
        what: &str,
        mut each: impl FnMut(&mut Self) -> Read<T>,
    ) -> Read<Option<Vec<T>>> {
        let Some(n) = self.length(what, 1)? else {
            return Ok(None);
        };
        let mut items = Vec::with_capacity(n);
        for _ in 0..n {
            items.push(each(self)?);
        }
        Ok(Some(items))
    }

    /// An array of topics, each a name, an array of partitions that
    /// `partition` reads, and tagged fields, as (name, partitions); a null
    /// array of either reads as empty.
    pub(super) fn topics<P>(
        &mut self,
        mut partition: impl FnMut(&mut Self) -> Read<P>,
    ) -> Read<Vec<(String, Vec<P>)>> {
        let topics = self.array("topics", |r| {
            let name = r.string("topic name")?;
            let partitions = r.array("partitions", &mut partition)?;
            r.tagged_fields()?;
            Ok((name, partitions.unwrap_or_default()))
        })?;
        Ok(topics.unwrap_or_default())
    }

    /// Skips a flexible version's tagged fields (none of which we read).
    pub(super) fn tagged_fields(&mut self) -> Read<()> {
        if !self.flexible {
            return Ok(());
        }
        let count = self.uvarint("tagged fields")?;
        for _ in 0..count {
            self.uvarint("tag")?;
            let size = self.uvarint("tagged field size")? as usize;
            self.take(size, "tagged field")?;
        }
        Ok(())
    }
}

/// A request's header: what it asks and how to answer.
#[derive(Debug, Clone)]
pub(super) struct RequestHeader {
    pub(super) api_key: i16,
    pub(super) api_version: i16,
    pub(super) correlation_id: i32,
    /// The client's `client.id` (read with the body: see [`body`]).
    pub(super) client_id: String,
}

/// Reads the fixed start of a request frame (key, version, correlation
/// id), which every version of every API shares; returns it and the rest.
pub(super) fn read_header(frame: Bytes) -> Read<(RequestHeader, Bytes)> {
    let mut r = Reader::new(frame, false);
    let header = RequestHeader {
        api_key: r.i16("api key")?,
        api_version: r.i16("api version")?,
        correlation_id: r.i32("correlation id")?,
        client_id: String::new(),
    };
    Ok((header, r.buf))
}

/// The body of a request whose key and version are served, after the
/// rest of its header: the client id (kept in `header`) and, in a flexible
/// version, tagged fields (skipped).
pub(super) fn body(header: &mut RequestHeader, rest: Bytes) -> Read<Reader> {
    let header_version = ApiKey::try_from(header.api_key)
        .map(|k| k.request_header_version(header.api_version))
        .unwrap_or(1);
    let mut r = Reader::new(rest, false);
    if header_version >= 1 {
        header.client_id = r.nullable_string("client id")?.unwrap_or_default();
    }
    let flexible = header_version >= 2;
    if flexible {
        r.flexible = true;
        r.tagged_fields()?;
    }
    Ok(Reader::new(r.buf, flexible))
}

/// What goes back for a request.
#[derive(Debug)]
pub(super) enum Answer {
    /// This frame.
    Frame(Bytes),
    /// Nothing (acks=0).
    Nothing,
    /// The connection closes, for this reason.
    Close(String),
}

/// A whole response frame: size, header (v0, or v1 where the API's version
/// is flexible — ApiVersions always v0), body. An answer that cannot be
/// encoded in the version asked closes the connection, saying why.
pub(super) fn response_frame(
    header: &RequestHeader,
    body: &impl Encodable,
    body_version: i16,
) -> Answer {
    let header_version = match ApiKey::try_from(header.api_key) {
        Ok(ApiKey::ApiVersions) | Err(_) => 0,
        Ok(key) => key.response_header_version(body_version),
    };
    let mut out = BytesMut::new();
    out.put_i32(0); // the size, filled in below
    let response_header = ResponseHeader::default().with_correlation_id(header.correlation_id);
    let encoded = response_header
        .encode(&mut out, header_version)
        .and_then(|()| body.encode(&mut out, body_version));
    if let Err(e) = encoded {
        return Answer::Close(format!(
            "the answer to API key {} v{} could not be encoded: {e}",
            header.api_key, header.api_version
        ));
    }
    let size = (out.len() - 4) as i32;
    out[..4].copy_from_slice(&size.to_be_bytes());
    Answer::Frame(out.freeze())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_array_claiming_more_than_the_frame_holds_is_refused_before_allocating() {
        let mut body = BytesMut::new();
        body.put_i32(i32::MAX);
        body.put_slice(b"abc");
        let mut r = Reader::new(body.freeze(), false);
        let err = r
            .array("topics", |r| r.nullable_string("name"))
            .unwrap_err();
        assert!(err.0.contains("claims 2147483647 elements"), "{err:?}");
        let mut compact = Reader::new(Bytes::from_static(&[0xff, 0xff, 0xff, 0xff, 0x07]), true);
        assert!(compact.array("topics", |r| r.i8("x")).is_err());
        let mut null = Reader::new(Bytes::from_static(&[0xff, 0xff, 0xff, 0xff]), false);
        assert_eq!(null.array("topics", |r| r.i8("x")), Ok(None));
    }

    #[test]
    fn a_header_is_read_whatever_the_key_and_truncation_is_an_error() {
        let mut frame = BytesMut::new();
        frame.put_i16(3); // Metadata
        frame.put_i16(12); // flexible: header v2
        frame.put_i32(77);
        frame.put_i16(4);
        frame.put_slice(b"kcat");
        frame.put_u8(0); // no tagged fields
        frame.put_u8(1); // body: an empty compact array
        let (mut header, rest) = read_header(frame.freeze()).unwrap();
        let mut body = super::body(&mut header, rest).unwrap();
        assert_eq!(
            (header.api_key, header.api_version, header.correlation_id),
            (3, 12, 77)
        );
        assert_eq!(header.client_id, "kcat");
        assert_eq!(body.remaining(), 1);
        assert_eq!(
            body.array("topics", |r| r.nullable_string("t")),
            Ok(Some(vec![]))
        );
        for len in 0..8 {
            let short = Bytes::copy_from_slice(&[0, 3, 0, 12, 0, 0, 0, 77][..len]);
            assert!(read_header(short).is_err(), "{len} bytes");
        }
        let (mut header, rest) =
            read_header(Bytes::from_static(&[0, 3, 0, 12, 0, 0, 0, 77, 0])).unwrap();
        assert!(
            super::body(&mut header, rest).is_err(),
            "client id cut short"
        );
        let mut unknown = BytesMut::new();
        unknown.put_i16(999);
        unknown.put_i16(0);
        unknown.put_i32(5);
        unknown.put_i16(-1);
        let (header, _) = read_header(unknown.freeze()).unwrap();
        assert_eq!((header.api_key, header.correlation_id), (999, 5));
    }
}
