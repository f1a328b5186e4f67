//! Messages between functions: a target address and a typed value.
//!
//! The same [`Message`] type is what a function receives (its target is the
//! function's own address) and what it sends with
//! [`Context::send`](crate::Context::send). Reading one is typed: check the
//! typename with [`Message::is`] and decode with [`Message::as_value`], or use
//! the protobuf shortcuts [`Message::is_proto`] and [`Message::as_proto`].

use statefun_proto::reqreply::TypedValue;

use crate::address::Address;
use crate::error::Error;
use crate::types::{ProtobufType, Type};

/// A message: a target address and a typed value.
///
/// ```
/// use statefun_sdk::{FunctionType, IntType, Message};
///
/// let to = FunctionType::new("example", "counter").address("c1");
/// let msg = Message::new(to, &IntType, &5)?;
/// assert!(msg.is(&IntType));
/// assert_eq!(msg.as_value(&IntType)?, 5);
/// # Ok::<(), statefun_sdk::Error>(())
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct Message {
    target: Address,
    value: TypedValue,
}

impl Message {
    /// A message to `target` carrying `value` of type `ty`.
    pub fn new<T: Type + ?Sized>(target: Address, ty: &T, value: &T::Value) -> Result<Self, Error> {
        Ok(Self { target, value: encode(ty, value)? })
    }

    /// A message to `target` carrying the protobuf message `value`.
    pub fn proto<M: prost::Message + prost::Name>(target: Address, value: &M) -> Self {
        Self { target, value: TypedValue { typename: M::type_url(), has_value: true, value: value.encode_to_vec() } }
    }

    /// A message to `target` carrying an already encoded value.
    pub fn from_typed_value(target: Address, value: TypedValue) -> Self {
        Self { target, value }
    }

    /// The address the message is for.
    pub fn target(&self) -> &Address {
        &self.target
    }

    /// The typename of the value.
    pub fn typename(&self) -> &str {
        &self.value.typename
    }

    /// The encoded value.
    pub fn value_bytes(&self) -> &[u8] {
        &self.value.value
    }

    /// The wire form of the value.
    pub fn typed_value(&self) -> &TypedValue {
        &self.value
    }

    /// Whether the value has the typename of `ty`.
    pub fn is<T: Type + ?Sized>(&self, ty: &T) -> bool {
        self.value.typename == ty.typename()
    }

    /// The value decoded as `ty`; an error if the typename differs or the bytes
    /// do not decode.
    pub fn as_value<T: Type + ?Sized>(&self, ty: &T) -> Result<T::Value, Error> {
        if !self.is(ty) {
            return Err(Error::MessageTypename {
                expected: ty.typename().to_owned(),
                actual: self.value.typename.clone(),
            });
        }
        ty.decode(&self.value.value)
            .map_err(|source| Error::MessageDecode { typename: self.value.typename.clone(), source })
    }

    /// Whether the value is the protobuf message `M`.
    pub fn is_proto<M: prost::Name>(&self) -> bool {
        self.value.typename == M::type_url()
    }

    /// The value decoded as the protobuf message `M`.
    pub fn as_proto<M: prost::Message + prost::Name + Default + 'static>(&self) -> Result<M, Error> {
        self.as_value(&ProtobufType::<M>::new())
    }

    pub(crate) fn into_parts(self) -> (Address, TypedValue) {
        (self.target, self.value)
    }
}

/// Encodes `value` as a present `TypedValue` of `ty`.
pub(crate) fn encode<T: Type + ?Sized>(ty: &T, value: &T::Value) -> Result<TypedValue, Error> {
    let bytes = ty.encode(value).map_err(|source| Error::Encode { typename: ty.typename().to_owned(), source })?;
    Ok(TypedValue { typename: ty.typename().to_owned(), has_value: true, value: bytes })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::address::FunctionType;
    use crate::types::{IntType, StringType};
    use statefun_proto::shoppingcart::AddToCart;

    fn to() -> Address {
        FunctionType::new("t", "f").address("1")
    }

    #[test]
    fn reading_a_message_as_another_type_names_both_typenames() {
        let msg = Message::new(to(), &IntType, &1).map_err(|e| e.to_string());
        let err = msg.and_then(|m| m.as_value(&StringType).map_err(|e| e.to_string()));
        assert_eq!(
            err.err().as_deref(),
            Some("message has typename io.statefun.types/int, expected io.statefun.types/string")
        );
    }

    #[test]
    fn protobuf_messages_round_trip_with_their_type_url() -> Result<(), Error> {
        let add = AddToCart { user_id: "u".into(), item_id: "i".into(), quantity: 2, request_id: "r".into() };
        let msg = Message::proto(to(), &add);
        assert_eq!(msg.typename(), "type.googleapis.com/shoppingcart.AddToCart");
        assert!(msg.is_proto::<AddToCart>());
        assert_eq!(msg.as_proto::<AddToCart>()?, add);
        Ok(())
    }

    #[test]
    fn garbage_bytes_are_a_decode_error_naming_the_typename() {
        let msg = Message::from_typed_value(
            to(),
            TypedValue { typename: IntType.typename().into(), has_value: true, value: vec![0x0d, 0x01] },
        );
        let err = msg.as_value(&IntType).err().map(|e| e.to_string());
        assert!(err.is_some_and(|e| { e.starts_with("cannot decode a message of typename io.statefun.types/int:") }));
    }
}
