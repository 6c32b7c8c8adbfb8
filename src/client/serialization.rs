//! Turning application types into record bytes and back.
//!
//! A [`Serializer<T>`] makes the bytes of a key or value; a [`Deserializer<T>`]
//! reads them back. Built in:
//!
//! - [`DefaultSerde`]: raw bytes (`Bytes`, `Vec<u8>`), UTF-8 strings (`String`,
//!   `&str`), and integers and floats as big-endian bytes of their width —
//!   the same bytes as Kafka's `ShortSerializer`, `IntegerSerializer`,
//!   `LongSerializer`, `FloatSerializer` and `DoubleSerializer`.
//! - [`Postcard`]: any serde type, in the compact `postcard` format.
//!
//! A key or value of `None` is a null field in the record (a null value is a
//! tombstone) and never reaches a (de)serializer.

use bytes::Bytes;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::{Error, Result};

/// Makes the bytes of a key or value of type `T`.
///
/// ```
/// use bytes::Bytes;
/// use ferrolog::client::Serializer;
///
/// /// Upper-cases text on the way out.
/// struct Shouting;
/// impl Serializer<String> for Shouting {
///     fn serialize(&self, _topic: &str, data: &String) -> ferrolog::Result<Bytes> {
///         Ok(Bytes::from(data.to_uppercase()))
///     }
/// }
/// assert_eq!(Shouting.serialize("t", &"hi".to_string())?, Bytes::from("HI"));
/// # Ok::<(), ferrolog::Error>(())
/// ```
pub trait Serializer<T: ?Sized>: Send + Sync {
    /// The bytes of `data`, written to `topic`. A failure is
    /// [`Error::Serialization`].
    fn serialize(&self, topic: &str, data: &T) -> Result<Bytes>;
}

/// Reads a key or value of type `T` from its bytes.
pub trait Deserializer<T>: Send + Sync {
    /// The value held by `data`, read from `topic`. A failure is
    /// [`Error::Serialization`]; the consumer reports it with the record's
    /// partition and offset.
    fn deserialize(&self, topic: &str, data: Bytes) -> Result<T>;
}

/// Bytes, strings, integers and floats, as Kafka's built-in serializers write
/// them; see the [`client` module docs](crate::client).
///
/// ```
/// use ferrolog::client::{DefaultSerde, Deserializer, Serializer};
/// let bytes = DefaultSerde.serialize("t", &42i32)?;
/// assert_eq!(&bytes[..], &[0, 0, 0, 42]);
/// let back: i32 = DefaultSerde.deserialize("t", bytes)?;
/// assert_eq!(back, 42);
/// # Ok::<(), ferrolog::Error>(())
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct DefaultSerde;

impl Serializer<Bytes> for DefaultSerde {
    fn serialize(&self, _topic: &str, data: &Bytes) -> Result<Bytes> {
        Ok(data.clone())
    }
}

impl Deserializer<Bytes> for DefaultSerde {
    fn deserialize(&self, _topic: &str, data: Bytes) -> Result<Bytes> {
        Ok(data)
    }
}

impl Serializer<Vec<u8>> for DefaultSerde {
    fn serialize(&self, _topic: &str, data: &Vec<u8>) -> Result<Bytes> {
        Ok(Bytes::copy_from_slice(data))
    }
}

impl Deserializer<Vec<u8>> for DefaultSerde {
    fn deserialize(&self, _topic: &str, data: Bytes) -> Result<Vec<u8>> {
        Ok(data.to_vec())
    }
}

impl Serializer<String> for DefaultSerde {
    fn serialize(&self, _topic: &str, data: &String) -> Result<Bytes> {
        Ok(Bytes::copy_from_slice(data.as_bytes()))
    }
}

impl Serializer<&str> for DefaultSerde {
    fn serialize(&self, _topic: &str, data: &&str) -> Result<Bytes> {
        Ok(Bytes::copy_from_slice(data.as_bytes()))
    }
}

impl Deserializer<String> for DefaultSerde {
    fn deserialize(&self, _topic: &str, data: Bytes) -> Result<String> {
        String::from_utf8(data.to_vec()).map_err(|e| Error::Serialization {
            reason: format!("not UTF-8: {e}"),
        })
    }
}

macro_rules! big_endian {
    ($($t:ty),*) => {$(
        impl Serializer<$t> for DefaultSerde {
            fn serialize(&self, _topic: &str, data: &$t) -> Result<Bytes> {
                Ok(Bytes::copy_from_slice(&data.to_be_bytes()))
            }
        }

        impl Deserializer<$t> for DefaultSerde {
            fn deserialize(&self, _topic: &str, data: Bytes) -> Result<$t> {
                let bytes: [u8; size_of::<$t>()] = data[..].try_into().map_err(|_| {
                    Error::Serialization {
                        reason: format!(
                            "{} needs {} bytes, got {}",
                            stringify!($t),
                            size_of::<$t>(),
                            data.len()
                        ),
                    }
                })?;
                Ok(<$t>::from_be_bytes(bytes))
            }
        }
    )*};
}

big_endian!(i16, i32, i64, u16, u32, u64, f32, f64);

/// Any serde type, in the `postcard` format (compact, not self-describing:
/// reader and writer must agree on the type).
///
/// ```
/// use ferrolog::client::{Deserializer, Postcard, Serializer};
/// #[derive(serde::Serialize, serde::Deserialize, PartialEq, Debug)]
/// struct Order { id: u64, item: String }
/// let order = Order { id: 7, item: "tea".into() };
/// let bytes = Postcard.serialize("orders", &order)?;
/// let back: Order = Postcard.deserialize("orders", bytes)?;
/// assert_eq!(back, order);
/// # Ok::<(), ferrolog::Error>(())
/// ```
#[derive(Debug, Clone, Copy, Default)]
pub struct Postcard;

impl<T: Serialize + ?Sized> Serializer<T> for Postcard {
    fn serialize(&self, _topic: &str, data: &T) -> Result<Bytes> {
        postcard::to_allocvec(data)
            .map(Bytes::from)
            .map_err(|e| Error::Serialization {
                reason: e.to_string(),
            })
    }
}

impl<T: DeserializeOwned> Deserializer<T> for Postcard {
    fn deserialize(&self, _topic: &str, data: Bytes) -> Result<T> {
        postcard::from_bytes(&data).map_err(|e| Error::Serialization {
            reason: e.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integers_are_big_endian_like_kafka() {
        assert_eq!(
            &DefaultSerde.serialize("t", &-2i64).unwrap()[..],
            &[0xff; 7].iter().copied().chain([0xfe]).collect::<Vec<_>>()[..]
        );
        assert_eq!(&DefaultSerde.serialize("t", &258i16).unwrap()[..], &[1, 2]);
        let d: f64 = DefaultSerde
            .deserialize("t", Bytes::from(1.5f64.to_be_bytes().to_vec()))
            .unwrap();
        assert_eq!(d, 1.5);
    }

    #[test]
    fn wrong_lengths_and_bad_utf8_are_serialization_errors() {
        let r: Result<i32> = DefaultSerde.deserialize("t", Bytes::from_static(&[1, 2]));
        assert!(matches!(r, Err(Error::Serialization { .. })));
        let r: Result<String> = DefaultSerde.deserialize("t", Bytes::from_static(&[0xff]));
        assert!(matches!(r, Err(Error::Serialization { .. })));
        let r: Result<(u8, String)> = Postcard.deserialize("t", Bytes::from_static(&[1]));
        assert!(matches!(r, Err(Error::Serialization { .. })));
    }
}
