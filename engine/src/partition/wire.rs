//! Protobuf field writing for the partition's hand-encoded records (checkpoint
//! entries, outboxes, exchange batches), which are written from borrowed or pre-encoded parts
//! rather than built as messages first. Only the field layer: what goes in
//! which field is the callers'.

use prost::encoding::{WireType, encode_key, encode_varint, encoded_len_varint, key_len};

/// A length-delimited field with a body of `len` bytes, key and length included.
pub fn delimited_len(tag: u32, len: usize) -> usize {
    key_len(tag) + encoded_len_varint(len as u64) + len
}

/// The key and length of a length-delimited field, before its body.
pub fn put_header(out: &mut Vec<u8>, tag: u32, len: usize) {
    encode_key(tag, WireType::LengthDelimited, out);
    encode_varint(len as u64, out);
}

/// A string or bytes field; proto3 leaves an empty one out.
pub fn bytes_field_len(tag: u32, value: impl AsRef<[u8]>) -> usize {
    let len = value.as_ref().len();
    if len == 0 { 0 } else { delimited_len(tag, len) }
}

pub fn put_bytes(out: &mut Vec<u8>, tag: u32, value: impl AsRef<[u8]>) {
    let value = value.as_ref();
    if !value.is_empty() {
        put_header(out, tag, value.len());
        out.extend_from_slice(value);
    }
}

/// An integer or bool field; proto3 leaves a zero out. Signed integers are
/// passed as their two's complement, as prost writes `int64`.
pub fn varint_len(tag: u32, value: u64) -> usize {
    if value == 0 { 0 } else { key_len(tag) + encoded_len_varint(value) }
}

pub fn put_varint(out: &mut Vec<u8>, tag: u32, value: u64) {
    if value != 0 {
        encode_key(tag, WireType::Varint, out);
        encode_varint(value, out);
    }
}

/// `TypedValue` field numbers (request-reply.proto).
const VALUE_TYPENAME: u32 = 1;
const VALUE_HAS_VALUE: u32 = 2;
const VALUE_BYTES: u32 = 3;

/// A `TypedValue`, from its parts.
pub struct TypedValueParts<'a> {
    pub typename: &'a str,
    pub has_value: bool,
    pub value: &'a [u8],
}

impl TypedValueParts<'_> {
    /// The value as field `tag`, key and length included.
    pub fn field_len(&self, tag: u32) -> usize {
        delimited_len(tag, self.body_len())
    }

    pub fn put_field(&self, out: &mut Vec<u8>, tag: u32) {
        put_header(out, tag, self.body_len());
        put_bytes(out, VALUE_TYPENAME, self.typename);
        put_varint(out, VALUE_HAS_VALUE, u64::from(self.has_value));
        put_bytes(out, VALUE_BYTES, self.value);
    }

    fn body_len(&self) -> usize {
        bytes_field_len(VALUE_TYPENAME, self.typename)
            + varint_len(VALUE_HAS_VALUE, u64::from(self.has_value))
            + bytes_field_len(VALUE_BYTES, self.value)
    }
}
